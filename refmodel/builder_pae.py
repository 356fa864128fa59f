"""The initial address space of a 32-bit PAE domain (compat-pae profile), as Xen 4.19's tools
lay it out at start of day.

tools/libs/guest/xg_dom_core.c xc_dom_build_image and xg_dom_x86.c (RELEASE-4.19.0) map the
region from the kernel's virtual base 1:1 onto pseudo-physical frames from 0 and put, each
page aligned after the kernel image: the phys-to-machine list (4 bytes a page), start_info,
the xenstore page, the console page (alloc_magic_pages_pv), the page tables, the boot stack.
Pages below the image (from the virtual base) are ordinary memory, mapped read-write.

The page tables (alloc_pgtables_pv, count_pgtables with x86_32's three levels):

* one L3, then the L2s of every L3 slot from the virtual base's up to slot 3 (count_pgtables'
  PAE case, "extra l2 page table for l3#3": slot 3's L2 always exists, for Xen's slots), then
  one L1 per 2 MB of the mapped region, in that order;
* the mapped region ends on the first 4 MB boundary that leaves room for the tables, the boot
  stack and 512 KB after them: the number of tables depends on the region and the region on
  it, so the tools try growing sizes until they agree (``bootstrap_layout_pae``);
* entries (setup_pgtables_pv, get_pg_prot): L1 0x23 (present, RW, accessed), the page-table
  frames themselves 0x21 (read-only); L2 and L3 entries 0x67 (present, RW, user, accessed,
  dirty: legal in a 32-bit domain's L3, l3_disallow_mask 0xFFFFF198); no NX;
* the L3 is pinned (MMUEXT_PIN_L3_TABLE, bootlate_pv), which validates the whole tree, and
  becomes vCPU 0's base pointer.

Not modelled: the legacy ``PAE=yes`` kernels whose L3 the tools move below 4 GB (every frame
of the model's machine is below 4 GB anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    COMPAT_HYPERVISOR_VIRT_START,
    PAE_L2_PAGETABLE_SHIFT,
    PAE_L3_PAGETABLE_SHIFT,
)
from xenspec.spec.pagetable import PGT

# xg_dom_x86.c: L1_PROT, L2_PROT and L3_PROT of x86_32 PAE.
L1_PROT = abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED
L2_PROT = L1_PROT | abi._PAGE_DIRTY | abi._PAGE_USER
L3_PROT = L2_PROT
_4MB_MASK = (1 << 22) - 1  # alloc_pgtables_pv: bits_to_mask(22)
_EXTRA_PAGES = 1 + (512 << 10) // abi.PAGE_SIZE  # the boot stack and 512 KB after it
_L3_SLOT_OF_XEN = 3


@dataclass(frozen=True)
class PaeLayout:
    """Where the tools put each element, as virtual addresses from ``virt_base``."""

    virt_base: int
    vphysmap_start: int
    vstartinfo_start: int
    vstore_start: int
    vconsole_start: int
    vpt_start: int  # the L3; the L2s and L1s follow it
    nr_l2: int
    nr_l1: int
    vstack_start: int
    v_end: int

    @property
    def nr_pt_pages(self) -> int:
        return 1 + self.nr_l2 + self.nr_l1

    @property
    def nr_mapped(self) -> int:
        return (self.v_end - self.virt_base) >> abi.PAGE_SHIFT

    @property
    def stack_top(self) -> int:
        return self.vstack_start + abi.PAGE_SIZE

    def pfn(self, va: int) -> int:
        return (va - self.virt_base) >> abi.PAGE_SHIFT


def _round_pgup(x: int) -> int:
    return (x + abi.PAGE_SIZE - 1) & ~(abi.PAGE_SIZE - 1)


def _count_tables(virt_base: int, try_end: int) -> tuple[int, int]:
    """count_pgtables for [virt_base, try_end]: the L2s from the base's L3 slot to slot 3,
    one L1 per 2 MB."""
    nr_l2 = _L3_SLOT_OF_XEN - (virt_base >> PAE_L3_PAGETABLE_SHIFT) + 1
    nr_l1 = (try_end >> PAE_L2_PAGETABLE_SHIFT) - (virt_base >> PAE_L2_PAGETABLE_SHIFT) + 1
    return nr_l2, nr_l1


def bootstrap_layout_pae(virt_base: int, v_kernend: int, nr_pages: int) -> PaeLayout:
    """xc_dom_build_image for a 32-bit PAE guest of ``nr_pages`` whose image ends at
    ``v_kernend``. BuildError where the tools fail: a region past the hole, or larger than
    the domain ("not enough memory for initial mapping")."""
    v = _round_pgup(v_kernend)
    vphysmap = v
    vstartinfo = _round_pgup(vphysmap + nr_pages * 4)
    vstore = vstartinfo + abi.PAGE_SIZE
    vconsole = vstore + abi.PAGE_SIZE
    vpt = vconsole + abi.PAGE_SIZE
    pages = _EXTRA_PAGES
    while True:
        try_end = (vpt + pages * abi.PAGE_SIZE) | _4MB_MASK
        nr_l2, nr_l1 = _count_tables(virt_base, try_end)
        pages = 1 + nr_l2 + nr_l1 + _EXTRA_PAGES
        if vpt + pages * abi.PAGE_SIZE <= try_end + 1:
            break
    lay = PaeLayout(virt_base, vphysmap, vstartinfo, vstore, vconsole, vpt, nr_l2, nr_l1,
                    vpt + (1 + nr_l2 + nr_l1) * abi.PAGE_SIZE, try_end + 1)
    if lay.v_end > COMPAT_HYPERVISOR_VIRT_START:
        raise BuildError("the bootstrap region would reach the hypervisor hole")
    if lay.nr_mapped > nr_pages:
        raise BuildError(f"not enough memory for the initial mapping: "
                         f"{(lay.v_end - virt_base) >> 20} MB is more than the domain's "
                         f"{nr_pages >> (20 - abi.PAGE_SHIFT)} MB")
    return lay


def build_initial_tables_pae(hv: Hypervisor, d: Domain, lay: PaeLayout) -> None:
    """setup_pgtables_pv for ``lay``, then the pin of the L3 (which validates the tree) and
    vCPU 0's base pointer."""
    mem, mfn = hv.memory, d.page_list
    l3 = lay.pfn(lay.vpt_start)
    l2s = range(l3 + 1, l3 + 1 + lay.nr_l2)
    l1s = range(l2s.stop, l2s.stop + lay.nr_l1)
    base_l1, base_l3 = lay.virt_base >> PAE_L2_PAGETABLE_SHIFT, lay.virt_base >> 30
    for pfn in range(lay.nr_mapped):
        va = lay.virt_base + (pfn << abi.PAGE_SHIFT)
        flags = L1_PROT & ~abi._PAGE_RW if l3 <= pfn < l1s.stop else L1_PROT
        l1 = mfn[l1s[(va >> PAE_L2_PAGETABLE_SHIFT) - base_l1]]
        mem.write_entry64(l1, (va >> abi.PAGE_SHIFT) & 511, mfn[pfn] << abi.PAGE_SHIFT | flags)
    for k, pfn in enumerate(l1s):
        va = (base_l1 + k) << PAE_L2_PAGETABLE_SHIFT
        l2 = mfn[l2s[(va >> PAE_L3_PAGETABLE_SHIFT) - base_l3]]
        mem.write_entry64(l2, (va >> PAE_L2_PAGETABLE_SHIFT) & 511,
                          mfn[pfn] << abi.PAGE_SHIFT | L2_PROT)
    for j, pfn in enumerate(l2s):
        mem.write_entry64(mfn[l3], base_l3 + j, mfn[pfn] << abi.PAGE_SHIFT | L3_PROT)
    v = d.vcpus[0]
    if not hv.mm.pin_page(v, mfn[l3], PGT.l3_page_table):
        raise BuildError("the initial L3 does not validate")
    if not hv.mm.new_guest_cr3(v, mfn[l3]):
        raise BuildError("the initial L3 cannot be loaded")

"""The initial address space of a domain, as Xen 3.0.4's domain builders lay it out at start of day.

Both x86_32 builders (tools/libxc/xc_linux_build.c setup_guest for a domain the tools build,
xen/arch/x86/domain_build.c construct_dom0 for the initial domain) map the bootstrap region
1:1 onto pseudo-physical frames from 0 at the kernel's virtual base and put its elements in
this order, each page aligned (xen.h, "Start-of-day memory layout"):

  kernel image, [initial ram disk], phys-to-machine list, start_info, [the store page, the
  console page: xc_linux_build.c only], page tables (the directory, then one L1 per 4 MB),
  the boot stack (one page),

then round the region up to a 4 MB boundary, 4 MB more when less than 512 KB would follow the
boot stack. The number of table frames depends on the region's size and the size on it; both
builders solve that by trying 2, 3, ... frames until 1 + (4 MB slots the region spans) fit
(``bootstrap_layout``). A region larger than the domain is refused ("Initial guest OS
requires too much space"). The model loads no initial ram disk.

Every page of the region is mapped with L1_PROT (present, writable, accessed: no
``_PAGE_USER``, "no ring-3 access in initial leaf page tables", domain_build.c), except the
page-table frames, which lose ``_PAGE_RW``; each directory entry is L2_PROT (present, writable,
accessed, dirty, user). xc_linux_build.c and domain_build.c define the same two values for
x86_32. The directory is pinned and loaded as vCPU 0's base pointer (the model pins it through
the MMU's own validation, so the result satisfies every rule the MMU enforces).

``build_initial_tables`` is setup_pg_tables for a region and a place of the tables in it;
without a place it puts them, as Xen does, just before the boot stack, here the region's last
page (a region the tests size freely, without kernel or padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from xenspec.refmodel.domain import Domain
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT_root_page_table

DEFAULT_VIRT_BASE = 0xC0000000
# xc_linux_build.c and domain_build.c (x86_32): L1_PROT and L2_PROT.
L1_PROT = abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED
L2_PROT = (abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED | abi._PAGE_DIRTY
           | abi._PAGE_USER)
_4MB = 1 << abi.L2_PAGETABLE_SHIFT
_PADDING = 512 << 10  # at least this much after the boot stack (xen.h, item 9)


class BuildError(Exception):
    """The requested layout does not fit the domain."""


@dataclass(frozen=True)
class InitialLayout:
    """Where the builder put the page tables: pseudo-physical frame numbers and addresses.

    All of pfns [0, nr_mapped) are mapped at ``virt_base``; the page directory is pfn
    ``pt_base_pfn`` and the L1 tables follow it, mapped read-only; the boot stack is the page
    after them; every other page is mapped read-write.
    """

    virt_base: int
    nr_mapped: int
    pt_base_pfn: int
    l1_pfns: tuple[int, ...]

    def va(self, pfn: int) -> int:
        return self.virt_base + (pfn << abi.PAGE_SHIFT)

    @property
    def pt_pfns(self) -> tuple[int, ...]:
        return (self.pt_base_pfn, *self.l1_pfns)

    @property
    def stack_pfn(self) -> int:
        """The boot stack's page, right after the tables."""
        return self.pt_base_pfn + len(self.pt_pfns)


@dataclass(frozen=True)
class BootstrapLayout:
    """The bootstrap region of setup_guest / construct_dom0, as virtual addresses.

    ``store`` and ``console`` are None where the builder has no such page (construct_dom0).
    """

    v_start: int
    vphysmap_start: int
    vstartinfo_start: int
    vstore_start: int | None
    vconsole_start: int | None
    vpt_start: int
    nr_pt_pages: int
    vstack_start: int
    v_end: int

    @property
    def nr_mapped(self) -> int:
        return (self.v_end - self.v_start) >> abi.PAGE_SHIFT

    def pfn(self, va: int) -> int:
        return (va - self.v_start) >> abi.PAGE_SHIFT

    @property
    def stack_top(self) -> int:
        """The initial ESP: vstack_start + PAGE_SIZE (xc_linux_build_internal; vstack_end in
        construct_dom0)."""
        return self.vstack_start + abi.PAGE_SIZE


def _round_pgup(x: int) -> int:
    return (x + abi.PAGE_SIZE - 1) & ~(abi.PAGE_SIZE - 1)


def _nr_slots(lo: int, hi: int) -> int:
    """xc_linux_build.c NR(lo, hi, L2_PAGETABLE_SHIFT): the 4 MB slots [lo, hi) touches."""
    return (((hi + _4MB - 1) & ~(_4MB - 1)) - (lo & ~(_4MB - 1))) >> abi.L2_PAGETABLE_SHIFT


def bootstrap_layout(v_start: int, v_kernend: int, nr_pages: int,
                     store_and_console: bool = True) -> BootstrapLayout:
    """xc_linux_build.c setup_guest (``store_and_console``; construct_dom0 without): the
    region after a kernel image ending at ``v_kernend``, for a domain of ``nr_pages``. The
    phys-to-machine list takes 4 bytes a page (sizeof(long) on x86_32); start_info one page
    (construct_dom0: start_info and dom0_vga_console_info, rounded up to one page). The
    number of table frames is the exhaustive search both builders make: the first count from
    2 up that covers the directory and one L1 per 4 MB slot of the region the count gives.
    BuildError where the tools would fail: an address wrapping past 4 GB (increment_ulong),
    or a region larger than the domain ("Initial guest OS requires too much space")."""
    top = 1 << 32
    v_end = _round_pgup(v_kernend)
    vphysmap_start = v_end
    vstartinfo_start = _round_pgup(vphysmap_start + nr_pages * 4)
    v_end = vstartinfo_start + abi.PAGE_SIZE
    vstore_start = vconsole_start = None
    if store_and_console:
        vstore_start, vconsole_start = v_end, v_end + abi.PAGE_SIZE
        v_end += 2 * abi.PAGE_SIZE
    vpt_start = v_end
    nr_pt_pages = 2
    while True:
        vstack_start = vpt_start + nr_pt_pages * abi.PAGE_SIZE
        vstack_end = vstack_start + abi.PAGE_SIZE
        v_end = (vstack_end + _4MB - 1) & ~(_4MB - 1)
        if v_end - vstack_end < _PADDING:
            v_end += _4MB  # an extra 4 MB for at least 512 KB after the stack
        if v_end >= top:
            raise BuildError("the bootstrap region wraps past 4 GB: image too large")
        if 1 + _nr_slots(v_start, v_end) <= nr_pt_pages:
            break
        nr_pt_pages += 1
    lay = BootstrapLayout(v_start, vphysmap_start, vstartinfo_start, vstore_start,
                          vconsole_start, vpt_start, nr_pt_pages, vstack_start, v_end)
    if lay.nr_mapped > nr_pages:
        raise BuildError(f"the initial guest OS requires too much space: "
                         f"{(v_end - v_start) >> 20} MB is more than the domain's "
                         f"{nr_pages >> (20 - abi.PAGE_SHIFT)} MB")
    return lay


def build_initial_tables(
    hv: Hypervisor, d: Domain, nr_mapped: int, virt_base: int = DEFAULT_VIRT_BASE,
    pt_base_pfn: int | None = None,
) -> InitialLayout:
    """setup_pg_tables (xc_linux_build.c, x86_32): map pfns [0, nr_mapped) at ``virt_base``
    with L1_PROT, the page directory at ``pt_base_pfn`` and its L1s after it read-only, the
    directory's entries L2_PROT; pin the directory and load it. The tables must leave the
    boot stack's page after them in the region; by default they end just before the region's
    last page, which is the boot stack."""
    if virt_base & (_4MB - 1):
        raise BuildError("the virtual base must be 4 MB aligned")
    nr_l1 = -(-nr_mapped // abi.L1_PAGETABLE_ENTRIES)
    nr_pt = 1 + nr_l1
    if pt_base_pfn is None:
        pt_base_pfn = nr_mapped - nr_pt - 1
    if pt_base_pfn < 0 or pt_base_pfn + nr_pt + 1 > nr_mapped or nr_mapped > d.tot_pages:
        raise BuildError(f"cannot map {nr_mapped} of the domain's {d.tot_pages} pages with "
                         f"{nr_pt} page-table frames and a boot stack")
    if virt_base + (nr_mapped << abi.PAGE_SHIFT) > abi.HYPERVISOR_VIRT_START:
        raise BuildError("the mapping would reach the hypervisor hole")
    l1_pfns = tuple(range(pt_base_pfn + 1, pt_base_pfn + nr_pt))
    layout = InitialLayout(virt_base, nr_mapped, pt_base_pfn, l1_pfns)
    mfn = d.page_list
    first_slot = virt_base >> abi.L2_PAGETABLE_SHIFT
    pt_end = pt_base_pfn + nr_pt
    for pfn in range(nr_mapped):
        l1 = mfn[l1_pfns[pfn // abi.L1_PAGETABLE_ENTRIES]]
        flags = L1_PROT & ~abi._PAGE_RW if pt_base_pfn <= pfn < pt_end else L1_PROT
        index = pfn % abi.L1_PAGETABLE_ENTRIES
        hv.memory.write_entry(l1, index, mfn[pfn] << abi.PAGE_SHIFT | flags)
    for k, pfn in enumerate(l1_pfns):
        hv.memory.write_entry(mfn[pt_base_pfn], first_slot + k,
                              mfn[pfn] << abi.PAGE_SHIFT | L2_PROT)
    v = d.vcpus[0]
    if not hv.mm.pin_page(v, mfn[pt_base_pfn], PGT_root_page_table):
        raise BuildError("the initial page directory does not validate")
    if not hv.mm.new_guest_cr3(v, mfn[pt_base_pfn]):
        raise BuildError("the initial page directory cannot be loaded")
    return layout

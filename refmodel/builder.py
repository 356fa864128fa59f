"""The initial address space of a domain, as Xen's domain builder lays it out at start of day.

Xen 3.0.4 (xen/arch/x86/domain_build.c) maps the bootstrap region 1:1 onto pseudo-physical
frames from 0 at the kernel's virtual base, read-write except the page-table frames, which
are mapped read-only; the page directory is pinned and loaded as the vCPU's base pointer.
This module builds exactly that for the first ``nr_mapped`` pseudo-physical frames, using
the MMU's own validation (a pin and a base-pointer switch), so the result satisfies every rule
the MMU enforces. Loading an ELF kernel, start_info and shared_info come with the full domain
builder.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenspec.refmodel.domain import Domain
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT_root_page_table

DEFAULT_VIRT_BASE = 0xC0000000
_PAGE_KERNEL = abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED | abi._PAGE_DIRTY
_PAGE_KERNEL_RO = abi._PAGE_PRESENT | abi._PAGE_ACCESSED


class BuildError(Exception):
    """The requested layout does not fit the domain."""


@dataclass(frozen=True)
class InitialLayout:
    """Where the builder put things: pseudo-physical frame numbers and virtual addresses.

    Pfns [0, pt_base_pfn) are ordinary read-write memory; the page directory and the L1
    tables follow, mapped read-only; all of [0, nr_mapped) is mapped at ``virt_base``.
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


def build_initial_tables(
    hv: Hypervisor, d: Domain, nr_mapped: int, virt_base: int = DEFAULT_VIRT_BASE,
    user: bool = False,
) -> InitialLayout:
    """Map pfns [0, nr_mapped) at ``virt_base``, the page tables being the last of them.

    With ``user`` the entries carry _PAGE_USER, as Xen 3.0.4's x86_32 builder writes them
    (domain_build.c, L1_PROT and L2_PROT); without it they are supervisor-only.
    """
    if virt_base & ((1 << abi.L2_PAGETABLE_SHIFT) - 1):
        raise BuildError("the virtual base must be 4 MB aligned")
    nr_l1 = -(-nr_mapped // abi.L1_PAGETABLE_ENTRIES)
    if nr_mapped < nr_l1 + 2 or nr_mapped > d.tot_pages:
        raise BuildError(f"cannot map {nr_mapped} of the domain's {d.tot_pages} pages")
    if virt_base + (nr_mapped << abi.PAGE_SHIFT) > abi.HYPERVISOR_VIRT_START:
        raise BuildError("the mapping would reach the hypervisor hole")
    pt_base_pfn = nr_mapped - 1 - nr_l1
    l1_pfns = tuple(range(pt_base_pfn + 1, nr_mapped))
    layout = InitialLayout(virt_base, nr_mapped, pt_base_pfn, l1_pfns)
    mfn = d.page_list
    first_slot = virt_base >> abi.L2_PAGETABLE_SHIFT
    extra = abi._PAGE_USER if user else 0
    for pfn in range(nr_mapped):
        l1 = mfn[l1_pfns[pfn // abi.L1_PAGETABLE_ENTRIES]]
        flags = (_PAGE_KERNEL_RO if pfn >= pt_base_pfn else _PAGE_KERNEL) | extra
        index = pfn % abi.L1_PAGETABLE_ENTRIES
        hv.memory.write_entry(l1, index, mfn[pfn] << abi.PAGE_SHIFT | flags)
    for k, pfn in enumerate(l1_pfns):
        hv.memory.write_entry(
            mfn[pt_base_pfn], first_slot + k, mfn[pfn] << abi.PAGE_SHIFT | _PAGE_KERNEL | extra
        )
    v = d.vcpus[0]
    if not hv.mm.pin_page(v, mfn[pt_base_pfn], PGT_root_page_table):
        raise BuildError("the initial page directory does not validate")
    if not hv.mm.new_guest_cr3(v, mfn[pt_base_pfn]):
        raise BuildError("the initial page directory cannot be loaded")
    return layout

"""The conformance adapter of the independent MMU (``tests/indep/hv.py``), at the hypercall level.

``IndepImplementation`` is the implementation as written; the classes after it are the same
with one seeded defect each (``hv.Machine.bug``), for checking that the conformance suite
fails them and names the rule:

* ``IndepIoMapsOwnRam``: FOREIGNDOM = DOMID_IO lets a domain map its own RAM (mm.c
  get_page_from_l1e takes the references from dom_io, which owns no RAM, so Xen refuses);
* ``IndepUvmThroughLinearSlot``: update_va_mapping writes through an L2 slot that names a page
  directory (a read-only linear map), so an "L1 entry" lands in the directory unvalidated.

What it does not offer: the guest level (no CPU: ``boot_guest``), and at the hypercall level
every hypercall but mmu_update, mmuext_op and update_va_mapping (the CPU-interface calls such
as set_gdt and set_trap_table, event channels, grant tables, memory_op); those raise
``NotImplementedError``, which the suite reports as a skip. It has no shared_info and no back
ends, so it does not say which frames the hypervisor writes into (``XenWrittenFrames``).
"""

from __future__ import annotations

from collections.abc import Sequence

from xenspec.conformance.adapter import DomainInfo, FrameInfo
from xenspec.spec import abi

from .hv import Domain, Machine

VIRT_BASE = 0xC0000000


class IndepImplementation:
    """The independent MMU behind the hypercall-level adapter interface."""

    name = "independent MMU (tests/indep)"
    # The MMU hypercalls only: no guest level, no event channels; its other hypercalls raise
    # NotImplementedError, which the suite reports as not offered.
    offers = frozenset({"hypercall"})
    counts_like_xen = True
    bug = ""

    def __init__(self) -> None:
        self.m = Machine(bug=self.bug)

    def domain(self, domid: int) -> Domain:
        d = self.m.domains.get(domid)
        if d is None:
            raise ValueError(f"no domain {domid}")
        return d

    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool) -> DomainInfo:
        d, pt_base, l1_pfns = self.m.create_domain(nr_pages, nr_mapped, privileged, VIRT_BASE)
        return DomainInfo(d.domid, tuple(d.p2m), VIRT_BASE, nr_mapped, pt_base, l1_pfns)

    def hypercall(self, domid: int, name: str, *args: int) -> int:
        d, m = self.domain(domid), self.m
        calls = {"mmu_update": m.do_mmu_update, "mmuext_op": m.do_mmuext_op,
                 "update_va_mapping": m.do_update_va_mapping}
        if name not in calls:
            raise NotImplementedError(f"{self.name} does not offer hypercall {name}")
        if not d.running:
            return -abi.EINVAL  # a crashed domain runs no more code: nothing happens
        return calls[name](d, *args)

    def is_running(self, domid: int) -> bool:
        return self.domain(domid).running

    def write_pfn(self, domid: int, pfn: int, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > abi.PAGE_SIZE:
            raise ValueError("the access must stay within one frame")
        self.m.write(self.domain(domid).p2m[pfn], offset, data)

    def read_pfn(self, domid: int, pfn: int, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > abi.PAGE_SIZE:
            raise ValueError("the access must stay within one frame")
        return self.m.read(self.domain(domid).p2m[pfn], offset, length)

    def nr_frames(self) -> int:
        return self.m.nr_frames

    def frame(self, mfn: int) -> FrameInfo:
        p = self.m.pages[mfn]
        return FrameInfo(p.owner, p.type, p.type_count, p.count, p.validated, p.pinned,
                         p.allocated)

    def entries(self, mfn: int) -> Sequence[int]:
        return list(self.m.words(mfn))

    def machphys(self, mfn: int) -> int:
        return self.m.m2p[mfn]

    def xen_l2_slots(self, domid: int, l2_mfn: int) -> Sequence[int]:
        """Slots L2_PAGETABLE_FIRST_XEN_SLOT.. as alloc_l2_table writes them into ``l2_mfn``
        (the linear self-map differs from one directory to the next)."""
        return self.m.xen_slots(self.domain(domid), l2_mfn)

    def vcpu_bases(self) -> Sequence[tuple[int, int]]:
        return [(d.domid, d.base) for d in self.m.domains.values()]

    def descriptor_frames(self, domid: int) -> Sequence[int]:
        self.domain(domid)
        return []  # set_gdt is not offered: no vCPU has GDT frames


class IndepIoMapsOwnRam(IndepImplementation):
    name = "independent MMU, FOREIGNDOM=DOMID_IO maps own RAM"
    bug = "io-maps-own-ram"


class IndepUvmThroughLinearSlot(IndepImplementation):
    name = "independent MMU, update_va_mapping through a linear slot"
    bug = "uvm-through-linear-slot"




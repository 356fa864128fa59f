"""The concrete state view: the reference model's frame table and memory behind ``StateView``.

Quantifiers are loops over the machine's frames, the vCPUs of all domains, and the present
entries of a table; connectives are Python's. A vCPU's CPU state (trap table, callbacks, stack
selector, GDT frames) is the platform's ``ArchVcpu``; without a platform (the Python-driven
guests) it is the state a vCPU starts with: no handlers, no stack, no GDT. This lets the
invariants of ``xenspec.spec`` check every state the running model reaches.

The view is total: whatever a hostile domain makes of the state, checking it reports
violations and never raises. A frame number beyond machine RAM (in a PTE, a base pointer, a
GDT frame list) reads as I/O memory, which Xen gives to dom_io (mm.c, arch_init_memory): owned
by DOMID_IO, no type, no references, no flags, no contents; the invariants that require RAM
(INV-OWN, INV-BASE, INV-ISO) then fail on it. Xen's slots of a page directory whose owner is
no longer a domain are no entry at all, so INV-HOLE fails on such a directory.
"""

from __future__ import annotations

from xenspec.refmodel.arch import ArchVcpu
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.event import check_event_invariants
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGC_allocated, PGC_xen_heap, PGT_pinned, PGT_validated
from xenspec.spec import abi
from xenspec.spec.concrete import ConcreteLogic
from xenspec.spec.invariants import COUNTER_INVARIANTS, INVARIANTS, count_violations
from xenspec.spec.pagetable import PGT, pte_present, xen_l2e_of

_INITIAL_ARCH = ArchVcpu()


class ConcreteView(ConcreteLogic):
    """A read-only ``StateView`` of a running ``Hypervisor``."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.f = hv.frames
        self.memory = hv.memory
        self._vcpus: list[Vcpu] = [v for d in hv.domains.values() for v in d.vcpus]
        self._xen_l2: dict[int, list[int]] = {}  # directory -> Xen's slots

    # frames: RAM from the frame table; a frame number beyond it is I/O memory (dom_io's)
    def _ram(self, mfn: int) -> bool:
        return 0 <= mfn < self.memory.nr_frames

    def owner(self, mfn: int) -> int:
        return int(self.f.owner[mfn]) if self._ram(mfn) else abi.DOMID_IO

    def type(self, mfn: int) -> int:
        return int(self.f.type[mfn]) if self._ram(mfn) else int(PGT.none)

    def type_count(self, mfn: int) -> int:
        return int(self.f.type_count[mfn]) if self._ram(mfn) else 0

    def count(self, mfn: int) -> int:
        return int(self.f.count[mfn]) if self._ram(mfn) else 0

    def _flag(self, mfn: int, bit: int) -> bool:
        return self._ram(mfn) and bool(self.f.flags[mfn] & bit)

    def validated(self, mfn: int) -> bool:
        return self._flag(mfn, PGT_validated)

    def pinned(self, mfn: int) -> bool:
        return self._flag(mfn, PGT_pinned)

    def allocated(self, mfn: int) -> bool:
        return self._flag(mfn, PGC_allocated)

    def mfn_valid(self, mfn: int) -> bool:
        return self.memory.mfn_valid(mfn)

    def is_privileged(self, domid: int) -> bool:
        d = self.hv.domains.get(domid)
        return d is not None and d.is_privileged

    def hypervisor_writes(self, mfn: int) -> bool:
        return self.hv.hypervisor_writes(mfn)

    # memory
    def entry(self, mfn: int, index: int) -> int:
        return self.memory.read_entry(mfn, index) if self._ram(mfn) else 0

    def xen_l2e(self, l2mfn: int, index: int) -> int:
        """Xen's entry in slot ``index`` of a directory: it depends on the owner and, in the
        linear page-table slot, on the directory itself (``spec.pagetable.xen_l2e_of``); -1
        (no 32-bit entry) when the owner is not a domain."""
        slots = self._xen_l2.get(l2mfn)
        if slots is None:
            d = self.hv.domains.get(self.owner(l2mfn))
            slots = self._xen_l2[l2mfn] = (self.hv.xen_l2_slots(d, l2mfn) if d is not None
                                           else [-1] * abi.L2_PAGETABLE_XEN_SLOTS)
        return xen_l2e_of(slots, l2mfn, index)

    # vCPUs, numbered across all domains
    def base(self, vcpu: int) -> int:
        return self._vcpus[vcpu].guest_table

    def vcpu_domain(self, vcpu: int) -> int:
        return self._vcpus[vcpu].domain.domain_id

    def _arch(self, vcpu: int) -> ArchVcpu:
        a = self.hv.arch_vcpu(self._vcpus[vcpu])
        return a if a is not None else _INITIAL_ARCH

    def trap_cs(self, vcpu: int, vector: int) -> int:
        return self._arch(vcpu).trap_ctxt[vector].cs

    def event_cs(self, vcpu: int) -> int:
        return self._arch(vcpu).event_callback_cs

    def failsafe_cs(self, vcpu: int) -> int:
        return self._arch(vcpu).failsafe_callback_cs

    def kernel_ss(self, vcpu: int) -> int:
        return self._arch(vcpu).kernel_ss

    def gdt_frame(self, vcpu: int, k: int) -> int:
        frames = self._arch(vcpu).gdt_frames
        return frames[k] if k < len(frames) else 0

    def gdt_referenced(self, mfn: int) -> bool:
        return self.type(mfn) == PGT.gdt_page and self.type_count(mfn) > 0

    # grant tables
    def gnt_slot(self, mfn: int, index: int) -> int:
        grants = self.hv.grants
        if grants is None:
            return -1
        frame = self.memory.read_entry(mfn, index) >> abi.PAGE_SHIFT
        return grants.slot_handle(self.owner(mfn), mfn, index, frame)

    def mt_flags(self, domid: int, handle: int) -> int:
        return 0 if self.hv.grants is None else self.hv.grants.mapping(domid, handle).flags

    def mt_dom(self, domid: int, handle: int) -> int:
        return 0 if self.hv.grants is None else self.hv.grants.mapping(domid, handle).domid

    def mt_frame(self, domid: int, handle: int) -> int:
        return 0 if self.hv.grants is None else self.hv.grants.mapping(domid, handle).frame

    def mt_pte(self, domid: int, handle: int) -> tuple[int, int]:
        return (0, 0) if self.hv.grants is None else self.hv.grants.mapping(domid, handle).pte

    def device_refs(self) -> list[tuple[int, bool]]:
        """References held outside page tables and descriptor tables, (frame, writable) each
        a general reference and a writable type reference if writable: grant device mappings
        and the back ends' foreign mappings (Hypervisor.backend_maps)."""
        grants = [] if self.hv.grants is None else self.hv.grants.device_refs()
        backends = [(mfn, True) for mfn, n in self.hv.backend_maps.items() for _ in range(n)]
        return grants + backends

    # what exists
    def frames(self) -> range:
        return range(self.memory.nr_frames)

    def vcpus(self) -> range:
        return range(len(self._vcpus))

    def descriptor_frames(self, vcpu: int) -> list[int]:
        return self.hv.descriptor_table_frames(self._vcpus[vcpu])

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        if not self._ram(mfn):
            return []
        words = self.memory.frame_words(mfn)
        return [(i, words[i]) for i in range(lo, hi) if pte_present(words[i])]


class CountingView(ConcreteView):
    """The view INV-COUNT counts on. A Xen heap page shared with a guest holds a type
    reference of its own with no general reference beside it (mm.c,
    share_xen_page_with_guest: type count 1, count_info PGC_allocated | 1), for which
    ``spec.invariants.references`` has no term; this view reports its type count without
    that reference, so a shared page whose permanent reference is missing (or counted twice)
    still fails INV-COUNT."""

    def type_count(self, mfn: int) -> int:
        return int(self.f.type_count[mfn]) - bool(self.f.flags[mfn] & PGC_xen_heap)


def check_invariants(hv: Hypervisor) -> list[str]:
    """Evaluate every invariant on the model's current state; the ids that fail, with detail."""
    view = ConcreteView(hv)
    failures = []
    for inv in INVARIANTS + COUNTER_INVARIANTS:
        view.witness.clear()
        if not inv.check(view):  # the witness: where it fails, in hex (spec.concrete)
            failures.append(f"{inv.id}: {inv.statement} At {view.witness_text()}.")
    failures += [f"INV-COUNT: {line}" for line in count_violations(CountingView(hv))]
    failures += check_event_invariants(hv)  # INV-EVT-* (refmodel.event)
    return failures

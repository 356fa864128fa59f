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

``check_invariants`` evaluates every invariant on the whole state. ``IncrementalChecker`` is
the same check for a machine checked after every step (the hostile-guest harness): the same
definitions from ``spec.invariants`` and ``spec.event_spec`` on a view that remembers, per
frame and vCPU quantifier, where the body held and what it read, and evaluates it again only
where that changed; it returns exactly what ``check_invariants`` returns (tests/
test_incremental_check.py).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from xenspec.refmodel.arch import ArchVcpu
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.event import _EVENTS_OF as EVENTS_OF
from xenspec.refmodel.event import (
    ConcreteEvtView,
    DomainEvents,
    Events,
)
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import (
    PGC_allocated,
    PGC_xen_heap,
    PGT_pae_xen_l2,
    PGT_pinned,
    PGT_validated,
)
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    PAE_L2_PAGETABLE_ENTRIES,
)
from xenspec.spec.concrete import ConcreteLogic
from xenspec.spec.invariants import (
    COUNTER_INVARIANTS,
    INVARIANTS,
    Invariant,
    count_violations,
)
from xenspec.spec.pagetable import PGT, pte_present, xen_l2e_of
from xenspec.spec.paging import COMPAT_PAE, paging_of

_INITIAL_ARCH = ArchVcpu()


class ConcreteView(ConcreteLogic):
    """A read-only ``StateView`` of a running ``Hypervisor``."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.f = hv.frames
        self.memory = hv.memory
        self._vcpus: list[Vcpu] = [v for d in hv.domains.values() for v in d.vcpus]
        self._xen_l2: dict[int, list[int]] = {}  # directory -> Xen's slots
        self.paging = paging_of(hv.profile)
        self._pae = self.paging is COMPAT_PAE

    # frames: RAM from the frame table; a frame number beyond it is I/O memory (dom_io's)
    def _ram(self, mfn: int) -> bool:
        return 0 <= mfn < self.memory.nr_frames

    def owner(self, mfn: int) -> int:
        return int(self.f.owner[mfn]) if 0 <= mfn < self.memory.nr_frames else abi.DOMID_IO

    def type(self, mfn: int) -> int:
        return int(self.f.type[mfn]) if 0 <= mfn < self.memory.nr_frames else int(PGT.none)

    def type_count(self, mfn: int) -> int:
        return int(self.f.type_count[mfn]) if self._ram(mfn) else 0

    def count(self, mfn: int) -> int:
        return int(self.f.count[mfn]) if self._ram(mfn) else 0

    def _flag(self, mfn: int, bit: int) -> bool:
        return 0 <= mfn < self.memory.nr_frames and bool(self.f.flags[mfn] & bit)

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

    def pae_xen_l2(self, mfn: int) -> bool:
        return self._flag(mfn, PGT_pae_xen_l2)

    # memory
    def entry(self, mfn: int, index: int) -> int:
        if not self._ram(mfn):
            return 0
        if self._pae:
            return self.memory.read_entry64(mfn, index)
        return self.memory.read_entry(mfn, index)

    def word(self, mfn: int, j: int) -> int:
        return self.memory.read_entry(mfn, j) if self._ram(mfn) else 0

    def xen_l2e(self, l2mfn: int, index: int) -> int:
        """Xen's entry in slot ``index`` of a directory: it depends on the owner and, in the
        linear page-table slot, on the directory itself (``spec.pagetable.xen_l2e_of``); -1
        (no entry) when the owner is not a domain. Compat PAE: the slot of the domain's
        L2 with Xen's slots (Hypervisor.xen_pae_l2_slots)."""
        if self._pae:
            return self._xen_pae_l2e(l2mfn, index)
        slots = self._xen_l2.get(l2mfn)
        if slots is None:
            d = self.hv.domains.get(self.owner(l2mfn))
            slots = self._xen_l2[l2mfn] = (self.hv.xen_l2_slots(d, l2mfn) if d is not None
                                           else [-1] * abi.L2_PAGETABLE_XEN_SLOTS)
        return xen_l2e_of(slots, l2mfn, index)

    def _xen_pae_l2e(self, l2mfn: int, index: int) -> int:
        owner = self.owner(l2mfn)
        slots = self._xen_l2.get(-1 - owner)  # the same for every such L2 of a domain
        if slots is None:
            d = self.hv.domains.get(owner)
            slots = self._xen_l2[-1 - owner] = (
                self.hv.xen_pae_l2_slots(d) if d is not None
                else [-1] * (PAE_L2_PAGETABLE_ENTRIES - COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT))
        return slots[index - COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT]

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
        frame = self.paging.pte_get_pfn(self.entry(mfn, index))
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
        if self._pae:
            qwords = self.memory.frame_qwords(mfn)
            return [(i, qwords[i]) for i in range(lo, hi) if qwords[i] & abi._PAGE_PRESENT]
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
    return _evaluate(ConcreteView(hv), CountingView(hv), _event_failures(hv))


def _event_failures(hv: Hypervisor) -> list[str]:
    """``refmodel.event.check_event_invariants``, on a view that makes the ports of a domain
    without event state once per check (``_EventsView``) instead of at each read."""
    events = events_of(hv)
    return [] if events is None else _events_check(_EventsView(events))


def _events_check(view: ConcreteEvtView) -> list[str]:
    from xenspec.spec.event_spec import EVT_INVARIANTS

    return [f"{inv.id}: {inv.statement}" for inv in EVT_INVARIANTS if not inv.check(view)]


def _evaluate(view: ConcreteView, counting: CountingView | list[str],
              events: list[str]) -> list[str]:
    """The one evaluation of every invariant, on whichever views (full or incremental);
    ``counting`` is the view INV-COUNT counts on, or what it found on an unchanged state."""
    failures = []
    for inv in INVARIANTS + COUNTER_INVARIANTS:
        view.witness.clear()
        if isinstance(view, _TrackingView):
            view.begin_invariant(inv)
        if not inv.check(view):  # the witness: where it fails, in hex (spec.concrete)
            failures.append(f"{inv.id}: {inv.statement} At {view.witness_text()}.")
    if isinstance(view, _TrackingView):
        view.begin_invariant(None)
    counted = counting if isinstance(counting, list) else count_violations(counting)
    failures += [f"INV-COUNT: {line}" for line in counted]
    failures += events  # INV-EVT-* (refmodel.event)
    return failures


# ------------------------------------------------------------------------------------------------
# The incremental check: the same invariants, re-evaluated only where the state changed.
# ------------------------------------------------------------------------------------------------
# What a frame quantifier's body read, as keys: a frame's frame-table entry (the frame number),
# its contents (CONTENT + the frame number), and state beyond the frames (negative keys).
CONTENT = 1 << 40
DOMAINS = -1  # the domains that exist, their privilege, Xen's slots of their directories
GRANTS = -2  # the grant tables' maptracks (grant_table.c: struct grant_mapping)
XEN_WRITES = -3  # the frames a back end or a writable grant device mapping writes into
VCPUS = -4  # vCPU state not in a vCPU's key (its LDT pages): taken as changed at every check
VCPU0 = -16  # VCPU0 - v: vCPU number v (which vCPU, its domain, base pointer, CPU state)

Site = tuple[str, int, object, int]  # (quantifier, invariant's position, body's code, occurrence)
# A (quantifier, frame or vCPU) pair is one int: the quantifier's number, shifted, and the item.
ITEM_BITS = 32
ITEM_MASK = (1 << ITEM_BITS) - 1


class _TrackingView(ConcreteView):
    """A ``ConcreteView`` that remembers, for each frame quantifier of each invariant, the
    frames its body has been seen to hold for and what each of those evaluations read; a frame
    whose reads have not changed since is not evaluated again (``IncrementalChecker``)."""

    def __init__(self, hv: Hypervisor, contents: dict[int, bytes],
                 parsed: dict[tuple[int, int, int], list[tuple[int, int]]]) -> None:
        super().__init__(hv)
        self.reads: set[int] | None = None  # what the body under evaluation read
        self.contents = contents  # snapshots of the frames whose contents a body read
        self.parsed = parsed  # present entries of a frame, while its contents stay the same
        self.inv: int | None = None
        self._occurrence: dict[object, int] = {}
        self._invs = INVARIANTS + COUNTER_INVARIANTS
        self.pending: dict[Site, set[int]] = {}  # frames not known to hold, per quantifier
        self.held: dict[Site, set[int]] = {}  # vCPUs known to hold, per quantifier
        self._site_ids: dict[Site, int] = {}
        self._marks: list[tuple[bool, set[int]]] = []  # per number: (frames?, pending or held)
        self.deps: dict[int, set[int]] = {}  # (quantifier, item) -> what its body read
        self.rdeps: dict[int, set[int]] = {}  # what was read -> the (quantifier, item) pairs

    def refresh(self) -> None:
        """Before a check: the vCPUs and Xen's directory slots as they are now."""
        self._vcpus = [v for d in self.hv.domains.values() for v in d.vcpus]
        self._xen_l2.clear()

    def begin_invariant(self, inv: Invariant | None) -> None:
        self.inv = None if inv is None else self._invs.index(inv)
        self._occurrence.clear()

    def invalidate(self, dirty: set[int]) -> None:
        """Every (quantifier, frame) whose evaluation read a key in ``dirty`` is pending."""
        rdeps, deps, marks = self.rdeps, self.deps, self._marks
        for key in dirty:
            pairs = rdeps.pop(key, None)
            if not pairs:
                continue
            for pair in pairs:
                reads = deps.pop(pair, None)
                if reads is None:
                    continue
                for k in reads:
                    others = rdeps.get(k)
                    if others is not None:
                        others.discard(pair)
                is_frame, items = marks[pair >> ITEM_BITS]
                if is_frame:
                    items.add(pair & ITEM_MASK)
                else:
                    items.discard(pair & ITEM_MASK)

    def _site_id(self, site: Site, items: set[int]) -> int:
        """The number of a quantifier site (``items``: its pending frames or held vCPUs)."""
        sid = self._site_ids.get(site)
        if sid is None:
            sid = self._site_ids[site] = len(self._marks)
            self._marks.append((site[0] == "frame", items))
        return sid

    # the reads
    def _read(self, key: int) -> None:
        if self.reads is not None:
            self.reads.add(key)

    def _read_contents(self, mfn: int) -> None:
        if self.reads is not None:
            self.reads.add(CONTENT + mfn)
            if mfn not in self.contents and self._ram(mfn):
                base = mfn * abi.PAGE_SIZE
                self.contents[mfn] = self.memory.ram[base : base + abi.PAGE_SIZE]

    def owner(self, mfn: int) -> int:
        reads = self.reads
        if reads is not None:
            reads.add(mfn)
        return ConcreteView.owner(self, mfn)

    def type(self, mfn: int) -> int:
        reads = self.reads
        if reads is not None:
            reads.add(mfn)
        return ConcreteView.type(self, mfn)

    def type_count(self, mfn: int) -> int:
        reads = self.reads
        if reads is not None:
            reads.add(mfn)
        return ConcreteView.type_count(self, mfn)

    def count(self, mfn: int) -> int:
        reads = self.reads
        if reads is not None:
            reads.add(mfn)
        return ConcreteView.count(self, mfn)

    def _flag(self, mfn: int, bit: int) -> bool:
        reads = self.reads
        if reads is not None:
            reads.add(mfn)
        return ConcreteView._flag(self, mfn, bit)

    def is_privileged(self, domid: int) -> bool:
        self._read(DOMAINS)
        return super().is_privileged(domid)

    def hypervisor_writes(self, mfn: int) -> bool:
        self._read(mfn)
        self._read(XEN_WRITES)
        return super().hypervisor_writes(mfn)

    def entry(self, mfn: int, index: int) -> int:
        self._read_contents(mfn)
        return super().entry(mfn, index)

    def word(self, mfn: int, j: int) -> int:
        self._read_contents(mfn)
        return super().word(mfn, j)

    def pae_xen_l2(self, mfn: int) -> bool:
        self._read(mfn)
        return super().pae_xen_l2(mfn)

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        self._read_contents(mfn)
        if mfn not in self.contents:  # read outside a body: nothing watches its contents
            return super().present_entries(mfn, lo, hi)
        key = (mfn, lo, hi)
        found = self.parsed.get(key)
        if found is None:
            found = self.parsed[key] = super().present_entries(mfn, lo, hi)
        return found

    def xen_l2e(self, l2mfn: int, index: int) -> int:
        self._read(DOMAINS)
        self._read(l2mfn)  # its owner
        return super().xen_l2e(l2mfn, index)

    def gnt_slot(self, mfn: int, index: int) -> int:
        self._read(GRANTS)
        self._read(mfn)
        self._read_contents(mfn)
        return super().gnt_slot(mfn, index)

    def mt_flags(self, domid: int, handle: int) -> int:
        self._read(GRANTS)
        return super().mt_flags(domid, handle)

    def mt_dom(self, domid: int, handle: int) -> int:
        self._read(GRANTS)
        return super().mt_dom(domid, handle)

    def mt_frame(self, domid: int, handle: int) -> int:
        self._read(GRANTS)
        return super().mt_frame(domid, handle)

    def mt_pte(self, domid: int, handle: int) -> tuple[int, int]:
        self._read(GRANTS)
        return super().mt_pte(domid, handle)

    def base(self, vcpu: int) -> int:
        self._read(VCPU0 - vcpu)
        return super().base(vcpu)

    def vcpu_domain(self, vcpu: int) -> int:
        self._read(VCPU0 - vcpu)
        return super().vcpu_domain(vcpu)

    def _arch(self, vcpu: int) -> ArchVcpu:
        self._read(VCPU0 - vcpu)
        return super()._arch(vcpu)

    def vcpu_key(self, vcpu: int) -> object:
        """Everything ``base``, ``vcpu_domain`` and the CPU-state reads give for a vCPU."""
        v = self._vcpus[vcpu]
        a = ConcreteView._arch(self, vcpu)
        return (v.domain.domain_id, v.vcpu_id, v.guest_table,
                tuple(t.cs for t in a.trap_ctxt), a.event_callback_cs,
                a.failsafe_callback_cs, a.kernel_ss, tuple(a.gdt_frames))

    def descriptor_frames(self, vcpu: int) -> list[int]:
        self._read(VCPUS)
        return super().descriptor_frames(vcpu)

    # the frame quantifier, remembered
    def forall_frames(self, body: Callable[[int], bool]) -> bool:
        """``ConcreteLogic.forall_frames`` (same result, same witness), evaluating the body
        only for the frames not known to hold: those it has not held for yet, and those
        where something it read has changed since (``invalidate``). Frames are taken in the
        same order, so the first failing frame is the one the full check reports."""
        if self.reads is not None or self.inv is None:  # nested, or outside an invariant
            return super().forall_frames(body)
        code = body.__code__
        n = self._occurrence.get(code, 0)
        self._occurrence[code] = n + 1
        site: Site = ("frame", self.inv, code, n)
        pending = self.pending.get(site)
        if pending is None:
            pending = self.pending[site] = set(self.frames())
        sid = self._site_id(site, pending)
        found = self.witness
        mark = len(found)
        for f in sorted(pending):
            reads: set[int] = set()
            self.reads = reads
            try:
                ok = body(f)
            finally:
                self.reads = None
            if not ok:
                found.append(("frame", (f,)))
                return False
            del found[mark:]
            pending.discard(f)
            self._remember(sid, f, reads)
        return True

    def forall_vcpus(self, body: Callable[[int], bool]) -> bool:
        """``ConcreteLogic.forall_vcpus``, evaluating the body only for the vCPUs not known
        to hold (as ``forall_frames``)."""
        if self.reads is not None or self.inv is None:
            return super().forall_vcpus(body)
        code = body.__code__
        n = self._occurrence.get(code, 0)
        self._occurrence[code] = n + 1
        site: Site = ("vcpu", self.inv, code, n)
        held = self.held.setdefault(site, set())
        sid = self._site_id(site, held)
        found = self.witness
        mark = len(found)
        for v in self.vcpus():
            if v in held:
                continue
            reads: set[int] = set()
            self.reads = reads
            try:
                ok = body(v)
            finally:
                self.reads = None
            if not ok:
                found.append(("vcpu", (v,)))
                return False
            del found[mark:]
            held.add(v)
            reads.add(VCPU0 - v)
            self._remember(sid, v, reads)
        return True

    def _remember(self, sid: int, x: int, reads: set[int]) -> None:
        pair = sid << ITEM_BITS | x
        self.deps[pair] = reads
        rdeps = self.rdeps
        for key in reads:
            pairs = rdeps.get(key)
            if pairs is None:
                rdeps[key] = {pair}
            else:
                pairs.add(pair)


class _EventsView(ConcreteEvtView):
    """``ConcreteEvtView`` that makes the ports of a domain with no event state yet (as
    evtchn_init would leave them) once per check instead of at every read."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self._fresh: dict[int, DomainEvents] = {}

    def _de(self, d: int) -> DomainEvents:
        de = self.ev.doms.get(d)
        if de is not None:
            return de
        fresh = self._fresh.get(d)
        if fresh is None:
            fresh = self._fresh[d] = super()._de(d)
        return fresh


def events_of(hv: Hypervisor) -> Events | None:
    """The machine's event subsystem (refmodel.event registers it), if it has one."""
    ref = EVENTS_OF.get(hv)
    return ref() if ref is not None else None


class IncrementalChecker:
    """``check_invariants`` of one machine, step after step: the same invariants
    (spec.invariants, spec.event_spec) with the same results and witnesses, but each frame
    quantifier evaluates its body again only for the frames where something it read changed.

    Before each check it finds what changed since the last one, by comparison, not by trusting
    the model to report its writes: every frame-table field of every frame, the contents of
    every frame a body has read (page tables, GDT and LDT frames, grant-mapped tables), the
    domains with their privilege and Xen's directory slots, the grant maptracks and the set of
    frames back ends and grant device mappings write into. vCPU state counts as changed every
    time, so whatever reads it is evaluated at every check, as are INV-COUNT (its counting
    view keeps the parsed entries of a table while its contents stay the same) and the event
    invariants (when the event state or a domain's pending and mask bits changed)."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.contents: dict[int, bytes] = {}
        parsed: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        self.view = _TrackingView(hv, self.contents, parsed)
        self.counting = _MemoCountingView(hv, self.contents, parsed)
        f = hv.frames
        self._fields = (f.owner, f.type, f.type_count, f.count, f.flags)
        self._snap: list[array[int]] | None = None
        self._globals: dict[int, object] = {}
        self._vcpu_keys: list[object] = []
        self._counted: tuple[object, list[str]] | None = None
        self._events: tuple[object, list[str]] | None = None

    def dirty(self) -> set[int]:
        """The keys that changed since the last check (all of them before the first)."""
        hv = self.hv
        dirty: set[int] = {VCPUS}
        if self._snap is None:
            self._snap = [array(a.typecode, a) for a in self._fields]
        else:
            for k, (now, then) in enumerate(zip(self._fields, self._snap, strict=True)):
                if now != then:
                    dirty.update(i for i, (a, b) in enumerate(zip(now, then, strict=True))
                                 if a != b)
                    self._snap[k] = array(now.typecode, now)
        ram = hv.memory.ram
        for mfn, was in self.contents.items():
            base = mfn * abi.PAGE_SIZE
            if ram[base : base + abi.PAGE_SIZE] != was:
                dirty.add(CONTENT + mfn)
                self.contents[mfn] = ram[base : base + abi.PAGE_SIZE]
        for key, value in ((DOMAINS, self._domains_state()), (GRANTS, self._grants_state()),
                           (XEN_WRITES, self._xen_writes_state())):
            if self._globals.get(key, None) != value:
                dirty.add(key)
                self._globals[key] = value
        view = self.view
        view.refresh()
        keys = [view.vcpu_key(v) for v in view.vcpus()]
        old = self._vcpu_keys
        dirty.update(VCPU0 - v for v in range(max(len(keys), len(old)))
                     if v >= len(keys) or v >= len(old) or keys[v] != old[v])
        self._vcpu_keys = keys
        return dirty

    def _domains_state(self) -> object:
        hv = self.hv
        return (hv.m2p_l1, hv.m2p_pae_l1, tuple((i, d.is_privileged, tuple(d.perdomain_pt))
                                 for i, d in hv.domains.items()))

    def _grants_state(self) -> object:
        g = self.hv.grants
        if g is None:
            return None
        return tuple((i, tuple((m.domid, m.ref, m.flags, m.frame, m.pte) for m in t.maptrack))
                     for i, t in g.tables.items())

    def _xen_writes_state(self) -> object:
        g = self.hv.grants
        device = () if g is None else tuple(sorted(f for f, w in g.device_refs() if w))
        return tuple(sorted(self.hv.backend_maps)), device

    def _events_state(self, events: Events) -> object:
        """Everything the event invariants read (spec.event_spec.EvtView)."""
        hv, mem = self.hv, self.hv.memory
        size = abi.NR_EVENT_CHANNELS // 8
        doms = []
        for i, d in hv.domains.items():
            si = events.pv.darch(d).shared_info_mfn << abi.PAGE_SHIFT
            doms.append((i, d.is_privileged, len(d.vcpus), si,
                         mem.read(si + abi.SHARED_INFO_evtchn_pending, size),
                         mem.read(si + abi.SHARED_INFO_evtchn_mask, size)))
        ports = tuple((i, tuple((c.state, c.notify_vcpu, c.remote_dom, c.remote_port, c.virq)
                                for c in de.ports),
                       tuple(sorted((v, tuple(t)) for v, t in de.virq_to_evtchn.items())))
                      for i, de in events.doms.items())
        return tuple(doms), ports

    def _event_failures(self) -> list[str]:
        events = events_of(self.hv)
        if events is None:
            return []
        state = self._events_state(events)
        if self._events is None or self._events[0] != state:
            self._events = (state, _events_check(_EventsView(events)))
        return list(self._events[1])

    def check(self) -> list[str]:
        """Every invariant on the model's current state: what ``check_invariants`` returns."""
        dirty = self.dirty()
        self.view.invalidate(dirty)
        tables_changed = self.counting.refresh(dirty)
        return _evaluate(self.view, self._count(dirty, tables_changed),
                         self._event_failures())

    def _count(self, dirty: set[int], tables_changed: bool) -> CountingView | list[str]:
        """INV-COUNT's view, or what it found last time if nothing it reads has changed: no
        frame-table field, no contents of a table it parsed, no vCPU's base pointer or
        descriptor-table frames, no device or back-end mapping."""
        view = self.view
        refs = (tuple((view.base(v), tuple(view.descriptor_frames(v))) for v in view.vcpus()),
                sorted(view.device_refs()))
        if (self._counted is not None and not tables_changed and self._counted[0] == refs
                and not any(0 <= k < CONTENT for k in dirty)):
            return list(self._counted[1])
        self._counted = (refs, count_violations(self.counting))
        return list(self._counted[1])


class _MemoCountingView(CountingView):
    """The counting view of ``IncrementalChecker``: a table's present entries are parsed
    again only when its contents changed."""

    def __init__(self, hv: Hypervisor, contents: dict[int, bytes],
                 parsed: dict[tuple[int, int, int], list[tuple[int, int]]]) -> None:
        super().__init__(hv)
        self.contents = contents
        self._parsed = parsed

    def refresh(self, dirty: set[int]) -> bool:
        """Forget the entries of the frames whose contents changed (for both views); whether
        there were any."""
        self._vcpus = [v for d in self.hv.domains.values() for v in d.vcpus]
        self._xen_l2.clear()
        stale = [k for k in self._parsed if CONTENT + k[0] in dirty]
        for key in stale:
            del self._parsed[key]
        return bool(stale)

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        key = (mfn, lo, hi)
        found = self._parsed.get(key)
        if found is None:
            if mfn not in self.contents and self._ram(mfn):
                base = mfn * abi.PAGE_SIZE
                self.contents[mfn] = self.memory.ram[base : base + abi.PAGE_SIZE]
            found = self._parsed[key] = super().present_entries(mfn, lo, hi)
        return found

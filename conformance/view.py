"""The invariants of ``xenspec.spec.invariants`` evaluated on any hypercall-level implementation.

``ImplementationView`` is a concrete ``StateView`` whose data come through the adapter
(``xenspec.conformance.adapter.HypercallLevel``): frame information (in one call where the
adapter has ``frames``, ``FrameTable``) and page-table contents are read once per check and
cached. ``violation_records(impl)`` gives every invariant that
fails as a ``Violation``: its id, its statement and its witness, the binding the check failed
on (the frame, slot, entry or vCPU, with the values there in hex; ``spec.concrete``).

An invariant needs data an adapter may not offer: INV-XENPAGE the frames the hypervisor writes
into (``XenWrittenFrames``), INV-COUNT Xen's reference counts (``counts_like_xen``). Without
them the invariant is not evaluated (``not_evaluated`` says why), never taken to hold: the view
raises ``NotEvaluated`` if anything asks it what the adapter cannot tell.

The view is total, so that checking reports and never raises: a frame number beyond the
implementation's RAM (an I/O frame a privileged domain maps, which Xen allows, or any number
a table, base pointer or GDT names) reads as I/O memory, owned by DOMID_IO as Xen's dom_io
owns it, with no type, references, flags or contents; a directory whose owner the
implementation does not know as a domain has no hypervisor slots to compare (-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xenspec.conformance.adapter import (
    FrameInfo,
    FrameTable,
    GrantHandle,
    GrantState,
    HypercallLevel,
    XenWrittenFrames,
)
from xenspec.conformance.checked import AdapterError
from xenspec.spec import abi
from xenspec.spec.concrete import ConcreteLogic
from xenspec.spec.invariants import (
    COUNTER_INVARIANTS,
    INVARIANTS,
    Invariant,
    count_violations,
)
from xenspec.spec.pagetable import PGT, pte_present, xen_l2e_of

_NO_HANDLE = GrantHandle(handle=-1, flags=0, domid=0, frame=0)
# What the view reads for a frame beyond RAM: I/O memory, dom_io's (mm.c, arch_init_memory).
IO_FRAME = FrameInfo(owner=abi.DOMID_IO, type=int(PGT.none), type_count=0, count=0,
                     validated=False, pinned=False, allocated=False)


def xen_slots(impl: HypercallLevel, domid: int, l2mfn: int) -> Sequence[int]:
    """What the hypervisor keeps in slots L2_PAGETABLE_FIRST_XEN_SLOT.. of directory ``l2mfn``
    of ``domid`` (the adapter's ``xen_l2_slots``); all -1 (nothing to compare) if the
    implementation has no such domain."""
    try:
        return list(impl.xen_l2_slots(domid, l2mfn))
    except (ValueError, KeyError, IndexError):  # not a domain the implementation has
        return [-1] * abi.L2_PAGETABLE_XEN_SLOTS
    except AdapterError as exc:  # the same, through the checked adapter
        if not isinstance(exc.__cause__, (ValueError, KeyError, IndexError)):
            raise
        return [-1] * abi.L2_PAGETABLE_XEN_SLOTS


def frame_table(impl: HypercallLevel) -> list[FrameInfo]:
    """Every frame's ``FrameInfo``: from one ``frames`` call where the adapter has it
    (``FrameTable``), which must give ``nr_frames`` of them; else one ``frame`` call each."""
    n = impl.nr_frames()
    if isinstance(impl, FrameTable):
        infos = list(impl.frames())
        if len(infos) != n:
            raise AdapterError("frames", f"frames() gave {len(infos)} frames where "
                                         f"nr_frames() says {n}")
        return infos
    return [impl.frame(m) for m in range(n)]


class NotEvaluated(Exception):
    """The adapter cannot supply what an invariant asks of the state."""


def not_evaluated(impl: HypercallLevel) -> dict[str, str]:
    """The invariants (by id) the suite cannot evaluate on ``impl``, with the reason."""
    out = {}
    if not isinstance(impl, XenWrittenFrames):
        out["INV-XENPAGE"] = ("the adapter does not say which frames the hypervisor writes "
                              "into (xen_written_frames)")
    if not impl.counts_like_xen:
        out["INV-COUNT"] = "the implementation does not count references like Xen"
    return out


def evaluated(impl: HypercallLevel) -> tuple[Invariant, ...]:
    """The invariants of the specification ``violations`` evaluates on ``impl``."""
    skip = not_evaluated(impl)
    return tuple(inv for inv in INVARIANTS + COUNTER_INVARIANTS if inv.id not in skip)


class ImplementationView(ConcreteLogic):
    """A read-only ``StateView`` of an implementation, through its adapter."""

    def __init__(self, impl: HypercallLevel, privileged: frozenset[int] = frozenset()) -> None:
        self.impl = impl
        self.privileged = privileged  # the domains the suite created privileged
        self.infos = frame_table(impl)
        # Each field of every frame, for the invariants' millions of reads a check.
        self._n = len(self.infos)
        self._owner = [f.owner for f in self.infos]
        self._type = [f.type for f in self.infos]
        self._validated = [f.validated for f in self.infos]
        self._bases = list(impl.vcpu_bases())
        self._words: dict[int, Sequence[int]] = {}
        self._xen: dict[int, Sequence[int]] = {}  # directory -> Xen's slots in it
        self._xen_written = (frozenset(impl.xen_written_frames())
                             if isinstance(impl, XenWrittenFrames) else None)
        self._handles: dict[int, dict[int, GrantHandle]] = {}  # grantee -> handle -> entry

    def words(self, mfn: int) -> Sequence[int]:
        if not self.mfn_valid(mfn):
            return [0] * abi.L1_PAGETABLE_ENTRIES
        w = self._words.get(mfn)
        if w is None:
            w = self._words[mfn] = self.impl.entries(mfn)
        return w

    def info(self, mfn: int) -> FrameInfo:
        return self.infos[mfn] if self.mfn_valid(mfn) else IO_FRAME

    # frames
    def owner(self, mfn: int) -> int:
        return self._owner[mfn] if 0 <= mfn < self._n else IO_FRAME.owner

    def type(self, mfn: int) -> int:
        return self._type[mfn] if 0 <= mfn < self._n else IO_FRAME.type

    def type_count(self, mfn: int) -> int:
        return self.info(mfn).type_count

    def count(self, mfn: int) -> int:
        return self.info(mfn).count

    def validated(self, mfn: int) -> bool:
        return self._validated[mfn] if 0 <= mfn < self._n else IO_FRAME.validated

    def pinned(self, mfn: int) -> bool:
        return self.info(mfn).pinned

    def allocated(self, mfn: int) -> bool:
        return self.info(mfn).allocated

    def mfn_valid(self, mfn: int) -> bool:
        return 0 <= mfn < self._n

    def is_privileged(self, domid: int) -> bool:
        return domid in self.privileged

    def hypervisor_writes(self, mfn: int) -> bool:
        if self._xen_written is None:
            raise NotEvaluated(not_evaluated(self.impl)["INV-XENPAGE"])
        return mfn in self._xen_written

    # memory
    def entry(self, mfn: int, index: int) -> int:
        return self.words(mfn)[index]

    def xen_l2e(self, l2mfn: int, index: int) -> int:
        """Xen's entry in slot ``index`` of directory ``l2mfn``: the implementation's account
        of the slots it wrote there, but in the linear page-table slot the directory's own
        frame (``spec.pagetable.xen_l2e_of``: only the account's flags are taken there)."""
        slots = self._xen.get(l2mfn)
        if slots is None:
            slots = self._xen[l2mfn] = xen_slots(self.impl, self.owner(l2mfn), l2mfn)
        return xen_l2e_of(slots, l2mfn, index)

    # vCPUs
    def base(self, vcpu: int) -> int:
        return self._bases[vcpu][1]

    def vcpu_domain(self, vcpu: int) -> int:
        return self._bases[vcpu][0]

    def descriptor_frames(self, vcpu: int) -> list[int]:
        return list(self.impl.descriptor_frames(self._bases[vcpu][0]))

    # grant tables: the grantee's handles, from an adapter that offers them (GrantState);
    # without them the view knows of no handle, and a PTE of another domain's frame reads as
    # a violation of INV-OWN (an implementation that maps grants must say which handles it
    # holds: "grants" in its offers).
    def handles(self, domid: int) -> dict[int, GrantHandle]:
        found = self._handles.get(domid)
        if found is None:
            found = {}
            if isinstance(self.impl, GrantState):
                found = {h.handle: h for h in self.impl.grant_handles(domid) if h.flags}
            self._handles[domid] = found
        return found

    def _handle(self, domid: int, handle: int) -> GrantHandle:
        return self.handles(domid).get(handle, _NO_HANDLE)

    def gnt_slot(self, mfn: int, index: int) -> int:
        """The table owner's host-mapping handle that wrote PTE (mfn, index) for the frame
        it names, a writable one if there is one; -1 if none (refmodel/grant.py,
        slot_handle)."""
        frame = self.entry(mfn, index) >> abi.PAGE_SHIFT
        found = -1
        for h in sorted(self.handles(self.owner(mfn)).values(), key=lambda h: h.handle):
            if h.flags & abi.GNTMAP_host_map and h.pte == (mfn, index) and h.frame == frame:
                if not h.flags & abi.GNTMAP_readonly:
                    return h.handle
                found = h.handle
        return found

    def mt_flags(self, domid: int, handle: int) -> int:
        return self._handle(domid, handle).flags

    def mt_dom(self, domid: int, handle: int) -> int:
        return self._handle(domid, handle).domid

    def mt_frame(self, domid: int, handle: int) -> int:
        return self._handle(domid, handle).frame

    def mt_pte(self, domid: int, handle: int) -> tuple[int, int]:
        return self._handle(domid, handle).pte

    def device_refs(self) -> list[tuple[int, bool]]:
        """(frame, writable) of every device mapping of the domains with a vCPU."""
        return [(h.frame, not h.flags & abi.GNTMAP_readonly)
                for d in dict.fromkeys(d for d, _ in self._bases)
                for h in self.handles(d).values() if h.flags & abi.GNTMAP_device_map]

    # what exists
    def frames(self) -> range:
        return range(len(self.infos))

    def vcpus(self) -> range:
        return range(len(self._bases))

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        w = self.words(mfn)
        return [(i, w[i]) for i in range(lo, hi) if pte_present(w[i])]


class CountingView(ImplementationView):
    """The view INV-COUNT counts on (``view``'s frames, read once): a shared Xen heap page's
    own type reference, which has no general reference beside it and no term in
    ``spec.invariants.references``, is left out of its type count (as refmodel/view.py's
    CountingView does)."""

    def __init__(self, view: ImplementationView) -> None:
        self.__dict__.update(vars(view))

    def type_count(self, mfn: int) -> int:
        return self.infos[mfn].type_count - self.infos[mfn].xen_heap


@dataclass(frozen=True)
class Violation:
    """One invariant that fails: its id, its statement, and where (the witness, in hex)."""

    id: str
    statement: str
    witness: str = ""

    def __str__(self) -> str:
        return f"{self.id}: {self.statement}" + (f" At {self.witness}." if self.witness else "")


def violation_records(impl: HypercallLevel,
                      privileged: frozenset[int] = frozenset()) -> list[Violation]:
    """Every invariant that fails on the implementation's current state (of those the suite
    can evaluate on it: ``evaluated``), each with its witness."""
    view = ImplementationView(impl, privileged)
    found = []
    for inv in evaluated(impl):
        view.witness.clear()
        if not inv.check(view):
            found.append(Violation(inv.id, inv.statement, view.witness_text()))
    if "INV-COUNT" not in not_evaluated(impl):
        found += [Violation("INV-COUNT", "Reference counts equal the references that exist.",
                            line) for line in count_violations(CountingView(view))]
    return found


def violations(impl: HypercallLevel, privileged: frozenset[int] = frozenset()) -> list[str]:
    """``violation_records`` as 'ID: statement At witness.' lines."""
    return [str(v) for v in violation_records(impl, privileged)]

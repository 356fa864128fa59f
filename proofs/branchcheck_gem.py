"""Spec-guided refinement for the grant-table, memory_op and event-channel transition specs:
every named branch (``spec.branches``) of spec.grant_spec, spec.memop_spec and spec.event_spec,
checked on the reference model, as ``proofs.branchcheck`` does for the MMU.

The machine is built by the model itself, through its hypercalls, so that it satisfies every
invariant by construction (grant handles, pins, references and event-channel bindings are
kept by the model's own code): two PV guests, A and B, where A grants frames to B and B maps
some of them (``GrantWorld``); one guest returning and asking for frames (``memop``); two
domains with event channels of every kind (``EventWorld``). The solver then chooses, for each
branch, the call's arguments and the words of the state a guest writes freely (the entries
of the granters' shared grant tables), under the branch's condition on the model's state: the
state is the model's, encoded (``Snapshot.encode``), with those words left open. The frame a
grant entry names is tried one representative frame at a time (a data page, a page table in
use, the directory, a frame Xen writes into, another domain's frame, no RAM), so that every
read of the state simplifies. The words chosen are written into the model's memory, the
invariants are checked (``check_invariants``), the handler runs, and the outcome is compared
with the spec as for the MMU (``branchcheck.check_branch``: the spec, on the state the model
was in, takes that branch and ends as the model did; for a failure also
``check_refinement``: no choice of the spec's succeeds).

A branch no state of these machines takes is listed in ``UNREACHABLE`` with the reason.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import z3

from xenspec.proofs import branchcheck, runner
from xenspec.proofs.branchcheck import Case
from xenspec.proofs.refinement import Snapshot, check_refinement
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.event import ConcreteEvtView, EventError, Events
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.pvguest import ARG_PAGES, PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.sharedfiles import update_json_dict
from xenspec.spec import abi, event_spec, symbolic
from xenspec.spec import branches as spec_branches
from xenspec.spec.branches import Check, NamedBranch, branches
from xenspec.spec.event_spec import EvtState, EvtTransition
from xenspec.spec.symbolic import SymState, bv

# ----------------------------------------------------------------------------------------------
# The grant machine: A grants, B maps.
# ----------------------------------------------------------------------------------------------
MACHINE_FRAMES = 80
GUEST_PAGES = 26
# pfns 16..20 are data pages mapped writable; the directory, the L1 and the boot stack follow
# (21..23); pfns 24 and 25 are not mapped.
MAPPED = ARG_PAGES + 8
ENTRIES_PER_FRAME = abi.PAGE_SIZE // abi.GRANT_ENTRY_T.size
# The grant references whose shared entries the solver writes (A's first and last, B's first):
# free entries, pinned by nobody.
OPEN_REFS = (0, abi.NR_GRANT_ENTRIES - 1)
# Frames of A's that B has mapped before the call (refs 1 and 2 of A's table).
RW_REF, RO_REF, GONE_REF = 1, 2, 3
SELF_REF = 5  # of B's own table: B grants itself its pfn 20
TAMPERED = 30  # B's pfns 30..35: grant mappings whose PTEs B changed afterwards
LINEAR_SLOT = abi.L2_PAGETABLE_FIRST_XEN_SLOT - 1  # B's linear map of its own directory


@dataclass
class GrantWorld:
    """The two guests and what was done to them before the call."""

    hv: Hypervisor
    pv: PVPlatform
    a: PVGuest
    b: PVGuest
    skip: frozenset[int]
    # Interesting frames by role (``frames``) and B's addresses by role (``addrs``).
    frames: dict[str, int] = field(default_factory=dict)

    @property
    def next_handle(self) -> int:
        """The handle get_maptrack_handle gives next: the lowest free one."""
        mt = self.pv.grants.table(self.b.domain).maptrack
        return next((h for h, m in enumerate(mt) if not m.flags), len(mt))

    def entry_words(self, domain: PVGuest, ref: int) -> tuple[int, int]:
        """(frame, index) of the first word of ``domain``'s shared entry ``ref``."""
        t = self.pv.grants.table(domain.domain)
        return t.shared[ref // ENTRIES_PER_FRAME], (ref % ENTRIES_PER_FRAME) * 2


def _grant(w: GrantWorld, granter: PVGuest, ref: int, frame: int, readonly: bool) -> None:
    """``granter`` writes its shared entry ``ref``: B may map ``frame``."""
    t = w.pv.grants.table(granter.domain)
    flags = abi.GTF_permit_access | (abi.GTF_readonly if readonly else 0)
    w.hv.memory.write((t.shared[ref // ENTRIES_PER_FRAME] << 12) + 8 * ref,
                      abi.GRANT_ENTRY_T.pack(flags, w.b.domid, frame))


def _map(w: GrantWorld, pfn: int, by_pte: bool, readonly: bool, ref: int, dom: int) -> int:
    """B maps ``dom``'s grant ``ref`` at the PTE of its pfn ``pfn`` (its first L1 maps pfns
    0..1023, present or not); the handle."""
    b = w.b
    flags = abi.GNTMAP_host_map | (abi.GNTMAP_readonly if readonly else 0)
    flags |= abi.GNTMAP_contains_pte if by_pte else 0
    addr = b.first_l1_mfn << 12 | 4 * pfn if by_pte else b.va(pfn)
    st, handle, _ = w.pv.grants.map_grant_ref(b.vcpu, addr, flags, ref, dom)
    assert st == abi.GNTST_okay, (pfn, by_pte, st)
    return handle


def build_grant_world() -> GrantWorld:
    """A and B (domains 0 and 1, one vCPU each: vCPU 0 is A's, 1 is B's). A grants its pfns
    16 (writable, ref 1), 17 and 18 (read-only, refs 2 and 3) to B; B grants its own pfn 20
    to itself (ref 5 of its table). B maps, by virtual address and by PTE address in turn
    (``TAMPERED``): ref 1 writable at pfn 16 and ref 2 read-only at pfn 17 (handles 0, 1);
    ref 3 at pfns 30, 31 whose PTEs it then clears with update_va_mapping (handles 2, 3), ref
    3 at pfns 32, 33 whose PTEs it then points at its own pfn 19 (handles 4, 5), and its own
    grant read-only at pfns 34, 35 whose PTEs it then makes writable (handles 6, 7). Its last
    guest directory slot maps the directory itself, read-only (a linear page table), and its
    pfn 24 was an L1 table, pinned and unpinned: L1-typed, no longer validated."""
    hv = Hypervisor(MACHINE_FRAMES)
    pv = PVPlatform(hv)
    a = PVGuest(hv, GUEST_PAGES, nr_mapped=MAPPED)
    b = PVGuest(hv, GUEST_PAGES, nr_mapped=MAPPED)
    for g in (a, b):
        pv.setup_domain(g.domain)
        pv.grants.table(g.domain)
    assert a.layout.pt_base_pfn == ARG_PAGES + 5, a.layout
    skip = frozenset(g.mfn(p) for g in (a, b) for p in range(ARG_PAGES))
    w = GrantWorld(hv, pv, a, b, skip)
    _grant(w, w.a, RW_REF, a.mfn(ARG_PAGES), False)
    _grant(w, w.a, RO_REF, a.mfn(ARG_PAGES + 1), True)
    _grant(w, w.a, GONE_REF, a.mfn(ARG_PAGES + 2), True)
    _grant(w, w.b, SELF_REF, b.mfn(ARG_PAGES + 4), True)
    _map(w, ARG_PAGES, False, False, RW_REF, a.domid)
    _map(w, ARG_PAGES + 1, True, True, RO_REF, a.domid)
    own = b.mfn(ARG_PAGES + 4) << 12 | abi._PAGE_PRESENT
    other = b.mfn(ARG_PAGES + 3) << 12 | abi._PAGE_PRESENT
    tampered = [(0, GONE_REF, a.domid), (other, GONE_REF, a.domid),
                (own | abi._PAGE_RW, SELF_REF, b.domid)]
    for k, (pte, ref, dom) in enumerate(tampered):
        for by_pte in (False, True):
            pfn = TAMPERED + 2 * k + by_pte
            _map(w, pfn, by_pte, True, ref, dom)
            assert b.update_va_mapping(b.va(pfn), pte) == 0, (pfn, pte)
    # B's last guest slot maps its own directory, read-only (a linear page table): a virtual
    # address there names a page directory where an L1 is looked for.
    l2e = b.l2_mfn << 12 | abi._PAGE_PRESENT
    assert b.mmu_update([((b.l2_mfn << 12) + 4 * LINEAR_SLOT, l2e)])[0] == 0
    old_l1 = b.mfn(MAPPED)
    assert b.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, old_l1, 0)])[0] == 0
    assert b.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, old_l1, 0)])[0] == 0
    w.frames = {
        "a_data": a.mfn(ARG_PAGES + 3),  # mapped writable by A
        "a_idle": a.mfn(MAPPED),  # A's, not mapped: untyped
        "a_l1": a.first_l1_mfn, "a_l2": a.l2_mfn,
        "a_granted": a.mfn(ARG_PAGES),  # mapped writable by B already (ref 1)
        "b_data": b.mfn(ARG_PAGES + 3),
        "xen": 0,
        "grant_frame": pv.grants.table(a.domain).shared[0],  # Xen writes into it
        "no_ram": MACHINE_FRAMES, "no_pte_frame": 1 << 20,
    }
    return w


# ----------------------------------------------------------------------------------------------
# Families: how to run one spec's calls on the model, and what the solver may choose.
# ----------------------------------------------------------------------------------------------
Args = dict[str, z3.ExprRef]


@dataclass(frozen=True)
class GemFamily:
    """One hypercall spec (its name in obligations.HYPERCALL_SPECS) on its machine."""

    name: str
    args: tuple[str, ...]
    run: Callable[[GrantWorld, dict[str, int]], int]
    # Constraints on the arguments (given the machine): the values worth trying.
    domain: Callable[[GrantWorld, Args], list[z3.BoolRef]]
    # Terms whose values distinguish the states worth trying.
    signature: Callable[[SymState, Args], list[z3.ExprRef]] = lambda s, a: []
    # Kinds of state the model handles on different paths where the spec has one branch: the
    # first states asked for are one of each kind, where the branch can be taken so.
    kinds: Callable[[Args], list[z3.BoolRef]] = lambda a: []
    # The grant entries (granter, ref) the solver writes; "" for none.
    open_entries: tuple[tuple[str, int], ...] = ()
    # The machine (``WORLDS``), and the argument naming a frame, tried one representative
    # frame at a time ("" for none: the open entries' frame words are, if any).
    world: str = "grant"
    frame: str = ""
    success_rc: int = 0  # what the call returns when it succeeds (memory_op: extents done)
    per_branch: int = 2  # states asked for per branch


def _in(x: z3.ExprRef, values: list[int]) -> z3.BoolRef:
    return z3.Or(*[x == v for v in values])


def _domids(w: GrantWorld) -> list[int]:
    """The granting domain as a caller may name it: A, B itself, DOMID_SELF, DOMID_IO, an id
    that names no domain, and the last id below the specials' range."""
    return [w.a.domid, w.b.domid, abi.DOMID_SELF, abi.DOMID_IO, 7,
            abi.DOMID_FIRST_RESERVED - 1]


def _refs() -> list[int]:
    return [*OPEN_REFS, RW_REF, RO_REF, abi.NR_GRANT_ENTRIES]


def _va_addrs(w: GrantWorld) -> list[int]:
    """B's virtual addresses: its mapped data pages and those of ``TAMPERED``, none (0), one
    whose L2 slot has no L1, its linear slot, the last page below Xen's area and Xen's
    first page."""
    b = w.b
    pfns = [*range(ARG_PAGES, ARG_PAGES + 5), *range(TAMPERED, TAMPERED + 6)]
    return [b.va(p) for p in pfns] + [
        0, 1 << abi.L2_PAGETABLE_SHIFT, LINEAR_SLOT << abi.L2_PAGETABLE_SHIFT,
        abi.HYPERVISOR_VIRT_START - abi.PAGE_SIZE, abi.HYPERVISOR_VIRT_START]


def _pte_addrs(w: GrantWorld) -> list[int]:
    """Machine addresses of PTEs: B's first L1 (its entries for pfns 16..20 and 30..35, one
    unaligned), none (0), B's L1-typed frame no longer validated, B's directory, A's L1, a
    data frame, and the first frame beyond RAM."""
    b, a = w.b, w.a
    l1 = b.first_l1_mfn << 12
    pfns = [*range(ARG_PAGES, ARG_PAGES + 5), *range(TAMPERED, TAMPERED + 6)]
    return [l1 | 4 * p for p in pfns] + [
        0, b.mfn(MAPPED) << 12 | 4 * 3, l1 | (4 * (ARG_PAGES + 3) + 2), b.l2_mfn << 12 | 4 * 5,
        a.first_l1_mfn << 12 | 4 * 19, b.mfn(ARG_PAGES + 3) << 12, MACHINE_FRAMES << 12]


def _map_flags() -> list[int]:
    host, ro = abi.GNTMAP_host_map, abi.GNTMAP_readonly
    return [host, host | ro, host | abi.GNTMAP_application_map, 0, ro]


def _map_family(by_pte: bool) -> GemFamily:
    form = abi.GNTMAP_contains_pte if by_pte else 0

    def run(w: GrantWorld, a: dict[str, int]) -> int:
        st, _, _ = w.pv.grants.map_grant_ref(w.b.vcpu, a["host_addr"], a["flags"], a["ref"],
                                             a["dom"])
        return 0 if st == abi.GNTST_okay else abi.GNTST_general_error

    def domain(w: GrantWorld, a: Args) -> list[z3.BoolRef]:
        addrs = _pte_addrs(w) if by_pte else _va_addrs(w)
        return [a["v"] == 1, a["handle"] == w.next_handle,
                _in(a["flags"], [f | form for f in _map_flags()]),
                _in(a["ref"], _refs()), _in(a["dom"], _domids(w)), _in(a["host_addr"], addrs)]

    def signature(s: SymState, a: Args) -> list[z3.ExprRef]:
        return [a["flags"], a["ref"]]

    suffix = "/contains_pte" if by_pte else ""
    return GemFamily(f"grant_table_op/map_grant_ref{suffix}",
                     ("v", "host_addr", "flags", "ref", "dom", "handle"), run, domain, signature,
                     lambda a: pin_kinds(a["ref"]),
                     (("a", OPEN_REFS[0]), ("a", OPEN_REFS[1]), ("b", 0)))


def pin_kinds(ref: z3.ExprRef) -> list[z3.BoolRef]:
    """A reference no handle has pinned (grant_table.c: a first pin reads and checks the whole
    shared entry) and one B has pinned already (only a first writable pin reads it again, for
    GTF_readonly): the spec reads the entry every time, the model takes two paths."""
    return [_in(ref, list(OPEN_REFS)), _in(ref, [RW_REF, RO_REF])]


def _unmap_family(by_pte: bool) -> GemFamily:
    def run(w: GrantWorld, a: dict[str, int]) -> int:
        st = w.pv.grants.unmap_grant_ref(w.b.vcpu, a["host_addr"], 0, a["handle"])
        return 0 if st == abi.GNTST_okay else abi.GNTST_general_error

    def domain(w: GrantWorld, a: Args) -> list[z3.BoolRef]:
        # A handle of the other form is unmapped by the other spec (the model dispatches on
        # the handle's GNTMAP_contains_pte): the handles of this form, and a free one.
        mt = w.pv.grants.table(w.b.domain).maptrack
        handles = [h for h, m in enumerate(mt)
                   if bool(m.flags & abi.GNTMAP_contains_pte) == by_pte or not m.flags]
        addrs = _pte_addrs(w) if by_pte else _va_addrs(w)
        return [a["v"] == 1, _in(a["handle"], [*handles, len(mt)]), _in(a["host_addr"], addrs)]

    def signature(s: SymState, a: Args) -> list[z3.ExprRef]:
        return [a["handle"]]

    suffix = "/contains_pte" if by_pte else ""
    return GemFamily(f"grant_table_op/unmap_grant_ref{suffix}", ("v", "host_addr", "handle"),
                     run, domain, signature)


def _copy_family(to_grant: bool) -> GemFamily:
    """A copy by B of 8 bytes: from a grant to one of B's frames, or (``to_grant``) from one
    of B's frames to a grant."""

    def run(w: GrantWorld, a: dict[str, int]) -> int:
        flags = abi.GNTCOPY_dest_gref if to_grant else abi.GNTCOPY_source_gref
        st = w.pv.grants.copy(w.b.vcpu, (a["src"], a["src_dom"], 0),
                              (a["dst"], a["dst_dom"], 8), 8, flags)
        return 0 if st == abi.GNTST_okay else abi.GNTST_general_error

    def domain(w: GrantWorld, a: Args) -> list[z3.BoolRef]:
        gref, mfn = ("dst", "src") if to_grant else ("src", "dst")
        own = [w.frames[k] for k in ("a_data", "b_data", "xen", "no_ram")] + [
            w.b.l2_mfn, w.b.first_l1_mfn, w.b.mfn(MAPPED),
            w.pv.grants.table(w.b.domain).shared[0]]
        return [a["v"] == 1, _in(a[gref], _refs()), _in(a[f"{gref}_dom"], _domids(w)),
                _in(a[mfn], own), _in(a[f"{mfn}_dom"], [abi.DOMID_SELF, w.b.domid])]

    def signature(s: SymState, a: Args) -> list[z3.ExprRef]:
        return [a["src"], a["dst"]]

    return GemFamily("grant_table_op/copy/to_grant" if to_grant else "grant_table_op/copy",
                     ("v", "src", "src_dom", "dst", "dst_dom"), run, domain, signature,
                     lambda a: pin_kinds(a["dst" if to_grant else "src"]),
                     (("a", OPEN_REFS[0]), ("a", OPEN_REFS[1]), ("b", 0)))


GRANT_FAMILIES: tuple[GemFamily, ...] = (
    _map_family(False), _map_family(True), _unmap_family(False), _unmap_family(True),
    _copy_family(False), _copy_family(True),
)

_SCOPE = ("a request another spec covers: the model dispatches on GNTMAP_device_map and "
          "GNTMAP_contains_pte (grant_table.c __gnttab_map_grant_ref, mm.c "
          "create_grant_host_mapping), so no request of this one fails so")
_HANDLE = ("the model's maptrack grows to MAPTRACK_MAX_ENTRIES (1024) handles: a machine "
           "with no free handle needs 1024 host mappings; the handle the spec names is the "
           "one the model takes (the lowest free one)")
_L1_VALIDATED = ("implied by INV-L2REF: a directory in use names only tables in use, and an "
                 "L1-typed frame in use is validated")
_L1_MFN = "implied by INV-BASE, INV-OWN and INV-L2REF: a directory in use names RAM only"
_BASE = ("a running vCPU has a base pointer: only a domain crashed by new_guest_cr3 has "
         "none, and it makes no more calls")
_UNMAP_SCOPE = ("the model dispatches on the handle's GNTMAP_contains_pte: a handle of the "
                "other form is unmapped by the other spec")
UNREACHABLE: dict[str, str] = {
    "grant_table_op/map_grant_ref fail/scope": _SCOPE,
    "grant_table_op/map_grant_ref/contains_pte fail/scope": _SCOPE,
    "grant_table_op/map_grant_ref fail/handle": _HANDLE,
    "grant_table_op/map_grant_ref/contains_pte fail/handle": _HANDLE,
    "grant_table_op/map_grant_ref fail/l1_validated": _L1_VALIDATED,
    "grant_table_op/map_grant_ref fail/base": _BASE,
    "grant_table_op/unmap_grant_ref fail/host/base": _BASE,
    "grant_table_op/unmap_grant_ref fail/host/l1_validated": _L1_VALIDATED,
    "grant_table_op/map_grant_ref fail/l1_mfn": _L1_MFN,
    "grant_table_op/unmap_grant_ref fail/host/l1_mfn": _L1_MFN,
    "grant_table_op/unmap_grant_ref fail/scope": _UNMAP_SCOPE,
    "grant_table_op/unmap_grant_ref/contains_pte fail/scope": _UNMAP_SCOPE,
}


# ----------------------------------------------------------------------------------------------
# memory_op: one guest returns frames and asks for more (spec.memop_spec).
# ----------------------------------------------------------------------------------------------
@dataclass
class MemopWorld:
    """Guest G (domain 0, vCPU 0) with memory_op, another domain, and G's frames by role."""

    hv: Hypervisor
    g: PVGuest
    skip: frozenset[int]
    frames: dict[str, int] = field(default_factory=dict)


def build_memop_world() -> MemopWorld:
    """G of 30 frames, 21 mapped (its directory, L1 and boot stack are pfns 18..20); it pins
    its unmapped pfn 24 as an L1 table. Another domain owns two frames."""
    hv = Hypervisor(64)
    pv = PVPlatform(hv)
    g = PVGuest(hv, 30, nr_mapped=ARG_PAGES + 5)
    pv.setup_domain(g.domain)
    hv.hypercall_table.update(MemOp(pv).hypercalls())
    other = hv.create_domain(2)
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, g.mfn(24), 0)])[0] == 0
    shared = [m for m in range(hv.memory.nr_frames) if hv.hypervisor_writes(m)
              and int(hv.frames.owner[m]) == g.domid]
    w = MemopWorld(hv, g, frozenset(g.mfn(p) for p in range(ARG_PAGES)))
    w.frames = {
        "mapped": g.mfn(ARG_PAGES),  # mapped writable: stays referenced
        "idle": g.mfn(26),  # not mapped, untyped: returns to the heap
        "pinned_l1": g.mfn(24),  # its pin goes, then it returns to the heap
        "l1": g.first_l1_mfn, "l2": g.l2_mfn,  # in use: stay
        "xen_written": shared[0],  # shared_info: refused
        "other": other.page_list[0], "xen": 0,
        "free": hv.free_list[-1], "free_low": hv.free_list[0], "no_ram": 64,
    }
    return w


def _memop(cmd: int, w: MemopWorld, mfn: int) -> tuple[int, int]:
    """One extent of ``cmd`` through the hypercall: (extents done, the extent's word after)."""
    g = w.g
    extents = g.write_args(mfn.to_bytes(4, "little"), offset=64)
    args = abi.XEN_MEMORY_RESERVATION_T.pack(extents, 1, 0, 0, abi.DOMID_SELF)
    rc = g.hypercall("memory_op", cmd, g.write_args(args))
    got = w.hv.copy_from_guest(g.vcpu, extents, 4) or bytes(4)
    return rc, int.from_bytes(got, "little")


def _decrease(w: Any, a: dict[str, int]) -> int:
    return _memop(abi.XENMEM_decrease_reservation, w, a["mfn"])[0]


def _increase(w: Any, a: dict[str, int]) -> int:
    """The heap gives the frame the solver named if it is free (it is put where
    alloc_domheap_pages takes the next frame, with room in the reservation); otherwise the
    reservation is full and the call gives nothing. The spec is then asked about the frame
    the model gave (``a["mfn"]`` becomes it)."""
    hv, d = w.hv, w.g.domain
    f = a["mfn"]
    if f in hv.free_list:
        hv.free_list.remove(f)
        hv.free_list.append(f)
        d.max_pages = d.tot_pages + 1
    else:
        d.max_pages = d.tot_pages
    rc, got = _memop(abi.XENMEM_increase_reservation, w, 0)
    if rc == 1:
        a["mfn"] = got
    return rc


MEMOP_FAMILIES: tuple[GemFamily, ...] = (
    # One state per kind of frame: mapped (stays the domain's), idle (freed), pinned (freed
    # once its pin goes), a page table in use (stays).
    GemFamily("memory_op/decrease_reservation", ("v", "mfn"), _decrease,
              lambda w, a: [a["v"] == 0], lambda s, a: [s.type[a["mfn"]], s.pinned[a["mfn"]]],
              world="memop", frame="mfn", success_rc=1, per_branch=4),
    GemFamily("memory_op/increase_reservation", ("v", "mfn"), _increase,
              lambda w, a: [a["v"] == 0], world="memop", frame="mfn", success_rc=1),
)


# ----------------------------------------------------------------------------------------------
# The solver's side.
# ----------------------------------------------------------------------------------------------
def _args(family: GemFamily) -> Args:
    return {n: z3.BitVec(n, 32) for n in family.args}


def open_words(w: Any, family: GemFamily) -> dict[tuple[int, int], z3.BitVecRef]:
    """The words the solver writes: each open grant entry's two words."""
    out = {}
    for who, ref in family.open_entries:
        frame, word = w.entry_words(w.a if who == "a" else w.b, ref)
        for k in (0, 1):
            out[(frame, word + k)] = z3.BitVec(f"gen.{who}{ref}.{k}", 32)
    return out


def _table2(values: dict[tuple[int, int], Any], default: Any) -> z3.ArrayRef:
    """A two-index array given by its values at a few points, as an If-chain under a lambda
    (``branchcheck._table``): a read simplifies to bit-vector terms."""
    x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
    body = default
    for (f, i), e in sorted(values.items(), reverse=True):
        body = z3.If(z3.And(x == f, k == i), e, body)
    return z3.Lambda([x, k], body)


def open_state(before: Snapshot, words: dict[tuple[int, int], z3.BitVecRef]) -> SymState:
    """The model's state with ``words`` left to the solver, its arrays as If-chains."""
    s = before.encode()
    table = branchcheck._table
    mem = {k: bv(e) for k, e in before.entries.items()} | dict(words)
    handles = {name: _table2({k: bv(v[j]) for k, v in before.handles.items()}, bv(0))
               for j, name in enumerate(("mt_flags", "mt_dom", "mt_frame", "mt_l1", "mt_idx"))}
    return s.evolve(
        owner=table({f: bv(o) for f, o in enumerate(before.owner)}, bv(0)),
        type=table({f: bv(t) for f, t in enumerate(before.type)}, bv(0)),
        validated=table({f: z3.BoolVal(x) for f, x in enumerate(before.validated)},
                        z3.BoolVal(False)),
        pinned=table({f: z3.BoolVal(x) for f, x in enumerate(before.pinned)}, z3.BoolVal(False)),
        mem=_table2(mem, bv(0)), base=table({v: bv(b) for v, b in enumerate(before.bases)}, bv(0)),
        vcpu_domain=table({v: bv(d) for v, d in enumerate(before.vcpu_domains)}, bv(0)),
        xen_written=table({f: z3.BoolVal(x) for f, x in enumerate(before.xen_written)},
                          z3.BoolVal(False)),
        gdt_ref=table({f: z3.BoolVal(x) for f, x in enumerate(before.gdt_ref)}, z3.BoolVal(False)),
        gnt_table=_table2({k: bv(m) for k, m in before.gnt_tables.items()}, bv(0)),
        gnt_slot=_table2({k: bv(h) for k, h in before.ghost_slots().items()}, bv(0)),
        **handles,
    )


def _pins(w: GrantWorld, words: dict[tuple[int, int], z3.BitVecRef]
          ) -> list[list[tuple[z3.ExprRef, z3.ExprRef]]]:
    """One substitution per representative frame for the open entries' frame words (all the
    same frame at once: a call reads one entry of each side)."""
    frame_words = [e for (f, i), e in words.items() if i % 2 == 1]
    if not frame_words:
        return [[]]
    return [[(e, bv(f)) for e in frame_words] for f in w.frames.values()]


def _entry_values(words: dict[tuple[int, int], z3.BitVecRef]) -> list[z3.BoolRef]:
    """The entries' first words hold flags of the grant_entry bits only (a domid above)."""
    mask = abi.GTF_type_mask | abi.GTF_readonly | abi.GTF_reading | abi.GTF_writing
    return [e & 0xFFFF & ~mask == 0 for (f, i), e in words.items() if i % 2 == 0]


def solve(w: Any, family: GemFamily, s: SymState, a: Args,
          words: dict[tuple[int, int], z3.BitVecRef], b: NamedBranch,
          blocked: list[z3.BoolRef]) -> z3.ModelRef | None:
    common = [*family.domain(w, a), *_entry_values(words)]
    pins = ([[(a[family.frame], bv(f))] for f in w.frames.values()] if family.frame
            else _pins(w, words))
    return branchcheck.solve_branch(common, b, blocked, z3.BoolVal(True), pins)


# ----------------------------------------------------------------------------------------------
# Checking one branch.
# ----------------------------------------------------------------------------------------------
_WORLD: dict[str, tuple[Any, Snapshot]] = {}


def _template(world: str) -> tuple[Any, Snapshot]:
    if world not in _WORLD:
        w = WORLDS[world]()
        _WORLD[world] = (w, Snapshot.take(w.hv, w.skip))
    return _WORLD[world]


def branch_names(family: GemFamily) -> list[str]:
    symbolic.reset_fresh()
    builder = dict(branchcheck._builders())[family.name]
    return [b.name for b in branches(builder(SymState.fresh("old")))]


def family(name: str) -> GemFamily:
    (f,) = [f for f in FAMILIES if f.name == name]
    return f


@dataclass
class Context:
    """One family's solver side, built once: the open state, the arguments, the open words
    and the spec's branches on them (arguments substituted)."""

    s: SymState
    args: Args
    words: dict[tuple[int, int], z3.BitVecRef]
    branches: dict[str, NamedBranch]


_CONTEXTS: dict[str, Context] = {}


def _build(family: GemFamily, before: Snapshot, s: SymState,
           words: dict[tuple[int, int], z3.BitVecRef], flip: str | None = None) -> Any:
    """The family's spec on the open state (``flip``: that requirement negated)."""
    builder = dict(branchcheck._builders())[family.name]
    # Quantifiers over the page-table frames, the vCPUs and the entry indices in use: the
    # state is concrete but for the open words, and the grant specs quantify only over the
    # entries of tables in use (has_type_refs), so the bounded expansion is exact for them.
    indices = tuple(sorted(before.indices() | {i for _, i in words}))
    tables = tuple(f for f, t in enumerate(before.type) if t in (1, 2))
    previous = symbolic.SCOPE
    symbolic.set_scope(branchcheck.FrameScope(frames=before.nr_frames, vcpus=len(before.bases),
                                              indices=indices, frame_list=tables))
    try:
        with spec_branches.flipped(flip):
            return builder(s)
    finally:
        symbolic.set_scope(previous)


def context(family: GemFamily) -> Context:
    ctx = _CONTEXTS.get(family.name)
    if ctx is not None:
        return ctx
    w, before = _template(family.world)
    words = open_words(w, family)
    symbolic.reset_fresh()
    s = open_state(before, words)
    a = _args(family)
    t = _build(family, before, s, words)
    pairs = [(z3.BitVec(n, 32), a[n]) for n in family.args]
    named = {b.name: NamedBranch(b.name, b.kind, z3.substitute(b.cond, *pairs))
             for b in branches(t)}
    ctx = _CONTEXTS[family.name] = Context(s, a, words, named)
    return ctx


def sole_failure(family: GemFamily, branch: str) -> z3.BoolRef:
    """For a failure branch: every other requirement of the spec holds (the spec built with
    this branch's requirement negated succeeds), so that the call fails for this reason
    alone: a model that skipped the check would succeed."""
    _, before = _template(family.world)
    ctx = context(family)
    t = _build(family, before, ctx.s, ctx.words, flip=branch.split("/")[-1])
    pairs = [(z3.BitVec(n, 32), ctx.args[n]) for n in family.args]
    return z3.substitute(t.ok, *pairs)


def states_for(family: GemFamily, branch: str, per_branch: int
               ) -> list[tuple[dict[str, int], dict[tuple[int, int], int]]]:
    """Up to ``per_branch`` (arguments, open words) that take ``branch`` on the machine,
    differing in the family's signature, one of each of the family's ``kinds`` first; for a
    failure, states where it fails for that reason alone first (``sole_failure``), when there
    are."""
    w, _ = _template(family.world)
    ctx = context(family)
    a, words, b = ctx.args, ctx.words, ctx.branches[branch]
    found: list[tuple[dict[str, int], dict[tuple[int, int], int]]] = []
    blocked: list[z3.BoolRef] = []
    sig = family.signature(ctx.s, a)
    sole = [sole_failure(family, branch)] if b.kind == "fail" else []
    kinds = family.kinds(a)
    while len(found) < per_branch:
        kind = kinds[:1]
        model = solve(w, family, ctx.s, a, words, b, [*blocked, *sole, *kind])
        kinds = kinds[1:]
        if model is None and kind:  # no state of this kind takes the branch: the next kind
            continue
        if model is None and sole:
            sole, kinds = [], family.kinds(a)
            continue
        if model is None:
            break

        def num(x: z3.ExprRef, m: z3.ModelRef = model) -> int:
            return int(m.eval(x, model_completion=True).as_long())

        found.append(({n: num(a[n]) for n in family.args},
                      {k: num(e) for k, e in words.items()}))
        if not sig:
            break
        blocked.append(z3.Or(*[x != model.eval(x, model_completion=True) for x in sig]))
    return found


def run_case(family: GemFamily, branch: str, values: dict[str, int],
             words: dict[tuple[int, int], int]) -> Case:
    """Build the machine, write the chosen words, run the handler, check the outcome."""
    w = WORLDS[family.world]()
    for (f, i), e in words.items():
        w.hv.memory.write_entry(f, i, e)
    bad = check_invariants(w.hv)
    if bad:
        return Case(family.name, branch, values, "the state built breaks: " + "; ".join(bad))
    before = Snapshot.take(w.hv, w.skip)
    try:
        rc = family.run(w, values)
    except Exception as e:  # a model that fails internally has left the spec's behaviours
        return Case(family.name, branch, values, f"the model raised {type(e).__name__}: {e}")
    bad = check_invariants(w.hv)
    if bad:
        return Case(family.name, branch, values, "the state after breaks: " + "; ".join(bad))
    after = Snapshot.take(w.hv, w.skip)
    spec = branchcheck.spec_with_args(family, values)  # type: ignore[arg-type]
    problem = None
    if branch.startswith("fail"):
        problem = check_refinement(before, after, rc, spec, success_rc=family.success_rc)
    if problem is None:
        problem = branchcheck.check_branch(before, after, rc, spec, branch)
    return Case(family.name, branch, values | {f"word{f}.{i}": e for (f, i), e in words.items()},
                problem)


def check_one(family: GemFamily, branch: str, per_branch: int | None = None) -> list[Case]:
    """Check branch ``branch`` of ``family``: one case per state found (none: no state of the
    machine takes the branch); ``per_branch`` states at most (the family's number if None)."""
    return [run() for run in cases_for(family, branch, per_branch)]


def cases_for(family: GemFamily, branch: str, per_branch: int | None = None
              ) -> list[Callable[[], Case]]:
    """The checks of ``check_one``, each to run (again, on a changed model)."""
    n = family.per_branch if per_branch is None else per_branch
    return [functools.partial(run_case, family, branch, values, words)
            for values, words in states_for(family, branch, n)]


FAMILIES: tuple[GemFamily, ...] = GRANT_FAMILIES + MEMOP_FAMILIES
WORLDS: dict[str, Callable[[], Any]] = {"grant": build_grant_world,
                                        "memop": build_memop_world}


def record(key: str, cases: list[Case]) -> None:
    """Merge one branch's result into ``branchcheck.BRANCHES_FILE`` (the documentation's
    traceability matrix), in ``branchcheck.record``'s form, with this module's reasons."""
    entry = {"hit": len(cases), "failed": sum(c.problem is not None for c in cases),
             "reason": "" if cases else UNREACHABLE.get(key, "no state found"),
             "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}

    def merge(data: dict[str, Any]) -> None:
        data[key] = entry

    update_json_dict(runner.cache_dir() / branchcheck.BRANCHES_FILE, merge)


# ----------------------------------------------------------------------------------------------
# Event channels (spec.event_spec): the model's event state as an ``EvtState``.
# ----------------------------------------------------------------------------------------------
@dataclass
class EventWorld:
    """Domains A (privileged, two vCPUs), B and C, with event channels of every kind."""

    hv: Hypervisor
    pv: PVPlatform
    doms: dict[str, Domain]
    ports: dict[str, int] = field(default_factory=dict)  # A's ports by kind

    @property
    def events(self) -> Events:
        return self.pv.events


def build_event_world() -> EventWorld:
    """A's ports: 1 unbound offered to B, 2 interdomain with B's port 1, 3 VIRQ_TIMER of vCPU
    1, 4 a global VIRQ (VIRQ_DOM_EXC), 5 an IPI to vCPU 1 (masked and pending); B's port 2
    is unbound, offered to A. C (one vCPU) has used every port (IPIs): no port is left."""
    hv = Hypervisor(48)
    pv = PVPlatform(hv)
    a = hv.create_domain(2, privileged=True, nr_vcpus=2)
    b = hv.create_domain(2)
    c = hv.create_domain(2)
    for d in (a, b, c):
        pv.setup_domain(d)
    ev = pv.events
    va, vb, vc = a.vcpus[0], b.vcpus[0], c.vcpus[0]
    w = EventWorld(hv, pv, {"a": a, "b": b, "c": c})
    w.ports["unbound"] = ev.alloc_unbound(va, abi.DOMID_SELF, b.domain_id)
    offered = ev.alloc_unbound(va, abi.DOMID_SELF, b.domain_id)
    assert ev.bind_interdomain(vb, a.domain_id, offered) == 1
    w.ports["interdomain"] = offered
    w.ports["virq"] = ev.bind_virq(va, abi.VIRQ_TIMER, 1)
    w.ports["global_virq"] = ev.bind_virq(va, abi.VIRQ_DOM_EXC, 0)
    w.ports["ipi"] = ev.bind_ipi(va, 1)
    ev._test_and_set(a, abi.SHARED_INFO_evtchn_mask, w.ports["ipi"])
    ev.send(va, w.ports["ipi"])
    assert ev.alloc_unbound(vb, abi.DOMID_SELF, a.domain_id) == 2
    while len(ev.dom(c).ports) < abi.NR_EVENT_CHANNELS or any(
            p.state == abi.ECS_FREE for p in ev.dom(c).ports):
        ev.bind_ipi(vc, 0)
    assert list(w.ports.values()) == [1, 2, 3, 4, 5], w.ports
    return w


def _chain(points: dict[Any, Any], default: Any) -> z3.ArrayRef:
    """An array of one, two or three indices given at a few points, as an If-chain."""
    n = len(next(iter(points))) if points else 1
    xs = [z3.BitVec(f"x{k}", 32) for k in range(n)]
    body = default
    for key, value in sorted(points.items(), reverse=True):
        body = z3.If(z3.And(*[x == k for x, k in zip(xs, key, strict=True)]), value, body)
    return z3.Lambda(xs, body)


def _rows(rows: dict[int, list[Any]], wrap: Callable[[Any], Any], default: Any
          ) -> z3.ArrayRef:
    """A (domain, port) array from each domain's list of values, each list as its runs of
    equal values (a domain whose every port is bound reads as two runs, not 1024 cases)."""
    d, p = z3.BitVec("x0", 32), z3.BitVec("x1", 32)
    body = default
    for dom, values in sorted(rows.items(), reverse=True):
        row = default
        runs: list[tuple[int, Any]] = []  # (end, value), ascending
        for k, x in enumerate(values):
            if runs and runs[-1][1] == x:
                runs[-1] = (k + 1, x)
            else:
                runs.append((k + 1, x))
        for end, x in reversed(runs):
            row = z3.If(z3.ULT(p, end), wrap(x), row)
        body = z3.If(d == dom, row, body)
    return z3.Lambda([d, p], body)


def encode_events(w: EventWorld) -> EvtState:
    """The model's event state as the spec sees it (``ConcreteEvtView``): every port of every
    domain, each vCPU's VIRQ table, the domains' existence, vCPUs and privilege."""
    view = ConcreteEvtView(w.events)
    doms = sorted(w.hv.domains)

    def per_port(get: Callable[[int, int], Any], wrap: Callable[[Any], Any] = bv,
                 default: Any = None) -> z3.ArrayRef:
        dflt = default if default is not None else bv(0)
        return _rows({d: [get(d, p) for p in range(view.nports(d))] for d in doms}, wrap, dflt)

    false = z3.BoolVal(False)
    virq_port = {(d, v.vcpu_id, q): bv(view.virq_port(d, v.vcpu_id, q))
                 for d in doms for v in w.hv.domains[d].vcpus for q in range(abi.NR_VIRQS)
                 if view.virq_port(d, v.vcpu_id, q)}
    return EvtState(
        state=per_port(view.state), rdom=per_port(view.rdom), rport=per_port(view.rport),
        notify=per_port(view.notify), virq=per_port(view.virq),
        pending=per_port(view.pending, z3.BoolVal, false),
        mask=per_port(view.mask, z3.BoolVal, false),
        nports=_chain({(d,): bv(view.nports(d)) for d in doms}, bv(0)),
        virq_port=_chain(virq_port, bv(0)) if virq_port else _chain({(0, 0, 0): bv(0)}, bv(0)),
        exists=_chain({(d,): z3.BoolVal(True) for d in doms}, false),
        nvcpus=_chain({(d,): bv(view.nvcpus(d)) for d in doms}, bv(0)),
        privileged=_chain({(d,): z3.BoolVal(view.privileged(d)) for d in doms}, false),
    )


def same_events(s: EvtState, w: EventWorld) -> z3.BoolRef:
    """``s`` agrees with the model's event state on what a guest can observe of each port:
    its state, the vCPU it notifies, its pending and mask bits, the remote domain of an
    unbound or interdomain port, the remote port of an interdomain one, the VIRQ of a VIRQ
    port; each domain's valid ports and VIRQ tables. (A freed port's other fields are stale
    in Xen's __evtchn_close and reset in the model: neither is observable.)"""
    view = ConcreteEvtView(w.events)
    terms = []
    for d in sorted(w.hv.domains):
        n = view.nports(d)
        terms.append(s.nports[bv(d)] == n)
        for p in range(n):
            st = view.state(d, p)
            at = (bv(d), bv(p))
            terms += [z3.Select(s.state, *at) == st, z3.Select(s.notify, *at) == view.notify(d, p),
                      z3.Select(s.pending, *at) == view.pending(d, p),
                      z3.Select(s.mask, *at) == view.mask(d, p)]
            if st in (abi.ECS_UNBOUND, abi.ECS_INTERDOMAIN):
                terms.append(z3.Select(s.rdom, *at) == view.rdom(d, p))
            if st == abi.ECS_INTERDOMAIN:
                terms.append(z3.Select(s.rport, *at) == view.rport(d, p))
            if st == abi.ECS_VIRQ:
                terms.append(z3.Select(s.virq, *at) == view.virq(d, p))
        for v in w.hv.domains[d].vcpus:
            terms += [z3.Select(s.virq_port, bv(d), bv(v.vcpu_id), bv(q))
                      == view.virq_port(d, v.vcpu_id, q) for q in range(abi.NR_VIRQS)]
    return z3.And(*terms)


@dataclass(frozen=True)
class EvtFamily:
    """One EVTCHNOP's spec (event_spec.COMMANDS) on the event machine: its arguments (spec
    constants), how the model runs it, and the values worth trying for each argument."""

    name: str
    args: tuple[str, ...]
    run: Callable[[Events, Vcpu, dict[str, int]], int]
    values: Callable[[EventWorld], dict[str, list[int]]]


def _port_values(w: EventWorld) -> list[int]:
    return [0, 1, 2, 3, 4, 5, 6, abi.EVTCHNS_PER_BUCKET - 1, abi.EVTCHNS_PER_BUCKET,
            abi.NR_EVENT_CHANNELS - 1, abi.NR_EVENT_CHANNELS]


def _dom_values(w: EventWorld) -> list[int]:
    return [*(d.domain_id for d in w.doms.values()), abi.DOMID_SELF, 7]


_VCPUS = [0, 1, 2, abi.MAX_VIRT_CPUS]


# The commands that return 0 (status's words are not in the spec's state).
def _close(ev: Events, v: Vcpu, a: dict[str, int]) -> int:
    ev.close(v.domain, a["port"])
    return 0


def _send(ev: Events, v: Vcpu, a: dict[str, int]) -> int:
    ev.send(v, a["port"])
    return 0


def _status(ev: Events, v: Vcpu, a: dict[str, int]) -> int:
    ev.status(v, a["dom"], a["port"])
    return 0


def _bind_vcpu(ev: Events, v: Vcpu, a: dict[str, int]) -> int:
    ev.bind_vcpu(v, a["port"], a["vcpu"])
    return 0


def _unmask(ev: Events, v: Vcpu, a: dict[str, int]) -> int:
    ev.unmask(v, a["port"])
    return 0
_VIRQS = [abi.VIRQ_TIMER, abi.VIRQ_DEBUG, abi.VIRQ_DOM_EXC, abi.VIRQ_XENOPROF,
          abi.NR_VIRQS - 1, abi.NR_VIRQS]

EVT_FAMILIES: tuple[EvtFamily, ...] = (
    EvtFamily("event_channel_op/alloc_unbound", ("dom", "rd"),
              lambda ev, v, a: ev.alloc_unbound(v, a["dom"], a["rd"]),
              lambda w: {"dom": _dom_values(w), "rd": _dom_values(w)}),
    EvtFamily("event_channel_op/bind_interdomain", ("rd", "rp"),
              lambda ev, v, a: ev.bind_interdomain(v, a["rd"], a["rp"]),
              lambda w: {"rd": _dom_values(w), "rp": _port_values(w)}),
    EvtFamily("event_channel_op/bind_virq", ("virq", "vcpu"),
              lambda ev, v, a: ev.bind_virq(v, a["virq"], a["vcpu"]),
              lambda w: {"virq": _VIRQS, "vcpu": _VCPUS}),
    EvtFamily("event_channel_op/bind_ipi", ("vcpu",), lambda ev, v, a: ev.bind_ipi(v, a["vcpu"]),
              lambda w: {"vcpu": _VCPUS}),
    EvtFamily("event_channel_op/bind_pirq", ("pirq",),
              lambda ev, v, a: ev.bind_pirq(v, a["pirq"]),
              lambda w: {"pirq": [0, abi.NR_PIRQS - 1, abi.NR_PIRQS]}),
    EvtFamily("event_channel_op/close", ("port",),
              _close,
              lambda w: {"port": _port_values(w)}),
    EvtFamily("event_channel_op/send", ("port",),
              _send,
              lambda w: {"port": _port_values(w)}),
    EvtFamily("event_channel_op/status", ("dom", "port"),
              _status,
              lambda w: {"dom": _dom_values(w), "port": _port_values(w)}),
    EvtFamily("event_channel_op/bind_vcpu", ("port", "vcpu"),
              _bind_vcpu,
              lambda w: {"port": _port_values(w), "vcpu": _VCPUS}),
    EvtFamily("event_channel_op/unmask", ("port",),
              _unmask,
              lambda w: {"port": _port_values(w)}),
)

EVT_UNREACHABLE: dict[str, str] = {
    "event_channel_op/bind_pirq ok":
        "no domain is granted a physical IRQ (irq_access_permitted): bind_pirq never "
        "succeeds in the model, whose domains have no IRQ capabilities",
}


def _evt_spec(family: EvtFamily, s: EvtState, caller: Any, values: dict[str, Any]
              ) -> EvtTransition:
    builder = dict(event_spec.COMMANDS)[family.name]
    t = builder(s, caller)
    pairs = [(z3.BitVec(n, 32), v if isinstance(v, z3.ExprRef) else bv(v))
             for n, v in values.items()]

    def sub(x: Any) -> Any:
        return z3.substitute(x, *pairs) if pairs and isinstance(x, z3.ExprRef) else x

    def state(e: EvtState) -> EvtState:
        return e.evolve(**{f: sub(getattr(e, f)) for f in
                           ("state", "rdom", "rport", "notify", "virq", "pending", "mask",
                            "nports", "virq_port")})

    check = t.check
    assert check is not None
    check = Check(sub(check.holds), tuple((n, sub(c)) for n, c in check.passes),
                  tuple((n, sub(c)) for n, c in check.fails))
    return EvtTransition(sub(t.ok), state(t.new), sub(t.rc), sub(t.err), state(t.fail),
                         sub(t.choice), check)


def evt_branch_names(family: EvtFamily) -> list[str]:
    symbolic.reset_fresh()
    t = dict(event_spec.COMMANDS)[family.name](EvtState.fresh("old"), z3.BitVec("caller", 32))
    return [b.name for b in branches(t)]


_EVT: dict[str, tuple[EventWorld, EvtState]] = {}


def evt_states_for(family: EvtFamily, branch: str, per_branch: int = 2
                   ) -> list[dict[str, int]]:
    """Up to ``per_branch`` argument sets (the caller's domain among them) taking ``branch``
    on the event machine, with different callers or arguments."""
    if "world" not in _EVT:
        w0 = build_event_world()
        _EVT["world"] = (w0, encode_events(w0))
    w, s = _EVT["world"]
    symbolic.reset_fresh()
    caller = z3.BitVec("caller", 32)
    args = {n: z3.BitVec(n, 32) for n in family.args}
    t = _evt_spec(family, s, caller, {})
    (b,) = [x for x in branches(t) if x.name == branch]
    sole: list[z3.BoolRef] = []
    if b.kind == "fail":  # for this reason alone first (``sole_failure``)
        with spec_branches.flipped(branch.split("/")[-1]):
            sole = [_evt_spec(family, s, caller, {}).ok]
    domain = [z3.Or(*[caller == d.domain_id for d in w.doms.values()])]
    domain += [z3.Or(*[args[n] == x for x in xs]) for n, xs in family.values(w).items()]
    found: list[dict[str, int]] = []
    blocked: list[z3.BoolRef] = []
    while len(found) < per_branch:
        solver = z3.Solver()
        solver.set("timeout", 30000)
        solver.add(*domain, b.cond, t.choice, *blocked, *sole)
        if solver.check() != z3.sat:
            if sole:
                sole = []
                continue
            break
        m = solver.model()
        values = {n: m.eval(x, model_completion=True).as_long()
                  for n, x in [("caller", caller), *args.items()]}
        found.append(values)
        blocked.append(z3.Or(*[x != values[n] for n, x in [("caller", caller), *args.items()]]))
    return found


def evt_run_case(family: EvtFamily, branch: str, values: dict[str, int]) -> Case:
    """Run the command on a fresh event machine and check that the spec, on the state before,
    takes ``branch`` and ends as the model did (return value or errno, and state)."""
    w = build_event_world()
    bad = check_invariants(w.hv)
    if bad:
        return Case(family.name, branch, values, "the state built breaks: " + "; ".join(bad))
    symbolic.reset_fresh()
    before = encode_events(w)
    v = w.hv.domains[values["caller"]].vcpus[0]
    try:
        rc = family.run(w.events, v, values) & 0xFFFFFFFF
    except EventError as e:
        rc = -e.errno & 0xFFFFFFFF
    except Exception as e:  # a model that fails internally has left the spec's behaviours
        return Case(family.name, branch, values, f"the model raised {type(e).__name__}: {e}")
    bad = check_invariants(w.hv)
    if bad:
        return Case(family.name, branch, values, "the state after breaks: " + "; ".join(bad))
    return Case(family.name, branch, values, evt_verdict(family, branch, values, before, rc, w))


def evt_verdict(family: EvtFamily, branch: str, values: dict[str, int], before: EvtState,
                rc: int, w: EventWorld) -> str | None:
    """The spec's verdict: on ``before``, it takes ``branch`` and ends as the model's world
    ``w`` did, with return value ``rc``; None if so, else the problem."""
    t = _evt_spec(family, before, bv(values["caller"]),
                  {n: x for n, x in values.items() if n != "caller"})
    (b,) = [x for x in branches(t) if x.name == branch]
    ok = branch.startswith("ok")
    result, spec_rc = (t.new, t.rc) if ok else (t.fail, t.err)
    solver = z3.Solver()
    solver.set("timeout", 60000)
    solver.add(b.cond, t.choice, spec_rc == rc, same_events(result, w))
    answer = solver.check()
    problem = None
    if answer != z3.sat:
        problem = (f"the model's outcome (rc {rc:#x}) is not that of branch {branch} "
                   f"(solver: {answer})")
    return problem


def evt_check_one(family: EvtFamily, branch: str, per_branch: int = 2) -> list[Case]:
    return [run() for run in evt_cases_for(family, branch, per_branch)]


def evt_cases_for(family: EvtFamily, branch: str, per_branch: int = 2
                  ) -> list[Callable[[], Case]]:
    """The checks of ``evt_check_one``, each to run (again, on a changed model)."""
    return [functools.partial(evt_run_case, family, branch, values)
            for values in evt_states_for(family, branch, per_branch)]


def evt_family(name: str) -> EvtFamily:
    (f,) = [f for f in EVT_FAMILIES if f.name == name]
    return f


UNREACHABLE.update(EVT_UNREACHABLE)

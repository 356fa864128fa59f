"""MM.mmu_update_common (the fused common case of a batch entry) against mmu_update_one.

Two machines are built alike (same seed, same domains, same tables); one request at a time
goes to ``mmu_update_common`` on the first and to ``mmu_update_one`` on the second, and after
each the results, the frame tables, machine memory, the heap's free list, the vCPUs' TLB
flushes and the shadow-LDT invalidations must be equal. The requests are drawn so that both
the fused case and its every way out are reached: entries of validated L1 tables, of a page
directory and of plain data frames, frames of the issuer, of the other domain, the tables
themselves and beyond RAM, the flag combinations of tests/test_mm_stateful.py, entries
overwritten while they map something, with and without a foreign domain; between them, data
frames given back while mapped, typed as LDT frames, and counts set to zero or their limits.
``test_the_fused_case_is_taken`` checks that the fused case really completes requests (that
the comparison is not between two runs of ``mmu_update_one``), and the handler tests that a
replaced rule sends every request through the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MethodType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mm_stateful import FLAG_CHOICES

from xenspec.conformance.broken import BROKEN, Broken
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.memory import PGC_count_mask, PGT_count_mask
from xenspec.refmodel.mm import _FUSED_REFERENCE, MM
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.pvguest import PVGuest
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

NR_FRAMES = 1024
NR_L1 = 3  # pinned L1 tables of the privileged domain; the other domain pins one


@dataclass
class World:
    hv: Hypervisor
    a: PVGuest  # privileged: may name the other domain as FOREIGNDOM
    b: PVGuest
    memop: MemOp
    l1s: dict[str, list[int]]
    data: dict[str, list[int]]
    fallbacks: int = 0
    ldt_invalidations: int = 0

    def guest(self, who: str) -> PVGuest:
        return self.a if who == "a" else self.b

    def state(self) -> tuple[object, ...]:
        f = self.hv.mm.frames
        flushes = tuple((v.tlb_flushes, tuple(v.tlb_invlpgs))
                        for g in (self.a, self.b) for v in g.domain.vcpus)
        return (bytes(f.owner), bytes(f.count), bytes(f.type), bytes(f.type_count),
                bytes(f.flags), self.hv.memory.ram[:], tuple(self.hv.free_list), flushes,
                self.ldt_invalidations)


def build() -> World:
    hv = Hypervisor(NR_FRAMES, seed=0)
    a = PVGuest(hv, 96, privileged=True)
    b = PVGuest(hv, 96, nr_mapped=64)
    l1s: dict[str, list[int]] = {}
    data: dict[str, list[int]] = {}
    for name, g, n in (("a", a, NR_L1), ("b", b, 1)):
        free = [g.mfn(p) for p in g.free_pfns()]
        l1s[name], data[name] = free[:n], free[n:n + 4]
        for t in l1s[name]:
            assert g.pin(t, 1) == 0
    w = World(hv, a, b, MemOp(PVPlatform(hv)), l1s, data)

    def invalidate_shadow_ldt(v: Vcpu) -> None:
        w.ldt_invalidations += 1

    hv.mm.invalidate_shadow_ldt = invalidate_shadow_ldt
    return w


def reference_only(w: World) -> None:
    """Count, on ``w``, the requests mmu_update_common hands to mmu_update_one."""
    one = w.hv.mm.mmu_update_one

    def counted(d: object, buf: bytes) -> int:
        w.fallbacks += 1
        return one(d, buf)  # type: ignore[arg-type]

    w.hv.mm.mmu_update_one = counted  # type: ignore[method-assign]


# A request: (issuer, foreign, table kind, table pick, index, frame kind, frame pick, flags,
# command); the same draws name the same frames on both machines.
TABLE_KINDS = ["l1", "l1", "l1", "l1_b", "l2", "data", "beyond"]
FRAME_KINDS = ["data", "data", "data", "l1", "l1_b", "data_b", "l2", "beyond", "self"]
requests = st.tuples(
    st.sampled_from(["a", "a", "a", "b"]), st.booleans(),
    st.sampled_from(TABLE_KINDS), st.integers(0, 3), st.integers(0, 5),
    st.sampled_from(FRAME_KINDS), st.integers(0, 3), st.sampled_from(FLAG_CHOICES),
    st.sampled_from([abi.MMU_NORMAL_PT_UPDATE] * 12 + [abi.MMU_MACHPHYS_UPDATE, 2, 3]),
)
# Or: the issuer gives a data frame back (decrease_reservation's guest_remove_page), so that
# an entry that still maps it holds its last general reference.
removals = st.tuples(st.just("remove"), st.sampled_from(["a", "b"]), st.integers(0, 3))
# Or: a data frame of the issuer takes the LDT type (as a shadow LDT mapping of it does), so
# that dropping a read-only map of it invalidates the shadow LDTs.
ldt_types = st.tuples(st.just("ldt"), st.sampled_from(["a", "b"]), st.integers(0, 3))
# Or: a count of a frame is set near its limit or to zero, states no hypercall reaches, where
# the two must still agree (a get refused, an underflow asserted): the fused case's bounds.
LIMITS = {"count": PGC_count_mask, "type_count": PGT_count_mask}
pokes = st.tuples(st.just("poke"), st.sampled_from(["l1", "data"]), st.integers(0, 3),
                  st.sampled_from(sorted(LIMITS)),
                  st.sampled_from([("zero", 0), ("zero", 1), *(("limit", k) for k in range(4))]))


def pick(w: World, kind: str, k: int, table: int) -> int:
    if kind in ("l1", "l1_b"):
        pool = w.l1s["b" if kind == "l1_b" else "a"]
    elif kind in ("data", "data_b"):
        pool = w.data["b" if kind == "data_b" else "a"]
    elif kind == "l2":
        return w.a.l2_mfn
    elif kind == "self":
        return table
    else:
        return NR_FRAMES + k
    return pool[k % len(pool)]


def apply(w: World, req: tuple[object, ...], fused: bool) -> object:
    """The request's result: the errno, or the exception the model raised."""
    try:
        return apply_one(w, req, fused)
    except Exception as exc:  # an underflow a poked count leads to: asserted alike by both
        return type(exc).__name__


def apply_one(w: World, req: tuple[object, ...], fused: bool) -> object:
    if req[0] == "remove":
        g = w.guest(str(req[1]))
        return w.memop.guest_remove_page(g.domain, w.data[str(req[1])][int(str(req[2]))])
    if req[0] == "ldt":
        g = w.guest(str(req[1]))
        mfn = w.data[str(req[1])][int(str(req[2]))]
        return w.hv.mm.get_page_and_type(mfn, g.domain, PGT.ldt_page)
    if req[0] == "poke":
        _, kind, k, field, (side, by) = req  # type: ignore[misc]
        mfn = pick(w, str(kind), int(str(k)), 0)
        value = by if side == "zero" else LIMITS[str(field)] - by
        getattr(w.hv.mm.frames, str(field))[mfn] = value
        return value
    who, foreign, tkind, tk, index, fkind, fk, flags, cmd = req
    assert isinstance(who, str) and isinstance(tkind, str) and isinstance(fkind, str)
    g = w.guest(who)
    mm = w.hv.mm
    domid = w.b.domid if foreign and who == "a" else abi.DOMID_SELF
    assert mm.set_foreigndom(g.domain, domid)
    table = pick(w, tkind, int(tk), 0)  # type: ignore[call-overload]
    frame = pick(w, fkind, int(fk), table)  # type: ignore[call-overload]
    ptr = (table << abi.PAGE_SHIFT) | int(index) * 4 | int(cmd)  # type: ignore[call-overload]
    val = (frame << abi.PAGE_SHIFT | int(flags)) & 0xFFFFFFFF  # type: ignore[call-overload]
    buf = abi.MMU_UPDATE_T.pack(ptr, val)
    try:
        return (mm.mmu_update_common if fused else mm.mmu_update_one)(g.domain, buf)
    finally:
        mm.foreign = None


def run_both(reqs: list[tuple[object, ...]]) -> World:
    fused, ref = build(), build()
    assert fused.state() == ref.state()
    reference_only(fused)
    for req in reqs:
        rc = apply(fused, req, True)
        assert rc == apply(ref, req, False), req
        assert fused.state() == ref.state(), req
    return fused


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(requests, st.one_of(removals, ldt_types, pokes)),
                min_size=1, max_size=40))
def test_fused_case_agrees_with_mmu_update_one(reqs: list[tuple[object, ...]]) -> None:
    run_both(reqs)


def test_the_fused_case_is_taken() -> None:
    """Each way through mmu_update_common that completes a request without the reference:
    a read-write map into an empty entry, the same entry made read-only (new reference, old
    dropped), a flag the fast path keeps, the entry cleared, a read-only map of the table in
    itself, a map of FOREIGNDOM's frame, and first writable maps of two data frames (each a
    type change with its TLB flush); and a refused flag that falls back."""
    RW, RO = abi._PAGE_PRESENT | abi._PAGE_RW, abi._PAGE_PRESENT
    reqs: list[tuple[object, ...]] = [
        ("a", False, "l1", 1, 0, "data", 0, RW, 0),
        ("a", True, "l1", 1, 1, "data_b", 1, RW, 0),
        ("a", False, "l1", 0, 0, "data", 0, RW, 0),
        ("a", False, "l1", 0, 0, "data", 0, RO, 0),
        ("a", False, "l1", 0, 0, "data", 0, RO | abi._PAGE_ACCESSED, 0),
        ("a", False, "l1", 0, 0, "data", 0, 0, 0),
        ("a", False, "l1", 0, 1, "self", 0, RO, 0),
        ("a", True, "l1", 0, 2, "data_b", 1, RW, 0),
    ]
    w = run_both(reqs)
    assert w.fallbacks == 0
    assert w.a.vcpu.tlb_flushes > flushes_at_start()
    w = run_both([*reqs[:3], ("a", False, "l1", 0, 3, "data", 0, RW | abi._PAGE_GLOBAL, 0)])
    assert w.fallbacks == 1
    # Not the fused case's: another command, an entry of a directory, of another's L1.
    w = run_both([*reqs[:3], ("a", False, "l1", 0, 0, "data", 0, RO, abi.MMU_MACHPHYS_UPDATE),
                  ("a", False, "l2", 0, 1, "l1", 2, RO, 0),
                  ("a", False, "l1_b", 0, 0, "data", 0, RO, 0)])
    assert w.fallbacks == 3
    # A writable map of a table in use (another L1, the directory, the L1 itself) is refused.
    w = run_both([("a", False, "l1", 0, 0, "l1", 1, RW, 0),
                  ("a", False, "l1", 0, 1, "l2", 0, RW, 0),
                  ("a", False, "l1", 0, 2, "self", 0, RW, 0)])
    assert w.fallbacks == 3
    w = run_both([reqs[0], ("remove", "a", 0), ("a", False, "l1", 1, 0, "data", 0, 0, 0)])
    assert w.fallbacks == 1  # the entry held the frame's last reference: it is freed


def flushes_at_start() -> int:
    return build().a.vcpu.tlb_flushes


def test_an_unchanged_machine_takes_the_fused_case() -> None:
    mm = build().hv.mm
    assert mm.mmu_update_handler() == mm.mmu_update_common


@pytest.mark.parametrize("broken", BROKEN, ids=lambda b: b.name)
def test_a_broken_implementation_runs_its_own_rules(broken: Broken) -> None:
    """A seeded defect that replaces, on its machine, a rule the fused case stands for sends
    every request through mmu_update_one and so through the replacement (the fused case
    would hide it); one that replaces another rule leaves the fused case in place."""
    mm = build().hv.mm
    broken.setup(mm.hv, PVPlatform(mm.hv))
    replaced = vars(mm).keys() & _FUSED_REFERENCE.keys()
    assert mm.mmu_update_handler() == (mm.mmu_update_one if replaced else mm.mmu_update_common)


def test_seeded_defects_replace_rules_the_fused_case_stands_for() -> None:
    """The previous test is not vacuous: four seeded defects replace such a rule."""
    hits = []
    for broken in BROKEN:
        mm = build().hv.mm
        broken.setup(mm.hv, PVPlatform(mm.hv))
        if vars(mm).keys() & _FUSED_REFERENCE.keys():
            hits.append(broken.name)
    assert sorted(hits) == ["owner_unchecked", "pagetable_mapped_writable", "stays_validated",
                            "type_count_leak"]


def test_a_rule_replaced_on_the_class_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    original = MM.get_page_from_l1e
    monkeypatch.setattr(MM, "get_page_from_l1e", lambda self, e, d: original(self, e, d))
    mm = build().hv.mm
    assert mm.mmu_update_handler() == mm.mmu_update_one


def test_a_rule_replaced_on_one_machine_runs() -> None:
    mm = build().hv.mm
    mm.fast_path = MethodType(lambda self, old, new, level: False, mm)  # type: ignore[method-assign]
    assert mm.mmu_update_handler() == mm.mmu_update_one


RW, RO = abi._PAGE_PRESENT | abi._PAGE_RW, abi._PAGE_PRESENT
# A read-write and a read-only map in place, then the three requests whose fused case reads
# the counts: a new writable map, a read-only and a writable map dropped.
PRIMED: list[tuple[object, ...]] = [
    ("a", False, "l1", 1, 0, "data", 0, RW, 0),
    ("a", False, "l1", 0, 1, "data", 1, RO, 0),
]
READERS: list[tuple[object, ...]] = [
    ("a", False, "l1", 0, 2, "self", 0, RO, 0),
    ("a", False, "l1", 0, 0, "data", 0, RW, 0),
    ("a", False, "l1", 0, 1, "data", 0, 0, 0),
    ("a", False, "l1", 1, 0, "data", 0, 0, 0),
]


@pytest.mark.parametrize("where", [("l1", 0), ("data", 0), ("data", 1)])
@pytest.mark.parametrize("field", sorted(LIMITS))
@pytest.mark.parametrize("value", [("zero", 0), ("zero", 1), *(("limit", k) for k in range(4))])
def test_counts_at_their_limits(where: tuple[str, int], field: str,
                                value: tuple[str, int]) -> None:
    """The fused case's bounds on each count it reads, at zero and at the limit, with the
    maps taken before the ones dropped and after."""
    run_both([*PRIMED, ("poke", *where, field, value), *READERS])
    run_both([*PRIMED, ("poke", *where, field, value), *reversed(READERS)])


def test_dropping_a_map_of_an_ldt_frame_invalidates_the_shadow_ldt() -> None:
    w = run_both([*PRIMED, ("ldt", "a", 1), ("a", False, "l1", 0, 1, "data", 1, 0, 0)])
    assert w.ldt_invalidations == 1

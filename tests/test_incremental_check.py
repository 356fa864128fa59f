"""The incremental invariant check (refmodel/view.py, ``IncrementalChecker``) against the full
one (``check_invariants``): the same verdict and the same violations, with the same witnesses,
after every step of hostile runs (tests/hostile/), with violations planted directly in frames
and frame-table entries behind the model's back and taken away again. A check that skipped a
frame whose entry or contents changed, or a domain, grant or vCPU change, would miss a planted
violation or keep reporting one that is gone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hostile.calls import runs
from hostile.world import ATTACKERS, World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenspec.refmodel.memory import PGT_validated
from xenspec.refmodel.view import IncrementalChecker, check_invariants
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

PRESENT_RW = abi._PAGE_PRESENT | abi._PAGE_RW
Undo = Callable[[], None]


def _tables(w: World, slot: int) -> tuple[int, int, int]:
    """(page directory, first L1, a data frame) of the attacker in ``slot``, machine frames."""
    s = w.last[slot]
    d = s.domain
    return (d.page_list[s.layout.pt_base_pfn], d.page_list[s.layout.l1_pfns[0]], d.page_list[1])


def _write(w: World, mfn: int, index: int, value: int) -> Undo:
    old = w.hv.memory.read_entry(mfn, index)
    w.hv.memory.write_entry(mfn, index, value)
    return lambda: w.hv.memory.write_entry(mfn, index, old)


def _field(w: World, name: str, mfn: int, value: int) -> Undo:
    table = getattr(w.hv.frames, name)
    old = table[mfn]
    table[mfn] = value
    return lambda: table.__setitem__(mfn, old)


def plant(w: World, kind: str, slot: int, k: int) -> tuple[str, Undo]:
    """Break the state of the attacker in ``slot`` behind the model's back: the invariant
    that must then fail, and how to put the state back."""
    l2, l1, data = _tables(w, slot)
    if kind == "writable-pte-to-table":  # a writable mapping of the domain's own directory
        return "INV-NOWRPT", _write(w, l1, k % 1024, l2 << abi.PAGE_SHIFT | PRESENT_RW)
    if kind == "hypervisor-slot":  # a guest entry in Xen's top 64 MB
        i = abi.L2_PAGETABLE_FIRST_XEN_SLOT + k % abi.L2_PAGETABLE_XEN_SLOTS
        return "INV-HOLE", _write(w, l2, i, data << abi.PAGE_SHIFT | PRESENT_RW)
    if kind == "count":  # a general reference that nothing holds
        return "INV-COUNT", _field(w, "count", data, w.hv.frames.count[data] + 1 + k % 3)
    if kind == "type-count":
        return "INV-COUNT", _field(w, "type_count", l1, w.hv.frames.type_count[l1] + 1)
    if kind == "foreign-pte":  # a mapping of the victim's frame without a grant
        victim = w.last[0].domain.page_list[k % 8]
        return "INV-OWN", _write(w, l1, k % 1024, victim << abi.PAGE_SHIFT | abi._PAGE_PRESENT)
    if kind == "unvalidated-directory":  # a directory in use that lost its validation
        return "INV-VALID", _field(w, "flags", l2, w.hv.frames.flags[l2] & ~PGT_validated)
    if kind == "gdt-descriptor":  # a ring-0 code descriptor in a frame typed GDT
        undo_type = _field(w, "type", data, int(PGT.gdt_page))
        undo_flags = _field(w, "flags", data, w.hv.frames.flags[data] | PGT_validated)
        undo_lo = _write(w, data, 2 * (k % 512), 0x0000FFFF)
        undo_hi = _write(w, data, 2 * (k % 512) + 1, 0x00CF9A00)  # DPL 0, code, present

        def undo() -> None:
            for u in (undo_hi, undo_lo, undo_flags, undo_type):
                u()
        return "INV-PRIV", undo
    raise ValueError(kind)


KINDS = ("writable-pte-to-table", "hypervisor-slot", "count", "type-count", "foreign-pte",
         "unvalidated-directory", "gdt-descriptor")


def agree(w: World, checker: IncrementalChecker) -> list[str]:
    fast, full = checker.check(), check_invariants(w.hv)
    assert fast == full
    return fast


def _alive(w: World) -> list[int]:
    return [i for i in ATTACKERS if w.slots[i] is not None and w.slots[i].domain.is_running]


@pytest.mark.parametrize("kind", KINDS)
def test_planted_violation_is_reported(kind: str) -> None:
    """Checked once (everything remembered as holding), then one frame or frame-table entry
    broken directly: the incremental check reports it, as the full check does, and no longer
    once it is put back."""
    w = World(check_memory=False)
    checker = IncrementalChecker(w.hv)
    assert agree(w, checker) == []
    inv, undo = plant(w, kind, 1, 5)
    found = agree(w, checker)
    assert any(v.startswith(inv + ":") for v in found), found
    undo()
    assert agree(w, checker) == []


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(calls=runs(3, 8),
       plants=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(KINDS),
                                 st.integers(0, 1 << 12)), max_size=4))
def test_incremental_check_agrees_with_full_check(
        calls: list[tuple[object, ...]], plants: list[tuple[int, str, int]]) -> None:
    """After every call of a hostile run, and around violations planted in between, the
    incremental check returns exactly what the full check returns."""
    w = World(check_memory=False)
    checker = IncrementalChecker(w.hv)
    agree(w, checker)
    at: dict[int, list[tuple[str, int]]] = {}
    for pos, kind, k in plants:
        at.setdefault(pos % (len(calls) + 1), []).append((kind, k))
    for i in range(len(calls) + 1):
        for kind, k in at.get(i, []):
            alive = _alive(w)
            if not alive:
                continue
            inv, undo = plant(w, kind, alive[k % len(alive)], k)
            found = agree(w, checker)
            assert any(v.startswith(inv + ":") for v in found), found
            undo()
            agree(w, checker)
        if i < len(calls):
            w.perform(calls[i])
            agree(w, checker)

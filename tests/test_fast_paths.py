"""The hot paths written out for speed agree with the readable definitions they stand for:
the clock's NOW() in a slice (``Clock.now_ns`` against ``Clock.cost``), the entry accessors
of spec/pagetable.py on ints and on Z3 terms (``_is_set``, ``_lshr``), and the frame type
table of refmodel/mm.py (``PGT``)."""

from __future__ import annotations

import z3
from hypothesis import given
from hypothesis import strategies as st

from xenspec.refmodel import mm
from xenspec.refmodel.clock import Clock
from xenspec.refmodel.domain import Domain
from xenspec.spec import abi
from xenspec.spec.pagetable import (
    PGT,
    _is_set,
    _lshr,
    l1e_disallowed,
    pte_get_pfn,
    pte_present,
)

words = st.integers(0, 2**32 - 1)


@given(st.integers(1, 50), st.integers(0, 5000), st.integers(0, 1000),
       st.integers(0, 10**7), st.integers(0, 10**4), st.integers(0, 10**3), st.integers(0, 50))
def test_now_in_a_slice_is_the_cost_of_its_progress(
        per_insn: int, per_trap: int, per_unit: int, insns: int, traps: int,
        before: int, units: int) -> None:
    clock = Clock(per_insn, per_trap, per_unit)
    d = Domain(1, False, 1)
    clock.slice_started(d, lambda: (before, 0))
    clock.slice_ended(d, before)  # some time has passed before this slice
    clock.slice_started(d, lambda: (insns, traps))
    clock.charge_work(units)
    assert clock.now_ns() == clock._now + clock.cost(insns, traps) + units * per_unit


@given(words)
def test_entry_accessors_on_ints(e: int) -> None:
    assert pte_present(e) == _is_set(e, abi._PAGE_PRESENT)
    assert l1e_disallowed(e) == _is_set(e, abi.L1_DISALLOW_MASK)
    assert pte_get_pfn(e) == _lshr(e, abi.PAGE_SHIFT) == e // abi.PAGE_SIZE


def test_entry_accessors_on_z3_terms_are_the_same_terms() -> None:
    e = z3.BitVec("e", 32)
    assert pte_present(e).eq(_is_set(e, abi._PAGE_PRESENT))
    assert l1e_disallowed(e).eq(_is_set(e, abi.L1_DISALLOW_MASK))
    assert pte_get_pfn(e).eq(_lshr(e, abi.PAGE_SHIFT))


def test_frame_type_table_is_pgt() -> None:
    assert [mm._PGT[t.value] for t in PGT] == list(PGT)
    assert all(mm._PGT[int(t)] is PGT(int(t)) for t in PGT)

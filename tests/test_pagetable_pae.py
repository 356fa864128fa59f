"""The compat-pae profile's 64-bit entry format (spec/pagetable_pae.py).

Each rule is one definition for ints and Z3 bit-vectors: the two must agree on every entry
(Hypothesis), and the bits each level refuses are checked one by one against the list Xen's
mm.c gives (RELEASE-4.19.0: arch_init_memory's base_disallow_mask, L1_DISALLOW_MASK,
L2_DISALLOW_MASK, l3_disallow_mask of a 32-bit domain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import z3
from hypothesis import given
from hypothesis import strategies as st

from xenspec.spec.abi_profiles import COMPAT_HYPERVISOR_VIRT_START
from xenspec.spec.pagetable_pae import (
    PAE_FRAME_MASK,
    entry_has_changed,
    is_guest_l2_slot,
    l1e_disallowed,
    l2e_disallowed,
    l3_slot_guest_updatable,
    l3e_disallowed,
    pte_get_flags,
    pte_get_pfn,
    pte_nx,
    pte_present,
    pte_writable,
    put_pte_flags,
    table_offsets,
)

U64 = (1 << 64) - 1
entries = st.integers(0, U64) | st.sampled_from([0, U64, 1 << 63, (1 << 63) | 0x67,
                                                  PAE_FRAME_MASK | 1, 0x198])

PREDICATES: list[Callable[[Any], Any]] = [pte_present, pte_writable, pte_nx, l1e_disallowed,
                                          l2e_disallowed, l3e_disallowed]


def _z3(value: Any) -> Any:
    out = z3.simplify(value)
    return z3.is_true(out) if z3.is_bool(out) else out.as_long()


@given(entries)
def test_int_and_z3_forms_agree(e: int) -> None:
    bv = z3.BitVecVal(e, 64)
    for f in PREDICATES:
        assert bool(f(e)) == _z3(f(bv)), f.__name__
    assert pte_get_pfn(e) == _z3(pte_get_pfn(bv))
    assert pte_get_flags(e) == _z3(pte_get_flags(bv))


@given(entries, entries)
def test_fast_path_int_and_z3_agree(old: int, new: int) -> None:
    assert bool(entry_has_changed(old, new)) == _z3(
        entry_has_changed(z3.BitVecVal(old, 64), z3.BitVecVal(new, 64)))


@given(entries)
def test_flag_word_is_bits_0_11_and_52_63(e: int) -> None:
    """get_pte_flags / put_pte_flags: the flag word holds exactly the bits outside the
    frame, and the frame is bits 12-51."""
    assert put_pte_flags(pte_get_flags(e)) == e & ~PAE_FRAME_MASK & U64
    assert pte_get_flags(e) < 1 << 24
    assert pte_get_pfn(e) == (e >> 12) & ((1 << 40) - 1)


# The entry bits a 32-bit guest may not set, per level (mm.c, RELEASE-4.19.0): PWT 3, PCD 4,
# PSE/PAT 7, GLOBAL 8; bit 62 (_PAGE_GNTTAB) in an L1; every bit from 52 up in an L3.
REFUSED = {
    "l1": {3, 4, 7, 62},
    "l2": {3, 4, 7, 8},
    "l3": {3, 4, 7, 8, *range(52, 64)},
}
RULES = {"l1": l1e_disallowed, "l2": l2e_disallowed, "l3": l3e_disallowed}


@pytest.mark.parametrize("level", sorted(RULES))
def test_each_bit_of_each_level(level: str) -> None:
    rule = RULES[level]
    for bit in range(64):
        e = 1 | (1 << bit)
        assert bool(rule(e)) == (bit in REFUSED[level]), (level, bit)


def test_nx_is_bit_63_allowed_below_l3() -> None:
    nx = 1 | (1 << 63)
    assert pte_nx(nx) and not pte_nx(nx & ~(1 << 63))
    assert not l1e_disallowed(nx) and not l2e_disallowed(nx) and l3e_disallowed(nx)


def test_fast_path_never_changes_frame_presence_or_write() -> None:
    """For all pairs of entries: an update the fast path takes (no re-validation) keeps the
    frame, PRESENT and RW (proved by Z3 over 2^128 pairs)."""
    old, new = z3.BitVecs("old new", 64)
    s = z3.Solver()
    s.add(z3.Not(entry_has_changed(old, new)))
    s.add(z3.Or(pte_get_pfn(old) != pte_get_pfn(new), pte_present(old) != pte_present(new),
                pte_writable(old) != pte_writable(new)))
    assert s.check() == z3.unsat


def test_l3_rule_refuses_nx_and_large_pages_for_all_entries() -> None:
    e = z3.BitVec("e", 64)
    s = z3.Solver()
    s.add(z3.Not(l3e_disallowed(e)), z3.Or(pte_nx(e), (e & 0x80) != 0))
    assert s.check() == z3.unsat


def test_hypervisor_slots() -> None:
    l3, l2, l1 = table_offsets(COMPAT_HYPERVISOR_VIRT_START)
    assert (l3, l1) == (3, 0)
    assert not is_guest_l2_slot(True, l2) and is_guest_l2_slot(True, l2 - 1)
    assert is_guest_l2_slot(False, 511)
    assert table_offsets(COMPAT_HYPERVISOR_VIRT_START - 1) == (3, l2 - 1, 511)
    assert [l3_slot_guest_updatable(i) for i in range(4)] == [True, True, True, False]

"""The descriptor rule of spec/desc.py (Xen 3.0.4 check_descriptor) and its guarantee."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xenspec.spec import abi
from xenspec.spec.desc import check_descriptor, descriptor_is_safe

P, S, G, DB = abi._SEGMENT_P, abi._SEGMENT_S, abi._SEGMENT_G, abi._SEGMENT_DB
DATA, CODE = 0x200, 0xA00


def desc(base: int, limit: int, flags: int) -> tuple[int, int]:
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (limit & 0xF0000) | (base & 0xFF000000) | flags
    return lo, hi


def dpl(n: int) -> int:
    return n << 13


def test_not_present_is_accepted_as_is() -> None:
    assert check_descriptor(0x1234, 0x00CF9200 & ~P) == (0x1234, 0x00CF9200 & ~P)


def test_flat_4gb_is_truncated_at_the_hole() -> None:
    lo, hi = check_descriptor(*desc(0, 0xFFFFF, S | P | G | DB | DATA | dpl(1)))  # type: ignore[misc]
    assert (lo & 0xFFFF) | (hi & 0xF0000) == abi.FLAT_SEGMENT_LIMIT_PAGES


def test_dpl0_becomes_dpl1() -> None:
    r = check_descriptor(*desc(0, 0xFF, S | P | CODE | dpl(0)))
    assert r is not None and r[1] & abi._SEGMENT_DPL == dpl(1)


def test_system_descriptors_other_than_call_gates_are_refused() -> None:
    for t in (0x1, 0x2, 0x3, 0x5, 0x9, 0xB, 0xE, 0xF):
        assert check_descriptor(0x67, P | dpl(1) | (t << 8)) is None


def test_call_gates() -> None:
    gate = P | dpl(3) | (abi.DESC_TYPE_CALL_GATE_32 << 8)
    assert check_descriptor(abi.FLAT_KERNEL_CS << 16, gate) is not None
    assert check_descriptor(abi.HYPERVISOR_CS << 16, gate) is None
    r = check_descriptor((8 << 16), gate)  # RPL 0 target: raised to 1
    assert r is not None and (r[0] >> 16) & 3 == 1
    assert check_descriptor(abi.FLAT_KERNEL_CS << 16, gate | 0x20) is None  # reserved bits


def test_base_near_the_hole_and_byte_granular_overflow_are_refused() -> None:
    assert check_descriptor(*desc(abi.GUEST_SEGMENT_MAX_ADDR - 4096, 0, S | P | G | DATA
                                  | dpl(1))) is None
    assert check_descriptor(*desc(0xFC3F0000, 0xFFFFF, S | P | DATA | dpl(1))) is None


words = st.integers(0, 2**32 - 1)


@given(words, words)
def test_every_accepted_descriptor_is_safe(lo: int, hi: int) -> None:
    """INV-PRIV's descriptor part: what the rule lets through has no DPL 0 and, expand-up,
    ends at or below GUEST_SEGMENT_MAX_ADDR."""
    r = check_descriptor(lo, hi)
    if r is not None:
        assert descriptor_is_safe(*r)


@given(words, words)
def test_the_rule_is_idempotent(lo: int, hi: int) -> None:
    r = check_descriptor(lo, hi)
    if r is not None:
        assert check_descriptor(*r) == r

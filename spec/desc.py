"""The descriptor rule: which GDT/LDT descriptors a guest may install, defined once.

Xen 3.0.4, xen/arch/x86/x86_32/mm.c ``check_descriptor`` (with the silent fix-ups of 3.0.2
and later): a not-present descriptor is always safe; DPL 0 is
rewritten to DPL 1; of the system descriptors only 32-bit call gates are allowed, their target
selector's RPL is raised to at least 1 and must name a guest GDT entry, FLAT_KERNEL_CS or an
LDT entry, and the gate's reserved bits must be clear; a code or data segment's base must lie a
page below GUEST_SEGMENT_MAX_ADDR and its limit is truncated (page-granular) so that the
segment ends at GUEST_SEGMENT_MAX_ADDR, or refused (byte-granular) if it would reach past it.

``check_descriptor`` is a pure function of the two descriptor words, so the refmodel, tests
and proofs share it; ``descriptor_is_safe`` states the property it guarantees (INV-PRIV's
descriptor part), which the tests check on every descriptor the model accepts.
"""

from __future__ import annotations

from xenspec.spec import abi

_M32 = 0xFFFFFFFF


def descriptor_base(lo: int, hi: int) -> int:
    return (hi & 0xFF000000) | ((hi & 0xFF) << 16) | (lo >> 16)


def descriptor_limit_bytes(lo: int, hi: int) -> int:
    """The segment's size in bytes (limit + 1), as a 33-bit number."""
    limit = ((hi & 0xF0000) | (lo & 0xFFFF)) + 1
    return limit << 12 if hi & abi._SEGMENT_G else limit


def _valid_gate_target(sel: int) -> bool:
    if sel & 4:  # an LDT selector
        return True
    return sel == abi.FLAT_KERNEL_CS or (sel >> 3) < abi.FIRST_RESERVED_GDT_ENTRY


def check_descriptor(lo: int, hi: int) -> tuple[int, int] | None:
    """The descriptor as Xen stores it (fixed up), or None if Xen refuses it."""
    lo &= _M32
    hi &= _M32
    if not hi & abi._SEGMENT_P:
        return lo, hi
    if hi & abi._SEGMENT_DPL == 0:
        hi |= 1 << 13  # DPL 0 becomes DPL 1
    if not hi & abi._SEGMENT_S:
        if (hi & abi._SEGMENT_TYPE) >> 8 != abi.DESC_TYPE_CALL_GATE_32:
            return None
        sel = lo >> 16
        if sel & 3 == 0:
            sel |= 1
        if not _valid_gate_target(sel) or hi & 0xE0:
            return None
        return (lo & 0xFFFF) | (sel << 16), hi
    base = descriptor_base(lo, hi)
    if base >= abi.GUEST_SEGMENT_MAX_ADDR - abi.PAGE_SIZE:
        return None
    limit = descriptor_limit_bytes(lo, hi) & _M32
    end = (base + limit) & _M32
    if hi & (abi._SEGMENT_CODE | abi._SEGMENT_EC) == abi._SEGMENT_EC:
        # Expand-down data: valid offsets lie above the limit, so the segment reaches the top
        # of the address space unless base + limit wraps.
        if end > base:
            limit = (-(base & abi.PAGE_MASK)) & _M32
        else:
            return lo, hi
    elif end <= base or end > abi.GUEST_SEGMENT_MAX_ADDR:
        limit = abi.GUEST_SEGMENT_MAX_ADDR - base
    else:
        return lo, hi
    if not hi & abi._SEGMENT_G:
        return None
    pages = ((limit >> 12) - 1) & 0xFFFFF
    return (lo & ~0xFFFF) | (pages & 0xFFFF), (hi & ~0xF0000) | (pages & 0xF0000)


def descriptor_is_safe(lo: int, hi: int) -> bool:
    """INV-PRIV for one descriptor: not present, or DPL > 0 and, for a call gate, a target
    RPL > 0; a present expand-up code or data segment ends at or below
    GUEST_SEGMENT_MAX_ADDR."""
    if not hi & abi._SEGMENT_P:
        return True
    if hi & abi._SEGMENT_DPL == 0:
        return False
    if not hi & abi._SEGMENT_S:
        return (hi & abi._SEGMENT_TYPE) >> 8 == abi.DESC_TYPE_CALL_GATE_32 and (lo >> 16) & 3 != 0
    if hi & (abi._SEGMENT_CODE | abi._SEGMENT_EC) == abi._SEGMENT_EC:
        return True  # expand-down: checked by the truncation above, not restated here
    base = descriptor_base(lo, hi)
    return base + descriptor_limit_bytes(lo, hi) <= abi.GUEST_SEGMENT_MAX_ADDR

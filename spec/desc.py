"""The descriptor rule: which GDT/LDT descriptors a guest may install, defined once.

Xen 3.0.4, xen/arch/x86/x86_32/mm.c ``check_descriptor`` (with the silent fix-ups of 3.0.2
and later): a not-present descriptor is always safe; DPL 0 is
rewritten to DPL 1; of the system descriptors only 32-bit call gates are allowed, their target
selector's RPL is raised to at least 1 and must name a guest GDT entry, FLAT_KERNEL_CS or an
LDT entry, and the gate's reserved bits must be clear; a code or data segment's base must lie a
page below GUEST_SEGMENT_MAX_ADDR and its limit is truncated (page-granular) so that the
segment ends at GUEST_SEGMENT_MAX_ADDR, or refused (byte-granular) if it would reach past it.

``descriptor_rule`` is a pure function of the two descriptor words, written once for both
Python ints (the refmodel's ``check_descriptor``) and Z3 bit-vectors (the proof that the rule
only ever yields safe descriptors). ``descriptor_is_safe`` states that property: INV-PRIV's
descriptor part.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import z3

from xenspec.spec import abi
from xenspec.spec.branches import PASS, Check, all_of, cases, require

_M32 = 0xFFFFFFFF
Word = Any  # int, or a 32-bit z3.BitVecRef
Bool = Any


# Connectives and unsigned arithmetic that work on ints and on Z3 bit-vectors alike.
def _sym(*xs: Any) -> bool:
    # A loop, not any() over a generator (twice as slow): the model calls this on every trap.
    for x in xs:  # noqa: SIM110
        if isinstance(x, z3.ExprRef):
            return True
    return False


def _ite(c: Bool, a: Word, b: Word) -> Word:
    return z3.If(c, a, b) if _sym(c) else (a if c else b)


def _and(*cs: Bool) -> Bool:
    return z3.And(*cs) if _sym(*cs) else all(cs)


def _or(*cs: Bool) -> Bool:
    return z3.Or(*cs) if _sym(*cs) else any(cs)


def _not(c: Bool) -> Bool:
    return z3.Not(c) if _sym(c) else not c


def _lshr(x: Word, n: int) -> Word:
    return z3.LShR(x, n) if _sym(x) else x >> n


def _ult(a: Word, b: Word) -> Bool:
    return z3.ULT(a, b) if _sym(a, b) else a < b


def _widen(x: Word) -> Word:
    """A 32-bit value as a 64-bit one (for sums that may pass 2**32)."""
    return z3.ZeroExt(32, x) if _sym(x) else x


def descriptor_base(lo: Word, hi: Word) -> Word:
    return (hi & 0xFF000000) | ((hi & 0xFF) << 16) | _lshr(lo, 16)


def descriptor_limit_bytes(lo: Word, hi: Word) -> Word:
    """The segment's size in bytes (limit + 1): up to 2**32, so a 64-bit quantity."""
    limit = _widen((hi & 0xF0000) | (lo & 0xFFFF)) + 1
    return _ite((hi & abi._SEGMENT_G) != 0, limit << 12, limit)


def guest_gate_selector_okay(sel: Word) -> Bool:
    """desc.h, guest_gate_selector_okay: a selector Xen will put into a gate (a call gate's
    target, the direct int $0x80 gate): an LDT selector, FLAT_KERNEL_CS, or an entry of the
    guest's part of the GDT."""
    return _or((sel & 4) != 0, sel == abi.FLAT_KERNEL_CS,
               _ult(_lshr(sel, 3), abi.FIRST_RESERVED_GDT_ENTRY))


def descriptor_rule(lo: Word, hi: Word) -> tuple[Bool, Word, Word]:
    """(accepted, low word, high word): the descriptor as Xen stores it, fixed up."""
    present = (hi & abi._SEGMENT_P) != 0
    hi1 = _ite((hi & abi._SEGMENT_DPL) == 0, hi | (1 << 13), hi)  # DPL 0 becomes DPL 1
    # A system descriptor: only a 32-bit call gate, its target RPL raised to at least 1.
    sel = _lshr(lo, 16)
    sel1 = _ite((sel & 3) == 0, sel | 1, sel)
    gate_ok = _and(_lshr(hi1 & abi._SEGMENT_TYPE, 8) == abi.DESC_TYPE_CALL_GATE_32,
                   guest_gate_selector_okay(sel1), (hi1 & 0xE0) == 0)
    gate_lo = (lo & 0xFFFF) | (sel1 << 16)
    # A code or data segment: the base a page below the ceiling, the end truncated to it.
    base = descriptor_base(lo, hi1)
    limit = descriptor_limit_bytes(lo, hi1)
    limit32 = z3.Extract(31, 0, limit) if _sym(limit) else limit & _M32
    end = (base + limit32) & _M32
    expand_down = (hi1 & (abi._SEGMENT_CODE | abi._SEGMENT_EC)) == abi._SEGMENT_EC
    # Expand-down data: valid offsets lie above the limit, so the segment reaches the top of
    # the address space unless base + limit wraps.
    truncate = _ite(expand_down, _ult(base, end),
                    _or(_not(_ult(base, end)), _ult(abi.GUEST_SEGMENT_MAX_ADDR, end)))
    new_limit = _ite(expand_down, (-(base & abi.PAGE_MASK)) & _M32,
                     abi.GUEST_SEGMENT_MAX_ADDR - base)
    pages = (_lshr(new_limit, 12) - 1) & 0xFFFFF
    seg_ok = _and(_ult(base, abi.GUEST_SEGMENT_MAX_ADDR - abi.PAGE_SIZE),
                  _or(_not(truncate), (hi1 & abi._SEGMENT_G) != 0))
    seg_lo = _ite(truncate, (lo & 0xFFFF0000) | (pages & 0xFFFF), lo)
    seg_hi = _ite(truncate, (hi1 & 0xFFF0FFFF) | (pages & 0xF0000), hi1)
    system = (hi1 & abi._SEGMENT_S) == 0
    ok = _or(_not(present), _ite(system, gate_ok, seg_ok))
    out_lo = _ite(present, _ite(system, gate_lo, seg_lo), lo)
    out_hi = _ite(present, _ite(system, hi1, seg_hi), hi)
    return ok, out_lo, out_hi


class _RuleParts(NamedTuple):
    """check_descriptor's conditions, in its order (the terms ``descriptor_rule`` builds)."""

    present: Bool
    system: Bool
    gate_type: Bool  # a 32-bit call gate, the only system descriptor allowed
    gate_selector: Bool  # its target selector, RPL raised, is one a gate may name
    gate_reserved: Bool  # its reserved bits (5..7 of the high word) are clear
    seg_base: Bool  # a code or data segment's base is a page below GUEST_SEGMENT_MAX_ADDR
    seg_limit: Bool  # its end is truncated to GUEST_SEGMENT_MAX_ADDR, or needs no truncating


def _rule_parts(lo: Word, hi: Word) -> _RuleParts:
    """The conditions of ``descriptor_rule``, each as it writes it."""
    hi1 = _ite((hi & abi._SEGMENT_DPL) == 0, hi | (1 << 13), hi)
    sel = _lshr(lo, 16)
    sel1 = _ite((sel & 3) == 0, sel | 1, sel)
    base = descriptor_base(lo, hi1)
    limit = descriptor_limit_bytes(lo, hi1)
    limit32 = z3.Extract(31, 0, limit) if _sym(limit) else limit & _M32
    end = (base + limit32) & _M32
    expand_down = (hi1 & (abi._SEGMENT_CODE | abi._SEGMENT_EC)) == abi._SEGMENT_EC
    truncate = _ite(expand_down, _ult(base, end),
                    _or(_not(_ult(base, end)), _ult(abi.GUEST_SEGMENT_MAX_ADDR, end)))
    return _RuleParts(
        present=(hi & abi._SEGMENT_P) != 0, system=(hi1 & abi._SEGMENT_S) == 0,
        gate_type=_lshr(hi1 & abi._SEGMENT_TYPE, 8) == abi.DESC_TYPE_CALL_GATE_32,
        gate_selector=guest_gate_selector_okay(sel1), gate_reserved=(hi1 & 0xE0) == 0,
        seg_base=_ult(base, abi.GUEST_SEGMENT_MAX_ADDR - abi.PAGE_SIZE),
        seg_limit=_or(_not(truncate), (hi1 & abi._SEGMENT_G) != 0),
    )


def descriptor_check(lo: Word, hi: Word) -> Check:
    """``descriptor_rule``'s acceptance with its named ways (Z3 terms; spec.branches): a
    descriptor not present passes (``absent``); a system descriptor (``gate``) fails as
    ``gate_type``, ``gate_selector`` or ``gate_reserved``; a code or data segment
    (``segment``) as ``seg_base`` or ``seg_limit``. ``holds`` is the rule's condition
    (tests/test_branches.py proves them equal)."""
    p = _rule_parts(lo, hi)
    return cases(
        ("absent", z3.Not(p.present), PASS),
        ("gate", p.system, all_of(require("gate_type", p.gate_type),
                                  require("gate_selector", p.gate_selector),
                                  require("gate_reserved", p.gate_reserved))),
        ("segment", None, all_of(require("seg_base", p.seg_base),
                                 require("seg_limit", p.seg_limit))),
    )


def check_descriptor(lo: int, hi: int) -> tuple[int, int] | None:
    """The descriptor as Xen stores it (fixed up), or None if Xen refuses it."""
    ok, out_lo, out_hi = descriptor_rule(lo & _M32, hi & _M32)
    return (int(out_lo), int(out_hi)) if ok else None


def descriptor_is_safe(lo: Word, hi: Word) -> Bool:
    """INV-PRIV for one descriptor: not present, or DPL > 0 and, for a call gate, a target
    RPL > 0; a present expand-up code or data segment ends at or below
    GUEST_SEGMENT_MAX_ADDR."""
    system = (hi & abi._SEGMENT_S) == 0
    expand_down = (hi & (abi._SEGMENT_CODE | abi._SEGMENT_EC)) == abi._SEGMENT_EC
    gate_safe = _and(_lshr(hi & abi._SEGMENT_TYPE, 8) == abi.DESC_TYPE_CALL_GATE_32,
                     (_lshr(lo, 16) & 3) != 0)
    end = _widen(descriptor_base(lo, hi)) + descriptor_limit_bytes(lo, hi)
    fits = z3.ULE(end, abi.GUEST_SEGMENT_MAX_ADDR) if _sym(end) else (
        end <= abi.GUEST_SEGMENT_MAX_ADDR)
    return _or(
        (hi & abi._SEGMENT_P) == 0,
        _and((hi & abi._SEGMENT_DPL) != 0,
             _ite(system, gate_safe, _or(expand_down, fits))),  # expand-down: see the rule
    )

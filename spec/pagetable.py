"""Frame types and the bit-exact page-table entry format of non-PAE x86_32, defined once.

The type names and their order are Xen 3.0.4's ``PGT_*`` (xen/include/asm-x86/mm.h, the type
field of ``page_info.u.inuse.type_info``, bits 29-31); the model keeps the type, the type count
and the validated/pinned bits as separate fields rather than one packed word.

The entry accessors and the reference rules below take either Python ints (the reference
model) or Z3 bit-vectors (the proofs): the rule of which entry holds which reference is written
here and nowhere else (xen/arch/x86/mm.c, get_page_from_l1e / get_page_from_l2e).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import z3

from xenspec.spec import abi


class PGT(IntEnum):
    """Frame types: xen/include/asm-x86/mm.h (3.0.4), ``PGT_*`` >> 29."""

    none = 0
    l1_page_table = 1
    l2_page_table = 2
    l3_page_table = 3
    l4_page_table = 4
    gdt_page = 5
    ldt_page = 6
    writable_page = 7


# On non-PAE x86_32 the root of the paging hierarchy is the L2 (mm.h, PGT_root_page_table).
PGT_root_page_table = PGT.l2_page_table

# Types whose frames are validated on their first type reference and must never be writable.
PAGE_TABLE_TYPES = (PGT.l1_page_table, PGT.l2_page_table)

# Flags of the hypervisor's own entries: xen/include/asm-x86/page.h, __PAGE_HYPERVISOR =
# PRESENT | RW | DIRTY | ACCESSED, and its read-only form (RW clear) for what guests may read.
__PAGE_HYPERVISOR = abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_DIRTY | abi._PAGE_ACCESSED
__PAGE_HYPERVISOR_RO = __PAGE_HYPERVISOR & ~abi._PAGE_RW

Word = Any  # an int in the reference model, a z3.BitVecRef(32) in the proofs


def _lshr(x: Word, n: int) -> Word:
    return z3.LShR(x, n) if isinstance(x, z3.BitVecRef) else x >> n


def _is_set(x: Word, mask: int) -> Any:
    return (x & mask) != 0


_PRESENT, _L1_DISALLOW = abi._PAGE_PRESENT, abi.L1_DISALLOW_MASK


def pte_get_pfn(e: Word) -> Word:
    """The machine frame an entry names (page-2level.h, l1e_get_pfn / l2e_get_pfn)."""
    return e >> abi.PAGE_SHIFT if isinstance(e, int) else _lshr(e, abi.PAGE_SHIFT)


def pte_get_flags(e: Word) -> Word:
    """The 12 flag bits of an entry (page-2level.h, get_pte_flags)."""
    return e & 0xFFF


def pte_present(e: Word) -> Any:
    return (e & _PRESENT) != 0  # _is_set, written out: asked for every entry validated


def pte_writable(e: Word) -> Any:
    """Present and RW: the entry grants write access to its frame."""
    both = abi._PAGE_PRESENT | abi._PAGE_RW
    return (e & both) == both


def l1e_disallowed(e: Word) -> Any:
    """A present L1 entry with PAT or GLOBAL is refused (mm.c, L1_DISALLOW_MASK)."""
    return (e & _L1_DISALLOW) != 0


def l2e_disallowed(e: Word) -> Any:
    """A present L2 entry with PSE or GLOBAL is refused (mm.c, L2_DISALLOW_MASK)."""
    return _is_set(e, abi.L2_DISALLOW_MASK)


# XSA-182 fix (mm.c, FASTPATH_FLAG_WHITELIST): flags whose change needs no reference handling.
FASTPATH_FLAG_WHITELIST = abi._PAGE_AVAIL | abi._PAGE_DIRTY | abi._PAGE_ACCESSED | abi._PAGE_USER
# The bits entry_has_changed compares: the frame and every flag outside the whitelist.
FASTPATH_COMPARE = abi.PAGE_MASK | (0xFFF & ~FASTPATH_FLAG_WHITELIST)


def entry_has_changed(old: Word, new: Word) -> Any:
    """mod_l1_entry / mod_l2_entry's fast-path test (l1e_has_changed with the XSA-182
    whitelist): the frame, or a flag outside the whitelist, differs. Otherwise the entry is
    rewritten with no reference handling."""
    return ((old ^ new) & FASTPATH_COMPARE) != 0


def l2e_from_pfn(pfn: int, flags: int) -> int:
    return (pfn << abi.PAGE_SHIFT) | flags


def is_guest_l2_slot(i: int) -> bool:
    """Slots below L2_PAGETABLE_FIRST_XEN_SLOT are the guest's (mm.c, is_guest_l2_slot)."""
    return i < abi.L2_PAGETABLE_FIRST_XEN_SLOT


def xen_l2_slot(shared: Word, l2mfn: Word, index: Word, linear_flags: Word) -> Word:
    """Xen's entry in hypervisor slot ``index`` of page directory ``l2mfn``: what
    alloc_l2_table (mm.c, 3.0.4, CONFIG_PAGING_LEVELS == 2) leaves there once it has copied
    the domain's entries in (``shared``: idle_pg_table's slots L2_PAGETABLE_FIRST_XEN_SLOT..1023
    and the domain's per-domain tables at PERDOMAIN_VIRT_START, the same in every directory of
    the domain) and then written the directory's map of itself at LINEAR_PT_VIRT_START,
    ``l2e_from_pfn(pfn, __PAGE_HYPERVISOR)``: no reference is taken for it (the slot is not a
    guest slot, so neither get_page_from_l2e nor, in free_l2_table, put_page_from_l2e sees it).
    The self-map's flags are ``linear_flags``: Xen's __PAGE_HYPERVISOR, the reference model's
    read-only form (refmodel/mm.py says why)."""
    frame = l2mfn << abi.PAGE_SHIFT
    if not isinstance(frame, z3.ExprRef):
        frame &= 0xFFFFFFFF
    mine = frame | (linear_flags & 0xFFF)
    if isinstance(index, int):
        return mine if index == abi.LINEAR_PT_SLOT else shared
    as_bv = [z3.BitVecVal(x, 32) if isinstance(x, int) else x for x in (mine, shared)]
    return z3.If(index == abi.LINEAR_PT_SLOT, as_bv[0], as_bv[1])


def xen_l2e_of(slots: Sequence[int], l2mfn: int, index: int) -> int:
    """Xen's entry in slot ``index`` of directory ``l2mfn``, from an implementation's account
    of the hypervisor slots it wrote there (``slots``: the L2_PAGETABLE_XEN_SLOTS entries from
    L2_PAGETABLE_FIRST_XEN_SLOT): the account's entry, except in the linear page-table slot,
    where the rule (``xen_l2_slot``) puts the directory's own frame and only the account's
    flags are taken. So an account that names another frame there, or none, still expects the
    directory to map itself, and a directory that does not fails INV-HOLE."""
    first = abi.L2_PAGETABLE_FIRST_XEN_SLOT
    return int(xen_l2_slot(slots[index - first], l2mfn, index,
                           slots[abi.LINEAR_PT_SLOT - first] & 0xFFF))

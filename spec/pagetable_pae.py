"""The 64-bit PAE page-table entry of the compat-pae profile, defined once for ints and Z3.

The compat-pae profile (spec/abi_profiles.py) is a 32-bit PV guest on 64-bit Xen 4.x; its
page tables are PAE tables (an L3 of 4 entries, L2 and L1 of 512) whose entries Xen reads
as 64-bit ``intpte_t``. The rules here are Xen RELEASE-4.19.0's:

* the frame is bits 12 to 51 (``PADDR_BITS`` 52, xen/arch/x86/include/asm/page-bits.h;
  ``l1e_get_pfn`` and friends, asm/page.h);
* Xen's flag word is 24 bits: the entry's bits 0-11 and 52-63 (``get_pte_flags`` /
  ``put_pte_flags``, asm/x86_64/page.h), so NX (entry bit 63) is flag bit 23
  (``_PAGE_NX_BIT``), ``_PAGE_GNTTAB`` is flag bit 22 (entry bit 62) and ``_PAGE_AVAIL_HIGH``
  flag bits 12-22 (asm/page.h);
* the flags a guest may not set at each level (xen/arch/x86/mm.c): ``base_disallow_mask``
  (``arch_init_memory``: everything but PRESENT, RW, USER, ACCESSED, DIRTY, the AVAIL bits
  and NX), ``L1_DISALLOW_MASK`` (that, ``_PAGE_GNTTAB`` too, ``_PAGE_GLOBAL`` allowed; the
  cache attributes stay refused for a domain with no I/O resources, ``l1_disallow_mask``),
  ``L2_DISALLOW_MASK`` (``base_disallow_mask``) and ``l3_disallow_mask`` of a 32-bit domain
  (``0xFFFFF198``: no PWT, PCD, PSE, GLOBAL, and none of flag bits 12-31, NX included);
* L3 slot 3 of a 32-bit domain names the L2 holding Xen's slots (``PGT_pae_xen_l2``); a
  guest cannot update it (``mod_l3_entry``) and the slots of that L2 from
  ``COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT`` on are not the guest's (``is_guest_l2_slot``,
  asm/x86_64/page.h);
* the fast path of ``mod_l1_entry`` and of the higher levels (``l1e_has_changed`` with
  ``FASTPATH_FLAG_WHITELIST``; ``FASTPATH_PDE_FLAG_WHITELIST`` is the same set when guest
  linear page tables are allowed, ``CONFIG_PV_LINEAR_PT``, the default).

The processor is taken to have NX (``cpu_has_nx``): Xen's masks allow NX only then. The
model's PAE MMU (refmodel/mm_pae.py) and the PAE specification (spec/mm_spec_pae.py,
spec/paging.py) use these definitions.
Xen 3.0.4's own PAE build (x86_32 with ``CONFIG_X86_PAE``) differs: 44-bit frames, a 32-bit
flag word (entry bits 44-63 as flag bits 12-31, NX flag bit 31), ``L3_DISALLOW_MASK``
``0xFFFFF1E6`` (asm-x86/x86_32/page-3level.h); the profile is the 64-bit hypervisor's.
"""

from __future__ import annotations

from typing import Any, Final

import z3

from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    COMPAT_L3_XEN_SLOT,
    PAE_L1_PAGETABLE_ENTRIES,
    PAE_L1_PAGETABLE_SHIFT,
    PAE_L2_PAGETABLE_ENTRIES,
    PAE_L2_PAGETABLE_SHIFT,
    PAE_L3_PAGETABLE_ENTRIES,
    PAE_L3_PAGETABLE_SHIFT,
)

Word64 = Any  # an int in a model, a z3.BitVecRef(64) in a proof

_U64: Final = (1 << 64) - 1
_U32: Final = (1 << 32) - 1

PADDR_BITS: Final = 52  # asm/page-bits.h
PADDR_MASK: Final = (1 << PADDR_BITS) - 1
PAE_FRAME_MASK: Final = PADDR_MASK & ~(abi.PAGE_SIZE - 1)  # PADDR_MASK & PAGE_MASK

# Flag-word bits above the low twelve (asm/page.h, asm/x86_64/page.h).
_PAGE_AVAIL_HIGH: Final = 0x7FF << 12
_PAGE_GNTTAB: Final = 1 << 22
_PAGE_NX_BIT: Final = 1 << 23
PAGE_CACHE_ATTRS: Final = abi._PAGE_PAT | abi._PAGE_PCD | abi._PAGE_PWT

# mm.c arch_init_memory: the guest-accessible flags (NX: cpu_has_nx).
base_disallow_mask: Final = ~(
    abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_USER | abi._PAGE_ACCESSED | abi._PAGE_DIRTY
    | abi._PAGE_AVAIL | _PAGE_AVAIL_HIGH | _PAGE_NX_BIT
) & _U32
# mm.c: a domain with no I/O memory, ports or devices keeps the cache attributes refused.
L1_DISALLOW_MASK: Final = (base_disallow_mask | _PAGE_GNTTAB) & ~abi._PAGE_GLOBAL
L2_DISALLOW_MASK: Final = base_disallow_mask
L3_DISALLOW_MASK_PV32: Final = 0xFFFFF198  # mm.c l3_disallow_mask, is_pv_32bit_domain

# mm.c: flags a guest may change without the entry being validated again.
FASTPATH_FLAG_WHITELIST: Final = (
    _PAGE_NX_BIT | _PAGE_AVAIL_HIGH | abi._PAGE_AVAIL | abi._PAGE_GLOBAL | abi._PAGE_DIRTY
    | abi._PAGE_ACCESSED | abi._PAGE_USER
)


def put_pte_flags(flags: int) -> int:
    """The entry bits of a flag word (asm/x86_64/page.h put_pte_flags; bits shifted past
    bit 63 are lost, as in the 64-bit ``intpte_t``)."""
    return (((flags & ~0xFFF) << 40) | (flags & 0xFFF)) & _U64


def _lshr(x: Word64, n: int) -> Word64:
    return z3.LShR(x, n) if isinstance(x, z3.BitVecRef) else x >> n


def pte_get_pfn(e: Word64) -> Word64:
    """The machine frame an entry names (l1e_get_pfn: bits 12 to 51)."""
    return _lshr(e & PAE_FRAME_MASK, abi.PAGE_SHIFT)


def pte_get_flags(e: Word64) -> Word64:
    """Xen's 24-bit flag word of an entry (asm/x86_64/page.h get_pte_flags)."""
    return (_lshr(e, 40) & 0xFFF000) | (e & 0xFFF)


def _any(e: Word64, flags: int) -> Any:
    return (e & put_pte_flags(flags)) != 0


def pte_present(e: Word64) -> Any:
    return _any(e, abi._PAGE_PRESENT)


def pte_writable(e: Word64) -> Any:
    """Present and RW: the entry grants write access to its frame."""
    both = abi._PAGE_PRESENT | abi._PAGE_RW
    return (e & both) == both


def pte_nx(e: Word64) -> Any:
    """The entry forbids instruction fetches (NX, entry bit 63)."""
    return _any(e, _PAGE_NX_BIT)


def l1e_disallowed(e: Word64) -> Any:
    """A present L1 entry with a refused flag (mm.c get_page_from_l1e, l1_disallow_mask)."""
    return _any(e, L1_DISALLOW_MASK)


def l2e_disallowed(e: Word64) -> Any:
    """A present L2 entry with a refused flag (mm.c get_page_from_l2e, L2_DISALLOW_MASK)."""
    return _any(e, L2_DISALLOW_MASK)


def l3e_disallowed(e: Word64) -> Any:
    """A present L3 entry of a 32-bit domain with a refused flag (mm.c get_page_from_l3e,
    mod_l3_entry, promote_l3_table: l3_disallow_mask for is_pv_32bit_domain)."""
    return _any(e, L3_DISALLOW_MASK_PV32)


def entry_has_changed(old: Word64, new: Word64) -> Any:
    """The fast-path test of mod_l1_entry .. mod_l3_entry (l1e_has_changed(o, n,
    ~FASTPATH_FLAG_WHITELIST)): the frame, or a flag outside the whitelist, differs."""
    compare = PAE_FRAME_MASK | put_pte_flags(~FASTPATH_FLAG_WHITELIST & _U32)
    return ((old ^ new) & compare) != 0


def l3_slot_guest_updatable(slot: int) -> bool:
    """mod_l3_entry refuses an update of L3 slot 3 of a 32-bit domain (-EINVAL): it names
    the L2 with Xen's mappings."""
    return 0 <= slot < COMPAT_L3_XEN_SLOT


def is_guest_l2_slot(pae_xen_l2: bool, slot: int) -> bool:
    """Slot ``slot`` of an L2 is the guest's unless the L2 is the one L3 slot 3 names
    (``PGT_pae_xen_l2``) and the slot maps HYPERVISOR_COMPAT_VIRT_START or above
    (asm/x86_64/page.h is_guest_l2_slot)."""
    return not pae_xen_l2 or slot < COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT


def table_offsets(va: int) -> tuple[int, int, int]:
    """The (L3, L2, L1) slots that translate linear address ``va`` (l3/l2/l1_table_offset)."""
    return ((va >> PAE_L3_PAGETABLE_SHIFT) % PAE_L3_PAGETABLE_ENTRIES,
            (va >> PAE_L2_PAGETABLE_SHIFT) % PAE_L2_PAGETABLE_ENTRIES,
            (va >> PAE_L1_PAGETABLE_SHIFT) % PAE_L1_PAGETABLE_ENTRIES)

"""The paging structure of each ABI profile, as the invariants read it.

The invariants (spec/invariants.py) are written once over this description, not once per
profile: which page-table types there are (L1 first, the root last), how many entries of each
the processor reads, which of them are the guest's and which Xen's, which may map a table of
their own level (a linear page table, read-only), and the format of an entry. A ``StateView``
names its paging structure (``StateView.paging``); the native profile's is the default.

``NATIVE`` is Xen 3.0.4 x86_32 without PAE (xen/include/asm-x86/x86_32/page-2level.h; mm.c
``is_guest_l2_slot``, ``alloc_l2_table``): an L1 and an L2 of 1024 4-byte entries, the L2 the
root, its slots from L2_PAGETABLE_FIRST_XEN_SLOT (1008) Xen's in every directory, a
directory's entry naming a directory allowed read-only (``get_linear_pagetable``).

``COMPAT_PAE`` is a 32-bit PV guest on 64-bit Xen 4.19 (xen/arch/x86/mm.c, RELEASE-4.19.0;
asm/x86_64/page.h ``is_guest_l2_slot``, ``is_guest_l3_slot``): L1 and L2 of 512 8-byte
entries, an L3 root of which the processor reads 4 entries (its PDPT). Xen's slots are those
from COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT of the one L2 that L3 slot 3 names, which has the
type flag ``PGT_pae_xen_l2`` (``promote_l3_table`` takes it with that flag;
``init_xen_pae_l2_slots`` writes Xen's entries); L3 slot 3 must name such an L2 and the L3's
entries 4 to 511 are empty (``promote_l3_table``). An L2 entry may name an L2 read-only
(``get_l2_linear_pagetable``, CONFIG_PV_LINEAR_PT); an L3 entry never names an L3 (XSA-185).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import z3

from xenspec.spec import abi, pagetable, pagetable_pae
from xenspec.spec.abi_profiles import (
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    COMPAT_L3_XEN_SLOT,
    PAE_L1_PAGETABLE_ENTRIES,
    PAE_L2_PAGETABLE_ENTRIES,
    PAE_L3_PAGETABLE_ENTRIES,
    AbiProfile,
)
from xenspec.spec.pagetable import PGT

Word = Any
Bool = Any


class XenSlots(Enum):
    """Which tables of a level hold Xen's entries in their top slots."""

    NONE = "none"
    EVERY = "every table"  # native L2: every directory (alloc_l2_table)
    FLAGGED = "tables of type PGT_pae_xen_l2"  # compat L2: the one L3 slot 3 names


@dataclass(frozen=True)
class Level:
    """One level of page tables."""

    n: int  # 1 for L1
    type: PGT
    entries: int  # the entries the processor reads
    first_xen_slot: int  # where Xen's slots start (``entries`` if there are none)
    xen_slots: XenSlots
    linear: bool  # an entry may name a table of this level (read-only)
    frame_entries: int  # the entries a frame of this level holds (an L3 frame: 512)


@dataclass(frozen=True)
class Paging:
    """A profile's paging structure."""

    name: str
    levels: tuple[Level, ...]  # L1 first; the last is the root (PGT_root_page_table)
    pte_get_pfn: Callable[[Word], Word]
    pte_present: Callable[[Word], Bool]
    pte_writable: Callable[[Word], Bool]
    root_xen_slot: int | None  # the root's slot that must name a PGT_pae_xen_l2 table
    source: str

    @property
    def l1(self) -> Level:
        return self.levels[0]

    @property
    def root(self) -> Level:
        return self.levels[-1]

    @property
    def upper(self) -> tuple[Level, ...]:
        """The levels whose entries name page tables."""
        return self.levels[1:]

    @property
    def table_types(self) -> tuple[PGT, ...]:
        return tuple(lv.type for lv in self.levels)

    def below(self, lv: Level) -> Level:
        return self.levels[lv.n - 2]


def pae_frame(e: Word) -> Word:
    """The frame a PAE entry names (l1e_get_pfn: bits 12 to 51). The specification's frame
    numbers are 32-bit (16 TB of machine memory): in a formula, an entry naming a frame
    beyond them names frame 0xFFFFFFFF, which no machine has (``mfn_valid`` is false for
    it), so the entry is refused or checked as naming no RAM, as the model refuses it."""
    if not isinstance(e, z3.ExprRef):
        return pagetable_pae.pte_get_pfn(e)
    return z3.If(z3.Extract(51, 44, e) == 0, z3.Extract(43, 12, e),
                 z3.BitVecVal(0xFFFFFFFF, 32))


NATIVE = Paging(
    name="2-level, 4-byte entries (Xen 3.0.4 x86_32)",
    levels=(
        Level(1, PGT.l1_page_table, abi.L1_PAGETABLE_ENTRIES, abi.L1_PAGETABLE_ENTRIES,
              XenSlots.NONE, False, abi.L1_PAGETABLE_ENTRIES),
        Level(2, PGT.l2_page_table, abi.L2_PAGETABLE_ENTRIES, abi.L2_PAGETABLE_FIRST_XEN_SLOT,
              XenSlots.EVERY, True, abi.L2_PAGETABLE_ENTRIES),
    ),
    pte_get_pfn=pagetable.pte_get_pfn,
    pte_present=pagetable.pte_present,
    pte_writable=pagetable.pte_writable,
    root_xen_slot=None,
    source="xen/arch/x86/mm.c (3.0.4) alloc_l2_table, is_guest_l2_slot, get_linear_pagetable",
)

COMPAT_PAE = Paging(
    name="PAE, 8-byte entries (32-bit PV guest on 64-bit Xen 4.19)",
    levels=(
        Level(1, PGT.l1_page_table, PAE_L1_PAGETABLE_ENTRIES, PAE_L1_PAGETABLE_ENTRIES,
              XenSlots.NONE, False, PAE_L1_PAGETABLE_ENTRIES),
        Level(2, PGT.l2_page_table, PAE_L2_PAGETABLE_ENTRIES, COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
              XenSlots.FLAGGED, True, PAE_L2_PAGETABLE_ENTRIES),
        Level(3, PGT.l3_page_table, PAE_L3_PAGETABLE_ENTRIES, PAE_L3_PAGETABLE_ENTRIES,
              XenSlots.NONE, False, PAE_L2_PAGETABLE_ENTRIES),
    ),
    pte_get_pfn=pae_frame,
    pte_present=pagetable_pae.pte_present,
    pte_writable=pagetable_pae.pte_writable,
    root_xen_slot=COMPAT_L3_XEN_SLOT,
    source="xen/arch/x86/mm.c (RELEASE-4.19.0) promote_l3_table, init_xen_pae_l2_slots, "
           "get_l2_linear_pagetable, mod_l3_entry; asm/x86_64/page.h is_guest_l2_slot",
)


def paging_of(profile: AbiProfile) -> Paging:
    """The paging structure of an ABI profile (spec/abi_profiles.py)."""
    return COMPAT_PAE if profile.paging_levels == 3 else NATIVE


def guest_entries(s: Any, f: Word, lv: Level, body: Callable[[Word, Word], Bool]) -> Bool:
    """For every present entry of table ``f`` (of level ``lv``) that is the guest's: body(i, e).
    A level whose Xen slots are in flagged tables only has all its slots the guest's in the
    others."""
    if lv.xen_slots is not XenSlots.FLAGGED:
        return s.forall_present_entries(f, 0, lv.first_xen_slot, body)
    return s.and_(
        s.implies(s.pae_xen_l2(f), lambda: s.forall_present_entries(
            f, 0, lv.first_xen_slot, body)),
        s.implies(s.not_(s.pae_xen_l2(f)), lambda: s.forall_present_entries(
            f, 0, lv.entries, body)),
    )


def has_xen_slots(s: Any, f: Word, lv: Level) -> Bool:
    """Table ``f`` of level ``lv`` holds Xen's entries from ``lv.first_xen_slot``."""
    if lv.xen_slots is XenSlots.FLAGGED:
        return s.pae_xen_l2(f)
    return lv.xen_slots is XenSlots.EVERY


def conj(s: Any, terms: list[Bool]) -> Bool:
    """The conjunction of ``terms`` (a single term as it is)."""
    return terms[0] if len(terms) == 1 else s.and_(*terms)


def disj(s: Any, terms: list[Bool]) -> Bool:
    return terms[0] if len(terms) == 1 else s.or_(*terms)

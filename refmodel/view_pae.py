"""The runtime checks of a compat-pae machine: its reference counts and isolation rules.

The specification's invariants (spec/invariants.py) are stated over the native profile's
2-level tables; until they are stated over the paging structure of both profiles, a machine
of the compat-pae profile is checked here, on the model's own state, for what they say:

* INV-COUNT: every frame's general and type counts are the references that exist (the
  allocation, a pin, a vCPU's base pointer, a present entry of a validated table in use, a
  GDT frame or LDT page a vCPU installed, a grant device mapping, a back end's mapping), with
  the PAE tables' rules: an L1 entry holds a general reference, and a writable type
  reference when RW; an L2 or L3 entry a general and a type reference on the table it names
  (not a table's map of itself; not Xen's slots);
* no writable mapping of a page table: an L1's RW entry names a frame of type writable, and
  an L2's entry naming an L2 (a linear map) is read-only;
* the hole: every validated L3's slot 3 names an L2 of type PGT_pae_xen_l2, named by no other
  L3's slot 3, whose slots from COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT are Xen's
  (Hypervisor.xen_pae_l2_slots); slots 4 to 511 of a validated L3 are empty;
* linear page tables (XSA-240): no L2 both has linear entries and is mapped linearly, and
  each L2's linear_pt_count is its linear entries minus the times it is mapped.

Rules from xen/arch/x86/mm.c, RELEASE-4.19.0 (refmodel/mm_pae.py cites each).
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import (
    PGC_allocated,
    PGC_xen_heap,
    PGT_pae_xen_l2,
    PGT_pinned,
    PGT_validated,
)
from xenspec.refmodel.mm_pae import MMPae
from xenspec.refmodel.view import ConcreteView
from xenspec.spec import abi
from xenspec.spec.abi_profiles import COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT, COMPAT_L3_XEN_SLOT
from xenspec.spec.pagetable import PGT
from xenspec.spec.pagetable_pae import is_guest_l2_slot, pte_get_pfn

_P, _RW = abi._PAGE_PRESENT, abi._PAGE_RW


@dataclass
class _Census:
    """What the tables say: the references, and the facts the isolation rules read."""

    general: Counter[int] = field(default_factory=Counter)
    typed: Counter[int] = field(default_factory=Counter)
    slot3: Counter[int] = field(default_factory=Counter)  # L2 -> the L3s naming it in slot 3
    linear: list[tuple[int, int]] = field(default_factory=list)  # (L2, the L2 it maps)
    problems: list[str] = field(default_factory=list)

    def ref(self, mfn: int, typed: bool) -> None:
        self.general[mfn] += 1
        self.typed[mfn] += typed


def _in_use(hv: Hypervisor, mfn: int, t: PGT) -> bool:
    """A validated table of type ``t`` with a type reference (the ones whose entries count)."""
    f = hv.frames
    return f.type[mfn] == t and bool(f.flags[mfn] & PGT_validated) and f.type_count[mfn] > 0


def _l1(hv: Hypervisor, mfn: int, c: _Census) -> None:
    f = hv.frames
    for i, e in enumerate(hv.memory.frame_qwords(mfn)):
        if not e & _P:
            continue
        target = pte_get_pfn(e)
        c.ref(target, bool(e & _RW))
        if e & _RW and hv.memory.mfn_valid(target) and f.type[target] != PGT.writable_page:
            c.problems.append(f"L1 {mfn:#x}[{i}] maps {f.describe(target)} writable")


def _l2(hv: Hypervisor, mfn: int, c: _Census) -> None:
    f = hv.frames
    xen_l2 = bool(f.flags[mfn] & PGT_pae_xen_l2)
    for i, e in enumerate(hv.memory.frame_qwords(mfn)):
        if not e & _P or not is_guest_l2_slot(xen_l2, i):
            continue
        target = pte_get_pfn(e)
        if target == mfn:
            continue  # a map of itself holds no reference
        c.ref(target, True)
        if hv.memory.mfn_valid(target) and f.type[target] == PGT.l2_page_table:
            c.linear.append((mfn, target))
            if e & _RW:
                c.problems.append(f"L2 {mfn:#x}[{i}] maps the L2 {target:#x} writable")


def _l3(hv: Hypervisor, mfn: int, c: _Census) -> None:
    f, entries = hv.frames, hv.memory.frame_qwords(mfn)
    for i in range(4):
        if entries[i] & _P and pte_get_pfn(entries[i]) != mfn:
            c.ref(pte_get_pfn(entries[i]), True)
    if any(entries[4:]):
        c.problems.append(f"L3 {mfn:#x} has entries beyond slot 3")
    l2 = pte_get_pfn(entries[COMPAT_L3_XEN_SLOT])
    c.slot3[l2] += 1
    if not (entries[COMPAT_L3_XEN_SLOT] & _P and hv.memory.mfn_valid(l2)
            and f.flags[l2] & PGT_pae_xen_l2):
        c.problems.append(f"L3 {mfn:#x}: slot 3 does not name an L2 with Xen's slots")


def _census(hv: Hypervisor) -> _Census:
    c, f, view = _Census(), hv.frames, ConcreteView(hv)
    walks = {PGT.l1_page_table: _l1, PGT.l2_page_table: _l2, PGT.l3_page_table: _l3}
    for mfn, flags in enumerate(f.flags):  # the frames with a flag: the others hold nothing
        if not flags:
            continue
        c.general[mfn] += bool(flags & PGC_allocated)
        c.typed[mfn] += bool(flags & PGC_xen_heap)  # share_xen_page_with_guest
        if flags & PGT_pinned:
            c.ref(mfn, True)
        t = PGT(f.type[mfn])
        if t in walks and _in_use(hv, mfn, t):
            walks[t](hv, mfn, c)
    for mfn, writable in view.device_refs():
        c.ref(mfn, writable)
    for v in view.vcpus():
        if view.base(v):
            c.ref(view.base(v), True)
        for mfn in view.descriptor_frames(v):
            c.ref(mfn, True)
    return c


def _nonzero(values: array[int]) -> set[int]:
    return {i for i, x in enumerate(values) if x}


def _xen_slots(hv: Hypervisor) -> list[str]:
    bad = []
    for d in hv.domains.values():
        want = hv.xen_pae_l2_slots(d)
        for mfn in d.page_list:
            if _in_use(hv, mfn, PGT.l2_page_table) and hv.frames.flags[mfn] & PGT_pae_xen_l2:
                got = list(hv.memory.frame_qwords(mfn)[COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT:])
                if got != want:
                    bad.append(f"Xen's slots of the L2 {mfn:#x} changed")
    return bad


def _linear(hv: Hypervisor, c: _Census) -> list[str]:
    assert isinstance(hv.mm, MMPae)
    holders, mapped = {a for a, _ in c.linear}, {b for _, b in c.linear}
    bad = [f"L2 {x:#x} has linear entries and is mapped linearly (XSA-240)"
           for x in sorted(holders & mapped)]
    want = Counter(a for a, _ in c.linear)
    want.subtract(b for _, b in c.linear)
    for mfn in sorted(_nonzero(hv.mm.linear_pt_count) | set(want)):
        if hv.mm.linear_pt_count[mfn] != want[mfn]:
            bad.append(f"L2 {mfn:#x}: linear_pt_count {hv.mm.linear_pt_count[mfn]}, "
                       f"counted {want[mfn]}")
    return bad


def check_invariants_pae(hv: Hypervisor) -> list[str]:
    """Every check above on a compat-pae machine; the failures, one line each."""
    if not isinstance(hv.mm, MMPae):
        raise ValueError("check_invariants_pae checks a machine of the compat-pae profile")
    c = _census(hv)
    f = hv.frames
    problems = list(c.problems)
    problems += [f"L2 {l2:#x} is slot 3 of {n} L3s" for l2, n in c.slot3.items() if n > 1]
    problems += _xen_slots(hv) + _linear(hv, c)
    counted = {m for m in (*c.general, *c.typed) if 0 <= m < hv.memory.nr_frames}
    for mfn in sorted(_nonzero(f.count) | _nonzero(f.type_count) | counted):
        if (f.count[mfn], f.type_count[mfn]) != (c.general[mfn], c.typed[mfn]):
            problems.append(f"INV-COUNT {f.describe(mfn)}: references {c.general[mfn]} "
                            f"general, {c.typed[mfn]} type")
    return problems

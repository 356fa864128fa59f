"""The runtime checks of a compat-pae machine: the specification's invariants, and the two
rules of Xen 4.19 that count.

The invariants of spec/invariants.py are written over the paging structure (spec/paging.py),
so the concrete view of a compat-pae machine (refmodel/view.py, ``ConcreteView`` with the
profile's ``COMPAT_PAE`` paging) checks them as it checks a native machine: INV-HOLE (Xen's
slots of every L2 of type PGT_pae_xen_l2; every L3's slot 3 names such an L2, its entries 4
to 511 empty), INV-NOWRPT, INV-OWN, INV-PIN, INV-BASE (an L3), INV-L2REF (over L2 and L3),
INV-FREE-REF, INV-XENPAGE, INV-PRIV, INV-ISO, INV-GNT-RO, the event invariants, and INV-COUNT
with PAE's references. What is left here are two rules about counts, which the specification
abstracts, checked on concrete states only:

* an L2 of type PGT_pae_xen_l2 is slot 3 of at most one L3 (the model keeps the slot-3 L2
  unshared, refmodel/mm_pae.py);
* linear page tables (XSA-240): no L2 both has linear entries and is mapped linearly, and
  each L2's linear_pt_count is its linear entries minus the times it is mapped.

Rules from xen/arch/x86/mm.c, RELEASE-4.19.0 (refmodel/mm_pae.py cites each).
"""

from __future__ import annotations

from collections import Counter

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGT_pae_xen_l2, PGT_validated
from xenspec.refmodel.mm_pae import MMPae
from xenspec.refmodel.view import IncrementalChecker, check_invariants
from xenspec.spec import abi
from xenspec.spec.abi_profiles import COMPAT_L3_XEN_SLOT
from xenspec.spec.pagetable import PGT
from xenspec.spec.pagetable_pae import is_guest_l2_slot, pte_get_pfn


def _l2_slot3(hv: Hypervisor, mfn: int) -> int | None:
    """The L2 that slot 3 of the L3 ``mfn`` names, if present."""
    e = hv.memory.read_entry64(mfn, COMPAT_L3_XEN_SLOT)
    return pte_get_pfn(e) if e & abi._PAGE_PRESENT else None


def _linear_entries(hv: Hypervisor, mfn: int) -> list[int]:
    """The other L2s that guest entries of the L2 ``mfn`` map (linear maps; a map of itself
    is none)."""
    f = hv.frames
    xen_l2 = bool(f.flags[mfn] & PGT_pae_xen_l2)
    out = []
    for i, e in enumerate(hv.memory.frame_qwords(mfn)):
        if e & abi._PAGE_PRESENT and is_guest_l2_slot(xen_l2, i):
            target = pte_get_pfn(e)
            if target != mfn and hv.memory.mfn_valid(target) \
                    and f.type[target] == PGT.l2_page_table:
                out.append(target)
    return out


def _in_use(hv: Hypervisor, mfn: int, t: PGT) -> bool:
    f = hv.frames
    return f.type[mfn] == t and bool(f.flags[mfn] & PGT_validated)


def count_rules(hv: Hypervisor) -> list[str]:
    """The two rules above on a compat-pae machine; the failures, one line each."""
    assert isinstance(hv.mm, MMPae)
    slot3: Counter[int] = Counter()
    linear: list[tuple[int, int]] = []
    for mfn in range(hv.memory.nr_frames):
        if _in_use(hv, mfn, PGT.l3_page_table):
            l2 = _l2_slot3(hv, mfn)
            if l2 is not None:
                slot3[l2] += 1
        elif _in_use(hv, mfn, PGT.l2_page_table):
            linear += [(mfn, target) for target in _linear_entries(hv, mfn)]
    bad = [f"L2 {l2:#x} is slot 3 of {n} L3s" for l2, n in slot3.items() if n > 1]
    holders, mapped = {a for a, _ in linear}, {b for _, b in linear}
    bad += [f"L2 {x:#x} has linear entries and is mapped linearly (XSA-240)"
            for x in sorted(holders & mapped)]
    want = Counter(a for a, _ in linear)
    want.subtract(b for _, b in linear)
    counts = hv.mm.linear_pt_count
    for mfn in sorted({i for i, x in enumerate(counts) if x} | set(want)):
        if counts[mfn] != want[mfn]:
            bad.append(f"L2 {mfn:#x}: linear_pt_count {counts[mfn]}, counted {want[mfn]}")
    return bad


def _require_pae(hv: Hypervisor) -> None:
    if not isinstance(hv.mm, MMPae):
        raise ValueError("check_invariants_pae checks a machine of the compat-pae profile")


def check_invariants_pae(hv: Hypervisor) -> list[str]:
    """Every invariant and both count rules on a compat-pae machine; the failures, one line
    each (refmodel/view.py check_invariants, and count_rules)."""
    _require_pae(hv)
    return check_invariants(hv) + count_rules(hv)


class PaeChecker:
    """``check_invariants_pae`` of one machine, step after step: the invariants through
    ``IncrementalChecker`` (re-evaluated only where the state changed), the count rules in
    full each time."""

    def __init__(self, hv: Hypervisor) -> None:
        _require_pae(hv)
        self.incremental = IncrementalChecker(hv)

    def __call__(self, hv: Hypervisor) -> list[str]:
        assert hv is self.incremental.hv
        return self.incremental.check() + count_rules(hv)

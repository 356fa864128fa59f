"""The reference model with the page-table fixes undone: Xen 3.0.4's own MMU behaviour.

It shows that the ``fix`` markers of the hypercall-level tests are right: run with
``--xen-profile=3.0.4`` it passes every test that is not marked (the marked ones are not
applicable), and with the default profile the marked tests fail on it. Usable as
``--implementation=xenspec.conformance.xen304:Xen304``.

Undone (``xenspec.conformance.profiles.FIXES``), on one machine only, never on the classes:

* XSA-182: mm.c of 3.0.4, mod_l1_entry takes its fast path (the entry written with no
  reference handling) when neither the frame nor _PAGE_PRESENT nor _PAGE_RW changes
  (``l1e_has_changed(ol1e, nl1e, _PAGE_RW | _PAGE_PRESENT)``), mod_l2_entry when neither the
  frame nor _PAGE_PRESENT changes;
* uva-l1-only: mm.c of 3.0.4, do_update_va_mapping writes the entry guest_map_l1e finds
  through the linear page table, whatever the type of the frame the directory slot names
  (guest_map_l1e refuses only a slot that is not present or has _PAGE_PSE).

The other fixes (XSA-31, XSA-224, XSA-326) are kept: no hypercall-level test reaches them.
"""

from __future__ import annotations

from types import MethodType

from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.mm import MM
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi
from xenspec.spec.pagetable import (
    pte_get_pfn,
)


def l1e_has_changed(old: int, new: int, flags: int) -> bool:
    """xen/include/asm-x86/page.h: the frame or one of ``flags`` differs."""
    return ((old ^ new) & (abi.PAGE_MASK | flags)) != 0


def fast_path(self: MM, old: int, new: int, level: int) -> bool:
    """mm.c (3.0.4) mod_l1_entry / mod_l2_entry: the fast path keeps only the frame and
    _PAGE_PRESENT (and, for an L1 entry, _PAGE_RW), whatever the other bits do."""
    return not l1e_has_changed(old, new, abi._PAGE_RW | abi._PAGE_PRESENT if level == 1
                               else abi._PAGE_PRESENT)


def guest_map_l1e(self: MM, v: Vcpu, va: int) -> int | None:
    if not v.guest_table:
        return None
    l2e = self.memory.read_entry(v.guest_table, va >> abi.L2_PAGETABLE_SHIFT)
    if l2e & (abi._PAGE_PRESENT | abi._PAGE_PSE) != abi._PAGE_PRESENT:
        return None
    mfn = pte_get_pfn(l2e)
    return int(mfn) if self.memory.mfn_valid(mfn) else None


def undo_fixes(hv: Hypervisor, pv: PVPlatform) -> None:
    for name, fn in (("fast_path", fast_path), ("guest_map_l1e", guest_map_l1e)):
        setattr(hv.mm, name, MethodType(fn, hv.mm))


def Xen304() -> ReferenceImplementation:
    impl = ReferenceImplementation(undo_fixes)
    impl.name = "reference with Xen 3.0.4's page-table updates"
    return impl

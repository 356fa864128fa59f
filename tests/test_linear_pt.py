"""Xen's page-directory slots are per directory: the linear page table (Xen 3.0.4, x86_32
non-PAE, xen/arch/x86/mm.c alloc_l2_table).

When Xen validates a page directory it copies its own slots into it and then writes, into the
slot of LINEAR_PT_VIRT_START, the directory itself (``l2e_from_pfn(pfn, __PAGE_HYPERVISOR)``).
No reference is taken for that entry: it is not a guest slot (is_guest_l2_slot), so neither
get_page_from_l2e nor free_l2_table's put_page_from_l2e sees it, and a guest cannot write it
(mod_l2_entry: "Illegal L2 update attempt in Xen-private area", -EINVAL). INV-HOLE accepts
exactly Xen's entries for each directory, its own frame in that slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import z3
from hypothesis import given
from hypothesis import strategies as st

from xenspec.conformance.broken import linear_slot_shared
from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.view import ImplementationView, violations
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.mm import LINEAR_PT_FLAGS
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi
from xenspec.spec.invariants import inv_hole
from xenspec.spec.pagetable import (
    __PAGE_HYPERVISOR,
    PGT,
    l2e_from_pfn,
    pte_get_pfn,
    xen_l2_slot,
)

FIRST, LINEAR = abi.L2_PAGETABLE_FIRST_XEN_SLOT, abi.LINEAR_PT_SLOT
EINVAL = -abi.EINVAL


def xen_slots(impl: ReferenceImplementation, l2: int) -> list[int]:
    return [int(w) for w in impl.entries(l2)[FIRST:]]


def pinned_directory(g: Guest, skip: int = 0) -> int:
    """Another page directory of ``g``'s domain, empty and pinned."""
    (b,) = g.free_mfns(1, skip)
    assert g.pin(b, 2) == 0
    return b


def test_linear_pt_slot_is_slot_1016() -> None:
    """asm-x86/config.h (3.0.4, x86_32 non-PAE): LINEAR_PT_VIRT_START is 0xFE000000, below the
    4 MB shadow linear table, the 8 MB per-domain area, Xen's 12 MB and ioremap's 4 MB."""
    assert abi.LINEAR_PT_VIRT_START == (1 << 32) - (4 + 12 + 8 + 4 + 4 << 20)
    assert LINEAR == 1016 and abi.PERDOMAIN_SLOT == 1018
    assert __PAGE_HYPERVISOR == 0x63  # page.h: PRESENT | RW | DIRTY | ACCESSED


def test_each_directory_maps_itself() -> None:
    """alloc_l2_table: the boot directory and a newly pinned one each hold their own frame in
    the linear slot, with the model's flags; all their other hypervisor slots are equal."""
    impl = ReferenceImplementation()
    g = Guest(impl, 64, 32)
    a, b = g.l2_mfn, pinned_directory(g)
    xa, xb = xen_slots(impl, a), xen_slots(impl, b)
    assert xa[LINEAR - FIRST] == l2e_from_pfn(a, LINEAR_PT_FLAGS)
    assert xb[LINEAR - FIRST] == l2e_from_pfn(b, LINEAR_PT_FLAGS)
    assert [k for k in range(len(xa)) if xa[k] != xb[k]] == [LINEAR - FIRST]
    assert xa == list(impl.xen_l2_slots(g.domid, a)) and xb == list(impl.xen_l2_slots(g.domid, b))
    assert check_invariants(impl.hv) == []


def test_guest_cannot_write_the_linear_slot() -> None:
    """mod_l2_entry, is_guest_l2_slot: a write to the linear slot is -EINVAL, whatever the
    value (none, another directory, the directory itself read-write), and changes nothing."""
    impl = ReferenceImplementation()
    g = Guest(impl, 64, 32)
    a, b = g.l2_mfn, pinned_directory(g)
    before = xen_slots(impl, a)
    for val in (0, g.pte(b, abi._PAGE_PRESENT), g.pte(a, abi._PAGE_PRESENT | abi._PAGE_RW)):
        assert g.mmu_update([(g.entry_maddr(a, LINEAR), val)]) == (EINVAL, 0)
    assert xen_slots(impl, a) == before and pte_get_pfn(before[LINEAR - FIRST]) == a
    assert check_invariants(impl.hv) == []


def test_self_map_holds_no_reference() -> None:
    """The self-map takes no reference (it is a Xen slot): a pinned directory has the pin's
    type reference and the pin's and the allocation's general references, no more; after the
    unpin the frame is an ordinary page again (the stale self-map in its words is inert: the
    guest may map it writable), and destroying the domain returns every frame."""
    m = Machine(memory_mb=4)

    class OnMachine(ReferenceImplementation):
        @property
        def hv(self) -> Hypervisor:
            return m.hv

        @property
        def pv(self) -> PVPlatform:
            return m.pv

    impl = OnMachine()
    free = len(m.hv.free_list)
    g = Guest(impl, 64, 32)
    b = pinned_directory(g)
    f = impl.frame(b)
    assert (f.type, f.type_count, f.count, f.validated) == (PGT.l2_page_table, 1, 2, True)
    assert pte_get_pfn(impl.entries(b)[LINEAR]) == b
    assert g.unpin(b) == 0
    f = impl.frame(b)
    assert (f.type_count, f.count, f.validated, f.pinned) == (0, 1, False, False)
    assert g.update_va_mapping(g.va(20), g.pte(b, abi._PAGE_PRESENT | abi._PAGE_RW)) == 0
    assert check_invariants(m.hv) == []
    assert g.pin(b, 2) == -abi.EINVAL  # mapped writable: it cannot be a directory again
    c = pinned_directory(g, 1)  # one more directory, left pinned for the teardown
    assert pte_get_pfn(impl.entries(c)[LINEAR]) == c
    m.domctl.destroy(g.domid)
    assert check_invariants(m.hv) == [] and not m.hv.domains
    assert len(m.hv.free_list) == free


class Declares(ReferenceImplementation):
    """The reference model, but its account of Xen's slots in one directory says ``slots``."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: dict[int, list[int]] = {}

    def xen_l2_slots(self, domid: int, l2_mfn: int) -> Sequence[int]:
        return self.claims.get(l2_mfn) or super().xen_l2_slots(domid, l2_mfn)


def test_view_accepts_xens_slots_and_refuses_a_wrong_self_map() -> None:
    """INV-HOLE on the conformance view: Xen's real slots (each directory's own linear entry,
    with Xen's flags) pass; a directory whose linear slot names another frame, or none, fails,
    whatever the implementation's account of its slots says (the view takes only the flags
    from the account there: spec.pagetable.xen_l2e_of)."""
    impl = Declares()
    g = Guest(impl, 64, 32)
    a, b = g.l2_mfn, pinned_directory(g)
    assert inv_hole(ImplementationView(impl))
    # Xen's own flags there (__PAGE_HYPERVISOR, RW): accepted when the directory holds them.
    xen = xen_slots(impl, b)
    xen[LINEAR - FIRST] = l2e_from_pfn(b, __PAGE_HYPERVISOR)
    impl.hv.memory.write_entry(b, LINEAR, xen[LINEAR - FIRST])
    impl.claims[b] = xen
    assert inv_hole(ImplementationView(impl))
    assert not violations(impl, frozenset())
    # The directory maps another directory, or nothing: refused, even when the account agrees.
    for wrong in (l2e_from_pfn(a, __PAGE_HYPERVISOR), 0):
        impl.hv.memory.write_entry(b, LINEAR, wrong)
        for claim in (xen[LINEAR - FIRST], wrong):
            impl.claims[b] = [*xen[: LINEAR - FIRST], claim, *xen[LINEAR - FIRST + 1:]]
            assert not inv_hole(ImplementationView(impl)), (hex(wrong), hex(claim))
    assert any(line.startswith("INV-HOLE") for line in violations(impl, frozenset()))
    # The directory's own frame with flags other than the account's (0x61, not 0x63): refused.
    impl.claims[b] = xen
    impl.hv.memory.write_entry(b, LINEAR, l2e_from_pfn(b, LINEAR_PT_FLAGS))
    assert not inv_hole(ImplementationView(impl))


def test_model_check_refuses_a_wrong_self_map() -> None:
    """The model's own INV-HOLE check: a directory whose linear slot names another directory
    (or is empty, as before the slot was modelled) is a violation."""
    impl = ReferenceImplementation()
    g = Guest(impl, 64, 32)
    a, b = g.l2_mfn, pinned_directory(g)
    for wrong in (l2e_from_pfn(a, LINEAR_PT_FLAGS), 0):
        impl.hv.memory.write_entry(b, LINEAR, wrong)
        assert [x for x in check_invariants(impl.hv) if x.startswith("INV-HOLE")]
    impl.hv.memory.write_entry(b, LINEAR, l2e_from_pfn(b, LINEAR_PT_FLAGS))
    assert check_invariants(impl.hv) == []


def test_shared_linear_entry_is_caught() -> None:
    """conformance.broken.linear_slot_shared: all of a domain's directories get vCPU 0's
    directory in the linear slot, and the implementation says so too; INV-HOLE still fails
    on the second directory."""
    impl = linear_slot_shared()
    g = Guest(impl, 64, 32)
    assert not violations(impl, frozenset())
    b = pinned_directory(g)
    assert pte_get_pfn(impl.entries(b)[LINEAR]) == g.l2_mfn
    assert any(line.startswith("INV-HOLE") for line in violations(impl, frozenset()))


@given(shared=st.integers(0, 2**32 - 1), l2=st.integers(0, 2**20 - 1),
       index=st.sampled_from([FIRST, LINEAR - 1, LINEAR, LINEAR + 1, 1023]),
       flags=st.sampled_from([LINEAR_PT_FLAGS, __PAGE_HYPERVISOR]))
def test_xen_l2_slot_is_one_rule_for_ints_and_z3(shared: int, l2: int, index: int,
                                                 flags: int) -> None:
    """spec.pagetable.xen_l2_slot gives the same entry on Python ints (the model, the views)
    and on Z3 terms (the proofs)."""
    concrete = xen_l2_slot(shared, l2, index, flags)
    b = [z3.BitVecVal(x, 32) for x in (shared, l2, index, flags)]
    symbolic = z3.simplify(xen_l2_slot(*b))
    assert z3.is_bv_value(symbolic) and symbolic.as_long() == concrete
    assert concrete == (l2e_from_pfn(l2, flags) if index == LINEAR else shared)


@pytest.mark.parametrize("who", ["model", "conformance view"])
def test_two_domains_each_see_their_own(who: str) -> None:
    """Xen's entries for a directory are its domain's (per-domain tables) and its own (linear
    slot): two domains' boot directories differ in both."""
    impl = ReferenceImplementation()
    g, h = Guest(impl, 64, 32), Guest(impl, 64, 32)
    xg, xh = xen_slots(impl, g.l2_mfn), xen_slots(impl, h.l2_mfn)
    differ = {FIRST + k for k in range(len(xg)) if xg[k] != xh[k]}
    assert {LINEAR, abi.PERDOMAIN_SLOT} <= differ
    if who == "model":
        assert check_invariants(impl.hv) == []
    else:
        assert not violations(impl, frozenset())

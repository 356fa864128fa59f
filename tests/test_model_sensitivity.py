"""The checks on the reference model have teeth: a rule removed from ``refmodel.mm`` is caught,
either because the spec does not allow the outcome (``proofs.refinement``) or because an
invariant, INV-COUNT included, breaks on the resulting state (``refmodel.view``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import z3

from xenspec.proofs.refinement import Snapshot, check_refinement
from xenspec.refmodel import mm
from xenspec.refmodel.hypervisor import Hypervisor, HypervisorBug
from xenspec.refmodel.mm import MM
from xenspec.refmodel.pvguest import ARG_PAGES, PTE_RO, PTE_RW, PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.spec import mm_spec
from xenspec.spec.pagetable import pte_get_pfn, pte_present
from xenspec.spec.symbolic import bv


def l1e_rw_takes_no_type(self: MM, l1e: int, d: Any) -> bool:
    if not pte_present(l1e):
        return True
    mfn = pte_get_pfn(l1e)
    return self.memory.mfn_valid(mfn) and self.get_page(mfn, d)


def get_page_ignores_owner(self: MM, mfn: int, d: Any) -> bool:
    if self.frames.count[mfn] == 0:
        return False
    self.frames.count[mfn] += 1
    return True


def linear_map_any_flags(self: MM, l2e: int, pfn: int, d: Any) -> bool:
    return pte_get_pfn(l2e) == pfn


def put_l1e_forgets_type(self: MM, l1e: int) -> None:
    if pte_present(l1e) and self.memory.mfn_valid(pte_get_pfn(l1e)):
        self.put_page(pte_get_pfn(l1e))


def never_devalidate(self: MM, mfn: int) -> None:
    self.frames.type_count[mfn] -= 1


MUTANTS: list[tuple[str, str, Callable[..., Any]]] = [
    ("a writable mapping takes no writable type reference", "get_page_from_l1e",
     l1e_rw_takes_no_type),
    ("get_page does not check the owner", "get_page", get_page_ignores_owner),
    ("linear page-table entries may be writable", "get_linear_pagetable",
     linear_map_any_flags),
    ("dropping a writable mapping forgets the type-count decrement", "put_page_from_l1e",
     put_l1e_forgets_type),
    ("a table whose last reference goes stays validated", "put_page_type", never_devalidate),
]


def hostile_session(hv: Hypervisor, g: PVGuest, other: PVGuest) -> list[str]:
    """A fixed session of valid and hostile MMU calls, each checked against its spec; the
    mismatches and invariant violations it finds."""
    skip = frozenset(g.mfn(p) for p in range(ARG_PAGES))
    free = list(g.free_pfns())
    l1, data = g.mfn(free[0]), g.mfn(free[1])
    v = bv(0)
    problems: list[str] = []

    def update(ptr: int, val: int, what: str) -> None:
        before = Snapshot.take(hv, skip)
        rc, _ = g.mmu_update([(ptr, val)])
        after = Snapshot.take(hv, skip)
        found = check_refinement(before, after, rc, lambda s: mm_spec.spec_mmu_update(
            s, v, z3.BitVecVal(ptr, 64), bv(val), s.vcpu_domain[v]), ((ptr & 0xFFF) >> 2,))
        if found:
            problems.append(f"{what}: {found}")
        problems.extend(f"{what}: {x}" for x in check_invariants(hv))

    def pin_unpin(mfn: int, pin: bool, what: str) -> None:
        before = Snapshot.take(hv, skip)
        rc = g.pin(mfn, 1) if pin else g.unpin(mfn)
        after = Snapshot.take(hv, skip)
        spec = ((lambda s: mm_spec.spec_pin_table(s, bv(mfn), 1, s.vcpu_domain[v])) if pin
                else (lambda s: mm_spec.spec_unpin_table(s, s.vcpu_domain[v], bv(mfn))))
        found = check_refinement(before, after, rc, spec, (0,))
        if found:
            problems.append(f"{what}: {found}")
        problems.extend(f"{what}: {x}" for x in check_invariants(hv))

    pin_unpin(l1, True, "pin an empty L1")
    update(g.entry_maddr(l1, 0), g.pte(data, PTE_RW), "map a page writable")
    update(g.entry_maddr(l1, 1), g.pte(g.l2_mfn, PTE_RW), "map the page directory writable")
    update(g.entry_maddr(l1, 2), g.pte(other.mfn(0), PTE_RO), "map another domain's frame")
    update(g.entry_maddr(g.l2_mfn, 5), g.pte(g.l2_mfn, PTE_RW), "writable linear map")
    update(g.entry_maddr(l1, 0), 0, "unmap the writable page")
    pin_unpin(l1, False, "unpin the L1")
    update(g.entry_maddr(l1, 0), g.pte(data, PTE_RW), "write the unpinned L1 as data")
    return problems


def session() -> list[str]:
    hv = Hypervisor(96)
    g = PVGuest(hv, 32, nr_mapped=21)
    other = PVGuest(hv, 24, nr_mapped=21)
    try:
        return hostile_session(hv, g, other)
    except HypervisorBug as exc:  # the model's own consistency assertions tripped
        return [str(exc)]


def test_intact_model_passes() -> None:
    assert session() == []


@pytest.mark.parametrize("what,name,mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_removed_rule_is_caught(
    monkeypatch: pytest.MonkeyPatch, what: str, name: str, mutant: Callable[..., Any]
) -> None:
    monkeypatch.setattr(mm.MM, name, mutant)
    assert session(), f"nothing noticed that {what}"

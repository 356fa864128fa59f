"""The proofs have teeth: removing a validation check from a hypercall spec makes the matching
obligation fail, with a counterexample that names the frames and entries involved.

Each test patches one rule of ``spec.mm_spec`` for its duration and asks the runner for a
counterexample to the obligation that rule protects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import z3

from xenspec.proofs.obligations import RULE_OBLIGATIONS, obligation_names
from xenspec.proofs.runner import BOUNDED_FRAMES, bounded_search, find_counterexample
from xenspec.spec import abi, cpu_spec, grant_spec, memop_spec, mm_spec, mm_spec_pae, symbolic
from xenspec.spec import pagetable_pae as pae
from xenspec.spec.branches import all_of, any_of, require
from xenspec.spec.pagetable import (
    PGT,
    l1e_disallowed,
    l2e_disallowed,
    pte_get_pfn,
    pte_present,
    pte_writable,
    xen_l2_slot,
)
from xenspec.spec.paging import pae_frame

NAMES = obligation_names()


def l1e_check_without_owner_check(s: Any, e: Any, fd: Any) -> Any:
    """mm_spec.l1e_check without its ``l1e_owner`` requirement."""
    g = pte_get_pfn(e)
    return any_of(
        ("absent", require("l1e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l1e_flags", z3.Not(l1e_disallowed(e))),
            require("l1e_mfn", mm_spec.mfn_valid(s, g)),
            require("l1e_rw_type", z3.Implies(
                pte_writable(e), mm_spec.can_take_type(s, g, PGT.writable_page))),
        )),
    )


def l2e_check_linear_writable(s: Any, l2: Any, e: Any, d: Any) -> Any:
    """mm_spec.l2e_check without its ``l2e_linear_ro`` requirement."""
    g = pte_get_pfn(e)
    mine = z3.And(mm_spec.mfn_valid(s, g), s.owner[g] == d)
    return any_of(
        ("absent", require("l2e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l2e_flags", z3.Not(l2e_disallowed(e))),
            require("l2e_target", z3.Or(
                z3.And(mine, mm_spec.in_use(s, g, PGT.l1_page_table)),
                g == l2, z3.And(mine, mm_spec.in_use(s, g, PGT.l2_page_table)))),
        )),
    )


def self_map_of_next_frame(shared: Any, l2: Any, index: Any, flags: Any) -> Any:
    """Xen's slots with the linear page-table slot naming the frame after the directory."""
    return xen_l2_slot(shared, l2 + 1, index, flags)


def drop_references_ignoring_roots(s: Any) -> tuple[Any, Any]:
    gone = mm_spec.fresh_set("devalidated")
    h = z3.BitVec("h", 32)
    return z3.BoolVal(True), s.evolve(
        validated=z3.Lambda([h], z3.And(s.validated[h], z3.Not(gone[h]))))


MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None], str]] = [
    ("guest may write the hypervisor's page-directory slots",
     "mmu_update/NORMAL_PT_UPDATE preserves INV-HOLE",
     lambda mp: mp.setattr(mm_spec, "FIRST_XEN_SLOT", 1024), "INV-HOLE"),
    # alloc_l2_table maps each new directory at LINEAR_PT_VIRT_START: a spec whose new
    # directory maps another frame there breaks INV-HOLE.
    ("a new directory's linear slot maps another frame",
     "mmuext_op/PIN_L2_TABLE preserves INV-HOLE",
     lambda mp: mp.setattr(mm_spec, "xen_l2_slot", self_map_of_next_frame), "INV-HOLE"),
    ("read-write linear page-table entries accepted",
     "mmu_update/NORMAL_PT_UPDATE preserves INV-NOWRPT",
     lambda mp: mp.setattr(mm_spec, "l2e_check", l2e_check_linear_writable), "INV-NOWRPT"),
    ("L1 entries may name another domain's frames",
     "update_va_mapping preserves INV-OWN (L1 entries)",
     lambda mp: mp.setattr(mm_spec, "l1e_check", l1e_check_without_owner_check), "INV-OWN"),
    ("a frame may change type while it has type references",
     "update_va_mapping preserves INV-PIN",
     lambda mp: mp.setattr(mm_spec, "can_take_type", lambda s, g, t: z3.BoolVal(True)),
     "INV-PIN"),
    ("de-validation ignores pins",
     "mmuext_op/UNPIN_TABLE preserves INV-PIN",
     lambda mp: mp.setattr(mm_spec, "drop_references", drop_references_ignoring_roots),
     "INV-PIN"),
    # The shared_info hole: without Xen's type reference on the frames it writes into, a
    # guest pins its shared_info as an L1 (or as a page directory).
    ("a frame Xen writes into may be pinned as an L1",
     "mmuext_op/PIN_L1_TABLE preserves INV-XENPAGE",
     lambda mp: mp.setattr(mm_spec, "xen_type_ref", lambda s, g: z3.BoolVal(False)),
     "INV-XENPAGE"),
    ("a frame Xen writes into may be pinned as a page directory",
     "mmuext_op/PIN_L2_TABLE preserves INV-XENPAGE",
     lambda mp: mp.setattr(mm_spec, "xen_type_ref", lambda s, g: z3.BoolVal(False)),
     "INV-XENPAGE"),
]


# Mutants of the compat-pae MMU specs (spec.mm_spec_pae), against the same invariants written
# over the PAE paging structure.
def pae_xen_slot_check_any_l2(s: Any, e: Any, d: Any) -> Any:
    """mm_spec_pae.xen_slot_check without its ``slot3_xen_l2`` requirement."""
    g = pae_frame(e)
    return all_of(require("l3_slot3_present", pae.pte_present(e)),
                  mm_spec_pae.owned_by(s, g, d, "l3_slot3"),
                  mm_spec.in_use_check(s, g, PGT.l2_page_table, "slot3"))


PAE_MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None], str]] = [
    ("compat-pae: a frame may change type while it has type references",
     "compat-pae: mmu_update/NORMAL_PT_UPDATE/L1 preserves INV-PIN",
     lambda mp: mp.setattr(mm_spec_pae, "can_take_type",
                           lambda s, g, t, xen_l2=False: z3.BoolVal(True)), "INV-PIN"),
    ("compat-pae: Xen's L2 slots are the guest's",
     "compat-pae: mmu_update/NORMAL_PT_UPDATE/L2 preserves INV-HOLE",
     lambda mp: mp.setattr(mm_spec_pae, "guest_slot",
                           lambda s, f, i: z3.ULT(i, symbolic.bv(512))), "INV-HOLE"),
    ("compat-pae: L3 slot 3 may name an L2 without Xen's slots",
     "compat-pae: mmuext_op/PIN_L3_TABLE preserves INV-HOLE",
     lambda mp: mp.setattr(mm_spec_pae, "xen_slot_check", pae_xen_slot_check_any_l2),
     "INV-HOLE"),
    ("compat-pae: an L2 entry may name another domain's frame",
     "compat-pae: mmu_update/NORMAL_PT_UPDATE/L2 preserves INV-OWN (directory entries)",
     lambda mp: mp.setattr(mm_spec_pae, "owned_by", lambda s, g, d, name: require(
         f"{name}_mfn", mm_spec.mfn_valid(s, g))), "INV-OWN"),
]
MUTANTS += PAE_MUTANTS

# Mutants of the CPU-interface specs: the counterexample names the vCPU (line "vcpu ...").
CPU_MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None], str]] = [
    ("set_trap_table keeps an RPL-0 code selector",
     "set_trap_table preserves INV-PRIV (selectors)",
     lambda mp: mp.setattr(cpu_spec, "fixup_guest_selector", lambda sel: sel & 0xFFFF),
     "INV-PRIV"),
    ("stack_switch keeps an RPL-0 stack selector",
     "stack_switch preserves INV-PRIV (selectors)",
     lambda mp: mp.setattr(cpu_spec, "fixup_guest_selector", lambda sel: sel & 0xFFFF),
     "INV-PRIV"),
    ("update_descriptor writes a descriptor without the rule",
     "update_descriptor preserves INV-PRIV (descriptors)",
     lambda mp: mp.setattr(cpu_spec, "descriptor_rule", lambda lo, hi: (True, lo, hi)),
     "INV-PRIV"),
]


@pytest.mark.parametrize("what,obligation,patch,inv_id", CPU_MUTANTS,
                         ids=[m[0] for m in CPU_MUTANTS])
def test_cpu_spec_mutant_breaks_the_proof(
    monkeypatch: pytest.MonkeyPatch, what: str, obligation: str,
    patch: Callable[[pytest.MonkeyPatch], None], inv_id: str,
) -> None:
    patch(monkeypatch)
    lines = find_counterexample(NAMES.index(obligation))
    assert lines, f"no counterexample once the spec allows: {what}"
    assert f"violating {inv_id}" in lines[0]
    assert any(line.startswith(("vcpu ", "frame ")) for line in lines), lines


def test_set_gdt_without_descriptor_check_fails_inv_priv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """set_gdt that types a frame GDT without checking its descriptors: a ring-0 descriptor can
    reach a GDT frame, and the INV-PRIV obligation fails."""
    monkeypatch.setattr(cpu_spec, "descriptors_pass", lambda s, x: z3.BoolVal(True))
    monkeypatch.setattr(cpu_spec, "fixed_up_memory", lambda s, mem, fresh: mem == s.mem)
    lines = find_counterexample(NAMES.index("set_gdt preserves INV-PRIV (descriptors)"))
    assert lines and "violating INV-PRIV" in lines[0], lines


@pytest.mark.parametrize("what,obligation,patch,inv_id", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_removed_check_breaks_the_proof(
    monkeypatch: pytest.MonkeyPatch, what: str, obligation: str,
    patch: Callable[[pytest.MonkeyPatch], None], inv_id: str,
) -> None:
    patch(monkeypatch)
    lines = find_counterexample(NAMES.index(obligation))
    assert lines, f"no counterexample once the spec allows: {what}"
    assert f"violating {inv_id}" in lines[0]
    assert any(line.startswith("frame ") for line in lines), lines


@pytest.mark.parametrize("obligation", sorted({m[1] for m in MUTANTS + CPU_MUTANTS}))
def test_intact_spec_has_no_counterexample(obligation: str) -> None:
    """The control: without the patch, the bounded search finds nothing, and has decided it
    for every machine size (a search that gave up found nothing either). The time limit is
    generous: the slowest takes about 35 s in all on an idle machine, 120 s on a loaded one."""
    lines, answers = bounded_search(NAMES.index(obligation), timeout_s=600)
    assert lines == []
    assert answers == dict.fromkeys(BOUNDED_FRAMES, "unsat"), answers


def test_descriptor_rule_without_dpl_fixup_fails_inv_priv(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that no longer rewrites DPL 0 to DPL 1 lets a guest install a ring-0 segment:
    the INV-PRIV obligation fails and names the two descriptor words."""
    from xenspec.proofs.runner import prove_one
    from xenspec.spec import abi, desc

    rule = desc.descriptor_rule

    def without_fixup(lo: Any, hi: Any) -> Any:
        ok, out_lo, out_hi = rule(lo, hi)
        return ok, out_lo, z3.If((hi & abi._SEGMENT_DPL) == 0, out_hi & ~abi._SEGMENT_DPL,
                                 out_hi)

    monkeypatch.setattr(desc, "descriptor_rule", without_fixup)
    result = prove_one(NAMES.index(
        "descriptor rule (set_gdt, update_descriptor) yields only safe descriptors: INV-PRIV"),
        use_cache=False)
    assert result.status == "FAILED"
    assert {line.split(" = ")[0] for line in result.counterexample} == {"lo", "hi"}


# Mutants of the grant-table and memory_op specs (spec.grant_spec, spec.memop_spec).
def _map_ignoring_readonly(mp: pytest.MonkeyPatch) -> None:
    """map_grant_ref no longer reads GTF_readonly from the granter's entry."""
    permits = grant_spec.permits
    mp.setattr(grant_spec, "permits", lambda f, d, c, ro: permits(f, d, c, z3.BoolVal(True)))


def _copy_ignoring_readonly(mp: pytest.MonkeyPatch) -> None:
    """A copy's destination grant is checked as if the copy only read it."""
    side = grant_spec.copy_side
    mp.setattr(grant_spec, "copy_side",
               lambda s, d, g, r, dom, readonly: side(s, d, g, r, dom, True))


def _map_writable_pte(mp: pytest.MonkeyPatch) -> None:
    """The grant PTE is made writable whatever the handle's flags."""
    mp.setattr(grant_spec, "GRANT_PTE_FLAGS", abi.GRANT_PTE_FLAGS | abi._PAGE_RW)


def _pte_form_any_table(mp: pytest.MonkeyPatch) -> None:
    """GNTMAP_contains_pte accepts an L1 of any domain."""
    slot = grant_spec.grant_pte_slot

    def anyone(s: Any, v: Any, addr: Any, by_pte: bool) -> Any:
        if not by_pte:
            return slot(s, v, addr, by_pte)
        l1 = z3.LShR(addr, 12)
        return (require("l1", mm_spec.in_use(s, l1, PGT.l1_page_table)), l1,
                z3.LShR(addr & 0xFFF, 2))

    mp.setattr(grant_spec, "grant_pte_slot", anyone)


GRANT_MEMOP_MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None]]] = [
    ("decrease_reservation frees a frame that is still referenced",
     "memory_op/decrease_reservation preserves INV-FREE-REF (frames)",
     lambda mp: mp.setattr(memop_spec, "unreferenced", lambda s, f: z3.BoolVal(True))),
    ("increase_reservation hands out a frame that is not on the free list",
     "memory_op/increase_reservation preserves INV-OWN (L1 entries)",
     lambda mp: mp.setattr(memop_spec, "on_free_list", lambda s, f: z3.BoolVal(True))),
    ("map_grant_ref ignores GTF_readonly",
     "map_grant_ref and copy write only through grants without GTF_readonly: INV-GNT-RO",
     _map_ignoring_readonly),
    ("map_grant_ref writes a writable PTE for a read-only handle",
     "grant_table_op/map_grant_ref preserves INV-GNT-RO", _map_writable_pte),
    ("map_grant_ref maps a frame the granter does not own",
     "grant_table_op/map_grant_ref preserves INV-OWN (L1 entries)",
     lambda mp: mp.setattr(grant_spec, "frame_owned_check",
                           lambda s, t, g: require("frame", z3.BoolVal(True)))),
    ("map_grant_ref by PTE address writes another domain's table",
     "grant_table_op/map_grant_ref/contains_pte by another domain leaves a grantee's mapping "
     "in place: grants not revoked", _pte_form_any_table),
    ("copy writes a frame that cannot take the writable type",
     "grant_table_op/copy preserves INV-L2REF (directories)",
     lambda mp: mp.setattr(grant_spec, "can_take_type", lambda s, g, t: z3.BoolVal(True))),
    ("copy ignores GTF_readonly on its destination",
     "map_grant_ref and copy write only through grants without GTF_readonly: INV-GNT-RO",
     _copy_ignoring_readonly),
]


def bounded_counterexample(obligation: str) -> bool:
    """A counterexample in a machine of 4 frames and one vCPU (hypercall obligations through
    ``find_counterexample``; rule obligations by building them with bounded quantifiers)."""
    index = NAMES.index(obligation)
    hypercall_obligations = len(NAMES) - len(RULE_OBLIGATIONS)
    if index < hypercall_obligations:
        return bool(find_counterexample(index))
    symbolic.set_scope(symbolic.Scope(frames=4, vcpus=1))
    try:
        solver = RULE_OBLIGATIONS[index - hypercall_obligations][1]()
        solver.set("timeout", 60_000)
        return bool(solver.check() == z3.sat)
    finally:
        symbolic.set_scope(symbolic.Scope())


@pytest.mark.parametrize("what,obligation,patch", GRANT_MEMOP_MUTANTS,
                         ids=[m[0] for m in GRANT_MEMOP_MUTANTS])
def test_grant_and_memop_mutant_breaks_the_proof(
    what: str, obligation: str, patch: Callable[[pytest.MonkeyPatch], None],
) -> None:
    assert not bounded_counterexample(obligation), "control: the intact spec has none"
    with pytest.MonkeyPatch.context() as mp:
        patch(mp)
        assert bounded_counterexample(obligation), f"no counterexample once {what}"

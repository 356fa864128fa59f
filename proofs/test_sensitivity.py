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

from xenspec.proofs.obligations import obligation_names
from xenspec.proofs.runner import find_counterexample
from xenspec.spec import cpu_spec, mm_spec
from xenspec.spec.pagetable import (
    PGT,
    l1e_disallowed,
    l2e_disallowed,
    pte_get_pfn,
    pte_present,
    pte_writable,
)

NAMES = obligation_names()


def l1e_ok_without_owner_check(s: Any, e: Any, fd: Any) -> Any:
    g = pte_get_pfn(e)
    return z3.Or(z3.Not(pte_present(e)), z3.And(
        z3.Not(l1e_disallowed(e)), mm_spec.mfn_valid(s, g),
        z3.Implies(pte_writable(e), mm_spec.can_take_type(s, g, PGT.writable_page)),
    ))


def l2e_ok_linear_writable(s: Any, l2: Any, e: Any, d: Any) -> Any:
    g = pte_get_pfn(e)
    mine = z3.And(mm_spec.mfn_valid(s, g), s.owner[g] == d)
    return z3.Or(z3.Not(pte_present(e)), z3.And(
        z3.Not(l2e_disallowed(e)),
        z3.Or(z3.And(mine, mm_spec.in_use(s, g, PGT.l1_page_table)),
              g == l2, z3.And(mine, mm_spec.in_use(s, g, PGT.l2_page_table))),
    ))


def drop_references_ignoring_roots(s: Any) -> tuple[Any, Any]:
    gone = mm_spec.fresh_set("devalidated")
    h = z3.BitVec("h", 32)
    return z3.BoolVal(True), s.evolve(
        validated=z3.Lambda([h], z3.And(s.validated[h], z3.Not(gone[h]))))


MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None], str]] = [
    ("guest may write the hypervisor's page-directory slots",
     "mmu_update/NORMAL_PT_UPDATE preserves INV-HOLE",
     lambda mp: mp.setattr(mm_spec, "FIRST_XEN_SLOT", 1024), "INV-HOLE"),
    ("read-write linear page-table entries accepted",
     "mmu_update/NORMAL_PT_UPDATE preserves INV-NOWRPT",
     lambda mp: mp.setattr(mm_spec, "l2e_ok", l2e_ok_linear_writable), "INV-NOWRPT"),
    ("L1 entries may name another domain's frames",
     "update_va_mapping preserves INV-OWN",
     lambda mp: mp.setattr(mm_spec, "l1e_ok", l1e_ok_without_owner_check), "INV-OWN"),
    ("a frame may change type while it has type references",
     "update_va_mapping preserves INV-PIN",
     lambda mp: mp.setattr(mm_spec, "can_take_type", lambda s, g, t: z3.BoolVal(True)),
     "INV-PIN"),
    ("de-validation ignores pins",
     "mmuext_op/UNPIN_TABLE preserves INV-PIN",
     lambda mp: mp.setattr(mm_spec, "drop_references", drop_references_ignoring_roots),
     "INV-PIN"),
]


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
    """The control: without the patch, the bounded search finds nothing."""
    assert find_counterexample(NAMES.index(obligation)) == []


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

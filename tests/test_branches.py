"""Every named branch of every MMU and CPU-interface transition spec, checked on the reference model
(``proofs.branchcheck``): the solver builds a small state that takes the branch, the model is
put in it and runs the handler, and the outcome must be that branch's. The test ids list the
branches by name (``pytest tests/test_branches.py -v``); a branch no state takes is skipped
with the reason from ``branchcheck.UNREACHABLE`` (any other fails: dead in the spec). The run
is recorded for the documentation's traceability matrix (``branches-last.json``).

The checks must catch a model that takes another branch: single-line mutants of
refmodel/mm.py (``MUTANTS``) and of refmodel/traps.py and desc.py (``CPU_MUTANTS``), each
applied in turn, must fail some branch check.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest
from mm_mutants import UVA_ANY_TABLE, mutated

from xenspec.proofs import branchcheck
from xenspec.proofs.branchcheck import FAMILIES, UNREACHABLE, branch_names, check_one, family
from xenspec.refmodel import desc, traps
from xenspec.refmodel.mm import MM

PER_BRANCH = 3

# Branch checks that do not pass yet, each an open question, not an accepted result: on a state
# the solver built for the branch, the model and the spec disagree, and it is not yet known
# whether the spec, the model or the state's construction (proofs.branchcheck) is at fault.
# They run and are reported as expected failures until each is explained and fixed.
_VALIDATION = ("validating a new table: the model refuses where the spec, on the same state, "
               "could succeed (or the reverse); unexplained")
OPEN: dict[str, str] = {
    "mmuext_op/PIN_L1_TABLE fail/validate/new_l1_entries": _VALIDATION,
    "mmuext_op/PIN_L2_TABLE fail/validate/new_l1_entries": _VALIDATION,
    "mmuext_op/PIN_L2_TABLE fail/validate/new_l1_fresh": _VALIDATION,
    "mmuext_op/PIN_L2_TABLE fail/validate/l2_entries": _VALIDATION,
    "mmu_update/NORMAL_PT_UPDATE fail/l2/new_l1_entries": _VALIDATION,
    "mmu_update/NORMAL_PT_UPDATE fail/l2/new_l1_fresh": _VALIDATION,
    "mmu_update/NORMAL_PT_UPDATE fail/l2/present/linear/l2e_linear_ro": (
        "a writable L2 entry naming a directory: the model answers 0 (the frame validated as "
        "an L1, get_page_from_l2e's first attempt), the spec -EINVAL; unexplained"),
    "mmu_update/NORMAL_PT_UPDATE fail/l2/present/linear/other/l2e_l2_type": _VALIDATION,
    "mmu_update/NORMAL_PT_UPDATE fail/l2/present/linear/other/l2e_l2_validated": _VALIDATION,
    "mmu_update/NORMAL_PT_UPDATE fail/plain/writable_type": (
        "no state of the small machine found and no reason given yet"),
    "mmuext_op/NEW_BASEPTR other/retry/in_use": _VALIDATION,
    "mmuext_op/NEW_BASEPTR other/retry/validate": _VALIDATION,
    "mmuext_op/NEW_BASEPTR other/crash/validate/new_l1_entries": _VALIDATION,
    "mmuext_op/NEW_BASEPTR other/crash/validate/new_l1_fresh": _VALIDATION,
    "mmuext_op/NEW_BASEPTR other/crash/validate/l2_entries": _VALIDATION,
    "mmuext_op/NEW_BASEPTR other/crash/validate/no_type_refs": _VALIDATION,
}


def _param(name: str, branch: str) -> Any:
    key = f"{name} {branch}"
    marks = [pytest.mark.xfail(reason=OPEN[key], strict=False)] if key in OPEN else []
    return pytest.param(name, branch, id=key, marks=marks)


BRANCHES = [_param(f.name, b) for f in FAMILIES for b in branch_names(f)]


def test_open_list_names_real_branches() -> None:
    """Every open item names a branch the specs have (a renamed branch is not left behind)."""
    known = {f"{f.name} {b}" for f in FAMILIES for b in branch_names(f)}
    assert set(OPEN) <= known, sorted(set(OPEN) - known)


@pytest.mark.parametrize(("name", "branch"), BRANCHES)
def test_branch_refines(name: str, branch: str) -> None:
    key = f"{name} {branch}"
    cases = check_one(family(name), branch, PER_BRANCH)
    branchcheck.record(key, cases)
    if not cases:
        assert key in UNREACHABLE, (
            f"{key}: no state of the small machine takes this branch; it is dead in the spec "
            "(remove it) or out of the machine's reach (explain it in UNREACHABLE)")
        pytest.skip(f"not hit: {UNREACHABLE[key]}")
    assert key not in UNREACHABLE, f"{key} is hit: remove it from UNREACHABLE"
    problems = [f"{c.args}: {c.problem}" for c in cases if c.problem is not None]
    assert not problems, f"{key}:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# Mutants: one line of the model changed, each a rule the spec has.
# ----------------------------------------------------------------------------------------------
# (method of MM, the line as the model has it, the mutated line, the family and branch whose
# check must catch it)
MUTANTS: list[tuple[str, str, str, str, str]] = [
    # update_va_mapping writes through any page-table frame the L2 slot names.
    (*UVA_ANY_TABLE, "update_va_mapping", "fail/l1_type"),
    # mod_l2_entry lets the guest write Xen's slots of a page directory.
    ("mod_l2_entry",
     "if not is_guest_l2_slot(index):",
     "if index > 1023:",
     "mmu_update/NORMAL_PT_UPDATE", "fail/l2/guest_slot"),
    # get_linear_pagetable accepts a writable linear map.
    ("get_linear_pagetable",
     "if l2e & abi._PAGE_RW:",
     "if False:",
     "mmu_update/NORMAL_PT_UPDATE", "fail/l2/present/linear/l2e_linear_ro"),
    # pin_page pins a table that is pinned already.
    ("pin_page",
     "if self.frames.flags[mfn] & PGT_pinned:",
     "if False:",
     "mmuext_op/PIN_L1_TABLE", "fail/not_pinned"),
]


def _mutant_param(m: tuple[str, str, str, str, str]) -> Any:
    key = f"{m[3]} {m[4]}"
    marks = [pytest.mark.xfail(reason=f"its branch is open: {OPEN[key]}", strict=False)
             ] if key in OPEN else []
    return pytest.param(m, id=m[0], marks=marks)


@pytest.mark.parametrize("mutant", [_mutant_param(m) for m in MUTANTS])
def test_mutant_is_caught(mutant: tuple[str, str, str, str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    method, line, replacement, name, branch = mutant
    cases = check_one(family(name), branch, PER_BRANCH)
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    monkeypatch.setattr(MM, method, mutated(method, line, replacement))
    cases = check_one(family(name), branch, PER_BRANCH)
    assert any(c.problem is not None for c in cases), (
        f"mutant of MM.{method} ({replacement}) survives the checks of {name} {branch}")


# ----------------------------------------------------------------------------------------------
# CPU-interface mutants: one line of refmodel/traps.py or desc.py changed.
# ----------------------------------------------------------------------------------------------
# (module, class or None for a module function, function, the line, the mutated line, the family
# and branch whose check must catch it)
CPU_MUTANTS: list[tuple[Any, str | None, str, str, str, str, str]] = [
    # A code selector's RPL 0 is kept (no fix-up): the trap table gains a ring-0 handler.
    (traps, None, "fixup_guest_code_selector",
     "return sel | 1 if sel & 3 == 0 else sel", "return sel",
     "set_trap_table", "ok/store/cs_rpl0"),
    # The NMI callback is taken from any vCPU of domain 0.
    (traps, "Traps", "register_guest_callback",
     "if v.domain.domain_id != 0 or v.vcpu_id != 0:", "if v.domain.domain_id != 0:",
     "callback_op/register", "fail/nmi/dom0_vcpu0"),
    # iret to ring 0 is let through.
    (traps, "Traps", "do_iret", "if cs & 3 == 0:", "if False:", "iret", "fail/ring0"),
    # A GDT frame must take the writable type to be updated.
    (desc, "Desc", "do_update_descriptor",
     "want = t if t in (PGT.gdt_page, PGT.ldt_page) else PGT.writable_page",
     "want = PGT.writable_page", "update_descriptor", "ok/absent/gdt"),
    # set_gdt types its frames writable, not GDT (a guest could then map its GDT writable).
    (desc, "Desc", "do_set_gdt",
     "if not mm.get_page_and_type_from_pagenr(mfn, PGT.gdt_page, v.domain):",
     "if not mm.get_page_and_type_from_pagenr(mfn, PGT.writable_page, v.domain):",
     "set_gdt", "ok"),
]


def cpu_mutated(module: Any, owner: str | None, name: str, line: str, replacement: str) -> Any:
    """``name`` of ``module`` (a function, or a method of class ``owner``) recompiled from its
    own source with ``line`` replaced."""
    holder = getattr(module, owner) if owner else module
    source = textwrap.dedent(inspect.getsource(getattr(holder, name)))
    assert source.count(line) == 1, f"{name}: {line!r} not found once"
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(line, replacement), module.__file__, "exec"), vars(module),
         namespace)
    return namespace[name]


@pytest.mark.parametrize("mutant", [pytest.param(m, id=f"{m[1] or m[0].__name__}.{m[2]}")
                                    for m in CPU_MUTANTS])
def test_cpu_mutant_is_caught(mutant: tuple[Any, str | None, str, str, str, str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    module, owner, name, line, replacement, fam, branch = mutant
    cases = check_one(family(fam), branch, PER_BRANCH)
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    holder = getattr(module, owner) if owner else module
    monkeypatch.setattr(holder, name, cpu_mutated(module, owner, name, line, replacement))
    cases = check_one(family(fam), branch, PER_BRANCH)
    assert any(c.problem is not None for c in cases), (
        f"mutant of {name} ({replacement}) survives the checks of {fam} {branch}")


def test_descriptor_check_is_the_rule() -> None:
    """The descriptor rule's named conditions (spec.desc.descriptor_check, the branches of
    update_descriptor) hold exactly where the rule accepts a descriptor."""
    import z3

    from xenspec.spec.desc import descriptor_check, descriptor_rule

    lo, hi = z3.BitVecs("lo hi", 32)
    solver = z3.Solver()
    solver.add(descriptor_rule(lo, hi)[0] != descriptor_check(lo, hi).holds)
    assert solver.check() == z3.unsat

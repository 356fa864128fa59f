"""Every named branch of every MMU transition spec, checked on the reference model
(``proofs.branchcheck``): the solver builds a small state that takes the branch, the model is
put in it and runs the handler, and the outcome must be that branch's. The test ids list the
branches by name (``pytest tests/test_branches.py -v``); a branch no state takes is skipped
with the reason from ``branchcheck.UNREACHABLE`` (any other fails: dead in the spec). The run
is recorded for the documentation's traceability matrix (``branches-last.json``).

The checks must catch a model that takes another branch: single-line mutants of
refmodel/mm.py (``MUTANTS``), each applied in turn, must fail some branch check.
"""

from __future__ import annotations

import inspect
import textwrap

import pytest

from xenspec.proofs import branchcheck
from xenspec.proofs.branchcheck import FAMILIES, UNREACHABLE, branch_names, check_one, family
from xenspec.refmodel import mm
from xenspec.refmodel.mm import MM

PER_BRANCH = 3
BRANCHES = [(f.name, b) for f in FAMILIES for b in branch_names(f)]


@pytest.mark.parametrize(("name", "branch"), BRANCHES, ids=[f"{f} {b}" for f, b in BRANCHES])
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
    # update_va_mapping writes through any page-table frame the L2 slot names: a directory
    # reached through its read-only linear slot gets an unvalidated entry.
    ("guest_map_l1e",
     "self.frames.type[l1mfn] != PGT.l1_page_table",
     "self.frames.type[l1mfn] not in (PGT.l1_page_table, PGT.l2_page_table)",
     "update_va_mapping", "fail/l1_type"),
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


def mutated(method: str, line: str, replacement: str) -> object:
    """MM.``method`` with ``line`` replaced (compiled in mm's namespace)."""
    source = textwrap.dedent(inspect.getsource(getattr(MM, method)))
    assert source.count(line) == 1, f"{method}: {line!r} not found once"
    namespace: dict[str, object] = {}
    exec(compile(source.replace(line, replacement), mm.__file__, "exec"),
         vars(mm), namespace)
    return namespace[method]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_is_caught(mutant: tuple[str, str, str, str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    method, line, replacement, name, branch = mutant
    cases = check_one(family(name), branch, PER_BRANCH)
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    monkeypatch.setattr(MM, method, mutated(method, line, replacement))
    cases = check_one(family(name), branch, PER_BRANCH)
    assert any(c.problem is not None for c in cases), (
        f"mutant of MM.{method} ({replacement}) survives the checks of {name} {branch}")

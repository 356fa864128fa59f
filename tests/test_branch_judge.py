"""The in-process mutation judge (benchmarks/mutation/branch_judge.py): a mutant is put in
place wherever the function holding it is bound, and taken out again; a mutant the branch
checks see is killed, the unmutated model passes, and a verdict is reused only for the same
check and the same outcome."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xenspec.proofs import branchcheck_gem as gem
from xenspec.refmodel import event
from xenspec.refmodel.event import Events

pytest.importorskip("cosmic_ray")
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mutation" / "branch_judge.py"
_spec = importlib.util.spec_from_file_location("branch_judge", _PATH)
assert _spec is not None and _spec.loader is not None
bj = importlib.util.module_from_spec(_spec)
sys.modules["branch_judge"] = bj
_spec.loader.exec_module(bj)

SOURCE = '''
LIMIT = 4


def below(x):
    return x < LIMIT


class Box:
    def fits(self, x):
        return below(x) and x >= 0
'''


def _module(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_mutant_is_bound_where_the_original_was_and_taken_out(tmp_path: Path) -> None:
    m = _module(tmp_path, "judged_m", SOURCE)
    user = _module(tmp_path, "judged_user", "from judged_m import below\n")
    mutated = SOURCE.replace("x < LIMIT", "x <= LIMIT")
    changes = bj.replacements(m, SOURCE, mutated, SOURCE.splitlines().index(
        "    return x < LIMIT") + 1)
    assert {h for h, _, _ in changes} == {m, user}
    with bj.applied(changes):
        assert m.below(4) and user.below(4) and m.Box().fits(4)
    assert not m.below(4) and not user.below(4) and not m.Box().fits(4)


def test_a_method_and_a_constant_are_replaced(tmp_path: Path) -> None:
    m = _module(tmp_path, "judged_m2", SOURCE)
    row = SOURCE.splitlines().index("        return below(x) and x >= 0") + 1
    mutated = SOURCE.replace("x >= 0", "x > 0")
    with bj.applied(bj.replacements(m, SOURCE, mutated, row)):
        assert not m.Box().fits(0)
    assert m.Box().fits(0)
    with bj.applied(bj.replacements(m, SOURCE, SOURCE.replace("= 4", "= 5"), 2)):
        assert m.below(4.5)
    assert not m.below(4.5)


def test_a_class_body_is_not_recompiled(tmp_path: Path) -> None:
    source = "class C:\n    X = 1\n"
    m = _module(tmp_path, "judged_m3", source)
    with pytest.raises(bj.NotRecompiled):
        bj.replacements(m, source, source.replace("1", "2"), 2)


def test_the_event_checks_kill_a_mutant_and_pass_the_model() -> None:
    """``Events._vcpu`` finding no vCPU where there is one (a mutant cosmic-ray makes of
    refmodel/event.py: ``>=`` as ``<``) is seen by the event branch checks; the unmutated
    model passes them all."""
    fam = gem.evt_family("event_channel_op/alloc_unbound")
    v = bj.Verdicts()
    with bj.reused_verdicts(v):
        checks = [(f"{fam.name} {b}", c) for b in gem.evt_branch_names(fam)
                  for c in gem.evt_cases_for(fam, b)]
        assert bj.judge(checks, v) is None
        asked = v.asked
        assert bj.judge(checks, v) is None
        assert v.asked == asked and v.reused >= asked  # the same outcomes: no solver call
        original = Path(str(event.__file__)).read_text()
        line = "        if vcpu_id >= abi.MAX_VIRT_CPUS or vcpu_id >= len(d.vcpus):"
        mutated = original.replace(line, line.replace("vcpu_id >= len", "vcpu_id < len"))
        row = original.splitlines().index(line) + 1
        changes = bj.replacements(event, original, mutated, row)
        assert [(h, n) for h, n, _ in changes] == [(Events, "_vcpu")]
        with bj.applied(changes):
            killer = bj.judge(checks, v)
    assert killer is not None and killer.startswith(fam.name)

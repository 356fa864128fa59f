"""Judge cosmic-ray's mutants of a model module by the branch checks alone, in one process.

A branch check (proofs/branchcheck.py, branchcheck_gem.py) has two parts: the solver finds
states that take a named branch of a transition spec (this depends on the spec alone), then
the model is put in each state, runs the handler, and the spec judges its outcome. Run under
cosmic-ray, every mutant would pay for the solving again (six minutes for the MMU specs on two
busy cores). Here the states are found once, and each mutant of the module's sample is
applied in this process (the function or method that holds it is recompiled from the mutated
source and put in place of the original wherever it is bound), the checks are run again on
it until one fails (killed) or all pass (survived), and the original is put back.

The spec's verdict on a check is a function of what the model did (the states before and
after, the return value): a verdict already reached on the unmutated model for the same
check and the same outcome is reused instead of asking the solver again. A check is only as
good as the outcomes it compares, so this changes no verdict, only its cost.

    export PYTHONPATH=$PWD
    cosmic-ray init benchmarks/mutation/refine-mm.toml refine-mm.sqlite
    python benchmarks/mutation/sample.py keep refine-mm.sqlite 60 --seed 0
    python benchmarks/mutation/branch_judge.py refine-mm.sqlite mm
    python benchmarks/mutation/sample.py summary refine-mm.sqlite --diff

Results go into the cosmic-ray session (killed, survived; a mutant that runs past
``--timeout`` seconds is killed by timeout, as cosmic-ray counts it), so that ``sample.py
summary`` reports them. A mutant outside any function (a module constant is re-bound; a
class body, or a method calling ``super()``, cannot be recompiled alone) is recorded as not
run ("incompetent"), with the reason, and left out of the figures.
"""

from __future__ import annotations
import __future__

import argparse
import ast
import dataclasses
import difflib
import functools
import pickle
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import cosmic_ray.plugins
from cosmic_ray.mutating import mutate_code
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

from xenspec.proofs import branchcheck
from xenspec.proofs import branchcheck_gem as gem
from xenspec.proofs.branchcheck import Case
from xenspec.refmodel import desc, event, grant, memop, mm, traps
from xenspec.spec.event_spec import EvtState

Check = Callable[[], Case]


def _mmu_checks() -> list[tuple[str, Check]]:
    return [(f"{f.name} {b}", c) for f in branchcheck.FAMILIES if f.bench == "mmu"
            for b in branchcheck.branch_names(f) for c in branchcheck.cases_for(f, b)]


def _cpu_checks() -> list[tuple[str, Check]]:
    return [(f"{f.name} {b}", c) for f in branchcheck.FAMILIES if f.bench == "cpu"
            for b in branchcheck.branch_names(f) for c in branchcheck.cases_for(f, b)]


def _gem_checks(world: str) -> list[tuple[str, Check]]:
    return [(f"{f.name} {b}", c) for f in gem.FAMILIES if f.world == world
            for b in gem.branch_names(f) for c in gem.cases_for(f, b)]


def _evt_checks() -> list[tuple[str, Check]]:
    return [(f"{f.name} {b}", c) for f in gem.EVT_FAMILIES
            for b in gem.evt_branch_names(f) for c in gem.evt_cases_for(f, b)]


# Each module is judged by the branch checks of the specs it implements.
MODULES: dict[str, tuple[ModuleType, Callable[[], list[tuple[str, Check]]]]] = {
    "mm": (mm, _mmu_checks),
    "traps": (traps, _cpu_checks),
    "desc": (desc, _cpu_checks),
    "grant": (grant, functools.partial(_gem_checks, "grant")),
    "memop": (memop, functools.partial(_gem_checks, "memop")),
    "event": (event, _evt_checks),
}


# ----------------------------------------------------------------------------------------------
# Verdicts reused: the solver's answer for a check and an outcome is asked once.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Verdicts:
    current: str = ""
    asked: int = 0
    reused: int = 0
    memo: dict[tuple[str, str, bytes], str | None] = dataclasses.field(default_factory=dict)

    def ask(self, key: tuple[str, str, bytes], fn: Callable[[], str | None]) -> str | None:
        if key in self.memo:
            self.reused += 1
            return self.memo[key]
        self.asked += 1
        self.memo[key] = answer = fn()
        return answer

    def wrap(self, name: str, fn: Callable[..., str | None]) -> Callable[..., str | None]:
        def judged(before: Any, after: Any, rc: int, spec: Any, *rest: Any,
                   **kw: Any) -> str | None:
            key = (self.current, name, pickle.dumps((before, after, rc, rest, sorted(kw.items()))))
            return self.ask(key, lambda: fn(before, after, rc, spec, *rest, **kw))
        return judged

    def wrap_evt(self, fn: Callable[..., str | None]) -> Callable[..., str | None]:
        """evt_verdict's answer by the event states before and after, as the spec sees them."""
        def judged(family: Any, branch: str, values: dict[str, int], before: EvtState, rc: int,
                   w: Any) -> str | None:
            seen = (_sexprs(before), _sexprs(gem.encode_events(w)))
            key = (self.current, "evt_verdict", pickle.dumps((values, rc, seen)))
            return self.ask(key, lambda: fn(family, branch, values, before, rc, w))
        return judged


def _sexprs(s: EvtState) -> tuple[str, ...]:
    return tuple(getattr(s, f.name).sexpr() for f in dataclasses.fields(s))


@contextmanager
def reused_verdicts(v: Verdicts) -> Iterator[None]:
    """check_branch and check_refinement, as the branch checks call them, through ``v``."""
    places = [(branchcheck, "check_branch"), (branchcheck, "check_refinement"),
              (gem, "check_refinement")]
    saved = [getattr(m, n) for m, n in places]
    for (m, n), fn in zip(places, saved, strict=True):
        setattr(m, n, v.wrap(n, fn))
    evt_verdict = gem.evt_verdict
    gem.evt_verdict = v.wrap_evt(evt_verdict)
    try:
        yield
    finally:
        for (m, n), fn in zip(places, saved, strict=True):
            setattr(m, n, fn)
        gem.evt_verdict = evt_verdict


# ----------------------------------------------------------------------------------------------
# A mutant put in place.
# ----------------------------------------------------------------------------------------------
class NotRecompiled(Exception):
    """The mutant is where no single function can be recompiled to hold it."""


def _holder(tree: ast.Module, row: int) -> tuple[str | None, ast.stmt]:
    """(class name or None, top-level statement or method) whose lines hold line ``row``."""
    def span(n: ast.stmt) -> range:
        decorators = getattr(n, "decorator_list", [])
        first = min([n.lineno, *(d.lineno for d in decorators)])
        return range(first, (n.end_lineno or n.lineno) + 1)
    for node in tree.body:
        if row not in span(node):
            continue
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if row in span(item) and isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    return node.name, item
            raise NotRecompiled(f"line {row} is in the body of class {node.name}")
        return None, node
    raise NotRecompiled(f"line {row} is in no statement")


def _segment(source: str, node: ast.stmt) -> str:
    lines = source.splitlines(keepends=True)
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return textwrap.dedent("".join(lines[first - 1:node.end_lineno]))


def _named(tree: ast.Module, cls: str | None, name: str) -> ast.stmt:
    body = tree.body
    if cls is not None:
        (c,) = [n for n in body if isinstance(n, ast.ClassDef) and n.name == cls]
        body = c.body
    (node,) = [n for n in body if getattr(n, "name", None) == name]
    return node


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [t.id for t in targets if isinstance(t, ast.Name)]
    raise NotRecompiled(f"a {type(node).__name__} at module level")


def replacements(module: ModuleType, original: str, mutated: str,
                 row: int) -> list[tuple[Any, Any, Any]]:
    """(holder, name, new value) that put the mutant of line ``row`` in place: the function
    or method holding it, or the module-level binding, compiled from the mutated source in
    ``module``'s namespace; each module-level binding also where another module imported it."""
    tree, new_tree = ast.parse(original), ast.parse(mutated)
    cls, node = _holder(tree, row)
    names = _bound_names(node)
    new_node = (_named(new_tree, cls, names[0]) if cls is not None
                else new_tree.body[tree.body.index(node)])
    code = _segment(mutated, new_node)
    if cls is not None and "super()" in code:
        raise NotRecompiled(f"{cls}.{names[0]} calls super()")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(module.__file__), "exec",
                 flags=__future__.annotations.compiler_flag, dont_inherit=True),
         vars(module), namespace)
    if cls is not None:
        holder = getattr(module, cls)
        old_method, new_method = vars(holder)[names[0]], namespace[names[0]]
        return [(holder, names[0], new_method), *_in_tables(module, old_method, new_method)]
    out = []
    for n in names:
        old = getattr(module, n)
        out += [(m, n, namespace[n]) for m in list(sys.modules.values())
                if isinstance(m, ModuleType) and getattr(m, n, None) is old]
    return out


def _in_tables(module: ModuleType, old: Any, new: Any) -> list[tuple[Any, Any, Any]]:
    """(table, key, ``new``) for each dispatch table of ``module`` (a dict at module level or
    in a class body, such as MM._mmuext_handlers) that holds ``old``: the mutant must be
    called from there too."""
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and c.__module__ == module.__name__]
    tables = [t for space in (vars(module), *map(vars, classes)) for t in space.values()
              if isinstance(t, dict)]
    return [(t, k, new) for t in tables for k, f in list(t.items()) if f is old]


def _get(holder: Any, name: Any) -> Any:
    if isinstance(holder, dict):
        return holder[name]
    return vars(holder)[name] if isinstance(holder, type) else getattr(holder, name)


def _set(holder: Any, name: Any, value: Any) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)


@contextmanager
def applied(changes: list[tuple[Any, Any, Any]]) -> Iterator[None]:
    """The changes (holder: a module, class or table; name or key; new value) in place for
    the block, and the old values back after it."""
    saved = [(h, n, _get(h, n)) for h, n, _ in changes]
    for h, n, value in changes:
        _set(h, n, value)
    try:
        yield
    finally:
        for h, n, value in reversed(saved):
            _set(h, n, value)


class Timeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise Timeout
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------------
def judge(checks: list[tuple[str, Check]], v: Verdicts) -> str | None:
    """The first check that fails, with its problem; None if all pass."""
    for key, check in checks:
        v.current = key + f"#{id(check)}"
        try:
            problem = check().problem
        except Timeout:
            raise
        except Exception as e:  # the machine the check starts from cannot be built any more
            problem = f"building its machine raised {type(e).__name__}: {e}"
        if problem is not None:
            return f"{key}: {problem}"
    return None


def _result(outcome: TestOutcome, output: str, diff: str) -> WorkResult:
    return WorkResult(output=output, diff=diff, test_outcome=outcome,
                      worker_outcome=WorkerOutcome.NORMAL)


def _not_run(output: str) -> WorkResult:
    return WorkResult(output=output, test_outcome=TestOutcome.INCOMPETENT,
                      worker_outcome=WorkerOutcome.SKIPPED)


def judge_one(module: ModuleType, original: str, item: Any, checks: list[tuple[str, Check]],
              v: Verdicts, timeout: float) -> tuple[WorkResult, str]:
    (spec,) = item.mutations
    operator = cosmic_ray.plugins.get_operator(spec.operator_name)(
        **getattr(spec, "operator_args", {}))
    mutated = mutate_code(original, operator, spec.occurrence)
    if mutated is None:
        return WorkResult(worker_outcome=WorkerOutcome.NO_TEST), "no mutation"
    diff = "".join(difflib.unified_diff(original.splitlines(keepends=True),
                                        mutated.splitlines(keepends=True), n=0))
    try:
        changes = replacements(module, original, mutated, spec.start_pos[0])
    except (NotRecompiled, SyntaxError, ValueError) as e:  # SyntaxError: a mutant that
        return _not_run(f"not run: {e}"), f"not run ({e})"  # does not compile alone
    try:
        with applied(changes), time_limit(timeout):
            killer = judge(checks, v)
    except Timeout:
        return _result(TestOutcome.KILLED, "timeout", diff), "killed by timeout"
    if killer is None:
        return _result(TestOutcome.SURVIVED, "", diff), "survived"
    return _result(TestOutcome.KILLED, killer, diff), "killed by " + killer.split(":")[0]


def run(session: Path, key: str, timeout: float) -> int:
    module, make = MODULES[key]
    original = Path(str(module.__file__)).read_text()
    v = Verdicts()
    with reused_verdicts(v):
        start = time.monotonic()
        print(f"finding the states of {key}.py's branch checks ...", flush=True)
        checks = make()
        print(f"{len(checks)} checks ({time.monotonic() - start:.0f} s); running them on the "
              "unmutated model", flush=True)
        failing = {k for k, c in checks if judge([(k, c)], v) is not None}
        if failing:
            print(f"left out, failing on the unmutated model: {sorted(failing)}")
        checks = [(k, c) for k, c in checks if k not in failing]
        with use_db(str(session), WorkDB.Mode.open) as db:
            items = list(db.pending_work_items)
            for i, item in enumerate(items, 1):
                t0 = time.monotonic()
                result, said = judge_one(module, original, item, checks, v, timeout)
                db.set_result(item.job_id, result)
                (spec,) = item.mutations
                print(f"[{i}/{len(items)}] line {spec.start_pos[0]} {spec.operator_name} "
                      f"#{spec.occurrence}: {said} ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"solver asked {v.asked} times, verdicts reused {v.reused} times")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", type=Path, help="a cosmic-ray session (sqlite), initialised")
    p.add_argument("module", choices=sorted(MODULES), help="the module its mutants are of")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a mutant may run its checks (default 600)")
    a = p.parse_args(argv)
    if not a.session.is_file():
        print(f"branch_judge: {a.session}: no such session", file=sys.stderr)
        return 2
    return run(a.session, a.module, a.timeout)


if __name__ == "__main__":
    sys.exit(main())

"""The pytest plugin of the conformance suite (entry point ``pytest11``).

Adds ``--implementation`` (which implementation the suite runs against; the reference model by
default) and ``--conformance-report`` (where the JSON report goes), the ``clauses`` marker a
conformance test names its clauses with, the fixtures that hand a test a fresh implementation
at the level it needs (``guest_impl``, ``hv_impl``) and the reference model (``reference``),
and, at the end of a session that ran conformance tests, the summary: clauses covered, passed,
failed and skipped. A failing test's report names its clauses.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance import coverage
from xenspec.conformance.adapter import GuestLevel, HypercallLevel, describe
from xenspec.conformance.loader import ImplementationError, load
from xenspec.spec.clauses import BY_ID, CLAUSES, Kind

DEFAULT_REPORT = Path(os.environ.get("XENSPEC_CACHE_DIR", ".xenspec-cache")) / "conformance.json"
_STATE = pytest.StashKey["_Session"]()


class _Session:
    def __init__(self, spec: str, report: Path) -> None:
        self.spec = spec
        self.report = report
        self._factory: Callable[[], object] | None = None
        self.name = spec
        self.results: list[dict[str, Any]] = []

    def factory(self) -> Callable[[], object]:
        if self._factory is None:
            try:
                self._factory = load(self.spec)
            except ImplementationError as exc:
                raise pytest.UsageError(f"--implementation: {exc}") from None
        return self._factory

    def fresh(self) -> object:
        try:
            impl = self.factory()()
        except pytest.UsageError:
            raise
        except Exception as exc:
            raise pytest.UsageError(
                f"--implementation={self.spec}: the factory failed: {exc}") from None
        self.name = describe(impl)
        return impl


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xenspec", "xenspec conformance suite")
    group.addoption(
        "--implementation", default="reference", metavar="IMPL",
        help="the implementation under test: module:factory, an entry-point name of group "
             "xenspec.implementations, or a command template with {elf} (guest level). "
             "Default: reference (the reference model).")
    group.addoption(
        "--conformance-report", default=str(DEFAULT_REPORT), metavar="PATH",
        help="where to write the JSON report of a conformance run (default %(default)s).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "clauses(*ids): the specification clauses (xenspec.spec.clauses) a "
                   "conformance test exercises")
    config.stash[_STATE] = _Session(config.getoption("--implementation"),
                                    Path(config.getoption("--conformance-report")))


def clauses_of(item: pytest.Item) -> list[str]:
    marker = item.get_closest_marker("clauses")
    return list(marker.args) if marker else []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Conformance modules may set RUN_ORDER (default 0): the directed tests run first, so that
    # the first failures an implementation sees name its broken rule most precisely.
    items.sort(key=lambda item: getattr(getattr(item, "module", None), "RUN_ORDER", 0))
    for item in items:
        unknown = [c for c in clauses_of(item) if c not in BY_ID]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown clause(s) {', '.join(unknown)}")


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def guest_impl(request: pytest.FixtureRequest) -> GuestLevel:
    """A fresh implementation offering the guest level (the test is skipped otherwise)."""
    impl = request.config.stash[_STATE].fresh()
    if not isinstance(impl, GuestLevel):
        pytest.skip(f"{describe(impl)} does not offer the guest level")
    return impl


@pytest.fixture
def hv_impl(request: pytest.FixtureRequest) -> HypercallLevel:
    """A fresh implementation offering the hypercall level (the test is skipped otherwise)."""
    impl = request.config.stash[_STATE].fresh()
    if not isinstance(impl, HypercallLevel):
        pytest.skip(f"{describe(impl)} does not offer the hypercall level")
    return impl


@pytest.fixture
def hv_factory(request: pytest.FixtureRequest) -> Callable[[], HypercallLevel]:
    """Makes fresh hypercall-level implementations (for tests that need several machines)."""
    state = request.config.stash[_STATE]
    if not isinstance(state.fresh(), HypercallLevel):
        pytest.skip(f"{state.name} does not offer the hypercall level")
    return state.factory()  # type: ignore[return-value]


# --- outcomes, messages, summary ---------------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    _not_offered_is_a_skip(item, call, report)
    clauses = clauses_of(item)
    if not clauses:
        return
    if report.failed:
        titles = "\n".join(f"  {c}: {BY_ID[c].title}  [{BY_ID[c].source}]" for c in clauses)
        report.sections.append(("specification clauses of this test", titles))
    if report.when == "call" or (report.when == "setup" and not report.passed):
        state: _Session = item.config.stash[_STATE]
        record = {"nodeid": item.nodeid, "outcome": report.outcome, "clauses": clauses,
                  "duration": round(report.duration, 4)}
        if report.failed:
            record["message"] = _crash_message(report)
        state.results.append(record)


def _not_offered_is_a_skip(item: pytest.Item, call: pytest.CallInfo[None],
                           report: pytest.TestReport) -> None:
    """An adapter method raising NotImplementedError says the implementation does not offer
    that part of its level (a hypercall, a query): the test is skipped with its message."""
    if call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError):
        path, line, _ = item.location
        report.outcome = "skipped"
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {call.excinfo.value}")


def _crash_message(report: pytest.TestReport) -> str:
    """The failure's own message (the assertion text), at most a few hundred characters."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1:]
    return str(text)[:600]


def _per_clause(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    table = {c.id: {"tests": 0, "passed": 0, "failed": 0, "skipped": 0,
                    "hits": coverage.HITS.get(c.id, 0)} for c in CLAUSES}
    for r in results:
        for cid in r["clauses"]:
            table[cid]["tests"] += 1
            table[cid][r["outcome"]] += 1
    return table


def _write_report(state: _Session, table: dict[str, dict[str, int]]) -> None:
    doc = {"implementation": state.name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "tests": state.results, "clauses": table, "hypercalls": dict(coverage.CALLS),
           "not_evaluated": dict(coverage.NOT_EVALUATED)}
    try:
        state.report.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.report.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        tmp.replace(state.report)
    except OSError as exc:
        print(f"xenspec: cannot write the conformance report {state.report}: {exc}")


def pytest_sessionstart(session: pytest.Session) -> None:
    coverage.reset()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state: _Session = config.stash[_STATE]
    if not state.results:
        return
    table = _per_clause(state.results)
    _write_report(state, table)
    tr = terminalreporter
    tr.section(f"xenspec conformance: {state.name}")
    for kind in Kind:
        rows = [(cid, t) for cid, t in table.items() if BY_ID[cid].kind is kind]
        covered = [cid for cid, t in rows if t["tests"]]
        failed = [cid for cid, t in rows if t["failed"]]
        passed = [cid for cid, t in rows if t["tests"] and t["passed"] == t["tests"]]
        skipped = [cid for cid, t in rows if t["tests"] and t["skipped"] == t["tests"]]
        tr.write_line(f"{kind.value + 's':11} {len(covered):3}/{len(rows)} covered, "
                      f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
        for cid in failed:
            t = table[cid]
            tr.write_line(f"    FAILED {cid}: {t['failed']} of {t['tests']} tests "
                          f"({BY_ID[cid].title})", red=True)
        missing = [cid for cid, t in rows if not t["tests"]]
        if missing:
            tr.write_line(f"    not covered: {', '.join(missing)}", yellow=True)
        for cid, why in coverage.NOT_EVALUATED.items():
            if cid in BY_ID and BY_ID[cid].kind is kind:
                tr.write_line(f"    not evaluated: {cid}: {why}", yellow=True)
    tr.write_line(f"report: {state.report}")

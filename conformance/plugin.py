"""The pytest plugin of the conformance suite (entry point ``pytest11``).

Adds ``--implementation`` (which implementation the suite runs against; the reference model by
default), ``--xen-profile`` (strict Xen 3.0.4 or 3.0.4 with the later fixes the model follows,
``xenspec.conformance.profiles``), ``--abi`` (the ABI profile the guest-level tests build their
kernels for and the reference model boots them with: ``native-3.0.4``, the default, or
``compat-pae``, a 32-bit PAE guest on a 64-bit Xen 4.x; spec/abi_profiles.py) and
``--conformance-report`` (where the JSON record goes), the
``clauses`` marker a conformance test names its clauses with, the ``needs`` marker naming what
it needs of an implementation beyond its level (``xenspec.conformance.adapter.OFFERINGS``) and
the ``fix`` marker naming the later Xen fixes its expected outcome depends on, the fixtures that
hand a test a fresh implementation at the level it needs (``guest_impl``, ``hv_impl``,
``hv_factory``; every adapter call checked, ``xenspec.conformance.checked``), and, at the end
of a session that ran conformance tests, the summary and the record.

No false greens:

- the implementation is loaded once, before any test runs (when the session starts if
  ``--implementation`` is given): a name that does not resolve, a factory that raises or a
  malformed ``offers`` declaration is one usage error (exit 4), one line;
- a test needing what the implementation does not offer is *not offered* (a skip, never a
  pass); a test marked with a fix the profile lacks is *not applicable* (likewise); one
  needing what it offers but whose adapter lacks a method is an error naming it,
  and so is an adapter call that raises or returns the wrong type;
- a failure is charged to the clauses whose check failed (``checks.attribute``), and the
  summary reports each clause passed, failed, error, unfinished, skipped or not offered;
- a run in which no conformance test was checked (every one skipped or not offered) fails.

The record (``--conformance-report``; by default the one the documentation's traceability
matrix reads) is written by a *complete* run only: the implementation loaded, every test of
every module of the suite collected and none deselected (no ``-k``, ``-m``, ``--lf`` or node
ids), and each one run to an outcome (no ``-x``/``--maxfail`` stop, no interrupt). A partial
run writes only a report path given explicitly on the command line, marked
``"complete": false``; so does a run under ``--abi compat-pae``, whose record is not the
native specification's (the hypercall-level tests, which are the native profile's, are
skipped in it with that reason).

In a parallel run (pytest-xdist, ``-n``) each worker process runs part of the suite: at its
end it hands its records, what it collected and its coverage counts to the controlling
process (``workeroutput``), which merges them and judges, summarises and writes the record
once, exactly as a single process does. A worker that dies leaves its tests unrun, and the
run is then not complete.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, cast

import pytest

from xenspec.conformance import coverage, profiles
from xenspec.conformance.adapter import (
    OFFERINGS,
    GuestLevel,
    HypercallLevel,
    OffersError,
    describe,
    missing,
)
from xenspec.conformance.checked import AdapterError, Checked
from xenspec.conformance.checks import ClauseFailure, attribute
from xenspec.conformance.loader import ImplementationError, load
from xenspec.spec.clauses import BY_ID, CLAUSES, Kind

WORKER_KEY = "xenspec_conformance"  # the plugin's entry in an xdist worker's workeroutput
DEFAULT_REPORT = Path(os.environ.get("XENSPEC_CACHE_DIR", ".xenspec-cache")) / "conformance.json"
_STATE = pytest.StashKey["_Session"]()


SUITE = Path(__file__).resolve().parent
FIXTURE_NEEDS = {"guest_impl": "guest", "hv_impl": "hypercall", "hv_factory": "hypercall"}
NOT_OFFERED = "not offered: "
NOT_APPLICABLE = "not applicable under profile "
DEFAULT_ABI = "native-3.0.4"
ABIS = (DEFAULT_ABI, "compat-pae")  # spec/abi_profiles.py PROFILES
NATIVE_LEVEL_ONLY = ("the hypercall level is specified for the native-3.0.4 profile only; "
                     "under --abi {abi} only the guest-level tests run")
CHECKED = ("passed", "failed", "error")  # outcomes of a test that ran against the implementation


class _Session:
    def __init__(self, spec: str, report: Path, explicit: bool,
                 profile: str = profiles.DEFAULT, abi: str = DEFAULT_ABI) -> None:
        self.spec = spec
        self.profile = profile
        self.abi = abi
        self.report = report
        self.explicit = explicit  # --conformance-report given on the command line
        self._factory: Callable[[], object] | None = None
        self.probe: object = None  # the implementation made when loading, for its methods
        self.offers: frozenset[str] = frozenset()
        self.name = spec
        self.results: list[dict[str, Any]] = []
        self.items: list[str] = []  # the conformance tests collected
        self.deselected = 0
        self.partial_args = False
        self.modules_missing: list[str] = []
        self.summary: list[tuple[str, dict[str, bool]]] = []
        # Per test module: the hypercalls (by name) and their clauses issued while its tests
        # ran, the guest kernels' own included; the documented contract must name each.
        self.issued: dict[str, dict[str, Counter[str]]] = {}
        self.workers = 0  # parallel workers whose part was merged (pytest-xdist controller)

    @property
    def loaded(self) -> bool:
        return self._factory is not None or self.workers > 0

    def export(self) -> str:
        """What a parallel worker ran and saw, for the controlling process (``merge``)."""
        return json.dumps({
            "loaded": self._factory is not None, "name": self.name,
            "offers": sorted(self.offers), "results": self.results, "items": self.items,
            "deselected": self.deselected, "partial_args": self.partial_args,
            "modules_missing": self.modules_missing,
            "issued": {m: {k: dict(v) for k, v in t.items()} for m, t in self.issued.items()},
            "hits": dict(coverage.HITS), "calls": dict(coverage.CALLS),
            "not_evaluated": coverage.NOT_EVALUATED})

    def merge(self, text: str) -> None:
        """Add one worker's part (``export``): its records, the tests it collected (every
        worker collects the whole session), its coverage counts."""
        part = json.loads(text)
        self.workers += 1
        if part["loaded"]:
            self.name, self.offers = part["name"], frozenset(part["offers"])
        self.results += part["results"]
        self.items = list(dict.fromkeys([*self.items, *part["items"]]))
        self.deselected = max(self.deselected, part["deselected"])
        self.partial_args = self.partial_args or part["partial_args"]
        self.modules_missing = sorted({*self.modules_missing, *part["modules_missing"]})
        for module, kinds in part["issued"].items():
            mine = self.issued.setdefault(module, {"hypercalls": Counter(),
                                                   "clauses": Counter()})
            for kind, counts in kinds.items():
                mine[kind].update(counts)
        coverage.HITS.update(part["hits"])
        coverage.CALLS.update(part["calls"])
        coverage.NOT_EVALUATED.update(part["not_evaluated"])

    def load(self) -> None:
        """Find the factory and make one implementation; every way this fails is one usage
        error (exit 4), raised once, before any test runs."""
        try:
            factory = load(self.spec)
        except ImplementationError as exc:
            raise pytest.UsageError(f"--implementation: {exc}") from None
        try:
            impl = factory()
        except Exception as exc:
            raise pytest.UsageError(f"--implementation={self.spec}: the factory failed: "
                                    f"{_one_line(exc)}") from None
        try:
            self.offers = Checked(impl).offers
        except OffersError as exc:
            raise pytest.UsageError(f"--implementation={self.spec}: {describe(impl)} "
                                    f"declares {exc}") from None
        self._set_abi(impl)
        self.name = describe(impl)
        self.probe = impl
        self._factory = factory

    def _set_abi(self, impl: object) -> None:
        """Tell an implementation that has an ``abi`` attribute (the reference model and its
        broken variants) which ABI profile to boot guests with (``--abi``)."""
        if hasattr(impl, "abi"):
            impl.abi = self.abi

    def fresh(self) -> Checked:
        """A fresh implementation, every call checked; a factory that fails now is an
        adapter error of the test."""
        assert self._factory is not None
        try:
            impl = self._factory()
        except Exception as exc:
            raise AdapterError("the factory", _one_line(exc)) from exc
        self._set_abi(impl)
        return Checked(impl)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xenspec", "xenspec conformance suite")
    group.addoption(
        "--implementation", default="reference", metavar="IMPL",
        help="the implementation under test: module:factory, an entry-point name of group "
             "xenspec.implementations, or a command template with {elf} (guest level). "
             "Default: reference (the reference model).")
    group.addoption(
        "--xen-profile", default=profiles.DEFAULT, metavar="PROFILE",
        help=f"the Xen the implementation is: {' or '.join(profiles.PROFILES)} (default "
             f"{profiles.DEFAULT}, what the reference model implements). Under 3.0.4 a test "
             "marked with a later fix is reported as not applicable.")
    group.addoption(
        "--abi", default=DEFAULT_ABI, choices=ABIS,
        help="the ABI profile of the guest-level tests (spec/abi_profiles.py): native-3.0.4 "
             "(default), or compat-pae, a 32-bit PAE guest on a 64-bit Xen 4.x: the guest "
             "kernels are built for it, the reference model boots them so, the kernels that "
             "are native-only are skipped, and so are the hypercall-level tests.")
    group.addoption(
        "--clauses", default=None, metavar="ID,ID",
        help="run only the tests whose clauses marker names one of these clauses (the others "
             "are deselected, and the run is partial)")
    group.addoption(
        "--conformance-report", default=None, metavar="PATH",
        help=f"where to write the JSON record of a conformance run (default {DEFAULT_REPORT}, "
             "written by complete runs only; a path given here is also written by a partial "
             "run, marked incomplete).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "clauses(*ids): the specification clauses (xenspec.spec.clauses) a "
                   "conformance test exercises")
    config.addinivalue_line(
        "markers", "needs(*offerings): what a conformance test needs an implementation to "
                   f"offer besides its level ({', '.join(OFFERINGS)})")
    config.addinivalue_line(
        "markers", "fix(*ids): the later Xen fixes (xenspec.conformance.profiles.FIXES) a "
                   "conformance test's expected outcome depends on; not applicable under a "
                   "profile without them")
    profile = config.getoption("--xen-profile", profiles.DEFAULT)
    if profile not in profiles.PROFILES:
        raise pytest.UsageError(f"--xen-profile={profile}: unknown profile; known: "
                                f"{', '.join(profiles.PROFILES)}")
    report = config.getoption("--conformance-report")
    config.stash[_STATE] = _Session(config.getoption("--implementation"),
                                    Path(report) if report else DEFAULT_REPORT, bool(report),
                                    profile, config.getoption("--abi", DEFAULT_ABI))


def clauses_of(item: pytest.Item) -> list[str]:
    marker = item.get_closest_marker("clauses")
    return list(marker.args) if marker else []


def fixes_of(item: pytest.Item) -> list[str]:
    """The later fixes a test's expected outcome depends on (its ``fix`` marks)."""
    out: list[str] = []
    for marker in item.iter_markers("fix"):
        out += marker.args
    return list(dict.fromkeys(out))


def needs_of(item: pytest.Item) -> list[str]:
    """What a test needs the implementation to offer: its level and its ``needs`` marks."""
    fixtures = getattr(item, "fixturenames", ())
    out = [need for fixture, need in FIXTURE_NEEDS.items() if fixture in fixtures]
    for marker in item.iter_markers("needs"):
        out += marker.args
    return list(dict.fromkeys(out))


def _is_conformance(item: pytest.Item) -> bool:
    return bool(needs_of(item) or clauses_of(item))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Conformance modules may set RUN_ORDER (default 0): the directed tests run first, so that
    # the first failures an implementation sees name its broken rule most precisely.
    items.sort(key=lambda item: getattr(getattr(item, "module", None), "RUN_ORDER", 0))
    for item in items:
        unknown = [c for c in clauses_of(item) if c not in BY_ID]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown clause(s) {', '.join(unknown)}")
        bad = [n for n in needs_of(item) if n not in OFFERINGS]
        if bad:
            raise pytest.UsageError(f"{item.nodeid}: unknown offering(s) {', '.join(bad)}")
        bad = [f for f in fixes_of(item) if f not in profiles.FIXES]
        if bad:
            raise pytest.UsageError(f"{item.nodeid}: unknown fix(es) {', '.join(bad)}")
    _select_clauses(config, items)


def _select_clauses(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--clauses: keep the tests that name one of the clauses; deselect the others."""
    option = config.getoption("--clauses")
    if option is None:
        return
    wanted = {c.strip() for c in option.split(",") if c.strip()}
    unknown = sorted(wanted - set(BY_ID))
    if unknown or not wanted:
        raise pytest.UsageError(f"--clauses={option}: unknown clause(s) {', '.join(unknown)}"
                                if unknown else "--clauses: no clause given")
    keep = [i for i in items if wanted & set(clauses_of(i))]
    dropped = [i for i in items if not wanted & set(clauses_of(i))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        state = items[0].config.stash[_STATE]
        state.deselected += sum(_is_conformance(i) for i in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    state: _Session = session.config.stash[_STATE]
    mine = [i for i in session.items if _is_conformance(i)]
    if not mine:
        return
    state.items = [i.nodeid for i in mine]
    collected = {Path(str(i.path)).resolve() for i in mine}
    state.modules_missing = sorted(p.name for p in SUITE.glob("test_*.py") if p not in collected)
    state.partial_args = (any("::" in str(a) for a in session.config.args)
                          or session.config.getoption("--clauses") is not None)
    if not state.loaded:
        state.load()


def pytest_sessionstart(session: pytest.Session) -> None:
    coverage.reset()
    state: _Session = session.config.stash[_STATE]
    if state.spec != "reference":
        # Named on the command line: load it now, so that a name that does not resolve or a
        # factory that fails is the run's one line (pytest prints a usage error alone
        # before the session has started).
        state.load()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state: _Session = item.config.stash[_STATE]
    if _is_conformance(item):
        why = profiles.not_applicable(state.profile, tuple(fixes_of(item)))
        if why:
            pytest.skip(why)
    needs = needs_of(item)
    if state.abi != DEFAULT_ABI and "hypercall" in needs:
        pytest.skip(NATIVE_LEVEL_ONLY.format(abi=state.abi))
    if not needs:
        return
    coverage.LAST = ""
    if not state.loaded:  # collected by a session that did not call collection_finish
        state.load()
    absent = [n for n in needs if n not in state.offers]
    if absent:
        pytest.skip(NOT_OFFERED + "; ".join(f"{n} ({OFFERINGS[n]})" for n in absent))
    for need in needs:
        lacking = missing(state.probe, need)
        if lacking:
            raise AdapterError(lacking[0], f"{state.name} offers {need!r} but has no "
                                           f"{', '.join(repr(m) for m in lacking)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    calls, hits = Counter(coverage.CALLS), Counter(coverage.HITS)
    yield
    if not _is_conformance(item):
        return
    mine = item.config.stash[_STATE].issued.setdefault(
        Path(str(item.path)).stem, {"hypercalls": Counter(), "clauses": Counter()})
    mine["hypercalls"].update(coverage.CALLS - calls)
    mine["clauses"].update({c: n for c, n in (coverage.HITS - hits).items()
                            if c in BY_ID and BY_ID[c].kind is Kind.hypercall})


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def guest_impl(request: pytest.FixtureRequest) -> GuestLevel:
    """A fresh implementation offering the guest level (the test is not offered otherwise)."""
    return cast(GuestLevel, request.config.stash[_STATE].fresh())


@pytest.fixture
def hv_impl(request: pytest.FixtureRequest) -> HypercallLevel:
    """A fresh implementation offering the hypercall level (not offered otherwise)."""
    return cast(HypercallLevel, request.config.stash[_STATE].fresh())


@pytest.fixture
def hv_factory(request: pytest.FixtureRequest) -> Callable[[], HypercallLevel]:
    """Makes fresh hypercall-level implementations (for tests that need several machines)."""
    state: _Session = request.config.stash[_STATE]
    return lambda: cast(HypercallLevel, state.fresh())


# --- outcomes, messages, summary ---------------------------------------------------------------
def _adapter_error(exc: BaseException | None) -> AdapterError | None:
    """The adapter error behind an exception, if one is (its cause or context chain)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, AdapterError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    _not_offered_is_a_skip(item, call, report)
    if not _is_conformance(item) or report.when == "teardown":
        return
    if report.when == "setup" and report.passed:
        return
    clauses = clauses_of(item)
    record: dict[str, Any] = {"nodeid": item.nodeid, "clauses": clauses, "charged": [],
                              "duration": round(report.duration, 4)}
    if report.skipped:
        reason = _skip_reason(report)
        record["outcome"] = ("not offered" if reason.startswith(NOT_OFFERED) else
                             "not applicable" if reason.startswith(NOT_APPLICABLE) else
                             "skipped")
        record["message"] = reason
    elif report.passed:
        record["outcome"] = "passed"
    else:
        exc = call.excinfo.value if call.excinfo else None
        adapter = _adapter_error(exc)
        record["message"] = _crash_message(report)
        if adapter is not None and (report.when == "setup" or exc is adapter):
            # An implementation that fails while carrying out a hypercall fails that
            # hypercall's clause: the error is charged to it.
            in_flight = adapter.method == "hypercall" and coverage.LAST
            record.update(outcome="error", method=adapter.method, message=str(adapter),
                          charged=[coverage.LAST] if in_flight else [],
                          attribution="hypercall in flight" if in_flight else "")
            report.sections.append(("adapter error", str(adapter)))
        else:
            charged, how = attribute(exc, clauses) if exc is not None else (tuple(clauses),
                                                                             "test")
            record.update(outcome="failed", charged=list(charged), attribution=how)
            titles = "\n".join(f"  {c}: {BY_ID[c].title}  [{BY_ID[c].source}]"
                               for c in charged if c in BY_ID)
            others = [c for c in clauses if c not in charged]
            report.sections.append((f"charged to (found by {how})", titles))
            if others:
                report.sections.append(("other clauses of this test, not judged",
                                        "  " + ", ".join(others)))
    item.config.stash[_STATE].results.append(record)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _not_offered_is_a_skip(item: pytest.Item, call: pytest.CallInfo[None],
                           report: pytest.TestReport) -> None:
    """An adapter method raising NotImplementedError says the implementation does not offer
    that part of its level (a hypercall, a query): the test is reported as not offered, with
    the adapter's message (never as passed; a run where nothing else was checked fails)."""
    if call.excinfo is None:
        return
    exc = call.excinfo.value
    if isinstance(exc, AdapterError) and isinstance(exc.__cause__, NotImplementedError):
        exc = exc.__cause__
    if isinstance(exc, NotImplementedError):
        path, line, _ = item.location
        report.outcome = "skipped"
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {NOT_OFFERED}{exc}")


def _crash_message(report: pytest.TestReport) -> str:
    """The failure's own message (the assertion text), at most a few hundred characters."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1:]
    for ours in (ClauseFailure, AdapterError):
        text = str(text).removeprefix(f"{ours.__module__}.{ours.__name__}: ")
    return str(text)[:600]


STATUSES = ("failed", "error", "passed", "unfinished", "skipped", "not offered",
            "not applicable", "not covered")


def _per_clause(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per clause: its tests and what became of them. A failure counts for the clauses it is
    charged to, and so does an adapter error charged to the hypercall in flight; the test's
    other clauses count it as unfinished (not judged)."""
    table: dict[str, dict[str, Any]] = {
        c.id: {"tests": 0, "passed": 0, "failed": 0, "error": 0, "unfinished": 0,
               "skipped": 0, "not_offered": 0, "not_applicable": 0,
               "hits": coverage.HITS.get(c.id, 0)}
        for c in CLAUSES}
    for r in results:
        charged = [c for c in r.get("charged", []) if c in table]
        for cid in dict.fromkeys([*r["clauses"], *charged]):
            t = table[cid]
            t["tests"] += 1
            if r["outcome"] == "failed":
                t["failed" if cid in charged else "unfinished"] += 1
            elif r["outcome"] == "error" and charged:
                t["error" if cid in charged else "unfinished"] += 1
            else:
                t[r["outcome"].replace(" ", "_")] += 1
    for t in table.values():
        t["status"] = _status(t)
    return table


def _status(t: dict[str, Any]) -> str:
    if t["failed"]:
        return "failed"
    if t["error"]:
        return "error"
    if t["passed"]:
        return "passed"
    if t["unfinished"]:
        return "unfinished"
    if t["skipped"]:
        return "skipped"
    if t["not_offered"]:
        return "not offered"
    if t["not_applicable"]:
        return "not applicable"
    return "not covered"


def _complete(state: _Session, session: pytest.Session, exitstatus: int) -> list[str]:
    """Why the run is not complete (nothing: it is)."""
    why = []
    if state.deselected:
        why.append(f"{state.deselected} tests deselected")
    if state.partial_args:
        why.append("tests chosen by node id")
    if state.modules_missing:
        why.append(f"not collected: {', '.join(state.modules_missing)}")
    ran = {r["nodeid"] for r in state.results}
    unrun = [n for n in state.items if n not in ran]
    if unrun:
        why.append(f"{len(unrun)} tests not run")
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail:
        why.append("the run was stopped")
    return why


def _write_report(state: _Session, table: dict[str, dict[str, Any]], complete: bool) -> None:
    doc = {"implementation": state.name, "spec": state.spec, "offers": sorted(state.offers),
           "profile": state.profile, "abi": state.abi,
           "fixes": sorted(profiles.PROFILES[state.profile]),
           "complete": complete, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "tests": state.results, "clauses": table, "hypercalls": dict(coverage.CALLS),
           "not_evaluated": dict(coverage.NOT_EVALUATED),
           "issued": {m: {k: dict(v) for k, v in t.items()}
                      for m, t in sorted(state.issued.items())}}
    try:
        state.report.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.report.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        tmp.replace(state.report)
    except OSError as exc:
        print(f"xenspec: cannot write the conformance report {state.report}: {exc}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist, in the controlling process: a worker finished; merge its part."""
    part = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if part is not None:
        node.config.stash[_STATE].merge(part)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the record and make up the summary; a run that checked nothing fails. A
    parallel worker only hands its part to the controlling process, which does this."""
    state: _Session = session.config.stash[_STATE]
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_KEY] = state.export()
        return
    if not state.results or not state.loaded:
        return
    table = _per_clause(state.results)
    incomplete = _complete(state, session, exitstatus)
    out = state.summary
    fixes = profiles.PROFILES[state.profile]
    if state.abi != DEFAULT_ABI:
        out.append((f"ABI profile {state.abi}: guest-level tests only", {}))
    out.append((f"profile {state.profile}: "
                + (f"Xen 3.0.4 with the later fixes {', '.join(sorted(fixes))}" if fixes else
                   "Xen 3.0.4 as released; tests of a later fix are not applicable"), {}))
    for kind in Kind:
        rows = {cid: t for cid, t in table.items() if BY_ID[cid].kind is kind}
        tally = Counter(t["status"] for t in rows.values())
        out.append((f"{kind.value + 's':11} " + ", ".join(
            f"{tally[s]} {s}" for s in STATUSES if tally[s] or s in ("passed", "failed"))
            + f" (of {len(rows)})", {}))
        for cid, t in rows.items():
            if t["status"] == "failed":
                out.append((f"    FAILED {cid}: {t['failed']} of {t['tests']} tests "
                            f"({BY_ID[cid].title})", {"red": True}))
            elif t["status"] == "error":
                out.append((f"    ERROR  {cid}: {t['error']} of {t['tests']} tests",
                            {"red": True}))
        for status in ("unfinished", "skipped", "not offered", "not applicable",
                       "not covered"):
            named = [cid for cid, t in rows.items() if t["status"] == status]
            if named:
                out.append((f"    {status}: {', '.join(named)}", {"yellow": True}))
        for cid, why in coverage.NOT_EVALUATED.items():
            if cid in rows:
                out.append((f"    not evaluated: {cid}: {why}", {"yellow": True}))
    errors = Counter(r.get("method", "") for r in state.results if r["outcome"] == "error")
    for method, n in errors.items():
        first = next(r["message"] for r in state.results if r.get("method") == method)
        out.append((f"adapter error, {n} tests: {first.splitlines()[0][:200]}", {"red": True}))
    na = [r for r in state.results if r["outcome"] == "not applicable"]
    if na:
        out.append((f"not applicable under profile {state.profile}, {len(na)} tests: "
                    + ", ".join(f"{r['nodeid'].split('::')[-1]} "
                                f"({r['message'].rsplit('(', 1)[-1]}" for r in na),
                    {"yellow": True}))
    outcomes = Counter(r["outcome"] for r in state.results)
    out.append(("tests: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())), {}))
    if not any(outcomes[o] for o in CHECKED):
        out.append((f"NOTHING WAS CHECKED against {state.name}: every conformance test was "
                    "skipped or not offered; the run fails", {"red": True, "bold": True}))
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.abi != DEFAULT_ABI:
        incomplete.append(f"--abi {state.abi}")
    if not incomplete or state.explicit:
        _write_report(state, table, not incomplete)
        out.append((f"record: {state.report}"
                    + ("" if not incomplete else f" (partial run: {'; '.join(incomplete)})"),
                    {}))
    else:
        out.append((f"record not written (partial run: {'; '.join(incomplete)}); "
                    f"{state.report} is unchanged", {"yellow": True}))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state: _Session = config.stash[_STATE]
    if not state.summary:
        return
    terminalreporter.section(f"xenspec conformance: {state.name}")
    for line, markup in state.summary:
        terminalreporter.write_line(line, **markup)

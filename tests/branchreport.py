"""The branch-coverage report of the specification, printed at the end of a test run that
ran the branch checks (tests/test_branches.py; the hooks are registered by tests/conftest.py):
for each transition spec, how many of its named branches a check hit on the model, how many
no state takes (skipped, each with its reason: ``pytest -rs`` lists them), and which failed.
The same figures, from the last run, are in the documentation's traceability matrix
(``branches-last.json``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

# The tests of tests/test_branches.py with one item per branch, id "family branch".
BRANCH_TESTS = ("test_branch_refines", "test_gem_branch_refines",
                "test_gem_event_branch_refines", "test_start_of_day_branch_refines")
OUTCOMES = ("hit", "unreachable", "failed", "open")
_SEEN: dict[str, dict[str, str]] = defaultdict(dict)  # family -> branch -> outcome


def branch_of(nodeid: str) -> tuple[str, str] | None:
    """(family, branch) of a branch check's node id, or None for any other test."""
    path, _, rest = nodeid.partition("::")
    name, _, param = rest.partition("[")
    if not path.endswith("test_branches.py") or name not in BRANCH_TESTS or not param:
        return None
    family, _, branch = param[:-1].partition(" ")
    return family, branch


def outcome_of(report: pytest.TestReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return "open"
    if report.skipped:
        return "unreachable"
    if report.failed:
        return "failed"
    return "hit" if report.when == "call" else None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    key = branch_of(report.nodeid)
    outcome = outcome_of(report)
    if key is None or outcome is None:
        return
    family, branch = key
    if _SEEN[family].get(branch) in (None, "hit"):  # a failure in teardown overrides the call
        _SEEN[family][branch] = outcome


def coverage_lines(seen: dict[str, dict[str, str]]) -> list[str]:
    """The report: a line per spec, then the totals and any branch that failed or is open."""
    lines = []
    totals = dict.fromkeys(OUTCOMES, 0)
    width = max(len(f) for f in seen)
    for family in sorted(seen):
        counts = {o: sum(v == o for v in seen[family].values()) for o in OUTCOMES}
        for o in OUTCOMES:
            totals[o] += counts[o]
        parts = [f"{counts[o]} {o}" for o in OUTCOMES[1:] if counts[o]]
        lines.append(f"{family:<{width}}  {counts['hit']:3d}/{len(seen[family]):<3d} hit"
                     + (f" ({', '.join(parts)})" if parts else ""))
    n = sum(len(v) for v in seen.values())
    lines.append(f"{n} branches of {len(seen)} specs: " +
                 ", ".join(f"{totals[o]} {o}" for o in OUTCOMES))
    lines += [f"{o.upper()}: {f} {b}" for f in sorted(seen) for b, o in sorted(seen[f].items())
              if o in ("failed", "open")]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SEEN:
        return
    terminalreporter.section("branch coverage of the specification")
    for line in coverage_lines(_SEEN):
        terminalreporter.write_line(line)

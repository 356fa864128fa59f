"""The conformance suite's profiles (``--xen-profile``) and its documented contract.

Under the strict Xen 3.0.4 profile every test marked with a later fix is reported as not
applicable (naming the fix), never as passed, and the summary and the record name the profile;
an unknown profile is a usage error. The contract page lists every module of the suite and
every hypercall a run of it issues (``xenspec.docgen.contract``, read from the markers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance import profiles
from xenspec.docgen import contract
from xenspec.sharedfiles import locked, write_atomic

ROOT = Path(__file__).resolve().parent.parent


def run_suite(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the suite (or the modules named in ``args``) as a third party does."""
    report = tmp / "conformance.json"
    where = [] if any(a.startswith("conformance/") for a in args) else ["conformance"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *where, "-q", "-n0", "-p", "no:cacheprovider",
         "--conformance-report", str(report), *args],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "XENSPEC_PROFILE": "quick", "XENSPEC_CACHE_DIR": str(tmp)})
    return run, json.loads(report.read_text()) if report.exists() else {}


def strict_run(tmp: Path) -> tuple[str, dict[str, Any]]:
    run, record = run_suite(tmp, "--xen-profile=3.0.4")
    assert record, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout, record


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The whole suite's run under 3.0.4, once per test run: in a parallel run (xdist) the
    first worker to need it runs it under a lock in the run's shared temporary folder, and
    the others read its result there."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return strict_run(tmp_path_factory.mktemp("strict"))
    shared = tmp_path_factory.getbasetemp().parent / "strict-profile"
    shared.mkdir(exist_ok=True)
    result = shared / "result.json"
    with locked(result):
        if not result.exists():
            write_atomic(result, json.dumps(strict_run(shared)))
        stdout, record = json.loads(result.read_text())
    return stdout, record


def marked() -> dict[str, list[str]]:
    """node id (module file::test, parameters cut) -> the fixes it is marked with."""
    out: dict[str, list[str]] = {}
    for m in contract.contracts():
        for fix, tests in m.fixes.items():
            for t in tests:
                out.setdefault(f"{m.name}.py::{t}", []).append(fix)
    return out


def test_fix_marked_tests_are_not_applicable_under_3_0_4(strict: tuple[str, dict[str, Any]]
                                                         ) -> None:
    stdout, record = strict
    assert record["profile"] == "3.0.4" and record["fixes"] == []
    fixes = marked()
    assert fixes, "no test is marked with a later fix"
    seen = set()
    for r in record["tests"]:
        key = r["nodeid"].removeprefix("conformance/").split("[")[0]
        if key in fixes:
            seen.add(key)
            assert r["outcome"] == "not applicable", r
            assert all(f in r["message"] for f in fixes[key]), r["message"]
            assert r["message"].startswith("not applicable under profile 3.0.4")
        else:
            assert r["outcome"] != "not applicable", r
    assert seen == set(fixes)
    assert "profile 3.0.4: Xen 3.0.4 as released" in stdout
    assert "not applicable under profile 3.0.4" in stdout


def test_the_default_profile_runs_the_fix_marked_tests(tmp_path: Path) -> None:
    run, record = run_suite(tmp_path, "-k", "flipped_writable or through_linear_slot")
    assert run.returncode == 0, run.stdout[-2000:]
    assert record["profile"] == profiles.DEFAULT
    assert {r["outcome"] for r in record["tests"]} == {"passed"}
    assert f"profile {profiles.DEFAULT}: Xen 3.0.4 with the later fixes" in run.stdout


def test_an_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    run, record = run_suite(tmp_path, "--xen-profile=3.0.5", "conformance/test_cpu.py")
    assert run.returncode == 4
    assert "--xen-profile=3.0.5: unknown profile" in run.stderr
    assert not record


def test_the_contract_names_every_hypercall_the_suite_issues(
        strict: tuple[str, dict[str, Any]]) -> None:
    _, record = strict
    documented = {m.name: m for m in contract.contracts()}
    page = contract.contract_include()
    assert set(record["issued"]) <= set(documented)
    for name, m in documented.items():
        assert f"{name}.py" in page.replace("\\_", "_")
        issued = record["issued"].get(name, {"hypercalls": {}, "clauses": {}})
        names = {h for h in issued["hypercalls"] if not h.isdigit()}  # digits: unassigned
        assert names <= {*m.hypercalls, *m.setup}, (name, names - {*m.hypercalls, *m.setup})
        for h in [*m.hypercalls, *m.setup]:
            assert f"``{h}``" in page
            if "hypercall" in m.needs:
                assert h in contract.ARGUMENTS, f"{h}: argument convention not documented"


def test_the_differential_suite_issues_only_what_it_names(tmp_path: Path) -> None:
    run, record = run_suite(tmp_path, "conformance/test_differential.py")
    assert run.returncode == 0, run.stdout[-2000:]
    (m,) = [m for m in contract.contracts() if m.name == "test_differential"]
    issued = record["issued"]["test_differential"]
    assert set(issued["hypercalls"]) <= {*m.hypercalls, *m.setup}


XEN304 = "--implementation=xenspec.conformance.xen304:Xen304"


def test_xen_3_0_4_page_tables_pass_every_unmarked_test_under_3_0_4(tmp_path: Path) -> None:
    """The model with the page-table fixes undone (xen304.py) passes every hypercall-level
    MMU and CPU test under the strict profile: no test lacks its fix marker."""
    run, record = run_suite(tmp_path, XEN304, "--xen-profile=3.0.4", "conformance/test_mmu.py",
                            "conformance/test_cpu.py")
    assert run.returncode == 0, run.stdout[-3000:]
    na = {r["nodeid"].removeprefix("conformance/") for r in record["tests"]
          if r["outcome"] == "not applicable"}
    assert na == {t for t in marked() if t.startswith(("test_mmu.py", "test_cpu.py"))}


def test_xen_3_0_4_page_tables_fail_the_marked_tests_under_the_fixes(tmp_path: Path) -> None:
    """With the default profile the same model fails exactly the tests marked with a fix:
    each marker is needed."""
    run, record = run_suite(tmp_path, XEN304, "conformance/test_mmu.py",
                            "-k", "flipped_writable or through_linear_slot")
    assert run.returncode == 1
    failed = {r["nodeid"].removeprefix("conformance/") for r in record["tests"]
              if r["outcome"] == "failed"}
    assert failed == {t for t in marked() if t.startswith("test_mmu.py")}


def test_the_matrix_states_the_profile_and_the_tests_not_applicable(tmp_path: Path) -> None:
    from xenspec.docgen import generate

    record = {"implementation": "impl", "finished": "2026-01-01T00:00:00+00:00",
              "profile": "3.0.4", "fixes": [],
              "tests": [{"nodeid": "conformance/test_mmu.py::t", "outcome": "not applicable",
                         "clauses": ["update_va_mapping"], "duration": 0.0}],
              "clauses": {"update_va_mapping": {"tests": 1, "not_applicable": 1}}}
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "conformance.json").write_text(json.dumps(record))
    generate(tmp_path / "gen", tmp_path / "cache")
    matrix = (tmp_path / "gen" / "matrix.rst").read_text()
    assert "under profile ``3.0.4``" in matrix
    assert "0/1 passed, 1 not applicable" in matrix

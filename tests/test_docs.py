"""The documentation builds with Sphinx warnings as errors, has a page per clause, and its
traceability matrix shows the recorded proof and conformance runs (or "not run yet")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenspec.cli import main
from xenspec.docgen import generate
from xenspec.docgen.matrix import slug
from xenspec.proofs.obligations import obligation_names
from xenspec.spec.clauses import CLAUSES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def sample_runs(cache: Path) -> None:
    """A proof run and a conformance run as the runner and the suite record them."""
    names = obligation_names()
    proofs = {n: {"status": "proved", "seconds": 0.5, "cached": False,
                  "timestamp": "2026-01-01T00:00:00+00:00"} for n in names}
    proofs[names[0]]["status"] = "FAILED"
    conformance = {
        "implementation": "sample-impl", "finished": "2026-01-01T00:01:00+00:00",
        "tests": [{"nodeid": "conformance/test_x.py::test_pin", "outcome": "failed",
                   "clauses": ["mmuext_op/PIN_L1_TABLE"], "duration": 0.25}],
        "clauses": {"mmuext_op/PIN_L1_TABLE": {"tests": 1, "passed": 0, "failed": 1,
                                               "skipped": 0, "hits": 42}},
    }
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "prove-last.json").write_text(json.dumps(proofs))
    (cache / "conformance.json").write_text(json.dumps(conformance))


def test_matrix_says_not_run_yet_without_runs(tmp_path: Path) -> None:
    generate(tmp_path / "gen", tmp_path / "no-cache")
    matrix = (tmp_path / "gen" / "matrix.rst").read_text()
    assert "not run yet" in matrix
    assert "passed" not in matrix


def test_matrix_shows_recorded_runs(tmp_path: Path) -> None:
    sample_runs(tmp_path / "cache")
    generate(tmp_path / "gen", tmp_path / "cache")
    matrix = (tmp_path / "gen" / "matrix.rst").read_text()
    assert "sample-impl" in matrix
    assert "**1 failed**" in matrix and "42" in matrix
    assert "**1 FAILED**" in matrix
    page = (tmp_path / "gen" / "clauses" / f"{slug('mmuext_op/PIN_L1_TABLE')}.rst").read_text()
    assert "conformance/test_x.py::test_pin" in page


def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "generated"))
    sample_runs(tmp_path / "cache")
    out = tmp_path / "html"
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src),
         str(out)],
        env={**os.environ, "XENSPEC_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    for c in CLAUSES:
        assert (out / "generated" / "clauses" / f"{slug(c.id)}.html").is_file(), c.id
    for name in ("matrix", "abi", "layout", "page-types", "paths"):
        assert (out / "generated" / f"{name}.html").is_file()
    assert (out / "_images" / "address-space.svg").is_file()
    assert "HYPERCALL_BUDGET" in (out / "guide" / "bounded.html").read_text()
    assert "sample-impl" in (out / "generated" / "matrix.html").read_text()
    contract = (out / "guide" / "contract.html").read_text()
    for name in ("test_mmu.py", "test_cpu.py", "test_events.py", "test_differential.py",
                 "test_guests.py", "XSA-182", "--xen-profile"):
        assert name in contract, name


@pytest.mark.parametrize("module", ["xenspec.spec.abi", "xenspec.refmodel.mm",
                                    "xenspec.docgen.source"])
def test_segment_is_the_parsers_source_segment(module: str) -> None:
    """``source.segment`` (the lines split once per file) gives what ast.get_source_segment
    gives: for a file's annotated constants, and its functions (padded too) and assignments
    of more than one line (what the docs' generation reads through it), and for every node of
    a small text with other line ends, tabs and a non-ASCII character. (Every node of a whole
    file would take a minute: the parser's function splits the file again for each.)"""
    import ast
    import importlib
    import inspect

    from xenspec.docgen.source import segment, source_lines

    def wanted(node: ast.AST) -> bool:
        if isinstance(node, ast.AnnAssign):  # the ABI page's constants, one line or more
            return node.value is not None
        return isinstance(node, ast.FunctionDef | ast.Assign) and node.lineno != node.end_lineno

    small = "x = (1,\r\n     2)\rif x:\n\tdef f(a='é'):\n\t\treturn {a:\n  2}\n"
    for text, every in ((inspect.getsource(importlib.import_module(module)), False),
                        (small, True)):
        lines = source_lines(text)
        assert "".join(lines) == text
        nodes = [n for n in ast.walk(ast.parse(text)) if every or wanted(n)]
        assert len(nodes) > 10
        for node in nodes:
            for padded in (False, True) if every or isinstance(node, ast.FunctionDef) else (
                    False,):
                assert segment(lines, node, padded) == (
                    ast.get_source_segment(text, node, padded=padded) or ""), ast.dump(node)


def test_docs_command_help() -> None:
    r = CliRunner().invoke(main, ["docs", "--help"])
    assert r.exit_code == 0
    assert "--refresh" in r.output and "docs/_build/html" in r.output


def test_docs_command_reports_a_failed_build_in_one_line(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from xenspec import docbuild

    monkeypatch.setattr(docbuild, "sphinx", lambda *a: "WARNING: something is wrong")
    monkeypatch.setenv("XENSPEC_CACHE_DIR", str(tmp_path / "cache"))
    r = CliRunner().invoke(main, ["docs", "-o", str(tmp_path / "out")])
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == (
        "Error: the documentation build failed: WARNING: something is wrong")

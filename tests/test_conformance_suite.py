"""The conformance suite as a third party uses it: ``pytest conformance/ --implementation=...``.

Each test runs pytest in a fresh process from the repository root, as a user would: with an
adapter outside the package, with a command template, with a name that does not resolve, and
against every deliberately broken implementation (the kill rate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance.broken import BROKEN, Broken
from xenspec.conformance.guests.build import toolchain_available
from xenspec.conformance.killrate import kill_rate

ROOT = Path(__file__).resolve().parent.parent


def suite(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-n0", "-p", "no:cacheprovider",
         f"--conformance-report={report}", *args],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "XENSPEC_PROFILE": "quick"})
    doc = json.loads(report.read_text()) if report.exists() else {}
    return proc, doc


def test_adapter_outside_the_package(tmp_path: Path) -> None:
    adapter = "examples.rpc_adapter.adapter:RemoteImplementation"
    proc, doc = suite(tmp_path, f"--implementation={adapter}", "-k", "not differential")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert doc["implementation"].startswith("reference model behind a pipe")
    assert doc["tests"] and all(t["outcome"] not in ("failed", "error") for t in doc["tests"])
    assert "hypercalls" in proc.stdout and "passed" in proc.stdout
    # It offers no block device and does not say which frames the hypervisor writes into.
    assert doc["clauses"]["io/blkif"]["status"] == "not offered"
    assert doc["clauses"]["INV-XENPAGE"]["status"] == "not offered"


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_command_template(tmp_path: Path) -> None:
    cmd = f"{sys.executable} -m xenspec.cli run {{elf}} --cmdline {{cmdline}} --memory 64"
    proc, doc = suite(tmp_path, f"--implementation={cmd}", "-k", "guest or shutdown")
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = [t for t in doc["tests"] if t["outcome"] == "passed"]
    assert len(passed) >= 10
    # The command offers the guest level only: hypercall-level tests are not offered, none
    # fails, and a run of nothing but those checked nothing, which fails.
    proc, doc = suite(tmp_path, f"--implementation={cmd}", "-k", "pin")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert doc["tests"] and all(t["outcome"] == "not offered" for t in doc["tests"])
    assert "NOTHING WAS CHECKED" in proc.stdout


@pytest.mark.parametrize(("spec", "message"), [
    ("no.such.module:Factory", "cannot import 'no.such.module'"),
    ("xenspec.conformance.broken:nothing_here", "has no attribute 'nothing_here'"),
    ("no-such-name", "no implementation 'no-such-name'"),
])
def test_bad_implementation_is_one_clear_error(tmp_path: Path, spec: str, message: str) -> None:
    proc, _ = suite(tmp_path, f"--implementation={spec}", "-k", "pin_l1")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout


# One item per broken implementation (each one suite run): the test command's parallel
# workers share them out, where one item running them all kept a worker for minutes.
@pytest.mark.parametrize("broken", BROKEN, ids=[b.name for b in BROKEN])
def test_every_broken_implementation_is_killed(broken: Broken) -> None:
    verdicts = kill_rate(jobs=1, only=[broken.name], focused=True)
    assert [v.broken for v in verdicts] == [broken]
    assert [v.line() for v in verdicts if not v.killed] == []

"""The test command runs in parallel processes (pytest-xdist, ``-n auto`` in pyproject.toml):
the files those processes share are written whole and updated under a lock
(``xenspec.sharedfiles``), and the conformance record of a parallel run is the one a single
process writes (``xenspec.conformance.plugin``: the workers hand their parts to the
controlling process)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance.guests.build import toolchain_available
from xenspec.proofs.runner import Result, last_run_path, record_last_run
from xenspec.sharedfiles import read_json_dict, update_json_dict

ROOT = Path(__file__).resolve().parent.parent
WRITERS, EACH = 4, 40


def _record(cache: str, writer: int) -> None:
    os.environ["XENSPEC_CACHE_DIR"] = cache
    for i in range(EACH):
        record_last_run([Result(f"obligation {writer}.{i}", "proved", 0.5)])


def test_concurrent_last_run_records_all_land(tmp_path: Path) -> None:
    """Several processes recording proof results at once (as the workers of the test command
    do): every result is in prove-last.json afterwards, none lost to another's write."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    os.environ["XENSPEC_CACHE_DIR"] = str(tmp_path)
    try:
        recorded = read_json_dict(last_run_path())
    finally:
        del os.environ["XENSPEC_CACHE_DIR"]
    assert sorted(recorded) == sorted(f"obligation {w}.{i}" for w in range(WRITERS)
                                      for i in range(EACH))


def test_update_json_dict_reads_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.json"
    update_json_dict(path, lambda d: d.__setitem__("a", 1))
    update_json_dict(path, lambda d: d.__setitem__("b", [2]))
    assert read_json_dict(path) == {"a": 1, "b": [2]}
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_concurrent_guest_builds_agree(tmp_path: Path) -> None:
    """Processes building the same guests into one fresh build folder at once (the workers'
    first boots) all succeed and see the same complete images (unlocked, one would link
    another's half-written object: "undefined reference")."""
    code = ("import sys; from xenspec.conformance.guests.build import build_guest\n"
            "for n in sys.argv[1:]: build_guest(n)")
    env = {**os.environ, "XENSPEC_BUILD_DIR": str(tmp_path)}
    names = ["hello", "xen_version"]
    procs = [subprocess.Popen([sys.executable, "-c", code, *names], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    serial = tmp_path / "serial"
    subprocess.run([sys.executable, "-c", code, *names], check=True, timeout=300,
                   env={**env, "XENSPEC_BUILD_DIR": str(serial)}, capture_output=True)
    for n in names:
        assert (tmp_path / f"{n}.elf").read_bytes() == (serial / f"{n}.elf").read_bytes()


def _suite(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_mmu.py", "-q", "-p",
         "no:cacheprovider", "-k", "machphys or pin_l1", f"--conformance-report={report}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "XENSPEC_PROFILE": "quick", "XENSPEC_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert report.exists(), proc.stdout[-3000:]
    doc: dict[str, Any] = json.loads(report.read_text())
    return doc


def test_a_parallel_conformance_run_records_what_one_process_does(tmp_path: Path) -> None:
    """The record of a run in two worker processes names the same tests with the same
    outcomes, the same clause table and the same hypercall counts as a run in one."""
    one = _suite(tmp_path / "one", "-n0")
    two = _suite(tmp_path / "two", "-n2")
    assert two["tests"], "the parallel run recorded no test"

    def outcomes(doc: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((t["nodeid"], t["outcome"]) for t in doc["tests"])

    assert outcomes(two) == outcomes(one)
    for key in ("clauses", "hypercalls", "issued", "not_evaluated", "complete", "offers"):
        assert two[key] == one[key], key

"""The conformance suite gives no false greens (issue 15): each test runs the suite in a fresh
pytest process against a tiny adapter written into a temporary module, as a third party would,
and reads its exit status, its summary and its record.

An adapter missing a method, or whose method raises, makes the tests that need it error,
naming the method; what an adapter does not offer is reported as not offered, and a run that
checked nothing fails; a bad ``--implementation`` is one usage error (exit 4) that leaves the
record alone, and so is a factory that raises; a partial run leaves the record alone; a
failure is charged to the clause whose check failed; an invariant failure names its witness
in hex.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance.checks import ClauseFailure, assert_invariants
from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.spec import abi

ROOT = Path(__file__).resolve().parent.parent

# Adapters built on the reference model, each changed one way. ``Delegate`` forwards what it
# does not have to a reference machine, minus the names in ``absent``.
ADAPTERS = '''
from xenspec.conformance.reference import ReferenceImplementation


class Delegate:
    offers = {"hypercall", "events"}
    absent: tuple[str, ...] = ()

    def __init__(self):
        self._ref = ReferenceImplementation()

    def __getattr__(self, name):
        if name.startswith("_") or name in self.absent:
            raise AttributeError(name)
        return getattr(self._ref, name)


class NoVcpuBases(Delegate):
    absent = ("vcpu_bases",)


class RaisingMachphys(Delegate):
    def machphys(self, mfn):
        raise RuntimeError("the debug channel dropped the request")


class WrongFrameType(Delegate):
    def frame(self, mfn):
        return (1, 2, 3)


class NoEvents(Delegate):
    offers = {"hypercall"}


class GuestOnly(Delegate):
    offers = {"guest"}


class Undeclared(Delegate):
    offers = None
    absent = ("offers", "machphys")


class NoFreePorts(Delegate):
    def hypercall(self, domid, name, *args):
        if name == "event_channel_op" and args[0] == 6:  # EVTCHNOP_alloc_unbound
            return -28  # -ENOSPC
        return self._ref.hypercall(domid, name, *args)


def exploding():
    raise OSError("cannot reach the test harness")
'''

A = "fair_adapters:"
MMU_TESTS = "test_machphys_update or test_pin_l1_and_l2"


def suite(tmp_path: Path, impl: str, *args: str,
          report: bool = True) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the conformance suite against ``impl`` (``--implementation``; ``A + name`` for
    an adapter of ``ADAPTERS``)."""
    (tmp_path / "fair_adapters.py").write_text(ADAPTERS)
    path = tmp_path / "report.json"
    env = {**os.environ, "XENSPEC_PROFILE": "quick", "XENSPEC_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "conformance", "-q", "-n0", "-p", "no:cacheprovider",
           f"--implementation={impl}", *args]
    if report:
        cmd.append(f"--conformance-report={path}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    doc = json.loads(path.read_text()) if path.exists() else {}
    return proc, doc


def outcomes(doc: dict[str, Any]) -> set[str]:
    return {t["outcome"] for t in doc.get("tests", [])}


def test_a_missing_method_is_an_error_naming_it(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, A + "NoVcpuBases", "-k", MMU_TESTS)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert outcomes(doc) == {"error"}
    assert all(t["method"] == "vcpu_bases" for t in doc["tests"])
    assert "has no 'vcpu_bases'" in proc.stdout
    assert "skipped" not in proc.stdout.splitlines()[-1]


def test_an_adapter_method_that_raises_is_an_error_naming_it(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, A + "RaisingMachphys", "-k", "test_machphys_update")
    assert proc.returncode == 1, proc.stdout[-3000:]
    (t,) = doc["tests"]
    assert (t["outcome"], t["method"]) == ("error", "machphys")
    assert "machphys(0x" in t["message"] and "the debug channel dropped" in t["message"]
    assert "adapter error, 1 tests: adapter error in machphys" in proc.stdout


def test_a_result_of_the_wrong_type_is_an_error_naming_the_method(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, A + "WrongFrameType", "-k", "test_pin_l1_and_l2")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert {t["method"] for t in doc["tests"]} == {"frame"}
    assert "a FrameInfo has int fields" in doc["tests"][0]["message"]


def test_an_undeclared_adapter_missing_a_method_errors_rather_than_skips(tmp_path: Path) -> None:
    """Without ``offers`` the levels are inferred from the methods: one method of the
    hypercall level makes it offered, so a missing one is an error, not a skipped level."""
    proc, doc = suite(tmp_path, A + "Undeclared", "-k", "test_machphys_update")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert [t["method"] for t in doc["tests"]] == ["machphys"]


def test_what_is_not_offered_is_reported_so_and_never_passes(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, A + "NoEvents", "-k", "test_machphys_update or test_bind_ipi")
    assert proc.returncode == 0, proc.stdout[-3000:]
    by_test = {t["nodeid"].split("::")[-1]: t["outcome"] for t in doc["tests"]}
    assert by_test == {"test_machphys_update": "passed",
                       "test_bind_ipi_send_and_bind_vcpu": "not offered"}
    assert doc["clauses"]["event_channel_op/bind_ipi"]["status"] == "not offered"
    assert doc["clauses"]["mmu_update/MACHPHYS_UPDATE"]["status"] == "passed"
    assert "not offered: " in proc.stdout and "event_channel_op/bind_ipi" in proc.stdout


def test_a_run_that_checked_nothing_fails(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, A + "GuestOnly", "-k", MMU_TESTS)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert outcomes(doc) == {"not offered"}
    assert "NOTHING WAS CHECKED" in proc.stdout
    assert all(t["status"] in ("not offered", "not covered") for t in doc["clauses"].values())


@pytest.mark.parametrize(("impl", "message"), [
    ("no-such-name", "--implementation: no implementation 'no-such-name'"),
    ("fair_adapters:exploding", "the factory failed: OSError: cannot reach the test harness"),
])
def test_bad_implementation_is_one_usage_error_and_keeps_the_record(
        tmp_path: Path, impl: str, message: str) -> None:
    record = tmp_path / "cache" / "conformance.json"
    record.parent.mkdir()
    record.write_text('{"implementation": "the last complete run"}')
    proc, _ = suite(tmp_path, impl, report=False)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    if impl == "no-such-name":
        assert "reference" in lines[0]  # the registered names
    assert record.read_text() == '{"implementation": "the last complete run"}'


def test_a_partial_run_keeps_the_record(tmp_path: Path) -> None:
    record = tmp_path / "cache" / "conformance.json"
    record.parent.mkdir()
    record.write_text("{}")
    proc, _ = suite(tmp_path, "reference", "-k", "test_machphys_update", report=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert record.read_text() == "{}"
    assert "record not written (partial run: " in proc.stdout


def test_a_failure_is_charged_to_the_clause_whose_check_failed(tmp_path: Path) -> None:
    """mmu_update answering -EINVAL for an unreadable request array: the tests also name
    mmuext_op/TLB_FLUSH and INV-HOLE, but only mmu_update's rule broke, so only its clause
    fails; the other clauses pass on the tests that ran through (the mmuext_op cases)."""
    proc, doc = suite(tmp_path, "xenspec.conformance.broken:efault_as_einval", "-k",
                      "test_bad_request_array_faults")
    assert proc.returncode == 1, proc.stdout[-3000:]
    failed = [t for t in doc["tests"] if t["outcome"] == "failed"]
    assert len(failed) == 3 and all(t["charged"] == ["mmu_update/NORMAL_PT_UPDATE"]
                                    for t in failed)
    status = {cid: doc["clauses"][cid]["status"]
              for cid in ("mmu_update/NORMAL_PT_UPDATE", "mmuext_op/TLB_FLUSH", "INV-HOLE")}
    assert status == {"mmu_update/NORMAL_PT_UPDATE": "failed", "mmuext_op/TLB_FLUSH": "passed",
                      "INV-HOLE": "passed"}
    assert "FAILED mmu_update/NORMAL_PT_UPDATE" in proc.stdout
    assert "FAILED INV-HOLE" not in proc.stdout


def test_an_implementation_that_fails_in_a_hypercall_errs_on_its_clause(tmp_path: Path) -> None:
    """An exception while carrying out a hypercall (here the model's own count check, after
    UNPIN_TABLE of a frame that is not pinned) is an error of the test naming the method,
    charged to the clause of the hypercall in flight, not to the test's other clause."""
    proc, doc = suite(tmp_path, "xenspec.conformance.broken:unpin_unchecked", "-k",
                      "test_unpin_of_unpinned_frame_refused")
    assert proc.returncode == 1, proc.stdout[-3000:]
    (t,) = doc["tests"]
    assert (t["outcome"], t["method"], t["charged"]) == ("error", "hypercall",
                                                         ["mmuext_op/UNPIN_TABLE"])
    assert doc["clauses"]["mmuext_op/UNPIN_TABLE"]["status"] == "error"
    assert doc["clauses"]["INV-PIN"]["status"] == "unfinished"


def test_an_errno_where_a_port_was_due_fails_on_that_command(tmp_path: Path) -> None:
    """alloc_unbound answering -ENOSPC: the next command that takes the port fails the test
    on alloc_unbound's clause, instead of crashing it packing a negative port."""
    proc, doc = suite(tmp_path, A + "NoFreePorts", "-k", "test_loopback_interdomain_channel")
    assert proc.returncode == 1, proc.stdout[-3000:]
    (t,) = doc["tests"]
    assert (t["outcome"], t["charged"]) == ("failed", ["event_channel_op/alloc_unbound"])
    assert "port -28: the command that was to give this port failed" in t["message"]
    assert "struct.error" not in proc.stdout


def test_an_invariant_failure_names_its_witness_in_hex() -> None:
    """A writable entry naming another domain's page directory: the failure names the L1
    frame, the entry's index and value, and the target frame, all in hex."""
    impl = ReferenceImplementation()
    a, b = Guest(impl, 48, 32), Guest(impl, 48, 32)
    l1, pte = a.l1_mfns[0], b.l2_mfn << abi.PAGE_SHIFT | abi._PAGE_PRESENT | abi._PAGE_RW
    impl.hv.memory.write_entry(l1, 40, pte)
    with pytest.raises(ClauseFailure) as failure:
        assert_invariants(impl, [a, b])
    text = str(failure.value)
    assert set(failure.value.clauses) >= {"INV-NOWRPT", "INV-OWN", "INV-COUNT"}
    assert f"mfn {l1:#x} (owner {a.domid:#x}, l1_page_table" in text
    assert f"entry 0x28 = {pte:#010x} -> mfn {b.l2_mfn:#x} (owner {b.domid:#x}" in text
    assert f"INV-COUNT: Reference counts equal the references that exist. At mfn {b.l2_mfn:#x}: " \
           "count 0x" in text

"""The branch-coverage report printed at the end of a run of the branch checks
(tests/branchreport.py): which test items are branch checks, and the report's lines."""

from __future__ import annotations

from branchreport import branch_of, coverage_lines


def test_branch_check_items_are_recognised() -> None:
    assert branch_of("tests/test_branches.py::test_branch_refines[iret fail/ring0]") == (
        "iret", "fail/ring0")
    assert branch_of("tests/test_branches.py::test_gem_event_branch_refines["
                     "event_channel_op/close ok/unbound]") == ("event_channel_op/close",
                                                               "ok/unbound")
    assert branch_of("tests/test_branches.py::test_mutant_is_caught[x]") is None
    assert branch_of("tests/test_other.py::test_branch_refines[iret ok]") is None


def test_the_report_counts_each_outcome_and_names_failures() -> None:
    lines = coverage_lines({"iret": {"ok": "hit", "fail/a": "unreachable", "fail/b": "failed"},
                            "set_gdt": {"ok": "hit", "fail/x": "open"}})
    assert lines[0] == "iret       1/3   hit (1 unreachable, 1 failed)"
    assert lines[1] == "set_gdt    1/2   hit (1 open)"
    assert lines[2] == "5 branches of 2 specs: 2 hit, 1 unreachable, 1 failed, 1 open"
    assert lines[3:] == ["FAILED: iret fail/b", "OPEN: set_gdt fail/x"]

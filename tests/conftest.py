"""Hooks for the project's tests: the branch-coverage report of the specification at the end
of a run that ran the branch checks (tests/branchreport.py)."""

from branchreport import pytest_runtest_logreport, pytest_terminal_summary

__all__ = ["pytest_runtest_logreport", "pytest_terminal_summary"]

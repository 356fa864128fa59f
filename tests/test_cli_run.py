"""``xenspec run``: a guest's console and exit status, one error line for a bad image, the
built-in MMU scenario."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenspec.cli import main
from xenspec.conformance.guests.build import build_guest, toolchain_available

needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")


@needs_gcc
def test_run_guest_prints_console_and_trace() -> None:
    r = CliRunner().invoke(main, ["run", str(build_guest("hello")), "--trace"])
    assert r.exit_code == 0, r.output
    assert "Test result: SUCCESS" in r.output
    assert "set_trap_table(" in r.output
    assert "shut down: poweroff" in r.output


@needs_gcc
def test_run_guest_exit_status_follows_shutdown_reason() -> None:
    r = CliRunner().invoke(main, ["run", str(build_guest("crash")), "--cmdline", "iret-ring0"])
    assert r.exit_code == 1
    assert "iret to ring 0" in r.output


def test_run_bad_image_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"not an elf")
    r = CliRunner().invoke(main, ["run", str(bad)])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_run_mmu_scenario() -> None:
    r = CliRunner().invoke(main, ["run", "--scenario", "mmu"])
    assert r.exit_code == 0, r.output
    assert "gave Xen's result" in r.output


@needs_gcc
def test_run_without_a_guest_boots_the_demo() -> None:
    r = CliRunner().invoke(main, ["run"])
    assert r.exit_code == 0, r.output
    assert "process: running in ring 3" in r.output
    assert "Test result: SUCCESS" in r.output


@needs_gcc
def test_a_guest_is_domain_1_with_its_rings_and_two_consoles() -> None:
    """As the tools create a domain: domain 1, with its console ring; a line written to Xen's
    console (console_io) and to the ring shows once on each, told apart by "(d1) "."""
    r = CliRunner().invoke(main, ["run", str(build_guest("consring")), "--cmdline", "both"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "(d1) --- xenspec test: console ring: output, wrap, input ---" in lines
    assert "ring line 099 abcdefghijklmnopqrstuvwxyz012345678" in lines  # the ring, as it is
    assert lines.count("(d1) the same line on both consoles") == 1
    assert lines.count("the same line on both consoles") == 1  # "\n\r": the \r dropped
    assert "Test result: SUCCESS" in lines and "(XEN) domain 1 shut down: poweroff" in lines
    # --devices is accepted and changes nothing.
    again = CliRunner().invoke(main, ["run", "--devices", str(build_guest("consring")),
                                      "--cmdline", "both"])
    assert again.exit_code == 0 and again.output == r.output


@needs_gcc
def test_dom0_has_no_rings() -> None:
    r = CliRunner().invoke(main, ["run", "--dom0", str(build_guest("consring"))])
    assert "(d0) Test result: SKIP" in r.output, "domain 0 has no console ring"
    assert "(XEN) domain 0 shut down: poweroff" in r.output


@needs_gcc
def test_a_release_build_keeps_console_io_to_domain_0() -> None:
    """do_console_io without VERBOSE: -EPERM for every domain but domain 0; the ring is
    still heard."""
    r = CliRunner().invoke(main, ["run", "--xen-build", "release", str(build_guest("consring")),
                                  "--cmdline", "both"])
    assert r.exit_code == 0, r.output
    assert "(d1)" not in r.output
    assert "the same line on both consoles" in r.output.splitlines()
    assert "Test result: SUCCESS" in r.output
    r = CliRunner().invoke(main, ["run", "--xen-build", "release", "--dom0",
                                  str(build_guest("hello"))])
    assert "(d0) Test result: SUCCESS" in r.output, r.output


@needs_gcc
def test_timeout_is_honoured_while_checking_invariants() -> None:
    """--timeout bounds the run whatever the options: with --check-invariants after every
    hypercall, a guest making hypercalls without end used to run on for minutes (the timeout
    was seen only between slices). 20 s is a generous bound for a 1 s timeout, not a speed
    measurement."""
    guest = str(build_guest("bench"))
    start = time.monotonic()
    r = CliRunner().invoke(main, ["run", guest, "--cmdline", "hypercall 100000000",
                                  "--check-invariants", "--timeout", "1", "--memory", "32",
                                  "--domain-memory", "8"])
    elapsed = time.monotonic() - start
    assert r.exit_code == 4, r.output  # no shutdown
    assert "timed out" in r.output
    assert "every invariant held after every hypercall until the timeout" in r.output
    assert elapsed < 20, f"--timeout 1 returned after {elapsed:.0f} s"


@needs_gcc
def test_runs_are_reproducible_with_a_fixed_wall_clock() -> None:
    """shared_info's wall clock is the machine's start-of-day time, fixed by default (was the
    host's clock): two runs of the same guest print the same console and trace."""
    guest = str(build_guest("time"))
    first, second = (CliRunner().invoke(main, ["run", guest, "--trace"]) for _ in range(2))
    assert first.exit_code == 0, first.output
    assert "wallclock at system time 0: 1700000000 s 0 ns" in first.output
    assert first.output == second.output
    r = CliRunner().invoke(main, ["run", guest, "--wallclock", "1600000001"])
    assert r.exit_code == 0, r.output
    assert "wallclock at system time 0: 1600000001 s 0 ns" in r.output

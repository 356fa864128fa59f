"""The scheduler (refmodel/sched.py): several domains share the one emulated CPU; a spinning
domain is preempted, yield and block give the CPU away, idle time jumps to the next timer, and
the same run always gives the same schedule."""

from __future__ import annotations

import itertools

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.clock import Clock
from xenspec.refmodel.domain import ShutdownReason
from xenspec.refmodel.sched import CTX_ALLOW_NS
from xenspec.refmodel.view import check_invariants

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

HANG_GUARD_S = 60.0  # a guard against a hung run, not a timing assertion
MS = 1_000_000


def machine(*guests: tuple[str, str], paused: tuple[int, ...] = ()) -> Machine:
    lines: list[tuple[int, str]] = []

    def console(domid: int, data: bytes) -> None:
        lines.extend((domid, ln) for ln in data.decode().splitlines() if ln)

    m = Machine(memory_mb=64, console=console)
    m.lines = lines  # type: ignore[attr-defined]
    for i, (name, cmdline) in enumerate(guests):
        m.add_guest(str(build_guest(name)), domain_mb=4, cmdline=cmdline, paused=i in paused)
    return m


def test_a_spinning_guest_is_preempted_and_the_other_finishes() -> None:
    m = machine(("spin", "forever"), ("spin", ""), paused=(1,))
    assert m.run(until_ns=1 * MS, timeout_s=HANG_GUARD_S) == "limit"
    m.domctl.unpause(1)
    assert m.run(until_ns=20 * MS, timeout_s=HANG_GUARD_S) == "limit"
    spinner, short = (m.result(m.hv.domains[i]) for i in (0, 1))
    assert spinner.reason is None and "spinning" in spinner.console
    assert short.test_result == "SUCCESS", short.console
    # The spinner kept the CPU for the context-switch allowance after the wake-up, no more
    # than the translation block under way (a slice ends at a block's end: blockcount.c).
    switch = next(s for s in m.pv.sched.stats.log if s.domid == 1)
    assert CTX_ALLOW_NS <= switch.now_ns <= CTX_ALLOW_NS + 100, switch
    assert spinner.run_ns + short.run_ns + m.pv.clock.idle_ns == m.pv.clock.now_ns()


def test_yield_alternates_between_two_domains() -> None:
    m = machine(("spin", "yield"), ("spin", "yield"))
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    order = [d for d, ln in m.lines if ln.startswith("yield")]  # type: ignore[attr-defined]
    assert len(order) == 10
    assert all(a != b for a, b in itertools.pairwise(order)), order
    for i in (0, 1):
        assert m.result(m.hv.domains[i]).test_result == "SUCCESS"


def test_equal_weights_share_the_cpu() -> None:
    m = machine(("spin", "work 40"), ("spin", "work 40"))
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    a, b = (m.pv.clock.domain_run_ns(i) for i in (0, 1))
    assert abs(a - b) < a // 10
    # Both progressed together: the rounds interleave, in slices of about ctx_allow.
    order = [d for d, ln in m.lines if ln.startswith("round")]  # type: ignore[attr-defined]
    assert order[:5] != [order[0]] * 5 or order[-5:] != [order[-1]] * 5
    assert m.pv.sched.stats.context_switches > 4


def test_the_schedule_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        m = machine(("spin", "work 10"), ("spin", "yield"))
        m.run(timeout_s=HANG_GUARD_S)
        runs.append(([(s.now_ns, s.domid) for s in m.pv.sched.stats.log],
                     m.pv.clock.now_ns(), m.lines))  # type: ignore[attr-defined]
    assert runs[0] == runs[1]


def test_idle_jumps_to_the_poll_timeout() -> None:
    # console_sched polls with a timeout in the past; the clock never runs backwards.
    m = machine(("console_sched", ""))
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    assert m.result(m.hv.domains[0]).test_result == "SUCCESS"


def test_block_is_woken_by_another_domains_event() -> None:
    m = machine(("block", "wait"), ("block", "send 1"), paused=(1,))
    if 32 not in m.hv.hypercall_table:  # __HYPERVISOR_event_channel_op
        pytest.skip("no event channels in this hypervisor")
    assert m.run(timeout_s=HANG_GUARD_S) == "idle"
    assert m.pv.sched.is_blocked(m.hv.domains[0].vcpus[0])
    m.domctl.unpause(1)
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    for i in (0, 1):
        r = m.result(m.hv.domains[i])
        if r.test_result == "SKIP":
            pytest.skip("the guest found no event channels")
        assert r.test_result == "SUCCESS", r.console
        assert r.reason is ShutdownReason.poweroff
    assert check_invariants(m.hv) == []


def test_clock_counts_instructions_and_idle() -> None:
    c = Clock(ns_per_instruction=2, ns_per_trap=10)
    m = machine(("spin", ""))
    d = m.hv.domains[0]
    c.slice_started(d, lambda: (5, 1))
    assert c.now_ns() == 20 and c.domain_run_ns(d) == 20
    c.slice_ended(d, 7, 2)
    c.idle_until(100)
    c.idle_until(50)
    assert (c.now_ns(), c.domain_run_ns(d), c.idle_ns) == (100, 34, 66)

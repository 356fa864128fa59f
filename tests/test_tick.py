"""The periodic tick (refmodel/sched.py; Xen 3.0.4 schedule.c, t_timer_fn and schedule()):
VIRQ_TIMER every 10 ms to the vCPU running, none to a blocked or descheduled one, and one on
switch-in for a vCPU that missed ticks, however many it missed."""

from __future__ import annotations

from typing import Any

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

HANG_GUARD_S = 60.0  # a guard against a hung run, not a timing assertion
MS = 1_000_000


def run_tick(cmdline: str) -> tuple[Machine, str, list[str]]:
    m = Machine(memory_mb=32)
    d = m.add_guest(str(build_guest("tick")), domain_mb=4, cmdline=cmdline)
    stop = m.run(timeout_s=HANG_GUARD_S)
    return m, stop, m.result(d).console.splitlines()


def test_a_running_vcpu_gets_virq_timer_every_10_ms() -> None:
    m, stop, lines = run_tick("periodic")
    r = m.result(m.hv.domains[0])
    assert stop == "shutdown" and r.test_result == "SUCCESS", r.console
    gaps = [int(ln.split()[2]) for ln in lines if ln.startswith("periodic: gap")]
    assert len(gaps) >= 5 and all(10_000 <= g < 11_000 for g in gaps), gaps
    assert check_invariants(m.hv) == []


def test_a_blocked_vcpu_is_woken_by_its_one_shot_not_by_the_tick() -> None:
    m, stop, lines = run_tick("sleep")
    r = m.result(m.hv.domains[0])
    assert stop == "shutdown" and r.test_result == "SUCCESS", r.console
    woken = [ln.split() for ln in lines if ln.startswith("sleep: woken")]
    assert len(woken) == 1 and int(woken[0][2]) < 100 and woken[0][-2:] == ["1", "event(s)"]


def test_blocking_with_no_timer_set_is_never_ended_by_the_tick() -> None:
    m, stop, lines = run_tick("block")
    assert stop == "idle"  # no timer set: the idle loop has nothing to wait for
    assert "blocking with no timer set" in lines and "woken" not in lines
    assert m.pv.sched.is_blocked(m.hv.domains[0].vcpus[0])
    # Ticks went on (to the idle vCPU) all the same: system time moved on without a wake-up.
    assert m.run(until_ns=m.pv.clock.now_ns() + 100 * MS, timeout_s=HANG_GUARD_S) == "idle"
    assert m.pv.sched.is_blocked(m.hv.domains[0].vcpus[0])


def test_a_descheduled_vcpu_gets_one_timer_event_per_tick_at_most() -> None:
    """Two spinning domains share the CPU for 200 ms: every timer event goes to the vCPU on
    the CPU (at a tick, or as it is switched in), never two to one vCPU for the same tick,
    so a vCPU that waited through several ticks gets one event, not a backlog."""
    m = Machine(memory_mb=64)
    for _ in range(2):
        m.add_guest(str(build_guest("spin")), domain_mb=4, cmdline="forever")
    sched, vtime = m.pv.sched, m.pv.vtime
    events: list[tuple[int, int, int | None]] = []  # (tick count, domain, domain on the CPU)
    plain = vtime.timer_event

    def recorded(v: Vcpu) -> None:
        cur: Any = sched.current
        events.append((sched.tick, v.domain.domain_id,
                       None if cur is None else cur.v.domain.domain_id))
        plain(v)

    vtime.timer_event = recorded  # type: ignore[method-assign]
    assert m.run(until_ns=200 * MS, timeout_s=HANG_GUARD_S) == "limit"
    assert all(domid == on_cpu for _, domid, on_cpu in events), events
    for domid in (0, 1):
        ticks = [t for t, d, _ in events if d == domid]
        assert ticks == sorted(set(ticks)), f"domain {domid}: {ticks}"
        assert len(ticks) >= 5  # it ran through ticks and was switched in after missing some
        assert len(ticks) <= sched.tick
    assert sched.stats.context_switches > 4
    # One tick per 10 ms (each re-armed 10 ms after it ran), the first at boot.
    assert 200 * MS // abi.TIMER_TICK_NS - 1 <= sched.tick <= 200 * MS // abi.TIMER_TICK_NS + 1


def test_a_vcpu_switched_in_has_its_time_info_refreshed() -> None:
    """schedule() calls update_vcpu_system_time for the vCPU it switches in, whether or not a
    tick passed while it was off the CPU: two domains yielding to each other (switches with no
    tick between them) each find their vcpu_info time stamped at the switch."""
    m = Machine(memory_mb=64)
    for _ in range(2):
        m.add_guest(str(build_guest("spin")), domain_mb=4, cmdline="yields 200")
    vtime = m.pv.vtime
    updated: list[tuple[int, int]] = []  # (clock time, domain)
    plain = vtime.update_vcpu_time

    def recorded(v: Vcpu) -> None:
        updated.append((m.pv.clock.now_ns(), v.domain.domain_id))
        plain(v)

    vtime.update_vcpu_time = recorded  # type: ignore[method-assign]
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    switches = [(s.now_ns, s.domid) for s in m.pv.sched.stats.log if s.now_ns > 0]
    assert len(switches) >= 100  # the yields switched the CPU back and forth
    missing = [s for s in switches if s not in updated]
    assert missing == [], missing[:5]

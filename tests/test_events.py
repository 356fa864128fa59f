"""The event-channel and time model: shared_info bits, the upcall frame, timers, the time
scale, the concrete event invariants, and the sensitivity of the event proofs."""

from __future__ import annotations

import struct

import pytest
import z3

from xenspec.conformance.driver import Guest
from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.test_events import Ev
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.event import Events, check_event_invariants
from xenspec.refmodel.view import check_invariants
from xenspec.refmodel.vtime import TimeScale, set_time_scale
from xenspec.spec import abi
from xenspec.spec import event_spec as es
from xenspec.spec.symbolic import bv

SELF = abi.DOMID_SELF


@pytest.fixture
def impl() -> ReferenceImplementation:
    return ReferenceImplementation()


def guest(impl: ReferenceImplementation) -> tuple[Guest, Ev, Vcpu]:
    g = Guest(impl, 48, 32)
    return g, Ev(g), impl.hv.domains[g.domid].vcpus[0]


def info8(impl: ReferenceImplementation, v: Vcpu, off: int) -> int:
    return impl.pv.vcpu_info_read8(v, off)


def sel(impl: ReferenceImplementation, v: Vcpu) -> int:
    raw = impl.hv.memory.read(impl.pv.vcpu_info_maddr(v) + abi.VCPU_INFO_evtchn_pending_sel, 4)
    return int.from_bytes(raw, "little")


def unmask_upcalls(impl: ReferenceImplementation, v: Vcpu) -> None:
    impl.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)


def test_send_sets_pending_selector_and_upcall(impl: ReferenceImplementation) -> None:
    _g, ev, v = guest(impl)
    events = impl.pv.events
    port = ev.bind_ipi(0)
    assert not events.port_pending(v.domain, port)
    assert ev.send(port) == 0
    assert events.port_pending(v.domain, port)
    assert sel(impl, v) == 1 << (port // 32)
    assert info8(impl, v, abi.VCPU_INFO_evtchn_upcall_pending) == 1
    assert not events.has_pending(v), "upcall_mask starts set (alloc_vcpu)"
    unmask_upcalls(impl, v)
    assert events.has_pending(v)


def test_masked_port_is_redelivered_by_unmask(impl: ReferenceImplementation) -> None:
    _g, ev, v = guest(impl)
    events = impl.pv.events
    port = ev.bind_ipi(0)
    mask = impl.pv.darch(v.domain).shared_info_mfn << 12
    impl.hv.memory.write(mask + abi.SHARED_INFO_evtchn_mask + port // 8, bytes([1 << port % 8]))
    assert ev.send(port) == 0
    assert events.port_pending(v.domain, port) and sel(impl, v) == 0
    assert info8(impl, v, abi.VCPU_INFO_evtchn_upcall_pending) == 0, "masked: no upcall"
    assert ev.unmask(port) == 0
    assert sel(impl, v) == 1 and info8(impl, v, abi.VCPU_INFO_evtchn_upcall_pending) == 1


def test_bind_interdomain_raises_the_local_end(impl: ReferenceImplementation) -> None:
    """evtchn_bind_interdomain sets the new local port pending (lost notifications)."""
    _g, ev, v = guest(impl)
    a = ev.alloc_unbound(SELF)
    b = ev.bind_interdomain(SELF, a)
    assert impl.pv.events.port_pending(v.domain, b)
    assert not impl.pv.events.port_pending(v.domain, a)


def test_wake_is_called_on_a_new_upcall(impl: ReferenceImplementation) -> None:
    _g, ev, v = guest(impl)
    woken: list[Vcpu] = []
    impl.pv.sched.wake = woken.append  # type: ignore[method-assign,assignment]
    port = ev.bind_ipi(0)
    ev.send(port)
    ev.send(port)
    assert woken == [v], "one kick per upcall_pending transition"


def _ring1_regs(esp: int) -> CpuUserRegs:
    return CpuUserRegs(eip=0xC0001234, cs=abi.FLAT_RING1_CS, ss=abi.FLAT_RING1_DS, esp=esp,
                       eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS | abi.X86_EFLAGS_TF)


def test_upcall_builds_the_bounce_frame(impl: ReferenceImplementation) -> None:
    g, ev, v = guest(impl)
    events: Events = impl.pv.events
    impl.pv.traps.do_set_callbacks(v, abi.FLAT_RING1_CS, 0xC0005000, 0, 0)
    regs = _ring1_regs(g.va(4) + 0x800)
    assert not events.upcall_if_pending(v, regs), "nothing pending"
    ev.send(ev.bind_ipi(0))
    assert not events.upcall_if_pending(v, regs), "masked"
    unmask_upcalls(impl, v)
    assert events.upcall_if_pending(v, regs)
    assert (regs.cs, regs.eip) == (abi.FLAT_RING1_CS, 0xC0005000)
    assert regs.esp == g.va(4) + 0x800 - 12, "EIP, CS, EFLAGS: no error code from ring 1"
    eip, cs, eflags = struct.unpack("<III", g.read_args(4 * 4096 + 0x800 - 12, 12))
    assert (eip, cs) == (0xC0001234, abi.FLAT_RING1_CS), "saved mask 0 in CS bits 16-23"
    assert eflags & abi.X86_EFLAGS_IF and eflags & abi.X86_EFLAGS_TF
    assert not regs.eflags & abi.X86_EFLAGS_TF, "TF cleared on the bounce"
    assert info8(impl, v, abi.VCPU_INFO_evtchn_upcall_mask) == 1, "TBF_INTERRUPT masks"
    assert not events.upcall_if_pending(v, regs), "no second upcall while masked"


def test_upcall_from_ring3_uses_the_kernel_stack(impl: ReferenceImplementation) -> None:
    g, ev, v = guest(impl)
    impl.pv.traps.do_set_callbacks(v, abi.FLAT_RING1_CS, 0xC0005000, 0, 0)
    impl.pv.traps.do_stack_switch(v, abi.FLAT_RING1_DS, g.va(5))
    ev.send(ev.bind_ipi(0))
    unmask_upcalls(impl, v)
    regs = CpuUserRegs(eip=0x8000, cs=abi.FLAT_RING3_CS, ss=abi.FLAT_RING3_DS, esp=0x9000,
                       eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
    assert impl.pv.events.upcall_if_pending(v, regs)
    assert (regs.ss, regs.esp) == (abi.FLAT_RING1_DS, g.va(5) - 20)
    frame = struct.unpack("<5I", g.read_args(5 * 4096 - 20, 20))
    assert frame[3:] == (0x9000, abi.FLAT_RING3_DS)


@pytest.mark.parametrize("why", ["no callback", "unwritable stack"])
def test_upcall_that_cannot_be_delivered_crashes_the_domain(
        impl: ReferenceImplementation, why: str) -> None:
    g, ev, v = guest(impl)
    if why == "unwritable stack":
        impl.pv.traps.do_set_callbacks(v, abi.FLAT_RING1_CS, 0xC0005000, 0, 0)
    ev.send(ev.bind_ipi(0))
    unmask_upcalls(impl, v)
    esp = 0x1000 if why == "unwritable stack" else g.va(4)
    assert impl.pv.events.upcall_if_pending(v, _ring1_regs(esp))
    assert not v.domain.is_running and v.domain.crash_reason
    assert "upcall" in v.domain.crash_reason


def test_virq_delivery_and_global_virq(impl: ReferenceImplementation) -> None:
    _g, ev, v = guest(impl)
    events = impl.pv.events
    timer = ev.bind_virq(abi.VIRQ_TIMER)
    console = ev.bind_virq(abi.VIRQ_CONSOLE)
    events.send_virq(v, abi.VIRQ_TIMER)
    events.send_virq(v, abi.VIRQ_CONSOLE)
    events.send_virq(v, abi.VIRQ_DOM_EXC)  # unbound: nothing
    assert events.port_pending(v.domain, timer) and events.port_pending(v.domain, console)
    assert [p for p in range(128) if events.port_pending(v.domain, p)] == [timer, console]


def test_concrete_event_invariants_hold_and_catch_damage(impl: ReferenceImplementation) -> None:
    a, ea, va = guest(impl)
    b, eb, _ = guest(impl)
    offer = ea.alloc_unbound(b.domid)
    eb.bind_interdomain(a.domid, offer)
    ea.bind_virq(abi.VIRQ_TIMER)
    ea.bind_ipi(0)
    assert check_event_invariants(impl.hv) == []
    impl.pv.events.dom(va.domain).ports[offer].remote_port = 77
    assert [f.split(":")[0] for f in check_event_invariants(impl.hv)] == ["INV-EVT-BIND"]


def test_destroy_domain_unbinds_the_peers(impl: ReferenceImplementation) -> None:
    a, ea, va = guest(impl)
    b, eb, _vb = guest(impl)
    port = eb.bind_interdomain(a.domid, ea.alloc_unbound(b.domid))
    impl.pv.events.destroy_domain(va.domain)
    assert eb.status(port)[:4] == (0, abi.EVTCHNSTAT_unbound, 0, a.domid)


# --- time -------------------------------------------------------------------------------------
@pytest.mark.parametrize("hz", [1_000_000, 999_999_999, 1_000_000_000, 2_596_096_000,
                                3_000_000_000, 10_000_000_000])
def test_time_scale_converts_ticks_to_ns(hz: int) -> None:
    scale = set_time_scale(hz)
    assert scale.mul_frac < 1 << 32 and -8 < scale.shift < 32
    for ticks in (hz, 7 * hz):
        ns = scale.scale(ticks)
        assert abs(ns - ticks * 10**9 // hz) <= ticks * 10**9 // hz // 10**8 + 2


def test_vcpu_time_info_is_published_with_an_even_version(impl: ReferenceImplementation) -> None:
    _g, _ev, v = guest(impl)
    base = impl.pv.vcpu_info_maddr(v) + abi.VCPU_INFO_time
    ver, _, tsc, stime, mul, shift = abi.VCPU_TIME_INFO_T.unpack(impl.hv.memory.read(base, 32))
    assert ver % 2 == 0 and ver > 0 and mul > 0
    assert TimeScale(mul, shift) == impl.pv.vtime.scale
    impl.pv.vtime.update_vcpu_time(v)
    ver2, _, tsc2, stime2, _, _ = abi.VCPU_TIME_INFO_T.unpack(impl.hv.memory.read(base, 32))
    assert ver2 == ver + 2 and tsc2 >= tsc and stime2 >= stime
    si = impl.pv.darch(v.domain).shared_info_mfn << 12
    wc_ver, wc_sec, wc_nsec = struct.unpack("<III", impl.hv.memory.read(
        si + abi.SHARED_INFO_wc_version, 12))
    assert wc_ver % 2 == 0 and wc_ver > 0 and wc_sec > 1_600_000_000 and wc_nsec < 10**9


def test_timer_fires_virq_timer_and_cancel(impl: ReferenceImplementation) -> None:
    g, ev, v = guest(impl)
    vt, events = impl.pv.vtime, impl.pv.events
    port = ev.bind_virq(abi.VIRQ_TIMER)
    far = vt.now_ns() + 10**12
    assert g.hypercall("set_timer_op", far & 0xFFFFFFFF, far >> 32) == 0
    assert vt.next_deadline_ns() == far and vt.expire() == []
    assert g.hypercall("set_timer_op", 0, 0) == 0
    assert vt.next_deadline_ns() is None, "0 cancels"
    assert g.hypercall("set_timer_op", 1, 0) == 0, "a deadline in the past fires at once"
    assert events.port_pending(v.domain, port)
    assert vt.next_deadline_ns() is None
    assert g.hypercall("set_timer_op", 0, 0x80000000) == 0
    deadline = vt.next_deadline_ns()
    assert deadline is not None and 0 < deadline - vt.now_ns() <= abi.TIMER_HUGE_DELAY_NS, \
        "a negative deadline becomes now + 1 ms"


# --- proofs -----------------------------------------------------------------------------------
_SEND, _CLOSE = es.spec_send, es.spec_close


def _broken_send(s: es.EvtState, c: z3.BitVecRef, port: z3.BitVecRef) -> es.EvtTransition:
    t = _SEND(s, c, port)
    anywhere = z3.BitVec("anywhere", 32)
    return es.EvtTransition(t.ok, s.evolve(pending=es.store2(s.pending, anywhere, port, True)),
                            t.rc, t.err, s)


def _broken_close(s: es.EvtState, c: z3.BitVecRef, port: z3.BitVecRef) -> es.EvtTransition:
    t = _CLOSE(s, c, port)
    return es.EvtTransition(t.ok, t.new.evolve(state=es.store2(s.state, c, port, bv(es.FREE)),
                                               rdom=s.rdom), t.rc, t.err, s)


@pytest.mark.parametrize(("name", "broken", "inv"), [
    ("spec_send", _broken_send, "INV-EVT-SEND"),
    ("spec_close", _broken_close, "INV-EVT-BIND"),
])
def test_event_proofs_catch_a_broken_spec(monkeypatch: pytest.MonkeyPatch, name: str,
                                          broken: object, inv: str) -> None:
    """A spec that raises any domain's port, or a close that leaves the peer interdomain, is
    not proved (the solver finds no proof within a few seconds)."""
    command = "event_channel_op/" + name.removeprefix("spec_")
    monkeypatch.setattr(es, name, broken)
    solver = es.obligation(command, inv, "ok")
    solver.set("timeout", 3000)
    assert solver.check() != z3.unsat


# --- two domains ------------------------------------------------------------------------------
@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_two_domains_ping_pong_over_an_interdomain_channel() -> None:
    """pingpong.c: domain 0 offers a port, domain 1 binds it, 20 events go each way, each side
    blocking until the other's event wakes it."""
    m = Machine(memory_mb=64)
    elf = str(build_guest("pingpong"))
    m.add_guest(elf, domain_mb=4, cmdline="serve 20")
    m.add_guest(elf, domain_mb=4, cmdline="client 20", paused=True)
    assert m.run(timeout_s=60.0) == "idle", "the server should block, waiting"
    m.domctl.unpause(1)
    assert m.run(timeout_s=60.0) == "shutdown"
    for d in m.hv.domains.values():
        r = m.result(d)
        assert r.test_result == "SUCCESS", r.console
    assert "20 round trips" in m.result(m.hv.domains[1]).console
    assert check_invariants(m.hv) == []

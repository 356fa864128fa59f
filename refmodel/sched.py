"""Scheduling: the ``sched_op_compat`` (6) and ``sched_op`` (29) hypercalls and the scheduler
that shares the one emulated CPU between the vCPUs of every domain.

Hypercalls, from Xen 3.0.4 xen/common/schedule.c (do_sched_op_compat, do_sched_op, do_yield,
do_block, do_poll) and xen/include/public/sched.h: yield asks for a reschedule; block unmasks
event delivery and blocks the vCPU unless an event is already pending; poll (``sched_poll``:
ports, nr_ports, an absolute ``timeout`` in system time, 0 for none) needs event delivery
masked (-EINVAL), at most 128 ports (-EINVAL), readable ports (-EFAULT), each below
NR_EVENT_CHANNELS (-EINVAL), returns at once if one is pending and otherwise blocks until an
event arrives for the domain or the timeout passes; shutdown records the reason (compat: the
second argument; new: a ``sched_shutdown`` structure, -EFAULT if unreadable);
remote_shutdown is privileged; any other command is -ENOSYS. Until an event-channel subsystem
is installed (``pv.events``), nothing can wake a blocked vCPU, so block returns at once.

The scheduler is the borrowed-virtual-time scheduler of the paper (SOSP'03 s3.3.1) as Xen
2.0-3.0 implemented it in xen/common/sched_bvt.c (bvt_do_schedule, bvt_wake): each vCPU's
actual virtual time ``avt`` grows by ``mcu_advance`` (the inverse of its domain's weight) per
started 100 us (MCU) it ran; the runnable vCPU with the lowest effective virtual time runs; it
runs until its virtual time passes the next one's plus the context-switch allowance
(``ctx_allow``, 5 ms), or for 10 x ctx_allow when it is alone; a woken vCPU starts no lower
than the system virtual time (the lowest ``avt`` of the runqueue) and preempts the running one
once that has run ctx_allow. Warp (latency-sensitive domains borrowing virtual time) is left
out: ``evt`` is always ``avt``. Xen's r_time adds a difference of virtual times divided by
mcu_advance (a count of MCUs) to ns; the model keeps that arithmetic.

A destroyed domain (xen/common/domain.c, domain_kill: _DOMF_dying, then domain_pause, which
waits in vcpu_sleep_sync for each vCPU to leave the CPU) never runs again: ``detach`` drops its
vCPUs (descheduling the one running) and their timers, a dying domain's vCPU is never
runnable, and no lookup (``dom``, ``entry``) makes state for a dying domain or finds another
domain's under the same id.

Time is the machine's ``Clock`` (refmodel/clock.py): a slice is a number of instructions, so a
run is deterministic. At every scheduling point the timers of ``pv.vtime`` (if installed)
expire; with every vCPU blocked the clock jumps to the next timer deadline (the idle loop).

The periodic tick (schedule.c, t_timer_fn: one timer per physical CPU, first run by
schedulers_start at boot, re-armed each time at NOW() + 10 ms): each tick counts
``schedule_data.tick`` and sends VIRQ_TIMER, after refreshing its time info, to the vCPU
running at that moment, and to nobody while the CPU is idle; a blocked vCPU is therefore never
woken by it. A slice ends at the next tick, so the running vCPU gets it at its time; the tick
runs at the scheduling point that follows and is re-armed 10 ms after that point (after an
idle stretch the ticks kept their 10 ms beat, each at its deadline). On a context switch
(schedule(): ``prev->sleep_tick = sd->tick``; ``next->sleep_tick != sd->tick`` sends a
timer event) a vCPU switched in after missing one or more ticks gets one timer event, not one
per tick missed. The idle loop does not stop at ticks: they send nothing, so a machine whose
vCPUs are all blocked with no timer set is idle ("idle"), as before.

The back ends (refmodel/backend.py) live in the backend domain, which is not one of the
scheduler's vCPUs: a notification to a back end marks its port pending there, and at every
scheduling point, before the timers and the choice of the next vCPU, the back ends with a
pending port run (``Backends.run_pending``), in zero system time. So a front end sees no
response before its slice ends (it blocks, yields or polls, its slice or a timer ends it: the
tick at the latest), and a back end's answer wakes it before the scheduler chooses. This is
how Xen 3.0.4's credit scheduler treats an I/O domain (sched_credit.c, csched_vcpu_wake: a
waking vCPU is boosted, __runq_tickle: it preempts the running one at the next scheduling
softirq), with the model's fixed choice of when that softirq comes: the end of the slice.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from xenspec.refmodel.domain import Domain, ShutdownReason, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

# sched_bvt.c.
MCU_NS = 100_000
MCU_ADVANCE = 10
CTX_ALLOW_NS = 5_000_000
# schedule.c, do_poll: "Fairly arbitrary limit."
MAX_POLL_PORTS = 128
SCHED_POLL_SIZE = 16  # sched.h, struct sched_poll on x86_32: ports, nr_ports, u64 timeout
# xen.h, NR_EVENT_CHANNELS (MAX_EVTCHNS) on x86_32: sizeof(unsigned long)^2 * 64.
MAX_EVTCHNS = 1024


def domain_shutdown(d: Domain, reason: int) -> None:
    """xen/common/domain.c, domain_shutdown: the domain stops with ``reason``. Xen keeps any
    8-bit code; the model records codes it does not know as a crash that says so."""
    if not d.is_running:
        return
    try:
        d.shutdown_reason = ShutdownReason(reason)
    except ValueError:
        d.crash(f"shutdown with unknown reason {reason}")
        return
    if d.shutdown_reason is ShutdownReason.crash:
        d.crash_reason = "the guest reported a crash (SHUTDOWN_crash)"


class SliceCPU(Protocol):
    """What the scheduler needs from the CPU substrate of one vCPU (refmodel/cpu.py)."""

    should_stop: Callable[[], bool]
    pending_exception: BaseException | None
    slice_traps: int

    def run_slice(self, max_instructions: int) -> int: ...

    def slice_progress(self) -> tuple[int, int]: ...

    def switch_in(self) -> None: ...


@dataclass
class VcpuSched:
    """A vCPU's scheduling state (sched_bvt.c, bvt_vcpu_info; sched.h vcpu_flags)."""

    v: Vcpu = field(repr=False)
    cpu: SliceCPU | None = field(repr=False)
    avt: int = 0
    evt: int = 0
    lastschd: int = 0
    blocked: bool = False
    poll_deadline: int | None = None  # the poll timer (absolute ns), while polling
    polling: bool = False  # _VCPUF_polling: blocked in SCHEDOP_poll
    sleep_tick: int = 0  # struct vcpu sleep_tick: the tick count when it left the CPU


@dataclass
class DomainSched:
    mcu_advance: int = MCU_ADVANCE
    paused: bool = False  # paused by the control software (DOMF_ctrl_pause)


@dataclass
class Switch:
    """One context switch, for tests and traces."""

    now_ns: int
    domid: int
    vcpu_id: int


@dataclass
class RunStats:
    context_switches: int = 0
    slices: int = 0
    idle_jumps: int = 0
    log: deque[Switch] = field(default_factory=lambda: deque(maxlen=1 << 16))


class Sched:
    """The scheduling hypercalls and the BVT scheduler of one platform."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.yields = 0
        self.ctx_allow_ns = CTX_ALLOW_NS
        self.vcpus: dict[tuple[int, int], VcpuSched] = {}
        self.domains: dict[int, DomainSched] = {}
        self.runqueue: list[VcpuSched] = []
        self.svt = 0
        self.current: VcpuSched | None = None
        self.slice_end = 0
        self.stats = RunStats()
        self._stop_requested = False
        self._resched = False
        self._planned_end = 0
        # The periodic tick (t_timer_fn): schedulers_start runs it once at boot (time 0).
        self.tick = 1
        self.next_tick_ns = abi.TIMER_TICK_NS

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["sched_op_compat"]: self.do_sched_op_compat,
            HYPERCALL_NUMBERS["sched_op"]: self.do_sched_op,
        }

    # ----------------------------------------------------------------------------------------
    # The other subsystems' view: pv.sched.wake(v), runnable, pause.
    # ----------------------------------------------------------------------------------------
    def entry(self, v: Vcpu) -> VcpuSched:
        """The vCPU's scheduling state, made on first use; a dying domain's vCPU gets a
        blocked one that is not kept (it never runs again, and its id may name a new domain)."""
        key = (v.domain.domain_id, v.vcpu_id)
        e = self.vcpus.get(key)
        if e is None or e.v is not v:
            e = VcpuSched(v, None, self.svt, self.svt)
            if v.domain.is_dying:
                e.blocked = True
                return e
            self.vcpus[key] = e
        return e

    def _stored(self, v: Vcpu) -> VcpuSched | None:
        """The vCPU's kept scheduling state, if any (never another vCPU's under the same id)."""
        e = self.vcpus.get((v.domain.domain_id, v.vcpu_id))
        return e if e is not None and e.v is v else None

    def dom(self, d: Domain) -> DomainSched:
        """The domain's scheduling state, made on first use; a dying domain's is paused and
        not kept: no lookup brings back a destroyed domain (domain_kill, _DOMF_dying)."""
        ds = self.domains.get(d.domain_id)
        if ds is None or d.is_dying:
            ds = DomainSched(paused=d.is_dying)
            if not d.is_dying:
                self.domains[d.domain_id] = ds
        return ds

    def attach(self, v: Vcpu, cpu: SliceCPU) -> None:
        """A vCPU with a CPU to run on (a domain starts paused until ``unpause``)."""
        e = self.entry(v)
        e.cpu = cpu
        e.avt = e.evt = self.svt
        cpu.should_stop = functools.partial(self._should_stop, e)
        vtime: Any = getattr(self.pv, "vtime", None)
        if vtime is not None:
            vtime.timer_set = self._timer_set
        events: Any = getattr(self.pv, "events", None)
        if events is not None and hasattr(events, "upcall_if_pending"):
            cpu.upcall = events.upcall_if_pending  # type: ignore[attr-defined]
            cpu.upcall_wanted = events.upcall_due(v)  # type: ignore[attr-defined]

    def detach(self, d: Domain) -> None:
        """``d`` is being destroyed: its vCPUs never run again (domain_kill: vcpu_sleep_sync
        on each; a dying domain's vCPU is never runnable) and their timers never fire (the
        model's timer_event writes into shared_info, which goes back to the heap)."""
        vtime: Any = getattr(self.pv, "vtime", None)
        for v in d.vcpus:
            key = (d.domain_id, v.vcpu_id)
            if vtime is not None:
                vtime.timers.pop(key, None)
            e = self.vcpus.get(key)
            if e is None or e.v is not v:
                continue
            del self.vcpus[key]
            release = getattr(e.cpu, "release", None)
            if release is not None:
                release()  # its processor's resources (the CPU substrate's engine)
            if e in self.runqueue:
                self.runqueue.remove(e)
            if e is self.current:
                self._stop_requested = True
                self.current = None  # descheduled: nothing charges or picks it again
        self.domains.pop(d.domain_id, None)

    def runnable(self, e: VcpuSched) -> bool:
        """sched.h, vcpu_runnable: not blocked, domain not paused and not shut down."""
        d = e.v.domain
        ds = self.domains.get(d.domain_id)
        return (e.cpu is not None and not e.blocked and d.is_running and not d.is_dying
                and ds is not None and not ds.paused)

    def wake(self, v: Vcpu) -> None:
        """An event is pending for ``v`` (evtchn_set_pending -> vcpu_unblock): a blocked or
        polling vCPU becomes runnable."""
        e = self._stored(v)
        if e is None or not e.blocked:
            return
        e.blocked = e.polling = False
        e.poll_deadline = None
        self._bvt_wake(e)

    def wake_polling(self, d: Domain) -> None:
        """evtchn_set_pending's last step: an event for ``d`` wakes its vCPUs blocked in
        SCHEDOP_poll, whatever the selector and mask bits say (_DOMF_polling)."""
        for v in d.vcpus:
            e = self._stored(v)
            if e is not None and e.polling:
                self.wake(v)

    def pause(self, d: Domain) -> None:
        """domain_pause_by_systemcontroller: none of ``d``'s vCPUs runs until unpaused."""
        self.dom(d).paused = True
        for v in d.vcpus:
            e = self._stored(v)
            if e is None:
                continue
            self._stop_current(e)
            if e in self.runqueue and e is not self.current:
                self.runqueue.remove(e)

    def unpause(self, d: Domain) -> None:
        self.dom(d).paused = False
        for v in d.vcpus:
            e = self._stored(v)
            if e is not None:
                self._bvt_wake(e)

    def is_paused(self, d: Domain) -> bool:
        return self.dom(d).paused

    def is_blocked(self, v: Vcpu) -> bool:
        e = self._stored(v)
        return e is not None and e.blocked

    def set_weight(self, d: Domain, mcu_advance: int) -> None:
        """bvt_adjdom: the domain's mcu_advance (the inverse of its weight), > 0."""
        if mcu_advance <= 0:
            raise ValueError("mcu_advance must be positive")
        self.dom(d).mcu_advance = mcu_advance

    # ----------------------------------------------------------------------------------------
    # BVT (sched_bvt.c).
    # ----------------------------------------------------------------------------------------
    def _now(self) -> int:
        return self.pv.clock.now_ns()

    def _bvt_wake(self, e: VcpuSched) -> None:
        if e in self.runqueue or not self.runnable(e):
            return
        self.runqueue.insert(0, e)
        e.avt = max(e.avt, self.svt)
        e.evt = e.avt
        cur = self.current
        if cur is None or cur is e:
            return
        now = self._now()
        min_time = cur.lastschd + self.ctx_allow_ns
        if min_time <= now:
            self._resched = True
            self._stop_requested = True
        elif min_time < self.slice_end:
            self.slice_end = min_time
            self._stop_requested = True  # end the running count early; budget is recomputed

    def _charge(self, prev: VcpuSched, now: int) -> None:
        ranfor = now - prev.lastschd
        mcus = -(-ranfor // MCU_NS)
        prev.avt += mcus * self.dom(prev.v.domain).mcu_advance
        prev.evt = prev.avt

    def _do_schedule(self, now: int) -> VcpuSched | None:
        """bvt_do_schedule: charge the vCPU that ran, pick the lowest evt, set the slice."""
        prev = self.current
        if prev is not None:
            self._charge(prev, now)
            if prev in self.runqueue:
                self.runqueue.remove(prev)
            if self.runnable(prev):
                self.runqueue.append(prev)
        self.runqueue = [e for e in self.runqueue if self.runnable(e)]
        nxt = second = None
        for e in self.runqueue:
            if nxt is None or e.evt < nxt.evt:
                nxt, second = e, nxt
            elif second is None or e.evt < second.evt:
                second = e
        if self.runqueue:
            self.svt = min(e.avt for e in self.runqueue)
        self.current = nxt
        self._resched = False
        if nxt is not prev:
            self._switch_tick(prev, nxt)
        if nxt is None:
            return None
        if second is None:
            r_time = 10 * self.ctx_allow_ns
        else:
            adv = self.dom(nxt.v.domain).mcu_advance
            r_time = (second.evt - nxt.evt) // adv + self.ctx_allow_ns
        self.slice_end = now + r_time
        nxt.lastschd = now
        if nxt is not prev:
            self.stats.context_switches += 1
            self.stats.log.append(Switch(now, nxt.v.domain.domain_id, nxt.v.vcpu_id))
        return nxt

    def _switch_tick(self, prev: VcpuSched | None, nxt: VcpuSched | None) -> None:
        """schedule(), on a context switch: the vCPU leaving records the tick count; the one
        switched in has its time info refreshed (update_vcpu_system_time) and gets a timer
        event if a tick passed since it left (one, however many)."""
        if prev is not None:
            prev.sleep_tick = self.tick
        vtime: Any = getattr(self.pv, "vtime", None)
        if nxt is None or vtime is None:
            return
        if nxt.sleep_tick != self.tick:
            vtime.timer_event(nxt.v)  # send_timer_event, which refreshes the time info too
        else:
            vtime.update_vcpu_time(nxt.v)

    def _should_stop(self, e: VcpuSched) -> bool:
        """Asked after every trap (so it is two comparisons): end the slice if the scheduler
        wants the CPU or the traps' cost used the slice up. Whatever else ends a slice early
        says so where it happens, through ``_stop_requested``: the running vCPU blocks, polls,
        is paused or detached (``_stop_current``), a timer is set to fire before the slice's
        end (``_timer_set``), another vCPU wakes with a claim (``_bvt_wake``). A domain that
        stops running is seen by the CPU itself, which asks this only of a running domain."""
        return self._stop_requested or self.pv.clock.now_ns() >= self._planned_end

    def _stop_current(self, e: VcpuSched) -> None:
        """``e`` can no longer run: if it is running, its slice ends at this trap."""
        if e is self.current:
            self._stop_requested = True

    def _timer_set(self, deadline_ns: int) -> None:
        """vtime's do_set_timer_op set a timer: the slice under way must end by then."""
        if deadline_ns < self._planned_end:
            self._stop_requested = True

    # ----------------------------------------------------------------------------------------
    # Timers: the event engineer's vtime and the poll timers.
    # ----------------------------------------------------------------------------------------
    def _expire(self, now: int) -> None:
        vtime: Any = getattr(self.pv, "vtime", None)
        if vtime is not None:
            vtime.expire(now)
        for e in list(self.vcpus.values()):
            if e.blocked and e.poll_deadline is not None and e.poll_deadline <= now:
                self.wake(e.v)
        self._t_timer(now, vtime)

    def _t_timer(self, now: int, vtime: Any) -> None:
        """t_timer_fn, if the tick is due: to the vCPU that ran up to now (the slice ends at
        the tick) a timer event, and the next tick 10 ms from now; with nothing running (the
        idle loop, or the vCPU that ran blocked or stopped) every tick that fell due counts,
        each at its own deadline, and sends nothing."""
        if now < self.next_tick_ns:
            return
        cur = self.current
        if cur is not None and self.runnable(cur):
            self.tick += 1
            self.next_tick_ns = now + abi.TIMER_TICK_NS
            if vtime is not None:
                vtime.tick(cur.v)
            return
        missed = (now - self.next_tick_ns) // abi.TIMER_TICK_NS + 1
        self.tick += missed
        self.next_tick_ns += missed * abi.TIMER_TICK_NS

    def next_deadline_ns(self) -> int | None:
        found: list[int] = []
        vtime: Any = getattr(self.pv, "vtime", None)
        if vtime is not None:
            t = vtime.next_deadline_ns()
            if t is not None:
                found.append(int(t))
        found += [e.poll_deadline for e in self.vcpus.values()
                  if e.blocked and e.poll_deadline is not None]
        return min(found) if found else None

    # ----------------------------------------------------------------------------------------
    # The run loop.
    # ----------------------------------------------------------------------------------------
    def run(self, until_ns: int | None = None, timeout_s: float = 0.0) -> str:
        """Run the machine's vCPUs until every domain has shut down ("shutdown"), nothing can
        run and no timer is set ("idle"), system time reaches ``until_ns`` ("limit"), the
        wall-clock guard ``timeout_s`` passes ("timeout"), or the model fails ("bug")."""
        wall_end = time.monotonic() + timeout_s if timeout_s > 0 else None
        backends: Any = getattr(self.pv, "backends", None)
        while True:
            if backends is not None:
                backends.run_pending()  # the backend domain's turn (the module's docstring)
            stop = self._loop_check(until_ns, wall_end)
            if stop is not None:
                return stop
            now = self._now()
            self._expire(now)
            cur = self.current
            if cur is None or self._resched or not self.runnable(cur) or now >= self.slice_end:
                cur = self._do_schedule(now)
            if cur is None:
                stop = self._idle(until_ns)
                if stop is not None:
                    return stop
                continue
            if self._run_slice(cur, until_ns):
                return "bug"

    def _loop_check(self, until_ns: int | None, wall_end: float | None) -> str | None:
        if not any(e.v.domain.is_running for e in self.vcpus.values()):
            return "shutdown"
        if until_ns is not None and self._now() >= until_ns:
            return "limit"
        if wall_end is not None and time.monotonic() >= wall_end:
            return "timeout"
        return None

    def _idle(self, until_ns: int | None) -> str | None:
        backends: Any = getattr(self.pv, "backends", None)
        if backends is not None and backends.has_pending():
            return None  # a back end was sent an event meanwhile: it runs first
        t = self.next_deadline_ns()
        if t is None:
            return "idle"
        if until_ns is not None and t > until_ns:
            self.pv.clock.idle_until(until_ns)
            return "limit"
        self.stats.idle_jumps += 1
        self.pv.clock.idle_until(t)
        return None

    def _run_slice(self, e: VcpuSched, until_ns: int | None) -> bool:
        """Run ``e`` to the end of its slice, the next timer or the limit; True on a bug."""
        cpu = e.cpu
        assert cpu is not None
        clock = self.pv.clock
        now = clock.now_ns()
        end = self.slice_end
        deadline = self.next_deadline_ns()
        if deadline is not None and deadline > now:
            end = min(end, deadline)
        end = min(end, self.next_tick_ns)  # the tick goes to the vCPU running at its time
        if until_ns is not None:
            end = min(end, until_ns)
        self._stop_requested = False
        self._planned_end = end
        cpu.switch_in()
        if not self.runnable(e) or self._should_stop(e):  # the switch-in may end the domain
            return False
        clock.slice_started(e.v.domain, cpu.slice_progress)
        ran = cpu.run_slice(clock.instructions_for(end - now))
        clock.slice_ended(e.v.domain, ran, cpu.slice_traps)
        self.stats.slices += 1
        return cpu.pending_exception is not None

    # ----------------------------------------------------------------------------------------
    # Hypercalls.
    # ----------------------------------------------------------------------------------------
    def _yield(self, v: Vcpu) -> int:
        self.yields += 1
        if self.current is not None and self.current.v is v:
            self._resched = True
            self._stop_requested = True
        return 0

    def _block(self, v: Vcpu) -> int:
        """do_block: enable event delivery, block unless an event is pending already."""
        self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)
        events: Any = getattr(self.pv, "events", None)
        if events is None:
            return self._yield(v)  # nothing could ever wake it
        if not events.has_pending(v):
            e = self.entry(v)
            e.blocked = True
            self._stop_current(e)
        return 0

    def _poll(self, v: Vcpu, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, SCHED_POLL_SIZE)
        if raw is None:
            return -abi.EFAULT
        ports_va = int.from_bytes(raw[0:4], "little")
        nr_ports = int.from_bytes(raw[4:8], "little")
        timeout = int.from_bytes(raw[8:16], "little")
        if nr_ports > MAX_POLL_PORTS:
            return -abi.EINVAL
        if not self.hv.array_access_ok(ports_va, nr_ports, 4):
            return -abi.EFAULT
        if not self.pv.vcpu_info_read8(v, abi.VCPU_INFO_evtchn_upcall_mask):
            return -abi.EINVAL
        ports = self.hv.copy_from_guest(v, ports_va, 4 * nr_ports) if nr_ports else b""
        if ports is None:
            return -abi.EFAULT
        events: Any = getattr(self.pv, "events", None)
        for i in range(nr_ports):
            port = int.from_bytes(ports[4 * i : 4 * i + 4], "little")
            if port >= MAX_EVTCHNS:
                return -abi.EINVAL
            if events is not None and hasattr(events, "port_pending") \
                    and events.port_pending(v.domain, port):
                return 0
        e = self.entry(v)
        e.blocked = e.polling = True
        e.poll_deadline = timeout if timeout != 0 else None
        self._stop_current(e)
        return 0

    def do_sched_op_compat(self, v: Vcpu, cmd: int, arg: int) -> int:
        if cmd == abi.SCHEDOP_yield:
            return self._yield(v)
        if cmd == abi.SCHEDOP_block:
            return self._block(v)
        if cmd == abi.SCHEDOP_shutdown:
            domain_shutdown(v.domain, arg & 0xFF)
            return 0
        return -abi.ENOSYS

    def do_sched_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        if cmd == abi.SCHEDOP_yield:
            return self._yield(v)
        if cmd == abi.SCHEDOP_block:
            return self._block(v)
        if cmd == abi.SCHEDOP_poll:
            return self._poll(v, arg)
        if cmd == abi.SCHEDOP_shutdown:
            raw = self.hv.copy_from_guest(v, arg, 4)
            if raw is None:
                return -abi.EFAULT
            domain_shutdown(v.domain, int.from_bytes(raw, "little") & 0xFF)
            return 0
        if cmd == abi.SCHEDOP_remote_shutdown:
            return self._remote_shutdown(v, arg)
        return -abi.ENOSYS

    def _remote_shutdown(self, v: Vcpu, arg: int) -> int:
        if not v.domain.is_privileged:
            return -abi.EPERM
        raw = self.hv.copy_from_guest(v, arg, 8)
        if raw is None:
            return -abi.EFAULT
        target = self.hv.domains.get(int.from_bytes(raw[0:2], "little"))
        if target is None:
            return -abi.ESRCH
        domain_shutdown(target, int.from_bytes(raw[4:8], "little") & 0xFF)
        return 0

"""Time: each vCPU's ``vcpu_time_info``, the domain's wallclock in shared_info, the one-shot
timer of ``set_timer_op`` (15) and VIRQ_TIMER.

Rules from Xen 3.0.4. xen/arch/x86/time.c: system time is nanoseconds since the machine
booted, derived from the TSC; update_vcpu_system_time publishes, per vCPU, a TSC stamp, the
system time at that stamp and the TSC's scale (tsc_to_system_mul, tsc_shift as set_time_scale
computes them), bumping ``version`` to odd before and to even after the update, so that a guest
computes system_time + ((((tsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul) >> 32) from
its own RDTSC; update_domain_wallclock_time publishes wc_sec/wc_nsec, the wall-clock time at
system time 0, under wc_version the same way. xen/common/schedule.c: do_set_timer_op sets the
vCPU's one-shot timer to an absolute system time (0 stops it; a deadline that is negative or
2^50 ns or more ahead becomes now + 1 ms); vcpu_timer_fn and the 10 ms per-CPU tick
(t_timer_fn) send VIRQ_TIMER (send_timer_event). The scheduler (refmodel/sched.py) runs the
tick: ``tick`` for the vCPU running when it falls due, ``timer_event`` for a vCPU switched in
after missing ticks (schedule(), sleep_tick).

The TSC the guest reads. Unicorn 2.1.4 executes RDTSC as the host's own TSC (measured: the
value a guest reads lies between two host RDTSCs around it). Two modes follow:

* host TSC (the default): the model reads the host TSC too (``host_tsc``), calibrates its rate
  once per process, and system time (``now_ns``) is that TSC scaled from the machine's
  creation, Xen's own definition. Consistent with the guest, but not deterministic.
* clock TSC: once the CPU substrate makes RDTSC return ``guest_tsc()`` it calls
  ``use_guest_tsc()``; system time is then the platform clock's ``now_ns()`` (deterministic)
  and the guest's TSC is that time at a nominal GUEST_TSC_HZ, so the guest's extrapolation is
  exact.

Timers compare deadlines with ``now_ns()``.

The wall clock. Xen sets it from the platform's RTC at boot (time.c, init_xen_time:
get_cmos_time) and the tools may set it (DOM0_SETTIME). The model's machine has no RTC: its
wall-clock time at system time 0 is a parameter, ``DEFAULT_WALLCLOCK_S`` unless set
(``set_wallclock``; ``xenspec run --wallclock``), never the host's clock, so that two runs of
the same guest give identical consoles and traces.

Real and virtual time (SOSP'03 s2.3, s3.3.2): Xen 3.0 gives the guest real time (system time,
wallclock) in shared_info and no separate virtual-time field; a vCPU's run time is reported by
VCPUOP_get_runstate_info (vcpu_runstate_info.time[RUNSTATE_running]). ``virtual_time_ns``
provides that quantity from the platform clock's ``domain_run_ns`` when it has one.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_MASK64 = (1 << 64) - 1
_NS_PER_S = 1_000_000_000


# ------------------------------------------------------------------------------------------------
# The host TSC.
# ------------------------------------------------------------------------------------------------
def _rdtsc_function() -> Callable[[], int] | None:
    """``rdtsc; shl $32,%rdx; or %rdx,%rax; ret`` in an executable page (x86-64 hosts)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        buf = mmap.mmap(-1, mmap.PAGESIZE,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, AttributeError):
        return None
    buf.write(b"\x0f\x31\x48\xc1\xe2\x20\x48\x09\xd0\xc3")
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    _keep.append((buf, fn))
    return lambda: int(fn())


_keep: list[object] = []
_rdtsc: Callable[[], int] | None = None
_rdtsc_probed = False


def host_tsc() -> int:
    """The host's TSC, which is what a guest's RDTSC returns on the substrate; hosts without
    one fall back to a nanosecond counter (then the guest's TSC is not the model's)."""
    global _rdtsc, _rdtsc_probed
    if not _rdtsc_probed:
        _rdtsc, _rdtsc_probed = _rdtsc_function(), True
    return _rdtsc() if _rdtsc is not None else time.perf_counter_ns()


_tsc_hz: int | None = None


def tsc_hz() -> int:
    """The TSC's rate, measured once per process over about 10 ms."""
    global _tsc_hz
    if _tsc_hz is None:
        t0, c0 = time.perf_counter_ns(), host_tsc()
        while time.perf_counter_ns() - t0 < 10_000_000:
            pass
        t1, c1 = time.perf_counter_ns(), host_tsc()
        _tsc_hz = max(1, (c1 - c0) * _NS_PER_S // max(1, t1 - t0))
    return _tsc_hz


@dataclass(frozen=True)
class TimeScale:
    """time.c, struct time_scale: ns = ((ticks << shift) * mul_frac) >> 32."""

    mul_frac: int
    shift: int

    def scale(self, ticks: int) -> int:
        t = ticks << self.shift if self.shift >= 0 else ticks >> -self.shift
        return (t * self.mul_frac) >> 32


def set_time_scale(ticks_per_sec: int) -> TimeScale:
    """time.c, set_time_scale: bring the rate into (1e9, 2e9] by shifting, then the 32-bit
    fraction 1e9 / rate."""
    tps, shift = ticks_per_sec, 0
    while tps > 2 * _NS_PER_S:
        tps >>= 1
        shift -= 1
    tps &= 0xFFFFFFFF
    while tps <= _NS_PER_S:
        tps <<= 1
        shift += 1
    return TimeScale((_NS_PER_S << 32) // tps, shift)


# The guest's TSC rate in the clock-TSC mode: 2 ticks per ns, so that the scale is exact.
GUEST_TSC_HZ = 2 * _NS_PER_S
GUEST_TSC_SCALE = set_time_scale(GUEST_TSC_HZ)


# The wall-clock time at the machine's boot (system time 0) unless set otherwise, in seconds
# since the Unix epoch: 2023-11-14 22:13:20 UTC, a round 1.7e9 s.
DEFAULT_WALLCLOCK_S = 1_700_000_000


class Clock(Protocol):
    def now_ns(self) -> int: ...


# ------------------------------------------------------------------------------------------------
# The subsystem.
# ------------------------------------------------------------------------------------------------
class VTime:
    """Time and timers of one platform (``pv.vtime``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.tsc_from_clock = False
        self._host_scale: TimeScale | None = None
        self.boot_tsc = host_tsc()
        # Wall-clock time at system time 0 (the machine's boot): fixed, not the host's.
        self.boot_wall_ns = DEFAULT_WALLCLOCK_S * _NS_PER_S
        self.timers: dict[tuple[int, int], int] = {}  # (domid, vcpu_id) -> deadline
        self.fired = 0
        # Told of every deadline set (the scheduler: a slice must end by then).
        self.timer_set: Callable[[int], None] | None = None

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["set_timer_op"]: self.do_set_timer_op}

    # --- system time and the TSC ---------------------------------------------------------------
    def _clock(self) -> Clock | None:
        clock: Clock | None = getattr(self.pv, "clock", None)
        return clock if self.tsc_from_clock else None

    def use_guest_tsc(self) -> None:
        """The substrate's RDTSC now returns ``guest_tsc()``: switch to the clock TSC and
        republish every vCPU's time info."""
        if getattr(self.pv, "clock", None) is None:
            raise RuntimeError("the clock TSC needs the platform clock (pv.clock)")
        self.tsc_from_clock = True
        for d in self.hv.domains.values():
            if d.domain_id in self.pv.arch_d:
                for v in d.vcpus:
                    self.update_vcpu_time(v)

    @property
    def scale(self) -> TimeScale:
        if self.tsc_from_clock:
            return GUEST_TSC_SCALE
        if self._host_scale is None:
            self._host_scale = set_time_scale(tsc_hz())
        return self._host_scale

    def now_ns(self) -> int:
        """NOW(): system time in ns since the machine booted."""
        clock = self._clock()
        if clock is not None:
            return int(clock.now_ns())
        return self.scale.scale(host_tsc() - self.boot_tsc)

    def guest_tsc(self) -> int:
        """The TSC a guest reads: the clock's time at GUEST_TSC_HZ, or the host's TSC."""
        clock = self._clock()
        if clock is not None:
            return int(clock.now_ns()) * (GUEST_TSC_HZ // _NS_PER_S) & _MASK64
        return host_tsc()

    def virtual_time_ns(self, v: Vcpu) -> int | None:
        """The domain's run time (SOSP'03 "virtual time"), from the platform clock if any."""
        clock = getattr(self.pv, "clock", None)
        run = getattr(clock, "domain_run_ns", None)
        return None if run is None else int(run(v.domain))

    # --- shared_info ---------------------------------------------------------------------------
    def setup_domain(self, d: Domain) -> None:
        """Start of day: every vCPU's time info and the wallclock are valid."""
        self.update_wallclock(d)
        for v in d.vcpus:
            self.update_vcpu_time(v)

    def update_vcpu_time(self, v: Vcpu) -> None:
        """update_vcpu_system_time: version odd, the fields, version even. A dying domain
        has no shared_info any more: nothing is written."""
        info = self.pv.vcpu_info_if_shared(v)
        if info is None:
            return
        base = info + abi.VCPU_INFO_time
        mem = self.hv.memory
        version = int.from_bytes(mem.read(base, 4), "little")
        version = (version + 1) | 1  # odd while the fields change
        mem.write(base, version.to_bytes(4, "little"))
        tsc, now = self.guest_tsc(), self.now_ns()
        fields = abi.VCPU_TIME_INFO_T.pack(version, 0, tsc & _MASK64, now & _MASK64,
                                           self.scale.mul_frac, self.scale.shift)
        mem.write(base + 4, fields[4:])
        mem.write(base, ((version + 1) & 0xFFFFFFFF).to_bytes(4, "little"))

    def set_wallclock(self, wall_ns: int) -> None:
        """The wall-clock time at system time 0 becomes ``wall_ns`` ns since the epoch,
        published to every domain's shared_info (time.c, do_settime for a system_time_base
        of 0, as DOM0_SETTIME does it)."""
        if not 0 <= wall_ns < (1 << 32) * _NS_PER_S:
            raise ValueError("the wall clock must fit wc_sec, 32 bits of seconds")
        self.boot_wall_ns = wall_ns
        for d in self.hv.domains.values():
            a = self.pv.arch_d.get(d.domain_id)
            if a is not None and a.shared_info_mfn:
                self.update_wallclock(d)

    def update_wallclock(self, d: Domain) -> None:
        """update_domain_wallclock_time: wc_version odd, wc_sec/wc_nsec, wc_version even."""
        base = self.pv.darch(d).shared_info_mfn << abi.PAGE_SHIFT
        mem = self.hv.memory
        at = base + abi.SHARED_INFO_wc_version
        version = (int.from_bytes(mem.read(at, 4), "little") + 1) | 1
        mem.write(at, version.to_bytes(4, "little"))
        sec, nsec = divmod(self.boot_wall_ns, _NS_PER_S)
        mem.write(base + abi.SHARED_INFO_wc_sec, (sec & 0xFFFFFFFF).to_bytes(4, "little"))
        mem.write(base + abi.SHARED_INFO_wc_nsec, nsec.to_bytes(4, "little"))
        mem.write(at, ((version + 1) & 0xFFFFFFFF).to_bytes(4, "little"))

    # --- the one-shot timer --------------------------------------------------------------------
    def do_set_timer_op(self, v: Vcpu, lo: int, hi: int) -> int:
        """Hypercall 15: the vCPU's one-shot timer at absolute system time hi:lo (signed)."""
        timeout = hi << 32 | lo
        if timeout >> 63:
            timeout -= 1 << 64
        key = (v.domain.domain_id, v.vcpu_id)
        if timeout == 0:
            self.timers.pop(key, None)
            return 0
        now = self.now_ns()
        offset = timeout - now
        if timeout < 0 or (offset > 0 and offset >> abi.TIMER_HUGE_SHIFT):
            timeout = now + abi.TIMER_HUGE_DELAY_NS
        self.timers[key] = timeout
        if self.timer_set is not None:
            self.timer_set(timeout)
        if timeout <= now:
            self.expire(now)
        return 0

    def expire(self, now_ns: int | None = None) -> list[Vcpu]:
        """Fire every timer due at ``now_ns`` (vcpu_timer_fn): VIRQ_TIMER to its vCPU. Returns
        the vCPUs whose timer fired. With the host TSC, system time is the host's and
        ``now_ns`` is ignored: the guest's deadlines are in that time."""
        if now_ns is None or not self.tsc_from_clock:
            now_ns = self.now_ns()
        due = [k for k, t in self.timers.items() if t <= now_ns]
        fired: list[Vcpu] = []
        for domid, vcpu_id in due:
            del self.timers[(domid, vcpu_id)]
            d = self.hv.domains.get(domid)
            if d is None or vcpu_id >= len(d.vcpus):
                continue
            self.timer_event(d.vcpus[vcpu_id])
            fired.append(d.vcpus[vcpu_id])
        return fired

    def tick(self, v: Vcpu) -> None:
        """t_timer_fn: the 10 ms tick (abi.TIMER_TICK_NS) of the vCPU running on the CPU."""
        self.timer_event(v)

    def timer_event(self, v: Vcpu) -> None:
        """send_timer_event, after refreshing the vCPU's time info."""
        self.fired += 1
        self.update_vcpu_time(v)
        events = getattr(self.pv, "events", None)
        if events is not None and v.domain.is_running:
            events.send_virq(v, abi.VIRQ_TIMER)

    def next_deadline_ns(self) -> int | None:
        """The earliest pending one-shot deadline, or None."""
        return min(self.timers.values(), default=None)

    def deadline(self, v: Vcpu) -> int | None:
        return self.timers.get((v.domain.domain_id, v.vcpu_id))

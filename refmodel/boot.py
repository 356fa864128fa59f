"""Boot guest kernel images on the reference hypervisor and collect what they report.

A ``Machine`` is one machine, its paravirtual platform and the CPU substrate of each vCPU
(refmodel/cpu.py, one Unicorn engine per vCPU over the same machine memory). ``add_guest``
builds a domain from a kernel image (refmodel/elfbuild.py) and gives its vCPU to the scheduler
(refmodel/sched.py), which shares the one emulated CPU between the domains until they shut
down. ``boot`` is the one-guest case: it returns the console text and the shutdown reason. A
guest that prints an XTF-style ``Test result:`` line reports its own verdict (design decision
D6).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain, ShutdownReason, Vcpu
from xenspec.refmodel.elfbuild import GuestImage, build_domain, load_image_file
from xenspec.refmodel.hypervisor import (
    HYPERCALL_NAMES,
    HypercallRecord,
    Hypervisor,
    HypervisorBug,
)
from xenspec.refmodel.platform import STUB_VIRT, PVPlatform, gdt_virt_start
from xenspec.spec import abi
from xenspec.spec.abi_profiles import DEFAULT_PROFILE, AbiProfile

if TYPE_CHECKING:
    from xenspec.refmodel.blkback import VbdDevice
    from xenspec.refmodel.cpu import UnicornCPU

_RESULT = re.compile(rb"Test result: (SUCCESS|SKIP|ERROR|FAILURE)")
# The hypercall records a traced machine keeps (BootResult.trace): the last TRACE_RECORDS; a
# printed trace (``on_trace``) sees every record as it happens, and ``calls`` counts them all.
TRACE_RECORDS = 1 << 16


@dataclass
class BootResult:
    console: str
    reason: ShutdownReason | None
    crash_reason: str | None
    timed_out: bool
    traps: int
    bounces: int
    trace: list[HypercallRecord] = field(default_factory=list)  # the last TRACE_RECORDS
    calls: dict[int, int] = field(default_factory=dict)  # completed hypercalls by number
    hv: Hypervisor | None = None  # the machine, for checks after the run
    violations: list[str] = field(default_factory=list)
    domid: int = 0
    stop: str = ""  # why the run ended: shutdown, idle, limit, timeout (Sched.run)
    run_ns: int = 0  # the domain's run time

    @property
    def test_result(self) -> str:
        """SUCCESS, SKIP, ERROR or FAILURE from the last result line; CRASH if none."""
        found = _RESULT.findall(self.console.encode("latin-1", "replace"))
        return found[-1].decode() if found else "CRASH"

    @property
    def exit_status(self) -> int:
        """poweroff 0, crash 1, reboot 2, suspend 3, no shutdown (timeout) 4."""
        return {
            ShutdownReason.poweroff: 0, ShutdownReason.crash: 1,
            ShutdownReason.reboot: 2, ShutdownReason.suspend: 3,
        }.get(self.reason, 4) if self.reason is not None else 4


def invariant_checker(hv: Hypervisor) -> Callable[[Hypervisor], list[str]]:
    """The checks of ``hv``'s profile, step after step: the specification's invariants,
    re-evaluated where the state changed (refmodel/view.py ``IncrementalChecker``, held to the
    full check by tests/test_incremental_check.py; a new checker's first check is a full
    one), for compat-pae with refmodel/view_pae.py's count rules."""
    if hv.profile.paging_levels == 3:
        from xenspec.refmodel.view_pae import PaeChecker

        return PaeChecker(hv)
    from xenspec.refmodel.view import IncrementalChecker

    checker = IncrementalChecker(hv)

    def check(machine: Hypervisor) -> list[str]:
        assert machine is hv
        return checker.check()

    return check


class Machine:
    """One machine running any number of guest domains on one emulated CPU."""

    def __init__(
        self,
        memory_mb: int = 64,
        trace: bool = False,
        console: Callable[[int, bytes], None] | None = None,
        on_trace: Callable[[HypercallRecord], None] | None = None,
        check_invariants: bool = False,
        setup: Callable[[Hypervisor, PVPlatform], None] | None = None,
        devices: bool = False,
        wallclock_s: int | None = None,
        backend_domid: int | None = None,
        ring_console: Callable[[int, bytes], None] | None = None,
        verbose_console: bool = True,
        profile: AbiProfile = DEFAULT_PROFILE,
    ) -> None:
        """``backend_domid``: the id of the domain the model's back ends act for, created at
        once (refmodel/backend.py; default: created on first use as BACKEND_DOMID).
        ``console`` receives console_io output and ``ring_console`` the console rings' (both
        go to ``console`` without it). ``verbose_console`` False is a release build of Xen:
        console_io is domain 0's only (refmodel/console.py)."""
        self.devices = devices  # the default of add_guest: store and console rings
        self.hv = hv = Hypervisor(memory_mb * 256, profile=profile)
        self.pv = pv = PVPlatform(hv)
        if wallclock_s is not None:  # the wall clock at boot (default vtime's fixed one)
            pv.vtime.set_wallclock(wallclock_s * 1_000_000_000)
        if setup is not None:
            setup(hv, pv)
        if console is not None:
            pv.console_out = console
        pv.ring_out = ring_console
        pv.console.verbose = verbose_console
        if backend_domid is not None:
            pv.backends.domid = backend_domid
            pv.backends.domain()
        if trace or on_trace is not None:
            hv.trace = HypercallLog(on_trace)
        from xenspec.refmodel.domctl import DomCtl
        from xenspec.refmodel.memop import MemOp

        self.memop = MemOp(pv)
        hv.hypercall_table.update(self.memop.hypercalls())
        self.domctl = DomCtl(self)
        self.cpus: dict[int, UnicornCPU] = {}
        self.disks: list[VbdDevice] = []  # attach_disk
        self.violations: list[str] = []
        self.check_invariants = check_invariants
        self.stop = ""
        # The wall-clock end of the run under way (run's timeout_s), None without one.
        self.wall_end: float | None = None
        if check_invariants:
            self._check_each_hypercall()

    def add_guest(
        self, image: GuestImage | str, domain_mb: int = 16, cmdline: str = "",
        privileged: bool = False, paused: bool = False, devices: bool | None = None,
    ) -> Domain:
        """Build a domain from ``image`` (BuildError for a bad image or no memory) and make
        it runnable (or leave it paused, as Xen's domain builder does until unpause). With
        ``devices`` (default: the machine's), the tools also give it a store and a console
        ring served by the backend domain (refmodel/backend.py)."""
        from xenspec.refmodel.cpu import UnicornCPU

        if isinstance(image, str):
            image = load_image_file(image, domain_mb << 20, self.hv.profile)
        pv = self.pv
        built = build_domain(self.hv, pv, image, domain_mb * 256, cmdline=cmdline,
                             privileged=privileged,
                             devices=self.devices if devices is None else devices)
        d = built.domain
        v = d.vcpus[0]
        arch = pv.arch(v)
        cpu = UnicornCPU(self.hv.memory, v, pv.traps, gdt_virt_start(v), STUB_VIRT,
                         pv.darch(d).stub_mfn << 12, self.hv.walk)
        cpu.virtual_ts = lambda: arch.virtual_ts
        cpu.reload_segments = pv.desc.reload_data_segments
        cpu.failsafe = pv.traps.failsafe_callback
        arch.cpu = cpu
        cpu.start(built.regs)
        vtime = getattr(pv, "vtime", None)
        if vtime is not None and hasattr(vtime, "use_guest_tsc"):
            cpu.set_rdtsc(vtime.guest_tsc)  # the guest's TSC follows the machine's clock
            vtime.use_guest_tsc()
        self.cpus[d.domain_id] = cpu
        pv.sched.attach(v, cpu)
        pv.sched.pause(d)
        if not paused:
            pv.sched.unpause(d)
        return d

    def attach_disk(self, domid: int, path: str, readonly: bool = False,
                    barrier: bool = True) -> VbdDevice:
        """Give domain ``domid`` a virtual block device (blkif, vbd 768) backed by the image
        file ``path`` and served by the backend domain (refmodel/blkback.py): the tools'
        xenstore keys and the back end waiting for the front end. ImageError for an image
        that cannot be used; ValueError for a domain without a store (``devices``)."""
        from xenspec.refmodel.blkback import DiskImage, VbdDevice

        if domid not in self.hv.domains or domid not in self.pv.xenstore.conns:
            raise ValueError(f"domain {domid} does not exist or has no store ring")
        dev = VbdDevice(self.pv, domid, DiskImage(path, readonly), barrier=barrier)
        dev.attach()
        self.disks.append(dev)
        return dev

    def run(self, until_ns: int | None = None, timeout_s: float = 0.0) -> str:
        """Run until every domain has stopped or nothing can run (see ``Sched.run``); raise
        HypervisorBug if the model failed (KeyboardInterrupt passes through). ``timeout_s``
        bounds the run's wall-clock time whatever it does: the scheduler checks it between
        slices, and once it has passed the checks of ``check_invariants`` stop until the end
        of the run (the state is checked once more then), so that the slice under way ends
        as quickly as it would without them."""
        self.wall_end = time.monotonic() + timeout_s if timeout_s > 0 else None
        self.stop = self.pv.sched.run(until_ns=until_ns, timeout_s=timeout_s)
        for cpu in self.cpus.values():
            exc = cpu.pending_exception
            if isinstance(exc, KeyboardInterrupt):
                raise exc
            if exc is not None:
                raise HypervisorBug(str(exc)) from exc
        if self.check_invariants and not self.violations:
            check = invariant_checker(self.hv)
            self.violations.extend(f"at the end: {f}" for f in check(self.hv))
        return self.stop

    def result(self, d: Domain) -> BootResult:
        cpu = self.cpus.get(d.domain_id)
        return BootResult(
            console=self.pv.darch(d).console.decode("latin-1"),
            reason=d.shutdown_reason,
            crash_reason=d.crash_reason,
            timed_out=self.stop in ("timeout", "limit"),
            traps=cpu.traps if cpu is not None else 0,
            bounces=self.pv.traps.bounces,
            trace=list(self.hv.trace or []),
            calls=dict(self.hv.trace.calls) if isinstance(self.hv.trace, HypercallLog) else {},
            hv=self.hv,
            violations=list(self.violations),
            domid=d.domain_id,
            stop=self.stop,
            run_ns=self.pv.clock.domain_run_ns(d),
        )

    def timed_out(self) -> bool:
        """The run under way has passed its wall-clock timeout."""
        return self.wall_end is not None and time.monotonic() >= self.wall_end

    def _check_each_hypercall(self) -> None:
        check = invariant_checker(self.hv)
        plain = self.pv.traps.hypercall
        hv, violations = self.hv, self.violations

        def checked_hypercall(v: Vcpu, nr: int, *args: int) -> int:
            rc = plain(v, nr, *args)
            if not violations and not self.timed_out():
                found = check(hv)
                if found:
                    violations.extend(f"after {HYPERCALL_NAMES.get(nr, nr)}: {f}"
                                      for f in found)
                    v.domain.crash("invariant violated: " + violations[0])
            return rc

        self.pv.traps.hypercall = checked_hypercall


def boot(
    image: GuestImage | str,
    memory_mb: int = 64,
    domain_mb: int = 16,
    cmdline: str = "",
    trace: bool = False,
    console: Callable[[bytes], None] | None = None,
    timeout_s: float = 0.0,
    on_trace: Callable[[HypercallRecord], None] | None = None,
    check_invariants: bool = False,
    setup: Callable[[Hypervisor, PVPlatform], None] | None = None,
    until_ns: int | None = None,
    devices: bool = False,
    profile: AbiProfile = DEFAULT_PROFILE,
) -> BootResult:
    """Boot ``image`` (a parsed image or a path) alone on a machine; raises BuildError for a
    bad image and HypervisorBug if the model itself fails. With ``check_invariants`` every
    invariant is checked after each hypercall (slow); the first violation stops the guest and
    is reported in ``violations``. ``setup`` is called with the new machine before the domain
    is built (the conformance suite's broken implementations alter one rule there).
    ``timeout_s`` is a wall-clock guard; ``until_ns`` stops at that system time.
    ``devices`` gives the domain its store and console rings (Machine.add_guest);
    ``profile`` is the machine's ABI profile."""
    out = None if console is None else (lambda _domid, data: console(data))
    m = Machine(memory_mb, trace=trace, console=out, on_trace=on_trace,
                check_invariants=check_invariants, setup=setup, devices=devices,
                profile=profile)
    d = m.add_guest(image, domain_mb, cmdline)
    m.run(until_ns=until_ns, timeout_s=timeout_s)
    return m.result(d)


class HypercallLog(deque[HypercallRecord]):
    """A machine's hypercall trace: the last TRACE_RECORDS records, each also handed to
    ``sink`` as it is appended, and the number of completed hypercalls of each number (the
    numbers past the hypercall table counted together, as NR_hypercalls)."""

    def __init__(self, sink: Callable[[HypercallRecord], None] | None = None) -> None:
        super().__init__(maxlen=TRACE_RECORDS)
        self.sink = sink
        self.calls: dict[int, int] = {}

    def append(self, record: HypercallRecord) -> None:
        super().append(record)
        if not record.continued:
            nr = min(record.nr, abi.NR_hypercalls)
            self.calls[nr] = self.calls.get(nr, 0) + 1
        if self.sink is not None:
            self.sink(record)

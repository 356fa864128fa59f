"""Boot a guest kernel image on the reference hypervisor and collect what it reports.

One call builds a machine, the paravirtual platform, the domain (refmodel/elfbuild.py) and a
CPU substrate for its vCPU (refmodel/cpu.py), runs the guest until it shuts down or crashes,
and returns the console text and the shutdown reason. A guest that prints an XTF-style
``Test result:`` line reports its own verdict (design decision D6).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from xenspec.refmodel.domain import ShutdownReason, Vcpu
from xenspec.refmodel.elfbuild import GuestImage, build_domain, load_image_file
from xenspec.refmodel.hypervisor import (
    HYPERCALL_NAMES,
    HypercallRecord,
    Hypervisor,
    HypervisorBug,
)
from xenspec.refmodel.platform import STUB_VIRT, PVPlatform, gdt_virt_start

_RESULT = re.compile(rb"Test result: (SUCCESS|SKIP|ERROR|FAILURE)")


@dataclass
class BootResult:
    console: str
    reason: ShutdownReason | None
    crash_reason: str | None
    timed_out: bool
    traps: int
    bounces: int
    trace: list[HypercallRecord] = field(default_factory=list)
    hv: Hypervisor | None = None  # the machine, for checks after the run
    violations: list[str] = field(default_factory=list)

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
) -> BootResult:
    """Boot ``image`` (a parsed image or a path); raises BuildError for a bad image and
    HypervisorBug if the model itself fails. With ``check_invariants`` every invariant is
    checked after each hypercall (slow); the first violation stops the guest and is
    reported in ``violations``. ``setup`` is called with the new machine before the domain is
    built (the conformance suite's broken implementations alter one rule there)."""
    from xenspec.refmodel.cpu import UnicornCPU

    if isinstance(image, str):
        image = load_image_file(image)
    hv = Hypervisor(memory_mb * 256)
    pv = PVPlatform(hv)
    if setup is not None:
        setup(hv, pv)
    if console is not None:
        pv.console_out = lambda _domid, data: console(data)
    if trace:
        hv.trace = []
    built = build_domain(hv, pv, image, domain_mb * 256, cmdline=cmdline)
    d = built.domain
    v = d.vcpus[0]
    arch = pv.arch(v)
    darch = pv.darch(d)
    cpu = UnicornCPU(hv.memory, v, pv.traps, gdt_virt_start(v), STUB_VIRT,
                     darch.stub_mfn << 12)
    cpu.virtual_ts = lambda: arch.virtual_ts
    arch.cpu = cpu
    if on_trace is not None and hv.trace is not None:
        hv.trace = _Streaming(on_trace)
    violations: list[str] = []
    if check_invariants:
        from xenspec.refmodel.view import check_invariants as check

        plain = pv.traps.hypercall

        def checked_hypercall(v: Vcpu, nr: int, *args: int) -> int:
            rc = plain(v, nr, *args)
            if not violations:
                found = check(hv)
                if found:
                    violations.extend(f"after {HYPERCALL_NAMES.get(nr, nr)}: {f}"
                                      for f in found)
                    d.crash("invariant violated: " + violations[0])
            return rc

        pv.traps.hypercall = checked_hypercall  # type: ignore[method-assign]
    cpu.start(built.regs)
    cpu.run(timeout_us=int(timeout_s * 1e6))
    if isinstance(cpu.pending_exception, KeyboardInterrupt):
        raise cpu.pending_exception
    if cpu.pending_exception is not None:
        raise HypervisorBug(str(cpu.pending_exception)) from cpu.pending_exception
    if check_invariants and not violations:
        from xenspec.refmodel.view import check_invariants as check

        violations.extend(f"at the end: {f}" for f in check(hv))
    return BootResult(
        console=darch.console.decode("latin-1"),
        reason=d.shutdown_reason,
        crash_reason=d.crash_reason,
        timed_out=cpu.stop_reason == "timeout",
        traps=cpu.traps,
        bounces=pv.traps.bounces,
        trace=list(hv.trace or []),
        hv=hv,
        violations=violations,
    )


class _Streaming(list[HypercallRecord]):
    """A trace list that also hands each record on as it is appended."""

    def __init__(self, sink: Callable[[HypercallRecord], None]) -> None:
        super().__init__()
        self.sink = sink

    def append(self, record: HypercallRecord) -> None:
        super().append(record)
        self.sink(record)

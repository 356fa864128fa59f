"""Random code in ring 1 and ring 3 next to a victim, on the Unicorn CPU.

One run is a machine with a victim (conformance/guests/hostile_code.c, ``victim ROUNDS``: it
computes over a pattern in its memory and checks, round after round, its memory, its page
directory, the entries that map the pattern and xen_version's answer) and a series of
attackers (the same kernel, ``random SEED RING TRAPS``: random x86-32 bytes drawn from the
seed, run in ring 1 or ring 3). Each attacker runs until it shuts down or crashes (the
hypervisor crashes a guest that breaks the rules), then the tools destroy it and create the
next, with the next seed, while the victim goes on. The run is bounded by system time, which
advances with the instructions executed (refmodel/clock.py), so a run is deterministic. The
checks:

* no exception escaped the hypervisor (``Machine.run`` raises ``HypervisorBug``);
* the guest never ran at CPL 0 (INV-PRIV): at every entry into the hypervisor (hypercall,
  software interrupt, fault, invalid opcode) and at the end of every time slice, the vCPU's
  privilege level (the engine's, from its saved context) and its CS and SS are not ring 0;
* every invariant holds after every ``CHECK_EVERY``-th hypercall, after each attacker and at
  the end of the run;
* each hypercall stays within the work and memory bounds of ``tests/hostile/world.py`` (one
  in ``SAMPLE`` fully counted and traced: tests/hostile/meters.py), and the process's
  resident set grows by at most ``RSS_BOUND`` in a run;
* the victim is still running, printed only its own round lines (each one its check of its
  memory and tables), and completed at least ``VICTIM_MIN_ROUNDS`` rounds.

``random_code_run(seed, ring)`` replays one run.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from typing import Any

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HypervisorBug
from xenspec.refmodel.view import IncrementalChecker
from xenspec.spec import abi

from .meters import SAMPLE, MemoryMeter, WorkBoundExceeded, WorkMeter
from .world import (
    ACCESS_BOUND,
    CALL_BOUND,
    FRAME_BOUND,
    PAGE,
    STEP_PEAK_BOUND,
    STEP_RETAINED_BLOCKS,
    STEP_RETAINED_BOUND,
)

GUEST = "hostile_code"
MACHINE_MB, DOMAIN_MB = 16, 4  # a domain maps at least one 4 MB region (xc_linux_build.c)
ATTACKERS_PER_RUN = 6
TRAPS = 400  # an attacker powers off after this many traps
BUDGET_NS = 80_000_000  # system time of a run: about 80 million instructions
ATTACKER_NS = 10_000_000  # an attacker still running after this long is destroyed
CHUNK_NS = 1_000_000  # the machine runs in chunks; between two, the tools act
VICTIM_MIN_ROUNDS = 3
CHECK_EVERY = 16  # hypercalls between two checks of every invariant
RSS_BOUND = 128 << 20
X86_EFLAGS_VM = abi.X86_EFLAGS_VM
_ROUND = re.compile(r"victim round (\d+): ok")


@dataclass
class RandomCodeRun:
    seeds: tuple[int, ...]
    ring: int
    problems: list[str] = field(default_factory=list)
    attackers: list[tuple[int, str]] = field(default_factory=list)  # (seed, how it ended)
    hypercalls: int = 0
    traps: int = 0
    instructions: int = 0
    victim_rounds: int = 0
    max_calls: int = 0  # the most function calls one sampled hypercall made (WorkMeter)
    max_frames: int = 0  # the most Python frames one hypercall entered
    max_accesses: int = 0  # the most guest-memory accesses one hypercall made
    sampled_calls: int = 0  # hypercalls fully counted and traced
    peak_call: int = 0  # the highest allocation peak of one hypercall, in bytes
    retained_call: int = 0  # the most one hypercall left allocated, in bytes
    retained_blocks: int = 0  # the most Python objects one hypercall left allocated
    rss_growth: int = 0  # the process's resident-set growth over the run, in bytes

    @property
    def replay(self) -> str:
        return (f"random_code_run(seeds={self.seeds}, ring={self.ring}) "
                f"(tests/hostile/randcode.py)")


def run_seeds(run: int) -> tuple[int, ...]:
    """The attackers' seeds of the run numbered ``run``."""
    return tuple(range(run * ATTACKERS_PER_RUN, (run + 1) * ATTACKERS_PER_RUN))


def attacker_cmdline(seed: int, ring: int, traps: int = TRAPS) -> str:
    return f"random {seed} {ring} {traps}"


class _Watch:
    """The hypervisor side of one vCPU's substrate, with the checks made at every entry."""

    def __init__(self, run: RandomCodeRun, cpu: Any, inner: Any) -> None:
        self.run, self.cpu, self.inner = run, cpu, inner

    def cpl(self, where: str, regs: CpuUserRegs) -> None:
        """The guest's privilege: not ring 0, not virtual-8086 mode, IOPL 0 (Xen runs guests
        in rings 1 and 3 with IOPL 0 and never in virtual-8086 mode: x86_32/traps.c and
        entry.S; the substrate's ``_check_eflags`` states the same rule). The one place the
        engine is at CPL 0 with guest state is the model's ring-entry stub (refmodel/cpu.py:
        a ring is entered through a ring-0 ``iret`` in the stub page, which belongs to the
        hypervisor): that is not the guest running at CPL 0."""
        if self.cpu.stub_va <= regs.eip < self.cpu.stub_va + PAGE:
            return
        found = []
        if regs.eflags & X86_EFLAGS_VM:
            found.append("in virtual-8086 mode")
        if regs.eflags & abi.X86_EFLAGS_IOPL:
            found.append(f"with IOPL {(regs.eflags & abi.X86_EFLAGS_IOPL) >> 12}")
        if not found:
            eng = self.cpu.engine
            eng.save()
            found += [f"with {what} 0" for what, ring in
                      (("CPL", eng.saved_cpl), ("CS", regs.cs & 3), ("SS", regs.ss & 3))
                      if ring == 0]
        for what in found:
            self.run.problems.append(f"the guest ran {what} ({where}; cs {regs.cs:#x} "
                                     f"ss {regs.ss:#x} eip {regs.eip:#x} eflags "
                                     f"{regs.eflags:#x})")

    def hypercall(self, v: Vcpu, nr: int, *args: int) -> int:
        self.cpl(f"at hypercall {nr}", self.cpu.user_regs())
        return int(self.inner.hypercall(v, nr, *args))

    def software_interrupt(self, v: Vcpu, vector: int, regs: CpuUserRegs) -> bool:
        self.cpl(f"at int {vector:#x}, eip {regs.eip:#x}", regs)
        return bool(self.inner.software_interrupt(v, vector, regs))

    def exception(self, v: Vcpu, vector: int, error_code: int, cr2: int,
                  regs: CpuUserRegs) -> None:
        self.cpl(f"at exception {vector}, eip {regs.eip:#x}", regs)
        self.inner.exception(v, vector, error_code, cr2, regs)

    def invalid_opcode(self, v: Vcpu, regs: CpuUserRegs) -> None:
        self.cpl(f"at an invalid opcode, eip {regs.eip:#x}", regs)
        self.inner.invalid_opcode(v, regs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Checks:
    """The checks installed on a machine: every hypercall metered, every vCPU watched."""

    def __init__(self, run: RandomCodeRun, m: Machine) -> None:
        self.run, self.m = run, m
        self.work = WorkMeter(CALL_BOUND, ACCESS_BOUND, FRAME_BOUND)
        self.work.instrument(m.hv)
        self.memory = MemoryMeter()
        self.checker = IncrementalChecker(m.hv)  # check_invariants, step after step
        self.plain = m.pv.traps.hypercall
        m.pv.traps.hypercall = self.hypercall

    def hypercall(self, v: Vcpu, nr: int, *args: int) -> int:
        run, memory = self.run, self.memory
        run.hypercalls += 1
        sample = run.hypercalls % SAMPLE == 0
        rc = memory.measure(lambda: self.work.measure(lambda: self.plain(v, nr, *args), sample),
                            traced=sample)
        if (memory.last_peak > STEP_PEAK_BOUND or memory.last_retained > STEP_RETAINED_BOUND
                or memory.last_blocks > STEP_RETAINED_BLOCKS):
            run.problems.append(f"hypercall {nr}{args} peaked at {memory.last_peak} bytes and "
                                f"left {memory.last_retained} bytes and {memory.last_blocks} "
                                f"objects allocated")
        if run.hypercalls % CHECK_EVERY == 0:
            self.invariants(f"after hypercall {run.hypercalls} ({nr})")
        return int(rc)

    def invariants(self, when: str) -> None:
        if self.run.problems:
            return
        try:
            violations = self.checker.check()
        except Exception as exc:
            violations = [f"the invariant checker raised {type(exc).__name__}: {exc}"]
        if violations:
            self.run.problems.append(f"{when}: " + "; ".join(violations[:3]))

    def watch(self, d: Domain) -> None:
        cpu: Any = self.m.cpus[d.domain_id]
        w = _Watch(self.run, cpu, cpu.handlers)
        cpu.handlers = w
        run_slice = cpu.run_slice

        def checked_slice(n: int) -> int:
            ran = int(run_slice(n))
            if cpu.v.domain.is_running:
                w.cpl("at the end of a time slice", cpu.engine.read_all())
            return ran

        cpu.run_slice = checked_slice


def random_code_run(seeds: tuple[int, ...], ring: int, traps: int = TRAPS,
                    budget_ns: int = BUDGET_NS) -> RandomCodeRun:
    """The victim and one attacker per seed, one after the other; the checks."""
    run = RandomCodeRun(tuple(seeds), ring)
    elf = str(build_guest(GUEST))
    gc.collect()  # the engines of earlier runs, so that the RSS measured is this run's
    m = Machine(MACHINE_MB)
    victim = m.add_guest(elf, DOMAIN_MB, "victim 100000")
    checks = _Checks(run, m)
    checks.watch(victim)
    attacker: Domain | None = None
    now = started = 0
    try:
        while now < budget_ns and not run.problems:
            if attacker is not None and (not attacker.is_running
                                         or now - started >= ATTACKER_NS):
                ending = _ending(m, attacker) if not attacker.is_running else "destroyed"
                run.attackers[-1] = (run.attackers[-1][0], ending)
                cpu = m.cpus.get(attacker.domain_id)
                run.traps += cpu.traps if cpu is not None else 0
                run.instructions += cpu.instructions if cpu is not None else 0
                m.domctl.destroy(attacker.domain_id)
                checks.invariants("after destroying an attacker")
                attacker = None
            if attacker is None and len(run.attackers) < len(seeds):
                s = seeds[len(run.attackers)]
                started = now
                domid = m.domctl.create(elf, DOMAIN_MB, attacker_cmdline(s, ring, traps))
                attacker = m.hv.domains[domid]
                run.attackers.append((s, "running"))
                checks.watch(attacker)
                m.domctl.unpause(domid)
            if attacker is None and _rounds(m, victim) >= VICTIM_MIN_ROUNDS:
                break
            now += CHUNK_NS
            m.run(until_ns=now)
    except HypervisorBug as exc:
        cause = exc.__cause__
        if isinstance(cause, WorkBoundExceeded):
            run.problems.append(f"a hypercall did unbounded work: {cause}")
        else:
            run.problems.append(f"HypervisorBug: {exc}")
    checks.invariants("at the end")
    run.victim_rounds = _rounds(m, victim)
    console = m.result(victim).console
    strange = [ln for ln in console.splitlines()[1:] if not _ROUND.fullmatch(ln)]
    if not victim.is_running or strange:
        run.problems.append(f"the victim: {victim.crash_reason or victim.shutdown_reason}, "
                            f"{strange[:3]}")
    elif run.victim_rounds < VICTIM_MIN_ROUNDS and not run.problems:
        run.problems.append(f"the victim completed {run.victim_rounds} rounds")
    run.instructions += m.cpus[victim.domain_id].instructions
    run.max_calls, run.max_accesses = checks.work.max_calls, checks.work.max_accesses
    run.max_frames, run.sampled_calls = checks.work.max_frames, checks.work.sampled
    run.retained_call, run.retained_blocks = checks.memory.retained, checks.memory.blocks
    run.peak_call, run.rss_growth = checks.memory.peak, checks.memory.rss_growth()
    if checks.memory.rss_growth() > RSS_BOUND:
        run.problems.append(f"the process grew by {checks.memory.rss_growth() >> 20} MB")
    return run


def _rounds(m: Machine, d: Domain) -> int:
    return len(_ROUND.findall(m.pv.darch(d).console.decode("latin-1")))


def _ending(m: Machine, d: Domain) -> str:
    return d.crash_reason or (d.shutdown_reason.name if d.shutdown_reason else "running")

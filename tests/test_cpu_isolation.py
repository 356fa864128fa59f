"""The CPU substrate keeps a guest in the processor modes Xen runs it in, and a destroyed
domain never runs again.

* Xen runs a PV guest in ring 1 or 3 with IOPL 0 and never in virtual-8086 mode (x86_32/traps.c
  do_iret and entry.S create_bounce_frame clear VM and IOPL in every frame). The processor
  takes VM and IOPL from an iret's popped EFLAGS only at CPL 0 (Intel SDM, IRET); the emulator
  takes them at any CPL (Unicorn's helper_ret_protected). The substrate refuses the
  virtual-8086 block before it runs, or sees the mode at the next entry, and crashes the
  domain; no register state with VM or IOPL set reaches the hypervisor.
* An I/O instruction's #GP frame carries the guest's EFLAGS, not the emulator's stale lazy
  flag state (which can read as any 32 bits: VM, IOPL, bits 22-31).
* domain_kill (xen/common/domain.c): a dying domain's vCPUs never run again and nothing made
  for it comes back (refmodel/sched.py, platform.py, domctl.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel import cpu
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.domctl import DomctlError
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
NEVER = abi.X86_EFLAGS_VM | abi.X86_EFLAGS_IOPL
ARITH = 0x8D5  # OF SF ZF AF PF CF
RUN_NS = 50_000_000


class Recorder:
    """The hypervisor side of one vCPU, recording the EFLAGS of every entry."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.eflags: list[int] = []

    def _saw(self, regs: CpuUserRegs) -> None:
        self.eflags.append(regs.eflags)

    def hypercall(self, v: Vcpu, nr: int, *args: int) -> int:
        return int(self.inner.hypercall(v, nr, *args))

    def software_interrupt(self, v: Vcpu, vector: int, regs: CpuUserRegs) -> bool:
        self._saw(regs)
        return bool(self.inner.software_interrupt(v, vector, regs))

    def exception(self, v: Vcpu, vector: int, error_code: int, cr2: int,
                  regs: CpuUserRegs) -> None:
        self._saw(regs)
        self.inner.exception(v, vector, error_code, cr2, regs)

    def invalid_opcode(self, v: Vcpu, regs: CpuUserRegs) -> None:
        self._saw(regs)
        self.inner.invalid_opcode(v, regs)


def run_eflags_guest(cmdline: str) -> tuple[Machine, Domain, Recorder]:
    m = Machine(16)
    d = m.add_guest(str(build_guest("eflags_modes")), 4, cmdline)
    c = m.cpus[d.domain_id]
    rec = Recorder(c.handlers)
    c.handlers = rec
    m.run(until_ns=RUN_NS)
    return m, d, rec


@needs_gcc
@pytest.mark.parametrize("ring", [1, 3])
def test_an_iret_into_virtual_8086_mode_crashes_only_the_domain(ring: int) -> None:
    m, d, rec = run_eflags_guest(f"vm86 {ring}")
    assert d.crash_reason is not None and "virtual-8086 mode" in d.crash_reason, (
        d.crash_reason, m.result(d).console)
    assert [f for f in rec.eflags if f & NEVER] == []
    assert check_invariants(m.hv) == []


@pytest.mark.skipif(cpu.native_counter() is None, reason="needs the native block counter")
def test_the_counter_refuses_a_virtual_8086_block_before_it_runs() -> None:
    """Ring-0 code irets into virtual-8086 mode at 0400:0000 (linear 0x4000), whose first
    instruction would store a marker: the block is refused before it runs."""
    eng = cpu.counting_engine()
    uc = eng.uc
    uc.mem_map(0, 0x20000)
    pd, l1 = 0x1000, 0x2000
    uc.mem_write(pd, (l1 | 0x7).to_bytes(4, "little"))
    for page in range(4, 9):
        uc.mem_write(l1 + 4 * page, (page << 12 | 0x7).to_bytes(4, "little"))
    uc.mem_write(l1 + 4 * 0x10, (0x3 << 12 | 0x21).to_bytes(4, "little"))  # the GDT page
    uc.mem_write(0x3000, cpu.reserved_gdt_page())
    # push gs fs ds es ss esp eflags(VM, IF) cs eip; iret
    frame = [0, 0, 0, 0, 0x700, 0xFFFE, 0x20202, 0x400, 0]
    uc.mem_write(0x6000, b"".join(b"\x68" + w.to_bytes(4, "little") for w in frame) + b"\xcf")
    uc.mem_write(0x4000, b"\xc6\x06\x00\x10\x77\xf4")  # movb $0x77,%ds:0x1000; hlt
    eng.setup_protected_mode(0x10000 - abi.FIRST_RESERVED_GDT_BYTE, pd)
    eng.write(cpu.x86.UC_X86_REG_ESP, 0x8FF0)
    eng.run_counted(0x6000, 1000)
    assert bytes(uc.mem_read(0x5000, 1)) == b"\x00", "the virtual-8086 block ran"
    assert eng.take_refused() & abi.X86_EFLAGS_VM
    assert eng.mode_flags() & abi.X86_EFLAGS_VM


@needs_gcc
def test_an_io_instructions_gp_frame_carries_the_guests_eflags() -> None:
    """The #GP(0) of ``out`` after a subtraction whose source operand is 0xc0023000: the
    emulator's stale flag state read as 0xc0023402 (VM, IOPL 3, bits 30-31)."""
    m, d, rec = run_eflags_guest("io")
    found = re.search(r"trap 13 eflags ([0-9a-f]+) before ([0-9a-f]+)", m.result(d).console)
    assert found, m.result(d).console
    frame, before = (int(x, 16) for x in found.groups())
    assert frame & (NEVER | 0xFFC00000) == 0, hex(frame)
    # IF in a bounce frame is the event mask's (create_bounce_frame); the arithmetic flags
    # are the emulator's best (module docstring of refmodel/cpu.py).
    keep = ~(ARITH | abi.X86_EFLAGS_IF)
    assert frame & keep == before & keep, (hex(frame), hex(before))
    assert [f for f in rec.eflags if f & (NEVER | 0xFFC00000)] == []


# ------------------------------------------------------------------------------------------------
# A destroyed domain never runs again.
# ------------------------------------------------------------------------------------------------
def spinning_machine() -> tuple[Machine, int, int]:
    m = Machine(16)
    elf = str(build_guest("spin"))
    victim = m.add_guest(elf, 4, "forever")
    attacker = m.domctl.create(elf, 4, "forever")
    m.domctl.unpause(attacker)
    return m, victim.domain_id, attacker


def engine_open(c: Any) -> bool:
    """The vCPU's Unicorn engine is not closed yet (the binding's finalizer has not run)."""
    return bool(c.uc._Uc__finalizer.alive)


def current_domid(m: Machine) -> int | None:
    cur = m.pv.sched.current
    return None if cur is None else cur.v.domain.domain_id


@needs_gcc
def test_a_domain_destroyed_while_current_never_runs_again() -> None:
    """Destroyed between two slices while it is the scheduler's current vCPU."""
    m, victim, attacker = spinning_machine()
    for step in range(1, 200):
        m.run(until_ns=step * 100_000)
        if current_domid(m) == attacker:
            break
    assert current_domid(m) == attacker
    d = m.hv.domains[attacker]
    ran = m.cpus[attacker].instructions
    cpu_of = m.cpus[attacker]
    m.domctl.destroy(attacker)
    m.run(until_ns=m.pv.clock.now_ns() + 20_000_000)
    assert cpu_of.instructions == ran, "the destroyed domain ran again"
    assert not engine_open(cpu_of), "the destroyed domain's engine was kept"
    assert attacker not in m.pv.sched.domains
    assert all(k[0] != attacker for k in m.pv.sched.vcpus)
    assert d.is_dying and m.hv.domains[victim].is_running
    assert check_invariants(m.hv) == []


@needs_gcc
def test_a_domain_destroyed_inside_its_own_hypercall_never_resumes() -> None:
    """The control software destroys the domain while it is in a hypercall (here: its first
    console write): no slice of it runs after that."""
    m, _victim, attacker = spinning_machine()
    c = m.cpus[attacker]
    inner, run_slice = c.handlers, c.run_slice
    destroyed: list[int] = []
    slices_after: list[int] = []

    class Destroying:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def hypercall(self, v: Vcpu, nr: int, *args: int) -> int:
            rc = int(inner.hypercall(v, nr, *args))
            if not destroyed:
                destroyed.append(nr)
                m.domctl.destroy(v.domain.domain_id)
            return rc

    def counted_slice(n: int) -> int:
        if destroyed:
            slices_after.append(n)
        return int(run_slice(n))

    c.handlers = Destroying()  # type: ignore[assignment]
    c.run_slice = counted_slice  # type: ignore[method-assign]
    m.run(until_ns=30_000_000)
    assert destroyed and slices_after == []
    assert not engine_open(c), "the destroyed domain's engine was kept"
    assert attacker not in m.pv.sched.domains
    assert check_invariants(m.hv) == []


@needs_gcc
def test_lookups_of_a_dead_domain_make_nothing() -> None:
    m, _victim, attacker = spinning_machine()
    d = m.hv.domains[attacker]
    m.domctl.destroy(attacker)
    sched, pv = m.pv.sched, m.pv
    assert sched.dom(d).paused and attacker not in sched.domains
    sched.entry(d.vcpus[0])
    assert (attacker, 0) not in sched.vcpus
    assert not sched.runnable(sched.entry(d.vcpus[0]))
    pv.darch(d)
    pv.arch(d.vcpus[0])
    assert attacker not in pv.arch_d and (attacker, 0) not in pv.arch_v
    with pytest.raises(DomctlError):
        m.domctl.pause(attacker)


@needs_gcc
def test_a_new_domain_with_a_dead_domains_id_can_be_paused_and_destroyed() -> None:
    """DOM0_CREATEDOMAIN may give a free id again: the new domain is not dying, and inherits
    none of the dead one's per-vCPU state."""
    m, _victim, attacker = spinning_machine()
    old = m.hv.domains[attacker]
    m.pv.arch(old.vcpus[0]).kernel_sp = 0x1234
    old_table = m.pv.grants.table(old)
    m.domctl.destroy(attacker)
    assert attacker not in m.hv.domains
    new = m.hv.create_domain(64, domid=attacker)
    m.pv.setup_domain(new)
    assert m.pv.arch(new.vcpus[0]).kernel_sp == 0
    table = m.pv.grants.table(new)
    assert not table.dying and table is not old_table
    assert all(m.hv.frames.owner[mfn] == attacker for mfn in table.shared)
    assert attacker not in m.domctl.dying
    m.domctl.pause(attacker)
    assert m.domctl.info(attacker).paused
    m.domctl.destroy(attacker)
    assert new.is_dying and attacker not in m.hv.domains

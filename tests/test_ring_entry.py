"""Ring entries of the CPU substrate (refmodel/cpu.py): the guest never runs in ring 0.

Every return to the guest that changes CS or SS goes through the substrate's ``iret`` stub,
which runs at CPL 0. Xen 3.0.4's own return ends in an ``iret`` too (x86_32/entry.S,
restore_all_guest, FLT5): do_iret (x86_32/traps.c) refuses only a CS with RPL 0, and when the
CPU refuses the frame's CS or SS, FIX5 sends the guest to its failsafe callback with that frame
(create_bounce_frame, TBF_FAILSAFE), in ring 1. The guest kernel iret_selectors tries one
selector per run and checks, wherever it runs, that it is not at CPL 0 (if it is, it clears
CR0.WP and writes a hypervisor slot of its own page directory, which the invariants catch).

A time slice can also end with a ring entry prepared and not yet made (the stub not run): the
registers the hypervisor works on when the vCPU runs again (an event upcall) are the entry's,
as Xen builds the upcall's frame on top of the trap's bounce frame (entry.S, test_all_events).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel import cpu
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import BootResult, Machine, boot
from xenspec.refmodel.domain import ShutdownReason, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

HANG_GUARD_S = 60.0  # a guard against a hung guest, not a timing assertion


def run_selectors(cmdline: str) -> BootResult:
    return boot(str(build_guest("iret_selectors")), cmdline=cmdline, timeout_s=HANG_GUARD_S)


# (command line, what Xen 3.0.4 does): "outcome: ..." is the line the kernel prints when it
# goes on (ran: the iret succeeded; failsafe: the failsafe callback got the frame; trap: its
# #GP handler ran on that kernel stack), "crash: ..." a part of the domain's crash reason.
# The kernel's own descriptors (selectors at RPL 1): GDT 0x9 data DPL 1, 0x11 code DPL 1,
# 0x19 code DPL 3, 0x21 data DPL 3; LDT 0x5 code DPL 1, 0xd data DPL 1, 0x15 code DPL 3, 0x1d
# data DPL 3.
SELECTORS = [
    # An iret to ring 1 (CS with RPL 1; SS stays the kernel's).
    ("e019", "outcome: ran cs=e019"),  # FLAT_RING1_CS
    ("11", "outcome: ran cs=11"),  # a code segment of the guest's GDT
    ("5", "outcome: ran cs=5"),  # of its LDT, mapped on the way (map_ldt_shadow_page)
    ("e021", "outcome: failsafe cs=e021"),  # FLAT_RING1_DS as CS
    ("e009", "outcome: failsafe cs=e009"),  # Xen's own code segment, RPL 1
    ("e011", "outcome: failsafe cs=e011"),  # Xen's own data segment, RPL 1
    ("e029", "outcome: failsafe cs=e029"),  # FLAT_RING3_CS at RPL 1 (DPL 3)
    ("19", "outcome: failsafe cs=19"),  # a guest code segment of DPL 3 at RPL 1
    ("9", "outcome: failsafe cs=9"),  # a guest data segment as CS
    ("d", "outcome: failsafe cs=d"),  # an LDT data segment as CS
    ("15", "outcome: failsafe cs=15"),  # an LDT code segment of DPL 3 at RPL 1
    ("1", "outcome: failsafe cs=1"),  # the null selector
    # RPL 0: do_iret crashes the domain.
    ("e008", "crash: iret to ring 0"),
    ("e010", "crash: iret to ring 0"),
    ("10", "crash: iret to ring 0"),
    # An iret to an outer ring, with ESP and SS from the frame.
    ("e02b:e033", "outcome: ran cs=e02b"),
    ("1b:23", "outcome: ran cs=1b"),
    ("17:1f", "outcome: ran cs=17"),
    ("e02b:1f", "outcome: ran cs=e02b"),
    ("e02b:1d", "outcome: failsafe cs=e02b ss=1d"),  # an LDT stack segment at RPL 1
    ("e02b:e019", "outcome: failsafe cs=e02b ss=e019"),  # a code segment as SS
    ("e02b:e021", "outcome: failsafe cs=e02b ss=e021"),  # SS of RPL 1
    ("e02b:3", "outcome: failsafe cs=e02b ss=3"),  # a null SS
    ("e02b:e010", "outcome: failsafe cs=e02b ss=e010"),  # Xen's ring-0 stack segment
    ("e02b:e013", "outcome: failsafe cs=e02b ss=e013"),  # the same at RPL 3
    ("e00b:e033", "outcome: failsafe cs=e00b ss=e033"),  # Xen's code segment at RPL 3
    # RPL 2: create_bounce_frame tests bit 1 of CS, so the failsafe frame goes on the kernel
    # stack with ESP and SS, as from ring 3.
    ("e02a:e033", "outcome: failsafe cs=e02a ss=e033"),
    # The kernel stack segment of a bounce from ring 3 (stack_switch; RPL 0 is raised to 1).
    ("stack:e021", "outcome: trap"),
    ("stack:9", "outcome: trap"),
    ("stack:d", "outcome: trap"),
    ("stack:0", "crash: with no kernel stack"),
    ("stack:e019", "crash: stack segment 0xe019 cannot hold the bounce frame"),
    ("stack:e010", "crash: stack segment 0xe011 cannot hold the bounce frame"),
    ("stack:11", "crash: stack segment 0x11 cannot hold the bounce frame"),
    # Writable, but not a ring-1 stack: the frame is written and the iret into the handler
    # faults, and so does every failsafe entry after it.
    ("stack:e033", "crash: entering the guest"),
    # The code segment of a trap handler (set_trap_table raises RPL 0 to 1) that ring 1
    # bounces to: the return path's iret loads it, or faults into the failsafe callback.
    ("handler:11", "outcome: ran cs=11"),
    ("handler:5", "outcome: ran cs=5"),
    ("handler:e021", "outcome: failsafe cs=e021"),
    ("handler:e009", "outcome: failsafe cs=e009"),
    ("handler:e008", "outcome: failsafe cs=e009"),
    ("handler:19", "outcome: failsafe cs=19"),
    ("handler:e02b", "outcome: failsafe cs=e02b ss=e021"),  # ring 3 code, ring-1 stack
    ("handler:0", "crash: unhandled trap 129"),  # create_bounce_frame refuses a null CS
]


@pytest.mark.parametrize(("cmdline", "expected"), SELECTORS, ids=[c for c, _ in SELECTORS])
def test_iret_frame_never_leaves_the_guest_in_ring_0(cmdline: str, expected: str) -> None:
    r = run_selectors(cmdline)
    assert r.hv is not None
    assert "CPL 0" not in r.console, r.console
    assert check_invariants(r.hv) == []
    kind, _, what = expected.partition(": ")
    if kind == "crash":
        assert r.reason is ShutdownReason.crash, r.console
        assert r.crash_reason is not None and what in r.crash_reason, r.crash_reason
    else:
        assert r.test_result == "SUCCESS", r.console
        assert expected in r.console.splitlines(), r.console


def test_a_frame_naming_ring_0_is_never_entered() -> None:
    """Defence in depth: if the hypervisor ever asks the substrate to resume the guest with
    a CS of RPL 0 (every path that sets one refuses or raises it first), the stub's iret is
    not run and the domain is crashed."""
    m = Machine()
    d = m.add_guest(str(build_guest("hello")))
    traps = m.pv.traps
    real = traps.hypercall
    cpu_ = m.cpus[d.domain_id]

    def to_ring_0(v: Vcpu, nr: int, *args: int) -> int:
        rc = real(v, nr, *args)
        if nr == HYPERCALL_NUMBERS["console_io"]:
            regs = cpu_.user_regs()
            regs.cs, regs.ss = abi.HYPERVISOR_CS, abi.HYPERVISOR_DS
        return rc

    traps.hypercall = to_ring_0
    m.run(timeout_s=HANG_GUARD_S)
    r = m.result(d)
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and "enter the guest in ring 0" in r.crash_reason
    assert "Test result" not in r.console


def test_a_return_at_cpl_0_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with the way back from a faulting ring entry broken (the failsafe
    frame written into the registers while the engine is still at the stub's CPL 0, as the
    substrate once did), the return path sees CPL 0 and crashes the domain instead of
    running it."""
    real: Callable[[cpu.UnicornCPU, int, CpuUserRegs], None] = cpu.UnicornCPU._entry_fault

    def loaded(self: cpu.UnicornCPU, intno: int, regs: CpuUserRegs) -> None:
        real(self, intno, regs)
        assert self._orig is not None
        self._orig.cs = self.engine.read(cpu.x86.UC_X86_REG_CS)
        self._orig.ss = self.engine.read(cpu.x86.UC_X86_REG_SS)

    monkeypatch.setattr(cpu.UnicornCPU, "_entry_fault", loaded)
    r = run_selectors("e021")
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and "at CPL 0" in r.crash_reason, r.crash_reason
    assert "outcome" not in r.console
    assert r.hv is not None and check_invariants(r.hv) == []


def end_slice_with_event(m: Machine, v: Vcpu) -> None:
    """The scheduler takes the CPU at this trap (a yield) and VIRQ_DEBUG is sent meanwhile."""
    m.pv.events.send_virq(v, abi.VIRQ_DEBUG)
    m.pv.sched.do_sched_op(v, abi.SCHEDOP_yield, 0)


@pytest.mark.parametrize("where", ["int80-bounce", "iret-to-ring-3"])
def test_upcall_after_a_slice_ended_at_a_ring_change(
        where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """entry.S: the trap's bounce frame first (the #GP of an int $0x80 ring 3 may not use,
    do_general_protection; or the iret hypercall's return to ring 3), then, after the
    scheduler, test_all_events bounces the pending event on top of it. The upcall returns to
    the first instruction of the kernel's #GP handler, or to ring 3; nothing is lost."""
    m = Machine()
    d = m.add_guest(str(build_guest("slice_bounce")))
    cpu_ = m.cpus[d.domain_id]
    traps = m.pv.traps
    forced: list[int] = []
    if where == "int80-bounce":
        real_int = traps.software_interrupt

        def software_interrupt(v_: Vcpu, vector: int, regs: CpuUserRegs) -> bool:
            from_ring_3 = regs.cs & 3 == 3
            delivered = real_int(v_, vector, regs)
            if vector == abi.SYSCALL_VECTOR and from_ring_3 and not forced:
                forced.append(regs.eip)
                end_slice_with_event(m, v_)
            return delivered

        monkeypatch.setattr(traps, "software_interrupt", software_interrupt)
    else:
        real_hc = traps.hypercall

        def hypercall(v_: Vcpu, nr: int, *args: int) -> int:
            rc = real_hc(v_, nr, *args)
            if nr == HYPERCALL_NUMBERS["iret"] and cpu_.user_regs().cs & 3 == 3 and not forced:
                forced.append(cpu_.user_regs().eip)
                end_slice_with_event(m, v_)
            return rc

        monkeypatch.setattr(traps, "hypercall", hypercall)
    m.run(timeout_s=HANG_GUARD_S)
    r = m.result(d)
    assert forced, "the trap never came"
    assert r.test_result == "SUCCESS", (r.crash_reason, r.console)
    counts = "over the #GP entry 1, over ring 3 0" if where == "int80-bounce" else (
        "over the #GP entry 0, over ring 3 1")
    assert f"system calls 17; VIRQ_DEBUG upcalls {counts}, elsewhere 0" in r.console, r.console
    assert check_invariants(m.hv) == []

"""Xen's direct int $0x80 gate (x86_32/traps.c, init_int80_direct_trap): the processor, not
Xen, delivers the system call, so nothing Xen does on its way out happens there; and a gate that
names the null selector makes the processor raise #GP(0) at the int, which Xen bounces."""

from __future__ import annotations

import struct

from xenspec.conformance.driver import Guest
from xenspec.conformance.guests.build import build_guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import boot
from xenspec.spec import abi


def test_no_upcall_at_a_direct_gate_system_call() -> None:
    """A pending, unmasked upcall is not delivered at the int (Xen is not entered); it comes
    at the handler's iret hypercall."""
    r = boot(str(build_guest("int80_events")), timeout_s=60)
    assert r.test_result == "SUCCESS", r.console


def test_null_selector_gate_is_a_general_protection_fault() -> None:
    """Vector 0x80 with selector 0 (fixed up to RPL 1), DPL 3, events not masked: Xen installs
    the gate (guest_gate_selector_okay), INT through it is #GP(0) at the int, bounced to the
    guest's #GP handler; the domain runs on."""
    impl = ReferenceImplementation()
    g = Guest(impl, 48, 32)
    d = impl.hv.domains[g.domid]
    v = d.vcpus[0]
    table = struct.pack("<BBHI", abi.TRAP_gp_fault, 1, abi.FLAT_RING1_CS, g.va(5))
    table += struct.pack("<BBHI", 0x80, 3, 0, g.va(6)) + struct.pack("<BBHI", 0, 0, 0, 0)
    assert g.hypercall("set_trap_table", g.write_args(table, 0x200)) == 0
    int_at = g.va(4)
    regs = CpuUserRegs(eip=int_at + 2, cs=abi.FLAT_RING3_CS, ss=abi.FLAT_RING3_DS,
                       esp=g.va(7) + 0x800, eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
    arch = impl.pv.arch(v)
    arch.kernel_ss, arch.kernel_sp = abi.FLAT_RING1_DS, g.va(8) + 0x800
    assert impl.pv.traps.software_interrupt(v, 0x80, regs) is True  # Xen was entered
    assert d.is_running, d.crash_reason
    assert regs.eip == g.va(5)  # the #GP handler
    raw = impl.hv.copy_from_guest(v, regs.esp, 8)
    assert raw is not None
    error_code, eip = struct.unpack("<II", raw)
    assert (error_code, eip) == (0, int_at)

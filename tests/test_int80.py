"""Xen's direct int $0x80 gate (x86_32/traps.c, init_int80_direct_trap): the processor, not
Xen, delivers the system call, so nothing Xen does on its way out happens there; and a gate that
names the null selector makes the processor raise #GP(0) at the int, which Xen bounces."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from xenspec.conformance.driver import Guest
from xenspec.conformance.guests.build import build_guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.arch import CpuUserRegs, TrapInfo
from xenspec.refmodel.boot import boot
from xenspec.refmodel.traps import _frame_bytes
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


def _system_call(impl: ReferenceImplementation, g: Guest) -> tuple[bool, CpuUserRegs]:
    """A ring-3 ``int $0x80`` of ``g``'s vCPU 0 (the int at page 4): whether Xen was entered,
    and the registers the guest resumes with."""
    v = impl.hv.domains[g.domid].vcpus[0]
    regs = CpuUserRegs(eip=g.va(4) + 2, cs=abi.FLAT_RING3_CS, ss=abi.FLAT_RING3_DS,
                       esp=g.va(7) + 0x800, eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
    return impl.pv.traps.software_interrupt(v, abi.SYSCALL_VECTOR, regs), regs


def _load_int80(g: Guest, flags: int, handler: int) -> None:
    """set_trap_table with vector 0x80 alone: ``flags`` (DPL, IF), FLAT_RING1_CS."""
    table = struct.pack("<BBHI", 0x80, flags, abi.FLAT_RING1_CS, handler)
    table += struct.pack("<BBHI", 0, 0, 0, 0)
    assert g.hypercall("set_trap_table", g.write_args(table, 0x200)) == 0


def test_direct_gate_follows_each_trap_table_load() -> None:
    """Xen rebuilds the direct gate (init_int80_direct_trap) whenever set_trap_table loads
    vector 0x80, and the model keeps its answer with the entry it was computed for
    (ArchVcpu.int80_gate): each new entry is looked at again. An entry that masks events
    (TI_GET_IF) gets no gate, so the int is a #GP that Xen bounces to vector 0x80 with
    events masked (True); an entry that does not goes through the gate again (False); an
    entry put in the table by other means than set_trap_table is seen too; and a cleared
    table leaves vector 0x80 with DPL 0, so the int is #GP(0x80 << 3 | 2) with no handler."""
    impl = ReferenceImplementation()
    g = Guest(impl, 48, 32)
    d = impl.hv.domains[g.domid]
    v = d.vcpus[0]
    arch = impl.pv.arch(v)
    arch.kernel_ss, arch.kernel_sp = abi.FLAT_RING1_DS, g.va(8) + 0x800
    _load_int80(g, 3, g.va(5))
    assert _system_call(impl, g) == (False, CpuUserRegs(
        eip=g.va(5), cs=abi.FLAT_RING1_CS, ss=abi.FLAT_RING1_DS, esp=g.va(8) + 0x800 - 20,
        eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS))
    _load_int80(g, 3 | abi.TI_IF_FLAG, g.va(6))
    entered, regs = _system_call(impl, g)
    assert (entered, regs.eip) == (True, g.va(6))
    assert impl.pv.vcpu_info_read8(v, abi.VCPU_INFO_evtchn_upcall_mask) == 1
    _load_int80(g, 3, g.va(5))
    assert _system_call(impl, g)[0] is False
    arch.trap_ctxt[0x80] = TrapInfo(3 | abi.TI_IF_FLAG, abi.FLAT_RING1_CS, g.va(6))
    assert _system_call(impl, g)[0] is True
    assert d.is_running, d.crash_reason
    assert g.hypercall("set_trap_table", 0) == 0
    assert _system_call(impl, g)[0] is True
    assert not d.is_running and "unhandled trap 13" in str(d.crash_reason)


def test_trap_table_entries_are_never_changed_in_place() -> None:
    """What ArchVcpu.int80_gate keeps holds only while an entry cannot change under it."""
    ti = TrapInfo(3, abi.FLAT_RING1_CS, 0x1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ti.flags = abi.TI_IF_FLAG  # type: ignore[misc]


@pytest.mark.parametrize("words", [
    [1, 2, 3], [0xFFFFFFFF, -1, 1 << 33, (1 << 32) + 7], list(range(9)), list(range(12))])
def test_bounce_frame_words_are_their_low_32_bits(words: list[int]) -> None:
    """create_bounce_frame's packing: each word's low 32 bits, lowest address first, for
    every frame length (the precompiled layouts stop at nine words)."""
    assert _frame_bytes(words) == b"".join(
        (w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)

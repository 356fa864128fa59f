"""Privileged instructions as Xen 3.0 emulates them (refmodel/emulate.py), physdev_op
(refmodel/physdev.py) and the CPU substrate's I/O path: the hypercalls from a Python guest,
emulate_privileged_op on instruction bytes placed in guest memory, and the privop guest kernel
on both ways the substrate counts instructions (per block and per instruction)."""

from __future__ import annotations

import struct

import pytest

from xenspec.conformance.driver import Guest
from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel import cpu, emulate
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import BootResult, boot
from xenspec.refmodel.domain import ShutdownReason
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

EINVAL, EFAULT, ENOSYS, EPERM = -abi.EINVAL, -abi.EFAULT, -abi.ENOSYS, -abi.EPERM
CODE_PFN = 4  # a mapped page of the guest that holds the instruction under test


@pytest.fixture
def impl() -> ReferenceImplementation:
    return ReferenceImplementation()


@pytest.fixture
def g(impl: ReferenceImplementation) -> Guest:
    return Guest(impl, 48, 32)


def arch(impl: ReferenceImplementation, g: Guest) -> object:
    return impl.pv.arch(impl.hv.domains[g.domid].vcpus[0])


def run(impl: ReferenceImplementation, g: Guest, code: bytes, ring: int = 1,
        **regs: int) -> tuple[bool, CpuUserRegs]:
    """emulate_privileged_op for ``code`` at the start of page CODE_PFN."""
    impl.write_pfn(g.domid, CODE_PFN, 0, code)
    cs = abi.FLAT_RING1_CS if ring == 1 else abi.FLAT_RING3_CS
    regs.setdefault("eflags", abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
    r = CpuUserRegs(eip=g.va(CODE_PFN), cs=cs, **regs)
    v = impl.hv.domains[g.domid].vcpus[0]
    return impl.pv.emulate.emulate_privileged_op(v, r), r


def set_iopl(g: Guest, level: int) -> int:
    return g.hypercall("physdev_op", abi.PHYSDEVOP_set_iopl,
                       g.write_args(struct.pack("<I", level), 0x100))


# --- physdev_op ---------------------------------------------------------------------------------
def test_set_iopl(impl: ReferenceImplementation, g: Guest) -> None:
    """physdev.c: at most 3, else -EINVAL; an unreadable argument -EFAULT."""
    a = impl.pv.arch(impl.hv.domains[g.domid].vcpus[0])
    assert set_iopl(g, 3) == 0 and a.iopl == 3
    assert set_iopl(g, 4) == EINVAL and a.iopl == 3
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_set_iopl, 0) == EFAULT
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_set_iopl, abi.HYPERVISOR_VIRT_START) == EFAULT


def test_set_iobitmap(impl: ReferenceImplementation, g: Guest) -> None:
    """physdev.c: the bitmap's 8192 bytes below the hypervisor, nr_ports at most 65536."""
    a = impl.pv.arch(impl.hv.domains[g.domid].vcpus[0])

    def call(bitmap: int, nr: int) -> int:
        arg = g.write_args(struct.pack("<II", bitmap, nr), 0x100)
        return g.hypercall("physdev_op", abi.PHYSDEVOP_set_iobitmap, arg)

    assert call(g.va(8), 65536) == 0 and (a.iobmp, a.iobmp_limit) == (g.va(8), 65536)
    assert call(g.va(8), 65537) == EINVAL
    assert call(abi.HYPERVISOR_VIRT_START - abi.IOBMP_BYTES, 16) == 0
    assert call(abi.HYPERVISOR_VIRT_START - abi.IOBMP_BYTES + 1, 16) == EINVAL
    assert (a.iobmp, a.iobmp_limit) == (abi.HYPERVISOR_VIRT_START - abi.IOBMP_BYTES, 16)
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_set_iobitmap, 0) == EFAULT


def test_physdev_op_compat_and_other_commands(impl: ReferenceImplementation, g: Guest) -> None:
    """compat.c: the whole struct physdev_op is read; its union goes to physdev_op.
    physdev.c: any domain may query a line's status and EOI it (the model's machine has no
    line in use: flags 0, nothing to EOI); the IO-APIC and vector commands are -EPERM for an
    unprivileged domain; an unknown command is -ENOSYS."""
    a = impl.pv.arch(impl.hv.domains[g.domid].vcpus[0])
    op = g.write_args(struct.pack("<IIII", abi.PHYSDEVOP_set_iopl, 2, 0, 0), 0x200)
    assert g.hypercall("physdev_op_compat", op) == 0 and a.iopl == 2
    op = g.write_args(struct.pack("<IIII", abi.PHYSDEVOP_set_iopl, 9, 0, 0), 0x200)
    assert g.hypercall("physdev_op_compat", op) == EINVAL and a.iopl == 2
    op = g.write_args(struct.pack("<IIII", abi.PHYSDEVOP_eoi, 1, 0, 0), 0x200)
    assert g.hypercall("physdev_op_compat", op) == 0
    op = g.write_args(struct.pack("<IIII", abi.PHYSDEVOP_eoi, abi.NR_IRQS, 0, 0), 0x200)
    assert g.hypercall("physdev_op_compat", op) == EINVAL
    assert g.hypercall("physdev_op_compat", 0) == EFAULT
    query = g.write_args(struct.pack("<II", 9, 0xFFFF), 0x300)
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_irq_status_query, query) == 0
    assert struct.unpack("<II", g.read_args(0x300, 8)) == (9, 0)
    query = g.write_args(struct.pack("<II", abi.NR_IRQS, 0), 0x300)
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_irq_status_query, query) == EINVAL
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_IRQ_UNMASK_NOTIFY, 0) == 0
    for cmd in (abi.PHYSDEVOP_apic_read, abi.PHYSDEVOP_apic_write,
                abi.PHYSDEVOP_alloc_irq_vector):
        assert g.hypercall("physdev_op", cmd, g.va(0)) == EPERM
        assert g.hypercall("physdev_op", cmd, 0) == EFAULT
    assert g.hypercall("physdev_op", 99, g.va(0)) == ENOSYS


# --- the debug registers -------------------------------------------------------------------------
def test_debug_register_rules(impl: ReferenceImplementation, g: Guest) -> None:
    """traps.c set_debugreg: DR0-3 below the hypervisor, DR6/DR7 reserved bits, no GD, no
    R/W or LEN of 10b, DR4/5 and others -EINVAL."""
    hc = g.hypercall
    assert hc("set_debugreg", 0, 0x1000) == 0 and hc("get_debugreg", 0) == 0x1000
    assert hc("set_debugreg", 3, abi.HYPERVISOR_VIRT_START - 4) == 0
    assert hc("set_debugreg", 3, abi.HYPERVISOR_VIRT_START - 3) == EPERM
    assert hc("set_debugreg", 6, 0) == 0 and hc("get_debugreg", 6) == 0xFFFF0FF0
    assert hc("set_debugreg", 7, 0) == 0 and hc("get_debugreg", 7) == 0
    assert hc("set_debugreg", 7, 0x1 | 0xD800) == 0 and hc("get_debugreg", 7) == 0x401
    assert hc("set_debugreg", 7, 1 << 13) == EPERM
    assert hc("set_debugreg", 7, 0x1 | (2 << 18)) == EPERM  # LEN0 = 10b
    assert hc("set_debugreg", 4, 0) == EINVAL and hc("set_debugreg", 8, 0) == EINVAL
    assert hc("get_debugreg", 8) == EINVAL and hc("get_debugreg", -1) == EINVAL
    assert hc("get_debugreg", 5) == 0


# --- emulate_privileged_op -----------------------------------------------------------------------
IN_AL = b"\xe4\x60"


def test_io_needs_the_virtual_iopl_of_the_ring(impl: ReferenceImplementation, g: Guest) -> None:
    """guest_io_okay: IOPL >= 1 for the kernel, 3 for user mode; IN reads all ones (no domain
    has I/O ports), in the operand's width only."""
    assert run(impl, g, IN_AL, eax=0x12345678)[0] is False
    assert set_iopl(g, 1) == 0
    ok, r = run(impl, g, IN_AL, eax=0x12345678)
    assert ok and r.eax == 0x123456FF and r.eip == g.va(CODE_PFN) + 2
    assert run(impl, g, IN_AL, ring=3)[0] is False
    ok, r = run(impl, g, b"\x66\xed", eax=0x12345678, edx=0x70)  # in %dx,%ax
    assert ok and r.eax == 0x1234FFFF and r.eip == g.va(CODE_PFN) + 2
    ok, r = run(impl, g, b"\xef", eax=7, edx=0x70)  # out %eax,%dx: dropped
    assert ok and r.eax == 7
    assert run(impl, g, b"\xfa")[0] and not run(impl, g, b"\xfa", ring=3)[0]  # cli
    assert set_iopl(g, 3) == 0
    assert run(impl, g, IN_AL, ring=3)[0] and run(impl, g, b"\xfb", ring=3)[0]


def test_io_bitmap(impl: ReferenceImplementation, g: Guest) -> None:
    """guest_io_okay reads two bytes of the guest's bitmap at port / 8 through its page
    tables; a port is allowed when its bits are clear and port + size < nr_ports. A bitmap
    read that faults counts as all clear (3.0's __get_user leaves 0)."""
    bitmap = bytearray(b"\xff" * abi.PAGE_SIZE)
    bitmap[0x60 >> 3] = 0
    impl.write_pfn(g.domid, 8, 0, bytes(bitmap))
    arg = g.write_args(struct.pack("<II", g.va(8), 0x100), 0x100)
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_set_iobitmap, arg) == 0
    assert run(impl, g, IN_AL)[0] and run(impl, g, IN_AL, ring=3)[0]
    assert not run(impl, g, b"\xe4\x70")[0]
    assert run(impl, g, b"\xe5\x64")[0] and not run(impl, g, b"\xe5\x66")[0]  # 4 ports
    assert not run(impl, g, b"\xfa")[0]  # the bitmap does not allow CLI
    arg = g.write_args(struct.pack("<II", 0x1000, 0x100), 0x100)  # not mapped
    assert g.hypercall("physdev_op", abi.PHYSDEVOP_set_iobitmap, arg) == 0
    assert run(impl, g, b"\xe4\x70")[0]


def test_string_io_repeats_in_batches(impl: ReferenceImplementation, g: Guest) -> None:
    """REP INS/OUTS: every iteration is checked and done; past REP_BATCH the instruction is
    left to run again (hypercall_preempt_check), and ECX 0 does nothing."""
    assert set_iopl(g, 1) == 0
    n = emulate.REP_BATCH + 10
    ok, r = run(impl, g, b"\xf3\x6e", ecx=n, esi=g.va(8), edx=0x80)  # rep outsb
    assert ok and r.eip == g.va(CODE_PFN) and r.ecx == 10 and r.esi == g.va(8) + n - 10
    ok, r = run(impl, g, b"\xf3\x6e", ecx=10, esi=r.esi, edx=0x80)
    assert ok and r.eip == g.va(CODE_PFN) + 2 and r.ecx == 0
    ok, r = run(impl, g, b"\xf3\x6c", ecx=0, edi=0)  # rep insb, nothing to do
    assert ok and r.eip == g.va(CODE_PFN) + 2 and r.edi == 0
    ok, r = run(impl, g, b"\xf3\x66\x6d", ecx=3, edi=g.va(8) + 6,
                eflags=abi.X86_EFLAGS_DF | abi.X86_EFLAGS_MBS)  # std; rep insw
    assert ok and r.edi == g.va(8) and impl.read_pfn(g.domid, 8, 2, 6) == b"\xff" * 6


def test_prefixes(impl: ReferenceImplementation, g: Guest) -> None:
    """Xen reads at most 8 bytes of prefixes and opcode: 7 prefixes and the opcode are an
    instruction, 8 prefixes are none."""
    assert set_iopl(g, 1) == 0
    ok, r = run(impl, g, b"\x2e\x3e\x26\x64\x65\xf0\x66" + b"\xe5\x60", eax=0)
    assert ok and r.eax == 0xFFFF and r.eip == g.va(CODE_PFN) + 9
    assert not run(impl, g, b"\x2e" * 8 + IN_AL)[0]


def test_ring0_instructions_from_the_kernel(impl: ReferenceImplementation, g: Guest) -> None:
    """MOV CR reads (any ModRM register, ESP included), CR0 writes change TS only, CR4 only
    its value, CLTS clears the virtual TS; none of it from ring 3."""
    v = impl.hv.domains[g.domid].vcpus[0]
    a = impl.pv.arch(v)
    ok, r = run(impl, g, b"\x0f\x20\xdc")  # mov %cr3,%esp
    assert ok and r.esp == v.guest_table << abi.PAGE_SHIFT
    assert not run(impl, g, b"\x0f\x20\xdc", ring=3)[0]
    a.virtual_ts = True
    ok, r = run(impl, g, b"\x0f\x20\xc0")  # mov %cr0,%eax
    assert ok and r.eax == emulate.MACHINE_CR0 | abi.X86_CR0_TS
    assert run(impl, g, b"\x0f\x06")[0] and not a.virtual_ts  # clts
    assert run(impl, g, b"\x0f\x22\xc0", eax=emulate.MACHINE_CR0 | abi.X86_CR0_TS)[0]
    assert a.virtual_ts
    assert not run(impl, g, b"\x0f\x22\xc0", eax=emulate.MACHINE_CR0 & ~abi.X86_CR0_WP)[0]
    assert run(impl, g, b"\x0f\x22\xe0", eax=0)[0]  # mov %eax,%cr4 of what it reads
    assert not run(impl, g, b"\x0f\x22\xe0", eax=abi.X86_CR4_PSE)[0]
    assert not run(impl, g, b"\x0f\x20\xc8")[0]  # mov %cr1,%eax
    assert run(impl, g, b"\x0f\x09")[0]  # wbinvd
    assert not run(impl, g, b"\xf4")[0] and not run(impl, g, b"\x0f\x01\x10")[0]  # hlt, lgdt


def test_msrs(impl: ReferenceImplementation) -> None:
    """RDMSR of the model's MSRs for everyone, #GP for others; WRMSR ignored unless the
    domain is privileged, which changes the model's copy of a known MSR only."""
    g = Guest(impl, 48, 32)
    ok, r = run(impl, g, b"\x0f\x32", ecx=emulate.MSR_IA32_APICBASE)
    assert ok and (r.eax, r.edx) == (0xFEE00900, 0)
    assert not run(impl, g, b"\x0f\x32", ecx=0x10)[0]
    assert run(impl, g, b"\x0f\x30", ecx=0x10)[0]  # ignored
    dom0 = Guest(impl, 48, 32, privileged=True)
    assert not run(impl, dom0, b"\x0f\x30", ecx=0x10)[0]
    assert run(impl, dom0, b"\x0f\x30", ecx=emulate.MSR_IA32_SYSENTER_CS, eax=0x61)[0]
    assert run(impl, g, b"\x0f\x32", ecx=emulate.MSR_IA32_SYSENTER_CS)[1].eax == 0x61


# --- the guest kernel ---------------------------------------------------------------------------
needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")


def boot_privop(cmdline: str = "", **kw: object) -> BootResult:
    return boot(str(build_guest("privop")), cmdline=cmdline, timeout_s=120, **kw)  # type: ignore[arg-type]


@needs_gcc
@pytest.mark.parametrize("counting", ["as configured", "every instruction"])
def test_privop_guest(monkeypatch: pytest.MonkeyPatch, counting: str) -> None:
    """The privop kernel from ring 1 and 3, on the block counter (when it is built) and on
    Unicorn's per-instruction count: the I/O path must not depend on how the engine stops."""
    if counting == "every instruction":
        monkeypatch.setattr(cpu, "_native", False, raising=False)
    r = boot_privop()
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff
    assert r.hv is not None and check_invariants(r.hv) == []


@needs_gcc
def test_privop_guest_notices_a_kernel_mode_rule_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sensitivity: with ring 3 taken for kernel mode the kernel reports FAILURE."""
    monkeypatch.setattr(emulate, "kernel_mode", lambda regs: True)
    r = boot_privop()
    assert r.test_result == "FAILURE", r.console


@needs_gcc
def test_mov_to_cr3_of_no_page_directory_crashes_only_the_domain() -> None:
    r = boot(str(build_guest("crash")), cmdline="bad-cr3", timeout_s=60)
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and "does not validate as a page directory" in r.crash_reason
    assert r.hv is not None and check_invariants(r.hv) == []

"""Emulation of the privileged instructions a paravirtual guest may use, and the debug
registers.

Xen runs a guest kernel in ring 1 and its processes in ring 3, with the hardware IOPL at 0 and
no I/O bitmap in the TSS, so every I/O instruction, CLI/STI and every ring-0 instruction the
guest executes raises #GP(0). Xen 3.0's do_general_protection (xen/arch/x86/traps.c) hands each
#GP(0) from a guest to emulate_privileged_op before it bounces it; what that function completes
never reaches the guest's handler:

* prefixes: at most 8 bytes of legacy prefixes and opcode are read (so 7 prefixes at most),
  0x66 toggles the operand size, 0xf3 is REP, the others (segment overrides, 0x67, LOCK,
  REPNE) are skipped and change nothing;
* INS/OUTS, IN/OUT (imm8 or DX) from ring 1 or 3: allowed when guest_io_okay says so (the
  vCPU's virtual IOPL of PHYSDEVOP_set_iopl is at least 1 in the kernel, 3 in user mode; or
  the ports' bits are clear in the guest's own bitmap of PHYSDEVOP_set_iobitmap, read through
  the guest's page tables, a faulting read counting as all clear as 3.0's __get_user leaves
  it). The port access itself goes through admin_io_okay, which in the model refuses every
  port (no domain is given I/O ports: there is no DOM0_IOPORT_PERMISSION and no device
  behind a port), so IN reads all ones and OUT is dropped, silently as in Xen. The string
  forms read or write guest memory at ESI/EDI (linear, as 3.0's get_user/put_user do) and
  propagate a page fault with error code 4 (read) or 6 (write) when they cannot; REP repeats
  up to ``REP_BATCH`` times per trap, then leaves EIP at the instruction to be continued (the
  model's deterministic stand-in for hypercall_preempt_check);
* CLI/STI: allowed with enough virtual IOPL, and without effect (Xen's own comment: the event
  mask is not touched);
* from the guest kernel only (ring 1; anything else from ring 3 is the #GP): CLTS is
  fpu_taskswitch(0); WBINVD is ignored; MOV from CR0 (the machine's CR0 with the virtual TS),
  CR2 (ctrlreg[2]), CR3 (the machine address of the base pointer) and CR4 (the machine's,
  without PGE and PSE); MOV to CR0 (only TS may change), CR2 (ctrlreg[2] and vcpu_info's
  cr2), CR3 (new_guest_cr3 of the frame, refmodel/mm.py: its result ignored, so a table that
  does not validate crashes the domain as MMUEXT_NEW_BASEPTR does) and CR4 (only the value it
  reads); MOV to and from DR0-7 by set_debugreg/do_get_debugreg; WRMSR is ignored for an
  unprivileged domain; RDMSR reads ``MACHINE_MSRS`` (rdmsr_safe: any other MSR is the #GP);
* a fault fetching the instruction propagates a page fault (error code 4) at its address.

Everything else (HLT, LGDT, LIDT, INVLPG, MOV to other CRs, ...) is bounced as the #GP(0).

The decoder follows 3.0.x's (MOV CR/DR take the ModRM register fields and ignore the mod
bits). The model's processor: ``MACHINE_CR0`` and ``MACHINE_CR4`` are the control registers
Xen runs guests with here (the CPU substrate's, refmodel/cpu.py; its CR4.TSD, set when the
model's clock serves RDTSC, is the model's device and not Xen's, and is not shown). The debug
registers are kept and checked but not loaded into the emulator: the model has no hardware
breakpoints. Departures: the MSR set is small (``MACHINE_MSRS``); a privileged domain's WRMSR
changes only the model's copy of a known MSR (any other is the #GP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenspec.refmodel.arch import (
    IN_OPCODES,
    IO_STRING_OPCODES,
    LEGACY_PREFIXES,
    OUT_OPCODES,
    CpuUserRegs,
)
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi
from xenspec.spec.abi_profiles import VMASST_TYPE_architectural_iopl

if TYPE_CHECKING:
    from collections.abc import Callable

    from xenspec.refmodel.platform import PVPlatform

_M32 = 0xFFFFFFFF

MACHINE_CR0: int = (abi.X86_CR0_PE | abi.X86_CR0_MP | abi.X86_CR0_ET | abi.X86_CR0_NE
                    | abi.X86_CR0_WP | abi.X86_CR0_PG)
MACHINE_CR4: int = 0

# The model processor's MSRs (Intel SDM vol. 4 numbers): the local APIC at its default base,
# enabled, on the boot processor; no microcode update loaded; SYSENTER unused (Xen 3.0 x86_32
# does not program it); DEBUGCTL (asm-x86/msr.h MSR_IA32_DEBUGCTLMSR) 0, its value at reset,
# which Xen 3.0.4 never changes for a PV guest (no last-branch recording, no BTF): 3.0.4's
# RDMSR emulation reads it from the processor (traps.c emulate_privileged_op, the default
# case: rdmsr_safe), and every P6-family or later processor has it.
MSR_IA32_APICBASE = 0x1B
MSR_IA32_UCODE_REV = 0x8B
MSR_IA32_DEBUGCTLMSR = 0x1D9
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MACHINE_MSRS: dict[int, int] = {
    MSR_IA32_APICBASE: 0xFEE00000 | 0x800 | 0x100,  # base, global enable, BSP
    MSR_IA32_UCODE_REV: 0,
    MSR_IA32_SYSENTER_CS: 0,
    MSR_IA32_SYSENTER_ESP: 0,
    MSR_IA32_SYSENTER_EIP: 0,
    MSR_IA32_DEBUGCTLMSR: 0,
}

# traps.c: the error codes of the page faults the emulator propagates.
USER_READ_FAULT = abi.PFEC_user_mode
USER_WRITE_FAULT = abi.PFEC_user_mode | abi.PFEC_write_access

REP_BATCH = 1024  # REP INS/OUTS iterations per trap before the instruction is continued

_SKIPPED_PREFIXES = LEGACY_PREFIXES - {0x66, 0xF3}  # operand size and REP have effects
_INS = (0x6C, 0x6D)
_IO_STRING = IO_STRING_OPCODES
_IN = IN_OPCODES
_OUT = OUT_OPCODES
# decode_register: ModRM register numbers.
_REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")



def architectural_iopl(pv: PVPlatform, v: Vcpu) -> bool:
    """The domain enabled VMASST_TYPE_architectural_iopl (compat-pae only): the kernel runs
    with IOPL semantics of ring 0, and the virtual IOPL travels in IRET and bounce frames."""
    return bool(pv.darch(v.domain).vm_assist >> VMASST_TYPE_architectural_iopl & 1)

class _PageFault(Exception):
    """traps.c, PAGE_FAULT(addr, error_code): propagate a page fault and stop emulating."""

    def __init__(self, addr: int, error_code: int) -> None:
        super().__init__(addr, error_code)
        self.addr = addr
        self.error_code = error_code


class _Fetch:
    """insn_fetch: instruction bytes read through the guest's page tables."""

    def __init__(self, read: Callable[[int, int], bytes | None], eip: int) -> None:
        self.read = read
        self.eip = eip

    def u8(self) -> int:
        raw = self.read(self.eip, 1)
        if raw is None:
            raise _PageFault(self.eip, USER_READ_FAULT)
        self.eip = (self.eip + 1) & _M32
        return raw[0]


def kernel_mode(regs: CpuUserRegs) -> bool:
    """x86_32 KERNEL_MODE: the guest kernel runs in ring 1 (VM86 never happens here)."""
    return regs.cs & 3 == 1


def io_mask(size: int) -> int:
    return (1 << (8 * size)) - 1


class Emulate:
    """emulate_privileged_op, the debug registers and the machine's MSRs of one platform."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.msrs = dict(MACHINE_MSRS)
        self.emulated = 0  # instructions completed by emulation

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["set_debugreg"]: self.do_set_debugreg,
            HYPERCALL_NUMBERS["get_debugreg"]: self.do_get_debugreg,
        }

    # ----------------------------------------------------------------------------------------
    # emulate_privileged_op.
    # ----------------------------------------------------------------------------------------
    def emulate_privileged_op(self, v: Vcpu, regs: CpuUserRegs) -> bool:
        """True when the #GP(0) at ``regs`` was handled: the instruction completed (``regs``
        advanced) or a page fault was propagated; False: bounce the #GP."""
        try:
            done = self._emulate(v, regs)
        except _PageFault as pf:
            self.pv.traps.propagate_page_fault(v, pf.addr, pf.error_code, regs)
            return True
        self.emulated += done
        return done

    def _read(self, v: Vcpu) -> Callable[[int, int], bytes | None]:
        return lambda va, n: self.hv.copy_from_guest(v, va, n)

    def _prefixes(self, f: _Fetch) -> tuple[int, int, bool]:
        """The legacy prefixes: (opcode, operand size, REP)."""
        op_bytes, rep = 4, False
        opcode = 0
        for _ in range(8):
            opcode = f.u8()
            if opcode == 0x66:
                op_bytes ^= 6
            elif opcode == 0xF3:
                rep = True
            elif opcode not in _SKIPPED_PREFIXES:
                break
        return opcode, op_bytes, rep

    def _emulate(self, v: Vcpu, regs: CpuUserRegs) -> bool:
        f = _Fetch(self._read(v), regs.eip)
        opcode, op_bytes, rep = self._prefixes(f)
        if opcode in _IO_STRING:
            return self.io_string(v, regs, f, opcode, op_bytes, rep)
        if opcode in _IN or opcode in _OUT:
            byte_form = _IN.get(opcode, _OUT.get(opcode))
            size = 1 if byte_form else op_bytes
            port = f.u8() if opcode in (0xE4, 0xE5, 0xE6, 0xE7) else regs.edx & 0xFFFF
            if not self.guest_io_okay(v, regs, port, size):
                return False
            if opcode in _IN:
                data = self.in_user(v, port, size)
                regs.eax = data if size == 4 else (regs.eax & ~io_mask(size) & _M32) | data
            else:
                self.out_user(v, port, size, regs.eax & io_mask(size))
            regs.eip = f.eip
            return True
        if opcode in (0xFA, 0xFB):  # CLI, STI
            if self.pv.arch(v).iopl < self.io_cpl(v, regs):
                return False
            regs.eip = f.eip
            return True
        if opcode != 0x0F or not kernel_mode(regs):
            return False
        if not self.ring0_op(v, regs, f):
            return False
        regs.eip = f.eip
        return True

    # --- I/O ------------------------------------------------------------------------------------
    def io_cpl(self, v: Vcpu, regs: CpuUserRegs) -> int:
        """The privilege the virtual IOPL is compared with: 3 for user mode, 1 for the
        kernel, or 0 with the architectural_iopl assist (4.19 pv/emul-priv-op.c iopl_ok)."""
        if not kernel_mode(regs):
            return 3
        return 0 if architectural_iopl(self.pv, v) else 1

    def guest_io_okay(self, v: Vcpu, regs: CpuUserRegs, port: int, size: int) -> bool:
        """traps.c, guest_io_okay: the virtual IOPL, else the guest's I/O bitmap."""
        a = self.pv.arch(v)
        if a.iopl >= self.io_cpl(v, regs):
            return True
        if a.iobmp_limit > port + size:
            raw = self.hv.copy_from_guest(v, a.iobmp + (port >> 3), 2)
            bits = 0 if raw is None else int.from_bytes(raw, "little")  # __get_user's 0
            if bits & (((1 << size) - 1) << (port & 7)) == 0:
                return True
        return False

    def admin_io_okay(self, v: Vcpu, port: int, size: int) -> bool:
        """traps.c, admin_io_okay: the ports the domain was given. No domain has any."""
        return False

    def in_user(self, v: Vcpu, port: int, size: int) -> int:
        """inb_user/inw_user/inl_user: all ones when the access is refused."""
        if not self.admin_io_okay(v, port, size):
            return io_mask(size)
        raise AssertionError("the model has no I/O ports to read")

    def out_user(self, v: Vcpu, port: int, size: int, value: int) -> None:
        """outb_user/outw_user/outl_user: dropped when the access is refused."""
        if self.admin_io_okay(v, port, size):
            raise AssertionError("the model has no I/O ports to write")

    def io_string(self, v: Vcpu, regs: CpuUserRegs, f: _Fetch, opcode: int, op_bytes: int,
                  rep: bool) -> bool:
        """INS/OUTS, each iteration checked; REP continues in the next trap past REP_BATCH."""
        if rep and regs.ecx == 0:
            regs.eip = f.eip
            return True
        size = 1 if opcode in (0x6C, 0x6E) else op_bytes
        step = -size if regs.eflags & abi.X86_EFLAGS_DF else size
        for n in range(1, REP_BATCH + 1):
            port = regs.edx & 0xFFFF
            if not self.guest_io_okay(v, regs, port, size):
                return False
            if opcode in _INS:
                data = self.in_user(v, port, size).to_bytes(size, "little")
                if not self.hv.copy_to_guest(v, regs.edi, data):
                    raise _PageFault(regs.edi, USER_WRITE_FAULT)
                regs.edi = (regs.edi + step) & _M32
            else:
                raw = self.hv.copy_from_guest(v, regs.esi, size)
                if raw is None:
                    raise _PageFault(regs.esi, USER_READ_FAULT)
                self.out_user(v, port, size, int.from_bytes(raw, "little"))
                regs.esi = (regs.esi + step) & _M32
            if not rep:
                break
            regs.ecx = (regs.ecx - 1) & _M32
            if regs.ecx == 0:
                break
            if n == REP_BATCH:
                return True  # preempted: EIP stays at the instruction, which runs on
        regs.eip = f.eip
        return True

    def io_string_at(self, v: Vcpu, eip: int) -> bool:
        """Whether the instruction at ``eip`` is INS or OUTS: the processor raises #GP for a
        guest's I/O instruction before it touches memory, so a page fault the emulator took
        for one of them is that #GP."""
        f = _Fetch(self._read(v), eip)
        try:
            opcode, _, _ = self._prefixes(f)
        except _PageFault:
            return False
        return opcode in _IO_STRING

    # --- the ring-0 instructions (0x0f xx), guest kernel only -----------------------------------
    def ring0_op(self, v: Vcpu, regs: CpuUserRegs, f: _Fetch) -> bool:
        op = f.u8()
        if op == 0x06:  # CLTS
            self.pv.traps.do_fpu_taskswitch(v, 0)
            return True
        if op == 0x09:  # WBINVD: ignored (the model has no caches to write back)
            return True
        if op in (0x20, 0x21, 0x22, 0x23):
            modrm = f.u8()
            reg, rm = (modrm >> 3) & 7, _REGS[modrm & 7]
            if op == 0x20:
                value = self.read_cr(v, reg)
            elif op == 0x21:
                value = self.do_get_debugreg(v, reg)
                value = None if value & _M32 > (-256) & _M32 else value
            elif op == 0x22:
                return self.write_cr(v, reg, getattr(regs, rm))
            else:
                return self.set_debugreg(v, reg, getattr(regs, rm)) == 0
            if value is None:
                return False
            setattr(regs, rm, value & _M32)
            return True
        if op == 0x30:  # WRMSR
            return self.wrmsr(v, regs.ecx, regs.edx << 32 | regs.eax)
        if op == 0x32:  # RDMSR: everyone can read the MSR space
            value = self.msrs.get(regs.ecx)
            if value is None:
                return False
            regs.eax, regs.edx = value & _M32, value >> 32
            return True
        return False

    def read_cr(self, v: Vcpu, reg: int) -> int | None:
        a = self.pv.arch(v)
        if reg == 0:
            return (MACHINE_CR0 & ~abi.X86_CR0_TS) | (abi.X86_CR0_TS if a.virtual_ts else 0)
        if reg == 2:
            return a.cr2
        if reg == 3:
            return v.guest_table << abi.PAGE_SHIFT  # pagetable_get_paddr(guest_table)
        if reg == 4:
            return MACHINE_CR4 & ~(abi.X86_CR4_PGE | abi.X86_CR4_PSE)
        return None

    def write_cr(self, v: Vcpu, reg: int, value: int) -> bool:
        if reg == 0:
            if (value ^ MACHINE_CR0) & ~abi.X86_CR0_TS:
                return False  # "Attempt to change unmodifiable CR0 flags"
            self.pv.traps.do_fpu_taskswitch(v, 1 if value & abi.X86_CR0_TS else 0)
            return True
        if reg == 2:
            self.pv.arch(v).cr2 = value
            self.pv.vcpu_info_write32(v, abi.VCPU_INFO_arch_cr2, value)
            return True
        if reg == 3:
            self.hv.mm.new_guest_cr3(v, value >> abi.PAGE_SHIFT)  # its result is ignored
            return True
        if reg == 4:
            return value == MACHINE_CR4 & ~(abi.X86_CR4_PGE | abi.X86_CR4_PSE)
        return False

    def wrmsr(self, v: Vcpu, msr: int, value: int) -> bool:
        """Ignored for an unprivileged domain; wrmsr_safe of the model's MSRs otherwise."""
        if not v.domain.is_privileged:
            return True
        if msr not in self.msrs:
            return False
        self.msrs[msr] = value
        return True

    # ----------------------------------------------------------------------------------------
    # The debug registers (traps.c, set_debugreg and do_get_debugreg; hypercalls 8 and 9).
    # ----------------------------------------------------------------------------------------
    def set_debugreg(self, v: Vcpu, reg: int, value: int) -> int:
        value &= _M32
        if 0 <= reg <= 3:
            if not self.hv.array_access_ok(value, 1, 4):  # access_ok(value, sizeof(long))
                return -abi.EPERM
        elif reg == 6:
            value = (value & 0xFFFFEFFF) | 0xFFFF0FF0  # reserved bits to 0, then to 1
        elif reg == 7:
            if value != 0:  # DR7 == 0: debugging disabled
                value = (value & 0xFFFF27FF) | 0x400
                if value & (1 << 13):  # GD
                    return -abi.EPERM
                if any((value >> (16 + i)) & 3 == 2 for i in range(0, 16, 2)):
                    return -abi.EPERM  # R/W or LEN of 10b
        else:
            return -abi.EINVAL
        self.pv.arch(v).debugreg[reg] = value
        return 0

    def do_set_debugreg(self, v: Vcpu, reg: int, value: int) -> int:
        """Hypercall 8."""
        return self.set_debugreg(v, _signed(reg), value)

    def do_get_debugreg(self, v: Vcpu, reg: int) -> int:
        """Hypercall 9 (and MOV from DR): the value, or -EINVAL for a register outside 0-7."""
        reg = _signed(reg)
        if not 0 <= reg <= 7:
            return -abi.EINVAL
        return self.pv.arch(v).debugreg[reg]


def _signed(x: int) -> int:
    x &= _M32
    return x - (1 << 32) if x & 0x80000000 else x

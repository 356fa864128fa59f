"""The x86_32 part of a vCPU and a domain: what Xen keeps in ``struct arch_vcpu`` and
``struct arch_domain`` and the guest register frame ``struct cpu_user_regs``.

Sources (Xen 3.0.4): xen/include/public/arch-x86_32.h (cpu_user_regs, trap_info,
vcpu_guest_context), xen/include/asm-x86/domain.h (arch_vcpu: guest_context with trap_ctxt,
kernel_ss/kernel_sp, event and failsafe callbacks, ctrlreg, debugreg; the virtual CR0.TS of
fpu_taskswitch; iopl, iobmp and iobmp_limit of physdev.c) and xen/include/xen/sched.h
(vm_assist bits). The registers the CPU substrate
hands to the hypervisor are a ``CpuUserRegs``; handlers change it and the substrate applies it,
as Xen's handlers change the frame on its stack. Nothing here depends on the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xenspec.spec import abi

# x86 instruction encoding (Intel SDM vol. 2, 2.1.1 and the IN/OUT/INS/OUTS pages): the legacy
# prefixes, and the I/O instructions' opcodes (for IN and OUT: 1 for the byte form).
LEGACY_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
IO_STRING_OPCODES = range(0x6C, 0x70)  # INSB, INSW/D, OUTSB, OUTSW/D
IN_OPCODES = {0xE4: 1, 0xE5: 0, 0xEC: 1, 0xED: 0}  # imm8 or DX
OUT_OPCODES = {0xE6: 1, 0xE7: 0, 0xEE: 1, 0xEF: 0}
IO_IMM8_OPCODES = frozenset({0xE4, 0xE5, 0xE6, 0xE7})

# The bytes of a domain's console output the model keeps (ArchDomain.console): the size of
# Xen's own console ring (xen/drivers/char/console.c, CONRING_SIZE).
CONSOLE_LOG_SIZE = 16384


@dataclass
class CpuUserRegs:
    """arch-x86_32.h, struct cpu_user_regs (the segment selectors as plain words)."""

    ebx: int = 0
    ecx: int = 0
    edx: int = 0
    esi: int = 0
    edi: int = 0
    ebp: int = 0
    eax: int = 0
    eip: int = 0
    cs: int = 0
    eflags: int = 0
    esp: int = 0
    ss: int = 0
    es: int = 0
    ds: int = 0
    fs: int = 0
    gs: int = 0

    @property
    def ring(self) -> int:
        return self.cs & 3


@dataclass(frozen=True)
class TrapInfo:
    """One virtual IDT entry (arch-x86_32.h, trap_info): flags bits 0-1 DPL, bit 2 IF.

    Never changed in place (set_trap_table stores a new entry), so what is derived from an
    entry can be kept with the entry itself as its key (``ArchVcpu.int80_gate``)."""

    flags: int = 0
    cs: int = 0
    address: int = 0

    @property
    def dpl(self) -> int:
        return self.flags & abi.TI_DPL_MASK

    @property
    def masks_events(self) -> bool:
        return bool(self.flags & abi.TI_IF_FLAG)


class GuestCPU(Protocol):
    """What the hypervisor needs from the CPU substrate running a vCPU."""

    def user_regs(self) -> CpuUserRegs:
        """The guest's registers at the current trap; changes are applied on return."""
        ...


@dataclass
class ArchVcpu:
    """Per-vCPU state of the x86 CPU interface (domain.h, arch_vcpu.guest_context)."""

    trap_ctxt: list[TrapInfo] = field(
        default_factory=lambda: [TrapInfo() for _ in range(abi.NR_VECTORS)]
    )
    kernel_ss: int = 0
    kernel_sp: int = 0
    event_callback_cs: int = 0
    event_callback_eip: int = 0
    failsafe_callback_cs: int = 0
    failsafe_callback_eip: int = 0
    # guest_context.flags VGCF_failsafe_disables_events: the failsafe callback masks events
    # (callback_op with CALLBACKF_mask_events; x86_32/entry.S failsafe_callback, TBF_INTERRUPT).
    failsafe_disables_events: bool = False
    # vcpu.nmi_addr: the NMI callback (common/kernel.c, register_guest_nmi_callback).
    nmi_addr: int = 0
    # compat-pae: the syscall32 and sysenter callbacks by type, (cs, eip, masks events)
    # (pv/callback.c compat_register_guest_callback, 4.19).
    fast_callbacks: dict[int, tuple[int, int, bool]] = field(default_factory=dict)
    # fpu_taskswitch: the virtual CR0.TS (guest_context.ctrlreg[0] & X86_CR0_TS).
    virtual_ts: bool = False
    # guest_context.ctrlreg[2]: the last page fault's address propagated to the guest, or
    # what the kernel wrote with MOV to CR2 (traps.c, propagate_page_fault).
    cr2: int = 0
    # guest_context.debugreg[0..7] (traps.c, set_debugreg/do_get_debugreg).
    debugreg: list[int] = field(default_factory=lambda: [0] * 8)
    # physdev.c: the virtual IOPL (0..3) and the guest's I/O bitmap (a guest virtual address
    # and the number of ports it covers) that guest_io_okay consults.
    iopl: int = 0
    iobmp: int = 0
    iobmp_limit: int = 0
    # set_gdt: the guest's GDT frames (machine frame numbers) and entry count.
    gdt_frames: list[int] = field(default_factory=list)
    gdt_ents: int = 0
    # The shadow LDT (mm.c, map_ldt_shadow_page): page n of the LDT area -> the guest frame
    # mapped there, each holding a general and a PGT_ldt_page type reference.
    shadow_ldt: dict[int, int] = field(default_factory=dict)
    cpu: GuestCPU | None = None
    # arch_vcpu.int80_desc (x86_32/traps.c, init_int80_direct_trap): the trap-table entry
    # for vector 0x80 that the direct gate was last built from, and whether Xen builds one for
    # it; derived from that entry alone, so asked again whenever trap_ctxt[0x80] is another
    # object (refmodel/traps.py, Traps.int80_gate). Not part of the guest-visible state.
    int80_gate: tuple[TrapInfo, bool] | None = field(default=None, compare=False, repr=False)


@dataclass
class ArchDomain:
    """Per-domain state the CPU interface reads: shared_info and the vm_assist bits."""

    shared_info_mfn: int = 0
    vm_assist: int = 0
    # The model's stub page (Xen-owned, mapped read-only in the per-domain area): the ring-0
    # ``iret`` the substrate enters guest rings through, and the frames it returns with.
    stub_mfn: int = 0
    # The last CONSOLE_LOG_SIZE bytes the domain wrote to its console (PVPlatform.write_console).
    console: bytearray = field(default_factory=bytearray)

"""Traps: the guest's virtual IDT, exception bounces, software interrupts and the trap-related
hypercalls (set_trap_table, stack_switch, set_callbacks, callback_op, fpu_taskswitch, iret).

Rules from Xen 3.0.4: xen/arch/x86/traps.c (do_set_trap_table, do_fpu_taskswitch,
do_trap/do_page_fault/do_general_protection propagation, permit_softint,
emulate_forced_invalid_op), xen/arch/x86/x86_32/traps.c (do_iret, do_set_callbacks,
do_stack_switch) and xen/arch/x86/x86_32/entry.S (create_bounce_frame). The bounce frame is
Xen 3.0's: from low to high [error code], EIP, CS with the saved event mask in bits 16-23,
EFLAGS with IF = !saved mask, and ESP, SS when the guest was in ring 3, on the ring-1 stack
(the current one, or the ``stack_switch`` stack coming from ring 3). A page fault's CR2 goes
to ``vcpu_info.arch.cr2``. A trap the guest cannot take (no handler, an unwritable stack, an
iret to ring 0) crashes the domain only, with the reason recorded.

A #GP(0) from the guest goes to emulate_privileged_op (refmodel/emulate.py) first, as in
do_general_protection: I/O instructions against the virtual IOPL and I/O bitmap, CLI/STI, and
from the kernel CLTS, WBINVD, MOV CR/DR, RDMSR/WRMSR; only what it refuses is bounced. A page
fault the emulator raised for an INS/OUTS is that instruction's #GP (the processor checks I/O
permission before it touches memory).

``int $0x80`` through Xen's direct gate (x86_32/traps.c, init_int80_direct_trap): when the
trap table's vector 0x80 does not mask events and names an acceptable code selector, Xen puts
a trap gate with the entry's DPL into the IDT, and the processor, not Xen, delivers the system
call: the hardware frame EIP, CS, EFLAGS [, ESP, SS] (no saved event mask in CS, EFLAGS as
the guest had it) on the ring-1 stack. The model builds that frame itself (Unicorn has no
IDT), and does nothing else Xen would not do.

The failsafe callback (x86_32/entry.S): Xen reloads DS, ES, FS, GS on every return to the guest
(restore_all_guest, FLT1-FLT4; the check is refmodel/desc.py, reload_data_segments), and when a
load faults, or its own iret does (a CS or SS the CPU refuses, FLT5), it bounces to the
failsafe callback: create_bounce_frame with TBF_FAILSAFE pushes, from low to high, DS, ES, FS,
GS, then EIP, CS with the saved event mask, EFLAGS [, ESP, SS], masks events only when the
callback was registered with CALLBACKF_mask_events (VGCF_failsafe_disables_events: entry.S adds
TBF_INTERRUPT), and the four selectors are zeroed; with no callback address the domain is
crashed. A page fault in the vCPU's LDT area is a descriptor read: the page is mapped lazily, or
the guest gets a #PF at ldt_base + offset (traps.c, handle_gdt_ldt_mapping_fault); one in a GDT
page with no frame behind it is #GP(selector).

Callbacks (x86_32/traps.c, register_guest_callback, shared by set_callbacks and callback_op;
public/callback.h): the code selector is fixed up; ``CALLBACKTYPE_event`` and ``_failsafe``
are stored (the failsafe one with its CALLBACKF_mask_events flag; set_callbacks passes no
flags, so it clears it); ``CALLBACKTYPE_nmi`` is common/kernel.c register_guest_nmi_callback:
-EINVAL unless the caller is vCPU 0 of domain 0 (the model delivers no NMI, so the address is
only recorded). ``CALLBACKTYPE_sysenter`` exists only with CONFIG_X86_SUPERVISOR_MODE_KERNEL,
which a default 3.0.4 build lacks, and ``syscall`` only on x86_64: both, and any other type,
are -ENOSYS. Unregistering the event or failsafe callback is -EINVAL, the NMI one always
succeeds; any other command is -ENOSYS; an unreadable argument is -EFAULT.

A trap table is read entry by entry until one with address 0, with the preemption check before
each (do_set_trap_table): a long table is continued from the next entry.

Departure: a guest's not-present page fault at an address the current tables now map is taken
as spurious (the translation is flushed and the guest retries, ``spurious_page_fault``). Xen
3.0.4 asks that only of a fault in its own code (traps.c, do_page_fault: spurious_page_fault
under ``!guest_mode``) and propagates every guest fault. The model keeps the check because the
emulator's translation cache, not the page tables, could raise such a fault; over the
conformance suite's trap tests, 2,033 not-present guest faults reached it and none was
spurious, so no guest has yet seen the difference.

Not modelled yet: the writable-page-table assist, gpf_emulate_4gb (the 4gb_segments assist).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.arch import ArchVcpu, CpuUserRegs, TrapInfo
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.emulate import architectural_iopl
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi
from xenspec.spec.abi_profiles import CALLBACKTYPE_syscall32, CALLBACKTYPE_sysenter
from xenspec.spec.desc import guest_gate_selector_okay

# public/arch-x86/xen-x86_32.h (4.19): FLAT_RING3_SS of a compat guest.
_FLAT_COMPAT_USER_SS = 0xE033

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_NR_SET_TRAP_TABLE: int = abi.__HYPERVISOR_set_trap_table

# A bounce frame of n 32-bit words, lowest address first (n up to the failsafe callback's
# nine: DS, ES, FS, GS, EIP, CS, EFLAGS, ESP, SS).
_FRAME_WORDS = [struct.Struct(f"<{n}I") for n in range(10)]

# entry.S: the EFLAGS bits Xen clears in the live frame when it bounces.
_BOUNCE_CLEAR = abi.X86_EFLAGS_TF | abi.X86_EFLAGS_NT | abi.X86_EFLAGS_RF | abi.X86_EFLAGS_VM

# The CPUID leaves the model's processor reports through the forced-emulation prefix: a family
# 6 Intel part with FPU, TSC, CX8, CMOV, FXSR, SSE, SSE2. Leaf 1 is masked as 3.0.4's
# emulate_forced_invalid_op does (VME, DE, PSE, PGE cleared; SEP and MTRR too for a ring-1,
# unprivileged kernel).
_X86_FEATURE = {"FPU": 0, "VME": 1, "DE": 2, "PSE": 3, "TSC": 4, "MSR": 5, "CX8": 8,
                "SEP": 11, "MTRR": 12, "PGE": 13, "CMOV": 15, "FXSR": 24, "SSE": 25,
                "SSE2": 26}
_CPUID_LEAF1_EDX = sum(1 << b for b in _X86_FEATURE.values())
_CPUID_LEAF1_MASKED = _CPUID_LEAF1_EDX & ~sum(
    1 << _X86_FEATURE[f] for f in ("VME", "DE", "PSE", "PGE", "SEP", "MTRR")
)
_CPUID_LEAVES = {
    0: (1, int.from_bytes(b"Genu", "little"), int.from_bytes(b"ntel", "little"),
        int.from_bytes(b"ineI", "little")),
    1: (0x000006F6, 0x00000800, 0, _CPUID_LEAF1_MASKED),
}


def fixup_guest_code_selector(sel: int) -> int:
    """x86_32/traps.c (3.0.2+): a code selector's RPL is raised to at least 1."""
    sel &= 0xFFFF
    return sel | 1 if sel & 3 == 0 else sel


def fixup_guest_stack_selector(sel: int) -> int:
    return fixup_guest_code_selector(sel)


def selector_is_null(sel: int) -> bool:
    return (sel & ~3) == 0


def int80_direct_gate(ti: TrapInfo) -> bool:
    """x86_32/traps.c, init_int80_direct_trap: the trap table's vector 0x80 becomes an IDT
    trap gate when it does not mask events and its selector is one Xen will put into a gate
    (else int80_desc stays empty). A function of the entry alone: guest_gate_selector_okay
    looks at the selector's value, not at the descriptor it names."""
    return not ti.masks_events and bool(guest_gate_selector_okay(ti.cs))


def _frame_bytes(words: list[int]) -> bytes:
    """A bounce frame's words as Xen's movl stores them: the low 32 bits of each, lowest
    address first. Words wider than 32 bits are rare, so they are cut only when packing the
    words as they are fails."""
    n = len(words)
    layout = _FRAME_WORDS[n] if n < len(_FRAME_WORDS) else struct.Struct(f"<{n}I")
    try:
        return layout.pack(*words)
    except struct.error:
        return layout.pack(*[w & 0xFFFFFFFF for w in words])


def _where(regs: CpuUserRegs) -> str:
    """CS:EIP of a trap, for a crash reason (formatted only when there is one)."""
    return f"{regs.cs:#x}:{regs.eip:#x}"


class Traps:
    """The trap subsystem of one platform; also the substrate's ``TrapHandlers``."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.bounces = 0
        # The substrate's hypercall entry is the dispatcher itself (no frame in between).
        self.hypercall: Callable[..., int] = self.hv.hypercall

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["set_trap_table"]: self.do_set_trap_table,
            HYPERCALL_NUMBERS["stack_switch"]: self.do_stack_switch,
            HYPERCALL_NUMBERS["set_callbacks"]: self.do_set_callbacks,
            HYPERCALL_NUMBERS["callback_op"]: self.do_callback_op,
            HYPERCALL_NUMBERS["fpu_taskswitch"]: self.do_fpu_taskswitch,
            HYPERCALL_NUMBERS["iret"]: self.do_iret,
        }

    # ----------------------------------------------------------------------------------------
    # Hypercalls.
    # ----------------------------------------------------------------------------------------
    def do_set_trap_table(self, v: Vcpu, traps: int) -> int:
        """Hypercall 0: load trap_info entries until one with address 0; NULL clears all.
        The table has no length: past the preemption budget the rest is a continuation that
        starts at the next entry (traps.c, hypercall_create_continuation with the advanced
        handle)."""
        arch = self.pv.arch(v)
        if traps == 0:
            arch.trap_ctxt = [TrapInfo() for _ in range(abi.NR_VECTORS)]
            return 0
        size = abi.TRAP_INFO_T.size
        va = traps
        loaded = 0
        try:
            while True:
                if self.hv.hypercall_preempt_check(loaded):
                    return self.hv.hypercall_create_continuation(v, _NR_SET_TRAP_TABLE, va)
                raw = self.hv.copy_from_guest(v, va, size) if va + size <= 2**32 else None
                if raw is None:
                    return -abi.EFAULT
                vector, flags, cs, address = abi.TRAP_INFO_T.unpack(raw)
                if address == 0:
                    return 0
                arch.trap_ctxt[vector] = TrapInfo(flags, fixup_guest_code_selector(cs), address)
                va += size
                loaded += 1
        finally:
            self.hv.charge_work(loaded)

    def do_stack_switch(self, v: Vcpu, ss: int, esp: int) -> int:
        """Hypercall 3: the ring-1 stack for bounces from ring 3 (TSS SS1:ESP1)."""
        arch = self.pv.arch(v)
        arch.kernel_ss = fixup_guest_stack_selector(ss)
        arch.kernel_sp = esp
        return 0

    def do_set_callbacks(
        self, v: Vcpu, event_cs: int, event_eip: int, failsafe_cs: int, failsafe_eip: int
    ) -> int:
        """Hypercall 4: the event-upcall and failsafe entry points, registered as callback_op
        registers them, with no flags (x86_32/traps.c, do_set_callbacks)."""
        self.register_guest_callback(v, abi.CALLBACKTYPE_event, 0, event_cs, event_eip)
        self.register_guest_callback(v, abi.CALLBACKTYPE_failsafe, 0, failsafe_cs, failsafe_eip)
        return 0

    def do_callback_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        """Hypercall 30 (x86_32/traps.c, do_callback_op): CALLBACKOP_register of a
        ``callback_register`` or CALLBACKOP_unregister of a ``callback_unregister`` at
        ``arg``."""
        if cmd == abi.CALLBACKOP_register:
            raw = self.hv.copy_from_guest(v, arg, abi.CALLBACK_REGISTER_T.size)
            if raw is None:
                return -abi.EFAULT
            type_, flags, cs, eip = abi.CALLBACK_REGISTER_T.unpack(raw)
            return self.register_guest_callback(v, type_, flags, cs, eip)
        if cmd == abi.CALLBACKOP_unregister:
            raw = self.hv.copy_from_guest(v, arg, abi.CALLBACK_UNREGISTER_T.size)
            if raw is None:
                return -abi.EFAULT
            type_, _ = abi.CALLBACK_UNREGISTER_T.unpack(raw)
            return self.unregister_guest_callback(v, type_)
        return -abi.ENOSYS

    def register_guest_callback(self, v: Vcpu, type_: int, flags: int, cs: int,
                                eip: int) -> int:
        """x86_32/traps.c, register_guest_callback (see the module docstring)."""
        arch = self.pv.arch(v)
        cs = fixup_guest_code_selector(cs)
        if type_ == abi.CALLBACKTYPE_event:
            arch.event_callback_cs, arch.event_callback_eip = cs, eip
        elif type_ == abi.CALLBACKTYPE_failsafe:
            arch.failsafe_callback_cs, arch.failsafe_callback_eip = cs, eip
            arch.failsafe_disables_events = bool(flags & abi.CALLBACKF_mask_events)
        elif type_ == abi.CALLBACKTYPE_nmi:
            if v.domain.domain_id != 0 or v.vcpu_id != 0:
                return -abi.EINVAL
            arch.nmi_addr = eip
        elif self.hv.profile.paging_levels == 3 and type_ in (CALLBACKTYPE_syscall32,
                                                               CALLBACKTYPE_sysenter):
            # pv/callback.c compat_register_guest_callback (4.19): the entry points of a
            # 32-bit application's SYSCALL (AMD: the model's processor is Intel, whose
            # SYSCALL is #UD) and SYSENTER (fast_system_call, not reached from the CPU yet).
            disables = bool(flags & abi.CALLBACKF_mask_events)
            arch.fast_callbacks[type_] = (cs, eip, disables)
        else:
            return -abi.ENOSYS
        return 0

    def unregister_guest_callback(self, v: Vcpu, type_: int) -> int:
        """x86_32/traps.c, unregister_guest_callback: the event and failsafe callbacks cannot
        be unregistered (-EINVAL); the NMI one can (unregister_guest_nmi_callback)."""
        if type_ in (abi.CALLBACKTYPE_event, abi.CALLBACKTYPE_failsafe):
            return -abi.EINVAL
        if type_ == abi.CALLBACKTYPE_nmi:
            self.pv.arch(v).nmi_addr = 0
            return 0
        return -abi.ENOSYS

    def do_fpu_taskswitch(self, v: Vcpu, set: int) -> int:
        """Hypercall 5: set (non-zero) or clear the virtual CR0.TS."""
        self.pv.arch(v).virtual_ts = bool(set)
        return 0

    def do_iret(self, v: Vcpu) -> int:
        """Hypercall 23: pop EAX, EIP, CS, EFLAGS [, ESP, SS] from the guest stack."""
        cpu = self.pv.arch(v).cpu
        if cpu is None:
            return -abi.ENOSYS  # a Python-driven guest has no frame to return through
        regs = cpu.user_regs()
        # access_ok(esp, 40): the worst-case frame must lie below the hypervisor.
        fits = self.hv.array_access_ok(regs.esp, 40, 1)
        raw = self.hv.copy_from_guest(v, regs.esp, 16) if fits else None
        if raw is None:
            v.domain.crash(f"iret: frame at {regs.esp:#x} is not readable")
            return 0
        eax, eip, cs, eflags = (int.from_bytes(raw[i : i + 4], "little") for i in range(0, 16, 4))
        cs &= 0xFFFF
        if cs & 3 == 0:
            v.domain.crash(f"iret to ring 0 ({cs:#x}:{eip:#x})")
            return 0
        esp, ss = regs.esp + 16, regs.ss
        if cs & 3 != 1:
            more = self.hv.copy_from_guest(v, regs.esp + 16, 8)
            if more is None:
                v.domain.crash(f"iret: outer-ring frame at {regs.esp:#x} is not readable")
                return 0
            esp = int.from_bytes(more[0:4], "little")
            ss = int.from_bytes(more[4:8], "little") & 0xFFFF
        regs.eip, regs.cs, regs.esp, regs.ss = eip, cs, esp, ss
        if architectural_iopl(self.pv, v):  # 4.19 pv/iret.c: the frame sets the vIOPL
            self.pv.arch(v).iopl = (eflags & abi.X86_EFLAGS_IOPL) >> 12
        regs.eflags = (eflags & ~(abi.X86_EFLAGS_IOPL | abi.X86_EFLAGS_VM)) | abi.X86_EFLAGS_IF
        self.pv.vcpu_info_write8(
            v, abi.VCPU_INFO_evtchn_upcall_mask, 0 if eflags & abi.X86_EFLAGS_IF else 1
        )
        return eax

    # ----------------------------------------------------------------------------------------
    # The substrate's entry points (TrapHandlers).
    # ----------------------------------------------------------------------------------------
    def software_interrupt(self, v: Vcpu, vector: int, regs: CpuUserRegs) -> bool:
        """``int n``: every Xen gate has DPL 0 except #BP, #OF (3) and 0x82 (1), so INT n
        is a #GP that Xen turns into a bounce of vector n when the guest registered it with
        a DPL the current ring may use (traps.c, do_general_protection, permit_softint).
        ``int $0x80`` may instead go through the direct gate. False when the processor
        delivered the interrupt by itself: Xen was not entered, so there is no event check
        and no scheduling point on the way back."""
        ring = regs.cs & 3
        if vector in (abi.TRAP_int3, abi.TRAP_overflow):
            self.bounce(v, vector, None, regs)
            return True
        arch = self.pv.arch(v)
        ti = arch.trap_ctxt[vector]
        # The direct gate's DPL (the entry's) decides which rings may use it.
        if vector == abi.SYSCALL_VECTOR and self.int80_gate(arch, ti) and ti.dpl >= ring:
            return self.int80_direct_trap(v, ti, regs)
        if vector != abi.HYPERCALL_VECTOR and ti.dpl >= ring:
            self.bounce(v, vector, None, regs)
            return True
        regs.eip = (regs.eip - 2) & 0xFFFFFFFF  # the #GP points at the int instruction
        self.bounce(v, abi.TRAP_gp_fault, (vector << 3) | 2, regs)
        return True

    @staticmethod
    def int80_gate(arch: ArchVcpu, ti: TrapInfo) -> bool:
        """Whether Xen built the direct gate for ``ti``, the trap table's vector 0x80
        (``int80_direct_gate``; Xen builds it, as arch_vcpu.int80_desc, when set_trap_table
        loads that vector). The answer is kept in ``arch.int80_gate`` with the entry it was
        computed for, and computed again whenever the table holds another entry there: a
        table entry is never changed in place (TrapInfo is frozen), and the answer depends on
        nothing else."""
        built = arch.int80_gate
        if built is None or built[0] is not ti:
            built = arch.int80_gate = (ti, int80_direct_gate(ti))
        return built[1]

    def int80_direct_trap(self, v: Vcpu, ti: TrapInfo, regs: CpuUserRegs) -> bool:
        """``int $0x80`` through the trap gate of init_int80_direct_trap: the processor's frame
        on the ring-1 stack, Xen not entered (False). A gate naming the null selector makes
        the processor raise #GP(0) at the ``int``, which do_general_protection bounces (True:
        Xen was entered)."""
        if selector_is_null(ti.cs):
            regs.eip = (regs.eip - 2) & 0xFFFFFFFF
            self.general_protection(v, 0, regs)
            return True
        words = [regs.eip, regs.cs, regs.eflags]
        self.create_bounce_frame(v, regs, words, ti.cs, ti.address, "int $0x80")
        return False

    def exception(
        self, v: Vcpu, vector: int, error_code: int, cr2: int, regs: CpuUserRegs
    ) -> None:
        if vector == abi.TRAP_page_fault:
            if self.pv.emulate.io_string_at(v, regs.eip):
                self.general_protection(v, 0, regs)
                return
            if cr2 >= abi.GUEST_SEGMENT_MAX_ADDR:
                # Above the end of the guest's flat segments Xen's guest takes a #GP(0) from
                # the segment limit before paging is consulted; the emulator checks no limits,
                # so the model turns the page fault into that #GP. The exceptions are the
                # CPU's own descriptor accesses: accessed bits, lazily mapped LDT pages.
                if self.pv.desc.gdt_ldt_fault(v, cr2, error_code, regs):
                    return
                self.general_protection(v, 0, regs)
                return
            if self.spurious_page_fault(v, cr2, error_code):
                return
            self.pv.arch(v).cr2 = cr2
            self.pv.vcpu_info_write32(v, abi.VCPU_INFO_arch_cr2, cr2)
            if regs.cs & 3 == 3:
                error_code |= abi.PFEC_user_mode
            else:
                error_code &= ~abi.PFEC_user_mode
        elif vector == abi.TRAP_gp_fault:
            self.general_protection(v, error_code, regs)
            return
        elif vector == abi.TRAP_no_device:
            self.pv.arch(v).virtual_ts = False  # traps.c, math_state_restore
        elif vector == abi.TRAP_double_fault:
            v.domain.crash(f"double fault at {regs.cs:#x}:{regs.eip:#x}")
            return
        ec = error_code if vector in abi.TRAP_HAS_ERROR_CODE else None
        self.bounce(v, vector, ec, regs)

    def general_protection(self, v: Vcpu, error_code: int, regs: CpuUserRegs) -> None:
        """traps.c, do_general_protection: a #GP(0) the emulation completes goes no further;
        anything else is bounced with its error code."""
        if error_code == 0 and self.pv.emulate.emulate_privileged_op(v, regs):
            return
        self.bounce(v, abi.TRAP_gp_fault, error_code, regs)

    def propagate_page_fault(self, v: Vcpu, addr: int, error_code: int,
                             regs: CpuUserRegs) -> None:
        """traps.c, propagate_page_fault: a page fault Xen met on the guest's behalf, with
        the address in ctrlreg[2] and vcpu_info, bounced with ``error_code`` as it is."""
        self.pv.arch(v).cr2 = addr
        self.pv.vcpu_info_write32(v, abi.VCPU_INFO_arch_cr2, addr)
        self.bounce(v, abi.TRAP_page_fault, error_code, regs)

    def invalid_opcode(self, v: Vcpu, regs: CpuUserRegs) -> None:
        """#UD, or the forced-emulation prefix before cpuid (emulate_forced_invalid_op)."""
        insn = self.hv.copy_from_guest(v, regs.eip, len(abi.XEN_CPUID))
        if insn == abi.XEN_CPUID:
            leaf = regs.eax
            regs.eax, regs.ebx, regs.ecx, regs.edx = _CPUID_LEAVES.get(leaf, (0, 0, 0, 0))
            regs.eip = (regs.eip + len(abi.XEN_CPUID)) & 0xFFFFFFFF
            return
        self.bounce(v, abi.TRAP_invalid_op, None, regs)

    def fast_system_call(self, v: Vcpu, insn: str, regs: CpuUserRegs) -> None:
        """SYSENTER or SYSCALL executed by the guest (EIP at the instruction), as Xen answers
        it. Not reached from the CPU yet: Unicorn runs both instructions as no-ops (EIP + 2),
        and a UC_HOOK_INSN hook on them corrupted the process in the hostile random-code test
        (tests/test_hostile.py: "super(): __class__ cell not found", then a segfault), so the
        substrate does not install one; a guest's SYSENTER or SYSCALL falls through (a
        departure of the CPU substrate). tests/test_guests.py checks this rule directly.

        SYSCALL outside 64-bit mode is #UD on the processor the model reports (GenuineIntel,
        ``_CPUID_LEAVES``). SYSENTER: on Xen 3.0.4 x86_32 the SYSENTER_CS MSR is never set
        for guests (only with supervisor_mode_kernel), so the processor raises #GP(0), which
        Xen reflects. On the compat-pae profile, Xen 4.19 takes it (x86_64/entry.S
        sysenter_entry, compat/entry.S compat_sysenter): a frame of EIP 0, CS 3, ESP 0, SS
        FLAT_COMPAT_USER_SS with IF set, bounced to the guest's sysenter callback (masking
        events if it asked), or #GP(0) without one (sysenter_gpf); the NT the guest left set
        goes with the frame, never into Xen's own IRET (the XSA-44 class, XSA-339's test)."""
        if insn == "syscall":
            self.bounce(v, abi.TRAP_invalid_op, None, regs)
            return
        if self.hv.profile.paging_levels != 3:
            self.bounce(v, abi.TRAP_gp_fault, 0, regs)
            return
        arch = self.pv.arch(v)
        regs.eflags |= abi.X86_EFLAGS_IF
        regs.eip, regs.cs, regs.esp, regs.ss = 0, 3, 0, _FLAT_COMPAT_USER_SS
        cs, eip, masks = arch.fast_callbacks.get(CALLBACKTYPE_sysenter, (0, 0, False))
        if eip == 0:
            self.bounce(v, abi.TRAP_gp_fault, 0, regs)
            return
        if self.create_bounce_frame(v, regs, self.return_words(v, regs), cs, eip, "sysenter"):
            self.bounces += 1
            if masks:
                self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 1)

    def spurious_page_fault(self, v: Vcpu, cr2: int, error_code: int) -> bool:
        """A fault the current page tables no longer cause (a stale translation): flush and
        let the guest retry, as Xen's spurious_page_fault does."""
        if not error_code & abi.PFEC_page_present and cr2 < self.hv.hole:
            write = bool(error_code & abi.PFEC_write_access)
            if self.hv.walk(self.hv.memory, v.guest_table, cr2, write) is not None:
                user = bool(error_code & abi.PFEC_user_mode)
                if not user or self._user_ok(v, cr2):
                    v.flush_tlb()
                    return True
        return False

    def _user_ok(self, v: Vcpu, va: int) -> bool:
        l2e, l1e = self.hv.leaf(self.hv.memory, v.guest_table, va)
        return bool(l2e & l1e & abi._PAGE_USER)

    # ----------------------------------------------------------------------------------------
    # create_bounce_frame.
    # ----------------------------------------------------------------------------------------
    def bounce(self, v: Vcpu, vector: int, error_code: int | None, regs: CpuUserRegs) -> None:
        """Deliver ``vector`` to the guest's handler, or crash the domain if it cannot."""
        arch = self.pv.arch(v)
        ti = arch.trap_ctxt[vector]
        d = v.domain
        if selector_is_null(ti.cs):
            d.crash(f"unhandled trap {vector} (error code {error_code}) at {_where(regs)}")
            return
        words = [] if error_code is None else [error_code]
        words += self.return_words(v, regs)
        if not self.create_bounce_frame(v, regs, words, ti.cs, ti.address, f"trap {vector}"):
            return
        self.bounces += 1
        if ti.masks_events:
            self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 1)

    def failsafe_callback(self, v: Vcpu, regs: CpuUserRegs, what: str) -> None:
        """entry.S failsafe_callback: Xen's reload of a data segment faulted on the way back
        to the guest (restore_all_guest FLT1-FLT4). create_bounce_frame with TBF_FAILSAFE puts
        DS, ES, FS, GS below the return frame and the four selectors are zeroed; events are
        masked only for a callback registered with CALLBACKF_mask_events (TBF_INTERRUPT); no
        callback address is domain_crash_synchronous."""
        arch = self.pv.arch(v)
        if arch.failsafe_callback_eip == 0:
            v.domain.crash(f"{what} faulted returning to {_where(regs)}; no failsafe callback")
            return
        words = [regs.ds & 0xFFFF, regs.es & 0xFFFF, regs.fs & 0xFFFF, regs.gs & 0xFFFF,
                 *self.return_words(v, regs)]
        if self.create_bounce_frame(v, regs, words, arch.failsafe_callback_cs,
                                    arch.failsafe_callback_eip, "failsafe callback"):
            regs.ds = regs.es = regs.fs = regs.gs = 0
            self.bounces += 1
            if arch.failsafe_disables_events:
                self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 1)

    def return_words(self, v: Vcpu, regs: CpuUserRegs) -> list[int]:
        """The return part of Xen's bounce frame: EIP, CS with the saved event mask in bits
        16-23, EFLAGS with IF = !saved mask (entry.S, create_bounce_frame)."""
        saved_mask = self.pv.vcpu_info_read8(v, abi.VCPU_INFO_evtchn_upcall_mask)
        eflags = regs.eflags & ~abi.X86_EFLAGS_IF
        if not saved_mask:
            eflags |= abi.X86_EFLAGS_IF
        if architectural_iopl(self.pv, v):  # 4.19 compat/entry.S: the frame shows the vIOPL
            eflags = eflags & ~abi.X86_EFLAGS_IOPL | self.pv.arch(v).iopl << 12
        return [regs.eip, regs.cs | (saved_mask << 16), eflags]

    def create_bounce_frame(self, v: Vcpu, regs: CpuUserRegs, words: list[int], cs: int,
                            eip: int, what: str) -> bool:
        """x86_32/entry.S create_bounce_frame: push ``words`` (and, from ring 2 or 3 (bit 1
        of CS, as Xen tests it), ESP and SS, switching to the kernel stack) and enter
        ``cs:eip``; False if the domain was crashed because the frame has nowhere to go.
        Shared by exceptions and event upcalls.

        Xen writes the frame through %gs loaded with the stack selector at CPL 0 (FLT6 for
        the kernel stack, FLT13 for the current one); a load that faults, or a write through
        a selector that is null, names a code segment or a read-only one, is
        domain_crash_synchronous (the fixups of FLT6-FLT25). Departure: the model writes the
        frame at the linear address ESP (the stack segment's base and limit are not applied;
        Xen's flat selectors have base 0)."""
        d = v.domain
        arch = self.pv.arch(v)
        if regs.cs & 2:
            if selector_is_null(arch.kernel_ss):
                d.crash(f"{what} from ring {regs.cs & 3} at {_where(regs)} with no kernel stack")
                return False
            words = [*words, regs.esp, regs.ss]
            esp, ss = arch.kernel_sp, arch.kernel_ss
        else:
            esp, ss = regs.esp, regs.ss
        if not self.stack_segment_writable(v, ss):
            d.crash(f"{what} at {_where(regs)}: stack segment {ss & 0xFFFF:#x} cannot hold the "
                    f"bounce frame")
            return False
        frame = _frame_bytes(words)
        new_esp = (esp - len(frame)) & 0xFFFFFFFF
        if esp < len(frame) or not self.hv.copy_to_guest(v, new_esp, frame):
            d.crash(f"{what} at {_where(regs)}: cannot write the bounce frame at {new_esp:#x}")
            return False
        regs.esp, regs.ss = new_esp, ss
        regs.cs, regs.eip = cs, eip
        regs.eflags &= ~_BOUNCE_CLEAR
        return True

    def stack_segment_writable(self, v: Vcpu, ss: int) -> bool:
        """create_bounce_frame's ``mov ss, %gs`` at CPL 0 and its writes through %gs: a
        present, writable data segment whose DPL is not below the selector's RPL (the CPU's
        data-segment load, refmodel/desc.py load_data_segment). Xen's flat stack selectors
        always are."""
        ss &= 0xFFFF
        if ss in (abi.FLAT_RING1_DS, abi.FLAT_RING3_DS):
            return True
        hi = self.pv.desc.load_data_segment(v, ss)
        if not hi:  # the load faults (None), or the selector is null
            return False
        return not hi & abi._SEGMENT_CODE and bool(hi & abi._SEGMENT_WR)

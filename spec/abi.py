"""The Xen 3.0 x86_32 (non-PAE) guest ABI: every number the interface fixes, defined once.

The reference is Xen 3.0.4 (tag ``3.0.4-branched``). Each group names the public header it
comes from, relative to ``xen/include/public/`` in the Xen tree unless a hypervisor-internal path
is given. The refmodel, the spec, the proofs and the generated C header all read these values;
nothing else in the project writes an ABI number down.
"""

from __future__ import annotations

import struct
from typing import Final

# --------------------------------------------------------------------------------------------
# Hypercall numbers: xen.h, "__HYPERVISOR_*" (3.0.4).
# --------------------------------------------------------------------------------------------
__HYPERVISOR_set_trap_table: Final = 0
__HYPERVISOR_mmu_update: Final = 1
__HYPERVISOR_set_gdt: Final = 2
__HYPERVISOR_stack_switch: Final = 3
__HYPERVISOR_set_callbacks: Final = 4
__HYPERVISOR_fpu_taskswitch: Final = 5
__HYPERVISOR_sched_op_compat: Final = 6
__HYPERVISOR_platform_op: Final = 7  # dom0_op before interface version 0x00030204
__HYPERVISOR_set_debugreg: Final = 8
__HYPERVISOR_get_debugreg: Final = 9
__HYPERVISOR_update_descriptor: Final = 10
__HYPERVISOR_memory_op: Final = 12
__HYPERVISOR_multicall: Final = 13
__HYPERVISOR_update_va_mapping: Final = 14
__HYPERVISOR_set_timer_op: Final = 15
__HYPERVISOR_event_channel_op_compat: Final = 16
__HYPERVISOR_xen_version: Final = 17
__HYPERVISOR_console_io: Final = 18
__HYPERVISOR_physdev_op_compat: Final = 19
__HYPERVISOR_grant_table_op: Final = 20
__HYPERVISOR_vm_assist: Final = 21
__HYPERVISOR_update_va_mapping_otherdomain: Final = 22
__HYPERVISOR_iret: Final = 23
__HYPERVISOR_vcpu_op: Final = 24
__HYPERVISOR_mmuext_op: Final = 26
__HYPERVISOR_nmi_op: Final = 28
__HYPERVISOR_sched_op: Final = 29
__HYPERVISOR_callback_op: Final = 30
__HYPERVISOR_event_channel_op: Final = 32
__HYPERVISOR_physdev_op: Final = 33

# xen/include/asm-x86/config.h (3.0.4): the size of the hypercall table.
NR_hypercalls: Final = 64

# The guest traps into Xen with "int $0x82" (arch-x86_32.h, TRAP_INSTR).
HYPERCALL_VECTOR: Final = 0x82

# --------------------------------------------------------------------------------------------
# Error numbers returned negated in EAX: xen/include/xen/errno.h (3.0.4).
# --------------------------------------------------------------------------------------------
EPERM: Final = 1
ENOENT: Final = 2
ESRCH: Final = 3
EINTR: Final = 4
EIO: Final = 5
E2BIG: Final = 7
EAGAIN: Final = 11
ENOMEM: Final = 12
EACCES: Final = 13
EFAULT: Final = 14
EBUSY: Final = 16
EEXIST: Final = 17
ENODEV: Final = 19
EINVAL: Final = 22
ENOSPC: Final = 28
ERANGE: Final = 34
ENOSYS: Final = 38

# --------------------------------------------------------------------------------------------
# Domain identifiers: xen.h, "domid_t" and the DOMID_* specials.
# --------------------------------------------------------------------------------------------
DOMID_FIRST_RESERVED: Final = 0x7FF0
DOMID_SELF: Final = 0x7FF0
DOMID_IO: Final = 0x7FF1
DOMID_XEN: Final = 0x7FF2

# --------------------------------------------------------------------------------------------
# mmu_update: xen.h, "MMU_*" request commands. The command is ptr & (sizeof(pte) - 1).
# --------------------------------------------------------------------------------------------
MMU_NORMAL_PT_UPDATE: Final = 0
MMU_MACHPHYS_UPDATE: Final = 1
MMU_UPDATE_CMD_MASK: Final = 3  # sizeof(l1_pgentry_t) - 1 on non-PAE x86_32
# Bit 31 of `count` marks a preempted, restarted batch: xen/arch/x86/mm.c (3.0.2),
# xen/include/asm-x86/hypercall.h (3.0.5 on), MMU_UPDATE_PREEMPTED = ~(~0U >> 1).
MMU_UPDATE_PREEMPTED: Final = 0x80000000

# --------------------------------------------------------------------------------------------
# mmuext_op: xen.h, "MMUEXT_*" commands.
# --------------------------------------------------------------------------------------------
MMUEXT_PIN_L1_TABLE: Final = 0
MMUEXT_PIN_L2_TABLE: Final = 1
MMUEXT_PIN_L3_TABLE: Final = 2
MMUEXT_PIN_L4_TABLE: Final = 3
MMUEXT_UNPIN_TABLE: Final = 4
MMUEXT_NEW_BASEPTR: Final = 5
MMUEXT_TLB_FLUSH_LOCAL: Final = 6
MMUEXT_INVLPG_LOCAL: Final = 7
MMUEXT_TLB_FLUSH_MULTI: Final = 8
MMUEXT_INVLPG_MULTI: Final = 9
MMUEXT_TLB_FLUSH_ALL: Final = 10
MMUEXT_INVLPG_ALL: Final = 11
MMUEXT_FLUSH_CACHE: Final = 12
MMUEXT_SET_LDT: Final = 13
MMUEXT_NEW_USER_BASEPTR: Final = 15

# --------------------------------------------------------------------------------------------
# update_va_mapping flags: xen.h, "UVMF_*".
# --------------------------------------------------------------------------------------------
UVMF_NONE: Final = 0
UVMF_TLB_FLUSH: Final = 1
UVMF_INVLPG: Final = 2
UVMF_FLUSHTYPE_MASK: Final = 3
UVMF_MULTI: Final = 0
UVMF_LOCAL: Final = 0
UVMF_ALL: Final = 4

# --------------------------------------------------------------------------------------------
# Page-table entries: xen/include/asm-x86/page.h and x86_32/page-2level.h (3.0.4).
# --------------------------------------------------------------------------------------------
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
PAGE_MASK: Final = ~(PAGE_SIZE - 1) & 0xFFFFFFFF
L1_PAGETABLE_SHIFT: Final = 12
L2_PAGETABLE_SHIFT: Final = 22
L1_PAGETABLE_ENTRIES: Final = 1024
L2_PAGETABLE_ENTRIES: Final = 1024
PTE_SIZE: Final = 4  # sizeof(l1_pgentry_t), non-PAE

_PAGE_PRESENT: Final = 0x001
_PAGE_RW: Final = 0x002
_PAGE_USER: Final = 0x004
_PAGE_PWT: Final = 0x008
_PAGE_PCD: Final = 0x010
_PAGE_ACCESSED: Final = 0x020
_PAGE_DIRTY: Final = 0x040
_PAGE_PAT: Final = 0x080
_PAGE_PSE: Final = 0x080
_PAGE_GLOBAL: Final = 0x100
_PAGE_AVAIL: Final = 0xE00

# xen/include/asm-x86/x86_32/page.h: bits a guest may not set in a present entry. The masks are
# written over the 12 flag bits (BASE_DISALLOW_MASK = 0xFFFFF180 & ~_PAGE_NX, the NX bit
# being absent on non-PAE), so in effect PAT and GLOBAL are refused in an L1 entry and PSE
# and GLOBAL in an L2 entry. The debug-build-only _PAGE_GNTTAB refusal is not modelled:
# release builds allow the AVAIL bits.
BASE_DISALLOW_MASK: Final = 0xFFFFF180 & 0xFFF
L1_DISALLOW_MASK: Final = BASE_DISALLOW_MASK
L2_DISALLOW_MASK: Final = BASE_DISALLOW_MASK

# --------------------------------------------------------------------------------------------
# The address space: arch-x86_32.h and xen/include/asm-x86/config.h (3.0.4, non-PAE).
# --------------------------------------------------------------------------------------------
HYPERVISOR_VIRT_START: Final = 0xFC000000  # the top 64 MB belong to Xen
MACH2PHYS_VIRT_START: Final = 0xFC000000  # the read-only machine-to-physical table
MACH2PHYS_VIRT_END: Final = 0xFC400000
MACH2PHYS_NR_ENTRIES: Final = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) // 4
GUEST_SEGMENT_MAX_ADDR: Final = MACH2PHYS_VIRT_END  # segment limits end below this
# Page-directory slots 1008..1023 map the hypervisor; a guest owns slots 0..1007.
L2_PAGETABLE_FIRST_XEN_SLOT: Final = HYPERVISOR_VIRT_START >> L2_PAGETABLE_SHIFT
L2_PAGETABLE_XEN_SLOTS: Final = L2_PAGETABLE_ENTRIES - L2_PAGETABLE_FIRST_XEN_SLOT
# Xen's own layout of its area (config.h, 3.0.4): the linear page table and the per-domain
# area are the slots Xen writes into each guest page directory when it validates it.
LINEAR_PT_VIRT_START: Final = 0xFE000000
PERDOMAIN_VIRT_START: Final = 0xFE800000
PERDOMAIN_MBYTES: Final = 8
LINEAR_PT_SLOT: Final = LINEAR_PT_VIRT_START >> L2_PAGETABLE_SHIFT
PERDOMAIN_SLOT: Final = PERDOMAIN_VIRT_START >> L2_PAGETABLE_SHIFT
PERDOMAIN_SLOTS: Final = PERDOMAIN_MBYTES >> 2

# The value of an invalid M2P entry: xen/include/asm-x86/mm.h, INVALID_M2P_ENTRY.
INVALID_M2P_ENTRY: Final = 0xFFFFFFFF

# --------------------------------------------------------------------------------------------
# Flat selectors of the guest: arch-x86_32.h (3.0.4). Reserved GDT entries start at 7168.
# --------------------------------------------------------------------------------------------
FLAT_RING1_CS: Final = 0xE019
FLAT_RING1_DS: Final = 0xE021
FLAT_RING1_SS: Final = 0xE021
FLAT_RING3_CS: Final = 0xE02B
FLAT_RING3_DS: Final = 0xE033
FLAT_RING3_SS: Final = 0xE033
FLAT_KERNEL_CS: Final = FLAT_RING1_CS
FLAT_KERNEL_DS: Final = FLAT_RING1_DS
FLAT_KERNEL_SS: Final = FLAT_RING1_SS
FLAT_USER_CS: Final = FLAT_RING3_CS
FLAT_USER_DS: Final = FLAT_RING3_DS
FLAT_USER_SS: Final = FLAT_RING3_SS
FIRST_RESERVED_GDT_PAGE: Final = 14
FIRST_RESERVED_GDT_BYTE: Final = FIRST_RESERVED_GDT_PAGE * 4096
FIRST_RESERVED_GDT_ENTRY: Final = FIRST_RESERVED_GDT_BYTE // 8

# xen/include/asm-x86/desc.h, LDT_ENTRY_SIZE; the limit of 8192 LDT entries is written in
# xen/arch/x86/mm.c, do_mmuext_op case MMUEXT_SET_LDT.
LDT_ENTRY_SIZE: Final = 8
MAX_LDT_ENTRIES: Final = 8192

# --------------------------------------------------------------------------------------------
# Structure layouts the MMU hypercalls read from guest memory (xen.h, 3.0.4, x86_32).
# --------------------------------------------------------------------------------------------
# struct mmu_update { uint64_t ptr; uint64_t val; };  16 bytes even on non-PAE.
MMU_UPDATE_T: Final = struct.Struct("<QQ")
# struct mmuext_op { unsigned int cmd; union { xen_pfn_t mfn; unsigned long linear_addr; } arg1;
#                    union { unsigned int nr_ents; void *vcpumask; } arg2; };  12 bytes.
MMUEXT_OP_T: Final = struct.Struct("<III")

# ============================================================================================
# The CPU interface: traps, bounces, segments and start of day.
# ============================================================================================

# Xen's own ring-0 selectors (xen/include/asm-x86/config.h, 3.0.4: __HYPERVISOR_CS and
# __HYPERVISOR_DS, GDT entries 7169 and 7170; named without the underscores here so that they
# are not taken for hypercall numbers); the guest's flat selectors are entries 7171..7174.
HYPERVISOR_CS: Final = 0xE008
HYPERVISOR_DS: Final = 0xE010
# Xen's GDT spans 16 pages, the last two reserved (asm-x86/desc.h, 3.0.4:
# LAST_RESERVED_GDT_PAGE = FIRST_RESERVED_GDT_PAGE + 1); guests get entries 0..7167.
LAST_RESERVED_GDT_PAGE: Final = FIRST_RESERVED_GDT_PAGE + 1
GDT_PAGES: Final = LAST_RESERVED_GDT_PAGE + 1
# The limit of the guest's flat descriptors, in pages: base 0, covering 0..GUEST_SEGMENT_MAX_ADDR
# (xen/arch/x86/boot/x86_32.S, gdt_table: "0x00cfba000000c3ff" and friends, 0xFC3FF pages).
FLAT_SEGMENT_LIMIT_PAGES: Final = (GUEST_SEGMENT_MAX_ADDR >> PAGE_SHIFT) - 1
# The per-domain area (asm-x86/config.h, 3.0.4): vCPU n's GDT at PERDOMAIN_VIRT_START + (n << 17),
# its LDT 64 KB above it (GDT_LDT_VCPU_VA_SHIFT, GDT_LDT_VCPU_SHIFT = 5 pages-per-vCPU shift).
GDT_LDT_VCPU_VA_SHIFT: Final = 17
GDT_LDT_VCPU_SHIFT: Final = 5
LDT_VIRT_OFFSET: Final = 1 << 16
# Xen refuses set_gdt with more entries than the guest part of the GDT (mm.c, do_set_gdt).
MAX_GUEST_GDT_ENTRIES: Final = FIRST_RESERVED_GDT_ENTRY

# Descriptor bits (asm-x86/desc.h, 3.0.4: _SEGMENT_*), in the high word of a descriptor.
_SEGMENT_TYPE: Final = 0xF00
_SEGMENT_WR: Final = 0x200
_SEGMENT_EC: Final = 0x400  # expand-down data / conforming code
_SEGMENT_CODE: Final = 0x800
_SEGMENT_S: Final = 0x1000
_SEGMENT_DPL: Final = 0x6000
_SEGMENT_P: Final = 0x8000
_SEGMENT_DB: Final = 0x400000
_SEGMENT_G: Final = 0x800000
_SEGMENT_ACCESSED: Final = 0x100  # the accessed bit of the type field (Intel SDM 3.4.5.1)
DESC_TYPE_CALL_GATE_32: Final = 0xC  # the one system-descriptor type Xen accepts

# EFLAGS bits: xen/include/asm-x86/processor.h (X86_EFLAGS_*).
X86_EFLAGS_CF: Final = 0x00000001
X86_EFLAGS_TF: Final = 0x00000100
X86_EFLAGS_IF: Final = 0x00000200
X86_EFLAGS_DF: Final = 0x00000400
X86_EFLAGS_IOPL: Final = 0x00003000
X86_EFLAGS_NT: Final = 0x00004000
X86_EFLAGS_RF: Final = 0x00010000
X86_EFLAGS_VM: Final = 0x00020000
X86_EFLAGS_AC: Final = 0x00040000
X86_EFLAGS_ID: Final = 0x00200000
# Bit 1 of EFLAGS always reads as one (Intel SDM 3.3.4).
X86_EFLAGS_MBS: Final = 0x00000002

# Control-register bits: xen/include/asm-x86/processor.h (X86_CR0_*, X86_CR4_*).
X86_CR0_PE: Final = 0x00000001
X86_CR0_MP: Final = 0x00000002
X86_CR0_TS: Final = 0x00000008
X86_CR0_ET: Final = 0x00000010
X86_CR0_NE: Final = 0x00000020
X86_CR0_WP: Final = 0x00010000
X86_CR0_PG: Final = 0x80000000
X86_CR4_PSE: Final = 0x00000010
X86_CR4_PGE: Final = 0x00000080

# Exception vectors: xen/include/asm-x86/processor.h (TRAP_*).
TRAP_divide_error: Final = 0
TRAP_debug: Final = 1
TRAP_nmi: Final = 2
TRAP_int3: Final = 3
TRAP_overflow: Final = 4
TRAP_bounds: Final = 5
TRAP_invalid_op: Final = 6
TRAP_no_device: Final = 7
TRAP_double_fault: Final = 8
TRAP_copro_seg: Final = 9
TRAP_invalid_tss: Final = 10
TRAP_no_segment: Final = 11
TRAP_stack_error: Final = 12
TRAP_gp_fault: Final = 13
TRAP_page_fault: Final = 14
TRAP_spurious_int: Final = 15
TRAP_copro_error: Final = 16
TRAP_alignment_check: Final = 17
TRAP_machine_check: Final = 18
TRAP_simd_error: Final = 19
# Vectors Xen bounces with an error code (traps.c, 3.0.4: the TRAP_* handlers that use
# do_trap(..., 1)): invalid TSS, segment not present, stack, #GP, #PF, alignment check.
TRAP_HAS_ERROR_CODE: Final = frozenset({10, 11, 12, 13, 14, 17})
# The vector of the Linux system call convention, used by guests as a fast trap.
SYSCALL_VECTOR: Final = 0x80

# Page-fault error code bits (asm-x86/processor.h, PFEC_*).
PFEC_page_present: Final = 1
PFEC_write_access: Final = 2
PFEC_user_mode: Final = 4

# struct trap_info (arch-x86_32.h): u8 vector, u8 flags, u16 cs, unsigned long address.
TRAP_INFO_T: Final = struct.Struct("<BBHI")
TI_DPL_MASK: Final = 3  # TI_GET_DPL: flags & 3
TI_IF_FLAG: Final = 4  # TI_GET_IF: flags & 4, "clear event enable" (interrupt gate)
NR_VECTORS: Final = 256

# struct multicall_entry (xen.h, x86_32): unsigned long op, result, args[6]. do_multicall
# passes args[0..4] to the call (asm-x86/multicall.h, x86_32 do_multicall_call: five pushes).
MULTICALL_ENTRY_T: Final = struct.Struct("<8I")
MULTICALL_NR_ARGS: Final = 5

# callback_op (public/callback.h, 3.0.4): struct callback_register { u16 type; u16 flags;
# xen_callback_t address; } with xen_callback_t { unsigned long cs, eip; } on x86_32
# (arch-x86_32.h); struct callback_unregister { u16 type; u16 _unused; }.
CALLBACKOP_register: Final = 0
CALLBACKOP_unregister: Final = 1
CALLBACKTYPE_event: Final = 0
CALLBACKTYPE_failsafe: Final = 1
CALLBACKTYPE_syscall: Final = 2  # x86_64 only
CALLBACKTYPE_sysenter: Final = 3  # only with CONFIG_X86_SUPERVISOR_MODE_KERNEL
CALLBACKTYPE_nmi: Final = 4
CALLBACKF_mask_events: Final = 1
CALLBACK_REGISTER_T: Final = struct.Struct("<HHII")
CALLBACK_UNREGISTER_T: Final = struct.Struct("<HH")

# vcpu_op (public/vcpu.h, 3.0.4) and struct vcpu_runstate_info: int state; uint64_t
# state_entry_time; uint64_t time[4] (4-byte alignment of uint64_t on x86_32: 44 bytes).
VCPUOP_initialise: Final = 0
VCPUOP_up: Final = 1
VCPUOP_down: Final = 2
VCPUOP_is_up: Final = 3
VCPUOP_get_runstate_info: Final = 4
VCPUOP_register_runstate_memory_area: Final = 5
RUNSTATE_running: Final = 0
RUNSTATE_runnable: Final = 1
RUNSTATE_blocked: Final = 2
RUNSTATE_offline: Final = 3
VCPU_RUNSTATE_INFO_T: Final = struct.Struct("<iQ4Q")
# struct vcpu_guest_context (arch-x86_32.h, 3.0.4): fpu_ctxt[512], flags, cpu_user_regs (60),
# trap_ctxt[256] (8 each), ldt_base, ldt_ents, gdt_frames[16], gdt_ents, kernel_ss,
# kernel_sp, ctrlreg[8], debugreg[8], the two callbacks (cs, eip), vm_assist.
SIZEOF_VCPU_GUEST_CONTEXT: Final = 512 + 4 + 60 + 256 * 8 + 2 * 4 + 17 * 4 + 2 * 4 + 8 * 4 \
    + 8 * 4 + 4 * 4 + 4

# The forced-emulation prefix: arch-x86_32.h, XEN_EMULATE_PREFIX ".byte 0x0f,0x0b,0x78,0x65,0x6e"
# (ud2a; .ascii "xen") before cpuid makes Xen emulate it.
XEN_EMULATE_PREFIX: Final = b"\x0f\x0b\x78\x65\x6e"
XEN_CPUID: Final = XEN_EMULATE_PREFIX + b"\x0f\xa2"

# --------------------------------------------------------------------------------------------
# The hypercall page (xen/arch/x86/x86_32/traps.c, hypercall_page_initialise, 3.0.4): 128 stubs
# of 32 bytes; stub i is "mov $i,%eax; int $0x82; ret"; the iret stub is "push %eax;
# mov $__HYPERVISOR_iret,%eax; int $0x82" with no ret.
# --------------------------------------------------------------------------------------------
HYPERCALL_STUB_SIZE: Final = 32
HYPERCALL_PAGE_STUBS: Final = PAGE_SIZE // HYPERCALL_STUB_SIZE

# --------------------------------------------------------------------------------------------
# shared_info and vcpu_info: xen.h and arch-x86_32.h (3.0.4, x86_32).
# --------------------------------------------------------------------------------------------
MAX_VIRT_CPUS: Final = 32
SIZEOF_VCPU_INFO: Final = 64  # struct vcpu_info on x86_32
VCPU_INFO_evtchn_upcall_pending: Final = 0  # u8
VCPU_INFO_evtchn_upcall_mask: Final = 1  # u8
VCPU_INFO_evtchn_pending_sel: Final = 4  # unsigned long
VCPU_INFO_arch_cr2: Final = 8  # struct arch_vcpu_info { unsigned long cr2; pad[5]; }
VCPU_INFO_time: Final = 32  # struct vcpu_time_info, 32 bytes
SHARED_INFO_vcpu_info: Final = 0  # vcpu_info[MAX_VIRT_CPUS] opens shared_info

# --------------------------------------------------------------------------------------------
# start_info (xen.h, 3.0.4, x86_32): offsets of struct start_info, 1104 bytes.
# --------------------------------------------------------------------------------------------
XEN_START_INFO_MAGIC: Final = b"xen-3.0-x86_32"  # "xen-3.0-x86_32p" is the PAE form
START_INFO_magic: Final = 0  # char magic[32]
START_INFO_nr_pages: Final = 32
START_INFO_shared_info: Final = 36  # machine address of shared_info
START_INFO_flags: Final = 40
START_INFO_store_mfn: Final = 44
START_INFO_store_evtchn: Final = 48
START_INFO_console_mfn: Final = 52
START_INFO_console_evtchn: Final = 56
START_INFO_pt_base: Final = 60  # virtual address of the page directory
START_INFO_nr_pt_frames: Final = 64
START_INFO_mfn_list: Final = 68  # virtual address of the p2m array
START_INFO_mod_start: Final = 72
START_INFO_mod_len: Final = 76
START_INFO_cmd_line: Final = 80  # char cmd_line[MAX_GUEST_CMDLINE]
MAX_GUEST_CMDLINE: Final = 1024
SIZEOF_START_INFO: Final = 1104
SIF_PRIVILEGED: Final = 1
SIF_INITDOMAIN: Final = 2

# --------------------------------------------------------------------------------------------
# ELF notes of a guest kernel: elfnote.h (3.0.4), name "Xen".
# --------------------------------------------------------------------------------------------
XEN_ELFNOTE_INFO: Final = 0
XEN_ELFNOTE_ENTRY: Final = 1
XEN_ELFNOTE_HYPERCALL_PAGE: Final = 2
XEN_ELFNOTE_VIRT_BASE: Final = 3
XEN_ELFNOTE_PADDR_OFFSET: Final = 4
XEN_ELFNOTE_XEN_VERSION: Final = 5
XEN_ELFNOTE_GUEST_OS: Final = 6
XEN_ELFNOTE_GUEST_VERSION: Final = 7
XEN_ELFNOTE_LOADER: Final = 8
XEN_ELFNOTE_PAE_MODE: Final = 9
XEN_ELFNOTE_FEATURES: Final = 10
XEN_ELFNOTE_BSD_SYMTAB: Final = 11

# --------------------------------------------------------------------------------------------
# console_io: xen.h (CONSOLEIO_*).
# --------------------------------------------------------------------------------------------
CONSOLEIO_write: Final = 0
CONSOLEIO_read: Final = 1

# --------------------------------------------------------------------------------------------
# sched_op: sched.h (SCHEDOP_*, SHUTDOWN_*), 3.0.4.
# --------------------------------------------------------------------------------------------
SCHEDOP_yield: Final = 0
SCHEDOP_block: Final = 1
SCHEDOP_shutdown: Final = 2
SCHEDOP_poll: Final = 3
SCHEDOP_remote_shutdown: Final = 4
SHUTDOWN_poweroff: Final = 0
SHUTDOWN_reboot: Final = 1
SHUTDOWN_suspend: Final = 2
SHUTDOWN_crash: Final = 3

# --------------------------------------------------------------------------------------------
# xen_version: version.h (XENVER_*), 3.0.4. The version word is major << 16 | minor.
# --------------------------------------------------------------------------------------------
XENVER_version: Final = 0
XENVER_extraversion: Final = 1
XENVER_compile_info: Final = 2
XENVER_capabilities: Final = 3
XENVER_changeset: Final = 4
XENVER_platform_parameters: Final = 5
XENVER_get_features: Final = 6
XENVER_pagesize: Final = 7
XENVER_guest_handle: Final = 8
XEN_VERSION_MAJOR: Final = 3
XEN_VERSION_MINOR: Final = 0
XEN_EXTRAVERSION: Final = b".4"
XEN_EXTRAVERSION_LEN: Final = 16  # xen_extraversion_t
XEN_CAPABILITIES_INFO_LEN: Final = 1024  # xen_capabilities_info_t
XEN_CHANGESET_INFO_LEN: Final = 64  # xen_changeset_info_t
XEN_COMPILE_INFO_LEN: Final = 144  # compiler[64], compile_by[16], compile_domain[32], date[32]
XEN_GUEST_HANDLE_LEN: Final = 16  # xen_domain_handle_t
XENFEAT_NR_SUBMAPS: Final = 1  # features.h
XENFEAT_writable_page_tables: Final = 0
XENFEAT_writable_descriptor_tables: Final = 1
XENFEAT_auto_translated_physmap: Final = 2
XENFEAT_supervisor_mode_kernel: Final = 3
XENFEAT_pae_pgdir_above_4gb: Final = 4

# --------------------------------------------------------------------------------------------
# vm_assist: xen.h (VMASST_*), 3.0.4.
# --------------------------------------------------------------------------------------------
VMASST_CMD_enable: Final = 0
VMASST_CMD_disable: Final = 1
VMASST_TYPE_4gb_segments: Final = 0
VMASST_TYPE_4gb_segments_notify: Final = 1
VMASST_TYPE_writable_pagetables: Final = 2
VMASST_TYPE_pae_extended_cr3: Final = 3
MAX_VMASST_TYPE: Final = 3

# ============================================================================================
# Events and time.
# ============================================================================================

# --------------------------------------------------------------------------------------------
# event_channel_op: event_channel.h (3.0.4). __HYPERVISOR_event_channel_op takes (cmd, arg);
# the compat call (16) takes one struct evtchn_op { uint32_t cmd; union {...} u; }.
# --------------------------------------------------------------------------------------------
EVTCHNOP_bind_interdomain: Final = 0
EVTCHNOP_bind_virq: Final = 1
EVTCHNOP_bind_pirq: Final = 2
EVTCHNOP_close: Final = 3
EVTCHNOP_send: Final = 4
EVTCHNOP_status: Final = 5
EVTCHNOP_alloc_unbound: Final = 6
EVTCHNOP_bind_ipi: Final = 7
EVTCHNOP_bind_vcpu: Final = 8
EVTCHNOP_unmask: Final = 9
# evtchn_status.status (EVTCHNSTAT_*).
EVTCHNSTAT_closed: Final = 0
EVTCHNSTAT_unbound: Final = 1
EVTCHNSTAT_interdomain: Final = 2
EVTCHNSTAT_pirq: Final = 3
EVTCHNSTAT_virq: Final = 4
EVTCHNSTAT_ipi: Final = 5
# The argument structures (evtchn_port_t and the u32 fields are 4 bytes, domid_t 2).
# evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port (OUT); }
EVTCHN_ALLOC_UNBOUND_T: Final = struct.Struct("<HHI")
# evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t remote_port, local_port (OUT); }
EVTCHN_BIND_INTERDOMAIN_T: Final = struct.Struct("<H2xII")
# evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port (OUT); }
EVTCHN_BIND_VIRQ_T: Final = struct.Struct("<III")
# evtchn_bind_pirq { uint32_t pirq, flags; evtchn_port_t port (OUT); }
EVTCHN_BIND_PIRQ_T: Final = struct.Struct("<III")
# evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port (OUT); }
EVTCHN_BIND_IPI_T: Final = struct.Struct("<II")
# evtchn_close, evtchn_send, evtchn_unmask { evtchn_port_t port; }
EVTCHN_PORT_T: Final = struct.Struct("<I")
# evtchn_status { domid_t dom; evtchn_port_t port; uint32_t status, vcpu (OUT);
#                 union { domid_t dom; struct { domid_t dom; evtchn_port_t port; }; u32 pirq,
#                 virq; } u (OUT); }
EVTCHN_STATUS_T: Final = struct.Struct("<H2xIIIII")
EVTCHN_STATUS_status: Final = 8
EVTCHN_STATUS_vcpu: Final = 12
EVTCHN_STATUS_u: Final = 16
# evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; }
EVTCHN_BIND_VCPU_T: Final = struct.Struct("<II")
# struct evtchn_op: cmd, then the union (its largest member is evtchn_status, 24 bytes).
EVTCHN_OP_T: Final = struct.Struct("<I24s")
EVTCHN_OP_u: Final = 4

# xen/include/xen/sched.h (3.0.4): struct evtchn's states (ECS_*), hypervisor-internal.
ECS_FREE: Final = 0
ECS_RESERVED: Final = 1
ECS_UNBOUND: Final = 2
ECS_INTERDOMAIN: Final = 3
ECS_PIRQ: Final = 4
ECS_VIRQ: Final = 5
ECS_IPI: Final = 6
# xen.h: NR_EVENT_CHANNELS = sizeof(unsigned long)^2 * 64 ports (1024 on x86_32); the
# pending and mask bitmaps have one bit per port, the selector one bit per word of them.
BITS_PER_LONG: Final = 32
NR_EVENT_CHANNELS: Final = BITS_PER_LONG * 4 * 8
# xen/include/xen/sched.h (3.0.4): ports are allocated in buckets of 128 (EVTCHNS_PER_BUCKET);
# a port is valid once its bucket exists (event_channel.c, port_is_valid, get_free_port).
EVTCHNS_PER_BUCKET: Final = 128
# xen/include/asm-x86/config.h (3.0.4): NR_PIRQS = NR_IRQS = 256 (pirq_to_evtchn[NR_PIRQS]).
NR_PIRQS: Final = 256
# event_channel.h, evtchn_bind_pirq.flags.
BIND_PIRQ__WILL_SHARE: Final = 1

# VIRQs: xen.h (3.0.4). VIRQ_TIMER, VIRQ_DEBUG and VIRQ_XENOPROF are per-vCPU, the others
# global (event_channel.c, virq_is_global; x86's arch_virq_is_global is 1).
VIRQ_TIMER: Final = 0
VIRQ_DEBUG: Final = 1
VIRQ_CONSOLE: Final = 2
VIRQ_DOM_EXC: Final = 3
VIRQ_TBUF: Final = 4
VIRQ_DEBUGGER: Final = 6
VIRQ_XENOPROF: Final = 7
VIRQ_ARCH_0: Final = 16
VIRQ_ARCH_7: Final = 23
NR_VIRQS: Final = 24

# shared_info after vcpu_info[MAX_VIRT_CPUS] (xen.h, struct shared_info, x86_32):
# unsigned long evtchn_pending[32], evtchn_mask[32]; uint32_t wc_version, wc_sec, wc_nsec;
# struct arch_shared_info arch.
SHARED_INFO_evtchn_pending: Final = MAX_VIRT_CPUS * SIZEOF_VCPU_INFO
SHARED_INFO_evtchn_mask: Final = SHARED_INFO_evtchn_pending + NR_EVENT_CHANNELS // 8
SHARED_INFO_wc_version: Final = SHARED_INFO_evtchn_mask + NR_EVENT_CHANNELS // 8
SHARED_INFO_wc_sec: Final = SHARED_INFO_wc_version + 4
SHARED_INFO_wc_nsec: Final = SHARED_INFO_wc_version + 8
SHARED_INFO_arch: Final = SHARED_INFO_wc_version + 12

# struct vcpu_time_info (xen.h, 32 bytes) at VCPU_INFO_time of each vcpu_info:
# uint32_t version, pad0; uint64_t tsc_timestamp, system_time; uint32_t tsc_to_system_mul;
# int8_t tsc_shift, pad1[3]. A guest reads it while version is even and unchanged, and computes
# system time = system_time + ((((tsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul) >> 32)
# (a negative shift shifts right).
VCPU_TIME_INFO_T: Final = struct.Struct("<IIQQIb3x")
VCPU_TIME_version: Final = 0
VCPU_TIME_tsc_timestamp: Final = 8
VCPU_TIME_system_time: Final = 16
VCPU_TIME_tsc_to_system_mul: Final = 24
VCPU_TIME_tsc_shift: Final = 28

# --------------------------------------------------------------------------------------------
# set_timer_op (15): xen.h; on x86_32 the 64-bit absolute system-time deadline comes in two
# registers, low word first (x86_32/entry.S, hypercall_args_table: 2). 0 cancels the timer.
# xen/common/schedule.c (3.0.4), do_set_timer_op: a deadline that is negative or more than
# 2^50 ns ahead is replaced by now + 100 ms (MILLISECS(100)). The per-CPU 10 ms tick of
# 3.0.4 (schedule.c, t_timer_fn) sends VIRQ_TIMER to the running vCPU as well.
# --------------------------------------------------------------------------------------------
TIMER_HUGE_SHIFT: Final = 50
TIMER_HUGE_DELAY_NS: Final = 100_000_000
TIMER_TICK_NS: Final = 10_000_000

# --------------------------------------------------------------------------------------------
# memory_op (12): memory.h (3.0.4). The low bits of the command are the operation; the bits
# from START_EXTENT_SHIFT up are the extent to resume from (xen/common/memory.c).
# --------------------------------------------------------------------------------------------
XENMEM_increase_reservation: Final = 0
XENMEM_decrease_reservation: Final = 1
XENMEM_maximum_ram_page: Final = 2
XENMEM_current_reservation: Final = 3
XENMEM_maximum_reservation: Final = 4
XENMEM_machphys_mfn_list: Final = 5
XENMEM_populate_physmap: Final = 6
XENMEM_START_EXTENT_SHIFT: Final = 4
# struct xen_memory_reservation on x86_32: XEN_GUEST_HANDLE(xen_pfn_t) extent_start;
# xen_ulong_t nr_extents; unsigned int extent_order, address_bits; domid_t domid (+2 pad).
XEN_MEMORY_RESERVATION_T: Final = struct.Struct("<IIIIH2x")

# --------------------------------------------------------------------------------------------
# grant_table_op (20): grant_table.h; limits from xen/include/asm-x86/grant_table.h and
# xen/include/xen/grant_table.h (3.0.4): ORDER_GRANT_FRAMES 2, so four shared frames of
# version-1 entries (2048 grant references) per domain.
# --------------------------------------------------------------------------------------------
GNTTABOP_map_grant_ref: Final = 0
GNTTABOP_unmap_grant_ref: Final = 1
GNTTABOP_setup_table: Final = 2
GNTTABOP_dump_table: Final = 3
GNTTABOP_transfer: Final = 4
GNTTABOP_copy: Final = 5
GNTTABOP_query_size: Final = 6  # added by Xen 3.1's interface; answered with the fixed size
GNTTAB_MAX_BATCH: Final = 512  # do_grant_table_op: count > 512 is -EINVAL
ORDER_GRANT_FRAMES: Final = 2
NR_GRANT_FRAMES: Final = 1 << ORDER_GRANT_FRAMES
# struct grant_entry (v1) { uint16_t flags; domid_t domid; uint32_t frame; }
GRANT_ENTRY_T: Final = struct.Struct("<HHI")
NR_GRANT_ENTRIES: Final = NR_GRANT_FRAMES * PAGE_SIZE // GRANT_ENTRY_T.size
GTF_invalid: Final = 0
GTF_permit_access: Final = 1
GTF_accept_transfer: Final = 2
GTF_type_mask: Final = 3
GTF_readonly: Final = 1 << 2
GTF_reading: Final = 1 << 3
GTF_writing: Final = 1 << 4
GNTMAP_device_map: Final = 1 << 0
GNTMAP_host_map: Final = 1 << 1
GNTMAP_readonly: Final = 1 << 2
GNTMAP_application_map: Final = 1 << 3
GNTMAP_contains_pte: Final = 1 << 4
GNTST_okay: Final = 0
GNTST_general_error: Final = -1
GNTST_bad_domain: Final = -2
GNTST_bad_gntref: Final = -3
GNTST_bad_handle: Final = -4
GNTST_bad_virt_addr: Final = -5
GNTST_bad_dev_addr: Final = -6
GNTST_no_device_space: Final = -7
GNTST_permission_denied: Final = -8
GNTST_bad_page: Final = -9
GNTST_bad_copy_arg: Final = -10
GNTCOPY_source_gref: Final = 1 << 0
GNTCOPY_dest_gref: Final = 1 << 1
# gnttab_map_grant_ref { uint64_t host_addr; uint32_t flags; grant_ref_t ref; domid_t dom;
#                        int16_t status (OUT); grant_handle_t handle (OUT);
#                        uint64_t dev_bus_addr (OUT); }
GNTTAB_MAP_GRANT_REF_T: Final = struct.Struct("<QIIHhIQ")
# gnttab_unmap_grant_ref { uint64_t host_addr, dev_bus_addr; grant_handle_t handle;
#                          int16_t status (OUT); } (+2 pad to 4-byte alignment on x86_32)
GNTTAB_UNMAP_GRANT_REF_T: Final = struct.Struct("<QQIh2x")
# gnttab_setup_table { domid_t dom; uint32_t nr_frames; int16_t status (OUT);
#                      XEN_GUEST_HANDLE(ulong) frame_list; }
GNTTAB_SETUP_TABLE_T: Final = struct.Struct("<H2xIh2xI")
# gnttab_query_size { domid_t dom; uint32_t nr_frames, max_nr_frames (OUT);
#                     int16_t status (OUT); }
GNTTAB_QUERY_SIZE_T: Final = struct.Struct("<H2xIIh2x")
# gnttab_copy { struct { union { grant_ref_t ref; xen_pfn_t gmfn; } u; domid_t domid;
#                uint16_t offset; } source, dest; uint16_t len, flags; int16_t status (OUT); }
GNTTAB_COPY_T: Final = struct.Struct("<IHHIHHHHh2x")
# gnttab_dump_table { domid_t dom; int16_t status (OUT); }
GNTTAB_DUMP_TABLE_T: Final = struct.Struct("<Hh")
# The grant-mapped PTE (xen/arch/x86/mm.c, create_grant_host_mapping: GRANT_PTE_FLAGS, plus
# _PAGE_RW unless read-only and _PAGE_USER for GNTMAP_application_map).
GRANT_PTE_FLAGS: Final = 0x001 | 0x020 | 0x040  # _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_DIRTY
# Model limit: grant handles (maptrack entries) per domain; Xen 3.0.4 grows its maptrack a page
# at a time and answers GNTST_no_device_space when it cannot.
MAPTRACK_MAX_ENTRIES: Final = 1024

# --------------------------------------------------------------------------------------------
# Shared-memory I/O rings: io/ring.h. A shared ring page opens with four indexes and 48 bytes
# of padding, then the entries; the number of entries is the largest power of two that fits
# (__RING_SIZE).
# --------------------------------------------------------------------------------------------
SRING_req_prod: Final = 0
SRING_req_event: Final = 4
SRING_rsp_prod: Final = 8
SRING_rsp_event: Final = 12
SRING_HEADER_SIZE: Final = 64  # four RING_IDX + uint8_t pad[48]

# --------------------------------------------------------------------------------------------
# The PV console ring: io/console.h, struct xencons_interface { char in[1024]; char out[2048];
# XENCONS_RING_IDX in_cons, in_prod, out_cons, out_prod; } in the frame start_info names.
# --------------------------------------------------------------------------------------------
XENCONS_in: Final = 0
XENCONS_IN_SIZE: Final = 1024
XENCONS_out: Final = 1024
XENCONS_OUT_SIZE: Final = 2048
XENCONS_in_cons: Final = 3072
XENCONS_in_prod: Final = 3076
XENCONS_out_cons: Final = 3080
XENCONS_out_prod: Final = 3084

# --------------------------------------------------------------------------------------------
# The store ring: io/xs_wire.h, struct xenstore_domain_interface { char req[1024];
# char rsp[1024]; XENSTORE_RING_IDX req_cons, req_prod, rsp_cons, rsp_prod; }, carrying
# struct xsd_sockmsg { uint32_t type, req_id, tx_id, len; } then len bytes of payload.
# --------------------------------------------------------------------------------------------
XENSTORE_req: Final = 0
XENSTORE_rsp: Final = 1024
XENSTORE_RING_SIZE: Final = 1024
XENSTORE_req_cons: Final = 2048
XENSTORE_req_prod: Final = 2052
XENSTORE_rsp_cons: Final = 2056
XENSTORE_rsp_prod: Final = 2060
XSD_SOCKMSG_T: Final = struct.Struct("<IIII")
XENSTORE_PAYLOAD_MAX: Final = 4096
XS_DIRECTORY: Final = 1
XS_READ: Final = 2
XS_WATCH: Final = 4
XS_UNWATCH: Final = 5
XS_TRANSACTION_START: Final = 6
XS_TRANSACTION_END: Final = 7
XS_WRITE: Final = 11
XS_MKDIR: Final = 12
XS_RM: Final = 13
XS_WATCH_EVENT: Final = 15
XS_ERROR: Final = 16
# A node's permissions (tools/xenstore/xs_lib.h, enum xs_perm_type; on the wire as n, r, w, b).
XS_PERM_NONE: Final = 0
XS_PERM_READ: Final = 1
XS_PERM_WRITE: Final = 2
# io/xenbus.h, enum xenbus_state.
XenbusStateUnknown: Final = 0
XenbusStateInitialising: Final = 1
XenbusStateInitWait: Final = 2
XenbusStateInitialised: Final = 3
XenbusStateConnected: Final = 4
XenbusStateClosing: Final = 5
XenbusStateClosed: Final = 6

# --------------------------------------------------------------------------------------------
# The virtual block device: io/blkif.h (3.0.4). Requests and responses share one ring; on
# x86_32 a uint64_t is 4-byte aligned, so a request is 108 bytes and the ring holds 32.
# --------------------------------------------------------------------------------------------
BLKIF_OP_READ: Final = 0
BLKIF_OP_WRITE: Final = 1
BLKIF_OP_WRITE_BARRIER: Final = 2
BLKIF_MAX_SEGMENTS_PER_REQUEST: Final = 11
BLKIF_RSP_EOPNOTSUPP: Final = -2
BLKIF_RSP_ERROR: Final = -1
BLKIF_RSP_OKAY: Final = 0
VDISK_CDROM: Final = 1
VDISK_REMOVABLE: Final = 2
VDISK_READONLY: Final = 4
BLKIF_SECTOR_SIZE: Final = 512
# struct blkif_request_segment { grant_ref_t gref; uint8_t first_sect, last_sect; } (+2 pad)
BLKIF_REQUEST_SEGMENT_T: Final = struct.Struct("<IBB2x")
# struct blkif_request { uint8_t operation, nr_segments; blkif_vdev_t handle; uint64_t id;
#                        blkif_sector_t sector_number; struct blkif_request_segment seg[11]; }
BLKIF_REQUEST_HEADER_T: Final = struct.Struct("<BBHQQ")
BLKIF_REQUEST_SIZE: Final = 108
# struct blkif_response { uint64_t id; uint8_t operation; int16_t status; } (12 bytes)
BLKIF_RESPONSE_T: Final = struct.Struct("<QBxh")
BLKIF_RING_SIZE: Final = 32
# The virtual device number of the tools' "hda" (tools/python/xen/util/blkif.py,
# blkdev_name_to_number: major 3, minor 0), the frontend's device/vbd/768.
BLKIF_VDEV_HDA: Final = 3 << 8

# --------------------------------------------------------------------------------------------
# physdev_op: physdev.h (3.0.4). __HYPERVISOR_physdev_op takes (cmd, arg); the compat
# __HYPERVISOR_physdev_op_compat takes one struct physdev_op { uint32_t cmd; union u; }, whose
# union (largest member struct physdev_apic: unsigned long, uint32_t, uint32_t) is 12 bytes.
# --------------------------------------------------------------------------------------------
PHYSDEVOP_IRQ_UNMASK_NOTIFY: Final = 4  # legacy since 0x00030202, takes no argument
PHYSDEVOP_irq_status_query: Final = 5
PHYSDEVOP_set_iopl: Final = 6
PHYSDEVOP_set_iobitmap: Final = 7
PHYSDEVOP_apic_read: Final = 8
PHYSDEVOP_apic_write: Final = 9
PHYSDEVOP_alloc_irq_vector: Final = 10
PHYSDEVOP_eoi: Final = 12
# struct physdev_eoi { uint32_t irq; }
PHYSDEV_EOI_T: Final = struct.Struct("<I")
# struct physdev_irq_status_query { uint32_t irq; uint32_t flags; } (flags OUT)
PHYSDEV_IRQ_STATUS_QUERY_T: Final = struct.Struct("<II")
XENIRQSTAT_needs_eoi: Final = 1 << 0
XENIRQSTAT_shared: Final = 1 << 1
# struct physdev_apic { unsigned long apic_physbase; uint32_t reg; uint32_t value; }
PHYSDEV_APIC_T: Final = struct.Struct("<III")
# struct physdev_irq { uint32_t irq; uint32_t vector; }
PHYSDEV_IRQ_T: Final = struct.Struct("<II")
# xen/include/asm-x86/config.h (3.0.4): the machine's interrupt lines.
NR_IRQS: Final = 256
# struct physdev_set_iopl { uint32_t iopl; }
PHYSDEV_SET_IOPL_T: Final = struct.Struct("<I")
# struct physdev_set_iobitmap { XEN_GUEST_HANDLE(uint8_t) bitmap; uint32_t nr_ports; }
PHYSDEV_SET_IOBITMAP_T: Final = struct.Struct("<II")
PHYSDEV_OP_T: Final = struct.Struct("<I12x")  # struct physdev_op: cmd, then the union
PHYSDEV_OP_u: Final = 4  # offset of the union
# xen/include/asm-x86/processor.h (3.0.4): the I/O bitmap covers 65536 ports, 8192 bytes.
IOBMP_BYTES: Final = 8192

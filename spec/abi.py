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

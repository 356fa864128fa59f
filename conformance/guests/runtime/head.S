/*
 * xenspec guest runtime: start of day, Xen identification, hypercall page, trap entry,
 * the iret path and ring-3 entry. Freestanding; every ABI number comes from the generated
 * xen_abi.h.
 */
#include "xen_abi.h"

#define KERNEL_STACK_SIZE 16384
#define EVENT_VECTOR 256            /* trap_frame.vector of an upcall, as in xenrt.h */

/* One "Xen" ELF note: namesz, descsz, type, "Xen", then the value. */
.macro XEN_NOTE_STR type, value
    .pushsection .note.Xen, "a", @note
    .p2align 2
    .long 4, .Ldesc_end\@ - .Ldesc\@, \type
    .asciz "Xen"
.Ldesc\@:
    .asciz "\value"
.Ldesc_end\@:
    .p2align 2
    .popsection
.endm
.macro XEN_NOTE_INT type, value
    .pushsection .note.Xen, "a", @note
    .p2align 2
    .long 4, 4, \type
    .asciz "Xen"
    .long \value
    .popsection
.endm


#ifdef XEN_GUEST_SECTION
    /* The older identification: a __xen_guest string (HYPERCALL_PAGE is a pfn). */
    .pushsection __xen_guest, "a"
    .ascii "GUEST_OS=xenspec,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000"
    .ascii ",ELF_PADDR_OFFSET=0xC0000000,HYPERCALL_PAGE=0x1,LOADER=generic,PAE=no"
    .byte 0
    .popsection
#else
    XEN_NOTE_STR XEN_ELFNOTE_GUEST_OS, "xenspec"
    XEN_NOTE_STR XEN_ELFNOTE_GUEST_VERSION, "0.1"
    XEN_NOTE_STR XEN_ELFNOTE_XEN_VERSION, "xen-3.0"
    XEN_NOTE_STR XEN_ELFNOTE_LOADER, "generic"
    XEN_NOTE_INT XEN_ELFNOTE_VIRT_BASE, 0xC0000000
    XEN_NOTE_INT XEN_ELFNOTE_PADDR_OFFSET, 0xC0000000
    XEN_NOTE_INT XEN_ELFNOTE_ENTRY, _start
    XEN_NOTE_INT XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page
#ifdef BSD_SYMTAB
    XEN_NOTE_STR XEN_ELFNOTE_BSD_SYMTAB, "yes"
#endif
#ifdef PAE_ONLY
    XEN_NOTE_STR XEN_ELFNOTE_PAE_MODE, "yes"
#else
    XEN_NOTE_STR XEN_ELFNOTE_PAE_MODE, "no"
#endif
#endif

    .section .text.head, "ax"
    .globl _start
_start:
    cld
    movl %esp, boot_esp             /* the boot stack's top, as the builder left it */
    movl $kernel_stack + KERNEL_STACK_SIZE, %esp
    pushl %esi                      /* start_info */
    call start_kernel
1:  jmp 1b

    .p2align 12
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc

    .text
/* long hypercall(unsigned nr, a1, a2, a3, a4, a5): through the hypercall page. */
    .globl hypercall
hypercall:
    pushl %ebx
    pushl %esi
    pushl %edi
    movl 16(%esp), %eax
    shll $5, %eax
    addl $hypercall_page, %eax
    movl 20(%esp), %ebx
    movl 24(%esp), %ecx
    movl 28(%esp), %edx
    movl 32(%esp), %esi
    movl 36(%esp), %edi
    call *%eax
    popl %edi
    popl %esi
    popl %ebx
    ret

/* Trap entry: each stub pushes an error code (0 if the CPU has none) and its vector. */
.macro TRAP_ENTRY vec, has_ec
    .globl trap_entry_\vec
trap_entry_\vec:
    .if \has_ec == 0
    pushl $0
    .endif
    pushl $\vec
    jmp trap_common
.endm

TRAP_ENTRY 0, 0
TRAP_ENTRY 1, 0
TRAP_ENTRY 2, 0
TRAP_ENTRY 3, 0
TRAP_ENTRY 4, 0
TRAP_ENTRY 5, 0
TRAP_ENTRY 6, 0
TRAP_ENTRY 7, 0
TRAP_ENTRY 8, 1
TRAP_ENTRY 9, 0
TRAP_ENTRY 10, 1
TRAP_ENTRY 11, 1
TRAP_ENTRY 12, 1
TRAP_ENTRY 13, 1
TRAP_ENTRY 14, 1
TRAP_ENTRY 15, 0
TRAP_ENTRY 16, 0
TRAP_ENTRY 17, 1
TRAP_ENTRY 18, 0
TRAP_ENTRY 19, 0
TRAP_ENTRY 128, 0
TRAP_ENTRY 32, 0

trap_common:
    /* Frame (struct trap_frame, low to high): ds es ebp edi esi edx ecx ebx eax vector
     * error_code eip cs eflags [esp ss]. */
    pushl %eax
    pushl %ebx
    pushl %ecx
    pushl %edx
    pushl %esi
    pushl %edi
    pushl %ebp
    pushl %es
    pushl %ds
    movl $FLAT_KERNEL_DS, %eax
    movl %eax, %ds
    movl %eax, %es
    pushl %esp
    call do_trap
    addl $4, %esp
    .globl trap_return
trap_return:
    popl %ds
    popl %es
    popl %ebp
    popl %edi
    popl %esi
    popl %edx
    popl %ecx
    popl %ebx
    popl %eax
    addl $8, %esp                   /* vector, error code */
    /* Back to ring 3 with events enabled in the frame: as XenoLinux's return path does,
     * unmask events here and, if none is pending, leave with the processor's own iret (an
     * outward iret needs no hypervisor); otherwise the iret hypercall takes the upcall. */
    testb $3, 4(%esp)               /* the frame's CS: ring 3? */
    jz 1f
    testl $X86_EFLAGS_IF, 8(%esp)
    jz 1f
    pushl %eax
    movl shared_info, %eax
    testl %eax, %eax
    jz 2f
    movb $0, SHARED_INFO_vcpu_info + VCPU_INFO_evtchn_upcall_mask(%eax)
    cmpb $0, SHARED_INFO_vcpu_info + VCPU_INFO_evtchn_upcall_pending(%eax)
    jnz 2f
    popl %eax
    iret
2:  popl %eax
1:  jmp hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE

/* The event upcall (set_callbacks): Xen's frame is EIP, CS, EFLAGS [, ESP, SS] with no error
 * code (x86_32/entry.S, create_bounce_frame); build a trap_frame with vector EVENT_VECTOR
 * through trap_common (do_trap hands it to do_upcall); trap_return's iret unmasks events. */
    .globl event_entry
event_entry:
    pushl $0
    pushl $EVENT_VECTOR
    jmp trap_common

/* The failsafe callback: Xen could not return to the guest's context. */
    .globl failsafe_entry
failsafe_entry:
    pushl $failsafe_msg
    call panic
failsafe_msg:
    .asciz "failsafe callback"

/* int enter_user(u32 eip, u32 esp): run ring-3 code until it calls user_return(). */
    .globl enter_user
enter_user:
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, kernel_saved_esp
    movl 20(%esp), %ecx
    movl 24(%esp), %edx
    pushl $FLAT_USER_SS
    pushl %edx
    pushl $(X86_EFLAGS_IF | X86_EFLAGS_MBS)
    pushl $FLAT_USER_CS
    pushl %ecx
    movl $FLAT_USER_DS, %eax
    movl %eax, %ds
    movl %eax, %es
    xorl %eax, %eax
    jmp hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE

/* void user_return(int code): back in enter_user's caller (called from ring 1). */
    .globl user_return
user_return:
    movl 4(%esp), %eax
    movl kernel_saved_esp, %esp
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

/* Probes: return 0, or FAULT_FLAG | vector if the access trapped (see do_trap's fixups). */
    .globl probe_read
probe_read:
    movl 4(%esp), %edx
    xorl %eax, %eax
1:  movl (%edx), %ecx
2:  ret
    .pushsection .ex_table, "a"
    .long 1b, 2b
    .popsection

    .globl probe_write
probe_write:
    movl 4(%esp), %edx
    movl 8(%esp), %ecx
    xorl %eax, %eax
1:  movl %ecx, (%edx)
2:  ret
    .pushsection .ex_table, "a"
    .long 1b, 2b
    .popsection

    .bss
    .p2align 12
    .globl kernel_stack
kernel_stack:
    .fill KERNEL_STACK_SIZE, 1, 0
kernel_saved_esp:
    .long 0

/* Hostile and broken kernels: each way a guest can get itself killed. The mode comes from the
 * command line; every one must crash this domain only, with a reason, and never the model. */
#include "xenrt.h"

const char test_title[] = "crash modes";

static u8 user_stack[4096] __attribute__((aligned(4096)));

static void user_spin(void)
{
    asm volatile("int $0x80");      /* traps to a kernel with no usable stack */
    for (;;) ;
}

static void iret_to(u32 cs)
{
    /* An iret frame (EIP, CS, EFLAGS) then the iret hypercall. */
    asm volatile("pushl $0x202\n pushl %0\n pushl $1f\n"
                 "jmp hypercall_page + %c1\n1:" :: "r"(cs), "i"(__HYPERVISOR_iret * HYPERCALL_STUB_SIZE));
}

struct mmu_update { u64 ptr, val; };
extern char event_entry[], crash_failsafe[], iret_survived[];
u32 crash_saved_esp;

/* A failsafe callback that reports: reached where the hypervisor should have crashed us. */
void failsafe_reported(void)
{
    xtf_failure("the failsafe callback ran instead of a crash");
    xtf_exit();
}
asm(".globl crash_failsafe\n"
    "crash_failsafe:\n"
    "    movl $" XSTR(FLAT_KERNEL_DS) ", %eax\n"
    "    movl %eax, %ds\n"
    "    movl %eax, %es\n"
    "    call failsafe_reported\n");

/* Where a refused iret would have gone: back on the kernel stack, and report. */
void iret_reported(void)
{
    xtf_failure("an iret frame 39 bytes below the hole was accepted");
    xtf_exit();
}
asm(".globl iret_survived\n"
    "iret_survived:\n"
    "    movl crash_saved_esp, %esp\n"
    "    call iret_reported\n");

/* Map a writable page at HYPERVISOR_VIRT_START - 4096, through an L1 of its own in the page
 * directory's last guest slot; its address. */
static u32 map_below_hole(void)
{
    u32 *l1 = alloc_scratch_page(), *data = alloc_scratch_page();
    u32 l1_va = (u32)l1, va = HYPERVISOR_VIRT_START - PAGE_SIZE_BYTES;
    if (HYPERVISOR_update_va_mapping(l1_va, virt_to_pte(l1_va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot make the L1 read-only");
    u32 l1_mfn = virt_to_mfn(l1);
    struct mmuext_op op = { MMUEXT_PIN_L1_TABLE, l1_mfn, 0 };
    if (HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF))
        panic("cannot pin the L1");
    u32 l2_mfn = virt_to_mfn((void *)si_u32(START_INFO_pt_base));
    struct mmu_update u = { ((u64)l2_mfn << PAGE_SHIFT) | ((va >> 22) * 4),
                            (l1_mfn << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_RW | _PAGE_USER
                            | _PAGE_ACCESSED };
    if (HYPERVISOR_mmu_update(&u, 1, NULL, DOMID_SELF))
        panic("cannot hook the L1 into slot %u", va >> 22);
    if (HYPERVISOR_update_va_mapping(va, (virt_to_mfn(data) << PAGE_SHIFT) | _PAGE_PRESENT
                                     | _PAGE_RW, UVMF_INVLPG))
        panic("cannot map %x", va);
    return va;
}

void test_main(void)
{
    const char *mode = (const char *)start_info + START_INFO_cmd_line;
    printk("crash mode: %s\n", mode);
    if (!strcmp(mode, "unhandled")) {
        HYPERVISOR_set_trap_table(NULL);            /* no handlers at all */
        probe_read(0x1000);
    } else if (!strcmp(mode, "no-kernel-stack")) {
        /* A ring-3 trap with no stack_switch: Xen has nowhere to put the frame. */
        enter_user((u32)user_spin, (u32)user_stack + sizeof(user_stack));
    } else if (!strcmp(mode, "bad-kernel-stack")) {
        HYPERVISOR_stack_switch(FLAT_KERNEL_SS, 0x1000);    /* unmapped */
        enter_user((u32)user_spin, (u32)user_stack + sizeof(user_stack));
    } else if (!strcmp(mode, "iret-ring0")) {
        iret_to(HYPERVISOR_CS);
    } else if (!strcmp(mode, "stack-in-hole")) {
        /* Fault with the ring-1 stack pointing into the hypervisor hole. */
        asm volatile("movl $0xFF000000, %esp\n movl 0x1000, %eax");
    } else if (!strcmp(mode, "bad-handler-cs")) {
        struct { u8 v, f; u16 cs; u32 a; } t[2] = { { TRAP_page_fault, 0, 0, 0xC0000000u },
                                                   { 0, 0, 0, 0 } };
        HYPERVISOR_set_trap_table(t);               /* a null handler selector */
        probe_read(0x1000);
    } else if (!strcmp(mode, "guest-crash")) {
        shutdown(SHUTDOWN_crash);
    } else if (!strcmp(mode, "unknown-reason")) {
        HYPERVISOR_sched_op_compat(SCHEDOP_shutdown, 77);
    } else if (!strcmp(mode, "bad-cr3")) {
        /* mov to cr3 of a frame that is no page directory (it is mapped writable): Xen's
         * emulation calls new_guest_cr3 and ignores its result, and new_guest_cr3 crashes a
         * domain it has left without page tables. */
        u32 *page = alloc_scratch_page();
        u32 ma = virt_to_pte((u32)page) & PAGE_MASK;
        asm volatile("mov %0, %%cr3" :: "r"(ma) : "memory");
    } else if (!strcmp(mode, "null-event-callback")) {
        /* An upcall to the null selector (set_callbacks makes event cs 0 into 1): Xen's
         * create_bounce_frame crashes the domain (x86_32/entry.S, the "testl $~3" of the
         * callback's CS). The failsafe callback reports a hypervisor that bounces anyway. */
        HYPERVISOR_set_callbacks(0, (u32)event_entry, FLAT_KERNEL_CS, (u32)crash_failsafe);
        long p = evtchn_bind_ipi(0);
        vcpu0_info()[VCPU_INFO_evtchn_upcall_mask] = 0;
        evtchn_send(p);
    } else if (!strcmp(mode, "iret-frame-at-hole")) {
        /* do_iret (x86_32/traps.c): the worst-case frame, 40 bytes from ESP, must lie below
         * the hypervisor (access_ok(esp, 40)): a frame 39 bytes below HYPERVISOR_VIRT_START
         * is refused though the 16 bytes read are mapped, and the domain is crashed. The
         * iret hypercall's entry pushes EAX, so the frame starts 4 bytes below ESP. */
        u32 top = map_below_hole() + PAGE_SIZE_BYTES;
        volatile u32 *frame = (volatile u32 *)(top - 39);
        frame[0] = 0;
        frame[1] = (u32)iret_survived;
        frame[2] = FLAT_KERNEL_CS;
        frame[3] = X86_EFLAGS_MBS;
        asm volatile("movl %%esp, crash_saved_esp\n"
                     "movl %0, %%esp\n"
                     "xorl %%eax, %%eax\n"
                     "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * "
                     XSTR(HYPERCALL_STUB_SIZE)
                     :: "r"(top - 35) : "eax", "memory");
    } else if (!strcmp(mode, "spin")) {
        for (;;) ;
    } else {
        xtf_error("unknown crash mode '%s'", mode);
        return;
    }
    xtf_failure("still running after crash mode %s", mode);
}

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
    } else if (!strcmp(mode, "spin")) {
        for (;;) ;
    } else {
        xtf_error("unknown crash mode '%s'", mode);
        return;
    }
    xtf_failure("still running after crash mode %s", mode);
}

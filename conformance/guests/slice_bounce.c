/* An event pending when the vCPU runs again after a time slice that ended at a trap moving
 * it to another ring.
 *
 * Xen builds the trap's bounce frame first and looks for events on its way out, after the
 * scheduler (x86_32/entry.S: create_bounce_frame, then test_all_events: softirqs, that is the
 * scheduler, then process_guest_events, which bounces again on top). So an upcall that comes
 * after a system call's bounce returns to the first instruction of the kernel's handler, and
 * one that comes after an iret hypercall to ring 3 returns to ring 3; an upcall's frame never
 * points anywhere else.
 *
 * Ring 3 makes its system calls with int $0x80 through a gate the kernel keeps for itself
 * (trap_info DPL 1): each is a #GP that Xen bounces to the kernel (traps.c,
 * do_general_protection), and the kernel's #GP handler completes it. Call 2 returns through
 * the iret hypercall (the kernel leaves an upcall pending, so the runtime's return asks Xen).
 * The kernel counts where each VIRQ_DEBUG upcall came in; the test that runs it ends a time
 * slice at one of these traps and sends VIRQ_DEBUG meanwhile (tests/test_int80.py). */
#include "xenrt.h"

const char test_title[] = "an event pending when a slice ended at a ring change";

enum { SYS_null = 0, SYS_exit = 1, SYS_via_xen = 2 };
#define ROUNDS 8

extern char trap_entry_13[], trap_entry_128[];
static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 syscalls, over_gp_entry, over_user, elsewhere, bad_cs, bad_eip;

static void on_gp(struct trap_frame *f)
{
    if ((f->cs & 3) != 3 || f->error_code != ((SYSCALL_VECTOR << 3) | 2))
        panic("#GP %x at %x:%x", f->error_code, f->cs & 0xffff, f->eip);
    f->eip += 2;
    syscalls++;
    if (f->eax == SYS_exit)
        user_return(0);
    if (f->eax == SYS_via_xen)
        vcpu0_info()[VCPU_INFO_evtchn_upcall_pending] = 1;
    f->eax = 0;
}

static void on_virq(u32 port, struct trap_frame *f)
{
    (void)port;
    if (f->eip == (u32)trap_entry_13 && (f->cs & 0xffff) == FLAT_KERNEL_CS) {
        over_gp_entry++;
    } else if ((f->cs & 3) == 3 && f->eip < HYPERVISOR_VIRT_START) {
        over_user++;
    } else {
        elsewhere++;
        bad_cs = f->cs & 0xffff;
        bad_eip = f->eip;
    }
}

static void user_loop(void)
{
    for (u32 i = 0; i < ROUNDS; i++) {
        asm volatile("int $0x80" : : "a"(SYS_null) : "memory");
        asm volatile("int $0x80" : : "a"(SYS_via_xen) : "memory");
    }
    asm volatile("int $0x80" : : "a"(SYS_exit) : "memory");
    for (;;)
        ;
}

void test_main(void)
{
    struct { u8 vector, flags; u16 cs; u32 address; } table[2] = {
        { SYSCALL_VECTOR, 1, FLAT_KERNEL_CS, (u32)trap_entry_128 }, { 0, 0, 0, 0 } };
    events_enable();
    long port = evtchn_bind_virq(VIRQ_DEBUG, 0);
    check(port > 0, "bind VIRQ_DEBUG: %d", (int)port);
    set_event_handler((u32)port, on_virq);
    set_trap_handler(TRAP_gp_fault, on_gp);
    check(HYPERVISOR_set_trap_table(table) == 0, "set_trap_table");
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    int rc = enter_user((u32)user_loop, (u32)user_stack + sizeof(user_stack));
    printk("system calls %u; VIRQ_DEBUG upcalls over the #GP entry %u, over ring 3 %u, "
           "elsewhere %u\n", syscalls, over_gp_entry, over_user, elsewhere);
    check(rc == 0, "user mode ended with %d", rc);
    check(syscalls == 2 * ROUNDS + 1, "%u system calls, expected %u", syscalls, 2 * ROUNDS + 1);
    check(!elsewhere, "an upcall came in at %x:%x", bad_cs, bad_eip);
}

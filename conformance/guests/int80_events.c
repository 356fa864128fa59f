/* int $0x80 through Xen's direct trap gate never enters Xen (x86_32/traps.c,
 * init_int80_direct_trap: the processor delivers it), so an upcall left pending with events
 * unmasked (the kernel cleared the mask byte itself, without the hypercall XenoLinux would
 * make) is not delivered at the int: the syscall handler runs first, and the upcall comes at
 * the next entry into Xen (here the iret hypercall of the handler's return). */
#include "xenrt.h"

const char test_title[] = "no upcall at a direct-gate int $0x80";

static volatile u32 upcalls_seen_by_syscall;

static void on_syscall(struct trap_frame *f)
{
    upcalls_seen_by_syscall = event_stats.upcalls;
    f->eax = 0;
}

void test_main(void)
{
    events_enable();
    set_trap_handler(SYSCALL_VECTOR, on_syscall);
    volatile u8 *vi = vcpu0_info();
    vi[VCPU_INFO_evtchn_upcall_mask] = 1;
    u32 before = event_stats.upcalls;
    vi[VCPU_INFO_evtchn_upcall_pending] = 1;
    vi[VCPU_INFO_evtchn_upcall_mask] = 0;     /* no hypercall: Xen does not look */
    asm volatile("int $0x80" : : "a"(0) : "memory", "ecx", "edx");
    printk("upcalls before %u, seen by the syscall handler %u, after %u\n", before,
           upcalls_seen_by_syscall, event_stats.upcalls);
    check(upcalls_seen_by_syscall == before,
          "an upcall ran before the syscall handler (%u -> %u)", before, upcalls_seen_by_syscall);
    check(event_stats.upcalls == before + 1, "one upcall by the handler's iret hypercall: %u",
          event_stats.upcalls - before);
}

/* SCHEDOP_block (schedule.c, do_block, Xen 3.0.4): a vCPU with nothing pending blocks, and an
 * event sent by another domain wakes it; the event is then delivered to its callback. Two
 * domains run this kernel (the Python test starts them):
 *   wait      allocate an unbound port for domain 1 (it is port 1), block, check the wake-up
 *   send P    bind to port P of domain 0 and send
 * Skips itself when the hypervisor has no event channels. */
#include "xenrt.h"

#ifndef EVTCHNOP_bind_interdomain
#define EVTCHNOP_bind_interdomain 0
#define EVTCHNOP_send 4
#define EVTCHNOP_alloc_unbound 6
#endif
#ifndef SHARED_INFO_evtchn_pending
#define SHARED_INFO_evtchn_pending (MAX_VIRT_CPUS * SIZEOF_VCPU_INFO)
#endif

const char test_title[] = "sched_op block: woken by an event from another domain";

volatile u32 upcalls;
void event_callback(void);
/* The upcall: clear evtchn_upcall_pending of vCPU 0, count, return through iret. */
asm(".globl event_callback\n"
    "event_callback:\n"
    "    pushl %eax\n"
    "    movl shared_info, %eax\n"
    "    movb $0, (%eax)\n"
    "    incl upcalls\n"
    "    popl %eax\n"
    "    jmp hypercall_page + " "23" " * 32\n");

static long evtchn_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_event_channel_op, cmd, (u32)arg, 0, 0, 0); }

static const char *cmdline(void) { return (const char *)(start_info + START_INFO_cmd_line); }

static void wait_for_event(void)
{
    struct { u16 dom, remote_dom; u32 port; } alloc = { DOMID_SELF, 1, 0 };
    long rc = evtchn_op(EVTCHNOP_alloc_unbound, &alloc);
    if (rc == -ENOSYS)
        xtf_skip("no event channels");
    check(rc == 0 && alloc.port == 1, "alloc_unbound: %d, port %u", (int)rc, alloc.port);
    check(HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, (u32)event_callback, FLAT_KERNEL_CS,
                                   (u32)event_callback) == 0, "set_callbacks");
    printk("blocking\n");
    check(HYPERVISOR_sched_op(SCHEDOP_block, NULL) == 0, "block");
    printk("woken\n");
    const volatile u32 *pending = (const volatile u32 *)(shared_info + SHARED_INFO_evtchn_pending);
    check(pending[0] & (1u << alloc.port), "port %u is pending", alloc.port);
    check(upcalls == 1, "one upcall: %u", upcalls);
}

static void send_event(u32 port)
{
    struct { u16 remote_dom, pad; u32 remote_port, local_port; } bind = { 0, 0, port, 0 };
    long rc = evtchn_op(EVTCHNOP_bind_interdomain, &bind);
    if (rc == -ENOSYS)
        xtf_skip("no event channels");
    check(rc == 0, "bind_interdomain: %d", (int)rc);
    u32 local = bind.local_port;
    check(evtchn_op(EVTCHNOP_send, &local) == 0, "send");
    printk("sent\n");
}

void test_main(void)
{
    const char *c = cmdline();
    if (!strcmp(c, "wait"))
        wait_for_event();
    else if (c[0] == 's')
        send_event((u32)(c[5] - '0'));
    else
        xtf_error("command line: wait or send P");
}

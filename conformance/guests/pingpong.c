/* Two domains exchange events over an interdomain channel (event_channel.c, Xen 3.0.4), each
 * blocking (SCHEDOP_block) until the other's event arrives. The Python test starts them:
 *   serve N   domain 0: offer port 1 to domain 1, then answer N events
 *   client N  domain 1: bind to domain 0's port 1, send N events, each after the answer */
#include "xenrt.h"

const char test_title[] = "event ping-pong between two domains";

static u32 parse(const char *s)
{ u32 n = 0; while (*s >= '0' && *s <= '9') n = n * 10 + (u32)(*s++ - '0'); return n; }

static void wait_count(u32 port, u32 target)
{
    while (event_stats.count[port] < target)
        HYPERVISOR_sched_op(SCHEDOP_block, NULL);
}

static void serve(u32 n)
{
    long p = evtchn_alloc_unbound(1);
    check(p == 1, "alloc_unbound for domain 1: %d", (int)p);
    events_enable();
    for (u32 i = 1; i <= n; i++) {
        wait_count(p, i);
        check(evtchn_send(p) == 0, "answer %u", i);
    }
    check(event_stats.count[p] == n, "served %u events: %u", n, event_stats.count[p]);
}

static void client(u32 n)
{
    long q = evtchn_bind_interdomain(0, 1);
    check(q > 0, "bind_interdomain to domain 0 port 1: %d", (int)q);
    events_enable();
    u32 base = event_stats.count[q];  /* bind_interdomain raised our end once */
    check(base == 1, "the new local end was pending: %u", base);
    for (u32 i = 1; i <= n; i++) {
        check(evtchn_send(q) == 0, "send %u", i);
        wait_count(q, base + i);
    }
    check(event_stats.count[q] == base + n, "got %u answers", event_stats.count[q] - base);
    printk("%u round trips\n", n);
}

void test_main(void)
{
    const char *c = (const char *)(start_info + START_INFO_cmd_line);
    if (c[0] == 's')
        serve(parse(c + 6));
    else if (c[0] == 'c')
        client(parse(c + 7));
    else
        xtf_error("command line: serve N or client N");
}

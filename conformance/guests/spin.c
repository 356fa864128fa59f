/* Scheduling (schedule.c, sched_bvt.c, Xen 3.0.4): a guest that computes without ever giving
 * up the CPU is preempted at the end of its slice, and a guest that yields lets the others run.
 * The command line picks the behaviour; the Python tests read the order of the console lines
 * and the scheduler's log:
 *   forever   spin and never shut down
 *   yield     print a line and yield, five times
 *   yields N  yield N times, silently (the context-switch benchmark)
 *   work N    N rounds of about two million instructions, a line after each
 *   (empty)   print one line and finish */
#include "xenrt.h"

const char test_title[] = "scheduling: spin, yield, work";

static volatile u32 sink;

static const char *cmdline(void) { return (const char *)(start_info + START_INFO_cmd_line); }

static u32 number(const char *s)
{
    u32 n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (u32)(*s++ - '0');
    return n;
}

static void busy(u32 n)
{
    for (u32 i = 0; i < n; i++)
        sink += i;
}

void test_main(void)
{
    const char *c = cmdline();
    if (!strcmp(c, "forever")) {
        printk("spinning\n");
        for (;;)
            sink++;
    }
    if (!strcmp(c, "yield")) {
        for (int i = 0; i < 5; i++) {
            printk("yield %d\n", i);
            check(HYPERVISOR_sched_op(SCHEDOP_yield, NULL) == 0, "yield %d", i);
        }
        return;
    }
    if (!memcmp(c, "yields ", 7)) {
        for (u32 i = number(c + 7); i; i--)
            HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
        return;
    }
    if (!memcmp(c, "work ", 5)) {
        u32 rounds = number(c + 5);
        for (u32 i = 0; i < rounds; i++) {
            busy(500000);
            printk("round %u\n", i);
        }
        return;
    }
    printk("a short guest\n");
}

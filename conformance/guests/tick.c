/* The periodic tick (schedule.c t_timer_fn, Xen 3.0.4): every 10 ms of system time the vCPU
 * running gets VIRQ_TIMER, with no one-shot timer set; a vCPU that is not running gets none
 * (the tick goes to the idle vCPU then), so blocking with no timer set is never ended by it.
 * The command line picks the check; the Python test (tests/test_tick.py) reads the lines:
 *   periodic  spin 75 ms, recording when each VIRQ_TIMER arrives: about every 10 ms
 *   sleep     block with a one-shot timer 50 ms ahead: woken by it, not by a tick before it;
 *             then the ticks come again while we run
 *   block     block with no timer set: nothing wakes us (the test sees the machine idle) */
#include "xenrt.h"

const char test_title[] = "the periodic tick: VIRQ_TIMER every 10 ms to the running vCPU";

#define MS 1000000ull
#define MAX_SEEN 16

static u32 timer_port, seen;
static u64 seen_at[MAX_SEEN];

static void on_timer(u32 port, struct trap_frame *f)
{
    (void)port; (void)f;
    if (seen < MAX_SEEN)
        seen_at[seen] = system_time_ns();
    seen++;
}

/* Run (no hypercall but the time reads) until ``ns`` of system time have passed. */
static void spin_for(u64 ns)
{
    u64 end = system_time_ns() + ns;
    while (system_time_ns() < end)
        ;
}

static void periodic(void)
{
    u32 first = seen;
    spin_for(75 * MS);
    u32 n = seen - first;
    printk("periodic: %u ticks in 75 ms\n", n);
    check(n >= 6 && n <= 8, "about one tick per 10 ms: %u in 75 ms", n);
    for (u32 i = first + 1; i < seen && i < MAX_SEEN; i++) {
        u64 gap = seen_at[i] - seen_at[i - 1];
        printk("periodic: gap %u us\n", (u32)gap / 1000);
        check(gap >= 10 * MS && gap < 11 * MS, "a tick 10 ms after the last: %u ns", (u32)gap);
    }
}

static void sleep_50ms(void)
{
    u64 deadline = system_time_ns() + 50 * MS;
    u32 before = seen;
    check(HYPERVISOR_set_timer_op(deadline) == 0, "set_timer_op");
    HYPERVISOR_sched_op(SCHEDOP_block, NULL);
    u64 woke = system_time_ns();
    check(woke >= deadline, "woken by the one-shot, not by a tick: %u us early",
          (u32)(deadline - woke) / 1000);
    check(seen == before + 1, "one timer event for the wake-up: %u", seen - before);
    printk("sleep: woken %u us after the deadline, %u event(s)\n",
           (u32)(woke - deadline) / 1000, seen - before);
    before = seen;
    spin_for(25 * MS);
    check(seen - before >= 2, "the ticks again while running: %u in 25 ms", seen - before);
}

void test_main(void)
{
    const char *c = (const char *)(start_info + START_INFO_cmd_line);
    long p = evtchn_bind_virq(VIRQ_TIMER, 0);
    if (p <= 0) { xtf_error("bind_virq(VIRQ_TIMER): %d", (int)p); return; }
    timer_port = p;
    set_event_handler(timer_port, on_timer);
    events_enable();
    if (!strcmp(c, "periodic"))
        periodic();
    else if (!strcmp(c, "sleep"))
        sleep_50ms();
    else if (!strcmp(c, "block")) {
        printk("blocking with no timer set\n");
        HYPERVISOR_sched_op(SCHEDOP_block, NULL);
        printk("woken\n");
    } else
        xtf_error("command line: periodic, sleep or block");
}

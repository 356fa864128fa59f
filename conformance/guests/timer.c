/* set_timer_op and VIRQ_TIMER (schedule.c do_set_timer_op, vcpu_timer_fn, Xen 3.0.4): a
 * deadline in system time fires VIRQ_TIMER no earlier than the deadline; 0 cancels; a deadline
 * in the past fires at once; a negative one is taken as now + 100 ms. */
#include "xenrt.h"

const char test_title[] = "set_timer_op: VIRQ_TIMER, cancel, past and huge deadlines";

static u32 timer_port;
static u64 fired_at;

static void on_timer(u32 port, struct trap_frame *f) { fired_at = system_time_ns(); }

/* The periodic tick (t_timer_fn) raises VIRQ_TIMER too, every 10 ms while we run: wait for
 * one, so that the next comes 10 ms later, after the window each check below looks at. */
static void after_a_tick(void)
{
    u32 seen = event_stats.count[timer_port];
    u64 end = system_time_ns() + 100000000ull;
    while (event_stats.count[timer_port] == seen && system_time_ns() < end)
        ;
}

/* Spin until the timer port has fired more than ``seen`` times or ``limit_ns`` passes. */
static int wait_fire(u32 seen, u64 limit_ns)
{
    u64 end = system_time_ns() + limit_ns;
    while (event_stats.count[timer_port] == seen && system_time_ns() < end)
        ;
    return event_stats.count[timer_port] > seen;
}

void test_main(void)
{
    long p = evtchn_bind_virq(VIRQ_TIMER, 0);
    if (p <= 0) { xtf_error("bind_virq(VIRQ_TIMER): %d", (int)p); return; }
    timer_port = p;
    set_event_handler(timer_port, on_timer);
    events_enable();

    after_a_tick();
    u32 seen = event_stats.count[timer_port];
    u64 deadline = system_time_ns() + 2000000;  /* 2 ms */
    check(HYPERVISOR_set_timer_op(deadline) == 0, "set_timer_op");
    check(event_stats.count[timer_port] == seen, "not before its time");
    check(wait_fire(seen, 2000000000ull), "VIRQ_TIMER fired");
    check(fired_at >= deadline, "fired at or after the deadline (early by %u ns)",
          (u32)(deadline - fired_at));

    /* Cancel: nothing arrives past the cancelled deadline. */
    after_a_tick();
    seen = event_stats.count[timer_port];
    check(HYPERVISOR_set_timer_op(system_time_ns() + 1000000) == 0, "set");
    check(HYPERVISOR_set_timer_op(0) == 0, "cancel");
    check(!wait_fire(seen, 5000000), "a cancelled timer does not fire");

    /* A deadline in the past fires before the hypercall returns to us. */
    seen = event_stats.count[timer_port];
    check(HYPERVISOR_set_timer_op(1) == 0, "past deadline");
    check(event_stats.count[timer_port] == seen + 1, "fired at once");

    /* A negative deadline: now + 100 ms (the Linux workaround of do_set_timer_op). The tick
     * sends nothing to a blocked vCPU, so blocked, only the one-shot timer wakes us. */
    after_a_tick();
    u64 now = system_time_ns();
    check(HYPERVISOR_set_timer_op(0x8000000000000000ull) == 0, "negative deadline");
    fired_at = 0;
    while (fired_at < now + 90000000ull && system_time_ns() < now + 2000000000ull)
        HYPERVISOR_sched_op(SCHEDOP_block, NULL);
    check(fired_at >= now + 100000000ull, "fired 100 ms later, not earlier (+%u us)",
          (u32)(fired_at - now) / 1000);
}

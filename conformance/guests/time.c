/* Time as a guest reads it (xen.h vcpu_time_info, shared_info wc_*; time.c Xen 3.0.4): the
 * time info is published with an even version, system time computed from the TSC moves
 * forward monotonically and agrees with the published system_time, the wallclock is sane. */
#include "xenrt.h"

const char test_title[] = "vcpu_time_info and wallclock";

void test_main(void)
{
    volatile u32 *t = (volatile u32 *)(vcpu0_info() + VCPU_INFO_time);
    u32 version = time_info_version();
    check(version != 0 && (version & 1) == 0, "version %u: published and even", version);
    check(t[VCPU_TIME_tsc_to_system_mul / 4] != 0, "tsc_to_system_mul is set");
    u64 base = t[VCPU_TIME_system_time / 4] | (u64)t[VCPU_TIME_system_time / 4 + 1] << 32;
    u64 stamp = t[VCPU_TIME_tsc_timestamp / 4] | (u64)t[VCPU_TIME_tsc_timestamp / 4 + 1] << 32;

    u64 tsc0 = rdtsc(), tsc1 = rdtsc();
    check(tsc1 > tsc0, "the TSC moves forward");
    check(tsc0 >= stamp, "the TSC is past the published stamp");

    u64 first = system_time_ns();
    check(first >= base, "system time is not before the published system_time");
    u64 prev = first;
    for (int i = 0; i < 2000; i++) {
        u64 now = system_time_ns();
        if (now < prev) { xtf_failure("system time went back at read %d", i); break; }
        prev = now;
    }
    check(prev > first, "system time moves forward");
    u64 before = system_time_ns();
    for (volatile int i = 0; i < 200000; i++)
        ;
    check(system_time_ns() > before, "time passes over a busy loop");

    u32 sec, nsec, wc_version;
    wallclock(&sec, &nsec, &wc_version);
    check(wc_version != 0 && (wc_version & 1) == 0, "wc_version %u: even", wc_version);
    check(sec > 1577836800u, "wallclock after 2020: %u", sec);
    check(nsec < 1000000000u, "wc_nsec below one second: %u", nsec);
    printk("wallclock at system time 0: %u s %u ns\n", sec, nsec);
}

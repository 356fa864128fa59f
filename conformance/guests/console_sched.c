/* console_io and sched_op: results and errors (console.c, schedule.c, Xen 3.0.4). */
#include "xenrt.h"

const char test_title[] = "console_io, sched_op, bad hypercall numbers";

void test_main(void)
{
    check(HYPERVISOR_console_io(CONSOLEIO_write, 3, "ok\n") == 0, "write returns 0");
    check(HYPERVISOR_console_io(CONSOLEIO_write, 16, (void *)0x1000) == -EFAULT,
          "unmapped buffer");
    check(HYPERVISOR_console_io(CONSOLEIO_write, 16, (void *)0xFF000000) == -EFAULT,
          "buffer in the hole");
    char in[8];
    check(HYPERVISOR_console_io(CONSOLEIO_read, sizeof(in), in) == 0, "read: nothing");
    check(HYPERVISOR_console_io(7, 0, NULL) == -ENOSYS, "unknown console cmd");
    check(HYPERVISOR_sched_op(SCHEDOP_yield, NULL) == 0, "yield");
    check(HYPERVISOR_sched_op_compat(SCHEDOP_yield, 0) == 0, "compat yield");
    /* Blocking needs a wake-up source (block.c); a poll of no ports whose timeout (absolute
     * system time 1 ns) has passed returns at the next scheduling point. */
    struct { u32 ports, nr_ports; u64 timeout; } poll = { 0, 0, 1 };
    check(HYPERVISOR_sched_op(SCHEDOP_poll, &poll) == 0, "poll with a past timeout");
    check(HYPERVISOR_sched_op(99, NULL) == -ENOSYS, "unknown sched cmd");
    check(HYPERVISOR_sched_op_compat(99, 0) == -ENOSYS, "unknown compat cmd");
    check(HYPERVISOR_sched_op(SCHEDOP_shutdown, (void *)0x1000) == -EFAULT,
          "shutdown with an unreadable argument");
    check(HYPERVISOR_sched_op(SCHEDOP_remote_shutdown, NULL) == -EPERM,
          "remote_shutdown unprivileged");
    check(hypercall(NR_hypercalls - 1, 0, 0, 0, 0, 0) == -ENOSYS, "empty slot");
    check(hypercall(11, 0, 0, 0, 0, 0) == -ENOSYS, "set_fast_trap is gone in 3.0");
    /* Numbers beyond the table, through a direct int $0x82. */
    long rc;
    asm volatile("int $0x82" : "=a"(rc) : "a"(200) : "memory");
    check(rc == -ENOSYS, "number 200: %d", (int)rc);
}

/* Shut down with the reason given on the command line (sched_op_compat and sched_op), stating
 * it on the console first as the runtime's shutdown does. */
#include "xenrt.h"

const char test_title[] = "shutdown reasons";

void test_main(void)
{
    const char *cmd = (const char *)start_info + START_INFO_cmd_line;
    unsigned reason = cmd[0] ? (unsigned)(cmd[0] - '0') : SHUTDOWN_poweroff;
    printk("shutting down with reason %u\n", reason);
    shutdown_announce(reason);
    if (cmd[0] && cmd[1] == 'c')
        HYPERVISOR_sched_op_compat(SCHEDOP_shutdown, reason);
    u32 arg = reason;
    HYPERVISOR_sched_op(SCHEDOP_shutdown, &arg);
    xtf_failure("still running after shutdown");
}

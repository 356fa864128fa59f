/* The PV console ring (io/console.h; xenconsoled, tools/console/daemon/io.c, Xen 3.0.4): every
 * line of this kernel after its title goes through the ring in the frame start_info names,
 * including a write longer than the ring (it wraps and waits for room). With the command line
 * "input" it then waits for a line from the console and echoes it; with "both" it writes one
 * line to console_io and to the ring, as Mini-OS's printk does (the ring's copy ends "\n\r"). */
#include "xenrt.h"

const char test_title[] = "console ring: output, wrap, input";

static char big[5001];

static void wait_for_line(volatile u8 *page, char *line, u32 size)
{
    u32 n = 0;
    u32 port = si_u32(START_INFO_console_evtchn);
    for (;;) {
        int got = xencons_read(line + n, size - 1 - n);
        check(got >= 0, "xencons_read: %d", got);
        n += got > 0 ? (u32)got : 0;
        line[n] = 0;
        for (u32 i = 0; i < n; i++)
            if (line[i] == '\n') { line[i] = 0; return; }
        if (n == size - 1)
            return;
        evtchn_clear(port);     /* then look again, so that no notification is lost */
        if (*(volatile u32 *)(page + XENCONS_in_cons) == *(volatile u32 *)(page + XENCONS_in_prod))
            evtchn_wait(port);
    }
}

void test_main(void)
{
    if (!si_u32(START_INFO_console_mfn))
        xtf_skip("no console ring in start_info");
    volatile u8 *page = mfn_to_virt(si_u32(START_INFO_console_mfn));
    printk_ring = 1;
    check(xencons_write("hello through the ring\n", 23) == 23, "short write");
    /* 100 numbered lines of 50 bytes: 5000 bytes, more than twice the 2048-byte ring. */
    for (u32 i = 0; i < 100; i++)
        snprintf(big + 50 * i, 51, "ring line %03u %s\n", i,
                 "abcdefghijklmnopqrstuvwxyz012345678");
    check(xencons_write(big, 5000) == 5000, "long write");
    /* The daemon runs in another domain, later: wait until it has taken everything. */
    u32 port = si_u32(START_INFO_console_evtchn);
    for (int i = 0; i < 100 && *(volatile u32 *)(page + XENCONS_out_cons)
                               != *(volatile u32 *)(page + XENCONS_out_prod); i++) {
        evtchn_clear(port);     /* then look again, so that no notification is lost */
        if (*(volatile u32 *)(page + XENCONS_out_cons) != *(volatile u32 *)(page + XENCONS_out_prod))
            evtchn_wait(port);
    }
    check(*(volatile u32 *)(page + XENCONS_out_cons) == *(volatile u32 *)(page + XENCONS_out_prod),
          "the daemon took everything");
    printk("printk through the ring: %u\n", 42u);
    if (!strcmp((const char *)(start_info + START_INFO_cmd_line), "both")) {
        static char line[] = "the same line on both consoles\n\r";
        HYPERVISOR_console_io(CONSOLEIO_write, sizeof(line) - 2, line);
        check(xencons_write(line, sizeof(line) - 1) == (int)sizeof(line) - 1, "ring copy");
    }
    if (!strcmp((const char *)(start_info + START_INFO_cmd_line), "input")) {
        char line[128];
        printk("waiting for input\n");
        wait_for_line(page, line, sizeof(line));
        printk("got: %s\n", line);
    }
}

/* Benchmark loops, chosen by the command line "MODE N": hypercall (xen_version round trips),
 * syscall (ring 3 -> int $0x80 -> ring 1 -> back to ring 3 with the runtime's return path,
 * the processor's iret), syscall-hypercall-iret (the same, returning through the iret
 * hypercall: the handler clears IF in the frame, so the runtime leaves events masked and must
 * ask Xen), compute (a register loop), rdtsc (RDTSC, which traps to the hypervisor under the
 * model's deterministic clock, CR4.TSD), store (the compute loop with a store to the stack in
 * each iteration: the emulator's cost of a guest store). */
#include "xenrt.h"

const char test_title[] = "benchmark loops";

static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static u32 iterations;
static int via_hypercall;

static void syscall(struct trap_frame *f)
{
    if (f->eax == 1)
        user_return(0);
    f->eax = 0;
    if (via_hypercall)
        f->eflags &= ~X86_EFLAGS_IF;
}

static void user_loop(void)
{
    for (u32 i = 0; i < iterations; i++)
        asm volatile("int $0x80" :: "a"(0) : "memory");
    asm volatile("int $0x80" :: "a"(1) : "memory");
}

static u32 parse(const char *s)
{
    u32 n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (u32)(*s++ - '0');
    return n;
}

void test_main(void)
{
    const char *cmd = (const char *)start_info + START_INFO_cmd_line;
    const char *arg = cmd;
    while (*arg && *arg != ' ')
        arg++;
    iterations = parse(*arg ? arg + 1 : arg);
    if (!memcmp(cmd, "hypercall", 9)) {
        for (u32 i = 0; i < iterations; i++)
            hypercall(__HYPERVISOR_xen_version, XENVER_version, 0, 0, 0, 0);
    } else if (!memcmp(cmd, "syscall", 7)) {
        via_hypercall = !memcmp(cmd, "syscall-hypercall-iret", 22);
        set_trap_handler(SYSCALL_VECTOR, syscall);
        HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack));
        enter_user((u32)user_loop, (u32)user_stack + sizeof(user_stack));
    } else if (!memcmp(cmd, "compute", 7)) {
        u32 x = 1;
        for (u32 i = 0; i < iterations; i++)
            asm volatile("addl %1, %0\n roll $3, %0" : "+r"(x) : "r"(i));
        printk("%x\n", x);
    } else if (!memcmp(cmd, "rdtsc", 5)) {
        u64 t = 0;
        for (u32 i = 0; i < iterations; i++)
            t += rdtsc();
        printk("%x %x\n", (u32)(t >> 32), (u32)t);
    } else if (!memcmp(cmd, "store", 5)) {
        volatile u32 slot = 0;
        u32 x = 1;
        for (u32 i = 0; i < iterations; i++) {
            asm volatile("addl %1, %0\n roll $3, %0" : "+r"(x) : "r"(i));
            slot = x;
        }
        printk("%x\n", slot);
    }
}

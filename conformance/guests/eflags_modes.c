/* EFLAGS a guest can never run with (tests/test_cpu_isolation.py). The command line:
 *   vm86 RING  in ring RING (1 or 3), an iret whose popped EFLAGS has VM set (and IOPL 2),
 *              to CS:IP 1001:0000 with SS:SP 1000:fffe. The processor takes VM from the image
 *              only at CPL 0 (Intel SDM, IRET): here the iret is an ordinary protected-mode
 *              return (VM ignored, IOPL unchanged), which faults on CS 0x1001. Xen never lets
 *              a PV guest run in virtual-8086 mode.
 *   io         std; a subtraction that leaves a large value in the emulator's lazy flag state;
 *              out %al,(%dx) (a #GP(0): the guest has no I/O privilege). The #GP handler
 *              prints the frame's EFLAGS and those read just before the subtraction.
 * Every fault prints "trap VECTOR eflags X" and powers off. */
#include "xenrt.h"

const char test_title[] = "EFLAGS: no virtual-8086 mode, exact flags in an I/O instruction's #GP";

static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 flags_before;

static void fault(struct trap_frame *f)
{
    printk("trap %u eflags %x before %x\n", f->vector, f->eflags, flags_before);
    xtf_success(NULL);
}

static void vm86_iret(void)
{
    asm volatile("pushl $0; pushl $0; pushl $0; pushl $0\n\t"  /* gs, fs, ds, es */
                 "pushl $0x1000; pushl $0xfffe\n\t"            /* ss, esp */
                 "pushl $0x22202\n\t"                          /* eflags: VM, IOPL 2, IF */
                 "pushl $0x1001; pushl $0\n\t"                 /* cs, eip */
                 "iret" ::: "memory");
}

static void user_vm86(void)
{
    vm86_iret();
    user_return(0);
}

static void skip_ud2(struct trap_frame *f)
{
    f->eip += 2;
}

static void io(void)
{
    /* The return from the #UD handler (an iret) leaves the emulator's flag state as a whole
     * EFLAGS, and the block after it starts with a subtraction whose source operand is
     * 0xc0023000. */
    set_trap_handler(TRAP_invalid_op, skip_ud2);
    asm volatile("std\n\t"
                 "pushf; popl %0\n\t"
                 "movl $0x80, %%edx; movl $1, %%eax; movl $0xc0023000, %%ebx\n\t"
                 "ud2\n\t"
                 "subl %%ebx, %%eax\n\t"
                 "outb %%al, (%%dx)\n\t"
                 "cld"
                 : "=m"(flags_before) : : "eax", "ebx", "edx", "cc", "memory");
}

void test_main(void)
{
    const char *cmd = (const char *)(start_info + START_INFO_cmd_line);
    set_trap_handler(TRAP_gp_fault, fault);
    set_trap_handler(TRAP_page_fault, fault);
    set_trap_handler(TRAP_invalid_op, fault);
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    if (!strcmp(cmd, "vm86 1")) {
        vm86_iret();
    } else if (!strcmp(cmd, "vm86 3")) {
        enter_user((u32)user_vm86, (u32)user_stack + sizeof(user_stack));
    } else if (!strcmp(cmd, "io")) {
        io();
    }
    printk("outcome: went on\n");
    xtf_success(NULL);
}

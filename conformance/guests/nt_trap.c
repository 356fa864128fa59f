/* Traps taken with EFLAGS.NT set, from ring 1 and from ring 3. A trap enters Xen through a
 * gate, which clears NT: Xen's return to the guest is an ordinary IRET, never a task return,
 * so the handler runs and the code carries on. (In the model the trap is taken in an emulator
 * hook with the guest's flags still live; before the substrate cleared NT, the IRET of its
 * ring-entry stub became a task return and the domain was crashed.) */
#include "xenrt.h"

const char test_title[] = "nt_trap: traps taken with NT set";

static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 int3s, syscalls;

static void on_int3(struct trap_frame *f) { (void)f; int3s++; }
static void on_syscall(struct trap_frame *f)
{
    syscalls++;
    if (f->eax == 1)
        user_return(0);
}

static void user_with_nt(void)
{
    asm volatile("pushf; orl %0, (%%esp); popf; movl $2, %%eax; int $0x80;"
                 "pushf; andl %1, (%%esp); popf; movl $1, %%eax; int $0x80"
                 :: "i"(X86_EFLAGS_NT), "i"(~X86_EFLAGS_NT) : "eax", "memory", "cc");
}

void test_main(void)
{
    set_trap_handler(TRAP_int3, on_int3);
    asm volatile("pushf; orl %0, (%%esp); popf; int3; pushf; andl %1, (%%esp); popf"
                 :: "i"(X86_EFLAGS_NT), "i"(~X86_EFLAGS_NT) : "memory", "cc");
    check(int3s == 1, "int3 in ring 1 with NT set: %u traps", int3s);

    set_trap_handler(SYSCALL_VECTOR, on_syscall);
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    int rc = enter_user((u32)user_with_nt, (u32)user_stack + sizeof(user_stack));
    check(rc == 0 && syscalls == 2, "int $0x80 from ring 3 with NT set: rc %d, %u calls",
          rc, syscalls);
}

/* SYSENTER and SYSCALL from the guest kernel, and a trap taken with EFLAGS.NT set.
 * On Xen 3.0.4 x86_32 the SYSENTER_CS MSR is never set for guests (only for the
 * supervisor_mode_kernel build), so SYSENTER raises #GP(0), reflected at the instruction;
 * SYSCALL outside 64-bit mode is #UD on the Intel processor the model reports. A trap taken
 * with NT set enters Xen through a gate, which clears NT: Xen's return to the guest is an
 * ordinary IRET, never a task return, so the handler runs and the kernel carries on. (On
 * the compat-pae profile SYSENTER goes to the registered sysenter callback: XTF's xsa-339
 * test and tests/test_guests.py check that path.) */
#include "xenrt.h"

const char test_title[] = "fastcall: sysenter, syscall, a trap with NT set";

static volatile u32 int3s;
static void on_int3(struct trap_frame *f) { (void)f; int3s++; }

static u32 probe(int which)
{
    u32 r = 0;
    if (which == 0)
        asm volatile("1: sysenter\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                     : "+a"(r) :: "ecx", "edx", "memory");
    else
        asm volatile("1: syscall\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                     : "+a"(r) :: "ecx", "edx", "memory");
    return r;
}

void test_main(void)
{
#ifndef PAE_ONLY
    u32 r = probe(0);
    check(r == (FAULT_FLAG | TRAP_gp_fault), "sysenter: %x", r);
    check(last_trap.error_code == 0, "sysenter: error code %x", last_trap.error_code);
#endif
    u32 s = probe(1);
    check(s == (FAULT_FLAG | TRAP_invalid_op), "syscall: %x", s);

    set_trap_handler(TRAP_int3, on_int3);
    asm volatile("pushf; orl %0, (%%esp); popf; int3; pushf; andl %1, (%%esp); popf"
                 :: "i"(X86_EFLAGS_NT), "i"(~X86_EFLAGS_NT) : "memory", "cc");
    check(int3s == 1, "int3 with NT set: %u traps", int3s);
}

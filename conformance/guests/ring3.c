/* Ring 3: stack_switch, entering user mode through the iret hypercall, int $0x80 system calls
 * through Xen's direct trap gate (DPL 3, events not masked: the processor's frame), faults
 * from ring 3 on the kernel stack, hypercalls from ring 3 refused. */
#include "xenrt.h"

const char test_title[] = "ring 3: stack_switch, int 0x80, iret, faults from user mode";

static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 saw_cs, saw_ss, saw_esp, syscalls, user_pf_ec, user_gp_ec;
static volatile u32 user_value;
static volatile u32 probe_cs, probe_eflags, probe_mask;

enum { SYS_exit = 1, SYS_write = 2, SYS_getpid = 3, SYS_mask = 4, SYS_probe = 5 };

static void do_syscall(struct trap_frame *f)
{
    syscalls++;
    saw_cs = f->cs;
    saw_ss = f->ss;
    saw_esp = f->esp;
    switch (f->eax) {
    case SYS_write: HYPERVISOR_console_io(CONSOLEIO_write, f->edx, (void *)f->ecx);
                    f->eax = f->edx; break;
    case SYS_getpid: f->eax = 42; break;
    /* Back to ring 3 with events masked: IF clear in the frame, so the return is the iret
     * hypercall, which sets the mask from it. */
    case SYS_mask: f->eflags &= ~X86_EFLAGS_IF; f->eax = 0; break;
    case SYS_probe: probe_cs = f->cs; probe_eflags = f->eflags;
                    probe_mask = vcpu0_info()[VCPU_INFO_evtchn_upcall_mask]; f->eax = 0; break;
    case SYS_exit: user_return((int)f->ebx);
    default: f->eax = (u32)-ENOSYS;
    }
}

static void user_fault(struct trap_frame *f)
{
    if ((f->cs & 3) != 3)
        panic("fault %u in the kernel at %x", f->vector, f->eip);
    if (f->vector == TRAP_page_fault)
        user_pf_ec = f->error_code;
    else
        user_gp_ec = f->error_code;
    user_return(-(int)f->vector);
}

static inline u32 sys(u32 nr, u32 a, u32 b, u32 c)
{
    u32 r;
    asm volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

static void user_hello(void)
{
    static const char msg[] = "hello from ring 3\n";
    u32 cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    sys(SYS_write, 1, (u32)msg, sizeof(msg) - 1);
    user_value = sys(SYS_getpid, 0, 0, 0) + (cs & 3);
    sys(SYS_exit, 7, 0, 0);
}

static void user_masked(void)
{
    sys(SYS_mask, 0, 0, 0);
    sys(SYS_probe, 0, 0, 0);
    sys(SYS_exit, 8, 0, 0);
}

static void user_hypercall(void)
{
    long rc;
    asm volatile("int $0x82" : "=a"(rc) : "a"(__HYPERVISOR_xen_version), "b"(0), "c"(0));
    sys(SYS_exit, 99, 0, 0);      /* not reached: ring 3 may not make hypercalls */
}

static volatile u32 *kernel_only;

static void user_touch_kernel(void)
{
    user_value = *kernel_only;
    sys(SYS_exit, 99, 0, 0);
}

static void user_privileged(void)
{
    asm volatile("cli");
    sys(SYS_exit, 99, 0, 0);
}

void test_main(void)
{
    set_trap_handler(SYSCALL_VECTOR, do_syscall);
    set_trap_handler(TRAP_page_fault, user_fault);
    set_trap_handler(TRAP_gp_fault, user_fault);
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    u32 user_sp = (u32)user_stack + sizeof(user_stack);

    int rc = enter_user((u32)user_hello, user_sp);
    check(rc == 7, "exit code %d", rc);
    check(user_value == 45, "getpid + CPL = %u", user_value);
    check(syscalls == 3, "%u system calls", syscalls);
    check((saw_cs & 0xffff) == FLAT_USER_CS, "frame cs %x", saw_cs);
    check(saw_ss == FLAT_USER_SS, "frame ss %x", saw_ss);
    check(saw_esp > (u32)user_stack && saw_esp <= user_sp, "frame esp %x", saw_esp);

    /* The direct gate's frame is the processor's: with events masked in ring 3 a Xen bounce
     * would clear IF in the saved EFLAGS (and put the mask in CS bits 16-23, which processors
     * may leave as they were); the gate pushes the real EFLAGS, IF set, and does not touch
     * the mask (x86_32/traps.c, init_int80_direct_trap). */
    rc = enter_user((u32)user_masked, user_sp);
    check(rc == 8, "exit code %d", rc);
    check(probe_mask == 1, "events masked in the handler: %u", probe_mask);
    check((probe_cs & 0xffff) == FLAT_USER_CS, "frame cs %x", probe_cs);
    check(probe_eflags & X86_EFLAGS_IF, "frame eflags %x", probe_eflags);
    vcpu0_info()[VCPU_INFO_evtchn_upcall_mask] = 0;

    rc = enter_user((u32)user_hypercall, user_sp);
    check(rc == -TRAP_gp_fault, "hypercall from ring 3: %d", rc);
    check(user_gp_ec == ((HYPERCALL_VECTOR << 3) | 2), "its #GP error code %x", user_gp_ec);

    rc = enter_user((u32)user_privileged, user_sp);
    check(rc == -TRAP_gp_fault, "cli from ring 3: %d", rc);

    /* A supervisor-only mapping of a scratch page: ring 3 faults with U/S set. */
    u32 *page = alloc_scratch_page();
    u32 va = (u32)page;
    u32 pte = virt_to_pte(va);
    check(HYPERVISOR_update_va_mapping(va, (pte & ~_PAGE_USER) | _PAGE_PRESENT, UVMF_INVLPG) == 0,
          "make a page supervisor-only");
    kernel_only = page;
    rc = enter_user((u32)user_touch_kernel, user_sp);
    check(rc == -TRAP_page_fault, "user read of a kernel page: %d", rc);
    check(user_pf_ec == (PFEC_page_present | PFEC_user_mode), "error code %x", user_pf_ec);

    /* After all that, ring 1 is still ring 1 and the kernel stack is the boot one. */
    u32 cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    check(cs == FLAT_KERNEL_CS, "back in ring 1: cs %x", cs);
}

/* multicall, callback_op, vcpu_op and RDMSR of DEBUGCTL as Xen 3.0.4 answers them
 * (common/multicall.c do_multicall; x86_32/traps.c do_callback_op; common/domain.c
 * do_vcpu_op; traps.c emulate_privileged_op). A multicall writes each entry's result back,
 * refuses a nested multicall (-EINVAL in that entry), answers -EFAULT for a list it cannot
 * read, and is continued, by the guest's re-executed int $0x82, between entries and inside
 * an entry whose own call was preempted. */
#include "xenrt.h"

const char test_title[] = "multicall, callback_op, vcpu_op";

extern char event_entry[], failsafe_entry[];

struct multicall_entry { u32 op, result, args[6]; };
struct callback_register { u16 type, flags; u32 cs, eip; };
struct callback_unregister { u16 type, unused; };
struct mmu_update { u64 ptr, val; };
struct runstate { u32 state; u32 entry_lo, entry_hi; u32 time[8]; };

#define LONG_BATCH 600  /* more than the model's preemption budget (256) twice over */
#define UNWRITTEN 0x12345678u

static struct multicall_entry calls[LONG_BATCH];
static struct mmu_update reqs[LONG_BATCH];

static void set_call(struct multicall_entry *e, u32 op, u32 a0, u32 a1, u32 a2, u32 a3)
{
    e->op = op;
    e->result = UNWRITTEN;
    e->args[0] = a0; e->args[1] = a1; e->args[2] = a2; e->args[3] = a3;
    e->args[4] = e->args[5] = 0;
}

static long reg(u16 type, u16 flags, u32 eip)
{
    struct callback_register r = { type, flags, FLAT_KERNEL_CS, eip };
    return HYPERVISOR_callback_op(CALLBACKOP_register, &r);
}

static long unreg(u16 type)
{
    struct callback_unregister u = { type, 0 };
    return HYPERVISOR_callback_op(CALLBACKOP_unregister, &u);
}

static void callbacks(void)
{
    /* The event callback registered through callback_op alone: an IPI reaches it. */
    check(reg(CALLBACKTYPE_event, 0, (u32)event_entry) == 0, "register the event callback");
    check(reg(CALLBACKTYPE_failsafe, CALLBACKF_mask_events, (u32)failsafe_entry) == 0,
          "register the failsafe callback");
    events_mask_upcalls(0);
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi: %d", (int)p);
    u32 before = event_stats.upcalls;
    check(evtchn_send(p) == 0, "send on the IPI port");
    check(event_stats.upcalls == before + 1, "one upcall through the callback_op callback");

    check(reg(CALLBACKTYPE_syscall, 0, (u32)event_entry) == -ENOSYS, "syscall: x86_64 only");
    check(reg(CALLBACKTYPE_sysenter, 0, (u32)event_entry) == -ENOSYS,
          "sysenter: only with supervisor_mode_kernel");
    check(reg(0x55, 0, (u32)event_entry) == -ENOSYS, "unknown type");
    check(unreg(CALLBACKTYPE_event) == -EINVAL, "the event callback stays");
    check(unreg(CALLBACKTYPE_failsafe) == -EINVAL, "the failsafe callback stays");
    struct callback_unregister u = { CALLBACKTYPE_event, 0 };
    check(HYPERVISOR_callback_op(2, &u) == -ENOSYS, "unknown command");
    check(HYPERVISOR_callback_op(CALLBACKOP_register, (void *)HYPERVISOR_VIRT_START) == -EFAULT,
          "argument in the hole");

    before = event_stats.upcalls;
    check(evtchn_send(p) == 0, "send again");
    check(event_stats.upcalls == before + 1, "the refused calls left the callback in place");
    check(evtchn_close(p) == 0, "close");
}

static void results(void)
{
    long version = HYPERVISOR_xen_version(XENVER_version, NULL);
    u32 *page = alloc_scratch_page();
    u32 va = (u32)page, pte = virt_to_pte(va);
    set_call(&calls[0], __HYPERVISOR_xen_version, XENVER_version, 0, 0, 0);
    set_call(&calls[1], __HYPERVISOR_update_va_mapping, va, pte & ~_PAGE_RW, 0, UVMF_INVLPG);
    set_call(&calls[2], __HYPERVISOR_update_va_mapping, HYPERVISOR_VIRT_START, 0, 0, 0);
    set_call(&calls[3], NR_hypercalls, 0, 0, 0, 0);
    set_call(&calls[4], __HYPERVISOR_multicall, (u32)calls, 1, 0, 0);
    set_call(&calls[5], __HYPERVISOR_update_va_mapping, va, pte, 0, UVMF_INVLPG);
    long rc = HYPERVISOR_multicall(calls, 6);
    check(rc == 0, "multicall: %d", (int)rc);
    long want[6] = { version, 0, -EINVAL, -ENOSYS, -EINVAL, 0 };
    for (int i = 0; i < 6; i++)
        check((long)calls[i].result == want[i], "entry %d: result %d, expected %d", i,
              (int)calls[i].result, (int)want[i]);
    check(virt_to_pte(va) == pte, "the page mapped as before: %x", virt_to_pte(va));

    check(HYPERVISOR_multicall((void *)HYPERVISOR_VIRT_START, 1) == -EFAULT, "list in the hole");
    check(HYPERVISOR_multicall((void *)0x1000, 1) == -EFAULT, "unmapped list");
    set_call(&calls[0], __HYPERVISOR_xen_version, XENVER_version, 0, 0, 0);
    check(HYPERVISOR_multicall(calls, 0) == 0 && calls[0].result == UNWRITTEN, "empty batch");
}

static void preemption(void)
{
    long version = HYPERVISOR_xen_version(XENVER_version, NULL);
    for (int i = 0; i < LONG_BATCH; i++)
        set_call(&calls[i], __HYPERVISOR_xen_version, XENVER_version, 0, 0, 0);
    check(HYPERVISOR_multicall(calls, LONG_BATCH) == 0, "long batch");
    int bad = 0;
    for (int i = 0; i < LONG_BATCH; i++)
        bad += (long)calls[i].result != version;
    check(bad == 0, "long batch: %d results wrong", bad);

    /* An mmu_update of LONG_BATCH M2P updates in the batch: preempted inside the entry. */
    u32 mfn = virt_to_mfn(alloc_scratch_page());
    u32 pfn = ((volatile u32 *)MACH2PHYS_VIRT_START)[mfn];
    for (int i = 0; i < LONG_BATCH; i++) {
        reqs[i].ptr = ((u64)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
        reqs[i].val = pfn;
    }
    u32 done = 0;
    set_call(&calls[0], __HYPERVISOR_mmu_update, (u32)reqs, LONG_BATCH, (u32)&done, DOMID_SELF);
    set_call(&calls[1], __HYPERVISOR_xen_version, XENVER_version, 0, 0, 0);
    check(HYPERVISOR_multicall(calls, 2) == 0, "batch with a long mmu_update");
    check(calls[0].result == 0 && done == LONG_BATCH, "mmu_update: result %d, done %u",
          (int)calls[0].result, done);
    check((long)calls[1].result == version, "the entry after it: %d", (int)calls[1].result);
}

static void vcpus(void)
{
    u8 ctx[SIZEOF_VCPU_GUEST_CONTEXT];
    memset(ctx, 0, sizeof(ctx));
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, NULL) == 1, "vCPU 0 is up");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 0, NULL) == 0, "up of a running vCPU");
    check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 0, ctx) == -EEXIST, "vCPU 0 is initialised");
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL) == -ENOENT, "no vCPU 1");
    check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == -ENOENT, "initialise vCPU 1");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, MAX_VIRT_CPUS, NULL) == -EINVAL, "vCPU id too big");
    struct runstate rs;
    memset(&rs, 0xff, sizeof(rs));
    check(HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 0, &rs) == 0, "get_runstate_info");
    check(rs.state == RUNSTATE_running, "running: state %u", rs.state);
    check(rs.time[0] | rs.time[1], "some run time");
}

void test_main(void)
{
    callbacks();
    results();
    preemption();
    vcpus();
    u32 lo, hi;
    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x1d9));
    check(lo == 0 && hi == 0, "DEBUGCTL %x:%x", hi, lo);
}

/* The failsafe callback: Xen reloads DS, ES, FS and GS on every return to the guest
 * (x86_32/entry.S, restore_all_guest); when a load faults, or its iret to the guest does, it
 * bounces to the failsafe callback with DS, ES, FS, GS below EIP, CS, EFLAGS and zeroes the
 * four selectors (create_bounce_frame, TBF_FAILSAFE). Without a callback the domain crashes:
 * "nocallback" on the command line tests that. */
#include "xenrt.h"

const char test_title[] = "failsafe callback: segment reload on return to the guest";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0x200)
#define DPL(n) ((u32)(n) << 13)
#define LDT_SEL0 (4 | 1)

extern char event_entry[], fs_entry[];
volatile u32 fs_frame[9], fs_count, fs_resume, fs_saved_esp;
static u8 trap_stack[8192] __attribute__((aligned(16)));

/* The callback: record the frame, put the kernel's data segments back, drop the four
 * selectors and return through the iret hypercall (to fs_resume instead, if set; the
 * hypercall page's iret entry pushes %eax itself). */
asm(".globl fs_entry\n"
    "fs_entry:\n"
    "    pushl %eax\n"
    "    movl $" XSTR(FLAT_KERNEL_DS) ", %eax\n"
    "    movl %eax, %ds\n"
    "    movl %eax, %es\n"
    "    movl 4(%esp), %eax\n  movl %eax, fs_frame\n"
    "    movl 8(%esp), %eax\n  movl %eax, fs_frame+4\n"
    "    movl 12(%esp), %eax\n movl %eax, fs_frame+8\n"
    "    movl 16(%esp), %eax\n movl %eax, fs_frame+12\n"
    "    movl 20(%esp), %eax\n movl %eax, fs_frame+16\n"
    "    movl 24(%esp), %eax\n movl %eax, fs_frame+20\n"
    "    movl 28(%esp), %eax\n movl %eax, fs_frame+24\n"
    "    movl 32(%esp), %eax\n movl %eax, fs_frame+28\n"   /* ESP, SS: from ring 3 only */
    "    movl 36(%esp), %eax\n movl %eax, fs_frame+32\n"
    "    incl fs_count\n"
    "    movl fs_resume, %eax\n"
    "    testl %eax, %eax\n"
    "    jz 1f\n"
    "    movl %eax, 20(%esp)\n"
    "    movl $" XSTR(FLAT_KERNEL_CS) ", 24(%esp)\n"
    "    movl $0, fs_resume\n"
    "1:  popl %eax\n"
    "    addl $16, %esp\n"
    "    jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE) "\n");

static u32 make_readonly(u32 *page)
{
    u32 va = (u32)page;
    if (HYPERVISOR_update_va_mapping(va, virt_to_pte(va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot remap %x read-only", va);
    return virt_to_mfn(page);
}

static u32 get_es(void) { u32 r; asm volatile("mov %%es, %0" : "=r"(r)); return r & 0xffff; }
static u32 get_fs(void) { u32 r; asm volatile("mov %%fs, %0" : "=r"(r)); return r & 0xffff; }
static u32 get_gs(void) { u32 r; asm volatile("mov %%gs, %0" : "=r"(r)); return r & 0xffff; }
static void load_fs_gs(u32 fs, u32 gs) { asm volatile("mov %0, %%fs\n mov %1, %%gs" :: "r"(fs), "r"(gs)); }

/* The frame the last failsafe entry recorded, against what it should hold. */
static void check_frame(const char *what, u32 before, const u32 sel[4], u32 eip_lo, u32 eip_hi,
                        u32 cs)
{
    check(fs_count == before + 1, "%s: failsafe entered %u times", what, fs_count - before);
    for (int i = 0; i < 4; i++)
        check(fs_frame[i] == sel[i], "%s: frame word %d (%s) %x, expected %x", what, i,
              (const char *[]){"ds", "es", "fs", "gs"}[i], fs_frame[i], sel[i]);
    check(fs_frame[4] >= eip_lo && fs_frame[4] < eip_hi, "%s: eip %x", what, fs_frame[4]);
    u32 mask = vcpu0_info()[VCPU_INFO_evtchn_upcall_mask];
    check((fs_frame[5] & 0xffff) == cs, "%s: cs %x", what, fs_frame[5]);
    check(((fs_frame[5] >> 16) & 0xff) == mask, "%s: saved mask in cs %x", what, fs_frame[5]);
    check(!(fs_frame[6] & X86_EFLAGS_IF) == !!mask, "%s: eflags %x", what, fs_frame[6]);
    check(get_fs() == 0 && get_gs() == 0, "%s: fs %x gs %x zeroed", what, get_fs(), get_gs());
}

static u32 stub(u32 nr) { return (u32)hypercall_page + nr * HYPERCALL_STUB_SIZE; }

/* The iret hypercall to cs:1f in ring 1 (eax 0x1234, events stay masked). */
static u32 iret_to(u32 cs)
{
    u32 r;
    asm volatile("movl $1f, fs_resume\n"
                 "pushl $" XSTR(X86_EFLAGS_MBS) "\n"
                 "pushl %1\n"
                 "pushl $1f\n"
                 "movl $0x1234, %%eax\n"
                 "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE) "\n"
                 "1:\n"
                 : "=a"(r) : "r"(cs) : "memory");
    return r;
}

/* The iret hypercall to ring 3 with stack segment ss, which the CPU refuses: the failsafe
 * frame comes on the kernel stack with ESP and SS; resume on the kernel's own stack. */
static u32 iret_to_user(u32 ss)
{
    u32 r;
    asm volatile("pushl %%ebp\n"
                 "movl %%esp, fs_saved_esp\n"
                 "movl $2f, fs_resume\n"
                 "pushl %%ecx\n"
                 "pushl $0x7ff0\n"
                 "pushl $" XSTR(X86_EFLAGS_MBS) "\n"
                 "pushl $" XSTR(FLAT_USER_CS) "\n"
                 "pushl $1f\n"
                 "movl $0x4321, %%eax\n"
                 "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE) "\n"
                 "1: jmp 1b\n"
                 "2: movl fs_saved_esp, %%esp\n"
                 "popl %%ebp\n"
                 : "=a"(r) : "c"(ss) : "memory", "edx", "ebx", "esi", "edi");
    return r;
}

void test_main(void)
{
    static u32 buf[4] = { 0x5a5a5a5a };
    int no_callback = !strcmp((const char *)start_info + START_INFO_cmd_line, "nocallback");
    check(HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, (u32)event_entry, FLAT_KERNEL_CS,
                                   no_callback ? 0 : (u32)fs_entry) == 0, "set_callbacks");

    /* A GDT with a data segment (1), a code segment (2), and a not-present code segment (3). */
    u32 *gdt = alloc_scratch_page();
    set_desc(gdt, 1, mkdesc((u32)buf, 0xfff, DATA_RW | DPL(1)));
    set_desc(gdt, 2, mkdesc(0, 0xfffff, _SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0xA00
                       | DPL(1)));
    set_desc(gdt, 3, mkdesc(0, 0xfffff, _SEGMENT_S | _SEGMENT_DB | _SEGMENT_G | 0xA00 | DPL(1)));
    u32 frame = make_readonly(gdt);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    u32 sel1 = (1 << 3) | 1;

    /* update_descriptor clears the descriptor under the live %fs and %gs. */
    load_fs_gs(sel1, sel1);
    u32 before = fs_count;
    u64 ma = ((u64)frame << PAGE_SHIFT) + 1 * 8;
    long rc = HYPERVISOR_update_descriptor(ma, 0);
    if (no_callback)
        panic("the domain survived a failed segment reload without a failsafe callback");
    check(rc == 0, "update_descriptor returned %d", (int)rc);
    u32 sels[4] = { FLAT_KERNEL_DS, FLAT_KERNEL_DS, sel1, sel1 };
    check_frame("update_descriptor", before, sels, stub(__HYPERVISOR_update_descriptor),
                stub(__HYPERVISOR_update_descriptor + 1), FLAT_KERNEL_CS);
    check(get_es() == FLAT_KERNEL_DS, "es restored by the callback: %x", get_es());

    /* A valid selector survives every return; a DPL 1 one is loaded again after a change. */
    check(HYPERVISOR_update_descriptor(ma, mkdesc((u32)buf, 0xfff, DATA_RW | DPL(1))) == 0,
          "descriptor back");
    load_fs_gs(sel1, 0);
    before = fs_count;
    check(HYPERVISOR_update_descriptor(ma, mkdesc((u32)buf + 4, 0xfff, DATA_RW | DPL(1))) == 0,
          "descriptor moved");
    u32 v;
    asm volatile("movl %%fs:0, %0" : "=r"(v));
    check(fs_count == before && v == buf[1], "%%fs reloaded with the new base: %x", v);

    /* set_ldt(0, 0) under a live LDT selector in %es. */
    u32 *ldt = alloc_scratch_page();
    set_desc(ldt, 0, mkdesc((u32)buf, 0xfff, DATA_RW | DPL(1)));
    make_readonly(ldt);
    check(set_ldt((u32)ldt, 1) == 0, "set_ldt");
    u32 lsel = 4 | 1;
    asm volatile("mov %0, %%es" :: "r"(lsel));
    load_fs_gs(0, 0);
    before = fs_count;
    check(set_ldt(0, 0) == 0, "set_ldt to no LDT");
    u32 sels2[4] = { FLAT_KERNEL_DS, lsel, 0, 0 };
    check_frame("set_ldt", before, sels2, stub(__HYPERVISOR_mmuext_op),
                stub(__HYPERVISOR_mmuext_op + 1), FLAT_KERNEL_CS);

    /* The LDT page unmapped under a live LDT selector in %gs: the lazy mapping fails. */
    check(set_ldt((u32)ldt, 1) == 0, "set_ldt again");
    load_fs_gs(0, lsel);
    before = fs_count;
    check(HYPERVISOR_update_va_mapping((u32)ldt, 0, UVMF_INVLPG) == 0, "unmap the LDT page");
    u32 sels3[4] = { FLAT_KERNEL_DS, FLAT_KERNEL_DS, 0, lsel };
    check_frame("LDT page unmapped", before, sels3, stub(__HYPERVISOR_update_va_mapping),
                stub(__HYPERVISOR_update_va_mapping + 1), FLAT_KERNEL_CS);

    /* The LDT shrunk under a live selector of an entry beyond the new limit: the descriptor
     * read of the reload is beyond the LDT limit (a #GP at CPL 0): failsafe. */
    u32 *ldt2 = alloc_scratch_page();
    set_desc(ldt2, 0, mkdesc((u32)buf, 0xfff, DATA_RW | DPL(1)));
    set_desc(ldt2, 1, mkdesc((u32)buf, 0xfff, DATA_RW | DPL(1)));
    make_readonly(ldt2);
    check(set_ldt((u32)ldt2, 2) == 0, "set_ldt of two entries");
    u32 lsel1 = (1 << 3) | 4 | 1;
    load_fs_gs(0, lsel1);
    before = fs_count;
    check(set_ldt((u32)ldt2, 1) == 0, "set_ldt of one entry");
    u32 sels5[4] = { FLAT_KERNEL_DS, FLAT_KERNEL_DS, 0, lsel1 };
    check_frame("LDT shrunk under %gs", before, sels5, stub(__HYPERVISOR_mmuext_op),
                stub(__HYPERVISOR_mmuext_op + 1), FLAT_KERNEL_CS);
    load_fs_gs(0, LDT_SEL0);
    before = fs_count;
    check(set_ldt((u32)ldt2, 1) == 0 && fs_count == before,
          "the last entry within the limit reloads");
    load_fs_gs(0, 0);
    check(set_ldt(0, 0) == 0, "set_ldt to no LDT");

    /* The iret hypercall to a code segment: a good one, then a not-present one (Xen's own
     * iret faults: failsafe, with the frame it was returning with). */
    u32 cs2 = (2 << 3) | 1, cs3 = (3 << 3) | 1;
    before = fs_count;
    check(iret_to(cs2) == 0x1234 && fs_count == before, "iret to a guest code segment");
    asm volatile("ljmp %0, $1f\n1:" :: "i"(FLAT_KERNEL_CS));
    u32 sels4[4] = { FLAT_KERNEL_DS, FLAT_KERNEL_DS, 0, 0 };
    rc = iret_to(cs3);
    check(rc == 0x1234, "eax through the failsafe callback: %x", (u32)rc);
    check_frame("iret to a not-present CS", before, sels4, 0, 0xffffffff, cs3);
    check(!(gdt[2 * 3 + 1] & _SEGMENT_ACCESSED),
          "the not-present code segment's accessed bit was set: %x", gdt[2 * 3 + 1]);

    /* The iret hypercall to ring 3 with a DPL 1 stack segment: the frame goes on the
     * stack_switch stack, with ESP and SS above it, and %ds still the kernel's (Xen's iret
     * never got to null it). */
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    before = fs_count;
    rc = iret_to_user(sel1 | 3);
    check(rc == 0x4321, "eax through the failsafe callback: %x", (u32)rc);
    check_frame("iret to ring 3 with a DPL 1 SS", before, sels4, 0, 0xffffffff, FLAT_USER_CS);
    check(fs_frame[7] == 0x7ff0 && fs_frame[8] == (sel1 | 3), "esp %x ss %x in the frame",
          fs_frame[7], fs_frame[8]);
}

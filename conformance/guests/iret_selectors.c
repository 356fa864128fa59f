/* The iret hypercall with a frame naming a selector the CPU may refuse for the guest's ring.
 *
 * Xen 3.0.4's do_iret (x86_32/traps.c) crashes the domain for a CS with RPL 0 and checks
 * nothing else: its return path's own iret (x86_32/entry.S, restore_all_guest, FLT5) loads CS
 * and, to ring 3, SS, and when the CPU refuses one (a data segment as CS, a DPL that is not
 * the RPL, a null or code segment as SS, Xen's own ring-0 descriptors) FIX5 sends the guest
 * to its failsafe callback with the frame it was returning with (create_bounce_frame,
 * TBF_FAILSAFE). Either way the guest never runs at ring 0.
 *
 * The command line is "CS" (an iret to ring 1, or to the ring of CS's RPL) or "CS:SS" (to an
 * outer ring, with that stack segment), in hex. The kernel prints "outcome: failsafe cs=..."
 * or "outcome: ran cs=...".
 *
 * "stack:SS" gives Xen SS as the kernel stack segment (stack_switch), then traps from ring 3
 * (int $0x81, a #GP that Xen bounces): Xen writes the bounce frame through %gs loaded with SS
 * at CPL 0 (create_bounce_frame, FLT6 and the writes after it), and a selector that does not
 * load or cannot be written through (null, a code segment, a DPL below its RPL) crashes the
 * domain. The kernel prints "outcome: trap" when its #GP handler runs.
 *
 * "handler:CS" names CS (its RPL raised to 1 by set_trap_table, as Xen's fixup does) as the
 * code segment of vector 0x81's handler, and the kernel takes int $0x81: Xen bounces to it
 * (create_bounce_frame) and its return path's iret loads that CS, or faults into the failsafe
 * callback as above. Wherever it runs (the failsafe callback, the iret's target) it
 * checks that it is not at CPL 0: POPF changes IOPL at CPL 0 only. If it is, it does what an
 * attacker would (clears CR0.WP and writes a hypervisor slot of its own read-only page
 * directory) so that the invariants show it, and reports the failure.
 *
 * Its own descriptors, flat, for the selectors the test names:
 *   GDT 1 (0x9)  data DPL 1   GDT 2 (0x11) code DPL 1   GDT 3 (0x19) code DPL 3
 *   GDT 4 (0x21) data DPL 3
 *   LDT 0 (0x5)  code DPL 1   LDT 1 (0xd)  data DPL 1   LDT 2 (0x15) code DPL 3
 *   LDT 3 (0x1d) data DPL 3
 */
#include "xenrt.h"

const char test_title[] = "iret hypercall: selectors the CPU refuses for the guest's ring";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0x200)
#define CODE_ER (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0xA00)
#define DPL(n) ((u32)(n) << 13)

extern char fs_entry[], ring_target[], user_target[], user_trap[], iret_resume[];
volatile u32 fs_frame[9], fs_count, fs_iopl, target_iopl, target_cs, target_count, gp_count;
volatile u32 saved_esp, iret_eip, iret_cs, iret_ss, use_int81;
static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));

/* CPL 0 is the only ring where POPF changes IOPL: %eax is X86_EFLAGS_IOPL there, else 0. The
 * caller's flags are put back. */
#define PROBE_CPL0 \
    "    pushfl\n" \
    "    pushfl\n" \
    "    orl $" XSTR(X86_EFLAGS_IOPL) ", (%esp)\n" \
    "    popfl\n" \
    "    pushfl\n" \
    "    popl %eax\n" \
    "    popfl\n" \
    "    andl $" XSTR(X86_EFLAGS_IOPL) ", %eax\n"

/* The failsafe callback: the kernel's data segments back (Xen zeroed them), the ring probe,
 * the frame (DS, ES, FS, GS, EIP, CS, EFLAGS [, ESP, SS]) recorded, then back to the kernel
 * stack the iret left from. */
asm(".globl fs_entry\n"
    "fs_entry:\n"
    "    movl $" XSTR(FLAT_KERNEL_DS) ", %eax\n"
    "    movl %eax, %ds\n"
    "    movl %eax, %es\n"
    PROBE_CPL0
    "    movl %eax, fs_iopl\n"
    "    movl %esp, %esi\n"
    "    movl $fs_frame, %edi\n"
    "    movl $9, %ecx\n"
    "    cld\n"
    "    rep movsl\n"
    "    incl fs_count\n"
    "    jmp iret_resume\n");

/* The iret's target in ring 1 (any CS the CPU accepted for it). */
asm(".globl ring_target\n"
    "ring_target:\n"
    PROBE_CPL0
    "    movl %eax, target_iopl\n"
    "    movl %cs, %eax\n"
    "    movl %eax, target_cs\n"
    "    incl target_count\n"
    "    jmp iret_resume\n");

/* The iret's target in ring 3: the same, then back to the kernel through int $0x80. */
asm(".globl user_target\n"
    "user_target:\n"
    PROBE_CPL0
    "    movl %eax, target_iopl\n"
    "    movl %cs, %eax\n"
    "    movl %eax, target_cs\n"
    "    incl target_count\n"
    "    int $0x80\n"
    "1:  jmp 1b\n");

/* Ring 3 traps to the kernel: a #GP at a vector the trap table does not give ring 3. */
asm(".globl user_trap\n"
    "user_trap:\n"
    "    int $0x81\n"
    "1:  jmp 1b\n");

/* The iret hypercall with the frame EIP, CS, EFLAGS (events masked), ESP, SS, or (use_int81)
 * int $0x81; every way back ends at iret_resume, which restores the kernel's stack and
 * segments. */
static void iret_with(u32 eip, u32 cs, u32 ss)
{
    iret_eip = eip;
    iret_cs = cs;
    iret_ss = ss;
    asm volatile("pushl %%ebp\n"
                 "movl %%esp, saved_esp\n"
                 "cmpl $0, use_int81\n"
                 "je 1f\n"
                 "int $0x81\n"
                 "jmp iret_resume\n"
                 "1:\n"
                 "pushl iret_ss\n"
                 "pushl %[esp]\n"
                 "pushl $" XSTR(X86_EFLAGS_MBS) "\n"
                 "pushl iret_cs\n"
                 "pushl iret_eip\n"
                 "movl $" XSTR(FLAT_USER_DS) ", %%eax\n"
                 "movl %%eax, %%ds\n"
                 "movl %%eax, %%es\n"
                 "xorl %%eax, %%eax\n"
                 "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE) "\n"
                 ".globl iret_resume\n"
                 "iret_resume:\n"
                 "movl $" XSTR(FLAT_KERNEL_DS) ", %%eax\n"
                 "movl %%eax, %%ds\n"
                 "movl %%eax, %%es\n"
                 "movl saved_esp, %%esp\n"
                 "popl %%ebp\n"
                 :: [esp] "i"(user_stack + sizeof(user_stack))
                 : "memory", "eax", "ebx", "ecx", "edx", "esi", "edi");
}

/* What an attacker at CPL 0 does: CR0.WP off, then a write into a hypervisor slot of the
 * guest's own (read-only) page directory. */
static void ring0_attack(void)
{
    u32 cr0;
    u32 *pd = (u32 *)si_u32(START_INFO_pt_base);
    asm volatile("mov %%cr0, %0" : "=r"(cr0));
    asm volatile("mov %0, %%cr0" :: "r"(cr0 & ~X86_CR0_WP));
    pd[L2_PAGETABLE_ENTRIES - 1] = virt_to_pte((u32)user_stack) | _PAGE_RW | _PAGE_USER;
    asm volatile("mov %0, %%cr0" :: "r"(cr0));
}

static void back_from_user(struct trap_frame *f)
{
    if (f->vector == TRAP_gp_fault)
        gp_count++;
    asm volatile("jmp iret_resume");
}

static u32 parse_hex(const char **s)
{
    u32 v = 0;
    for (;; (*s)++) {
        char c = **s;
        if (c >= '0' && c <= '9') v = v * 16 + (u32)(c - '0');
        else if (c >= 'a' && c <= 'f') v = v * 16 + (u32)(c - 'a' + 10);
        else return v;
    }
}

static u32 make_readonly(u32 *page)
{
    u32 va = (u32)page;
    if (HYPERVISOR_update_va_mapping(va, virt_to_pte(va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot remap %x read-only", va);
    return virt_to_mfn(page);
}

static void install_descriptors(void)
{
    u32 *gdt = alloc_scratch_page(), *ldt = alloc_scratch_page();
    set_desc(gdt, 1, mkdesc(0, 0xfffff, DATA_RW | DPL(1)));
    set_desc(gdt, 2, mkdesc(0, 0xfffff, CODE_ER | DPL(1)));
    set_desc(gdt, 3, mkdesc(0, 0xfffff, CODE_ER | DPL(3)));
    set_desc(gdt, 4, mkdesc(0, 0xfffff, DATA_RW | DPL(3)));
    set_desc(ldt, 0, mkdesc(0, 0xfffff, CODE_ER | DPL(1)));
    set_desc(ldt, 1, mkdesc(0, 0xfffff, DATA_RW | DPL(1)));
    set_desc(ldt, 2, mkdesc(0, 0xfffff, CODE_ER | DPL(3)));
    set_desc(ldt, 3, mkdesc(0, 0xfffff, DATA_RW | DPL(3)));
    u32 frame = make_readonly(gdt);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    make_readonly(ldt);
    check(set_ldt((u32)ldt, 4) == 0, "set_ldt");
}

void test_main(void)
{
    const char *s = (const char *)start_info + START_INFO_cmd_line;
    u32 kernel_ss = FLAT_KERNEL_SS;
    int trap_from_user = !memcmp(s, "stack:", 6);
    if (!memcmp(s, "handler:", 8)) {
        s += 8;
        u32 handler_cs = parse_hex(&s);
        struct { u8 vector, flags; u16 cs; u32 address; } t[2] = {
            { 0x81, 3, (u16)handler_cs, (u32)ring_target }, { 0, 0, 0, 0 } };
        if (*s) {
            xtf_error("command line: handler:CS in hex");
            return;
        }
        check(HYPERVISOR_set_trap_table(t) == 0, "set_trap_table");
        use_int81 = 1;
        s = "e019";
    }
    if (trap_from_user) {
        s += 6;
        kernel_ss = parse_hex(&s);
        if (*s) {
            xtf_error("command line: stack:SS in hex");
            return;
        }
        s = "e02b";
    }
    u32 cs = parse_hex(&s), ss = FLAT_USER_SS;
    if (*s == ':') {
        s++;
        ss = parse_hex(&s);
    }
    if (*s || !cs) {
        xtf_error("command line: CS or CS:SS in hex");
        return;
    }
    install_descriptors();
    check(HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, 0, FLAT_KERNEL_CS, (u32)fs_entry) == 0,
          "set_callbacks");
    check(HYPERVISOR_stack_switch(kernel_ss, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    set_trap_handler(SYSCALL_VECTOR, back_from_user);
    set_trap_handler(TRAP_gp_fault, back_from_user);

    printk("iret to %x:%x, kernel stack segment %x\n", cs, ss, kernel_ss);
    iret_with(trap_from_user ? (u32)user_trap
              : (cs & 3) == 3 ? (u32)user_target : (u32)ring_target, cs, ss);

    if (gp_count)
        printk("outcome: trap\n");
    else if (fs_count && (fs_frame[5] & 2))   /* from ring 2 or 3: ESP and SS too */
        printk("outcome: failsafe cs=%x ss=%x\n", fs_frame[5] & 0xffff, fs_frame[8] & 0xffff);
    else if (fs_count)
        printk("outcome: failsafe cs=%x\n", fs_frame[5] & 0xffff);
    else if (target_count)
        printk("outcome: ran cs=%x\n", target_cs & 0xffff);
    else
        printk("outcome: none\n");
    if (fs_iopl || target_iopl) {
        ring0_attack();
        xtf_failure("the guest ran at CPL 0 (%s)", fs_iopl ? "failsafe callback" : "target");
    }
}

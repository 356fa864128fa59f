/* The LDT: MMUEXT_SET_LDT and Xen's lazy mapping of LDT pages. A descriptor load from the LDT
 * maps the page the guest names at ldt_base + offset (mm.c, map_ldt_shadow_page: the frame is
 * typed PGT_ldt_page and its descriptors checked); if that fails the guest gets a #PF at
 * ldt_base + offset (traps.c, handle_gdt_ldt_mapping_fault). */
#include "xenrt.h"

const char test_title[] = "LDT: set_ldt, lazy mapping, #PF at ldt_base + offset";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0x200)
#define DPL(n) ((u32)(n) << 13)
#define LDT_SEL(i, rpl) (((i) << 3) | 4 | (rpl))

static long remap(void *page, u32 set_flags, u32 clear_flags)
{
    u32 va = (u32)page;
    return HYPERVISOR_update_va_mapping(va, (virt_to_pte(va) | set_flags) & ~clear_flags,
                                        UVMF_INVLPG);
}

/* Load %fs with sel and read the word at %fs:0: FAULT_FLAG | vector if the load faults. */
static u32 read_fs0(u32 sel)
{
    u32 r = 0;
    asm volatile("1: mov %1, %%fs\n movl %%fs:0, %0\n2:\n"
                 " .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                 : "+a"(r) : "r"(sel) : "memory");
    return r;
}

static u32 fs_word0(void)
{
    u32 r;
    asm volatile("movl %%fs:0, %0" : "=r"(r) :: "memory");
    return r;
}

static void clear_fs(void) { asm volatile("mov %0, %%fs" :: "r"(0)); }

/* Ring 3: a user program exits through int $0x80 with its code in %ebx. */
static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 user_gp_ec, user_pf_ec;

static void do_syscall(struct trap_frame *f) { user_return((int)f->ebx); }

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

static void user_exit(u32 code) { asm volatile("int $0x80" :: "a"(1), "b"(code) : "memory"); }

/* Loads a DPL 3 LDT selector from ring 3: the descriptor read (a supervisor access even
 * here) maps the LDT page. */
static void user_ldt(void)
{
    u32 v;
    asm volatile("mov %1, %%fs\n movl %%fs:0, %0" : "=r"(v) : "r"(LDT_SEL(2, 3)) : "memory");
    user_exit(v == 0x11111111 ? 5 : 6);
}

/* Reads the LDT area directly: Xen's segment limit makes that #GP(0). */
static void user_read_ldt_area(void)
{
    (void)*(volatile u32 *)(PERDOMAIN_VIRT_START + LDT_VIRT_OFFSET);
    user_exit(99);
}

void test_main(void)
{
    static u32 buf1[4] = { 0x11111111 }, buf2[4] = { 0x22222222 };
    u32 r;

    /* A GDT selector in a page with no frame behind it: #GP(selector), not a page fault. */
    r = read_fs0((5 << 3) | 1);
    check(r == (FAULT_FLAG | TRAP_gp_fault), "GDT entry without a frame: %x", r);
    check(last_trap.error_code == (5 << 3), "#GP error code %x", last_trap.error_code);

    /* No LDT: the LDTR is null, so any LDT selector is #GP(selector). */
    r = read_fs0(LDT_SEL(1, 1));
    check(r == (FAULT_FLAG | TRAP_gp_fault), "LDT selector without an LDT: %x", r);
    check(last_trap.error_code == LDT_SEL(1, 0), "#GP error code %x", last_trap.error_code);

    check(set_ldt(0x1001, 1) < 0, "misaligned base refused");
    check(set_ldt(0, MAX_LDT_ENTRIES + 1) < 0, "more than 8192 entries refused");
    check(set_ldt(HYPERVISOR_VIRT_START - 4096, 513) < 0, "an LDT reaching the hole refused");

    /* An LDT page mapped read-only: the first load maps it and sets the accessed bit. */
    u32 *ldt = alloc_scratch_page();
    set_desc(ldt, 1, mkdesc((u32)buf1, 0xfff, DATA_RW | DPL(1)));
    set_desc(ldt, 2, mkdesc((u32)buf1, 0xfff, DATA_RW | DPL(3)));
    check(remap(ldt, 0, _PAGE_RW) == 0, "LDT page read-only");
    check(set_ldt((u32)ldt, 3) == 0, "set_ldt");
    r = read_fs0(LDT_SEL(1, 1));
    check(r == 0x11111111, "read through an LDT selector: %x", r);
    check(ldt[3] & _SEGMENT_ACCESSED, "accessed bit set: %x", ldt[3]);
    r = read_fs0(LDT_SEL(3, 1));
    check(r == (FAULT_FLAG | TRAP_gp_fault), "beyond ents: %x", r);
    check(last_trap.error_code == LDT_SEL(3, 0), "#GP error code %x", last_trap.error_code);
    /* The mapped page holds a PGT_ldt_page type reference: it cannot become writable. */
    check(remap(ldt, _PAGE_RW, 0) < 0, "a mapped LDT page cannot be mapped writable");

    /* Another LDT with the selector still loaded: Xen reloads %fs on the way back from the
     * hypercall, from the new LDT; the old page loses its type and may be writable again. */
    u32 *ldt2 = alloc_scratch_page();
    set_desc(ldt2, 1, mkdesc((u32)buf2, 0xfff, DATA_RW | DPL(1)));
    check(remap(ldt2, 0, _PAGE_RW) == 0, "second LDT page read-only");
    check(set_ldt((u32)ldt2, 2) == 0, "set_ldt to a second LDT");
    r = fs_word0();
    check(r == 0x22222222, "%%fs reloaded from the new LDT: %x", r);
    check(remap(ldt, _PAGE_RW, 0) == 0, "the old LDT page is writable again");
    clear_fs();

    /* A page mapped writable cannot be an LDT page: #PF at ldt_base + offset with the error
     * code of the descriptor read that found the LDT area's page not present (0). */
    u32 *wr = alloc_scratch_page();
    set_desc(wr, 1, mkdesc((u32)buf1, 0xfff, DATA_RW | DPL(1)));
    check(set_ldt((u32)wr, 4) == 0, "set_ldt on a writable page (checked lazily)");
    r = read_fs0(LDT_SEL(1, 1));
    check(r == (FAULT_FLAG | TRAP_page_fault), "writable LDT page: %x", r);
    check(last_trap.cr2 == (u32)wr + 8, "cr2 %x (base %x)", last_trap.cr2, (u32)wr);
    check(last_trap.error_code == 0, "#PF error code %x", last_trap.error_code);

    /* A page holding a descriptor Xen refuses (a TSS) fails validation the same way. */
    u32 *bad = alloc_scratch_page();
    set_desc(bad, 1, mkdesc((u32)buf1, 0xfff, DATA_RW | DPL(1)));
    set_desc(bad, 300, mkdesc(0, 0x67, _SEGMENT_P | DPL(1) | 0x900));
    check(remap(bad, 0, _PAGE_RW) == 0, "bad page read-only");
    check(set_ldt((u32)bad, 400) == 0, "set_ldt on a page with a TSS");
    r = read_fs0(LDT_SEL(257, 1));
    check(r == (FAULT_FLAG | TRAP_page_fault), "LDT page with a TSS: %x", r);
    check(last_trap.cr2 == (u32)bad + 257 * 8, "cr2 %x (base %x)", last_trap.cr2, (u32)bad);

    /* An LDT page the guest does not map at all. */
    check(set_ldt(0x1000, 2) == 0, "set_ldt on an unmapped page");
    r = read_fs0(LDT_SEL(1, 1));
    check(r == (FAULT_FLAG | TRAP_page_fault), "unmapped LDT page: %x", r);
    check(last_trap.cr2 == 0x1008, "cr2 %x", last_trap.cr2);
    check(last_trap.error_code == 0, "#PF error code %x", last_trap.error_code);

    /* Back to the first LDT; unmapping its page blows the shadow LDT (put_page_from_l1e). */
    check(remap(ldt, 0, _PAGE_RW) == 0, "first LDT page read-only again");
    check(set_ldt((u32)ldt, 3) == 0, "set_ldt back to the first LDT");
    set_trap_handler(SYSCALL_VECTOR, do_syscall);
    set_trap_handler(TRAP_page_fault, user_fault);
    set_trap_handler(TRAP_gp_fault, user_fault);
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    u32 user_sp = (u32)user_stack + sizeof(user_stack);
    int rc = enter_user((u32)user_ldt, user_sp);
    clear_fs();                     /* the user's %fs came back with it */
    check(rc == 5, "ring 3 read through an LDT selector mapped on its load: %d", rc);
    rc = enter_user((u32)user_read_ldt_area, user_sp);
    check(rc == -TRAP_gp_fault && user_gp_ec == 0, "ring 3 read of the LDT area: %d (%x)", rc,
          user_gp_ec);
    set_trap_handler(TRAP_page_fault, NULL);
    set_trap_handler(TRAP_gp_fault, NULL);
    r = read_fs0(LDT_SEL(2, 3));
    check(r == 0x11111111, "read through a DPL 3 LDT selector: %x", r);
    clear_fs();
    u32 pte = virt_to_pte((u32)ldt);
    check(HYPERVISOR_update_va_mapping((u32)ldt, 0, UVMF_INVLPG) == 0, "unmap the LDT page");
    check(HYPERVISOR_update_va_mapping((u32)ldt, pte | _PAGE_RW, UVMF_INVLPG) == 0,
          "map it writable again");
    r = read_fs0(LDT_SEL(1, 1));
    check(r == (FAULT_FLAG | TRAP_page_fault), "now writable: %x", r);
    clear_fs();

    /* No entries: the LDTR is null again. */
    check(set_ldt(0, 0) == 0, "set_ldt with 0 entries");
    r = read_fs0(LDT_SEL(1, 1));
    check(r == (FAULT_FLAG | TRAP_gp_fault), "no LDT: %x", r);
}

/* Edges of the bounce into the guest (Xen 3.0.4 x86_32/entry.S create_bounce_frame, x86_32/
 * traps.c do_general_protection and init_int80_direct_trap):
 *  - the handler runs with TF, NT, RF and VM cleared in its live EFLAGS and every other flag
 *    kept (AC here); the frame holds them all as they were (with TF set, the one single
 *    step is the guest's instruction after the return). The same for the event upcall;
 *  - a software interrupt Xen bounces (int $0x20, a trap-table entry of DPL 1) carries the
 *    saved event mask in bits 16-23 of the frame's CS word; only vector 0x80 can get the
 *    direct gate, whose frame is the processor's;
 *  - the direct gate has the trap-table entry's DPL: an entry of DPL 0 makes int $0x80 from
 *    ring 1 a #GP with error code (0x80 << 3) | 2;
 *  - a bounce onto a stack segment of the guest's own GDT (writable data, base 0, DPL 1)
 *    goes through it like one onto the flat selector;
 *  - a read-only data segment, and a readable code segment, in %fs survive Xen's segment
 *    reload on the way back (restore_all_guest): a data load needs no write permission, and
 *    a code segment only its readable bit;
 *  - set_ldt drops every LDT page mapped so far (mm.c, invalidate_shadow_ldt): a descriptor
 *    of the second page of the new LDT is the new one's, never the old one's. */
#include "xenrt.h"

const char test_title[] = "bounce edges: live EFLAGS, the CS word, the int 0x80 gate's DPL, stacks";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0x200)
#define DATA_RO (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G)
#define CODE_RX (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0xA00)
#define LDT_SEL(i, rpl) (((i) << 3) | 4 | (rpl))
#define DPL(n) ((u32)(n) << 13)
#define SET_FLAGS (X86_EFLAGS_NT | X86_EFLAGS_AC)

extern char trap_entry_128[];
static volatile u32 live_eflags, frame_eflags, frame_cs, handler_ss, hits;

static u32 read_eflags(void)
{
    u32 f;
    asm volatile("pushf; popl %0" : "=r"(f));
    return f;
}

static void on_int3(struct trap_frame *f)
{
    live_eflags = read_eflags();
    frame_eflags = f->eflags;
    frame_cs = f->cs;
    u32 ss;
    asm volatile("mov %%ss, %0" : "=r"(ss));
    handler_ss = ss & 0xffff;
    hits++;
}

static void on_event(u32 port, struct trap_frame *f)
{
    live_eflags = read_eflags();
    frame_eflags = f->eflags;
    hits++;
    evtchn_clear(port);
}

static void on_gp(struct trap_frame *f)
{
    frame_cs = f->cs;
    frame_eflags = f->error_code;
    hits += 0x100;
    f->eip += 2;                    /* over the int $0x80 */
}

static void on_int80(struct trap_frame *f) { hits += 0x10000; }

/* Single steps: each #DB clears TF in the frame it returns to, so that one step is taken. */
static volatile u32 steps, step_eip;
static void on_debug(struct trap_frame *f)
{
    steps++;
    step_eip = f->eip;
    f->eflags &= ~X86_EFLAGS_TF;
}

/* Run ``int3`` with TF set: the handler must run without it (a single step in the handler
 * would be a second #DB); the one step is the instruction after int3, once the iret
 * hypercall has restored TF. */
static void int3_with_tf(void)
{
    asm volatile("pushf; orl %0, (%%esp); popf\n"
                 "int3\n"
                 ".globl after_int3\nafter_int3: nop\n"
                 "nop\n"
                 :: "i"(X86_EFLAGS_TF) : "memory", "cc");
}
extern char after_int3[], after_send[];

/* Run ``int3`` with NT and AC set, then clear them again. */
static void int3_with_flags(void)
{
    asm volatile("pushf; orl %0, (%%esp); popf\n"
                 "int3\n"
                 "pushf; andl %1, (%%esp); popf"
                 :: "i"(SET_FLAGS), "i"(~SET_FLAGS) : "memory", "cc");
}

static void live_flags(const char *what)
{
    check(hits == 1, "%s: the handler ran %u times", what, hits);
    check(!(live_eflags & X86_EFLAGS_NT), "%s: NT must be clear in the handler: %x", what,
          live_eflags);
    check(live_eflags & X86_EFLAGS_AC, "%s: AC must be kept in the handler: %x", what,
          live_eflags);
    check((frame_eflags & SET_FLAGS) == SET_FLAGS, "%s: the frame's EFLAGS %x", what,
          frame_eflags);
    check(!(read_eflags() & SET_FLAGS), "%s: NT and AC cleared again", what);
}

static u32 readonly_page(u32 *page)
{
    u32 va = (u32)page;
    if (HYPERVISOR_update_va_mapping(va, virt_to_pte(va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot remap %x read-only", va);
    return virt_to_mfn(page);
}

void test_main(void)
{
    /* 1. The live EFLAGS of an exception handler. */
    set_trap_handler(TRAP_int3, on_int3);
    int3_with_flags();
    live_flags("int3");
    hits = 0;
    set_trap_handler(TRAP_debug, on_debug);
    int3_with_tf();
    check(hits == 1, "int3 with TF: the handler ran %u times", hits);
    check(steps == 1 && step_eip == (u32)after_int3 + 1,
          "int3 with TF: %u single steps, the last at %x (expected one, at %x)", steps,
          step_eip, (u32)after_int3 + 1);
    set_trap_handler(TRAP_debug, NULL);

    /* 2. Xen's bounce of int $0x20 (DPL 1): the CS word has the saved mask (1: events are
     * masked at boot); the direct gate's frame would not. */
    hits = 0;
    set_trap_handler(32, on_int3);
    asm volatile("int $0x20" ::: "memory");
    check(hits == 1, "int $0x20 delivered %u times", hits);
    check((frame_cs & 0xffff) == FLAT_KERNEL_CS, "int $0x20 frame cs %x", frame_cs);
    check(((frame_cs >> 16) & 0xff) == 1, "int $0x20: saved mask in the CS word %x", frame_cs);
    set_trap_handler(32, NULL);

    /* 3. An int $0x80 entry of DPL 0: no gate ring 1 may use, so a #GP. */
    struct { u8 v, f; u16 cs; u32 a; } t[2] = {
        { SYSCALL_VECTOR, 0, FLAT_KERNEL_CS, (u32)trap_entry_128 }, { 0, 0, 0, 0 } };
    check(HYPERVISOR_set_trap_table(t) == 0, "set_trap_table: int $0x80 at DPL 0");
    hits = 0;
    set_trap_handler(TRAP_gp_fault, on_gp);
    set_trap_handler(SYSCALL_VECTOR, on_int80);
    asm volatile("int $0x80" ::: "memory");
    check(hits == 0x100, "int $0x80 at DPL 0 from ring 1: #GP %u times, handler %u times",
          hits & 0xff00, hits >> 16);
    check(frame_eflags == ((SYSCALL_VECTOR << 3) | 2), "its error code %x", frame_eflags);
    set_trap_handler(TRAP_gp_fault, NULL);
    set_trap_handler(SYSCALL_VECTOR, NULL);
    install_trap_table();

    /* 4. A stack segment of the guest's GDT, and a read-only data segment in %fs. */
    u32 *gdt = alloc_scratch_page();
    set_desc(gdt, 1, mkdesc(0, 0xfffff, DATA_RW | DPL(1)));
    set_desc(gdt, 2, mkdesc(0, 0xfffff, DATA_RO | DPL(1)));
    u32 frame = readonly_page(gdt);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    u32 ss1 = (1 << 3) | 1, ro = (2 << 3) | 1;
    hits = 0;
    asm volatile("mov %0, %%ss\n int3\n mov %1, %%ss"
                 :: "r"(ss1), "r"(FLAT_KERNEL_SS) : "memory");
    check(hits == 1, "int3 on the GDT's stack segment: handler ran %u times", hits);
    check(handler_ss == ss1, "the handler's stack segment %x", handler_ss);
    asm volatile("mov %0, %%fs" :: "r"(ro));
    u64 ma = ((u64)frame << PAGE_SHIFT) + 3 * 8;
    check(HYPERVISOR_update_descriptor(ma, mkdesc(0, 0xfffff, DATA_RW | DPL(1))) == 0,
          "update_descriptor of another entry");
    u32 fs;
    asm volatile("mov %%fs, %0" : "=r"(fs));
    check((fs & 0xffff) == ro, "a read-only data segment in %%fs after the reload: %x", fs);
    /* A readable code segment in %fs, its descriptor rewritten (accessed bit clear). */
    u32 rx = (4 << 3) | 1;
    u64 ma4 = ((u64)frame << PAGE_SHIFT) + 4 * 8;
    check(HYPERVISOR_update_descriptor(ma4, mkdesc(0, 0xfffff, CODE_RX | DPL(1))) == 0,
          "update_descriptor: a readable code segment");
    asm volatile("mov %0, %%fs" :: "r"(rx));
    check(HYPERVISOR_update_descriptor(ma4, mkdesc(0, 0xfffff, CODE_RX | DPL(1))) == 0,
          "update_descriptor under the live %%fs");
    asm volatile("mov %%fs, %0" : "=r"(fs));
    check((fs & 0xffff) == rx, "a readable code segment in %%fs after the reload: %x", fs);
    asm volatile("mov %0, %%fs" :: "r"(0));

    /* 6. Two LDTs of two pages each; a descriptor of the second page. */
    static volatile u32 word_a = 0xaaaa0001, word_b = 0xbbbb0002;
    u32 *a0 = alloc_scratch_page(), *a1 = alloc_scratch_page();
    u32 *b0 = alloc_scratch_page(), *b1 = alloc_scratch_page();
    check(a1 == a0 + 1024 && b1 == b0 + 1024, "scratch pages are consecutive");
    set_desc(a1, 0, mkdesc((u32)&word_a, 0xfff, DATA_RW | DPL(1)));
    set_desc(b1, 0, mkdesc((u32)&word_b, 0xfff, DATA_RW | DPL(1)));
    u32 *pages[4] = { a0, a1, b0, b1 };
    for (int i = 0; i < 4; i++)
        readonly_page(pages[i]);
    u32 sel = LDT_SEL(512, 1), w;
    check(set_ldt((u32)a0, 1024) == 0, "set_ldt A");
    asm volatile("mov %1, %%fs\n movl %%fs:0, %0\n mov %2, %%fs"
                 : "=r"(w) : "r"(sel), "r"(0) : "memory");
    check(w == word_a, "LDT A, entry 512: %x", w);
    check(set_ldt((u32)b0, 1024) == 0, "set_ldt B");
    asm volatile("mov %1, %%fs\n movl %%fs:0, %0\n mov %2, %%fs"
                 : "=r"(w) : "r"(sel), "r"(0) : "memory");
    check(w == word_b, "LDT B, entry 512: %x (LDT A's page still mapped?)", w);
    check(set_ldt(0, 0) == 0, "set_ldt none");

    /* 5. The event upcall's live EFLAGS. */
    long port = evtchn_bind_ipi(0);
    check(port > 0, "bind_ipi: %d", (int)port);
    set_event_handler(port, on_event);
    events_enable();
    hits = 0;
    asm volatile("pushf; orl %0, (%%esp); popf" :: "i"(SET_FLAGS) : "memory", "cc");
    evtchn_send(port);
    asm volatile("pushf; andl %0, (%%esp); popf" :: "i"(~SET_FLAGS) : "memory", "cc");
    live_flags("event upcall");

    /* The upcall with TF set: the send (int $0x82 itself, not the hypercall page's stub,
     * which would be stepped through) returns through the upcall, which must run without
     * TF; the one single step is the instruction after the send. */
    static struct { u32 port; } send_arg;
    send_arg.port = port;
    hits = 0;
    steps = 0;
    set_trap_handler(TRAP_debug, on_debug);
    long rc;
    asm volatile("pushf; orl %4, (%%esp); popf\n"
                 "int $0x82\n"
                 ".globl after_send\nafter_send: nop\n"
                 "nop\n"
                 : "=a"(rc)
                 : "a"(__HYPERVISOR_event_channel_op), "b"(EVTCHNOP_send), "c"(&send_arg),
                   "i"(X86_EFLAGS_TF)
                 : "memory", "cc");
    check(rc == 0, "send with TF: %d", (int)rc);
    check(hits == 1, "send with TF: the upcall ran %u times", hits);
    check(steps == 1 && step_eip == (u32)after_send + 1,
          "send with TF: %u single steps, the last at %x (expected one, at %x)", steps,
          step_eip, (u32)after_send + 1);
    set_trap_handler(TRAP_debug, NULL);
}

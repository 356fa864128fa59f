/* Code segments with a base: a ring-1 kernel may run on a GDT code segment whose base is not 0
 * (Xen 3.0's check_descriptor accepts any base below the hole), and a trap taken there must
 * reach the guest's handler like any other. The hypervisor's own way back into the guest must
 * not go through the guest's segment base: with base = T - STUB, where STUB is the address of
 * the model's ring-entry stub, a fetch through that base would run the guest's page T, and at
 * the hypervisor's privilege. Page T here records what it could read at ring 0 (CR0, CR3): it
 * must never run. That second half is a regression test of the reference model (its stub, and
 * an EIP beyond the segment's limit, which the emulator does not check and Xen's processor
 * would refuse); the model's own tests run it, the conformance suite does not. */
#include "xenrt.h"

const char test_title[] = "based code segments: traps from them, no entry through their base";

#define CODE_RX (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0xA00)
#define DPL(n) ((u32)(n) << 13)
#define STUB_VIRT 0xFEFFF000u   /* the reference model's stub page (refmodel/platform.py) */

static volatile u32 ud_seen, ud_cs;
u32 segbase_resume;             /* where the #UD handler sends the guest back, in ring 1 */
volatile u32 segbase_cr0, segbase_cr3;

static void on_ud(struct trap_frame *f)
{
    ud_seen++;
    ud_cs = f->cs & 0xffff;
    f->cs = FLAT_KERNEL_CS;
    f->eip = segbase_resume;
}

static u8 *emit(u8 *p, const u8 *b, int n)
{
    for (int i = 0; i < n; i++)
        *p++ = b[i];
    return p;
}

static u8 *emit32(u8 *p, u32 v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (u8)(v >> (8 * i));
    return p;
}

/* A read-only GDT page with a ring-1 code segment of the given base as entry 2. */
static u32 gdt_with_code_base(u32 base)
{
    u32 *gdt = alloc_scratch_page();
    set_desc(gdt, 2, mkdesc(base, 0xfffff, CODE_RX | DPL(1) | _SEGMENT_G));
    u32 va = (u32)gdt;
    if (HYPERVISOR_update_va_mapping(va, virt_to_pte(va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot make the GDT page read-only");
    return virt_to_mfn(gdt);
}

/* Jump to linear address ``target`` through selector 0x11 (GDT entry 2, RPL 1) with the iret
 * hypercall; ``ud2`` there comes back through on_ud to the label after the call. */
static void run_ud2_through_based_cs(u32 base, u32 target)
{
    asm volatile("movl $1f, segbase_resume\n"
                 "pushl $" XSTR(X86_EFLAGS_MBS) "\n"
                 "pushl $0x11\n"
                 "pushl %0\n"
                 "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE)
                 "\n1:\n"
                 : : "r"(target - base) : "eax", "memory");
}

asm(".text\n.globl segbase_ud2\nsegbase_ud2: ud2\n");   /* reached only by the jumps */
extern char segbase_ud2[];

void test_main(void)
{
    set_trap_handler(TRAP_invalid_op, on_ud);

    /* A trap from a code segment with base 0x1000. */
    u32 frame = gdt_with_code_base(0x1000);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    run_ud2_through_based_cs(0x1000, (u32)segbase_ud2);
    check(ud_seen == 1, "#UD from the based segment reached the handler (%u)", ud_seen);
    check(ud_cs == 0x11, "its frame names the based selector: %x", ud_cs);

    /* base = T - STUB_VIRT: page T would read CR0 and CR3 into memory, then spin. */
    u8 *t = (u8 *)alloc_scratch_page();
    u8 *p = t;
    p = emit(p, (const u8[]){0x0f, 0x20, 0xc0}, 3);                /* mov %cr0,%eax */
    p = emit(p, (const u8[]){0xa3}, 1);
    p = emit32(p, (u32)&segbase_cr0);                               /* mov %eax,cr0 */
    p = emit(p, (const u8[]){0x0f, 0x20, 0xd8}, 3);                /* mov %cr3,%eax */
    p = emit(p, (const u8[]){0xa3}, 1);
    p = emit32(p, (u32)&segbase_cr3);
    emit(p, (const u8[]){0xeb, 0xfe}, 2);                           /* jmp . */
    u32 base = (u32)t - STUB_VIRT;
    frame = gdt_with_code_base(base);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt with base %x", base);
    run_ud2_through_based_cs(base, (u32)segbase_ud2);
    check(ud_seen == 2, "#UD from the second segment reached the handler (%u)", ud_seen);
    check(segbase_cr0 == 0 && segbase_cr3 == 0,
          "guest bytes ran at ring 0: CR0 %x, CR3 %x", segbase_cr0, segbase_cr3);
}

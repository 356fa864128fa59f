/* Stale translations and the flushes Xen owes a guest (Xen 3.0.4, x86/mm.c):
 *  - MMUEXT_TLB_FLUSH_LOCAL is deferred to the end of the batch (do_mmuext_op: DOP_FLUSH_TLB,
 *    process_deferred_ops) and then done: an address whose entry mmu_update changed (which
 *    flushes nothing) translates afresh;
 *  - update_va_mapping with UVMF_TLB_FLUSH flushes the whole TLB, not only the address it
 *    updates (do_update_va_mapping: local_flush_tlb for UVMF_TLB_FLUSH | UVMF_LOCAL);
 *  - a frame changing type flushes its owner's TLBs (get_page_type: tlbflush_filter on the
 *    owner's dirty CPU mask, then flush_tlb_mask), so a writable translation the guest left in
 *    its TLB (an entry cleared with UVMF_NONE) cannot write the frame once it is a page table;
 *  - a read-only mapping of a frame that is not an LDT page going away leaves the shadow LDT
 *    alone (put_page_from_l1e blows it only for a PGT_ldt_page frame): the LDT page mapped on a
 *    descriptor load keeps its type reference, so it still cannot be mapped writable.
 * Each check asks for the translation after the flush only; what a TLB holds before a flush
 * is never asserted (a processor may drop an entry at any time). */
#include "xenrt.h"

const char test_title[] = "TLB flushes and the shadow LDT across page-table changes";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0x200)
#define LDT_SEL(i, rpl) (((i) << 3) | 4 | (rpl))

struct mmu_update { u64 ptr, val; };

static volatile u32 *page;   /* a kernel page whose entry the tests rewrite */
static u32 orig_pte;

static void map(u32 mfn, u32 flags, u32 uvmf)
{
    u32 pte = mfn ? (mfn << PAGE_SHIFT) | flags : 0;
    if (HYPERVISOR_update_va_mapping((u32)page, pte, uvmf))
        panic("update_va_mapping(%x, %x, %x)", (u32)page, pte, uvmf);
}

static void restore(void)
{
    if (HYPERVISOR_update_va_mapping((u32)page, orig_pte, UVMF_INVLPG))
        panic("restore the page's entry");
}

/* Rewrite the page's L1 entry with mmu_update: no flush. */
static void rewrite_entry(u32 mfn)
{
    struct mmu_update u = { virt_to_pte_maddr((u32)page), (mfn << PAGE_SHIFT) | _PAGE_PRESENT
                            | _PAGE_RW };
    if (HYPERVISOR_mmu_update(&u, 1, NULL, DOMID_SELF))
        panic("mmu_update of the page's entry");
}

static long mmuext(u32 cmd, u32 arg1)
{
    struct mmuext_op op = { cmd, arg1, 0 };
    return HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

/* A fresh frame of the domain holding ``word`` in its first word (zero elsewhere). */
static u32 frame_with(u32 word)
{
    u32 mfn = pfn_to_mfn(alloc_page_pfn());
    map(mfn, _PAGE_PRESENT | _PAGE_RW, UVMF_INVLPG);
    memset((void *)page, 0, PAGE_SIZE_BYTES);
    page[0] = word;
    return mfn;
}

static u32 read_fs0(u32 sel)
{
    u32 r = 0;
    asm volatile("1: mov %1, %%fs\n movl %%fs:0, %0\n2:\n"
                 " .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                 : "+a"(r) : "r"(sel) : "memory");
    return r;
}

static void clear_fs(void) { asm volatile("mov %0, %%fs" :: "r"(0)); }

void test_main(void)
{
    page = alloc_scratch_page();
    orig_pte = virt_to_pte((u32)page);
    u32 a = frame_with(0xAAAA0001u), b = frame_with(0xBBBB0002u);

    /* MMUEXT_TLB_FLUSH_LOCAL, alone in its batch. */
    map(a, _PAGE_PRESENT | _PAGE_RW, UVMF_INVLPG);
    check(page[0] == 0xAAAA0001u, "mapped frame A: %x", page[0]);
    rewrite_entry(b);
    check(mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0) == 0, "MMUEXT_TLB_FLUSH_LOCAL");
    check(page[0] == 0xBBBB0002u, "after MMUEXT_TLB_FLUSH_LOCAL the page still reads its old "
          "frame: %x", page[0]);

    /* MMUEXT_INVLPG_LOCAL of the address. */
    map(a, _PAGE_PRESENT | _PAGE_RW, UVMF_INVLPG);
    check(page[0] == 0xAAAA0001u, "mapped frame A again: %x", page[0]);
    rewrite_entry(b);
    check(mmuext(MMUEXT_INVLPG_LOCAL, (u32)page) == 0, "MMUEXT_INVLPG_LOCAL");
    check(page[0] == 0xBBBB0002u, "after MMUEXT_INVLPG_LOCAL the page still reads its old "
          "frame: %x", page[0]);

    /* update_va_mapping of another address with UVMF_TLB_FLUSH flushes this one too. */
    volatile u32 *other = alloc_scratch_page();
    map(a, _PAGE_PRESENT | _PAGE_RW, UVMF_INVLPG);
    check(page[0] == 0xAAAA0001u, "mapped frame A a third time: %x", page[0]);
    rewrite_entry(b);
    check(HYPERVISOR_update_va_mapping((u32)other, virt_to_pte((u32)other),
                                       UVMF_TLB_FLUSH | UVMF_LOCAL) == 0,
          "update_va_mapping with UVMF_TLB_FLUSH");
    check(page[0] == 0xBBBB0002u, "after UVMF_TLB_FLUSH of another address the page still "
          "reads its old frame: %x", page[0]);
    (void)other[0];

    /* A frame becoming a page table: the writable translation left behind must be gone. */
    u32 c = frame_with(0);
    page[0] = 0;                                 /* a writable translation, used */
    map(0, 0, 0);                                /* entry cleared, no flush asked */
    check(mmuext(MMUEXT_PIN_L1_TABLE, c) == 0, "pin the frame as an L1 table");
    u32 r = probe_write((u32)page, 0);
    check(r == (FAULT_FLAG | TRAP_page_fault), "a write through the cleared entry after the "
          "frame became an L1 table did not fault (%x): a stale writable translation of a "
          "page table", r);
    check(mmuext(MMUEXT_UNPIN_TABLE, c) == 0, "unpin");
    restore();

    /* The shadow LDT survives a read-only mapping of a page table going away. */
    static u32 buf[4] = { 0x11111111 };
    u32 *ldt = alloc_scratch_page();
    set_desc(ldt, 1, mkdesc((u32)buf, 0xfff, DATA_RW | (1u << 13)));
    u32 ldt_pte = virt_to_pte((u32)ldt);
    check(HYPERVISOR_update_va_mapping((u32)ldt, ldt_pte & ~_PAGE_RW, UVMF_INVLPG) == 0,
          "LDT page read-only");
    check(set_ldt((u32)ldt, 2) == 0, "set_ldt");
    r = read_fs0(LDT_SEL(1, 1));
    clear_fs();
    check(r == 0x11111111, "read through an LDT selector: %x", r);
    u32 l2 = si_u32(START_INFO_pt_base);
    u32 l1_mfn = ((u32 *)l2)[KERNEL_VIRT_BASE >> L2_PAGETABLE_SHIFT] >> PAGE_SHIFT;
    map(l1_mfn, _PAGE_PRESENT, UVMF_INVLPG);     /* a page table, read-only */
    restore();                                   /* ... and that mapping gone */
    check(HYPERVISOR_update_va_mapping((u32)ldt, ldt_pte, UVMF_INVLPG) < 0,
          "the LDT page in use was mapped writable after an unrelated read-only mapping of a "
          "page table went away (the shadow LDT was dropped)");
    check(set_ldt(0, 0) == 0, "set_ldt with 0 entries");
    check(HYPERVISOR_update_va_mapping((u32)ldt, ldt_pte, UVMF_INVLPG) == 0,
          "the LDT page is writable again once no LDT uses it");
}

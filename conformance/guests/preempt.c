/* Long hypercalls are preempted and continued without the guest noticing (Xen 3.0.4: mm.c
 * do_mmu_update and do_mmuext_op with MMU_UPDATE_PREEMPTED, traps.c do_set_trap_table,
 * domain.c hypercall_create_continuation: EIP back over int $0x82, new argument registers).
 * The batches are read through an aliased window: one frame mapped at every page of several
 * 4 MB page-directory slots, so a few frames are megabytes of arguments.
 * The command line picks what to do:
 *   (empty)      a 100,000-entry mmu_update, a 100,000-op INVLPG batch and a trap table of
 *                102,400 entries: each completes with its full done count and result
 *   huge-mmu     one mmu_update of 67 million entries (minutes of work)
 *   huge-invlpg  one mmuext_op of 89 million INVLPGs
 *   huge-traps   one set_trap_table of 134 million entries */
#include "xenrt.h"

const char test_title[] = "preemption: long batches continue transparently";

#define WINDOW 0x40000000u
#define HUGE_SLOTS 256u          /* [0x40000000, 0x80000000): 1 GB */

struct mmu_update { u64 ptr, val; };
struct trap_info_entry { u8 vector, flags; u16 cs; u32 address; };
extern char trap_entry_32[];

static u32 *edit;                /* a kernel page remapped to write into fresh frames */

static const char *cmdline(void) { return (const char *)(start_info + START_INFO_cmd_line); }

/* Map frame ``mfn`` at the edit page and return it (unmap_edit gives the page back). */
static u32 edit_old;
static u32 *map_edit(u32 mfn)
{
    edit_old = virt_to_pte((u32)edit);
    if (HYPERVISOR_update_va_mapping((u32)edit, (mfn << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_RW,
                                     UVMF_INVLPG))
        panic("map edit page");
    return edit;
}
static void unmap_edit(void)
{
    if (HYPERVISOR_update_va_mapping((u32)edit, edit_old, UVMF_INVLPG))
        panic("unmap edit page");
}

static void mmu_set(u32 table_mfn, u32 index, u32 val)
{
    struct mmu_update u = { ((u64)table_mfn << PAGE_SHIFT) | (index * 4), val };
    if (HYPERVISOR_mmu_update(&u, 1, NULL, DOMID_SELF))
        panic("mmu_update(%x[%u] = %x)", table_mfn, index, val);
}

/* A fresh frame holding ``page`` (4096 bytes). */
static u32 frame_with(const void *page)
{
    u32 mfn = pfn_to_mfn(alloc_page_pfn());
    memcpy(map_edit(mfn), page, PAGE_SIZE_BYTES);
    unmap_edit();
    return mfn;
}

/* Map ``page_mfn`` read-only at every page of ``slots`` x 4 MB from WINDOW, except page
 * ``last`` of the last slot, which maps ``last_mfn`` (0: none). */
static void map_window(u32 slots, u32 page_mfn, u32 last_mfn, u32 last)
{
    u32 l1 = pfn_to_mfn(alloc_page_pfn());
    u32 *e = map_edit(l1);
    for (int i = 0; i < 1024; i++)
        e[i] = (page_mfn << PAGE_SHIFT) | _PAGE_PRESENT;
    unmap_edit();
    u32 l1_last = l1;
    if (last_mfn) {
        l1_last = pfn_to_mfn(alloc_page_pfn());
        e = map_edit(l1_last);
        for (int i = 0; i < 1024; i++)
            e[i] = (page_mfn << PAGE_SHIFT) | _PAGE_PRESENT;
        e[last] = (last_mfn << PAGE_SHIFT) | _PAGE_PRESENT;
        unmap_edit();
    }
    struct mmuext_op pin = { MMUEXT_PIN_L1_TABLE, l1, 0 };
    if (HYPERVISOR_mmuext_op(&pin, 1, NULL, DOMID_SELF))
        panic("pin the window's L1");
    if (l1_last != l1) {
        pin.arg1 = l1_last;
        if (HYPERVISOR_mmuext_op(&pin, 1, NULL, DOMID_SELF))
            panic("pin the window's last L1");
    }
    u32 l2 = virt_to_mfn((void *)si_u32(START_INFO_pt_base));
    for (u32 k = 0; k < slots; k++)
        mmu_set(l2, (WINDOW >> L2_PAGETABLE_SHIFT) + k,
                ((k == slots - 1 ? l1_last : l1) << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_RW);
}

static void unmap_window(u32 slots)
{
    u32 l2 = virt_to_mfn((void *)si_u32(START_INFO_pt_base));
    for (u32 k = 0; k < slots; k++)
        mmu_set(l2, (WINDOW >> L2_PAGETABLE_SHIFT) + k, 0);
}

static u32 page[1024];

/* 256 requests per page: request j sets M2P[mfn] = j; the last one done wins. */
static void machphys_page(u32 mfn)
{
    struct mmu_update *u = (struct mmu_update *)page;
    for (u32 j = 0; j < 256; j++) {
        u[j].ptr = ((u64)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
        u[j].val = j;
    }
}

static void invlpg_page(void)
{
    /* Every word is MMUEXT_INVLPG_LOCAL: each 12-byte op reads as INVLPG of address 7. */
    for (int i = 0; i < 1024; i++)
        page[i] = MMUEXT_INVLPG_LOCAL;
}

static void trap_page(void)
{
    /* The runtime's own entry for vector 32, 512 times per page. */
    struct trap_info_entry *t = (struct trap_info_entry *)page;
    for (int i = 0; i < 512; i++) {
        t[i].vector = 32;
        t[i].flags = 1;
        t[i].cs = FLAT_KERNEL_CS;
        t[i].address = (u32)trap_entry_32;
    }
}

static u32 int20s;
static void int20(struct trap_frame *f) { (void)f; int20s++; }

static void batches(void)
{
    u32 pfn = alloc_page_pfn(), target = pfn_to_mfn(pfn), done = 0;
    u32 *m2p = (u32 *)MACH2PHYS_VIRT_START;

    machphys_page(target);
    map_window(1, frame_with(page), 0, 0);
    u32 n = 100000;
    long rc = HYPERVISOR_mmu_update((void *)WINDOW, n, &done, DOMID_SELF);
    check(rc == 0 && done == n, "mmu_update of %u: rc %d, done %u", n, (int)rc, done);
    check(m2p[target] == (n - 1) % 256, "M2P holds the last request's value: %u",
          m2p[target]);
    struct mmu_update back = { ((u64)target << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, pfn };
    check(HYPERVISOR_mmu_update(&back, 1, NULL, DOMID_SELF) == 0, "M2P restored");
    unmap_window(1);

    invlpg_page();
    map_window(1, frame_with(page), 0, 0);
    done = 0;
    rc = HYPERVISOR_mmuext_op((void *)WINDOW, n, &done, DOMID_SELF);
    check(rc == 0 && done == n, "INVLPG batch of %u: rc %d, done %u", n, (int)rc, done);
    unmap_window(1);

    trap_page();
    memset(edit, 0, PAGE_SIZE_BYTES);
    u32 zero = virt_to_mfn(edit);  /* the terminator: an entry with address 0 */
    map_window(1, frame_with(page), zero, 200);  /* 200 pages of 512 entries, then 0 */
    rc = HYPERVISOR_set_trap_table((void *)WINDOW);
    check(rc == 0, "set_trap_table of 102400 entries: rc %d", (int)rc);
    unmap_window(1);
    /* Vector 32 still works: the runtime's entry takes the int $0x20. */
    set_trap_handler(32, int20);
    asm volatile("int $0x20" ::: "memory");
    check(int20s == 1, "int $0x20 reached its handler %u times", int20s);
    printk("batches: %u mmu_update entries, %u INVLPGs, 102400 trap entries\n", n, n);
}

static void huge(const char *what)
{
    u32 done = 0;
    long rc;
    if (!strcmp(what, "huge-mmu")) {
        machphys_page(pfn_to_mfn(alloc_page_pfn()));
        map_window(HUGE_SLOTS, frame_with(page), 0, 0);
        printk("issuing one mmu_update of %u entries\n", HUGE_SLOTS << 18);
        rc = HYPERVISOR_mmu_update((void *)WINDOW, HUGE_SLOTS << 18, &done, DOMID_SELF);
    } else if (!strcmp(what, "huge-invlpg")) {
        invlpg_page();
        map_window(HUGE_SLOTS, frame_with(page), 0, 0);
        u32 n = (HUGE_SLOTS << 22) / 12;
        printk("issuing one mmuext_op of %u INVLPGs\n", n);
        rc = HYPERVISOR_mmuext_op((void *)WINDOW, n, &done, DOMID_SELF);
    } else {
        trap_page();
        map_window(HUGE_SLOTS, frame_with(page), 0, 0);
        printk("issuing one set_trap_table of %u entries\n", HUGE_SLOTS << 19);
        rc = HYPERVISOR_set_trap_table((void *)WINDOW);  /* ends at the unmapped 0x80000000 */
    }
    printk("done: rc %d, %u done\n", (int)rc, done);
}

void test_main(void)
{
    edit = alloc_scratch_page();
    const char *c = cmdline();
    if (!memcmp(c, "huge-", 5))
        huge(c);
    else
        batches();
}

/* The start-of-day contract, checked from inside the guest as it can observe it (xen.h,
 * "Start-of-day memory layout"; tools/libxc/xc_linux_build.c setup_guest): start_info at
 * ESI with its magic; the bootstrap region from the image's base to a 4 MB boundary mapped
 * 1:1 onto pfns from 0; the page tables at pt_base, nr_pt_frames of them, mapping the region
 * and mapped read-only; everything else in the region writable; the order kernel, p2m list,
 * start_info, [store, console], page tables, boot stack; at least 512 KB mapped after the
 * boot stack; mfn_list the p2m, which the M2P inverts. */
#include "xenrt.h"

const char test_title[] = "start of day: the bootstrap region as Xen 3.0.4's builders lay it out";

static u32 pfn_of(u32 va) { return (va - KERNEL_VIRT_BASE) >> PAGE_SHIFT; }

void test_main(void)
{
    u32 nr_pages = si_u32(START_INFO_nr_pages);
    u32 pt_base = si_u32(START_INFO_pt_base), nr_pt = si_u32(START_INFO_nr_pt_frames);
    u32 pt_end = pt_base + nr_pt * PAGE_SIZE_BYTES;
    u32 mfn_list = si_u32(START_INFO_mfn_list), si = (u32)start_info;
    u32 end = bootstrap_end(), stack = boot_esp - PAGE_SIZE_BYTES;
    const u32 *m2p = (const u32 *)MACH2PHYS_VIRT_START;
    const u32 *p2m = (const u32 *)mfn_list;

    check(memcmp(start_info, XEN_START_INFO_MAGIC_STR, XEN_START_INFO_MAGIC_NBYTES) == 0,
          "start_info magic");
    check(si_u32(START_INFO_shared_info) && !(si_u32(START_INFO_shared_info) & 0xfff),
          "shared_info %x is a frame's address", si_u32(START_INFO_shared_info));
    printk("region %x-%x, p2m %x, start_info %x, tables %x (%u), stack %x-%x\n",
           KERNEL_VIRT_BASE, end, mfn_list, si, pt_base, nr_pt, stack, boot_esp);

    /* The order of the elements, each page aligned, and the 4 MB boundary. */
    check(!(si & 0xfff) && !(pt_base & 0xfff) && !(mfn_list & 0xfff) && !(boot_esp & 0xfff),
          "the elements are page aligned");
    check((u32)_end <= mfn_list, "the p2m list %x follows the image (ends %x)", mfn_list,
          (u32)_end);
    check(mfn_list + nr_pages * 4 <= si, "start_info %x follows the p2m list", si);
    check(si < pt_base, "the page tables %x follow start_info %x", pt_base, si);
    check(pt_end == stack, "the boot stack %x follows the page tables (end %x)", stack, pt_end);
    check(!(end & ((1u << L2_PAGETABLE_SHIFT) - 1)) && boot_esp <= end,
          "the region ends on a 4 MB boundary (%x) after the stack", end);
    check(end - boot_esp >= (512u << 10), "%u KB mapped after the boot stack (512 needed)",
          (end - boot_esp) >> 10);
    check(nr_pt == 1 + ((end - KERNEL_VIRT_BASE) >> L2_PAGETABLE_SHIFT),
          "%u table frames: the directory and one L1 per 4 MB", nr_pt);

    /* The store and console pages, when there are back ends, follow start_info. */
    if (si_u32(START_INFO_store_mfn))
        check(si_u32(START_INFO_store_mfn) == pfn_to_mfn(pfn_of(si) + 1)
              && si_u32(START_INFO_console_mfn) == pfn_to_mfn(pfn_of(si) + 2),
              "the store and console pages follow start_info");

    /* The directory's slots for the region name table frames of [pt_base, pt_end). */
    const u32 *l2 = (const u32 *)pt_base;
    for (u32 slot = KERNEL_VIRT_BASE >> L2_PAGETABLE_SHIFT;
         slot < end >> L2_PAGETABLE_SHIFT; slot++) {
        u32 pfn = m2p[l2[slot] >> PAGE_SHIFT];
        check(pfn >= pfn_of(pt_base) && pfn < pfn_of(pt_end),
              "directory slot %u names pfn %u, not a table frame", slot, pfn);
    }

    /* Every page of the region mapped 1:1, read-only exactly for the tables. The runtime
     * itself mapped shared_info over a page of the image: that one page is skipped. */
    u32 bad = 0;
    for (u32 va = KERNEL_VIRT_BASE; va < end; va += PAGE_SIZE_BYTES) {
        if (va == (u32)shared_info)
            continue;
        u32 pte = virt_to_pte(va), pfn = pfn_of(va);
        int table = va >= pt_base && va < pt_end;
        int ok = (pte & _PAGE_PRESENT) && (pte >> PAGE_SHIFT) == pfn_to_mfn(pfn)
            && !!(pte & _PAGE_RW) == !table;
        if (!ok && bad++ < 4)
            check(0, "va %x (pfn %u): pte %x", va, pfn, pte);
    }
    check(!bad, "%u pages of the region are not mapped as the contract says", bad);
    check(!(virt_to_pte(end) & _PAGE_PRESENT), "nothing mapped at the region's end %x", end);

    /* mfn_list is the p2m, and the M2P its inverse. */
    bad = 0;
    for (u32 pfn = 0; pfn < nr_pages; pfn++)
        if (m2p[p2m[pfn]] != pfn && bad++ < 4)
            check(0, "M2P[%x] = %x, not pfn %u", p2m[pfn], m2p[p2m[pfn]], pfn);
    check(!bad, "%u pfns where the M2P does not invert mfn_list", bad);
}

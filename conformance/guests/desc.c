/* set_gdt and update_descriptor: Xen's descriptor rule (no DPL 0, nothing reaching the hole,
 * only call gates among system descriptors) and the frame-type rules of GDT pages. */
#include "xenrt.h"

const char test_title[] = "descriptor tables: set_gdt, update_descriptor";

#define DATA_RW (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0x200)
#define CODE_RX (_SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | 0xA00)
#define DPL(n) ((u32)(n) << 13)

static u32 make_readonly(u32 *page)
{
    u32 va = (u32)page, pte = virt_to_pte(va);
    if (HYPERVISOR_update_va_mapping(va, pte & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot remap %x read-only", va);
    return virt_to_mfn(page);
}

void test_main(void)
{
    u32 *gdt = alloc_scratch_page();
    set_desc(gdt, 1, mkdesc(0, 0xfffff, DATA_RW | DPL(1) | _SEGMENT_G));     /* 4 GB: truncated */
    set_desc(gdt, 2, mkdesc(0, 0xfffff, CODE_RX | DPL(0) | _SEGMENT_G));     /* DPL 0 -> 1 */
    set_desc(gdt, 3, mkdesc(0x1000, 0xfff, DATA_RW | DPL(3)));               /* small: as is */
    u32 frame = virt_to_mfn(gdt);

    check(HYPERVISOR_set_gdt(&frame, 512) == -EINVAL, "a writably mapped frame is refused");
    make_readonly(gdt);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    check((gdt[2] & 0xffff) == 0xc3ff && ((gdt[3] >> 16) & 0xf) == 0xf,
          "4 GB limit truncated to the hole: %x %x", gdt[2], gdt[3]);
    check((gdt[5] & _SEGMENT_DPL) == DPL(1), "DPL 0 became 1: %x", gdt[5]);
    check(gdt[6] == (u32)mkdesc(0x1000, 0xfff, 0) && gdt[7] == (u32)(mkdesc(0x1000, 0xfff,
          DATA_RW | DPL(3)) >> 32), "small segment unchanged");

    /* Load a selector of the new GDT: the CPU sets the accessed bit. */
    u32 v, fs = (1 << 3) | 1;
    asm volatile("mov %1, %%fs\n movl %%fs:(%2), %0" : "=r"(v) : "r"(fs), "r"(gdt) : "memory");
    check(v == gdt[0], "read through %%fs");
    check(gdt[3] & _SEGMENT_ACCESSED, "accessed bit set: %x", gdt[3]);
    asm volatile("mov %0, %%fs" :: "r"(FLAT_KERNEL_DS));

    /* update_descriptor on the live GDT frame. */
    u64 ma = ((u64)frame << PAGE_SHIFT) + 4 * 8;
    check(HYPERVISOR_update_descriptor(ma, mkdesc(0, 0x67, _SEGMENT_P | DPL(1) | 0x900))
          == -EINVAL, "a TSS descriptor is refused");
    check(HYPERVISOR_update_descriptor(ma + 4, mkdesc(0, 0xfffff, DATA_RW | DPL(1)))
          == -EINVAL, "misaligned address");
    check(HYPERVISOR_update_descriptor(ma, mkdesc(GUEST_SEGMENT_MAX_ADDR - 4096, 0, DATA_RW
                                                  | DPL(1) | _SEGMENT_G)) == -EINVAL,
          "a base within a page of the hole");
    check(HYPERVISOR_update_descriptor(ma, mkdesc(0, 0xfffff, DATA_RW | DPL(0) | _SEGMENT_G))
          == 0, "a DPL 0 4 GB data segment");
    check((gdt[9] & _SEGMENT_DPL) == DPL(1) && (gdt[8] & 0xffff) == 0xc3ff,
          "stored with DPL 1 and truncated: %x %x", gdt[8], gdt[9]);
    check(HYPERVISOR_update_descriptor(ma, mkdesc(0xfc3f0000, 0xfffff, DATA_RW | DPL(1)))
          == -EINVAL, "byte-granular segment reaching the hole");
    /* A call gate into Xen's own code segment; one into the guest's kernel is fine. */
    u64 gate_xen = ((u64)(_SEGMENT_P | DPL(3) | 0xC00) << 32) | ((u32)HYPERVISOR_CS << 16);
    u64 gate_ok = ((u64)(_SEGMENT_P | DPL(3) | 0xC00) << 32) | ((u32)FLAT_KERNEL_CS << 16);
    check(HYPERVISOR_update_descriptor(ma, gate_xen) == -EINVAL, "gate to Xen's CS");
    check(HYPERVISOR_update_descriptor(ma, gate_ok) == 0, "gate to FLAT_KERNEL_CS");
    u32 l2 = si_u32(START_INFO_pt_base);
    u64 pt_ma = (u64)virt_to_mfn((void *)l2) << PAGE_SHIFT;
    check(HYPERVISOR_update_descriptor(pt_ma, mkdesc(0, 0, 0)) == -EINVAL,
          "update_descriptor on a page directory");
    u32 *plain = alloc_scratch_page();
    u64 plain_ma = ((u64)virt_to_mfn(plain) << PAGE_SHIFT) + 8;
    check(HYPERVISOR_update_descriptor(plain_ma, mkdesc(0, 0xfff, DATA_RW | DPL(3))) == 0,
          "update_descriptor on plain memory");
    check(plain[3] == (u32)(mkdesc(0, 0xfff, DATA_RW | DPL(3)) >> 32), "written");

    /* set_gdt errors. */
    check(HYPERVISOR_set_gdt(&frame, FIRST_RESERVED_GDT_ENTRY + 1) == -EINVAL, "too many");
    check(HYPERVISOR_set_gdt((u32 *)0x1000, 1) == -EFAULT, "unreadable frame list");
    u32 *bad = alloc_scratch_page();
    set_desc(bad, 5, mkdesc(0, 0x67, _SEGMENT_P | DPL(1) | 0x900));          /* a TSS */
    u32 bad_frame = make_readonly(bad);
    check(HYPERVISOR_set_gdt(&bad_frame, 512) == -EINVAL, "a frame holding a TSS");
    /* "keep" on the command line leaves this GDT installed (for checks after the run). */
    if (strcmp((const char *)start_info + START_INFO_cmd_line, "keep"))
        check(HYPERVISOR_set_gdt(&frame, 0) == 0, "an empty GDT");
}

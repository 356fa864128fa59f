/* A hostile kernel against the MMU from inside a real guest: writable mappings of its own page
 * tables, Xen's frames, the hypervisor slots and the hole must all be refused with Xen's
 * errors, and direct writes to its page tables must fault. */
#include "xenrt.h"

const char test_title[] = "hostile: page tables, Xen frames, the hole";

struct mmu_update { u64 ptr, val; };

static long set_entry(u32 table_mfn, u32 index, u32 val)
{
    struct mmu_update u = { ((u64)table_mfn << PAGE_SHIFT) | (index * 4), val };
    return HYPERVISOR_mmu_update(&u, 1, NULL, DOMID_SELF);
}

void test_main(void)
{
    u32 l2 = si_u32(START_INFO_pt_base);
    u32 l2_mfn = virt_to_mfn((void *)l2);
    u32 slot = KERNEL_VIRT_BASE >> L2_PAGETABLE_SHIFT;
    u32 l1_mfn = ((u32 *)l2)[slot] >> PAGE_SHIFT;
    u32 *scratch = alloc_scratch_page();
    u32 va = (u32)scratch, idx = (va >> PAGE_SHIFT) & 0x3ff;
    u32 rw = _PAGE_PRESENT | _PAGE_RW;

    /* Direct writes to the page tables fault: they are mapped read-only. */
    check(probe_write(l2, 0) == (FAULT_FLAG | TRAP_page_fault), "write to own L2");
    check(probe_write(l2 + 4096, 0) == (FAULT_FLAG | TRAP_page_fault), "write to own L1");

    /* A writable mapping of a page table is refused. */
    check(set_entry(l1_mfn, idx, (l2_mfn << PAGE_SHIFT) | rw) == -EINVAL, "L2 writable");
    check(set_entry(l1_mfn, idx, (l1_mfn << PAGE_SHIFT) | rw) == -EINVAL, "L1 writable");
    check(HYPERVISOR_update_va_mapping(va, (l2_mfn << PAGE_SHIFT) | rw, UVMF_INVLPG) == -EINVAL,
          "update_va_mapping to a writable L2");
    /* Read-only is fine (Xen allows read-only page-table maps). */
    u32 old = virt_to_pte(va);
    check(HYPERVISOR_update_va_mapping(va, (l2_mfn << PAGE_SHIFT) | _PAGE_PRESENT, UVMF_INVLPG)
          == 0, "read-only map of the L2");
    check(scratch[slot] == ((u32 *)l2)[slot], "reads the L2 through it");
    check(HYPERVISOR_update_va_mapping(va, old, UVMF_INVLPG) == 0, "restore");

    /* Xen's own frames (frame 0, the M2P) and frames beyond RAM. */
    check(set_entry(l1_mfn, idx, (0u << PAGE_SHIFT) | _PAGE_PRESENT) == -EINVAL, "frame 0");
    check(set_entry(l1_mfn, idx, (1u << PAGE_SHIFT) | _PAGE_PRESENT) == -EINVAL, "M2P frame");
    check(set_entry(l1_mfn, idx, 0xFFFFF000u | _PAGE_PRESENT) == -EINVAL, "beyond RAM");

    /* The hypervisor slots of the page directory and the hole. */
    check(set_entry(l2_mfn, L2_PAGETABLE_FIRST_XEN_SLOT, (l1_mfn << PAGE_SHIFT) | rw)
          == -EINVAL, "write to a Xen slot");
    check(set_entry(l2_mfn, 1023, 0) == -EINVAL, "clear a Xen slot");
    check(HYPERVISOR_update_va_mapping(HYPERVISOR_VIRT_START, old, UVMF_INVLPG) == -EINVAL,
          "update_va_mapping in the hole");
    /* Disallowed bits. */
    check(set_entry(l1_mfn, idx, (virt_to_mfn(scratch) << PAGE_SHIFT) | rw | _PAGE_GLOBAL)
          == -EINVAL, "GLOBAL in an L1 entry");
    check(set_entry(l2_mfn, 5, (l1_mfn << PAGE_SHIFT) | rw | _PAGE_PSE) == -EINVAL,
          "PSE in an L2 entry");

    /* Arguments in the hole or unmapped. */
    check(HYPERVISOR_mmu_update((void *)HYPERVISOR_VIRT_START, 1, NULL, DOMID_SELF) == -EFAULT,
          "request array in the hole");
    check(HYPERVISOR_mmu_update((void *)0x1000, 1, NULL, DOMID_SELF) == -EFAULT,
          "unmapped request array");
    check(HYPERVISOR_mmu_update(scratch, 1, NULL, 0) == -ESRCH, "foreign domain 0 is myself");

    /* After all that, the domain still runs and its own mappings still work. */
    scratch[0] = 0x1234;
    check(scratch[0] == 0x1234, "scratch page writable");
}

/* The guest runs on a code segment of its own GDT, then clears that descriptor with
 * update_descriptor. Xen's return path ends in iret (x86_32/entry.S restore_all_guest, FLT5),
 * which loads CS from the descriptor table again: not present, #NP(cs) inside Xen, FIX5 ->
 * failsafe_callback; with no callback address (as here) the domain is crashed. The test
 * expects that crash; reaching the end of test_main is the failure. */
#include "xenrt.h"

const char test_title[] = "the running code segment's descriptor cleared under it";


static u32 iret_to(u32 cs)
{
    u32 r;
    asm volatile("pushl $" XSTR(X86_EFLAGS_MBS) "\n"
                 "pushl %1\n"
                 "pushl $1f\n"
                 "movl $0x1234, %%eax\n"
                 "jmp hypercall_page + " XSTR(__HYPERVISOR_iret) " * " XSTR(HYPERCALL_STUB_SIZE) "\n"
                 "1:\n"
                 : "=a"(r) : "r"(cs) : "memory");
    return r;
}

static u32 get_cs(void) { u32 r; asm volatile("mov %%cs, %0" : "=r"(r)); return r & 0xffff; }

void test_main(void)
{
    check(HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, 0, FLAT_KERNEL_CS, 0) == 0, "set_callbacks");
    u32 *gdt = alloc_scratch_page();
    set_desc(gdt, 2, mkdesc(0, 0xfffff, _SEGMENT_S | _SEGMENT_P | _SEGMENT_DB | _SEGMENT_G | 0xA00
                       | (1u << 13)));
    u32 va = (u32)gdt;
    if (HYPERVISOR_update_va_mapping(va, virt_to_pte(va) & ~_PAGE_RW, UVMF_INVLPG))
        panic("cannot remap");
    u32 frame = virt_to_mfn(gdt);
    check(HYPERVISOR_set_gdt(&frame, 512) == 0, "set_gdt");
    u32 cs2 = (2 << 3) | 1;
    check(iret_to(cs2) == 0x1234, "iret to the guest code segment");
    check(get_cs() == cs2, "running on cs %x", get_cs());
    u64 ma = ((u64)frame << PAGE_SHIFT) + 2 * 8;
    long rc = HYPERVISOR_update_descriptor(ma, mkdesc(0, 0xfffff, _SEGMENT_S | _SEGMENT_DB
                                                     | _SEGMENT_G | 0xA00 | (1u << 13)));
    /* On Xen the domain is crashed before this line runs. */
    printk("returned from update_descriptor with rc %d on cs %x: still running\n", (int)rc,
           get_cs());
    check(0, "Xen's iret would have faulted on the not-present CS");
}

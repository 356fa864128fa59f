/* A translation the guest keeps after it unmaps a frame must not reach the frame once the
 * guest has given it back (memory_op decrease_reservation) and it is free: the frame may go
 * to another domain next. Xen flushes every TLB that may hold it before the frame is used
 * again (page_alloc.c, tlbflush_filter at allocation); the reference model flushes when the
 * frame is freed. So a write through the old address faults here, and the handler maps a
 * page of the guest's own there for the write to retry into. (On a real Xen the write may
 * land in the free frame instead, which Xen scrubs before giving it away: the test is the
 * model's, in tests/test_guests.py, not the conformance suite's.) */
#include "xenrt.h"

const char test_title[] = "stale TLB: a freed frame is unreachable";

struct reservation { u32 extent_start, nr_extents, extent_order, address_bits; u16 domid, pad; };

static u32 *window, *fallback;
static volatile int faults;

static void page_fault(struct trap_frame *f)
{
    (void)f;
    faults++;
    if (HYPERVISOR_update_va_mapping((u32)window, (virt_to_mfn(fallback) << PAGE_SHIFT)
                                     | _PAGE_PRESENT | _PAGE_RW, UVMF_INVLPG))
        panic("cannot map the fallback page");
}

void test_main(void)
{
    window = alloc_scratch_page();
    fallback = alloc_scratch_page();
    u32 pfn = alloc_page_pfn(), mfn = pfn_to_mfn(pfn);
    check(HYPERVISOR_update_va_mapping((u32)window, (mfn << PAGE_SHIFT) | _PAGE_PRESENT
                                       | _PAGE_RW, UVMF_INVLPG) == 0, "map the frame");
    window[0] = 0x11111111;  /* the TLB now holds window -> mfn */
    check(HYPERVISOR_update_va_mapping((u32)window, 0, UVMF_NONE) == 0,
          "unmap it without a flush");
    u32 list[1] = { mfn };
    struct reservation r = { (u32)list, 1, 0, 0, DOMID_SELF, 0 };
    check(hypercall(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, (u32)&r, 0, 0, 0) == 1,
          "give the frame back");
    set_trap_handler(TRAP_page_fault, page_fault);
    window[0] = 0x22222222;
    check(faults == 1, "a write through the old translation faults (%d faults)", faults);
    check(fallback[0] == 0x22222222, "and retries into the guest's own page");
}

/* memory_op, the balloon (xen/common/memory.c and public/memory.h, Xen 3.0.4): give frames
 * back, see the reservation shrink, ask for frames again up to max_pages; a frame that is still
 * mapped is accepted but stays the domain's until its mapping goes (guest_remove_page); the
 * refusals of do_memory_op, which answer the start extent for a reservation operation and an
 * errno for the reservation sizes. */
#include "xenrt.h"

const char test_title[] = "memory_op: balloon down and up";

struct reservation { u32 extent_start, nr_extents, extent_order, address_bits; u16 domid, pad; };

static long memory_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_memory_op, cmd, (u32)arg, 0, 0, 0); }

static long reservation(u32 op, u32 *extents, u32 nr, u32 order, u32 bits, u16 domid)
{
    struct reservation r = { (u32)extents, nr, order, bits, domid, 0 };
    return memory_op(op, &r);
}

static long current_pages(void)
{ u16 self = DOMID_SELF; return memory_op(XENMEM_current_reservation, &self); }

static long machphys_update(u32 mfn, u32 pfn)
{
    u64 req[2] = { ((u64)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, pfn };  /* mmu_update */
    return HYPERVISOR_mmu_update(req, 1, NULL, DOMID_SELF);
}

void test_main(void)
{
    u32 nr = si_u32(START_INFO_nr_pages);
    u16 self = DOMID_SELF, other = 1;
    check(current_pages() == (long)nr, "current_reservation %d, start_info %u",
          (int)current_pages(), nr);
    check(memory_op(XENMEM_maximum_reservation, &self) == (long)nr, "maximum_reservation");
    check(memory_op(XENMEM_maximum_ram_page, NULL) > (long)nr, "maximum_ram_page");

    /* A frame outside the bootstrap region: not mapped, not typed. */
    u32 pfn = alloc_page_pfn(), mfn = pfn_to_mfn(pfn);
    u32 list[2] = { mfn, 0 };
    check(reservation(XENMEM_decrease_reservation, list, 1, 0, 0, DOMID_SELF) == 1,
          "decrease one free frame");
    check(current_pages() == (long)nr - 1, "one page fewer: %d", (int)current_pages());
    check(machphys_update(mfn, pfn) == -EINVAL, "the frame is no longer ours");
    check(reservation(XENMEM_decrease_reservation, list, 1, 0, 0, DOMID_SELF) == 0,
          "a frame given back cannot be given back again");

    /* A mapped frame: accepted, but it stays ours while the mapping holds a reference. */
    u32 *scratch = alloc_scratch_page();
    scratch[0] = 0x5a5a5a5a;
    list[0] = virt_to_mfn(scratch);
    check(reservation(XENMEM_decrease_reservation, list, 1, 0, 0, DOMID_SELF) == 1,
          "decrease a mapped frame");
    check(current_pages() == (long)nr - 1, "the mapped frame still counts");
    check(scratch[0] == 0x5a5a5a5a, "and is still mapped");

    /* Back up to max_pages, not beyond. */
    list[0] = list[1] = 0;
    check(reservation(XENMEM_increase_reservation, list, 2, 0, 0, DOMID_SELF) == 1,
          "increase stops at max_pages");
    check(list[0] != 0 && list[1] == 0, "one mfn written: %x %x", list[0], list[1]);
    check(current_pages() == (long)nr, "back to %u pages", nr);
    check(machphys_update(list[0], pfn) == 0, "the new frame is ours");
    check(reservation(XENMEM_increase_reservation, NULL, 1, 0, 0, DOMID_SELF) == 0,
          "full: nothing more");

    /* Refused arguments: a reservation operation answers with the extent it was to start
     * from, never with an errno (do_memory_op: "return start_extent"). */
    check(memory_op(XENMEM_increase_reservation, (void *)0x1000) == 0, "unreadable");
    check(memory_op(XENMEM_decrease_reservation | (3 << XENMEM_START_EXTENT_SHIFT),
                    (void *)0x1000) == 3, "unreadable, resumed at extent 3");
    check(memory_op(XENMEM_decrease_reservation | (5 << XENMEM_START_EXTENT_SHIFT), &(struct
          reservation){ 0, 1, 0, 0, DOMID_SELF, 0 }) == 5, "start beyond nr_extents");
    check(reservation(XENMEM_increase_reservation, NULL, 1, 0, 0, other) == 0,
          "another domain, unprivileged");
    check(memory_op(XENMEM_current_reservation, &other) == -EPERM, "another domain's size");
    check(reservation(XENMEM_increase_reservation, NULL, 1, 1, 0, DOMID_SELF) == 0,
          "order 1 needs privilege");
    check(reservation(XENMEM_decrease_reservation, (u32 *)0xFF000000, 1, 0, 0, DOMID_SELF)
          == 0, "a list in the hole");

    /* address_bits: a width below the machine's asks for DMA memory, refused below
     * dma_bitsize (30); the machine's own width or more is no restriction. */
    list[0] = pfn_to_mfn(alloc_page_pfn());
    check(reservation(XENMEM_decrease_reservation, list, 1, 0, 20, DOMID_SELF) == 0,
          "address_bits 20");
    check(current_pages() == (long)nr, "nothing given back: %d", (int)current_pages());
    check(reservation(XENMEM_decrease_reservation, list, 1, 0, 32, DOMID_SELF) == 1,
          "address_bits 32");
    check(reservation(XENMEM_increase_reservation, NULL, 1, 0, 32, DOMID_SELF) == 1,
          "and one frame back");
    check(current_pages() == (long)nr, "back to %u pages", nr);
    check(memory_op(15, NULL) == -ENOSYS, "unknown operation");
}

/* The smallest guest: start of day as Xen 3.0 lays it out, a console line, poweroff. */
#include "xenrt.h"

const char test_title[] = "hello: start of day";

void test_main(void)
{
    check(memcmp(start_info, XEN_START_INFO_MAGIC_STR, XEN_START_INFO_MAGIC_NBYTES) == 0,
          "start_info magic");
    check(si_u32(START_INFO_nr_pages) > 0, "nr_pages");
    check(si_u32(START_INFO_pt_base) >= KERNEL_VIRT_BASE, "pt_base %x", si_u32(START_INFO_pt_base));
    printk("Hello from a ring-1 guest: %u pages, pt_base %p\n",
           si_u32(START_INFO_nr_pages), si_u32(START_INFO_pt_base));
    u32 cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    check(cs == FLAT_KERNEL_CS, "cs %x", cs);
}

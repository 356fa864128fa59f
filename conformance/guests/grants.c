/* Grant tables from inside a guest (grant_table.h; grant_table.c and mm.c of Xen 3.0.4): the
 * kernel grants its own frames to itself, maps them through GNTTABOP_map_grant_ref, reads and
 * writes through the mapping, sees read-only grants refused for writing and faulting on write,
 * sees Xen's GTF_reading/GTF_writing come and go, unmaps, copies with GNTTABOP_copy, and gets
 * Xen's status codes for bad references, handles, domains and flags. */
#include "xenrt.h"

const char test_title[] = "grant_table_op: map, unmap, copy, status codes";

struct copy_op { u32 src_ref; u16 src_dom, src_off; u32 dst_ref; u16 dst_dom, dst_off;
                 u16 len, flags; s16 status; u16 pad; };
struct query_size { u16 dom, pad; u32 nr_frames, max_nr_frames; s16 status; u16 pad2; };

void test_main(void)
{
    gnttab_init();
    u16 me = my_domid();
    char *data = (char *)alloc_scratch_page();
    char *ro = (char *)alloc_scratch_page();
    u32 *map_rw = alloc_scratch_page(), *map_ro = alloc_scratch_page();
    char *dest = (char *)alloc_scratch_page();
    memcpy(data, "granted data", 13);
    memcpy(ro, "read-only", 10);
    /* The scratch pages we map over lose their own mapping first (the entry we replace drops
     * its references, mm.c put_page_from_l1e). */
    gnttab_grant_access(3, me, virt_to_mfn(data), 0);
    gnttab_grant_access(4, me, virt_to_mfn(ro), 1);

    struct query_size q = { DOMID_SELF, 0, 0, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_query_size, &q, 1) == 0 && q.status == GNTST_okay
          && q.nr_frames == NR_GRANT_FRAMES && q.max_nr_frames == NR_GRANT_FRAMES,
          "query_size: status %d, %u of %u frames", q.status, q.nr_frames, q.max_nr_frames);
    check(HYPERVISOR_grant_table_op(GNTTABOP_query_size, &q, 2) == -EINVAL, "count 2");
    check(HYPERVISOR_grant_table_op(99, &q, 1) == -ENOSYS, "unknown command");

    u32 h_rw, h_ro;
    int st = gnttab_map(3, me, (u32)map_rw, GNTMAP_host_map, &h_rw);
    check(st == GNTST_okay, "map writable: status %d", st);
    check(memcmp(map_rw, "granted data", 13) == 0, "read through the grant mapping");
    memcpy(map_rw, "GRANTED", 7);
    check(memcmp(data, "GRANTED data", 13) == 0, "a write through the mapping lands");
    check((*gnttab_flags(3) & (GTF_reading | GTF_writing)) == (GTF_reading | GTF_writing),
          "GTF_reading|GTF_writing while mapped: %x", *gnttab_flags(3));
    check(gnttab_end_access(3) == -1, "an entry in use cannot be ended");

    st = gnttab_map(4, me, (u32)map_ro, GNTMAP_host_map, NULL);
    check(st == GNTST_general_error, "writable map of a read-only grant: %d", st);
    st = gnttab_map(4, me, (u32)map_ro, GNTMAP_host_map | GNTMAP_readonly, &h_ro);
    check(st == GNTST_okay, "read-only map: %d", st);
    check(memcmp(map_ro, "read-only", 10) == 0, "read through the read-only mapping");
    check(probe_write((u32)map_ro, 0) == (FAULT_FLAG | TRAP_page_fault),
          "a write through a read-only grant mapping faults");
    check((*gnttab_flags(4) & (GTF_reading | GTF_writing)) == GTF_reading,
          "GTF_reading only: %x", *gnttab_flags(4));

    check(gnttab_map(5, me, (u32)dest, GNTMAP_host_map, NULL) == GNTST_general_error,
          "an entry never granted");
    check(gnttab_map(NR_GRANT_ENTRIES, me, (u32)dest, GNTMAP_host_map, NULL) == GNTST_bad_gntref,
          "a reference past the table");
    check(gnttab_map(3, me, (u32)dest, 0, NULL) == GNTST_bad_gntref, "no map flags");
    check(gnttab_map(3, 0x7000, (u32)dest, GNTMAP_host_map, NULL) == GNTST_bad_domain,
          "an unknown domain");
    check(gnttab_map(3, me, HYPERVISOR_VIRT_START, GNTMAP_host_map, NULL)
          == GNTST_general_error, "a host address in the hole");

    check(gnttab_unmap((u32)map_ro + 4096, h_ro) == GNTST_general_error,
          "unmap through another address");
    check(gnttab_unmap((u32)map_rw, h_rw) == GNTST_okay, "unmap writable");
    check(gnttab_unmap((u32)map_ro, h_ro) == GNTST_okay, "unmap read-only");
    check(gnttab_unmap((u32)map_ro, h_ro) == GNTST_bad_handle, "a handle already freed");
    check(probe_read((u32)map_rw) == (FAULT_FLAG | TRAP_page_fault), "the mapping is gone");
    check((*gnttab_flags(3) & (GTF_reading | GTF_writing)) == 0, "flags cleared: %x",
          *gnttab_flags(3));
    check(gnttab_end_access(3) == 0 && *gnttab_flags(3) == 0, "ended once unmapped");

    struct copy_op c = { 4, me, 0, virt_to_mfn(dest), DOMID_SELF, 100, 10,
                         GNTCOPY_source_gref, 1, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1) == 0 && c.status == GNTST_okay,
          "copy from a grant: %d", c.status);
    check(memcmp(dest + 100, "read-only", 10) == 0, "the copied bytes");
    struct copy_op w = { virt_to_mfn(dest), DOMID_SELF, 0, 4, me, 0, 4,
                         GNTCOPY_dest_gref, 1, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &w, 1) == 0
          && w.status == GNTST_general_error, "copy into a read-only grant: %d", w.status);
    xtf_success(NULL);
}

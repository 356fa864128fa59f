/* xen_version and vm_assist: the answers of Xen 3.0.4 (xen/common/kernel.c). */
#include "xenrt.h"

const char test_title[] = "xen_version and vm_assist";

void test_main(void)
{
    char buf[1024];
    long rc = HYPERVISOR_xen_version(XENVER_version, NULL);
    check(rc == ((XEN_VERSION_MAJOR << 16) | XEN_VERSION_MINOR), "version %x", (u32)rc);
    memset(buf, 0x55, sizeof(buf));
    check(HYPERVISOR_xen_version(XENVER_extraversion, buf) == 0, "extraversion rc");
    check(strcmp(buf, XEN_EXTRAVERSION_STR) == 0, "extraversion '%s'", buf);
    check(HYPERVISOR_xen_version(XENVER_capabilities, buf) == 0, "capabilities rc");
    check(memcmp(buf, XEN_START_INFO_MAGIC_STR, XEN_START_INFO_MAGIC_NBYTES) == 0,
          "capabilities '%s'", buf);
    u32 virt_start = 0;
    check(HYPERVISOR_xen_version(XENVER_platform_parameters, &virt_start) == 0, "pp rc");
    check(virt_start == HYPERVISOR_VIRT_START, "virt_start %x", virt_start);
    check(HYPERVISOR_xen_version(XENVER_pagesize, NULL) == 4096, "pagesize");
    u32 fi[2] = { 0, 0xffffffff };
    check(HYPERVISOR_xen_version(XENVER_get_features, fi) == 0, "get_features rc");
    check(fi[1] == 0, "features submap %x", fi[1]);
    fi[0] = 1;
    check(HYPERVISOR_xen_version(XENVER_get_features, fi) == -EINVAL, "submap 1");
    check(HYPERVISOR_xen_version(99, buf) == -ENOSYS, "unknown query");
    check(HYPERVISOR_xen_version(XENVER_extraversion, (void *)0x1000) == -EFAULT,
          "unmapped buffer");
    check(HYPERVISOR_xen_version(XENVER_extraversion, (void *)HYPERVISOR_VIRT_START)
          == -EFAULT, "buffer in the hole");
    /* A read-only page (the page directory) cannot take the answer. */
    check(HYPERVISOR_xen_version(XENVER_extraversion, (void *)si_u32(START_INFO_pt_base))
          == -EFAULT, "read-only buffer");

    check(HYPERVISOR_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables) == 0,
          "enable writable_pagetables");
    check(HYPERVISOR_vm_assist(VMASST_CMD_disable, VMASST_TYPE_writable_pagetables) == 0,
          "disable");
    check(HYPERVISOR_vm_assist(VMASST_CMD_enable, MAX_VMASST_TYPE + 1) == -EINVAL, "bad type");
    check(HYPERVISOR_vm_assist(2, 0) == -ENOSYS, "bad cmd");
    check(HYPERVISOR_vm_assist(VMASST_CMD_enable, VMASST_TYPE_pae_extended_cr3) == 0, "pae");
    fi[0] = 0;
    HYPERVISOR_xen_version(XENVER_get_features, fi);
    check(fi[1] == (1u << XENFEAT_pae_pgdir_above_4gb), "features with pae_extended_cr3 %x",
          fi[1]);
}

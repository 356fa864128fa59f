"""Version and assist hypercalls: ``xen_version`` (17) and ``vm_assist`` (21).

Rules from Xen 3.0.4 xen/common/kernel.c (do_xen_version, vm_assist) and
xen/include/public/version.h: XENVER_version returns major << 16 | minor; the string queries
copy fixed-size buffers to the guest (-EFAULT if it cannot take them); get_features answers
submap 0 only (-EINVAL beyond); an unknown query is -ENOSYS. vm_assist: a type above
MAX_VMASST_TYPE is -EINVAL, a command other than enable/disable -ENOSYS. The model's
features submap is what 3.0.4 gives a non-translated x86_32 guest: only
XENFEAT_pae_pgdir_above_4gb, and only with VMASST_TYPE_pae_extended_cr3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi
from xenspec.spec.abi_profiles import VMASST_TYPE_architectural_iopl

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform


def _padded(text: bytes, size: int) -> bytes:
    return text[: size - 1].ljust(size, b"\0")


class Kernel:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["xen_version"]: self.do_xen_version,
            HYPERCALL_NUMBERS["vm_assist"]: self.do_vm_assist,
        }

    def _put(self, v: Vcpu, arg: int, data: bytes) -> int:
        return 0 if self.hv.copy_to_guest(v, arg, data) else -abi.EFAULT

    def do_xen_version(self, v: Vcpu, cmd: int, arg: int) -> int:
        profile = self.hv.profile
        if cmd == abi.XENVER_version:
            return (profile.xen_version[0] << 16) | profile.xen_version[1]
        if cmd == abi.XENVER_extraversion:
            return self._put(v, arg, _padded(abi.XEN_EXTRAVERSION, abi.XEN_EXTRAVERSION_LEN))
        if cmd == abi.XENVER_compile_info:
            info = (_padded(b"xenspec", 64) + _padded(b"xenspec", 16)
                    + _padded(b"refmodel", 32) + _padded(b"", 32))
            return self._put(v, arg, info)
        if cmd == abi.XENVER_capabilities:
            caps = "".join(f"{c} " for c in profile.capabilities).encode()
            return self._put(v, arg, _padded(caps, abi.XEN_CAPABILITIES_INFO_LEN))
        if cmd == abi.XENVER_changeset:
            return self._put(v, arg, _padded(b"xenspec refmodel", abi.XEN_CHANGESET_INFO_LEN))
        if cmd == abi.XENVER_platform_parameters:
            return self._put(v, arg, profile.hypervisor_virt_start.to_bytes(4, "little"))
        if cmd == abi.XENVER_get_features:
            raw = self.hv.copy_from_guest(v, arg, 4)
            if raw is None:
                return -abi.EFAULT
            idx = int.from_bytes(raw, "little")
            if idx >= abi.XENFEAT_NR_SUBMAPS:
                return -abi.EINVAL
            submap = 0
            if self.pv.darch(v.domain).vm_assist >> abi.VMASST_TYPE_pae_extended_cr3 & 1:
                submap |= 1 << abi.XENFEAT_pae_pgdir_above_4gb
            return self._put(v, arg + 4, submap.to_bytes(4, "little"))
        if cmd == abi.XENVER_pagesize:
            return abi.PAGE_SIZE
        if cmd == abi.XENVER_guest_handle:
            return self._put(v, arg, bytes(abi.XEN_GUEST_HANDLE_LEN))
        return -abi.ENOSYS

    def do_vm_assist(self, v: Vcpu, cmd: int, type: int) -> int:
        """3.0.4's types 0..MAX_VMASST_TYPE; on the compat-pae profile also
        architectural_iopl (4.19 common/domain.c do_vm_assist with PV32_VM_ASSIST_MASK)."""
        compat = self.hv.profile.paging_levels == 3
        if type > abi.MAX_VMASST_TYPE and not (compat and type == VMASST_TYPE_architectural_iopl):
            return -abi.EINVAL
        a = self.pv.darch(v.domain)
        if cmd == abi.VMASST_CMD_enable:
            a.vm_assist |= 1 << type
            return 0
        if cmd == abi.VMASST_CMD_disable:
            a.vm_assist &= ~(1 << type)
            return 0
        return -abi.ENOSYS

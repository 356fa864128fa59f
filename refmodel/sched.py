"""Scheduling hypercalls: ``sched_op_compat`` (6) and ``sched_op`` (29).

Rules from Xen 3.0.4 xen/common/schedule.c (do_sched_op_compat, do_sched_op) and
xen/include/public/sched.h: yield gives up the CPU; block clears the event mask and blocks
until an event is pending; shutdown records the reason (compat: the second argument; new: a
``sched_shutdown`` structure in guest memory, -EFAULT if unreadable); remote_shutdown is
privileged; any other command is -ENOSYS. The model runs one vCPU at a time and has no event
sources yet, so yield and block return at once (block unmasks events, as Xen does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain, ShutdownReason, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform


def domain_shutdown(d: Domain, reason: int) -> None:
    """xen/common/domain.c, domain_shutdown: the domain stops with ``reason``. Xen keeps any
    8-bit code; the model records codes it does not know as a crash that says so."""
    if not d.is_running:
        return
    try:
        d.shutdown_reason = ShutdownReason(reason)
    except ValueError:
        d.crash(f"shutdown with unknown reason {reason}")
        return
    if d.shutdown_reason is ShutdownReason.crash:
        d.crash_reason = "the guest reported a crash (SHUTDOWN_crash)"


class Sched:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.yields = 0

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["sched_op_compat"]: self.do_sched_op_compat,
            HYPERCALL_NUMBERS["sched_op"]: self.do_sched_op,
        }

    def _yield(self, v: Vcpu) -> int:
        self.yields += 1
        return 0

    def _block(self, v: Vcpu) -> int:
        self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)
        return self._yield(v)

    def do_sched_op_compat(self, v: Vcpu, cmd: int, arg: int) -> int:
        if cmd == abi.SCHEDOP_yield:
            return self._yield(v)
        if cmd == abi.SCHEDOP_block:
            return self._block(v)
        if cmd == abi.SCHEDOP_shutdown:
            domain_shutdown(v.domain, arg & 0xFF)
            return 0
        return -abi.ENOSYS

    def do_sched_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        if cmd == abi.SCHEDOP_yield:
            return self._yield(v)
        if cmd == abi.SCHEDOP_block:
            return self._block(v)
        if cmd == abi.SCHEDOP_shutdown:
            raw = self.hv.copy_from_guest(v, arg, 4)
            if raw is None:
                return -abi.EFAULT
            domain_shutdown(v.domain, int.from_bytes(raw, "little") & 0xFF)
            return 0
        if cmd == abi.SCHEDOP_remote_shutdown:
            if not v.domain.is_privileged:
                return -abi.EPERM
            raw = self.hv.copy_from_guest(v, arg, 8)
            if raw is None:
                return -abi.EFAULT
            target = self.hv.domains.get(int.from_bytes(raw[0:2], "little"))
            if target is None:
                return -abi.ESRCH
            domain_shutdown(target, int.from_bytes(raw[4:8], "little") & 0xFF)
            return 0
        return -abi.ENOSYS

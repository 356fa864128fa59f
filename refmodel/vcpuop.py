"""vcpu_op: a domain's requests about its vCPUs (xen/common/domain.c, do_vcpu_op, Xen 3.0.4;
public/vcpu.h), as far as a domain of one vCPU needs it.

``vcpu_op(cmd, vcpuid, arg)``. The vCPU is checked before the command: an id below 0 or at or
above MAX_VIRT_CPUS is -EINVAL, an id the domain has no vCPU for is -ENOENT (whatever
``cmd`` is). On a vCPU the domain has, the model answers:

* VCPUOP_initialise: -EEXIST (the vCPU is initialised: _VCPUF_initialised; 3.0.4 reads the
  ``vcpu_guest_context`` first, so an unreadable one is -EFAULT);
* VCPUOP_up: 0 (initialised and not down: nothing to wake);
* VCPUOP_is_up: 1 (not _VCPUF_down);
* VCPUOP_get_runstate_info: a ``vcpu_runstate_info`` written to ``arg`` (-EFAULT if it cannot
  be): the caller is RUNSTATE_running since now (schedule.c vcpu_runstate_get adds the time
  of the current state up to NOW()), ``time[RUNSTATE_running]`` is its run time (the domain's,
  refmodel/clock.py) and ``time[RUNSTATE_runnable]`` the rest of the system time since boot.

Not modelled, -ENOSYS (listed, as Xen answers an absent command): VCPUOP_down (it would take
the domain's only vCPU off the scheduler for good), VCPUOP_register_runstate_memory_area
(3.0.4 x86 domain.c arch_do_vcpu_op), and any other command. Departures: the run state does
not tell runnable, blocked and offline time apart (the model's clock keeps the run time only),
and its state_entry_time is the time of the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform


def _signed(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >> 31 else x


class VcpuOp:
    """do_vcpu_op of one platform."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["vcpu_op"]: self.do_vcpu_op}

    def do_vcpu_op(self, v: Vcpu, cmd: int, vcpuid: int, arg: int) -> int:
        """Hypercall 24: ``cmd`` on the caller's domain's vCPU ``vcpuid`` (an int)."""
        vcpuid = _signed(vcpuid)
        if not 0 <= vcpuid < abi.MAX_VIRT_CPUS:
            return -abi.EINVAL
        vcpus = v.domain.vcpus
        if vcpuid >= len(vcpus):
            return -abi.ENOENT
        target = vcpus[vcpuid]
        if cmd == abi.VCPUOP_initialise:
            raw = self.hv.copy_from_guest(v, arg, abi.SIZEOF_VCPU_GUEST_CONTEXT)
            return -abi.EFAULT if raw is None else -abi.EEXIST
        if cmd == abi.VCPUOP_up:
            return 0
        if cmd == abi.VCPUOP_is_up:
            return 1
        if cmd == abi.VCPUOP_get_runstate_info:
            data = self.runstate(target)
            return 0 if self.hv.copy_to_guest(v, arg, data) else -abi.EFAULT
        return -abi.ENOSYS

    def runstate(self, v: Vcpu) -> bytes:
        """schedule.c, vcpu_runstate_get, as the module docstring says."""
        clock = self.pv.clock
        now = clock.now_ns()
        run = clock.domain_run_ns(v.domain)
        times = (run, max(0, now - run), 0, 0)
        return abi.VCPU_RUNSTATE_INFO_T.pack(abi.RUNSTATE_running, now, *times)

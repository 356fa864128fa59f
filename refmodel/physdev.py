"""physdev_op (hypercall 33) and physdev_op_compat (19): a vCPU's I/O privilege.

Rules from Xen 3.0.4, xen/arch/x86/physdev.c (do_physdev_op) and xen/common/compat.c
(do_physdev_op_compat); numbers and structures from xen/include/public/physdev.h:

* PHYSDEVOP_set_iopl: the argument (struct physdev_set_iopl) must be readable (-EFAULT) and
  the level at most 3 (-EINVAL); it becomes the vCPU's virtual IOPL, which the emulation of
  I/O instructions and CLI/STI consults (refmodel/emulate.py, guest_io_okay). The processor's
  own IOPL stays 0.
* PHYSDEVOP_set_iobitmap: the argument (struct physdev_set_iobitmap) must be readable
  (-EFAULT); the bitmap's IOBMP_BYTES must lie below the hypervisor (guest_handle_okay) and
  nr_ports be at most 65536 (-EINVAL). Xen keeps the guest pointer, not a copy: the bitmap is
  read through the guest's page tables at each check.
* The compat form copies the whole struct physdev_op (-EFAULT) and hands its command and the
  address of its union to physdev_op.

* PHYSDEVOP_irq_status_query: any domain may ask about any line below NR_IRQS (-EFAULT,
  -EINVAL otherwise); the flags say whether the line needs an EOI or is shared. The model's
  machine has no physical interrupt lines in use, so they are 0.
* PHYSDEVOP_eoi (irq below NR_IRQS, else -EINVAL) and the legacy PHYSDEVOP_IRQ_UNMASK_NOTIFY
  (no argument): pirq_guest_eoi / pirq_guest_unmask over the domain's bound physical IRQs,
  of which there are none here: 0.
* PHYSDEVOP_apic_read, PHYSDEVOP_apic_write, PHYSDEVOP_alloc_irq_vector: the argument must
  be readable (-EFAULT), and only a privileged domain may go on (-EPERM). Departure: the
  model has no IO-APIC, so a privileged domain gets -ENOSYS where Xen would read, write or
  allocate.
* Any other command: -ENOSYS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from collections.abc import Callable

    from xenspec.refmodel.platform import PVPlatform

MAX_PORTS = 65536


class Physdev:
    """physdev_op of one platform."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["physdev_op"]: self.do_physdev_op,
            HYPERCALL_NUMBERS["physdev_op_compat"]: self.do_physdev_op_compat,
        }

    def do_physdev_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        if cmd == abi.PHYSDEVOP_set_iopl:
            return self.set_iopl(v, arg)
        if cmd == abi.PHYSDEVOP_set_iobitmap:
            return self.set_iobitmap(v, arg)
        if cmd == abi.PHYSDEVOP_irq_status_query:
            return self.irq_status_query(v, arg)
        if cmd == abi.PHYSDEVOP_eoi:
            return self.eoi(v, arg)
        if cmd == abi.PHYSDEVOP_IRQ_UNMASK_NOTIFY:
            return 0  # pirq_guest_unmask: no physical IRQ is bound to a domain here
        apic_or_vector = {abi.PHYSDEVOP_apic_read: abi.PHYSDEV_APIC_T,
                          abi.PHYSDEVOP_apic_write: abi.PHYSDEV_APIC_T,
                          abi.PHYSDEVOP_alloc_irq_vector: abi.PHYSDEV_IRQ_T}.get(cmd)
        if apic_or_vector is not None:
            return self.privileged_only(v, arg, apic_or_vector.size)
        return -abi.ENOSYS

    def irq_status_query(self, v: Vcpu, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, abi.PHYSDEV_IRQ_STATUS_QUERY_T.size)
        if raw is None:
            return -abi.EFAULT
        irq, _ = abi.PHYSDEV_IRQ_STATUS_QUERY_T.unpack(raw)
        if irq >= abi.NR_IRQS:
            return -abi.EINVAL
        flags = 0  # pirq_acktype and pirq_shared of a line nothing uses
        out = abi.PHYSDEV_IRQ_STATUS_QUERY_T.pack(irq, flags)
        return 0 if self.hv.copy_to_guest(v, arg, out) else -abi.EFAULT

    def eoi(self, v: Vcpu, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, abi.PHYSDEV_EOI_T.size)
        if raw is None:
            return -abi.EFAULT
        (irq,) = abi.PHYSDEV_EOI_T.unpack(raw)
        return -abi.EINVAL if irq >= abi.NR_IRQS else 0  # pirq_guest_eoi of an unbound line

    def privileged_only(self, v: Vcpu, arg: int, size: int) -> int:
        """apic_read, apic_write, alloc_irq_vector: copied in, then IS_PRIV."""
        if self.hv.copy_from_guest(v, arg, size) is None:
            return -abi.EFAULT
        if not v.domain.is_privileged:
            return -abi.EPERM
        return -abi.ENOSYS  # no IO-APIC in the model (see the module's departure)

    def do_physdev_op_compat(self, v: Vcpu, uop: int) -> int:
        raw = self.hv.copy_from_guest(v, uop, abi.PHYSDEV_OP_T.size)
        if raw is None:
            return -abi.EFAULT
        (cmd,) = abi.PHYSDEV_OP_T.unpack(raw)
        return self.do_physdev_op(v, cmd, uop + abi.PHYSDEV_OP_u)

    def set_iopl(self, v: Vcpu, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, abi.PHYSDEV_SET_IOPL_T.size)
        if raw is None:
            return -abi.EFAULT
        (iopl,) = abi.PHYSDEV_SET_IOPL_T.unpack(raw)
        if iopl > 3:
            return -abi.EINVAL
        self.pv.arch(v).iopl = iopl
        return 0

    def set_iobitmap(self, v: Vcpu, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, abi.PHYSDEV_SET_IOBITMAP_T.size)
        if raw is None:
            return -abi.EFAULT
        bitmap, nr_ports = abi.PHYSDEV_SET_IOBITMAP_T.unpack(raw)
        if not self.hv.array_access_ok(bitmap, abi.IOBMP_BYTES, 1) or nr_ports > MAX_PORTS:
            return -abi.EINVAL
        a = self.pv.arch(v)
        a.iobmp, a.iobmp_limit = bitmap, nr_ports
        return 0

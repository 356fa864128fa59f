"""Event channels: ``event_channel_op`` (32), ``event_channel_op_compat`` (16), delivery into
shared_info, and the upcall to the guest's event callback.

Rules from Xen 3.0.4 xen/common/event_channel.c: each domain has up to NR_EVENT_CHANNELS ports
in buckets of EVTCHNS_PER_BUCKET, a port being valid once its bucket exists (port_is_valid);
get_free_port takes the lowest free port, adding a bucket when none is free (-ENOSPC past the
last); port 0 is ECS_RESERVED from domain creation (evtchn_init). The commands are
evtchn_alloc_unbound, evtchn_bind_interdomain, evtchn_bind_virq, evtchn_bind_ipi,
evtchn_bind_pirq, __evtchn_close, evtchn_send, evtchn_status, evtchn_bind_vcpu and
evtchn_unmask, with their errno values and order of checks; do_event_channel_op copies the
argument in (-EFAULT) and the OUT fields back (-EFAULT after the effect, as Xen: "cleaning up
here would be a mess"); unknown commands are -ENOSYS. The compat call (xen/arch/x86/compat.c,
do_event_channel_op_compat) reads a struct evtchn_op and runs its command on the union.

Delivery is evtchn_set_pending: set the port's bit in shared_info.evtchn_pending; if it was
clear and the port is not masked, set the selector bit (port / 32) in the vCPU's
evtchn_pending_sel and, if that was clear, evtchn_upcall_pending (vcpu_mark_events_pending),
then kick the vCPU (the scheduler's ``wake``, when it has one). The upcall is x86_32/entry.S
test_all_events / process_guest_events: when upcall_pending is set and upcall_mask is clear,
create_bounce_frame builds an exception frame with no error code (EIP, CS with the saved mask
in bits 16-23, EFLAGS with IF set, and ESP, SS from ring 3) on the guest kernel stack, enters
the event callback of set_callbacks, and sets upcall_mask (TBF_INTERRUPT). A fault while
writing that frame crashes the domain (entry.S, the __ex_table entries of create_bounce_frame
lead to domain_crash_synchronous); Xen 3.0.4 uses the failsafe callback only when reloading
the guest's data segments faults, which this model's ring entry cannot do.

On the compat-pae profile (Xen 4.19) the FIFO ABI's setup commands answer their argument
checks as 4.19 does (common/event_fifo.c evtchn_fifo_init_control, map_guest_page): a vCPU
that does not exist is -ENOENT, a control block crossing its page or misaligned -EINVAL, a
frame the domain cannot map writable -EINVAL; EVTCHNOP_expand_array without FIFO set up is
-EOPNOTSUPP. Departure: FIFO event channels themselves are not modelled, so a request that
passes every check is -ENOSYS (guests then keep the 2-level ABI, as Linux does on any
error); 4.19 would switch the domain to FIFO.

Not modelled: physical IRQs (bind_pirq checks the range, -EINVAL, then refuses every pirq with
-EPERM as irq_access_permitted does for a domain granted none), ACM hooks (the dummy policy
allows everything). SCHEDOP_poll's flags are the scheduler's: it asks ``port_pending``, and
every newly pending event wakes the domain's polling vCPUs (``wake_polling``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    EOPNOTSUPP,
    EVTCHN_FIFO_CONTROL_BLOCK_SIZE,
    EVTCHN_INIT_CONTROL_T,
    EVTCHNOP_expand_array,
    EVTCHNOP_init_control,
)
from xenspec.spec.concrete import ConcreteLogic
from xenspec.spec.pagetable import PGT

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_BOUNCE_CLEAR = abi.X86_EFLAGS_TF | abi.X86_EFLAGS_NT | abi.X86_EFLAGS_RF | abi.X86_EFLAGS_VM
# event_channel.c, virq_is_global: these VIRQs are per vCPU; all others are global.
PER_VCPU_VIRQS = frozenset({abi.VIRQ_TIMER, abi.VIRQ_DEBUG, abi.VIRQ_XENOPROF})


def virq_is_global(virq: int) -> bool:
    return virq not in PER_VCPU_VIRQS


@dataclass
class Channel:
    """xen/include/xen/sched.h, struct evtchn. ``remote_dom`` is u.unbound.remote_domid for an
    unbound port and the remote domain's id for an interdomain one."""

    state: int = abi.ECS_FREE
    notify_vcpu: int = 0
    remote_dom: int = 0
    remote_port: int = 0
    virq: int = 0


@dataclass
class DomainEvents:
    """A domain's ports (d->evtchn buckets) and each vCPU's virq_to_evtchn table."""

    ports: list[Channel] = field(default_factory=list)
    virq_to_evtchn: dict[int, list[int]] = field(default_factory=dict)

    def valid(self, port: int) -> bool:
        return 0 <= port < len(self.ports)

    def virqs(self, vcpu_id: int) -> list[int]:
        return self.virq_to_evtchn.setdefault(vcpu_id, [0] * abi.NR_VIRQS)


class EventError(Exception):
    """An EVTCHNOP fails with ``-errno``."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


def _fail(errno: int) -> EventError:
    return EventError(errno)


class Events:
    """The event-channel subsystem of one platform (``pv.events``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.doms: dict[int, DomainEvents] = {}
        self.upcalls = 0
        # Python listeners, by (domain id, port): the model's backend domain
        # (refmodel/backend.py). An event for such a port marks it pending and queues it in
        # ``listeners_due`` (in order of arrival); ``run_listeners`` calls them later.
        self.listeners: dict[tuple[int, int], Callable[[], None]] = {}
        self.listeners_due: dict[tuple[int, int], None] = {}
        _EVENTS_OF[pv.hv] = weakref.ref(self)  # weak both ways: machines must be freed
        self._ops: dict[int, tuple[int, Callable[[Vcpu, bytes], bytes | None]]] = {
            abi.EVTCHNOP_alloc_unbound: (abi.EVTCHN_ALLOC_UNBOUND_T.size, self._op_alloc_unbound),
            abi.EVTCHNOP_bind_interdomain: (abi.EVTCHN_BIND_INTERDOMAIN_T.size,
                                            self._op_bind_interdomain),
            abi.EVTCHNOP_bind_virq: (abi.EVTCHN_BIND_VIRQ_T.size, self._op_bind_virq),
            abi.EVTCHNOP_bind_ipi: (abi.EVTCHN_BIND_IPI_T.size, self._op_bind_ipi),
            abi.EVTCHNOP_bind_pirq: (abi.EVTCHN_BIND_PIRQ_T.size, self._op_bind_pirq),
            abi.EVTCHNOP_close: (abi.EVTCHN_PORT_T.size, self._op_close),
            abi.EVTCHNOP_send: (abi.EVTCHN_PORT_T.size, self._op_send),
            abi.EVTCHNOP_status: (abi.EVTCHN_STATUS_T.size, self._op_status),
            abi.EVTCHNOP_bind_vcpu: (abi.EVTCHN_BIND_VCPU_T.size, self._op_bind_vcpu),
            abi.EVTCHNOP_unmask: (abi.EVTCHN_PORT_T.size, self._op_unmask),
        }
        if self.hv.profile.paging_levels == 3:  # Xen 4.19's FIFO setup commands
            self._ops[EVTCHNOP_init_control] = (EVTCHN_INIT_CONTROL_T.size,
                                                self._op_init_control)
            self._ops[EVTCHNOP_expand_array] = (8, self._op_expand_array)

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["event_channel_op"]: self.do_event_channel_op,
            HYPERCALL_NUMBERS["event_channel_op_compat"]: self.do_event_channel_op_compat,
        }

    # ----------------------------------------------------------------------------------------
    # Per-domain state.
    # ----------------------------------------------------------------------------------------
    def dom(self, d: Domain) -> DomainEvents:
        """The domain's event state; evtchn_init (first use): bucket 0, port 0 reserved."""
        de = self.doms.get(d.domain_id)
        if de is None:
            de = self.doms[d.domain_id] = DomainEvents()
            port = self._get_free_port(de)
            de.ports[port].state = abi.ECS_RESERVED
        return de

    def channel(self, d: Domain, port: int) -> Channel | None:
        de = self.dom(d)
        return de.ports[port] if de.valid(port) else None

    @staticmethod
    def _get_free_port(de: DomainEvents) -> int:
        """get_free_port: the lowest free valid port, else a new bucket's first port."""
        for port, chn in enumerate(de.ports):
            if chn.state == abi.ECS_FREE:
                return port
        port = len(de.ports)
        if port == abi.NR_EVENT_CHANNELS:
            raise _fail(abi.ENOSPC)
        de.ports.extend(Channel() for _ in range(abi.EVTCHNS_PER_BUCKET))
        return port

    def _find_domain(self, v: Vcpu, domid: int, privileged_only: bool) -> Domain:
        """DOMID_SELF is the caller; naming another domain needs privilege (-EPERM) when
        ``privileged_only``; an unknown domain is -ESRCH (find_domain_by_id)."""
        if domid == abi.DOMID_SELF:
            return v.domain
        if privileged_only and not v.domain.is_privileged:
            raise _fail(abi.EPERM)
        d = self.hv.domains.get(domid)
        if d is None:
            raise _fail(abi.ESRCH)
        return d

    def _vcpu(self, d: Domain, vcpu_id: int) -> Vcpu | None:
        if vcpu_id >= abi.MAX_VIRT_CPUS or vcpu_id >= len(d.vcpus):
            return None
        return d.vcpus[vcpu_id]

    # ----------------------------------------------------------------------------------------
    # The commands (event_channel.c), on decoded arguments; each returns its OUT values.
    # ----------------------------------------------------------------------------------------
    def alloc_unbound(self, v: Vcpu, dom: int, remote_dom: int) -> int:
        """evtchn_alloc_unbound: a port of ``dom`` that ``remote_dom`` may bind."""
        d = self._find_domain(v, dom, privileged_only=True)
        de = self.dom(d)
        port = self._get_free_port(de)
        chn = de.ports[port]
        chn.state = abi.ECS_UNBOUND
        chn.remote_dom = v.domain.domain_id if remote_dom == abi.DOMID_SELF else remote_dom
        return port

    def bind_interdomain(self, v: Vcpu, remote_dom: int, remote_port: int) -> int:
        """evtchn_bind_interdomain: connect a new local port to the remote domain's unbound
        port offered to us; the local end is conservatively made pending."""
        ld = v.domain
        rd = self._find_domain(v, remote_dom, privileged_only=False)
        lde, rde = self.dom(ld), self.dom(rd)
        lport = self._get_free_port(lde)
        if not rde.valid(remote_port):
            raise _fail(abi.EINVAL)
        rchn = rde.ports[remote_port]
        if rchn.state != abi.ECS_UNBOUND or rchn.remote_dom != ld.domain_id:
            raise _fail(abi.EINVAL)
        lchn = lde.ports[lport]
        lchn.state, lchn.remote_dom, lchn.remote_port = (
            abi.ECS_INTERDOMAIN, rd.domain_id, remote_port)
        rchn.state, rchn.remote_dom, rchn.remote_port = (
            abi.ECS_INTERDOMAIN, ld.domain_id, lport)
        self.set_pending(ld.vcpus[lchn.notify_vcpu], lport)
        return lport

    def bind_virq(self, v: Vcpu, virq: int, vcpu_id: int) -> int:
        """evtchn_bind_virq."""
        d = v.domain
        if virq >= abi.NR_VIRQS:
            raise _fail(abi.EINVAL)
        if virq_is_global(virq) and vcpu_id != 0:
            raise _fail(abi.EINVAL)
        if self._vcpu(d, vcpu_id) is None:
            raise _fail(abi.ENOENT)
        de = self.dom(d)
        table = de.virqs(vcpu_id)
        if table[virq] != 0:
            raise _fail(abi.EEXIST)
        port = self._get_free_port(de)
        chn = de.ports[port]
        chn.state, chn.notify_vcpu, chn.virq = abi.ECS_VIRQ, vcpu_id, virq
        table[virq] = port
        return port

    def bind_ipi(self, v: Vcpu, vcpu_id: int) -> int:
        """evtchn_bind_ipi."""
        if self._vcpu(v.domain, vcpu_id) is None:
            raise _fail(abi.ENOENT)
        de = self.dom(v.domain)
        port = self._get_free_port(de)
        de.ports[port].state, de.ports[port].notify_vcpu = abi.ECS_IPI, vcpu_id
        return port

    def bind_pirq(self, v: Vcpu, pirq: int) -> int:
        """evtchn_bind_pirq: no domain is granted a physical IRQ (irq_access_permitted)."""
        if pirq >= abi.NR_PIRQS:
            raise _fail(abi.EINVAL)
        raise _fail(abi.EPERM)

    def close(self, d: Domain, port: int) -> None:
        """__evtchn_close: free the port; an interdomain peer goes back to unbound, offered
        to us again; a VIRQ binding is dropped from virq_to_evtchn."""
        de = self.dom(d)
        if not de.valid(port) or de.ports[port].state in (abi.ECS_FREE, abi.ECS_RESERVED):
            raise _fail(abi.EINVAL)
        chn = de.ports[port]
        if chn.state == abi.ECS_VIRQ:
            for table in de.virq_to_evtchn.values():
                if table[chn.virq] == port:
                    table[chn.virq] = 0
        elif chn.state == abi.ECS_INTERDOMAIN:
            peer = self.doms[chn.remote_dom].ports[chn.remote_port]
            peer.state, peer.remote_dom, peer.remote_port = abi.ECS_UNBOUND, d.domain_id, 0
        de.ports[port] = Channel()

    def send(self, v: Vcpu, port: int) -> None:
        """evtchn_send: notify the remote end of an interdomain port, or the IPI's vCPU; an
        unbound port drops the notification; anything else is -EINVAL."""
        d = v.domain
        chn = self.channel(d, port)
        if chn is None:
            raise _fail(abi.EINVAL)
        if chn.state == abi.ECS_INTERDOMAIN:
            rd = self.hv.domains[chn.remote_dom]
            rchn = self.doms[chn.remote_dom].ports[chn.remote_port]
            self.set_pending(rd.vcpus[rchn.notify_vcpu], chn.remote_port)
        elif chn.state == abi.ECS_IPI:
            self.set_pending(d.vcpus[chn.notify_vcpu], port)
        elif chn.state != abi.ECS_UNBOUND:
            raise _fail(abi.EINVAL)

    def status(self, v: Vcpu, dom: int, port: int) -> tuple[int, int, dict[int, bytes]]:
        """evtchn_status: (status, vcpu, the bytes of the union ``u`` Xen writes, by offset
        in ``u``); the other bytes of ``u`` keep what the guest passed in."""
        d = self._find_domain(v, dom, privileged_only=True)
        chn = self.channel(d, port)
        if chn is None:
            raise _fail(abi.EINVAL)
        s = chn.state
        u: dict[int, bytes] = {}
        if s in (abi.ECS_FREE, abi.ECS_RESERVED):
            status = abi.EVTCHNSTAT_closed
        elif s == abi.ECS_UNBOUND:
            status, u[0] = abi.EVTCHNSTAT_unbound, chn.remote_dom.to_bytes(2, "little")
        elif s == abi.ECS_INTERDOMAIN:
            status = abi.EVTCHNSTAT_interdomain
            u[0] = chn.remote_dom.to_bytes(2, "little")
            u[4] = chn.remote_port.to_bytes(4, "little")
        elif s == abi.ECS_VIRQ:
            status, u[0] = abi.EVTCHNSTAT_virq, chn.virq.to_bytes(4, "little")
        else:
            status = abi.EVTCHNSTAT_ipi
        return status, chn.notify_vcpu, u

    def bind_vcpu(self, v: Vcpu, port: int, vcpu_id: int) -> None:
        """evtchn_bind_vcpu: which vCPU an unbound, interdomain, PIRQ or global-VIRQ port
        notifies."""
        d = v.domain
        if self._vcpu(d, vcpu_id) is None:
            raise _fail(abi.ENOENT)
        chn = self.channel(d, port)
        if chn is None:
            raise _fail(abi.EINVAL)
        movable = (abi.ECS_UNBOUND, abi.ECS_INTERDOMAIN, abi.ECS_PIRQ)
        if chn.state in movable or (chn.state == abi.ECS_VIRQ and virq_is_global(chn.virq)):
            chn.notify_vcpu = vcpu_id
            return
        raise _fail(abi.EINVAL)

    def unmask(self, v: Vcpu, port: int) -> None:
        """evtchn_unmask: clear the mask bit; if the port was masked and is pending, mark the
        selector and the upcall as set_pending would have."""
        d = v.domain
        chn = self.channel(d, port)
        if chn is None:
            raise _fail(abi.EINVAL)
        if not self.pv.darch(d).shared_info_mfn:
            return
        if self._test_and_clear(d, abi.SHARED_INFO_evtchn_mask, port) and self._test(
                d, abi.SHARED_INFO_evtchn_pending, port):
            self._mark_selector(d.vcpus[chn.notify_vcpu], port)

    # ----------------------------------------------------------------------------------------
    # Delivery (evtchn_set_pending, send_guest_vcpu_virq, send_guest_global_virq).
    # ----------------------------------------------------------------------------------------
    def set_pending(self, v: Vcpu, port: int) -> None:
        d = v.domain
        key = (d.domain_id, port)
        if key in self.listeners:
            # A back end's port: pending in its domain, served when that domain runs. Its
            # vCPU takes no upcall (the model's back ends are not guest code).
            if self.pv.darch(d).shared_info_mfn:
                self._test_and_set(d, abi.SHARED_INFO_evtchn_pending, port)
            self.listeners_due[key] = None
            return
        if not self.pv.darch(d).shared_info_mfn:
            return  # a domain the platform never set up has no shared_info to mark
        if self._test_and_set(d, abi.SHARED_INFO_evtchn_pending, port):
            return
        if not self._test(d, abi.SHARED_INFO_evtchn_mask, port):
            self._mark_selector(v, port)
        wake_polling = getattr(self.pv.sched, "wake_polling", None)
        if wake_polling is not None:
            wake_polling(d)  # vCPUs polling are woken even when the selector was set

    def run_listeners(self) -> int:
        """The listeners of the ports that became pending since the last call, once each
        and in order of arrival, each port's pending bit cleared first (the handling of an
        event by the domain's kernel: evtchn_do_upcall clears the bit, then calls the
        handler). An event raised meanwhile waits for the next call. Returns how many ran."""
        due = list(self.listeners_due)
        self.listeners_due.clear()
        ran = 0
        for domid, port in due:
            listener = self.listeners.get((domid, port))
            if listener is None:
                continue  # no longer listened to (the back end let go of the port)
            d = self.hv.domains.get(domid)
            if d is not None and self.pv.darch(d).shared_info_mfn:
                self._test_and_clear(d, abi.SHARED_INFO_evtchn_pending, port)
            listener()
            ran += 1
        return ran

    def _mark_selector(self, v: Vcpu, port: int) -> None:
        sel = self.pv.vcpu_info_maddr(v) + abi.VCPU_INFO_evtchn_pending_sel
        if self._bit_test_and_set(sel, port // abi.BITS_PER_LONG):
            return
        pending = self.pv.vcpu_info_maddr(v) + abi.VCPU_INFO_evtchn_upcall_pending
        if not self._bit_test_and_set(pending, 0):
            self.kick(v)

    def kick(self, v: Vcpu) -> None:
        """vcpu_kick: wake the vCPU if the scheduler can (it may be blocked)."""
        wake = getattr(self.pv.sched, "wake", None)
        if wake is not None:
            wake(v)

    def send_virq(self, v: Vcpu, virq: int) -> None:
        """send_guest_vcpu_virq (per-vCPU VIRQs) or send_guest_global_virq (the others)."""
        d = v.domain
        if not virq_is_global(virq):
            port = self.dom(d).virqs(v.vcpu_id)[virq]
            if port:
                self.set_pending(v, port)
            return
        port = self.dom(d).virqs(0)[virq]
        if port:
            self.set_pending(d.vcpus[self.dom(d).ports[port].notify_vcpu], port)

    # ----------------------------------------------------------------------------------------
    # The scheduler's questions (SCHEDOP_block, SCHEDOP_poll).
    # ----------------------------------------------------------------------------------------
    def has_pending(self, v: Vcpu) -> bool:
        """local_events_need_delivery: an upcall is pending and not masked."""
        return self.upcall_due(v)()

    def upcall_due(self, v: Vcpu) -> Callable[[], bool]:
        """``has_pending`` of one vCPU as a closure over its two vcpu_info bytes in machine
        memory (the CPU asks it after every trap; shared_info never moves)."""
        info = self.pv.vcpu_info_maddr(v)
        ram = self.hv.memory.ram
        pending = info + abi.VCPU_INFO_evtchn_upcall_pending
        mask = info + abi.VCPU_INFO_evtchn_upcall_mask
        return lambda: bool(ram[pending]) and not ram[mask]

    def port_pending(self, d: Domain, port: int) -> bool:
        """The port's bit in shared_info.evtchn_pending (0 <= port < NR_EVENT_CHANNELS)."""
        return 0 <= port < abi.NR_EVENT_CHANNELS and bool(
            self.pv.darch(d).shared_info_mfn) and self._test(
            d, abi.SHARED_INFO_evtchn_pending, port)

    # ----------------------------------------------------------------------------------------
    # The upcall (entry.S, test_all_events -> process_guest_events -> create_bounce_frame).
    # ----------------------------------------------------------------------------------------
    def upcall_if_pending(self, v: Vcpu, regs: CpuUserRegs) -> bool:
        """Bounce to the event callback if an upcall is pending and unmasked; True if the
        guest's registers now enter the callback (or the domain was crashed)."""
        if not v.domain.is_running or not self.has_pending(v):
            return False
        arch = self.pv.arch(v)
        d = v.domain
        where = f"{regs.cs:#x}:{regs.eip:#x}"
        if arch.event_callback_cs & ~3 == 0:
            d.crash(f"event upcall at {where} with no event callback registered")
            return True
        words = [regs.eip, regs.cs, regs.eflags | abi.X86_EFLAGS_IF]  # saved mask is 0
        if not self.pv.traps.create_bounce_frame(
                v, regs, words, arch.event_callback_cs, arch.event_callback_eip, "event upcall"):
            return True
        self.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 1)
        self.upcalls += 1
        return True

    # ----------------------------------------------------------------------------------------
    # The hypercalls: argument copying around the commands.
    # ----------------------------------------------------------------------------------------
    def do_event_channel_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        """Hypercall 32: copy the command's structure in, run it, copy OUT fields back."""
        op = self._ops.get(cmd)
        if op is None:
            return -abi.ENOSYS
        size, run = op
        raw = self.hv.copy_from_guest(v, arg, size)
        if raw is None:
            return -abi.EFAULT
        try:
            out = run(v, raw)
        except EventError as e:
            return -e.errno
        if out is not None and not self.hv.copy_to_guest(v, arg, out):
            return -abi.EFAULT
        return 0

    def do_event_channel_op_compat(self, v: Vcpu, uop: int) -> int:
        """Hypercall 16: struct evtchn_op { cmd; union u; } (compat.c)."""
        raw = self.hv.copy_from_guest(v, uop, abi.EVTCHN_OP_T.size)
        if raw is None:
            return -abi.EFAULT
        cmd = int.from_bytes(raw[0:4], "little")
        return self.do_event_channel_op(v, cmd, (uop + abi.EVTCHN_OP_u) & 0xFFFFFFFF)

    def _op_init_control(self, v: Vcpu, raw: bytes) -> bytes | None:
        """EVTCHNOP_init_control (4.19 evtchn_fifo_init_control): see the module docstring."""
        gfn, offset, vcpu = EVTCHN_INIT_CONTROL_T.unpack(raw)[:3]
        if vcpu >= len(v.domain.vcpus):
            raise EventError(abi.ENOENT)
        if offset > abi.PAGE_SIZE - EVTCHN_FIFO_CONTROL_BLOCK_SIZE or offset & 7:
            raise EventError(abi.EINVAL)
        mm = self.hv.mm
        if not mm.get_page_and_type_from_pagenr(gfn, PGT.writable_page, v.domain):
            raise EventError(abi.EINVAL)  # map_guest_page
        mm.put_page_and_type(gfn)
        raise EventError(abi.ENOSYS)  # FIFO event channels are not modelled

    def _op_expand_array(self, v: Vcpu, raw: bytes) -> bytes | None:
        """EVTCHNOP_expand_array: FIFO is never set up in the model (-EOPNOTSUPP)."""
        raise EventError(EOPNOTSUPP)

    def _op_alloc_unbound(self, v: Vcpu, raw: bytes) -> bytes | None:
        dom, remote_dom, _ = abi.EVTCHN_ALLOC_UNBOUND_T.unpack(raw)
        port = self.alloc_unbound(v, dom, remote_dom)
        return abi.EVTCHN_ALLOC_UNBOUND_T.pack(dom, remote_dom, port)

    def _op_bind_interdomain(self, v: Vcpu, raw: bytes) -> bytes | None:
        rdom, rport, _ = abi.EVTCHN_BIND_INTERDOMAIN_T.unpack(raw)
        lport = self.bind_interdomain(v, rdom, rport)
        return raw[:8] + lport.to_bytes(4, "little")

    def _op_bind_virq(self, v: Vcpu, raw: bytes) -> bytes | None:
        virq, vcpu, _ = abi.EVTCHN_BIND_VIRQ_T.unpack(raw)
        return abi.EVTCHN_BIND_VIRQ_T.pack(virq, vcpu, self.bind_virq(v, virq, vcpu))

    def _op_bind_ipi(self, v: Vcpu, raw: bytes) -> bytes | None:
        vcpu, _ = abi.EVTCHN_BIND_IPI_T.unpack(raw)
        return abi.EVTCHN_BIND_IPI_T.pack(vcpu, self.bind_ipi(v, vcpu))

    def _op_bind_pirq(self, v: Vcpu, raw: bytes) -> bytes | None:
        pirq, flags, _ = abi.EVTCHN_BIND_PIRQ_T.unpack(raw)
        return abi.EVTCHN_BIND_PIRQ_T.pack(pirq, flags, self.bind_pirq(v, pirq))

    def _op_close(self, v: Vcpu, raw: bytes) -> bytes | None:
        self.close(v.domain, abi.EVTCHN_PORT_T.unpack(raw)[0])
        return None

    def _op_send(self, v: Vcpu, raw: bytes) -> bytes | None:
        self.send(v, abi.EVTCHN_PORT_T.unpack(raw)[0])
        return None

    def _op_status(self, v: Vcpu, raw: bytes) -> bytes | None:
        dom, port = abi.EVTCHN_STATUS_T.unpack(raw)[0:2]
        status, vcpu, u = self.status(v, dom, port)
        out = bytearray(raw)
        out[abi.EVTCHN_STATUS_status : abi.EVTCHN_STATUS_u] = (
            status.to_bytes(4, "little") + vcpu.to_bytes(4, "little"))
        for off, data in u.items():
            at = abi.EVTCHN_STATUS_u + off
            out[at : at + len(data)] = data
        return bytes(out)

    def _op_bind_vcpu(self, v: Vcpu, raw: bytes) -> bytes | None:
        port, vcpu = abi.EVTCHN_BIND_VCPU_T.unpack(raw)
        self.bind_vcpu(v, port, vcpu)
        return None

    def _op_unmask(self, v: Vcpu, raw: bytes) -> bytes | None:
        self.unmask(v, abi.EVTCHN_PORT_T.unpack(raw)[0])
        return None

    # ----------------------------------------------------------------------------------------
    # shared_info bit operations (little-endian unsigned longs: bit n is byte n/8, bit n%8).
    # ----------------------------------------------------------------------------------------
    def _maddr(self, d: Domain, offset: int) -> int:
        return (self.pv.darch(d).shared_info_mfn << abi.PAGE_SHIFT) + offset

    def _bit_test_and_set(self, maddr: int, bit: int) -> bool:
        mem = self.hv.memory
        addr = maddr + bit // 8
        byte = mem.read(addr, 1)[0]
        mem.write(addr, bytes([byte | 1 << (bit % 8)]))
        return bool(byte >> (bit % 8) & 1)

    def _test(self, d: Domain, bitmap: int, port: int) -> bool:
        return bool(self.hv.memory.read(self._maddr(d, bitmap) + port // 8, 1)[0] >> (port % 8) & 1)

    def _test_and_set(self, d: Domain, bitmap: int, port: int) -> bool:
        return self._bit_test_and_set(self._maddr(d, bitmap), port)

    def _test_and_clear(self, d: Domain, bitmap: int, port: int) -> bool:
        mem = self.hv.memory
        addr = self._maddr(d, bitmap) + port // 8
        byte = mem.read(addr, 1)[0]
        mem.write(addr, bytes([byte & ~(1 << (port % 8)) & 0xFF]))
        return bool(byte >> (port % 8) & 1)

    # ----------------------------------------------------------------------------------------
    # Domain destruction (evtchn_destroy): close every port, so that peers become unbound.
    # ----------------------------------------------------------------------------------------
    def destroy_domain(self, d: Domain) -> None:
        de = self.doms.get(d.domain_id)
        if de is None:
            return
        for port, chn in enumerate(de.ports):
            if chn.state not in (abi.ECS_FREE, abi.ECS_RESERVED):
                self.close(d, port)
        del self.doms[d.domain_id]


# ------------------------------------------------------------------------------------------------
# The concrete view: the event invariants of spec.event_spec on the model's state.
# ------------------------------------------------------------------------------------------------
# A machine's event subsystem, found from its Hypervisor. The value is weak too: an Events
# refers back to its Hypervisor, so a strong value would keep every machine alive. (The
# Hypervisor's hypercall table holds Events' bound methods, which keeps it alive as long as the
# machine is.)
_EVENTS_OF: weakref.WeakKeyDictionary[Hypervisor, weakref.ref[Events]] = (
    weakref.WeakKeyDictionary())


class ConcreteEvtView(ConcreteLogic):
    """``spec.event_spec.EvtView`` over a running model: domains that exist, their valid
    ports (ports past them are free by construction), each vCPU's virq_to_evtchn.

    The view only reads: a domain with no event state yet reads as evtchn_init leaves one
    (without creating it), and a domain id that names no domain as one with no ports, no
    vCPUs and no privilege, so that checking any state reports and never raises."""

    def __init__(self, events: Events) -> None:
        self.ev = events
        self.hv = events.hv

    def _de(self, d: int) -> DomainEvents:
        de = self.ev.doms.get(d)
        if de is not None:
            return de
        if d not in self.hv.domains:
            return DomainEvents()
        fresh = DomainEvents(ports=[Channel() for _ in range(abi.EVTCHNS_PER_BUCKET)])
        fresh.ports[0].state = abi.ECS_RESERVED
        return fresh

    def _chn(self, d: int, p: int) -> Channel:
        de = self._de(d)
        return de.ports[p] if de.valid(p) else Channel()

    def state(self, d: int, p: int) -> int:
        return self._chn(d, p).state

    def rdom(self, d: int, p: int) -> int:
        return self._chn(d, p).remote_dom

    def rport(self, d: int, p: int) -> int:
        return self._chn(d, p).remote_port

    def notify(self, d: int, p: int) -> int:
        return self._chn(d, p).notify_vcpu

    def virq(self, d: int, p: int) -> int:
        return self._chn(d, p).virq

    def pending(self, d: int, p: int) -> bool:
        dom = self.hv.domains.get(d)
        return dom is not None and self.ev.port_pending(dom, p)

    def mask(self, d: int, p: int) -> bool:
        dom = self.hv.domains.get(d)
        return dom is not None and 0 <= p < abi.NR_EVENT_CHANNELS and self.ev._test(
            dom, abi.SHARED_INFO_evtchn_mask, p)

    def nports(self, d: int) -> int:
        return len(self._de(d).ports)

    def virq_port(self, d: int, v: int, q: int) -> int:
        table = self._de(d).virq_to_evtchn.get(v)
        return table[q] if table is not None and 0 <= q < abi.NR_VIRQS else 0

    def exists(self, d: int) -> bool:
        return d in self.hv.domains

    def nvcpus(self, d: int) -> int:
        dom = self.hv.domains.get(d)
        return len(dom.vcpus) if dom is not None else 0

    def privileged(self, d: int) -> bool:
        dom = self.hv.domains.get(d)
        return dom is not None and dom.is_privileged

    def ult(self, a: int, b: int) -> bool:
        return (a & 0xFFFFFFFF) < (b & 0xFFFFFFFF)

    def forall_ports(self, body: Callable[[int, int], bool]) -> bool:
        return all(body(d, p) for d in self.hv.domains
                   for p in range(len(self._de(d).ports)))

    def forall_virq_slots(self, body: Callable[[int, int, int], bool]) -> bool:
        return all(body(d.domain_id, v.vcpu_id, q) for d in self.hv.domains.values()
                   for v in d.vcpus for q in range(abi.NR_VIRQS))


def check_event_invariants(hv: Hypervisor) -> list[str]:
    """The event invariants (spec.event_spec) that fail on the model's state, with words."""
    ref = _EVENTS_OF.get(hv)
    events = ref() if ref is not None else None
    if events is None:
        return []
    from xenspec.spec.event_spec import EVT_INVARIANTS

    view = ConcreteEvtView(events)
    return [f"{inv.id}: {inv.statement}" for inv in EVT_INVARIANTS if not inv.check(view)]

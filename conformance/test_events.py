"""Hypercall level: event channels and the one-shot timer, through the adapter.

What the adapter can see of an event channel is what a guest kernel sees without shared_info:
the ports the EVTCHNOP commands return, the status words of EVTCHNOP_status, and the errno of
every refused command (xen/common/event_channel.c, Xen 3.0.4, in its order of checks).
Delivery into shared_info and the upcall are checked at the guest level (test_guests.py:
events, timer, time).
"""

from __future__ import annotations

import pytest

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.driver import Guest
from xenspec.spec import abi

pytestmark = pytest.mark.needs("events")

SELF = abi.DOMID_SELF
EINVAL, ENOENT, EEXIST, EPERM, ESRCH, EFAULT, ENOSYS, ENOSPC = (
    -abi.EINVAL, -abi.ENOENT, -abi.EEXIST, -abi.EPERM, -abi.ESRCH, -abi.EFAULT, -abi.ENOSYS,
    -abi.ENOSPC)


class Ev:
    """EVTCHNOP_* wrappers of one domain: the structure goes in its argument area."""

    def __init__(self, g: Guest) -> None:
        self.g = g

    def op(self, cmd: int, data: bytes) -> tuple[int, bytes]:
        va = self.g.write_args(data)
        rc = self.g.hypercall("event_channel_op", cmd, va)
        return rc, self.g.read_args(0, len(data))

    @staticmethod
    def port(port: int) -> int:
        """A port argument; a negative one is the errno a binding command gave instead of a
        port, which fails here (charged to that command) rather than as a packing error."""
        assert port >= 0, f"port {port}: the command that was to give this port failed"
        return port

    def port_of(self, cmd: int, data: bytes, at: int) -> int:
        """Run a binding command; its port (OUT field at ``at``) or its negative errno."""
        rc, out = self.op(cmd, data)
        return rc if rc else int.from_bytes(out[at : at + 4], "little")

    def alloc_unbound(self, remote: int, dom: int = SELF) -> int:
        return self.port_of(abi.EVTCHNOP_alloc_unbound,
                            abi.EVTCHN_ALLOC_UNBOUND_T.pack(dom, remote, 0), 4)

    def bind_interdomain(self, rdom: int, rport: int) -> int:
        return self.port_of(abi.EVTCHNOP_bind_interdomain,
                            abi.EVTCHN_BIND_INTERDOMAIN_T.pack(rdom, self.port(rport), 0), 8)

    def bind_virq(self, virq: int, vcpu: int = 0) -> int:
        return self.port_of(abi.EVTCHNOP_bind_virq, abi.EVTCHN_BIND_VIRQ_T.pack(virq, vcpu, 0),
                            8)

    def bind_ipi(self, vcpu: int = 0) -> int:
        return self.port_of(abi.EVTCHNOP_bind_ipi, abi.EVTCHN_BIND_IPI_T.pack(vcpu, 0), 4)

    def simple(self, cmd: int, port: int) -> int:
        return self.op(cmd, abi.EVTCHN_PORT_T.pack(self.port(port)))[0]

    def close(self, port: int) -> int:
        return self.simple(abi.EVTCHNOP_close, port)

    def send(self, port: int) -> int:
        return self.simple(abi.EVTCHNOP_send, port)

    def unmask(self, port: int) -> int:
        return self.simple(abi.EVTCHNOP_unmask, port)

    def status(self, port: int, dom: int = SELF) -> tuple[int, int, int, int, int]:
        """(rc, status, vcpu, u word 0, u word 1)."""
        rc, out = self.op(abi.EVTCHNOP_status,
                          abi.EVTCHN_STATUS_T.pack(dom, self.port(port), 0, 0, 0, 0))
        _, _, status, vcpu, u0, u1 = abi.EVTCHN_STATUS_T.unpack(out)
        return rc, status, vcpu, u0, u1


@pytest.fixture
def g(hv_impl: HypercallLevel) -> Guest:
    return Guest(hv_impl, 48, 32)


@pytest.fixture
def ev(g: Guest) -> Ev:
    return Ev(g)


@pytest.mark.clauses("event_channel_op/alloc_unbound", "event_channel_op/status", "INV-EVT-PORT")
def test_ports_are_allocated_lowest_first_port_0_reserved(ev: Ev) -> None:
    """evtchn_init reserves port 0; get_free_port gives the lowest free port."""
    assert ev.status(0)[:2] == (0, abi.EVTCHNSTAT_closed), "port 0 is reserved (reads closed)"
    assert ev.alloc_unbound(SELF) == 1, "the first port allocated must be 1"
    assert ev.alloc_unbound(SELF) == 2, "then 2"
    assert ev.close(1) == 0
    assert ev.alloc_unbound(SELF) == 1, "a closed port is reused first"
    assert ev.close(0) == EINVAL, "__evtchn_close: the reserved port 0 cannot be closed"


@pytest.mark.clauses("event_channel_op/alloc_unbound", "event_channel_op/bind_interdomain",
                     "event_channel_op/status", "INV-EVT-BIND")
def test_loopback_interdomain_channel(ev: Ev, g: Guest) -> None:
    """A domain may bind its own unbound port: both ends name each other (evtchn_status)."""
    a = ev.alloc_unbound(SELF)
    assert ev.status(a)[:4] == (0, abi.EVTCHNSTAT_unbound, 0, g.domid), "unbound, offered to us"
    b = ev.bind_interdomain(SELF, a)
    assert b > a, f"bind_interdomain returned {b}"
    assert ev.status(a)[:5] == (0, abi.EVTCHNSTAT_interdomain, 0, g.domid, b)
    assert ev.status(b)[:5] == (0, abi.EVTCHNSTAT_interdomain, 0, g.domid, a)
    assert ev.send(a) == 0 and ev.send(b) == 0, "send on both ends"
    assert ev.close(b) == 0
    assert ev.status(a)[:4] == (0, abi.EVTCHNSTAT_unbound, 0, g.domid), \
        "__evtchn_close: the peer goes back to unbound, offered to the closer"
    assert ev.status(b)[:2] == (0, abi.EVTCHNSTAT_closed)


@pytest.mark.clauses("event_channel_op/bind_interdomain", "INV-EVT-BIND", "INV-EVT-XDOM")
def test_bind_interdomain_only_to_a_port_offered_to_us(hv_impl: HypercallLevel) -> None:
    """evtchn_bind_interdomain: the remote port must be unbound and offered to the caller."""
    a, b, c = (Guest(hv_impl, 48, 32) for _ in range(3))
    ea, eb, ec = Ev(a), Ev(b), Ev(c)
    offer = ea.alloc_unbound(b.domid)
    assert ec.bind_interdomain(a.domid, offer) == EINVAL, "a third domain bound another's offer"
    assert eb.bind_interdomain(a.domid, 999) == EINVAL, "a port outside the valid ones"
    assert eb.bind_interdomain(a.domid, 0) == EINVAL, "the reserved port"
    assert eb.bind_interdomain(0x7000, 1) == ESRCH, "no such domain"
    port = eb.bind_interdomain(a.domid, offer)
    assert port > 0, f"the offered domain could not bind: {port}"
    assert ea.status(offer)[:5] == (0, abi.EVTCHNSTAT_interdomain, 0, b.domid, port)
    assert eb.bind_interdomain(a.domid, offer) == EINVAL, "bound twice"
    assert eb.send(port) == 0 and ea.send(offer) == 0
    assert ea.close(offer) == 0
    assert eb.status(port)[:4] == (0, abi.EVTCHNSTAT_unbound, 0, a.domid)
    assert eb.send(port) == 0, "send on an unbound port drops the event"


@pytest.mark.clauses("event_channel_op/alloc_unbound", "event_channel_op/status")
def test_other_domains_need_privilege(hv_impl: HypercallLevel) -> None:
    """alloc_unbound and status for another domain: -EPERM unless privileged."""
    a, b = Guest(hv_impl, 48, 32), Guest(hv_impl, 48, 32)
    priv = Guest(hv_impl, 48, 32, privileged=True)
    assert Ev(a).alloc_unbound(SELF, dom=b.domid) == EPERM
    assert Ev(a).status(0, dom=b.domid)[0] == EPERM
    port = Ev(priv).alloc_unbound(a.domid, dom=b.domid)
    assert port == 1, f"privileged alloc_unbound for another domain: {port}"
    assert Ev(priv).status(port, dom=b.domid)[:4] == (0, abi.EVTCHNSTAT_unbound, 0, a.domid)
    assert Ev(priv).status(1, dom=0x7000)[0] == ESRCH


@pytest.mark.clauses("event_channel_op/bind_virq", "event_channel_op/close", "INV-EVT-PORT")
def test_bind_virq_rules(ev: Ev) -> None:
    """evtchn_bind_virq: range -EINVAL, a global VIRQ on vCPU != 0 -EINVAL, no such vCPU
    -ENOENT, bound twice -EEXIST; close frees the VIRQ for binding again."""
    assert ev.bind_virq(abi.NR_VIRQS) == EINVAL
    assert ev.bind_virq(abi.VIRQ_CONSOLE, 1) == EINVAL, "global VIRQ on vCPU 1"
    assert ev.bind_virq(abi.VIRQ_TIMER, 1) == ENOENT, "a vCPU the domain does not have"
    assert ev.bind_virq(abi.VIRQ_TIMER, 0x80000000) == ENOENT
    port = ev.bind_virq(abi.VIRQ_TIMER)
    assert port == 1
    assert ev.status(port)[:4] == (0, abi.EVTCHNSTAT_virq, 0, abi.VIRQ_TIMER)
    assert ev.bind_virq(abi.VIRQ_TIMER) == EEXIST
    assert ev.send(port) == EINVAL, "evtchn_send on a VIRQ port"
    assert ev.close(port) == 0
    assert ev.bind_virq(abi.VIRQ_TIMER) == port, "rebinding after close"


@pytest.mark.clauses("event_channel_op/bind_ipi", "event_channel_op/send",
                     "event_channel_op/bind_vcpu")
def test_bind_ipi_send_and_bind_vcpu(ev: Ev, g: Guest) -> None:
    """evtchn_bind_ipi (-ENOENT for a missing vCPU), send, and evtchn_bind_vcpu's rules."""
    assert ev.bind_ipi(5) == ENOENT
    port = ev.bind_ipi(0)
    assert ev.status(port)[:3] == (0, abi.EVTCHNSTAT_ipi, 0)
    assert ev.send(port) == 0
    bind_vcpu = abi.EVTCHN_BIND_VCPU_T
    assert ev.op(abi.EVTCHNOP_bind_vcpu, bind_vcpu.pack(port, 0))[0] == EINVAL, \
        "an IPI port cannot move"
    assert ev.op(abi.EVTCHNOP_bind_vcpu, bind_vcpu.pack(port, 3))[0] == ENOENT
    offer = ev.alloc_unbound(SELF)
    assert ev.op(abi.EVTCHNOP_bind_vcpu, bind_vcpu.pack(offer, 0))[0] == 0
    assert ev.op(abi.EVTCHNOP_bind_vcpu, bind_vcpu.pack(700, 0))[0] == EINVAL


@pytest.mark.clauses("event_channel_op/send", "event_channel_op/close",
                     "event_channel_op/unmask", "event_channel_op/status")
def test_invalid_ports(ev: Ev) -> None:
    """port_is_valid: a port outside the allocated buckets is -EINVAL; a free port in them
    cannot be sent on or closed, but can be unmasked and reads closed."""
    for bad in (abi.EVTCHNS_PER_BUCKET, abi.NR_EVENT_CHANNELS, 0xFFFFFFFF):
        assert ev.send(bad) == EINVAL and ev.close(bad) == EINVAL
        assert ev.unmask(bad) == EINVAL and ev.status(bad)[0] == EINVAL
    assert ev.send(5) == EINVAL and ev.close(5) == EINVAL
    assert ev.unmask(5) == 0
    assert ev.status(5)[:2] == (0, abi.EVTCHNSTAT_closed)


@pytest.mark.clauses("event_channel_op/alloc_unbound", "INV-EVT-PORT")
def test_ports_run_out_with_enospc(ev: Ev) -> None:
    """get_free_port: buckets of 128 up to NR_EVENT_CHANNELS, then -ENOSPC."""
    last = 0
    for _ in range(1, abi.NR_EVENT_CHANNELS):
        last = ev.alloc_unbound(SELF)
    assert last == abi.NR_EVENT_CHANNELS - 1
    assert ev.alloc_unbound(SELF) == ENOSPC
    assert ev.bind_ipi(0) == ENOSPC
    assert ev.send(abi.NR_EVENT_CHANNELS - 1) == 0, "the last port is valid"


@pytest.mark.clauses("event_channel_op/bind_pirq")
def test_bind_pirq_refused(ev: Ev) -> None:
    """evtchn_bind_pirq: out of range -EINVAL; otherwise -EPERM (irq_access_permitted)."""
    pirq = abi.EVTCHN_BIND_PIRQ_T
    assert ev.op(abi.EVTCHNOP_bind_pirq, pirq.pack(abi.NR_PIRQS, 0, 0))[0] == EINVAL
    assert ev.op(abi.EVTCHNOP_bind_pirq, pirq.pack(3, 0, 0))[0] == EPERM


@pytest.mark.clauses("event_channel_op/send", "event_channel_op_compat")
def test_argument_errors_and_compat(ev: Ev, g: Guest) -> None:
    """do_event_channel_op: unknown command -ENOSYS, unreadable argument -EFAULT; the compat
    call runs the command of a struct evtchn_op."""
    assert g.hypercall("event_channel_op", 10, g.va(g.arg_pfn)) == ENOSYS
    assert g.hypercall("event_channel_op", abi.EVTCHNOP_send, 0x1000) == EFAULT
    assert g.hypercall("event_channel_op", abi.EVTCHNOP_send, 0xFFFFF000) == EFAULT
    port = ev.bind_ipi(0)
    op = abi.EVTCHN_OP_T.pack(abi.EVTCHNOP_send, port.to_bytes(4, "little"))
    assert g.hypercall("event_channel_op_compat", g.write_args(op)) == 0
    op = abi.EVTCHN_OP_T.pack(abi.EVTCHNOP_alloc_unbound,
                              abi.EVTCHN_ALLOC_UNBOUND_T.pack(SELF, SELF, 0))
    assert g.hypercall("event_channel_op_compat", g.write_args(op)) == 0
    out = g.read_args(abi.EVTCHN_OP_u, abi.EVTCHN_ALLOC_UNBOUND_T.size)
    assert abi.EVTCHN_ALLOC_UNBOUND_T.unpack(out)[2] == port + 1, "the OUT port, in the union"
    assert g.hypercall("event_channel_op_compat", 0x1000) == EFAULT


@pytest.mark.clauses("event_channel_op/bind_ipi", "event_channel_op/status")
def test_unwritable_argument_faults_after_the_command(ev: Ev, g: Guest) -> None:
    """do_event_channel_op: the structure is copied back after the command ran; when that
    copy fails (here: the page directory, which the guest maps read-only and whose first
    words are 0, so vCPU 0 is asked for) the result is -EFAULT, and the port stays bound."""
    pd = g.va(g.info.pt_base_pfn)
    assert int.from_bytes(g.impl.read_pfn(g.domid, g.info.pt_base_pfn, 0, 8), "little") == 0, \
        "the first words of the page directory are expected to be empty"
    assert g.hypercall("event_channel_op", abi.EVTCHNOP_bind_ipi, pd) == EFAULT, \
        "do_event_channel_op: an unwritable structure must give -EFAULT on the copy back"
    port = ev.bind_ipi(0)
    assert port > 1, "evtchn_bind_ipi: the port bound before the copy back failed was reused"
    assert ev.status(port - 1)[:3] == (0, abi.EVTCHNSTAT_ipi, 0), \
        "evtchn_bind_ipi: the port stays bound to vCPU 0 when the copy back fails"


@pytest.mark.clauses("set_timer_op")
def test_set_timer_op_returns_zero(g: Guest) -> None:
    """do_set_timer_op always returns 0: a deadline, a cancel (0), a past and a huge one."""
    for lo, hi in ((1_000_000_000, 0), (0, 0), (1, 0), (0xFFFFFFFF, 0x7FFFFFFF),
                   (0, 0x80000000)):
        assert g.hypercall("set_timer_op", lo, hi) == 0, f"set_timer_op({hi:#x}:{lo:#x})"


@pytest.mark.clauses("event_channel_op/send", "event_channel_op/close", "INV-EVT-SEND")
def test_send_only_on_own_bound_ports(hv_impl: HypercallLevel) -> None:
    """evtchn_send: a domain raises events through its own ports only. Another domain's port
    number means nothing in its own table (-EINVAL for a free port); once bound, its own end
    reaches the peer; after the peer closes, its end is unbound and a send is dropped."""
    a, b = Guest(hv_impl, 64, 32), Guest(hv_impl, 64, 32)
    ea, eb = Ev(a), Ev(b)
    pa = ea.alloc_unbound(b.domid)
    assert eb.send(pa) == EINVAL, "INV-EVT-SEND: a send on a port the sender does not have"
    pb = eb.bind_interdomain(a.domid, pa)
    assert eb.send(pb) == 0 and ea.send(pa) == 0, "evtchn_send on a bound interdomain port"
    assert ea.close(pa) == 0
    assert eb.status(pb)[1] == abi.EVTCHNSTAT_unbound, "__evtchn_close unbinds the peer's end"
    assert eb.send(pb) == 0, "evtchn_send on an unbound port drops the event (returns 0)"


@pytest.mark.clauses("event_channel_op/status", "event_channel_op/bind_interdomain")
def test_status_writes_back_only_its_structure(ev: Ev, g: Guest) -> None:
    """do_event_channel_op copies back struct evtchn_status and nothing past it: the guest's
    bytes after the structure are as they were, for every kind of port."""
    a = ev.alloc_unbound(SELF)
    b = ev.bind_interdomain(SELF, a)
    v = ev.bind_virq(abi.VIRQ_TIMER)
    after = bytes(range(0xA0, 0xB0))
    T = abi.EVTCHN_STATUS_T
    for port in (0, a, b, v, ev.bind_ipi(0)):
        va = g.write_args(T.pack(SELF, ev.port(port), 0, 0, 0, 0) + after)
        assert g.hypercall("event_channel_op", abi.EVTCHNOP_status, va) == 0
        assert g.read_args(T.size, len(after)) == after, \
            f"evtchn_status of port {port}: bytes past the structure were written"

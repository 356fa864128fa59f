"""Event channels as a specification: the state, the invariants and one transition per EVTCHNOP.

The state is what Xen 3.0.4 keeps per domain and port (xen/include/xen/sched.h, struct evtchn:
state, the remote domain and port, the vCPU notified, the VIRQ; d->evtchn's valid ports; each
vCPU's virq_to_evtchn) and the port's bits of shared_info (evtchn_pending, evtchn_mask, xen.h).
The rules are xen/common/event_channel.c's (get_free_port, evtchn_alloc_unbound,
evtchn_bind_interdomain, evtchn_bind_virq, evtchn_bind_ipi, evtchn_bind_pirq, __evtchn_close,
evtchn_send, evtchn_status, evtchn_bind_vcpu, evtchn_unmask, send_guest_vcpu_virq /
send_guest_global_virq). Errors are listed in Xen's order of checks; a failed command leaves the
state alone, except bind_interdomain, whose new bucket (get_free_port runs before the remote
port is checked) stays. The selector and upcall bits of vcpu_info are the guest's to clear and
are not part of this state; neither are physical IRQs (bind_pirq never succeeds in the model).

Invariants, each written once against ``EvtView`` (a concrete view checks the model,
``refmodel.event.check_event_invariants``; ``SymEvtView`` gives the Z3 formula):

* INV-EVT-PORT: port-state consistency. Ports past a domain's valid ones are free; port 0 and
  only port 0 is reserved; every state is an ECS_* state; the notified vCPU exists; a VIRQ port
  is the one its vCPU's virq_to_evtchn names (vCPU 0's for a global VIRQ), and every non-zero
  virq_to_evtchn entry names such a port.
* INV-EVT-BIND: events cross domains only through a binding: an interdomain port's peer
  exists, is interdomain and names it back.
* INV-EVT-SEND (of a transition): a domain sends only on its own bound ports: every pending bit
  a domain's hypercall sets is on one of its IPI or interdomain ports, or on a port whose
  interdomain peer is that domain.
* INV-EVT-XDOM (of a transition): a domain's hypercall changes another domain's port only if
  that port was bound or offered to the caller, or the caller is privileged (alloc_unbound for
  another domain); it never changes another domain's VIRQ tables.

Domain ids, ports, vCPU ids and VIRQs are 32-bit bit-vectors; quantifiers range over all of
them (unbounded), guarded by the domain's existence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import z3

from xenspec.spec import abi
from xenspec.spec.branches import PASS, Check, all_of, cases, require
from xenspec.spec.symbolic import bv, fresh_name, quantify

W = z3.BitVecSort(32)
Word = Any
Bool = Any
FREE, RESERVED, UNBOUND = abi.ECS_FREE, abi.ECS_RESERVED, abi.ECS_UNBOUND
INTERDOMAIN, PIRQ, VIRQ, IPI = abi.ECS_INTERDOMAIN, abi.ECS_PIRQ, abi.ECS_VIRQ, abi.ECS_IPI


# ----------------------------------------------------------------------------------------------
# The state-access interface and the invariants.
# ----------------------------------------------------------------------------------------------
class EvtView(Protocol):
    """What an event-channel invariant may ask of a state."""

    def state(self, d: Word, p: Word) -> Word: ...
    def rdom(self, d: Word, p: Word) -> Word: ...
    def rport(self, d: Word, p: Word) -> Word: ...
    def notify(self, d: Word, p: Word) -> Word: ...
    def virq(self, d: Word, p: Word) -> Word: ...
    def pending(self, d: Word, p: Word) -> Bool: ...
    def mask(self, d: Word, p: Word) -> Bool: ...
    def nports(self, d: Word) -> Word: ...
    def virq_port(self, d: Word, v: Word, q: Word) -> Word: ...
    def exists(self, d: Word) -> Bool: ...
    def nvcpus(self, d: Word) -> Word: ...
    def privileged(self, d: Word) -> Bool: ...
    def ult(self, a: Word, b: Word) -> Bool: ...
    def forall_ports(self, body: Callable[[Word, Word], Bool]) -> Bool:
        """For every existing domain d and every port p: body(d, p)."""
        ...

    def forall_virq_slots(self, body: Callable[[Word, Word, Word], Bool]) -> Bool:
        """For every existing domain d, vCPU v and VIRQ number q: body(d, v, q)."""
        ...

    def and_(self, *terms: Bool) -> Bool: ...
    def or_(self, *terms: Bool) -> Bool: ...
    def not_(self, a: Bool) -> Bool: ...
    def implies(self, premise: Bool, conclusion: Callable[[], Bool]) -> Bool: ...


def is_global(s: EvtView, q: Word) -> Bool:
    """event_channel.c, virq_is_global: all but VIRQ_TIMER, VIRQ_DEBUG and VIRQ_XENOPROF."""
    return s.and_(q != abi.VIRQ_TIMER, q != abi.VIRQ_DEBUG, q != abi.VIRQ_XENOPROF)


def virq_slot_ok(s: EvtView, d: Word, p: Word) -> Bool:
    """A VIRQ port is named by virq_to_evtchn of its vCPU (of vCPU 0 for a global VIRQ)."""
    q = s.virq(d, p)
    return s.and_(
        s.ult(q, abi.NR_VIRQS),
        s.implies(is_global(s, q), lambda: s.virq_port(d, 0, q) == p),
        s.implies(s.not_(is_global(s, q)), lambda: s.virq_port(d, s.notify(d, p), q) == p),
    )


def inv_evt_port(s: EvtView) -> Bool:
    """INV-EVT-PORT: port-state consistency (see the module docstring)."""

    def port_ok(d: Word, p: Word) -> Bool:
        st = s.state(d, p)
        n = s.nports(d)
        return s.and_(
            s.ult(abi.EVTCHNS_PER_BUCKET - 1, n), s.not_(s.ult(abi.NR_EVENT_CHANNELS, n)),
            (n & (abi.EVTCHNS_PER_BUCKET - 1)) == 0,
            s.or_(s.ult(p, n), st == FREE),
            (st == RESERVED) == (p == 0),
            s.ult(st, IPI + 1),
            s.ult(s.notify(d, p), s.nvcpus(d)),
            s.implies(st == VIRQ, lambda: virq_slot_ok(s, d, p)),
        )

    def slot_ok(d: Word, v: Word, q: Word) -> Bool:
        p = s.virq_port(d, v, q)
        return s.implies(p != 0, lambda: s.and_(
            s.ult(q, abi.NR_VIRQS), s.ult(p, s.nports(d)), s.state(d, p) == VIRQ,
            s.virq(d, p) == q,
            s.implies(is_global(s, q), lambda: v == 0),
            s.implies(s.not_(is_global(s, q)), lambda: s.notify(d, p) == v),
        ))

    return s.and_(s.forall_ports(port_ok), s.forall_virq_slots(slot_ok))


def inv_evt_bind(s: EvtView) -> Bool:
    """INV-EVT-BIND: an interdomain port's peer exists, is interdomain and names it back."""

    def bound_ok(d: Word, p: Word) -> Bool:
        rd, rp = s.rdom(d, p), s.rport(d, p)
        return s.implies(s.state(d, p) == INTERDOMAIN, lambda: s.and_(
            s.exists(rd), s.ult(rp, s.nports(rd)), s.state(rd, rp) == INTERDOMAIN,
            s.rdom(rd, rp) == d, s.rport(rd, rp) == p,
        ))

    return s.forall_ports(bound_ok)


def inv_evt_send(old: EvtView, new: EvtView, c: Word) -> Bool:
    """INV-EVT-SEND: every pending bit caller ``c``'s hypercall sets is on one of c's IPI or
    interdomain ports, or on a port whose interdomain peer is c."""

    def ok(d: Word, p: Word) -> Bool:
        st = new.state(d, p)
        raised = new.and_(new.pending(d, p), new.not_(old.pending(d, p)))
        return new.implies(raised, lambda: new.or_(
            new.and_(d == c, new.or_(st == IPI, st == INTERDOMAIN)),
            new.and_(st == INTERDOMAIN, new.rdom(d, p) == c),
        ))

    return new.forall_ports(ok)


def _bound_to(s: EvtView, d: Word, p: Word, c: Word) -> Bool:
    st = s.state(d, p)
    return s.and_(s.or_(st == UNBOUND, st == INTERDOMAIN), s.rdom(d, p) == c)


def inv_evt_xdom(old: EvtView, new: EvtView, c: Word) -> Bool:
    """INV-EVT-XDOM: caller ``c`` changes another domain's port only if it was bound or
    offered to c (or c is privileged); it never changes another domain's VIRQ table."""

    def changed(d: Word, p: Word) -> Bool:
        return new.or_(*[getattr(old, f)(d, p) != getattr(new, f)(d, p) for f in _PORT_FIELDS],
                       old.nports(d) != new.nports(d))

    def port_ok(d: Word, p: Word) -> Bool:
        return new.implies(new.and_(d != c, changed(d, p)), lambda: new.or_(
            new.privileged(c), _bound_to(old, d, p, c)))

    def slot_ok(d: Word, v: Word, q: Word) -> Bool:
        return new.implies(d != c, lambda: old.virq_port(d, v, q) == new.virq_port(d, v, q))

    return new.and_(new.forall_ports(port_ok), new.forall_virq_slots(slot_ok))


_PORT_FIELDS = ("state", "rdom", "rport", "notify", "virq", "pending", "mask")


@dataclass(frozen=True)
class EvtInvariant:
    id: str
    statement: str
    source: str
    check: Callable[[EvtView], Bool]


EVT_INVARIANTS: tuple[EvtInvariant, ...] = (
    EvtInvariant("INV-EVT-PORT", "Port states are consistent with the ports and VIRQ tables.",
                 "event_channel.c get_free_port, evtchn_init, evtchn_bind_virq, __evtchn_close",
                 inv_evt_port),
    EvtInvariant("INV-EVT-BIND", "The two ends of an interdomain channel name each other.",
                 "SOSP'03 s2.2 (event channels); event_channel.c evtchn_bind_interdomain, "
                 "__evtchn_close", inv_evt_bind),
)
TWO_STATE: dict[str, Callable[[EvtView, EvtView, Word], Bool]] = {
    "INV-EVT-SEND": inv_evt_send,
    "INV-EVT-XDOM": inv_evt_xdom,
}


# ----------------------------------------------------------------------------------------------
# The symbolic state and its view.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvtState:
    state: z3.ArrayRef  # (dom, port) -> ECS_*
    rdom: z3.ArrayRef  # (dom, port) -> remote domain (unbound: the domain it is offered to)
    rport: z3.ArrayRef  # (dom, port) -> remote port
    notify: z3.ArrayRef  # (dom, port) -> vCPU notified
    virq: z3.ArrayRef  # (dom, port) -> VIRQ
    pending: z3.ArrayRef  # (dom, port) -> Bool
    mask: z3.ArrayRef  # (dom, port) -> Bool
    nports: z3.ArrayRef  # dom -> valid ports (a whole number of buckets)
    virq_port: z3.ArrayRef  # (dom, vcpu, virq) -> port, 0 for none
    exists: z3.ArrayRef  # dom -> Bool (fixed)
    nvcpus: z3.ArrayRef  # dom -> vCPUs (fixed)
    privileged: z3.ArrayRef  # dom -> Bool (fixed)

    @staticmethod
    def fresh(name: str) -> EvtState:
        def two(f: str, rng: z3.SortRef = W) -> z3.ArrayRef:
            return z3.Array(f"{name}.{f}", W, W, rng)

        return EvtState(
            state=two("state"), rdom=two("rdom"), rport=two("rport"), notify=two("notify"),
            virq=two("virq"), pending=two("pending", z3.BoolSort()),
            mask=two("mask", z3.BoolSort()), nports=z3.Array(f"{name}.nports", W, W),
            virq_port=z3.Array(f"{name}.virq_port", W, W, W, W),
            exists=z3.Array("exists", W, z3.BoolSort()), nvcpus=z3.Array("nvcpus", W, W),
            privileged=z3.Array("privileged", W, z3.BoolSort()),
        )

    def evolve(self, **changes: Any) -> EvtState:
        return replace(self, **changes)


class SymEvtView:
    """``EvtView`` over an ``EvtState``; with ``witness`` quantifiers become free constants."""

    def __init__(self, s: EvtState, witness: bool = False, names: str = "") -> None:
        self.s = s
        self.witness = witness
        self.names = names
        self.witnesses: list[tuple[str, z3.BitVecRef]] = []

    def state(self, d: Word, p: Word) -> Word:
        return z3.Select(self.s.state, d, p)

    def rdom(self, d: Word, p: Word) -> Word:
        return z3.Select(self.s.rdom, d, p)

    def rport(self, d: Word, p: Word) -> Word:
        return z3.Select(self.s.rport, d, p)

    def notify(self, d: Word, p: Word) -> Word:
        return z3.Select(self.s.notify, d, p)

    def virq(self, d: Word, p: Word) -> Word:
        return z3.Select(self.s.virq, d, p)

    def pending(self, d: Word, p: Word) -> Bool:
        return z3.Select(self.s.pending, d, p)

    def mask(self, d: Word, p: Word) -> Bool:
        return z3.Select(self.s.mask, d, p)

    def nports(self, d: Word) -> Word:
        return self.s.nports[d]

    def virq_port(self, d: Word, v: Word, q: Word) -> Word:
        return z3.Select(self.s.virq_port, d, _w(v), _w(q))

    def exists(self, d: Word) -> Bool:
        return self.s.exists[d]

    def nvcpus(self, d: Word) -> Word:
        return self.s.nvcpus[d]

    def privileged(self, d: Word) -> Bool:
        return self.s.privileged[d]

    def ult(self, a: Word, b: Word) -> Bool:
        return z3.ULT(_w(a), _w(b))

    def _forall(self, kinds: tuple[str, ...], body: Callable[..., Bool]) -> Bool:
        """For every existing domain d and the other values: body(d, ...) (symbolic.quantify:
        free constants in a witness view)."""
        prefix = ("w_" if self.witness else "") + self.names
        return quantify(kinds, lambda d, *xs: z3.Implies(self.exists(d), body(d, *xs)),
                        self.witnesses if self.witness else None, prefix)

    def forall_ports(self, body: Callable[[Word, Word], Bool]) -> Bool:
        return self._forall(("dom", "port"), body)

    def forall_virq_slots(self, body: Callable[[Word, Word, Word], Bool]) -> Bool:
        return self._forall(("dom", "vcpu", "virq"), body)

    def and_(self, *terms: Bool) -> Bool:
        return z3.And(*terms)

    def or_(self, *terms: Bool) -> Bool:
        return z3.Or(*terms)

    def not_(self, a: Bool) -> Bool:
        return z3.Not(a)

    def implies(self, premise: Bool, conclusion: Callable[[], Bool]) -> Bool:
        return z3.Implies(premise, conclusion())


def _w(x: Word) -> Word:
    return bv(x) if isinstance(x, int) else x


# ----------------------------------------------------------------------------------------------
# Transitions.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvtTransition:
    """Under ``ok`` the command succeeds with state ``new`` and returns ``rc`` (the port it
    allocates, or 0); otherwise it fails with ``err`` (Xen's order of checks) leaving ``fail``
    (the old state, except where a failure keeps a change)."""

    ok: Bool
    new: EvtState
    rc: Word
    err: Word
    fail: EvtState
    choice: Bool = True
    # ``ok`` with its named ways to pass and fail (spec.branches; ``named_error``).
    check: Check | None = None
    others: tuple[Any, ...] = ()  # no outcome besides success and failure


def named_error(checks: list[tuple[str, Bool, int]]) -> tuple[Check, Word]:
    """``first_error`` with each check named (spec.branches): (the success condition with
    its named failures, the errno of the first that fails)."""
    _, err = first_error([(f, e) for _, f, e in checks])
    return all_of(*[require(name, z3.Not(f)) for name, f, _ in checks]), err


def first_error(checks: list[tuple[Bool, int]]) -> tuple[Bool, Word]:
    """[(fails, errno)] in Xen's order: (no check fails, -errno of the first that does)."""
    err: Word = bv(0)
    for fails, errno in reversed(checks):
        err = z3.If(fails, bv(-errno & 0xFFFFFFFF), err)
    return z3.Not(z3.Or(*[f for f, _ in checks])), err


def store2(a: z3.ArrayRef, d: Word, p: Word, value: Any) -> z3.ArrayRef:
    return z3.Store(a, d, p, value)


@dataclass(frozen=True)
class FreePort:
    port: Word
    nports: z3.ArrayRef  # the domain's valid ports afterwards (a new bucket, maybe)
    none: Bool  # no port left: -ENOSPC
    choice: Bool


def get_free_port(s: EvtState, d: Word) -> FreePort:
    """get_free_port: the lowest free valid port, else the first port of a new bucket."""
    port = z3.BitVec(fresh_name("port"), 32)
    q = z3.BitVec(fresh_name("q"), 32)
    n = s.nports[d]

    def none_free_below(bound: Word) -> Bool:
        return z3.ForAll([q], z3.Implies(z3.ULT(q, bound), z3.Select(s.state, d, q) != FREE))

    lowest = z3.And(z3.ULT(port, n), z3.Select(s.state, d, port) == FREE, none_free_below(port))
    grow = z3.And(port == n, none_free_below(n))
    nports = z3.Store(s.nports, d, z3.If(port == n, n + abi.EVTCHNS_PER_BUCKET, n))
    return FreePort(port, nports, z3.And(port == n, n == abi.NR_EVENT_CHANNELS),
                    z3.Or(lowest, grow))


def resolve(c: Word, dom: Word) -> Word:
    return z3.If(dom == abi.DOMID_SELF, c, dom)


def _virq_global(q: Word) -> Bool:
    return z3.And(q != abi.VIRQ_TIMER, q != abi.VIRQ_DEBUG, q != abi.VIRQ_XENOPROF)


def _no_vcpu(s: EvtState, d: Word, vcpu: Word) -> Bool:
    return z3.Not(z3.And(z3.ULT(vcpu, abi.MAX_VIRT_CPUS), z3.ULT(vcpu, s.nvcpus[d])))


def _invalid(s: EvtState, d: Word, port: Word) -> Bool:
    return z3.Not(z3.ULT(port, s.nports[d]))


def spec_alloc_unbound(s: EvtState, c: Word, dom: Word, remote_dom: Word) -> EvtTransition:
    """evtchn_alloc_unbound: a port of ``dom`` offered to ``remote_dom``."""
    d = resolve(c, dom)
    fp = get_free_port(s, d)
    ok, err = named_error([
        ("perm", z3.And(dom != abi.DOMID_SELF, z3.Not(s.privileged[c])), abi.EPERM),
        ("domain", z3.Not(s.exists[d]), abi.ESRCH),
        ("no_port", fp.none, abi.ENOSPC),
    ])
    new = s.evolve(nports=fp.nports, state=store2(s.state, d, fp.port, bv(UNBOUND)),
                   rdom=store2(s.rdom, d, fp.port, resolve(c, remote_dom)))
    return EvtTransition(ok.holds, new, fp.port, err, s, fp.choice, check=ok)


def spec_bind_interdomain(s: EvtState, c: Word, remote_dom: Word,
                          remote_port: Word) -> EvtTransition:
    """evtchn_bind_interdomain: a new local port and the remote unbound port offered to us
    become each other's peers; the local end is made pending."""
    rd = resolve(c, remote_dom)
    fp = get_free_port(s, c)
    lp = fp.port
    grown = s.evolve(nports=fp.nports)
    remote_state = z3.Select(s.state, rd, remote_port)
    ok, err = named_error([
        ("domain", z3.Not(s.exists[rd]), abi.ESRCH),
        ("no_port", fp.none, abi.ENOSPC),
        ("remote_port", _invalid(grown, rd, remote_port), abi.EINVAL),
        ("remote_unbound", z3.Or(remote_state != UNBOUND,
                                 z3.Select(s.rdom, rd, remote_port) != c), abi.EINVAL),
    ])
    state = store2(store2(s.state, c, lp, bv(INTERDOMAIN)), rd, remote_port, bv(INTERDOMAIN))
    rdom = store2(store2(s.rdom, c, lp, rd), rd, remote_port, c)
    rport = store2(store2(s.rport, c, lp, remote_port), rd, remote_port, lp)
    new = grown.evolve(state=state, rdom=rdom, rport=rport,
                       pending=store2(s.pending, c, lp, z3.BoolVal(True)))
    grew = z3.And(s.exists[rd], z3.Not(fp.none))  # the checks after get_free_port failed
    return EvtTransition(ok.holds, new, lp, err, _keep_nports(s, grown, grew), fp.choice,
                         check=ok)


def _keep_nports(s: EvtState, grown: EvtState, grew: Bool) -> EvtState:
    """A failure after get_free_port keeps its new bucket."""
    return s.evolve(nports=z3.If(grew, grown.nports, s.nports))


def spec_bind_virq(s: EvtState, c: Word, virq: Word, vcpu: Word) -> EvtTransition:
    """evtchn_bind_virq: a port for ``virq`` on ``vcpu`` (vCPU 0 for a global VIRQ)."""
    fp = get_free_port(s, c)
    ok, err = named_error([
        ("virq", z3.Not(z3.ULT(virq, abi.NR_VIRQS)), abi.EINVAL),
        ("global_vcpu", z3.And(_virq_global(virq), vcpu != 0), abi.EINVAL),
        ("vcpu", _no_vcpu(s, c, vcpu), abi.ENOENT),
        ("bound", z3.Select(s.virq_port, c, vcpu, virq) != 0, abi.EEXIST),
        ("no_port", fp.none, abi.ENOSPC),
    ])
    new = s.evolve(nports=fp.nports, state=store2(s.state, c, fp.port, bv(VIRQ)),
                   notify=store2(s.notify, c, fp.port, vcpu),
                   virq=store2(s.virq, c, fp.port, virq),
                   virq_port=z3.Store(s.virq_port, c, vcpu, virq, fp.port))
    return EvtTransition(ok.holds, new, fp.port, err, s, fp.choice, check=ok)


def spec_bind_ipi(s: EvtState, c: Word, vcpu: Word) -> EvtTransition:
    """evtchn_bind_ipi: a port that notifies ``vcpu`` of the caller's own domain."""
    fp = get_free_port(s, c)
    ok, err = named_error([("vcpu", _no_vcpu(s, c, vcpu), abi.ENOENT),
                           ("no_port", fp.none, abi.ENOSPC)])
    new = s.evolve(nports=fp.nports, state=store2(s.state, c, fp.port, bv(IPI)),
                   notify=store2(s.notify, c, fp.port, vcpu))
    return EvtTransition(ok.holds, new, fp.port, err, s, fp.choice, check=ok)


def spec_bind_pirq(s: EvtState, c: Word, pirq: Word) -> EvtTransition:
    """evtchn_bind_pirq: -EINVAL out of range, else -EPERM (no domain is granted an IRQ)."""
    ok, err = named_error([("pirq", z3.Not(z3.ULT(pirq, abi.NR_PIRQS)), abi.EINVAL),
                           ("permitted", z3.BoolVal(True), abi.EPERM)])
    return EvtTransition(ok.holds, s, bv(0), err, s, check=ok)


def spec_close(s: EvtState, c: Word, port: Word) -> EvtTransition:
    """__evtchn_close: the port becomes free (notifying vCPU 0); a VIRQ port leaves the VIRQ
    tables; an interdomain peer becomes unbound, offered to the caller again."""
    st = z3.Select(s.state, c, port)
    ok, err = named_error([("port", _invalid(s, c, port), abi.EINVAL),
                           ("state", z3.Or(st == FREE, st == RESERVED), abi.EINVAL)])
    # Its ways to succeed: an interdomain port (the peer is unbound again), a VIRQ port (its
    # table entry goes), any other.
    ok = all_of(ok, cases(("interdomain", st == INTERDOMAIN, PASS), ("virq", st == VIRQ, PASS),
                          ("other", None, PASS)))
    dv, vv, qv = (z3.BitVec(fresh_name(n), 32) for n in ("d", "v", "q"))
    virq = z3.Select(s.virq, c, port)
    cleared = z3.Lambda([dv, vv, qv], z3.If(
        z3.And(st == VIRQ, dv == c, qv == virq, z3.Select(s.virq_port, dv, vv, qv) == port),
        bv(0), z3.Select(s.virq_port, dv, vv, qv)))
    rd, rp = z3.Select(s.rdom, c, port), z3.Select(s.rport, c, port)
    inter = st == INTERDOMAIN
    state = z3.If(inter, store2(s.state, rd, rp, bv(UNBOUND)), s.state)
    rdom = z3.If(inter, store2(s.rdom, rd, rp, c), s.rdom)
    new = s.evolve(state=store2(state, c, port, bv(FREE)), rdom=rdom, virq_port=cleared,
                   notify=store2(s.notify, c, port, bv(0)))
    return EvtTransition(ok.holds, new, bv(0), err, s, check=ok)


def spec_send(s: EvtState, c: Word, port: Word) -> EvtTransition:
    """evtchn_send: an interdomain port raises its peer, an IPI port itself; an unbound port
    drops the event; other states are -EINVAL."""
    st = z3.Select(s.state, c, port)
    _, err = first_error([
        (_invalid(s, c, port), abi.EINVAL),
        (z3.Not(z3.Or(st == INTERDOMAIN, st == IPI, st == UNBOUND)), abi.EINVAL),
    ])
    # Named: an interdomain port raises its peer, an IPI port itself, an unbound port
    # nothing; any other state fails.
    refused = Check(z3.BoolVal(False), (), (("state", z3.BoolVal(True)),))
    ok = all_of(require("port", z3.Not(_invalid(s, c, port))), cases(
        ("interdomain", st == INTERDOMAIN, PASS), ("ipi", st == IPI, PASS),
        ("unbound", st == UNBOUND, PASS), ("", None, refused)))
    rd, rp = z3.Select(s.rdom, c, port), z3.Select(s.rport, c, port)
    pending = z3.If(st == INTERDOMAIN, store2(s.pending, rd, rp, z3.BoolVal(True)),
                    z3.If(st == IPI, store2(s.pending, c, port, z3.BoolVal(True)), s.pending))
    return EvtTransition(ok.holds, s.evolve(pending=pending), bv(0), err, s, check=ok)


def spec_status(s: EvtState, c: Word, dom: Word, port: Word) -> EvtTransition:
    """evtchn_status: reads only (the status words are checked by the conformance tests)."""
    d = resolve(c, dom)
    ok, err = named_error([
        ("perm", z3.And(dom != abi.DOMID_SELF, z3.Not(s.privileged[c])), abi.EPERM),
        ("domain", z3.Not(s.exists[d]), abi.ESRCH),
        ("port", _invalid(s, d, port), abi.EINVAL),
    ])
    return EvtTransition(ok.holds, s, bv(0), err, s, check=ok)


def spec_bind_vcpu(s: EvtState, c: Word, port: Word, vcpu: Word) -> EvtTransition:
    """evtchn_bind_vcpu: unbound, interdomain, PIRQ and global-VIRQ ports may notify another
    vCPU of the domain."""
    st = z3.Select(s.state, c, port)
    movable = z3.Or(st == UNBOUND, st == INTERDOMAIN, st == PIRQ,
                    z3.And(st == VIRQ, _virq_global(z3.Select(s.virq, c, port))))
    ok, err = named_error([
        ("vcpu", _no_vcpu(s, c, vcpu), abi.ENOENT),
        ("port", _invalid(s, c, port), abi.EINVAL),
        ("state", z3.Not(movable), abi.EINVAL),
    ])
    return EvtTransition(ok.holds, s.evolve(notify=store2(s.notify, c, port, vcpu)), bv(0),
                         err, s, check=ok)


def spec_unmask(s: EvtState, c: Word, port: Word) -> EvtTransition:
    """evtchn_unmask: clear the mask bit (the selector and upcall bits are the guest's)."""
    ok, err = named_error([("port", _invalid(s, c, port), abi.EINVAL)])
    new = s.evolve(mask=store2(s.mask, c, port, z3.BoolVal(False)))
    return EvtTransition(ok.holds, new, bv(0), err, s, check=ok)


def spec_virq_delivery(s: EvtState, d: Word, v: Word, virq: Word) -> EvtTransition:
    """send_guest_vcpu_virq / send_guest_global_virq: Xen raises the port bound to ``virq``
    (vCPU 0's table for a global VIRQ), if there is one."""
    port = z3.Select(s.virq_port, d, z3.If(_virq_global(virq), bv(0), v), virq)
    pending = z3.If(port != 0, store2(s.pending, d, port, z3.BoolVal(True)), s.pending)
    return EvtTransition(z3.And(s.exists[d], z3.ULT(virq, abi.NR_VIRQS)),
                         s.evolve(pending=pending), bv(0), bv(0), s)


# ----------------------------------------------------------------------------------------------
# Proof obligations: each command preserves each invariant (success and failure outcomes).
# ----------------------------------------------------------------------------------------------
EvtBuilder = Callable[[EvtState, Word], EvtTransition]


def _a(*names: str) -> list[z3.BitVecRef]:
    return [z3.BitVec(n, 32) for n in names]


COMMANDS: tuple[tuple[str, EvtBuilder], ...] = (
    ("event_channel_op/alloc_unbound", lambda s, c: spec_alloc_unbound(s, c, *_a("dom", "rd"))),
    ("event_channel_op/bind_interdomain",
     lambda s, c: spec_bind_interdomain(s, c, *_a("rd", "rp"))),
    ("event_channel_op/bind_virq", lambda s, c: spec_bind_virq(s, c, *_a("virq", "vcpu"))),
    ("event_channel_op/bind_ipi", lambda s, c: spec_bind_ipi(s, c, *_a("vcpu"))),
    ("event_channel_op/bind_pirq", lambda s, c: spec_bind_pirq(s, c, *_a("pirq"))),
    ("event_channel_op/close", lambda s, c: spec_close(s, c, *_a("port"))),
    ("event_channel_op/send", lambda s, c: spec_send(s, c, *_a("port"))),
    ("event_channel_op/status", lambda s, c: spec_status(s, c, *_a("dom", "port"))),
    ("event_channel_op/bind_vcpu", lambda s, c: spec_bind_vcpu(s, c, *_a("port", "vcpu"))),
    ("event_channel_op/unmask", lambda s, c: spec_unmask(s, c, *_a("port"))),
)


def machine(s: EvtState, c: Word) -> Bool:
    """Standing assumptions: the caller exists; domains have 1..MAX_VIRT_CPUS vCPUs; the
    DOMID_* specials are no domains."""
    d = z3.BitVec("ax_d", 32)
    return z3.And(
        s.exists[c],
        z3.ForAll([d], z3.Implies(s.exists[d], z3.And(
            z3.ULT(d, abi.DOMID_FIRST_RESERVED), z3.ULT(0, s.nvcpus[d]),
            z3.ULE(s.nvcpus[d], abi.MAX_VIRT_CPUS)))),
    )


def obligation(command: str, inv: str, outcome: str) -> z3.Solver:
    """The solver whose unsatisfiability is "``command`` (``outcome``: ok or fail) preserves
    ``inv``": both single-state invariants before, the invariant's negation after."""
    from xenspec.spec import symbolic

    symbolic.reset_fresh()
    builder = dict(COMMANDS).get(command)
    old = EvtState.fresh("old")
    c = z3.BitVec("caller", 32)
    if builder is None:  # Xen's own VIRQ delivery
        d, v, q = _a("d", "v", "virq")
        t = spec_virq_delivery(old, d, v, q)
    else:
        t = builder(old, c)
    cond, new = (t.ok, t.new) if outcome == "ok" else (z3.Not(t.ok), t.fail)
    solver = z3.Solver()
    for known in EVT_INVARIANTS:
        solver.add(known.check(SymEvtView(old)))
    solver.add(machine(old, c), t.choice, cond)
    goal = SymEvtView(new, witness=True)
    if inv in TWO_STATE:
        solver.add(z3.Not(TWO_STATE[inv](SymEvtView(old, witness=True), goal, c)))
    else:
        (check,) = [i.check for i in EVT_INVARIANTS if i.id == inv]
        solver.add(z3.Not(check(goal)))
    return solver


VIRQ_DELIVERY = "VIRQ delivery (send_guest_vcpu_virq, send_guest_global_virq)"


def obligation_list() -> list[tuple[str, Callable[[], z3.Solver]]]:
    """(name, solver factory) for every (command, invariant, outcome)."""
    out: list[tuple[str, Callable[[], z3.Solver]]] = []
    single = [i.id for i in EVT_INVARIANTS]
    for command, _ in COMMANDS:
        for inv in single + list(TWO_STATE):
            for outcome in ("ok", "fail"):
                if outcome == "fail" and command != "event_channel_op/bind_interdomain":
                    continue  # every other failure leaves the state alone
                suffix = "" if outcome == "ok" else " [failure keeps its new bucket]"
                out.append((f"{command} preserves {inv}{suffix}", _factory(command, inv, outcome)))
    for inv in single:
        out.append((f"{VIRQ_DELIVERY} preserves {inv}", _factory(VIRQ_DELIVERY, inv, "ok")))
    return out


def _factory(command: str, inv: str, outcome: str) -> Callable[[], z3.Solver]:
    return lambda: obligation(command, inv, outcome)

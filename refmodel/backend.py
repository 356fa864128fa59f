"""The backend domain: where the model's device backends live.

In Xen the backends of the paravirtual devices (xenstored, xenconsoled, blkback) run in a
privileged domain, dom0, and meet each guest through an event channel and a shared frame
(SOSP'03 s2.2 and s3.2: asynchronous I/O rings and event notifications). The model has no
dom0 kernel: its backends are Python code acting for a real ``Domain``, created with
``Hypervisor.create_domain(..., privileged=True)`` under the fixed id ``BACKEND_DOMID``
(DOMID_FIRST_RESERVED - 1, so booted guests keep the ids 0, 1, ...) unless the machine names
another (``Backends.domid``, set before first use: ``xenspec run`` makes it domain 0, as dom0
runs Xen's back ends, and its guests domains 1, 2, ...). It has one vCPU that is never given
to the scheduler's run queue (refmodel/sched.py only runs vCPUs ``attach``-ed by the Machine):
it is never counted as runnable or blocked, and a run ends without it; the scheduler runs its
back ends (``run_pending``) at each scheduling point instead.

Its event channels are the real ones (refmodel/event.py): ``connect`` does what a dom0 daemon
does for a new guest (the tools' xc_evtchn_alloc_unbound in the guest, offered to the
backend, then the daemon's xc_evtchn_bind_interdomain to it: event_channel.c
evtchn_alloc_unbound and evtchn_bind_interdomain, with the backend's vCPU as the caller), and
``notify`` is evtchn_send from the backend. An event the guest sends to a backend port with a
listener (``listen``) marks that port pending in the backend domain's shared_info, as
evtchn_set_pending does, and nothing more: the back end is another domain, which runs later.
``run_pending`` is that domain's turn on the CPU: each back end with a pending port runs once
(its listener is the backend's upcall handler), however many events it was sent meanwhile (a
pending bit is one bit). The scheduler gives the backend domain its turn at every scheduling
point, before it chooses the next guest vCPU (refmodel/sched.py says why, with Xen's credit
scheduler), so a front end never sees a response inside its own hypercall: its ring can fill,
it can block or yield for the answer, and its other threads run meanwhile. A back end's work
takes no system time in the model. Backends read and write guest frames by machine address,
as dom0 does through its foreign mappings; everything they read there is untrusted.

A daemon's foreign mapping of a guest frame (xenconsoled's of the console ring, xenstored's of
the store ring: libxc xc_map_foreign_range, an mmu_update from dom0 naming the guest as
FOREIGNDOM) holds what a writable L1 entry holds (mm.c get_page_from_l1e): a general and a
writable type reference in the guest. ``map_foreign`` takes them, records the frame in
``Hypervisor.backend_maps`` and holds them until ``unmap_foreign``; a back end writes the frame
only while it holds them, so the guest can never make it a page table, GDT or LDT frame
while a daemon writes it (get_page_type changes a type only at type count 0), nor free it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.event import EventError
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

# The model's choice of id for its backend domain: the last one below the reserved ids.
BACKEND_DOMID: Final = abi.DOMID_FIRST_RESERVED - 1
_BACKEND_PAGES: Final = 1  # the domain owns a frame (create_domain needs one); it uses none


class ForeignMapError(Exception):
    """A back end could not map a guest frame writable (not the guest's, or a page table or
    descriptor table): the tools' setup fails, as xc_map_foreign_range would."""


class Backends:
    """The backend domain of one platform (``pv.backends``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self._domain: Domain | None = None
        self.domid: int = BACKEND_DOMID  # the backend domain's id (set before first use)

    def domain(self) -> Domain:
        """The backend domain, created on first use (privileged, one vCPU, never scheduled)."""
        if self._domain is None:
            d = self.hv.create_domain(_BACKEND_PAGES, privileged=True, domid=self.domid)
            self.pv.setup_domain(d)
            self._domain = d
        return self._domain

    def vcpu(self) -> Vcpu:
        return self.domain().vcpus[0]

    def map_foreign(self, d: Domain, mfn: int) -> None:
        """Map ``d``'s frame ``mfn`` writable, as a dom0 daemon does: a general and a writable
        type reference in ``d`` (get_page_and_type, as get_page_from_l1e takes for FOREIGNDOM
        ``d``). ForeignMapError if the frame cannot be mapped so."""
        hv = self.hv
        if not hv.memory.mfn_valid(mfn) or not hv.mm.get_page_and_type(
                mfn, d, PGT.writable_page):
            raise ForeignMapError(f"frame {mfn:#x} of domain {d.domain_id} cannot be mapped "
                                  f"writable")
        hv.backend_maps[mfn] = hv.backend_maps.get(mfn, 0) + 1

    def unmap_foreign(self, mfn: int) -> None:
        """Drop one mapping ``map_foreign`` made (put_page_from_l1e of a writable entry); the
        frame is freed if that was its last reference."""
        hv = self.hv
        n = hv.backend_maps[mfn] - 1
        if n:
            hv.backend_maps[mfn] = n
        else:
            del hv.backend_maps[mfn]
        hv.mm.put_page_and_type(mfn)

    def listen(self, port: int, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the backend domain runs (``run_pending``) after events were sent
        to ``port`` of the backend domain: once for all those sent since its last call."""
        self.pv.events.listeners[(self.domain().domain_id, port)] = fn

    def unlisten(self, port: int) -> None:
        key = (self.domid, port)
        self.pv.events.listeners.pop(key, None)
        self.pv.events.listeners_due.pop(key, None)

    def has_pending(self) -> bool:
        """An event is waiting for a back end: the backend domain has work to do."""
        return bool(self.pv.events.listeners_due)

    def run_pending(self) -> int:
        """The backend domain runs: every back end with an event pending serves its ring, in
        the order the events came. Events its work raises for back ends wait for the next
        turn. Returns how many back ends ran."""
        return self.pv.events.run_listeners()

    def disconnect(self, backend_port: int) -> None:
        """A daemon lets go of a guest's channel: no more upcalls, and its port closes
        (evtchn_close; the guest's end may be gone already)."""
        self.unlisten(backend_port)
        with contextlib.suppress(EventError):
            self.pv.events.close(self.domain(), backend_port)

    def connect(self, d: Domain) -> tuple[int, int]:
        """Give guest ``d`` a port bound to a new backend port, as a dom0 daemon does: an
        unbound port in ``d`` offered to the backend, then the backend's interdomain bind
        to it. Returns (guest port, backend port); EventError if ``d`` has no free port."""
        v = self.vcpu()
        events = self.pv.events
        guest_port = events.alloc_unbound(v, d.domain_id, self.domid)
        backend_port = events.bind_interdomain(v, d.domain_id, guest_port)
        return guest_port, backend_port

    def notify(self, backend_port: int) -> bool:
        """evtchn_send on a backend port: the guest's end becomes pending. False if the port
        is not one the backend can send on (closed); an unbound end drops the event."""
        try:
            self.pv.events.send(self.vcpu(), backend_port)
        except EventError:
            return False
        return True

    def remote(self, backend_port: int) -> tuple[int, int] | None:
        """(guest domain id, guest port) of an interdomain backend port, None otherwise."""
        chn = self.pv.events.channel(self.domain(), backend_port)
        if chn is None or chn.state != abi.ECS_INTERDOMAIN:
            return None
        return chn.remote_dom, chn.remote_port

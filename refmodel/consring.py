"""The paravirtual console ring: the guest's console page and xenconsoled in the backend domain.

What Xen does (3.0.4): the tools give each domain a console frame and an event channel
(tools/libxc/xc_linux_build.c, setup_guest: the frame after the store frame, cleared, its mfn
in start_info.console.domU.mfn; xend's alloc_unbound for console.domU.evtchn), and
xenconsoled (tools/console/daemon/io.c) binds the port and maps the frame. The frame holds
``struct xencons_interface`` (io/console.h): ``in`` (1024 bytes, backend to guest) and ``out``
(2048 bytes, guest to backend) with free-running indexes, masked by the ring size
(MASK_XENCONS_IDX). On each notification the daemon takes ``out`` from out_cons to out_prod
(buffer_append), sets out_cons and notifies the guest; input from the console goes into ``in``
at in_prod as far as there is room (handle_tty_read), then a notification.

The model (``pv.consrings``) does that when the backend domain runs after the guest notified
(refmodel/backend.py) and writes the text to the domain's console output
(``PVPlatform.write_console`` with ``ring``: ``ring_out``, apart from console_io's if the
machine asks). ``console_input(domid, data)`` is the tty side: it returns how
many bytes fitted. The ring is untrusted: as buffer_append, indexes further apart than the ring
(``out_prod - out_cons > 2048``) are ignored for that notification (nothing is consumed; the
guest may repair them); input is not written while ``in_prod - in_cons > 1024``. A domain is
served until it is destroyed, shut down or crashed or not (io.c, enum_domains: the daemon
lets a domain go only once it is dying or gone), so what a guest wrote just before it shut
down still reaches the console.

The daemon holds its foreign mapping of the ring (``Backends.map_foreign``: a general and a
writable type reference) from ``attach`` until ``release`` (domain destruction: io.c,
cleanup_domain), and writes the frame only while it holds it: the guest can neither make the
ring a page table, GDT or LDT frame nor hand it back to the heap while it is served (given
back with memory_op, it stays the guest's until the daemon lets go).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain
from xenspec.refmodel.event import EventError
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_MASK32 = 0xFFFFFFFF


@dataclass
class ConsoleConnection:
    domid: int
    mfn: int
    guest_port: int
    backend_port: int
    ignored: int = 0  # notifications whose out indexes were further apart than the ring


class ConsoleRings:
    """The model's xenconsoled (``pv.consrings``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.conns: dict[int, ConsoleConnection] = {}

    def attach(self, d: Domain, mfn: int) -> int:
        """Serve ``d``'s console ring in frame ``mfn`` (mapped, then cleared here) over a new
        event channel; returns the guest's port. ForeignMapError if the frame cannot be
        mapped writable, EventError if ``d`` has no free port."""
        backends = self.pv.backends
        self.release(d)  # a console attached before is let go of first
        backends.map_foreign(d, mfn)
        self.hv.memory.write(mfn << abi.PAGE_SHIFT, bytes(abi.PAGE_SIZE))
        try:
            gport, bport = backends.connect(d)
        except EventError:
            backends.unmap_foreign(mfn)
            raise
        conn = ConsoleConnection(d.domain_id, mfn, gport, bport)
        self.conns[d.domain_id] = conn
        self.pv.backends.listen(bport, lambda: self.service(conn))
        return gport

    def _idx(self, conn: ConsoleConnection, off: int) -> int:
        return int.from_bytes(self.hv.memory.read((conn.mfn << abi.PAGE_SHIFT) + off, 4),
                              "little")

    def _set_idx(self, conn: ConsoleConnection, off: int, value: int) -> None:
        self.hv.memory.write((conn.mfn << abi.PAGE_SHIFT) + off,
                             (value & _MASK32).to_bytes(4, "little"))

    def release(self, d: Domain) -> None:
        """cleanup_domain: stop serving ``d``, close the channel and unmap the ring."""
        conn = self.conns.pop(d.domain_id, None)
        if conn is not None:
            self.pv.backends.disconnect(conn.backend_port)
            self.pv.backends.unmap_foreign(conn.mfn)

    def _domain(self, conn: ConsoleConnection) -> Domain | None:
        """The domain ``conn`` serves, if it is not dying and the daemon still holds its
        mapping."""
        d = self.hv.domains.get(conn.domid)
        if d is None or d.is_dying or self.conns.get(conn.domid) is not conn \
                or conn.mfn not in self.hv.backend_maps \
                or self.hv.frames.owner[conn.mfn] != conn.domid:  # cannot happen while mapped
            return None
        return d

    def service(self, conn: ConsoleConnection) -> None:
        """buffer_append: take the guest's output, advance out_cons, notify."""
        d = self._domain(conn)
        if d is None:
            return
        cons, prod = self._idx(conn, abi.XENCONS_out_cons), self._idx(conn, abi.XENCONS_out_prod)
        size = (prod - cons) & _MASK32
        if size == 0:
            return
        if size > abi.XENCONS_OUT_SIZE:
            conn.ignored += 1
            return
        base = (conn.mfn << abi.PAGE_SHIFT) + abi.XENCONS_out
        data = bytearray()
        while size:
            start = cons & (abi.XENCONS_OUT_SIZE - 1)
            n = min(size, abi.XENCONS_OUT_SIZE - start)
            data += self.hv.memory.read(base + start, n)
            cons = (cons + n) & _MASK32
            size -= n
        self._set_idx(conn, abi.XENCONS_out_cons, cons)
        self.pv.write_console(d, bytes(data), ring=True)
        self.pv.backends.notify(conn.backend_port)

    def console_input(self, domid: int, data: bytes) -> int:
        """handle_tty_read: put what fits of ``data`` into the guest's ``in`` ring and
        notify; returns the number of bytes written (0 without a console or with bad
        indexes)."""
        conn = self.conns.get(domid)
        if conn is None or self._domain(conn) is None:
            return 0
        cons, prod = self._idx(conn, abi.XENCONS_in_cons), self._idx(conn, abi.XENCONS_in_prod)
        used = (prod - cons) & _MASK32
        if used > abi.XENCONS_IN_SIZE:
            return 0
        n = min(len(data), abi.XENCONS_IN_SIZE - used)
        base = (conn.mfn << abi.PAGE_SHIFT) + abi.XENCONS_in
        for i in range(n):
            self.hv.memory.write(base + ((prod + i) & (abi.XENCONS_IN_SIZE - 1)), data[i : i + 1])
        if n:
            self._set_idx(conn, abi.XENCONS_in_prod, prod + n)
            self.pv.backends.notify(conn.backend_port)
        return n

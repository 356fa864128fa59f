"""Shared-memory I/O rings: the request/response protocol of Xen's ``io/ring.h`` (3.0.4).

A shared ring is one page: four free-running 32-bit indexes (``req_prod``, ``req_event``,
``rsp_prod``, ``rsp_event``), 48 bytes of padding, then ``RING_SIZE`` entries, the largest
power of two that fits (``__RING_SIZE``). A request and its response use the same slot. The
front end produces requests and consumes responses; the back end the reverse. Each side keeps
private copies of its own producer (``req_prod_pvt`` / ``rsp_prod_pvt``) and consumer
(``rsp_cons`` / ``req_cons``) indexes and publishes a batch with one write of the shared
producer index.

Notification hold-off (ring.h, RING_PUSH_*_AND_CHECK_NOTIFY and RING_FINAL_CHECK_FOR_*): a
consumer about to sleep writes ``*_event = cons + 1`` and looks once more for work; a producer
that moved the shared index from ``old`` to ``new`` notifies only if the event index lies in
``(old, new]``, i.e. ``need_notify(old, new, event)``: ``(new - event) < (new - old)`` in
unsigned 32-bit arithmetic. The order (publish, then read the event index; write the event
index, then check again) is what makes a lost wake-up impossible; the model runs one step at
a time, so it needs no barriers.

Everything read from the page is untrusted. A consumer never takes more than RING_SIZE
outstanding entries: a producer index further ahead than that (Xen's later
RING_REQUEST_PROD_OVERFLOW: ``req_prod - rsp_prod_pvt > RING_SIZE``; the same for responses
against the front end's ``req_prod_pvt``), or one that went back behind the consumer, raises
``RingOverflow`` and reads nothing, and
every slot address is reduced modulo RING_SIZE, so no access leaves the page.
"""

from __future__ import annotations

from typing import Protocol

from xenspec.spec import abi

RING_IDX_MASK = 0xFFFFFFFF


class RingMemory(Protocol):
    """Byte-addressed memory the ring lives in (``MachineMemory`` or a test buffer)."""

    def read(self, maddr: int, length: int) -> bytes: ...

    def write(self, maddr: int, data: bytes) -> None: ...


class RingOverflow(Exception):
    """The other side published a producer index more than RING_SIZE ahead: the ring is
    malformed and its owner stops serving it."""


def ring_size(entry_size: int) -> int:
    """__RING_SIZE: the largest power of two of ``entry_size``-byte entries that fits in a
    page after the 64-byte header."""
    if entry_size <= 0:
        raise ValueError("entry size must be positive")
    room = (abi.PAGE_SIZE - abi.SRING_HEADER_SIZE) // entry_size
    if room == 0:
        raise ValueError(f"an entry of {entry_size} bytes does not fit in a ring page")
    return 1 << (room.bit_length() - 1)


def need_notify(old: int, new: int, event: int) -> bool:
    """The hold-off rule of both directions: the producer moved the shared index from
    ``old`` to ``new``; notify iff the consumer's event index is in (old, new]."""
    return (new - event) & RING_IDX_MASK < (new - old) & RING_IDX_MASK


def _u32(x: int) -> int:
    return x & RING_IDX_MASK


class SharedRing:
    """The shared page at machine address ``base`` (``struct *_sring``)."""

    def __init__(self, memory: RingMemory, base: int, entry_size: int) -> None:
        self.memory = memory
        self.base = base
        self.entry_size = entry_size
        self.size = ring_size(entry_size)

    def _get(self, off: int) -> int:
        return int.from_bytes(self.memory.read(self.base + off, 4), "little")

    def _set(self, off: int, value: int) -> None:
        self.memory.write(self.base + off, _u32(value).to_bytes(4, "little"))

    @property
    def req_prod(self) -> int:
        return self._get(abi.SRING_req_prod)

    @req_prod.setter
    def req_prod(self, value: int) -> None:
        self._set(abi.SRING_req_prod, value)

    @property
    def req_event(self) -> int:
        return self._get(abi.SRING_req_event)

    @req_event.setter
    def req_event(self, value: int) -> None:
        self._set(abi.SRING_req_event, value)

    @property
    def rsp_prod(self) -> int:
        return self._get(abi.SRING_rsp_prod)

    @rsp_prod.setter
    def rsp_prod(self, value: int) -> None:
        self._set(abi.SRING_rsp_prod, value)

    @property
    def rsp_event(self) -> int:
        return self._get(abi.SRING_rsp_event)

    @rsp_event.setter
    def rsp_event(self, value: int) -> None:
        self._set(abi.SRING_rsp_event, value)

    def init(self, start: int = 0) -> None:
        """SHARED_RING_INIT (``start`` 0): both producers at ``start``, both event indexes
        one past it, the padding zeroed. A non-zero start lets tests begin near 2^32."""
        self.memory.write(self.base, bytes(abi.SRING_HEADER_SIZE))
        self.req_prod = self.rsp_prod = start
        self.req_event = self.rsp_event = start + 1

    def slot(self, idx: int) -> int:
        """The machine address of entry ``idx`` (RING_GET_REQUEST / RING_GET_RESPONSE):
        always inside the page, whatever ``idx`` is."""
        return (self.base + abi.SRING_HEADER_SIZE
                + (idx & (self.size - 1)) * self.entry_size)

    def read_slot(self, idx: int) -> bytes:
        return self.memory.read(self.slot(idx), self.entry_size)

    def write_slot(self, idx: int, data: bytes) -> None:
        if len(data) > self.entry_size:
            raise ValueError(f"a {len(data)}-byte entry in a ring of {self.entry_size}")
        self.memory.write(self.slot(idx), data)


class FrontRing:
    """``struct *_front_ring``: produces requests, consumes responses."""

    def __init__(self, sring: SharedRing, start: int = 0) -> None:
        """FRONT_RING_INIT (the shared page is initialised separately, SHARED_RING_INIT)."""
        self.sring = sring
        self.req_prod_pvt = _u32(start)
        self.rsp_cons = _u32(start)

    @property
    def size(self) -> int:
        return self.sring.size

    def free_requests(self) -> int:
        """RING_FREE_REQUESTS: slots neither holding a request nor an unconsumed response."""
        return self.size - _u32(self.req_prod_pvt - self.rsp_cons)

    def full(self) -> bool:
        """RING_FULL."""
        return self.free_requests() == 0

    def put_request(self, data: bytes) -> int:
        """Write the next request (RING_GET_REQUEST(r, req_prod_pvt++)), unpublished;
        returns its index. Raises RingFull rather than overwrite a slot in use."""
        if self.full():
            raise RingFull("no free request slot")
        idx = self.req_prod_pvt
        self.sring.write_slot(idx, data)
        self.req_prod_pvt = _u32(idx + 1)
        return idx

    def push_requests(self) -> tuple[int, int]:
        """RING_PUSH_REQUESTS: publish the private producer; returns (old, new)."""
        old, new = self.sring.req_prod, self.req_prod_pvt
        self.sring.req_prod = new
        return old, new

    def push_requests_and_check_notify(self) -> bool:
        """RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish, then read req_event."""
        old, new = self.push_requests()
        return need_notify(old, new, self.sring.req_event)

    def unconsumed_responses(self) -> int:
        """RING_HAS_UNCONSUMED_RESPONSES, checked: a response producer ahead of the requests
        we made (``rsp_prod - rsp_cons > req_prod_pvt - rsp_cons``) is RingOverflow."""
        n = _u32(self.sring.rsp_prod - self.rsp_cons)
        if n > _u32(self.req_prod_pvt - self.rsp_cons):
            raise RingOverflow(
                f"response producer {self.sring.rsp_prod:#x} is past the requests made "
                f"(consumer {self.rsp_cons:#x}, requests {self.req_prod_pvt:#x})")
        return n

    def has_unconsumed_responses(self) -> bool:
        return self.unconsumed_responses() > 0

    def get_response(self) -> bytes:
        """Copy out the next response (RING_GET_RESPONSE(r, rsp_cons++))."""
        if not self.unconsumed_responses():
            raise RingEmpty("no unconsumed response")
        data = self.sring.read_slot(self.rsp_cons)
        self.rsp_cons = _u32(self.rsp_cons + 1)
        return data

    def final_check_for_responses(self) -> bool:
        """RING_FINAL_CHECK_FOR_RESPONSES: True if there is work; else rsp_event is set to
        rsp_cons + 1 and the ring is checked once more."""
        if self.unconsumed_responses():
            return True
        self.sring.rsp_event = self.rsp_cons + 1
        return self.unconsumed_responses() > 0


class BackRing:
    """``struct *_back_ring``: consumes requests, produces responses over their slots."""

    def __init__(self, sring: SharedRing, start: int = 0) -> None:
        """BACK_RING_INIT."""
        self.sring = sring
        self.rsp_prod_pvt = _u32(start)
        self.req_cons = _u32(start)

    @property
    def size(self) -> int:
        return self.sring.size

    def unconsumed_requests(self) -> int:
        """RING_HAS_UNCONSUMED_REQUESTS: min(req_prod - req_cons, free slots for responses),
        after checking that req_prod is at most RING_SIZE past rsp_prod_pvt (RingOverflow)."""
        prod = self.sring.req_prod
        ahead = _u32(prod - self.rsp_prod_pvt)
        if ahead > self.size:
            raise RingOverflow(
                f"request producer {prod:#x} is more than {self.size} entries past the "
                f"responses produced ({self.rsp_prod_pvt:#x})")
        if ahead < _u32(self.req_cons - self.rsp_prod_pvt):
            raise RingOverflow(
                f"request producer {prod:#x} went back behind the consumer {self.req_cons:#x}")
        req = _u32(prod - self.req_cons)
        rsp = self.size - _u32(self.req_cons - self.rsp_prod_pvt)
        return min(req, rsp)

    def has_unconsumed_requests(self) -> bool:
        return self.unconsumed_requests() > 0

    def get_request(self) -> bytes:
        """Copy out the next request (RING_GET_REQUEST(r, req_cons++)); the copy is what the
        back end validates and acts on, never the shared slot again."""
        if not self.unconsumed_requests():
            raise RingEmpty("no unconsumed request")
        data = self.sring.read_slot(self.req_cons)
        self.req_cons = _u32(self.req_cons + 1)
        return data

    def put_response(self, data: bytes) -> int:
        """Write the next response (RING_GET_RESPONSE(r, rsp_prod_pvt++)) over the slot of a
        consumed request; returns its index."""
        if self.rsp_prod_pvt == self.req_cons:
            raise RingFull("no consumed request to answer")
        idx = self.rsp_prod_pvt
        self.sring.write_slot(idx, data)
        self.rsp_prod_pvt = _u32(idx + 1)
        return idx

    def push_responses(self) -> tuple[int, int]:
        """RING_PUSH_RESPONSES: publish the private producer; returns (old, new)."""
        old, new = self.sring.rsp_prod, self.rsp_prod_pvt
        self.sring.rsp_prod = new
        return old, new

    def push_responses_and_check_notify(self) -> bool:
        """RING_PUSH_RESPONSES_AND_CHECK_NOTIFY."""
        old, new = self.push_responses()
        return need_notify(old, new, self.sring.rsp_event)

    def final_check_for_requests(self) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS: True if there is work; else req_event is set to
        req_cons + 1 and the ring is checked once more."""
        if self.unconsumed_requests():
            return True
        self.sring.req_event = self.req_cons + 1
        return self.unconsumed_requests() > 0


class RingFull(Exception):
    """A local misuse: producing into a full ring (the caller's bug, not the peer's)."""


class RingEmpty(Exception):
    """A local misuse: consuming from a ring with nothing to consume."""

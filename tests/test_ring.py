"""The shared-ring protocol of io/ring.h (refmodel/ring.py): notification hold-off without lost
wake-ups, suppressed notifications while the consumer is busy, free-running indexes across
2^32, and a hostile producer index rejected without reading outside the page.

The interleaving tests run a front end and a back end as two processes over one page, each a
program of small steps (publish, read the event index, write the event index, check again,
take, answer); Hypothesis chooses which process takes the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenspec.refmodel.memory import MachineMemory
from xenspec.refmodel.ring import (
    BackRing,
    FrontRing,
    RingEmpty,
    RingFull,
    RingOverflow,
    SharedRing,
    need_notify,
    ring_size,
)
from xenspec.spec import abi

M32 = 1 << 32


class PageMemory:
    """One page of bytes; any access outside it fails the test."""

    def __init__(self) -> None:
        self.buf = bytearray(abi.PAGE_SIZE)
        self.slot_reads = 0

    def _check(self, maddr: int, length: int) -> None:
        assert maddr >= 0 and maddr + length <= abi.PAGE_SIZE, (
            f"access {maddr:#x}+{length} outside the ring page")

    def read(self, maddr: int, length: int) -> bytes:
        self._check(maddr, length)
        if maddr >= abi.SRING_HEADER_SIZE:
            self.slot_reads += 1
        return bytes(self.buf[maddr : maddr + length])

    def write(self, maddr: int, data: bytes) -> None:
        self._check(maddr, len(data))
        self.buf[maddr : maddr + len(data)] = data


def new_ring(entry_size: int, start: int = 0) -> tuple[PageMemory, FrontRing, BackRing]:
    mem = PageMemory()
    sring = SharedRing(mem, 0, entry_size)
    sring.init(start)
    return mem, FrontRing(sring, start), BackRing(sring, start)


# --- the rule and the geometry -------------------------------------------------------------
def test_ring_size_is_largest_power_of_two_that_fits() -> None:
    assert ring_size(abi.BLKIF_REQUEST_SIZE) == abi.BLKIF_RING_SIZE == 32
    assert ring_size(1) == 2048
    assert ring_size(abi.PAGE_SIZE - abi.SRING_HEADER_SIZE) == 1
    assert ring_size(1000) == 4
    with pytest.raises(ValueError):
        ring_size(abi.PAGE_SIZE)


@given(st.integers(0, M32 - 1), st.integers(0, 64), st.integers(0, M32 - 1))
def test_need_notify_is_event_in_old_new(old: int, step: int, event: int) -> None:
    """Notify iff the event index lies in (old, new], counted modulo 2^32."""
    new = (old + step) % M32
    inside = any((old + k) % M32 == event for k in range(1, step + 1))
    assert need_notify(old, new, event) is inside


def test_need_notify_across_wrap() -> None:
    assert need_notify(M32 - 1, 1, 0)
    assert need_notify(M32 - 2, 0, M32 - 1)
    assert not need_notify(M32 - 2, 0, 1)
    assert not need_notify(5, 5, 5)  # nothing pushed: never notify


# --- interleaved front and back ends ---------------------------------------------------------
@dataclass
class Proc:
    pc: str = "idle"
    pending: bool = False  # an event was sent to it and not yet taken
    notified: int = 0  # events sent to it
    event_writes: int = 0  # its RING_FINAL_CHECK wrote its event index
    wakeups: int = 0
    old: int = 0
    new: int = 0
    got: list[int] = field(default_factory=list)


class Pair:
    """A front end sending ``total`` requests in batches and consuming the answers, and a back
    end answering each; both sleep when their final check finds nothing. ``atomic`` uses the
    combined ring.h operations; otherwise their steps interleave with the other side's."""

    def __init__(self, entry_size: int, start: int, total: int, batch: int,
                 atomic: bool) -> None:
        self.mem, self.front, self.back = new_ring(entry_size, start)
        self.sring = self.front.sring
        self.total, self.batch, self.atomic = total, batch, atomic
        self.sent = 0
        self.f, self.b = Proc(), Proc(pc="drain")
        self.b_taken: list[int] = []

    def entry(self, n: int) -> bytes:
        return n.to_bytes(4, "little")

    # front end -------------------------------------------------------------------------------
    def front_step(self) -> None:
        f, r = self.f, self.front
        if f.pc == "idle":
            if self.sent < self.total and not r.full():
                for _ in range(min(self.batch, r.free_requests(), self.total - self.sent)):
                    r.put_request(self.entry(self.sent))
                    self.sent += 1
                f.pc = "publish"
            else:
                f.pc = "drain"
        elif f.pc == "publish":
            if self.atomic:
                if r.push_requests_and_check_notify():
                    self.notify(self.b)
                f.pc = "drain"
            else:
                f.old, f.new = r.push_requests()
                f.pc = "check"
        elif f.pc == "check":
            if need_notify(f.old, f.new, self.sring.req_event):
                self.notify(self.b)
            f.pc = "drain"
        elif f.pc == "drain":
            if r.has_unconsumed_responses():
                f.got.append(int.from_bytes(r.get_response()[:4], "little"))
                f.pc = "idle"  # go back to sending between answers
            elif self.atomic:
                f.event_writes += 1
                f.pc = "drain" if r.final_check_for_responses() else self.front_rest()
            else:
                f.pc = "final_set"
        elif f.pc == "final_set":
            self.sring.rsp_event = r.rsp_cons + 1
            f.event_writes += 1
            f.pc = "final_check"
        elif f.pc == "final_check":
            f.pc = "drain" if r.has_unconsumed_responses() else self.front_rest()
        elif f.pc == "sleep":
            assert f.pending
            f.pending, f.pc = False, "drain"
            f.wakeups += 1

    def front_rest(self) -> str:
        """After a final check found no responses: send more if it can, else sleep."""
        return "idle" if self.sent < self.total and not self.front.full() else "sleep"

    # back end --------------------------------------------------------------------------------
    def back_step(self) -> None:
        b, r = self.b, self.back
        if b.pc == "drain":
            if r.has_unconsumed_requests():
                n = int.from_bytes(r.get_request()[:4], "little")
                self.b_taken.append(n)
                b.pc = "respond"
            elif self.atomic:
                b.event_writes += 1
                b.pc = "drain" if r.final_check_for_requests() else "sleep"
            else:
                b.pc = "final_set"
        elif b.pc == "respond":
            r.put_response(self.entry(self.b_taken[-1]))
            b.pc = "publish"
        elif b.pc == "publish":
            if self.atomic:
                if r.push_responses_and_check_notify():
                    self.notify(self.f)
                b.pc = "drain"
            else:
                b.old, b.new = r.push_responses()
                b.pc = "check"
        elif b.pc == "check":
            if need_notify(b.old, b.new, self.sring.rsp_event):
                self.notify(self.f)
            b.pc = "drain"
        elif b.pc == "final_set":
            self.sring.req_event = r.req_cons + 1
            b.event_writes += 1
            b.pc = "final_check"
        elif b.pc == "final_check":
            b.pc = "drain" if r.has_unconsumed_requests() else "sleep"
        elif b.pc == "sleep":
            assert b.pending
            b.pending, b.pc = False, "drain"
            b.wakeups += 1

    # ---------------------------------------------------------------------------------------
    def notify(self, p: Proc) -> None:
        p.pending = True
        p.notified += 1

    def runnable(self, p: Proc) -> bool:
        return p.pc != "sleep" or p.pending

    def step(self, who: int) -> bool:
        """Step process ``who`` (0 front, 1 back), or the other if it cannot run; False when
        neither can."""
        order = [(self.f, self.front_step), (self.b, self.back_step)]
        if who:
            order.reverse()
        for proc, fn in order:
            if self.runnable(proc):
                fn()
                self.check_no_lost_wakeup()
                return True
        return False

    def check_no_lost_wakeup(self) -> None:
        """A sleeper with no event on its way has no published work waiting, unless the
        producer is between publishing and reading the event index and will notify it."""
        b, f = self.b, self.f
        if b.pc == "sleep" and not b.pending and self.back.unconsumed_requests():
            assert f.pc == "check" and need_notify(f.old, f.new, self.sring.req_event), (
                "back end asleep with requests published and no notification coming")
        if f.pc == "sleep" and not f.pending and self.front.unconsumed_responses():
            assert b.pc == "check" and need_notify(b.old, b.new, self.sring.rsp_event), (
                "front end asleep with responses published and no notification coming")


START = st.one_of(st.just(0), st.integers(M32 - 80, M32 - 1), st.integers(0, M32 - 1))


@settings(max_examples=300, deadline=None)
@given(entry_size=st.sampled_from([abi.BLKIF_REQUEST_SIZE, 500, 1000, 2000]),
       start=START, total=st.integers(1, 60), batch=st.integers(1, 8),
       atomic=st.booleans(), schedule=st.lists(st.integers(0, 1), max_size=400))
def test_interleavings_lose_no_wakeup(entry_size: int, start: int, total: int, batch: int,
                                      atomic: bool, schedule: list[int]) -> None:
    """Under any interleaving every request is answered and every answer consumed, in order,
    although each side sleeps whenever its final check finds nothing; each notification
    corresponds to an event-index write of the side notified (at most one per write)."""
    p = Pair(entry_size, start, total, batch, atomic)
    for who in schedule:
        if not p.step(who):
            break
    # Then let both run fairly until neither can: a lost wake-up would stop them early.
    for i in range(20 * total + 200):
        if not p.step(i % 2):
            break
    assert p.b_taken == list(range(total)), "the back end saw every request in order"
    assert p.f.got == list(range(total)), "the front end got every answer in order"
    assert p.f.pc == "sleep" and p.b.pc == "sleep"
    assert p.b.notified <= p.b.event_writes + 1
    assert p.f.notified <= p.f.event_writes + 1
    end = (start + total) % M32
    assert p.sring.req_prod == p.sring.rsp_prod == end
    assert p.front.req_prod_pvt == p.front.rsp_cons == end


def test_busy_consumer_is_not_notified() -> None:
    """Once notified, a back end that keeps working (no final check yet) gets no further
    notifications, however many batches arrive; after its final check the next push
    notifies again."""
    _, front, back = new_ring(abi.BLKIF_REQUEST_SIZE)
    notifies = 0
    front.put_request(b"\x00")
    notifies += front.push_requests_and_check_notify()
    assert notifies == 1
    for batch in range(1, 8):  # the back end is busy: it consumes, never final-checks
        for _ in range(3):
            front.put_request(bytes([batch]))
        notifies += front.push_requests_and_check_notify()
        while back.has_unconsumed_requests():
            back.get_request()
            back.put_response(b"\x01")
        back.push_responses()
        while front.has_unconsumed_responses():
            front.get_response()
    assert notifies == 1, "notifications are held off while the consumer is busy"
    assert not back.final_check_for_requests()  # goes to sleep: req_event = req_cons + 1
    front.put_request(b"\x02")
    assert front.push_requests_and_check_notify(), "a sleeping consumer is notified"


def test_final_check_finds_work_pushed_without_notify() -> None:
    """The race the final check closes: the producer pushes (no notify: the event index is
    stale) just before the consumer writes its event index; the second look finds it."""
    _, front, back = new_ring(abi.BLKIF_REQUEST_SIZE)
    front.put_request(b"a")
    assert front.push_requests_and_check_notify()
    back.get_request()
    assert not back.has_unconsumed_requests()  # first look: nothing
    front.put_request(b"b")
    assert not front.push_requests_and_check_notify()  # req_event still 1: held off
    assert back.final_check_for_requests(), "the final check sees the request"


@given(start=st.integers(M32 - 40, M32 - 1), n=st.integers(1, 80))
def test_indexes_wrap_at_2_32(start: int, n: int) -> None:
    """Free-running indexes pass 2^32 without losing or reordering entries."""
    _, front, back = new_ring(abi.BLKIF_REQUEST_SIZE, start)
    seen = []
    for i in range(n):
        front.put_request(i.to_bytes(4, "little"))
        front.push_requests_and_check_notify()
        assert back.unconsumed_requests() == 1
        seen.append(int.from_bytes(back.get_request()[:4], "little"))
        back.put_response(i.to_bytes(4, "little"))
        back.push_responses_and_check_notify()
        assert int.from_bytes(front.get_response()[:4], "little") == i
    assert seen == list(range(n))
    assert front.sring.req_prod == (start + n) % M32
    assert not front.final_check_for_responses()
    assert front.sring.rsp_event == (start + n + 1) % M32


def test_full_ring() -> None:
    _, front, back = new_ring(2000)  # two entries
    assert front.size == 2
    front.put_request(b"1")
    front.put_request(b"2")
    assert front.full()
    with pytest.raises(RingFull):
        front.put_request(b"3")
    front.push_requests()
    back.get_request()
    back.put_response(b"r")
    back.push_responses()
    assert front.full(), "a slot frees only when its response is consumed"
    front.get_response()
    assert front.free_requests() == 1
    with pytest.raises(RingFull):
        back.put_response(b"x")  # every consumed request is answered
    back.get_request()
    with pytest.raises(RingEmpty):
        back.get_request()  # both requests taken


# --- hostile producer indexes ------------------------------------------------------------------
def test_request_producer_too_far_ahead_is_rejected() -> None:
    mem, _, back = new_ring(abi.BLKIF_REQUEST_SIZE)
    back.sring.req_prod = back.size + 1
    reads = mem.slot_reads
    with pytest.raises(RingOverflow):
        back.has_unconsumed_requests()
    with pytest.raises(RingOverflow):
        back.get_request()
    with pytest.raises(RingOverflow):
        back.final_check_for_requests()
    assert mem.slot_reads == reads, "no entry was read"
    back.sring.req_prod = back.size  # exactly a ring's worth is legitimate
    assert back.unconsumed_requests() == back.size


def test_request_producer_going_backwards_is_rejected() -> None:
    _, front, back = new_ring(abi.BLKIF_REQUEST_SIZE, M32 - 2)
    for _ in range(4):
        front.put_request(b"x")
    front.push_requests()
    for _ in range(4):
        back.get_request()
    back.sring.req_prod = M32 - 1  # behind req_cons (= 2 after the wrap)
    with pytest.raises(RingOverflow):
        back.unconsumed_requests()


def test_response_producer_past_requests_is_rejected() -> None:
    _, front, _ = new_ring(abi.BLKIF_REQUEST_SIZE)
    front.put_request(b"x")
    front.push_requests()
    front.sring.rsp_prod = 2  # one request made, two responses claimed
    with pytest.raises(RingOverflow):
        front.get_response()


@settings(max_examples=300)
@given(entry_size=st.integers(1, abi.PAGE_SIZE - abi.SRING_HEADER_SIZE),
       start=st.integers(0, M32 - 1), consumed=st.integers(0, 32),
       answered=st.integers(0, 32), prod=st.integers(0, M32 - 1))
def test_any_producer_index_stays_inside_the_page(entry_size: int, start: int, consumed: int,
                                                  answered: int, prod: int) -> None:
    """Whatever the shared producer index says, the back end either rejects it or takes at
    most a ring's worth, and never touches memory outside the page (PageMemory asserts)."""
    _, _, back = new_ring(entry_size, start)
    consumed %= back.size + 1
    answered = min(answered, consumed)
    back.req_cons = (start + consumed) % M32
    back.rsp_prod_pvt = (start + answered) % M32
    back.sring.req_prod = prod
    try:
        n = back.unconsumed_requests()
    except RingOverflow:
        return
    assert 0 <= n <= back.size - (consumed - answered)
    for _ in range(n):
        back.get_request()
        back.put_response(b"\xff" * entry_size)
    assert back.unconsumed_requests() == 0 or back.rsp_prod_pvt != back.req_cons


def test_ring_on_machine_memory() -> None:
    """The same ring over a frame of machine memory (as the model's back ends use it)."""
    mem = MachineMemory(4)
    sring = SharedRing(mem, 2 * abi.PAGE_SIZE, abi.BLKIF_REQUEST_SIZE)
    sring.init()
    front, back = FrontRing(sring), BackRing(sring)
    front.put_request(b"req")
    assert front.push_requests_and_check_notify()
    assert back.get_request()[:3] == b"req"
    assert mem.read(2 * abi.PAGE_SIZE + abi.SRING_HEADER_SIZE, 3) == b"req"

"""Bounded work and bounded memory: no hypercall keeps the machine or grows the model's memory
without bound (docs/guide/bounded.rst).

A long batch is preempted after ``HYPERCALL_BUDGET`` units and continued as Xen continues it
(xen/arch/x86/domain.c, hypercall_create_continuation; mm.c, do_mmu_update and do_mmuext_op
with MMU_UPDATE_PREEMPTED; traps.c, do_set_trap_table; memory.c, START_EXTENT_SHIFT); a
Python-driven guest issues the continuation again, as a real guest's ``int $0x82`` is executed
again. Huge batches are built over an aliased window: one frame mapped at every entry of an L1
table, so that a few frames look like megabytes of arguments.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.arch import CONSOLE_LOG_SIZE
from xenspec.refmodel.backend import BACKEND_DOMID
from xenspec.refmodel.blkback import MAX_MESSAGES
from xenspec.refmodel.boot import TRACE_RECORDS, Machine, boot
from xenspec.refmodel.console import CONSOLE_CHUNK
from xenspec.refmodel.domain import INVLPG_MAX
from xenspec.refmodel.hypervisor import (
    HYPERCALL_BUDGET,
    HYPERCALL_NUMBERS,
    HypercallRecord,
    Hypervisor,
)
from xenspec.refmodel.memop import MAX_ORDER, MemOp
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.pvguest import PVGuest
from xenspec.refmodel.xenstore import QUOTA_MAX_ENTRY_SIZE, QUOTA_NB_ENTRY_PER_DOMAIN, XsError
from xenspec.spec import abi

MMU_UPDATE = HYPERCALL_NUMBERS["mmu_update"]
MMUEXT_OP = HYPERCALL_NUMBERS["mmuext_op"]
needs_gcc = needs_gcc_early = pytest.mark.skipif(not toolchain_available(),
                                                 reason="needs gcc and ld")
WINDOW = 0x40000000  # the aliased window's guest address: 4 MB per L2 slot
PREEMPTED = abi.MMU_UPDATE_PREEMPTED


@pytest.fixture
def hv() -> Hypervisor:
    return Hypervisor(1 << 12)


@pytest.fixture
def g(hv: Hypervisor) -> PVGuest:
    return PVGuest(hv, 256)


def aliased_window(g: PVGuest, page: bytes, slots: int = 1) -> int:
    """Map ``page`` (4096 bytes, in a free frame) at every page of ``slots`` x 4 MB from
    WINDOW, read-only, through one L1 table named by ``slots`` page-directory entries."""
    assert len(page) == abi.PAGE_SIZE
    free = list(g.free_pfns())
    data, l1 = g.mfn(free[0]), g.mfn(free[1])
    g.hv.memory.write(data << abi.PAGE_SHIFT, page)
    for i in range(abi.L1_PAGETABLE_ENTRIES):
        g.hv.memory.write_entry(l1, i, g.pte(data, abi._PAGE_PRESENT))
    assert g.pin(l1, 1) == 0
    first = WINDOW >> abi.L2_PAGETABLE_SHIFT
    for k in range(slots):
        assert g.set_entry(g.l2_mfn, first + k, g.pte(l1)) == 0
    return WINDOW


def pieces(hv: Hypervisor, nr: int) -> list[HypercallRecord]:
    assert hv.trace is not None
    return [r for r in hv.trace if r.nr == nr]


# --- mmu_update ----------------------------------------------------------------------------------
def machphys_page(frames: list[int]) -> bytes:
    """256 MMU_MACHPHYS_UPDATE requests: request j sets M2P[frames[j % len]] = j."""
    return b"".join(abi.MMU_UPDATE_T.pack(frames[j % len(frames)] << abi.PAGE_SHIFT
                                          | abi.MMU_MACHPHYS_UPDATE, j) for j in range(256))


def test_mmu_update_of_100000_entries_completes_across_continuations(hv, g):
    """do_mmu_update: each invocation does HYPERCALL_BUDGET entries, then continues with the
    entries left (pointer advanced, count | MMU_UPDATE_PREEMPTED); *pdone counts them all and
    the M2P holds what the last request for each frame wrote."""
    frames = [g.mfn(p) for p in list(g.free_pfns())[10:18]]
    n = 100_000
    va = aliased_window(g, machphys_page(frames))
    hv.trace = []
    done_va = g.done_va
    g.write_args(b"\xff" * 4, done_va - g.arg_va)
    rc = g.hypercall("mmu_update", va, n, done_va, abi.DOMID_SELF)
    assert (rc, g.read_done()) == (0, n)
    want = {frames[(i % 256) % 8]: i % 256 for i in range(n - 256, n)}
    assert {f: hv.m2p[f] for f in frames} == want
    calls = pieces(hv, MMU_UPDATE)
    assert len(calls) == -(-n // HYPERCALL_BUDGET)
    assert all(c.continued for c in calls[:-1]) and not calls[-1].continued
    size = abi.MMU_UPDATE_T.size
    for k, c in enumerate(calls[1:], 1):
        left = n - k * HYPERCALL_BUDGET
        assert c.args[:4] == (va + k * HYPERCALL_BUDGET * size, left | PREEMPTED, done_va,
                              abi.DOMID_SELF)


def test_one_invocation_does_a_budget_and_leaves_the_continuation(hv, g):
    """hypercall_create_continuation: the handler returns the hypercall's number, the vCPU
    holds the arguments it is re-executed with, and *pdone has the entries done so far."""
    frames = [g.mfn(p) for p in list(g.free_pfns())[10:18]]
    va = aliased_window(g, machphys_page(frames))
    rc = hv.hypercall(g.vcpu, MMU_UPDATE, va, 10_000, g.done_va, abi.DOMID_SELF)
    assert rc == MMU_UPDATE
    assert g.read_done() == HYPERCALL_BUDGET
    c = g.vcpu.continuation
    assert c is not None and c.nr == MMU_UPDATE
    assert c.args == (va + HYPERCALL_BUDGET * abi.MMU_UPDATE_T.size,
                      (10_000 - HYPERCALL_BUDGET) | PREEMPTED, g.done_va, abi.DOMID_SELF)
    # A guest that never resumes it abandons it: the next hypercall starts afresh.
    assert g.hypercall("update_va_mapping", 0x400000, 0, 0, 0) == -abi.EINVAL
    assert g.vcpu.continuation is None


def test_continued_batch_stops_at_a_failure_in_a_later_piece(hv, g):
    """The done count adds up over the pieces up to the failing entry, and the error is the
    failing entry's (mm.c: done += i at out:)."""
    frames = [g.mfn(p) for p in list(g.free_pfns())[10:18]]
    reqs = [(f << abi.PAGE_SHIFT | abi.MMU_MACHPHYS_UPDATE, 1) for f in frames] * 200
    bad = 3 * HYPERCALL_BUDGET + 5
    reqs[bad] = (0 << abi.PAGE_SHIFT | abi.MMU_MACHPHYS_UPDATE, 1)  # Xen's frame 0
    hv.trace = []
    assert g.mmu_update(reqs) == (-abi.EINVAL, bad)
    assert [c.continued for c in pieces(hv, MMU_UPDATE)] == [True, True, True, False]


def test_continuation_without_pdone(hv, g):
    """A NULL pdone is neither read nor written; the continuation still completes."""
    frames = [g.mfn(p) for p in list(g.free_pfns())[10:18]]
    va = aliased_window(g, machphys_page(frames))
    hv.trace = []
    assert g.hypercall("mmu_update", va, 3 * HYPERCALL_BUDGET + 1, 0, abi.DOMID_SELF) == 0
    calls = pieces(hv, MMU_UPDATE)
    assert len(calls) == 4 and calls[-1].args[1:3] == (1 | PREEMPTED, 0)


# --- mmuext_op and the INVLPG record -----------------------------------------------------------
def test_invlpg_batch_over_an_aliased_window_keeps_a_bounded_record(hv, g):
    """MMUEXT_INVLPG_LOCAL 300,000 times (every 12-byte op of the window reads as cmd 7, va 7):
    the batch is continued, and the vCPU keeps at most INVLPG_MAX addresses, the rest having
    become full flushes."""
    word = abi.MMUEXT_INVLPG_LOCAL.to_bytes(4, "little")
    va = aliased_window(g, word * 1024)
    v, flushes = g.vcpu, g.vcpu.tlb_flushes
    hv.trace = []
    n = 300_000
    assert g.hypercall("mmuext_op", va, n, g.done_va, abi.DOMID_SELF) == 0
    assert g.read_done() == n
    assert len(pieces(hv, MMUEXT_OP)) == -(-n // HYPERCALL_BUDGET)
    assert len(v.tlb_invlpgs) <= INVLPG_MAX
    assert v.tlb_flushes - flushes == n // (INVLPG_MAX + 1)


def test_invlpg_past_the_threshold_is_a_full_flush(g):
    """Vcpu.flush_tlb_one: INVLPG_MAX addresses are kept, the next one flushes everything
    (and empties the record, so what the CPU substrate compares always changes)."""
    v = g.vcpu
    v.flush_tlb()
    n = v.tlb_flushes
    for i in range(INVLPG_MAX):
        v.flush_tlb_one(i << 12)
    assert (v.tlb_flushes, len(v.tlb_invlpgs)) == (n, INVLPG_MAX)
    v.flush_tlb_one(0xC0000000)
    assert (v.tlb_flushes, v.tlb_invlpgs) == (n + 1, [])



# --- memory_op ---------------------------------------------------------------------------------
MEMORY_OP = HYPERCALL_NUMBERS["memory_op"]
RESERVATION = abi.XEN_MEMORY_RESERVATION_T


def balloon_guest(pages: int = 1024, privileged: bool = False) -> PVGuest:
    hv = Hypervisor(1 << 13)
    pv = PVPlatform(hv)
    hv.hypercall_table.update(MemOp(pv).hypercalls())
    g = PVGuest(hv, pages, privileged=privileged)
    pv.setup_domain(g.domain)
    return g


def reservation(g: PVGuest, extents: int, nr: int, order: int) -> int:
    return g.write_args(RESERVATION.pack(extents, nr, order, 0, abi.DOMID_SELF), 0xF000)


@pytest.mark.parametrize("order", [MAX_ORDER + 1, 0xFFFFFFFF])
def test_decrease_reservation_above_max_order_gives_nothing_back(order):
    """XSA-31: an extent order above MAX_ORDER does nothing (3.0.4 looped on 1 << order; the
    model computed that number, 512 MB for order 2^32-1, and removed the first frame)."""
    g = balloon_guest(256)
    mfn = g.mfn(g.free_pfns()[0])
    extents = g.write_args(mfn.to_bytes(4, "little"))
    tot = g.domain.tot_pages
    tracemalloc.start()
    try:
        rc = g.hypercall("memory_op", abi.XENMEM_decrease_reservation,
                         reservation(g, extents, 1, order))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 0
    assert g.domain.tot_pages == tot and mfn in g.domain.page_list
    assert peak < 1 << 20


@pytest.mark.parametrize("op", [abi.XENMEM_increase_reservation, abi.XENMEM_populate_physmap])
def test_allocation_above_max_order_computes_nothing(op):
    """page_alloc.c: an order above MAX_ORDER is never satisfied, and the model refuses it
    before computing 2^order (a privileged caller may ask for multi-page extents)."""
    g = balloon_guest(256, privileged=True)
    g.domain.max_pages = 1 << 20
    extents = g.write_args(bytes(4))
    tot = g.domain.tot_pages
    tracemalloc.start()
    try:
        rc = g.hypercall("memory_op", op, reservation(g, extents, 1, 0xFFFFFFFF))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (rc, g.domain.tot_pages) == (0, tot)
    assert peak < 1 << 20


def test_decrease_reservation_is_continued_with_start_extent():
    """memory.c: after HYPERCALL_BUDGET frames the call continues as op | done <<
    START_EXTENT_SHIFT with the same reservation; the guest sees the total."""
    g = balloon_guest(1024)
    mfns = [g.mfn(p) for p in list(g.free_pfns())[:600]]
    extents = g.write_args(b"".join(m.to_bytes(4, "little") for m in mfns))
    res = reservation(g, extents, len(mfns), 0)
    tot = g.domain.tot_pages
    g.hv.trace = []
    assert g.hypercall("memory_op", abi.XENMEM_decrease_reservation, res) == 600
    assert g.domain.tot_pages == tot - 600
    calls = pieces(g.hv, MEMORY_OP)
    shift = abi.XENMEM_START_EXTENT_SHIFT
    assert [c.args[:2] for c in calls] == [
        (abi.XENMEM_decrease_reservation | k * HYPERCALL_BUDGET << shift, res)
        for k in range(3)]
    assert [c.continued for c in calls] == [True, True, False]


def test_increase_reservation_continuation_in_one_invocation():
    """One invocation: the handler returns memory_op's number and leaves the continuation."""
    g = balloon_guest(256)
    g.domain.max_pages += 1000
    res = reservation(g, 0, 1000, 0)
    rc = g.hv.hypercall(g.vcpu, MEMORY_OP, abi.XENMEM_increase_reservation, res)
    assert rc == MEMORY_OP
    assert g.domain.tot_pages == 256 + HYPERCALL_BUDGET
    c = g.vcpu.continuation
    assert c is not None and c.args == (
        abi.XENMEM_increase_reservation | HYPERCALL_BUDGET << abi.XENMEM_START_EXTENT_SHIFT,
        res)
    assert g.hypercall("memory_op", *c.args) == 1000
    assert g.domain.tot_pages == 1256


def test_multipage_extents_count_their_frames():
    """A privileged caller's order-3 extents: 8 frames each against the budget, so an
    invocation does 32 of them."""
    g = balloon_guest(256, privileged=True)
    g.domain.max_pages += 8 * 100
    g.hv.trace = []
    assert g.hypercall("memory_op", abi.XENMEM_increase_reservation,
                       reservation(g, 0, 100, 3)) == 100
    assert g.domain.tot_pages == 256 + 800
    assert len(pieces(g.hv, MEMORY_OP)) == -(-100 // (HYPERCALL_BUDGET // 8))


# --- console_io and the console log -------------------------------------------------------------
CONSOLE_IO = HYPERCALL_NUMBERS["console_io"]


def console_guest() -> tuple[PVGuest, PVPlatform, list[bytes]]:
    hv = Hypervisor(1 << 12)
    pv = PVPlatform(hv)
    g = PVGuest(hv, 256)
    pv.setup_domain(g.domain)
    out: list[bytes] = []
    pv.console_out = lambda _domid, data: out.append(data)
    return g, pv, out


def test_console_write_of_4_mb_is_continued_and_the_log_keeps_a_tail():
    """guest_console_write: 127-byte chunks, the budget of them per invocation, then a
    continuation with the count left and the buffer advanced. Everything is printed as it
    comes; the domain's log keeps the last CONSOLE_LOG_SIZE bytes."""
    g, pv, out = console_guest()
    text = bytes(ord("a") + i % 26 for i in range(abi.PAGE_SIZE))
    va = aliased_window(g, text)
    n = 4 << 20
    g.hv.trace = []
    assert g.hypercall("console_io", abi.CONSOLEIO_write, n, va) == 0
    assert sum(map(len, out)) == n
    log = bytes(pv.darch(g.domain).console)
    assert len(log) == CONSOLE_LOG_SIZE
    assert log == text * (CONSOLE_LOG_SIZE // abi.PAGE_SIZE)  # the stream's last bytes
    calls = pieces(g.hv, CONSOLE_IO)
    per_piece = HYPERCALL_BUDGET * CONSOLE_CHUNK
    assert len(calls) == -(-n // per_piece)
    assert calls[1].args[:3] == (abi.CONSOLEIO_write, n - per_piece, va + per_piece)


def test_console_write_count_is_a_signed_int():
    """do_console_io's count is an int: a negative one writes nothing and returns 0."""
    g, pv, out = console_guest()
    assert g.hypercall("console_io", abi.CONSOLEIO_write, 0x80000000, g.arg_va) == 0
    assert out == [] and pv.darch(g.domain).console == b""


def test_console_write_stops_at_an_unreadable_chunk():
    """The chunks before an unreadable one are out; the call is -EFAULT."""
    g, _, out = console_guest()
    assert g.update_va_mapping(g.va(6), 0) == 0  # the page after pfn 5 is unmapped
    va = g.write_args(b"y" * 300, 6 * abi.PAGE_SIZE - 300)
    assert g.hypercall("console_io", abi.CONSOLEIO_write, 400, va) == -abi.EFAULT
    assert b"".join(out) == b"y" * (2 * CONSOLE_CHUNK)


def test_console_read_of_an_empty_ring_ignores_the_buffer():
    """do_console_io's CONSOLEIO_read copies only while the receive ring holds bytes; with it
    empty the answer is 0 whatever the buffer, an unmapped or hypervisor address included."""
    g, _, _ = console_guest()
    assert g.update_va_mapping(g.va(6), 0) == 0
    for buffer in (g.va(6), abi.HYPERVISOR_VIRT_START, g.arg_va):
        assert g.hypercall("console_io", abi.CONSOLEIO_read, 64, buffer) == 0


@needs_gcc_early
def test_destroy_frees_the_console_log():
    m = Machine(32)
    d = m.add_guest(str(build_guest("hello")), 8)
    m.run(timeout_s=60.0)
    assert b"Test result" in m.pv.darch(d).console
    m.domctl.destroy(d.domain_id)
    assert m.pv.darch(d).console == b""


# --- the trace, the store, the block back end -----------------------------------------------
@needs_gcc_early
def test_trace_keeps_the_last_records_and_counts_every_call():
    """A traced machine keeps the last TRACE_RECORDS records; BootResult.calls counts all."""
    r = boot(str(build_guest("spin")), cmdline=f"yields {TRACE_RECORDS + 1000}", trace=True,
             timeout_s=300.0)
    assert r.test_result == "SUCCESS", r.console
    assert len(r.trace) == TRACE_RECORDS
    assert r.calls[HYPERCALL_NUMBERS["sched_op"]] == TRACE_RECORDS + 1000 + 1  # + shutdown


def store_domain() -> tuple[PVPlatform, int]:
    hv = Hypervisor(2048)
    pv = PVPlatform(hv)
    d = hv.create_domain(16)
    pv.setup_domain(d)
    pv.xenstore.introduce(d, d.page_list[3])
    return pv, d.domain_id


def test_xenstore_node_quota():
    """xenstored's quota_nb_entry_per_domain: an unprivileged domain owns at most 1000 nodes
    (the tools' keys in its home count); past that ENOSPC, all or nothing; rm gives them
    back."""
    pv, domid = store_domain()
    xs = pv.xenstore

    def owned() -> int:
        return sum(1 for n in xs.nodes.values() if n.owner == domid)

    for j in range(10):  # ten directories of about 100 leaves: no record is too large
        xs.mkdir(domid, f"data/d{j}")
    i = 0
    while owned() < QUOTA_NB_ENTRY_PER_DOMAIN - 1:
        xs.write(domid, f"data/d{i % 10}/k{i}", "v")
        i += 1
    with pytest.raises(XsError) as e:
        xs.write(domid, "more/and/more", "v")  # three nodes, one left
    assert e.value.errno == abi.ENOSPC and xs.read(domid, "more") is None
    xs.write(domid, "last", "v")
    assert owned() == xs.entries[domid] == QUOTA_NB_ENTRY_PER_DOMAIN
    with pytest.raises(XsError):
        xs.mkdir(domid, "one/more")
    xs.rm(domid, "data")
    xs.write(domid, "more/and/more", "v")
    assert owned() == xs.entries[domid] == 7


def test_xenstore_entry_size_quota():
    """quota_max_entry_size: a node record of 2048 bytes (value, permissions, children's
    names) is ENOSPC for an unprivileged domain, the old value stays; the tools may."""
    pv, domid = store_domain()
    xs = pv.xenstore
    fits = QUOTA_MAX_ENTRY_SIZE - 12 - 8 - 1
    xs.write(domid, "big", b"x" * fits)
    with pytest.raises(XsError) as e:
        xs.write(domid, "big", b"x" * (fits + 1))
    assert e.value.errno == abi.ENOSPC and xs.read(domid, "big") == b"x" * fits
    with pytest.raises(XsError):
        xs.write(domid, "new", b"x" * (fits + 1))
    assert xs.read(domid, "new") is None
    xs.write(BACKEND_DOMID, f"/local/domain/{domid}/tools", b"x" * 3000)  # the tools may
    # Children's names count in the parent's record: 20 + 10 x 202 bytes fit, 11 do not.
    for i in range(10):
        xs.mkdir(domid, f"dir/{'n' * 200}{i}")
    with pytest.raises(XsError):
        xs.mkdir(domid, f"dir/{'n' * 200}a")


@needs_gcc_early
def test_block_back_end_keeps_a_bounded_log(tmp_path: Path):
    """Each failed handshake a front end drives is one log line of the back end: it keeps
    the last MAX_MESSAGES."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(512 * 16))
    m = Machine(64, devices=True)
    d = m.add_guest(str(build_guest("hello")), 16, paused=True)
    dev = m.attach_disk(d.domain_id, str(image))
    xs = m.pv.xenstore
    for i in range(3 * MAX_MESSAGES):
        xs.write(d.domain_id, f"{dev.fe}/ring-ref", f"bad{i}")
        xs.write(d.domain_id, f"{dev.fe}/state", str(abi.XenbusStateInitialised))
    assert len(dev.messages) == MAX_MESSAGES
    assert "ring-ref" in dev.messages[-1]


# --- a real guest: the registers are rewritten and int $0x82 runs again ---------------------


@needs_gcc
def test_guest_batches_complete_across_continuations():
    """The preempt kernel's 100,000-entry mmu_update, 100,000-op INVLPG batch and 102,400-
    entry trap table complete with their full done counts and results (the kernel checks
    them), each in many pieces: the substrate re-executes the rewound int $0x82."""
    r = boot(str(build_guest("preempt")), trace=True, timeout_s=120.0)
    assert r.test_result == "SUCCESS", r.console
    for name in ("mmu_update", "mmuext_op", "set_trap_table"):
        nr = HYPERCALL_NUMBERS[name]
        continued = [t for t in r.trace if t.nr == nr and t.continued]
        assert len(continued) > 300, name


@needs_gcc
def test_another_domain_runs_between_the_pieces_of_a_batch():
    """The work a batch does is charged to its domain's slice: when the slice ends between
    two pieces the scheduler runs the other domain, whose hypercalls appear in the trace
    between the batch's pieces."""
    m = Machine(64, trace=True)
    a = m.add_guest(str(build_guest("preempt")), 16)
    b = m.add_guest(str(build_guest("spin")), 16, "yields 2000")
    assert m.run(timeout_s=120.0) == "shutdown"
    assert m.result(a).test_result == "SUCCESS"
    tr = list(m.hv.trace or [])
    mine = [i for i, t in enumerate(tr) if t.domid == a.domain_id and t.nr == MMU_UPDATE]
    first = next(i for i in mine if tr[i].continued)
    last = next(i for i in mine if i > first and not tr[i].continued)
    assert all(tr[i].continued for i in mine if first <= i < last)
    assert any(t.domid == b.domain_id for t in tr[first:last])


@needs_gcc
@pytest.mark.parametrize("what", ["huge-mmu", "huge-invlpg", "huge-traps"])
def test_run_with_a_timeout_returns_during_a_huge_batch(what):
    """``xenspec run --timeout 2`` of a guest whose one hypercall has minutes of work: the
    batch is preempted, its work uses up slices, and the wall-clock guard, checked between
    slices, ends the run (a generous bound on the whole command, not a speed assertion)."""
    cmd = [sys.executable, "-m", "xenspec.cli", "run", str(build_guest("preempt")),
           "--cmdline", what, "--timeout", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert "issuing one" in proc.stdout
    assert "domain 1 timed out" in proc.stderr


# --- do_memory_op's refusals -------------------------------------------------------------------
def dma_guest(machine_frames: int) -> PVGuest:
    hv = Hypervisor(machine_frames)
    pv = PVPlatform(hv)
    hv.hypercall_table.update(MemOp(pv).hypercalls())
    g = PVGuest(hv, 256)
    pv.setup_domain(g.domain)
    return g


@pytest.mark.parametrize(("address_bits", "done"), [(29, 0), (30, 1), (31, 1), (0, 1)])
def test_a_dma_restriction_below_dma_bitsize_is_refused(address_bits, done):
    """memory.c do_memory_op: on a machine wider than 2^30 bytes, an address_bits below
    dma_bitsize (30, CONFIG_DMA_BITSIZE) answers the start extent; 30 and up ask for DMA
    memory, which every frame of the model's heap below 2^30 bytes satisfies."""
    g = dma_guest(1 << 19)  # 2 GB: 31 address bits
    mfn = g.mfn(g.free_pfns()[0])
    extents = g.write_args(mfn.to_bytes(4, "little"))
    arg = g.write_args(RESERVATION.pack(extents, 1, 0, address_bits, abi.DOMID_SELF), 0xF000)
    assert g.hypercall("memory_op", abi.XENMEM_decrease_reservation, arg) == done
    assert (mfn not in g.domain.page_list) == bool(done)


@pytest.mark.parametrize("start", [0, 3])
def test_refused_reservation_arguments_answer_the_start_extent(start):
    """do_memory_op answers each refusal of a reservation's arguments with start_extent, not an
    errno: an unreadable reservation, a start beyond nr_extents, another domain named by an
    unprivileged caller, a domain that does not exist."""
    g = balloon_guest(256)
    cmd = abi.XENMEM_increase_reservation | start << abi.XENMEM_START_EXTENT_SHIFT
    assert g.hypercall("memory_op", cmd, 0x1000) == start  # not mapped: unreadable
    beyond = g.write_args(RESERVATION.pack(0, start - 1 if start else 0, 0, 0, abi.DOMID_SELF))
    if start:
        assert g.hypercall("memory_op", cmd, beyond) == start
    for domid in (0, 1, 0x7FEF):
        other = g.write_args(RESERVATION.pack(0, 8, 0, 0, domid))
        assert g.hypercall("memory_op", cmd, other) == start
    assert g.domain.tot_pages == 256

"""refmodel/mmfast.c (the C twin of MM.mmu_update_common) against the Python.

Two machines are built alike (tests/test_mm_fused.py's: two domains, pinned L1 tables, data
frames). Each request of test_mm_fused's kinds goes, on the first, to the twin (and, where the
twin stops, to ``mmu_update_common``, as ``_run_batch`` sends it) and, on the second, to
``mmu_update_common`` alone; after each the results, the frame tables, machine memory, the free
list, the TLB flushes and the shadow-LDT invalidations must be equal. Whole batches go through
``mmu_update`` with and without the twin (pages crossed, the budget's preemption, records
that fail). The twin must really complete requests (else the comparisons are between two runs
of the Python), and it is left out wherever the Python it stands for is replaced.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mm_fused import NR_FRAMES, World, apply, build, ldt_types, pokes, removals, requests

from xenspec.refmodel import mm_native
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.mm import MM
from xenspec.refmodel.pvguest import PVGuest
from xenspec.spec import abi

pytestmark = pytest.mark.skipif(mm_native.library() is None,
                                reason="the twin needs gcc to be built")


class Twin:
    """Requests of a World sent to the twin first, counted."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.scratch = w.hv.free_list[0] << abi.PAGE_SHIFT  # a free frame holds the record
        mm = w.hv.mm
        assert mm.mmu_update_bulk(w.a.domain, mm.mmu_update_handler()) is not None  # built
        self.done = 0

    def __call__(self, req: tuple[object, ...]) -> object:
        w = self.w
        if req[0] in ("remove", "ldt", "poke"):
            return apply(w, req, True)
        mm = w.hv.mm
        mm.mmu_update_common = self.common  # type: ignore[method-assign]
        try:
            return apply(w, req, True)
        finally:
            del mm.mmu_update_common

    def common(self, d: Domain, buf: bytes) -> int:
        """As ``_run_batch`` does a run of one record: the twin, else the Python."""
        mm = self.w.hv.mm
        self.w.hv.memory.write(self.scratch, buf)
        fd = mm.foreign if mm.foreign is not None else d
        assert mm._twin is not None
        if mm._twin(d.domain_id, fd.domain_id, self.scratch, 1):
            self.done += 1
            return 0
        return MM.mmu_update_common(mm, d, buf)


def run_both(reqs: list[tuple[object, ...]]) -> Twin:
    twin_world, ref = build(), build()
    twin = Twin(twin_world)
    for req in reqs:
        rc = twin(req)
        assert rc == apply(ref, req, True), req
        # The record the twin read: the same bytes in the reference's free frame.
        ref.hv.memory.write(twin.scratch, twin_world.hv.memory.read(twin.scratch, 16))
        assert twin_world.state() == ref.state(), req
    return twin


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(requests, st.one_of(removals, ldt_types, pokes)),
                min_size=1, max_size=40))
def test_twin_agrees_with_mmu_update_common(reqs: list[tuple[object, ...]]) -> None:
    run_both(reqs)


def test_the_twin_completes_requests() -> None:
    """A read-write map, the same entry made read-only, a flag the fast path keeps, the entry
    cleared, a map of FOREIGNDOM's frame: the twin does them; a first writable map of a frame
    (a type change: its flush is the Python's) and a refused flag it leaves."""
    RW, RO = abi._PAGE_PRESENT | abi._PAGE_RW, abi._PAGE_PRESENT
    first_rw = ("a", False, "l1", 0, 0, "data", 0, RW, 0)
    done = [("a", False, "l1", 0, 1, "data", 0, RW, 0),
            ("a", False, "l1", 0, 1, "data", 0, RO, 0),
            ("a", False, "l1", 0, 1, "data", 0, RO | abi._PAGE_ACCESSED, 0),
            ("a", False, "l1", 0, 1, "data", 0, 0, 0),
            ("a", True, "l1", 0, 2, "data_b", 1, RO, 0)]
    left = [("a", False, "l1", 0, 3, "data", 0, RW | abi._PAGE_GLOBAL, 0),
            ("a", False, "l2", 0, 1, "l1", 2, RO, 0)]
    twin = run_both([first_rw, *done, *left])
    assert twin.done == len(done)


def batch(g: PVGuest, data: list[int], tables: list[int], n: int, seed: int
          ) -> list[tuple[int, int]]:
    """``n`` requests over ``tables``: maps of ``data`` (read-only, read-write, cleared), and
    every 97th a request the twin leaves (MMU_MACHPHYS_UPDATE of a data frame)."""
    rnd = random.Random(seed)
    reqs = []
    for k in range(n):
        frame = rnd.choice(data)
        if k % 97 == 96:
            reqs.append(((frame << abi.PAGE_SHIFT) | abi.MMU_MACHPHYS_UPDATE, k))
            continue
        t, i = rnd.choice(tables), rnd.randrange(abi.L1_PAGETABLE_ENTRIES)
        flags = rnd.choice([0, abi._PAGE_PRESENT, abi._PAGE_PRESENT | abi._PAGE_RW])
        reqs.append((g.entry_maddr(t, i), g.pte(frame, flags)))
    return reqs


def count_runs(w: World, done: list[int]) -> None:
    """Record, in ``done``, how many records each call of the twin did."""
    real = w.hv.mm.mmu_update_bulk

    def counting(d: Domain, handler: Callable[[Domain, bytes], int]
                 ) -> Callable[[int, int], int] | None:
        bulk = real(d, handler)
        assert bulk is not None

        def run(maddr: int, n: int) -> int:
            done.append(bulk(maddr, n))
            return done[-1]
        return run

    w.hv.mm.mmu_update_bulk = counting  # type: ignore[method-assign]


@pytest.mark.parametrize("seed", range(4))
def test_batches_agree(seed: int) -> None:
    """mmu_update of 700 requests (three invocations of the budget, pages of the request
    array crossed) with the twin and without: the same result and state; with seed 3 the
    last request maps a frame beyond RAM, and the batch fails there."""
    runs = []
    runs_done: list[int] = []
    for use_twin in (True, False):
        w = build()
        if not use_twin:
            w.hv.mm.mmu_update_bulk = lambda d, h: None  # type: ignore[method-assign]
        else:
            count_runs(w, runs_done)
        g = w.a
        reqs = batch(g, w.data["a"], w.l1s["a"], 700, seed)
        if seed == 3:
            reqs[-1] = (g.entry_maddr(w.l1s["a"][0], 5), (NR_FRAMES + 5) << abi.PAGE_SHIFT | 1)
        rc, done = g.mmu_update(reqs)
        runs.append((rc, done, w.state()))
    assert runs[0] == runs[1]
    assert sum(runs_done) > 500  # most records were the twin's, in runs of many
    assert max(runs_done) > 50
    assert runs[0][:2] == ((-abi.EINVAL, 699) if seed == 3 else (0, 700))


def test_a_replaced_rule_keeps_the_python() -> None:
    """The twin is left out while mmu_update_common or _drops_plainly is replaced, on the
    machine or on the class, and while any rule the fused case stands for is."""
    w = build()
    mm, d = w.hv.mm, w.a.domain
    assert mm.mmu_update_bulk(d, mm.mmu_update_handler()) is not None
    mm._drops_plainly = lambda l1e: False  # type: ignore[method-assign]
    assert mm.mmu_update_bulk(d, mm.mmu_update_handler()) is None
    del mm._drops_plainly
    mm.get_page = lambda mfn, dom: False  # type: ignore[method-assign]
    assert mm.mmu_update_bulk(d, mm.mmu_update_handler()) is None
    del mm.get_page
    assert mm.mmu_update_bulk(d, mm.mmu_update_handler()) is not None


def test_the_twin_stays_inside_memory() -> None:
    """A run whose records would lie beyond machine memory is not read: nothing done."""
    w = build()
    mm, d = w.hv.mm, w.a.domain
    bulk = mm.mmu_update_bulk(d, mm.mmu_update_handler())
    assert bulk is not None
    end = w.hv.memory.nr_frames * abi.PAGE_SIZE
    assert bulk(end - 8, 1) == 0
    assert bulk(end, 1) == 0
    assert bulk(1 << 62, 1) == 0

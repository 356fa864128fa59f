"""Benchmark of the reference hypervisor's MMU (a script, not a test).

Measures, on this machine:
  1. L1 entries validated per second through batched mmu_update (new present entries, each
     checked and reference-counted as Xen does), for read-write and read-only mappings;
  2. the time to pin and to unpin a full page directory: 1008 L1 tables of 1024 entries each,
     the whole guest part of the 4 GB address space (about a million entries validated);
  3. the cost of creating a 64 MB domain.
Beside the first, its floor from the same run: the same entries written into the same frames
by Python with no check and no hypercall (what touching them costs), and the ratio.

Usage: python benchmarks/bench_mmu.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.pvguest import PTE_RO, PTE_RW, PVGuest
from xenspec.spec import abi

BATCH = 1000  # requests per mmu_update call (16 bytes each: fits the argument area)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_mmu_update(nr_tables: int, flags: int) -> tuple[float, int, float]:
    """Seconds to fill ``nr_tables`` pinned, empty L1 tables through mmu_update batches; the
    count; seconds to write the same words unchecked (the floor)."""
    hv = Hypervisor(1 << 16)
    g = PVGuest(hv, 4096 + nr_tables, nr_mapped=64)
    free = list(g.free_pfns())
    tables, data = [g.mfn(p) for p in free[:nr_tables]], [g.mfn(p) for p in free[nr_tables:]]
    for t in tables:
        assert g.pin(t, 1) == 0
    reqs = [
        (g.entry_maddr(t, i), g.pte(data[(k * 1024 + i) % len(data)], flags))
        for k, t in enumerate(tables)
        for i in range(abi.L1_PAGETABLE_ENTRIES)
    ]

    def run() -> None:
        for start in range(0, len(reqs), BATCH):
            rc, _ = g.mmu_update(reqs[start : start + BATCH])
            assert rc == 0, rc

    def unchecked() -> None:
        write = hv.memory.write_entry
        for ptr, val in reqs:
            write(ptr >> abi.PAGE_SHIFT, (ptr & (abi.PAGE_SIZE - 1)) >> 2, val)

    return timed(run), len(reqs), timed(unchecked)


def bench_pin_full_directory() -> tuple[float, float, int]:
    """Seconds to pin, then unpin, a page directory whose 1008 guest slots all hold L1s."""
    nr_l1 = abi.L2_PAGETABLE_FIRST_XEN_SLOT
    hv = Hypervisor(1 << 16)
    g = PVGuest(hv, 4096 + nr_l1 + 1, nr_mapped=64)
    free = list(g.free_pfns())
    l2, l1s, data = g.mfn(free[0]), [g.mfn(p) for p in free[1 : 1 + nr_l1]], free[1 + nr_l1 :]
    data_mfns = [g.mfn(p) for p in data]
    mem = hv.memory
    for slot, l1 in enumerate(l1s):
        mem.write_entry(l2, slot, g.pte(l1, PTE_RW))
        for i in range(abi.L1_PAGETABLE_ENTRIES):
            flags = PTE_RW if i % 2 else PTE_RO
            mem.write_entry(l1, i, g.pte(data_mfns[(slot * 7 + i) % len(data_mfns)], flags))
    pin = timed(lambda: _expect(g.pin(l2, 2)))
    unpin = timed(lambda: _expect(g.unpin(l2)))
    return pin, unpin, nr_l1 * abi.L1_PAGETABLE_ENTRIES


def _expect(rc: int) -> None:
    assert rc == 0, rc


def bench_create_domain() -> float:
    hv = Hypervisor(1 << 16)
    return timed(lambda: PVGuest(hv, 16384, nr_mapped=16384))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median reported)")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    nr_tables = 8 if args.quick else 64

    for name, flags in (("read-write", PTE_RW), ("read-only", PTE_RO)):
        runs = [bench_mmu_update(nr_tables, flags) for _ in range(repeat)]
        secs = statistics.median(r[0] for r in runs)
        floor = statistics.median(r[2] for r in runs)
        n = runs[0][1]
        print(f"mmu_update, {name} L1 entries: {n} in {secs:.3f} s = {n / secs:,.0f} entries/s "
              f"(batches of {BATCH}; target 500,000: ratio {n / secs / 500_000:.2f}); "
              f"unchecked writes {n / floor:,.0f} entries/s, ratio {secs / floor:.1f}")
    if not args.quick:
        runs3 = [bench_pin_full_directory() for _ in range(repeat)]
        pin = statistics.median(r[0] for r in runs3)
        unpin = statistics.median(r[1] for r in runs3)
        n = runs3[0][2]
        print(f"pin a full page directory (1008 L1s, {n} entries): {pin:.3f} s "
              f"= {n / pin:,.0f} entries/s; unpin: {unpin:.3f} s")
    create = statistics.median(bench_create_domain() for _ in range(repeat))
    print(f"create a 64 MB domain with its initial page tables: {create * 1000:.1f} ms")


if __name__ == "__main__":
    main()

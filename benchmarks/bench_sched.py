"""Scheduler benchmarks: run by hand (``python benchmarks/bench_sched.py``), never in tests.

* context switch: two domains that only yield, against one (a yield that finds no other
  runnable domain still ends the slice and runs the scheduler): the cost of a scheduling
  pass, and the difference per yield, the cost of running the other vCPU's engine;
* the other design: one engine for every vCPU, switched by a full context save and restore
  (CR3 and GDTR included) and a TLB flush; and the cost of creating an engine;
* preemption: instruction counting (``emu_start`` with ``count``) against a free-running
  engine on the same loop, and a compute-bound guest with the context-switch allowance cut
  from 5 ms to 50 us (100 times the slices);
* the wall-clock time of 100 ms of system time for two compute-bound domains.

Each figure is the median of several runs; per-iteration costs are (t(N) - t(0)) / N.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from timing import median_time  # benchmarks/timing.py, beside this script

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.boot import Machine

MS = 1_000_000


def run_guests(*cmdlines: str, ctx_allow_ns: int | None = None,
               until_ns: int | None = None) -> Machine:
    m = Machine(memory_mb=64)
    if ctx_allow_ns is not None:
        m.pv.sched.ctx_allow_ns = ctx_allow_ns
    for c in cmdlines:
        m.add_guest(str(build_guest("spin")), domain_mb=4, cmdline=c)
    m.run(until_ns=until_ns, timeout_s=600)
    return m


def per_yield(domains: int, n: int) -> float:
    def go(k: int) -> Callable[[], object]:
        return lambda: run_guests(*[f"yields {k}"] * domains)

    return (median_time(go(n)) - median_time(go(0))) / (n * domains)


def engine_costs() -> tuple[float, float]:
    """(create an engine over 64 MB of shared memory, save+restore+TLB flush) in seconds."""
    import ctypes
    import mmap

    uc_mod: Any = importlib.import_module("unicorn")
    ucc: Any = importlib.import_module("unicorn.unicorn_const")
    ram = mmap.mmap(-1, 64 << 20)
    buf = (ctypes.c_char * len(ram)).from_buffer(ram)

    def create() -> Any:
        uc = uc_mod.Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_32)
        uc.mem_map_ptr(0, len(ram), ucc.UC_PROT_ALL, ctypes.addressof(buf))
        return uc

    create_s = median_time(create, runs=9)
    uc = create()
    ctx_a, ctx_b = uc.context_save(), uc.context_save()
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        uc.context_update(ctx_a)
        uc.context_restore(ctx_b)
        uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)
    return create_s, (time.perf_counter() - t) / n


def counting_overhead(n: int = 50_000_000) -> tuple[float, float]:
    """Instructions per second of a loop on a bare engine, free-running and counted."""
    uc_mod: Any = importlib.import_module("unicorn")
    ucc: Any = importlib.import_module("unicorn.unicorn_const")
    x86: Any = importlib.import_module("unicorn.x86_const")

    def engine() -> Any:
        # A separate engine for each mode: on Unicorn 2.1.4 an emu_start with count after one
        # with timeout on the same engine never returns.
        uc = uc_mod.Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_32)
        uc.mem_map(0, 0x2000)
        uc.mem_write(0x1000, b"\x40\xeb\xfd")  # inc %eax; jmp .-1
        return uc

    free_uc, counted_uc = engine(), engine()
    free = median_time(lambda: free_uc.emu_start(0x1000, 0xFFFFFFFF, timeout=200_000), runs=3)
    done = free_uc.reg_read(x86.UC_X86_REG_EAX)
    counted = median_time(lambda: counted_uc.emu_start(0x1000, 0xFFFFFFFF, count=n), runs=3)
    return 2 * done / free / 3, n / counted  # eax counts incs over the three runs


def main() -> None:
    one = per_yield(1, 2000)
    two = per_yield(2, 2000)
    print(f"yield, one domain (no switch):     {one * 1e6:7.1f} us")
    print(f"yield, two domains (a switch):     {two * 1e6:7.1f} us")
    print(f"  context switch through the scheduler: {(two - one) * 1e6:7.1f} us")
    create_s, swap_s = engine_costs()
    print(f"one engine per vCPU: create        {create_s * 1e3:7.2f} ms")
    print(f"one shared engine: save+restore+TLB flush {swap_s * 1e6:7.2f} us per switch")
    free_ips, counted_ips = counting_overhead()
    print(f"loop, free-running: {free_ips / 1e6:7.0f} M instr/s; counted: "
          f"{counted_ips / 1e6:7.0f} M instr/s")
    base = median_time(lambda: run_guests("work 20"), runs=3)
    fine = median_time(lambda: run_guests("work 20", ctx_allow_ns=50_000), runs=3)
    m = run_guests("work 20", ctx_allow_ns=50_000)
    slices = m.pv.sched.stats.slices
    print(f"compute guest, 10 x 5 ms slices: {base * 1e3:7.1f} ms; 10 x 50 us: "
          f"{fine * 1e3:7.1f} ms ({slices} slices: {(fine - base) / slices * 1e6:5.1f} us each)")
    wall = median_time(lambda: run_guests("work 1000", "work 1000", until_ns=100 * MS), runs=3)
    print(f"two compute domains, 100 ms of system time: {wall * 1e3:7.1f} ms wall")


if __name__ == "__main__":
    main()

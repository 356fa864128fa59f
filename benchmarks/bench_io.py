"""Device I/O benchmarks: run by hand (``python benchmarks/bench_io.py``), never in tests.

* ring round trip, guest: the blkfront guest kernel sends a null request (nr_segments 0, which
  the back end refuses at its first check: no grant, no image access) and waits for the
  response: ring, EVTCHNOP_send, the back end in the model, its response, the event upcall;
* ring round trip, Python: a Python front ring and the model's blkif back end on one page of
  machine memory, called directly (no guest, no event channel): the ring and request-decoding
  cost alone;
* block throughput: the guest writes, then reads, 16 MB of a 32 MB image file in requests of
  11 pages (44 KB), four requests in flight per push (with 1 MB, the transfer was a tenth of
  a run and the difference of two medians was noise: one run printed -131 MB/s);
* with ``--minios IMAGE``, a busy I/O guest: a Mini-OS kernel with blkfront (its block test
  thread reads random sectors, one sector a request, up to a ring of requests in flight, and
  polls) booted as ``xenspec run IMAGE --disk`` boots it, measured once its disk loop runs:
  guest (system) time per wall second, block requests per wall second, and per request the
  guest's instructions, traps and stores. The stores are counted in a short window of their
  own (a write hook slows the engine); times their cost on a bare engine, they estimate what
  Unicorn's store path takes of each request (a profile is the better measure: in py-spy's,
  13 to 22% of the samples). No Mini-OS image ships with xenspec.

Each figure is the median of several runs; a per-iteration cost is (t(N) - t(0)) / N, so
machine, domain and connection set-up is not counted.

Usage: python benchmarks/bench_io.py [--minios IMAGE] [--window SECONDS]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_cpu import raw_unicorn_compute  # benchmarks/bench_cpu.py, beside this script
from timing import median_time  # benchmarks/timing.py, beside this script

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.blkback import BlkifRequest, BlkifRing, DiskImage, unpack_response
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.memory import MachineMemory
from xenspec.refmodel.ring import FrontRing, SharedRing
from xenspec.spec import abi

IMAGE_MB = 32
TRANSFER_MB = 16


def guest_run(elf: str, image: Path, cmdline: str) -> None:
    m = Machine(64, devices=True)
    d = m.add_guest(elf, 16, cmdline)
    m.attach_disk(d.domain_id, str(image))
    m.run(timeout_s=600)
    result = m.result(d)
    if result.test_result != "SUCCESS":
        raise RuntimeError(f"blkfront {cmdline!r}: {result.test_result}\n{result.console}")


def per_iteration(elf: str, image: Path, mode: str, n: int) -> float:
    def go(k: int) -> Callable[[], object]:
        return lambda: guest_run(elf, image, f"{mode} {k}")

    return (median_time(go(n)) - median_time(go(0))) / n


class _NoGrants:
    def map(self, flags: int, ref: int, dom: int) -> tuple[int, int, int]:
        return abi.GNTST_bad_gntref, 0, 0

    def unmap(self, dev_bus_addr: int, handle: int) -> int:
        return abi.GNTST_okay


def python_round_trips(image: Path, n: int) -> float:
    mem = MachineMemory(4)
    sring = SharedRing(mem, 0, abi.BLKIF_REQUEST_SIZE)
    sring.init()
    front = FrontRing(sring)
    back = BlkifRing(mem, 0, 1, DiskImage(image), _NoGrants(), lambda: None)
    null = BlkifRequest(abi.BLKIF_OP_READ, 0, 0, 1, 0, ()).pack()
    t = time.perf_counter()
    for _ in range(n):
        front.put_request(null)
        if front.push_requests_and_check_notify():
            back.kick()
        while front.has_unconsumed_responses():
            unpack_response(front.get_response())
        front.final_check_for_responses()
    return (time.perf_counter() - t) / n


def busy_guest(image: str, disk: Path, window_s: float) -> None:
    """The busy I/O row: ``image`` (a Mini-OS with blkfront) in its disk loop."""
    from unicorn import unicorn_const as ucc

    from xenspec.refmodel.blkback import ImageError
    from xenspec.refmodel.builder import BuildError
    from xenspec.refmodel.elfbuild import load_image_file

    try:
        m = Machine(256, console=lambda _d, _b: None, ring_console=lambda _d, _b: None,
                    backend_domid=0)
        d = m.add_guest(load_image_file(image, 16 << 20), 16, "", devices=True)
        dev = m.attach_disk(d.domain_id, str(disk))
    except (OSError, ImageError, BuildError, ValueError) as exc:
        sys.exit(f"bench_io: {image}: {exc}")
    t = time.perf_counter()
    while dev.ring is None or dev.ring.stats.requests == 0:
        if time.perf_counter() - t > 120 or not d.is_running:
            sys.exit(f"bench_io: {image}: no block request within 120 s: not a blkfront guest?")
        m.run(timeout_s=0.5)
    print(f"busy I/O guest ({image}): its first block request after {time.perf_counter() - t:.1f}"
          f" s; measuring {window_s:.0f} s of its disk loop", flush=True)
    cpu, clock, stats = m.cpus[d.domain_id], m.pv.clock, dev.ring.stats
    r0, g0, i0, t0 = stats.requests, clock.now_ns(), cpu.instructions, cpu.traps
    w0 = time.perf_counter()
    m.run(timeout_s=window_s)
    wall = time.perf_counter() - w0
    n, guest_s = stats.requests - r0, (clock.now_ns() - g0) / 1e9
    if not n or not guest_s:
        sys.exit(f"bench_io: {image}: the guest did no block I/O in the window")
    print(f"  guest time per wall second:           1/{wall / guest_s:.1f} "
          f"({guest_s:.3f} guest s in {wall:.1f} s; target 1/10: ratio {guest_s / wall * 10:.2f})")
    print(f"  block requests:                       {n / wall:8.0f} per wall second, "
          f"{wall / n * 1e6:.0f} us each ({guest_s / n * 1e9:.0f} ns of guest time)")
    print(f"  per request:                          {(cpu.instructions - i0) / n:8.0f} "
          f"instructions, {(cpu.traps - t0) / n:.2f} traps")
    stores = [0]

    def count(_uc: object, _access: int, _addr: int, _size: int, _value: int,
              _user: object) -> None:
        stores[0] += 1

    hook = cpu.uc.hook_add(ucc.UC_HOOK_MEM_WRITE, count)
    r1 = stats.requests
    m.run(timeout_s=min(5.0, window_s))
    cpu.uc.hook_del(hook)
    per_request = stores[0] / max(1, stats.requests - r1)
    loops = 2_000_000
    t_store = (statistics.median(raw_unicorn_compute(loops, store=True) for _ in range(3))
               - statistics.median(raw_unicorn_compute(loops) for _ in range(3))) / loops
    print(f"  stores per request:                   {per_request:8.0f} "
          f"(x {t_store * 1e9:.0f} ns a store on a bare engine = {per_request * t_store * 1e6:.0f}"
          f" us of each request's {wall / n * 1e6:.0f} us: an estimate of Unicorn's store path)")


def main() -> None:
    ap = argparse.ArgumentParser(description="Device I/O benchmarks (see the module's text).")
    ap.add_argument("--minios", metavar="IMAGE",
                    help="a Mini-OS kernel with blkfront: also measure the busy I/O guest")
    ap.add_argument("--window", type=float, default=20.0, metavar="SECONDS",
                    help="wall seconds of the Mini-OS disk loop measured (default 20)")
    args = ap.parse_args()
    if args.minios is not None:
        with tempfile.TemporaryDirectory() as tmp:
            disk = Path(tmp) / "disk.img"
            disk.write_bytes(bytes(1 << 20))
            busy_guest(args.minios, disk, args.window)
    else:
        print("busy I/O guest: not measured (give a Mini-OS image with blkfront: --minios)")
    elf = str(build_guest("blkfront"))
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "disk.img"
        image.write_bytes(bytes(IMAGE_MB << 20))
        n_null, kb = 2000, TRANSFER_MB << 10
        t_null = per_iteration(elf, image, "bench-null", n_null)
        print(f"ring round trip, guest (null request):  {t_null * 1e6:8.1f} us "
              f"({1 / t_null:8.0f} per second)")
        t_py = statistics.median(python_round_trips(image, 20000) for _ in range(5))
        print(f"ring round trip, Python front end:      {t_py * 1e6:8.1f} us "
              f"({1 / t_py:8.0f} per second)")
        print(f"  guest / Python front end:             {t_null / t_py:8.1f} "
              f"(the guest's event, hypercall and upcall path; target 20 us: ratio "
              f"{t_null / 20e-6:.2f})")
        t_w = per_iteration(elf, image, "bench-write", kb) * 1024
        print(f"guest block write, {TRANSFER_MB} MB:               {1 / t_w:8.1f} MB/s "
              f"({t_w * 1e3:.1f} ms per MB)")
        t_r = per_iteration(elf, image, "bench-read", kb) * 1024
        print(f"guest block read, {TRANSFER_MB} MB:                {1 / t_r:8.1f} MB/s "
              f"({t_r * 1e3:.1f} ms per MB)")


if __name__ == "__main__":
    main()

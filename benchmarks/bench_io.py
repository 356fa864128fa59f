"""Device I/O benchmarks: run by hand (``python benchmarks/bench_io.py``), never in tests.

* ring round trip, guest: the blkfront guest kernel sends a null request (nr_segments 0, which
  the back end refuses at its first check: no grant, no image access) and waits for the
  response: ring, EVTCHNOP_send, the back end in the model, its response, the event upcall;
* ring round trip, Python: a Python front ring and the model's blkif back end on one page of
  machine memory, called directly (no guest, no event channel): the ring and request-decoding
  cost alone;
* block throughput: the guest writes, then reads, 1 MB of a 4 MB image file in requests of 11
  pages (44 KB), four requests in flight per push.

Each figure is the median of several runs; a per-iteration cost is (t(N) - t(0)) / N, so
machine, domain and connection set-up is not counted.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from timing import median_time  # benchmarks/timing.py, beside this script

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.blkback import BlkifRequest, BlkifRing, DiskImage, unpack_response
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.memory import MachineMemory
from xenspec.refmodel.ring import FrontRing, SharedRing
from xenspec.spec import abi

IMAGE_MB = 4


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


def main() -> None:
    elf = str(build_guest("blkfront"))
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "disk.img"
        image.write_bytes(bytes(IMAGE_MB << 20))
        n_null, kb = 2000, 1024
        t_null = per_iteration(elf, image, "bench-null", n_null)
        print(f"ring round trip, guest (null request):  {t_null * 1e6:8.1f} us "
              f"({1 / t_null:8.0f} per second)")
        t_py = statistics.median(python_round_trips(image, 20000) for _ in range(5))
        print(f"ring round trip, Python front end:      {t_py * 1e6:8.1f} us "
              f"({1 / t_py:8.0f} per second)")
        print(f"  guest / Python front end:             {t_null / t_py:8.1f} "
              f"(the guest's event, hypercall and upcall path; target 20 us: ratio "
              f"{t_null / 20e-6:.2f})")
        t_w = per_iteration(elf, image, "bench-write", kb) * kb
        print(f"guest block write, 1 MB:                {1 / t_w:8.1f} MB/s "
              f"({t_w * 1e3:.1f} ms per MB)")
        t_r = per_iteration(elf, image, "bench-read", kb) * kb
        print(f"guest block read, 1 MB:                 {1 / t_r:8.1f} MB/s "
              f"({t_r * 1e3:.1f} ms per MB)")


if __name__ == "__main__":
    main()

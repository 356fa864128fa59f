"""Deterministic meters for the hostile-guest harness: the work one hypercall does and the
memory a run holds.

Work is counted, never timed: ``WorkMeter`` counts the Python function calls (and calls of
built-in functions) made while the hypervisor handles one request, with ``sys.setprofile``.
The same request on the same state always makes the same calls, so the bound is a
deterministic assertion; a request that goes past it is stopped there (``WorkBoundExceeded``,
a ``BaseException`` so that the dispatcher's ``except Exception`` does not turn it into a
model bug) instead of running for hours, as a batch of 2^28 requests would. Xen bounds the
work of one hypercall by preempting long batches (hypercall_preempt_check and a continuation,
xen/arch/x86/mm.c and xen/common/memory.c); the model must bound it too (design decision D8).

Memory is measured with ``tracemalloc`` around each request: its peak (no single request may
make the hypervisor allocate a huge object) and what it leaves allocated (a guest may not make
the hypervisor keep ever more state); and over a whole run by the process's resident set
(RSS), which catches slow growth across many requests. Machine memory is one fixed mapping
(refmodel/memory.py).
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


class WorkBoundExceeded(BaseException):
    """A request did more work than its bound allows."""


class WorkMeter:
    """Counts the work of one measured call, two ways, and stops it past either bound:

    * the Python function calls it makes (``sys.setprofile``: calls of Python and of built-in
      functions), a measure of all the work it does;
    * the guest-memory accesses it makes (each record or buffer read from or written to the
      guest through ``copy_from_guest``, ``copy_to_guest`` or a batch reader), which is what a
      long batch repeats. ``instrument`` counts a hypervisor's accesses."""

    def __init__(self, call_bound: int, access_bound: int) -> None:
        self.call_bound = call_bound
        self.access_bound = access_bound
        self.calls = self.accesses = 0  # of the last measured call
        self.max_calls = self.max_accesses = 0
        self._active = False

    def access(self) -> None:
        if self._active:
            self.accesses += 1
            if self.accesses > self.access_bound:
                raise WorkBoundExceeded(f"more than {self.access_bound} guest-memory accesses")

    def measure(self, fn: Callable[[], T]) -> T:
        count = 0
        bound = self.call_bound

        def profile(_frame: FrameType, event: str, _arg: Any) -> None:
            nonlocal count
            if event == "call" or event == "c_call":
                count += 1
                if count > bound:
                    raise WorkBoundExceeded(f"more than {bound} function calls")

        previous = sys.getprofile()
        self.accesses = 0
        self._active = True
        sys.setprofile(profile)
        try:
            return fn()
        finally:
            sys.setprofile(previous)
            self._active = False
            self.calls = count
            self.max_calls = max(self.max_calls, count)
            self.max_accesses = max(self.max_accesses, self.accesses)

    def instrument(self, hv: Any) -> None:
        """Count the guest-memory accesses of ``hv`` (a Hypervisor), on this instance only."""
        meter = self
        copy_from, copy_to, reader = hv.copy_from_guest, hv.copy_to_guest, hv.guest_reader

        def copy_from_guest(v: Any, va: int, length: int) -> Any:
            meter.access()
            return copy_from(v, va, length)

        def copy_to_guest(v: Any, va: int, data: bytes) -> Any:
            meter.access()
            return copy_to(v, va, data)

        def guest_reader(v: Any, va: int) -> Any:
            r = reader(v, va)
            read = r.read

            def counted_read(size: int) -> Any:
                meter.access()
                return read(size)

            r.read = counted_read
            return r

        hv.copy_from_guest = copy_from_guest
        hv.copy_to_guest = copy_to_guest
        hv.guest_reader = guest_reader


class MemoryMeter:
    """Memory of measured calls (traced Python heap) and of the whole process (RSS).

    ``measure`` traces one call: the peak it reached and what it left allocated (objects it
    made that are still alive when it returns). Tracing only the calls keeps the invariant
    checks between them at full speed. ``rss_growth`` is the resident set's growth since the
    meter was made: what the run holds in all, machine memory included (a fixed mapping)."""

    def __init__(self) -> None:
        self.rss0 = rss_bytes()
        self.peak = 0  # the highest peak of a measured call
        self.retained = 0  # the most a measured call left allocated
        self.last_peak = self.last_retained = 0

    def measure(self, fn: Callable[[], T]) -> T:
        if tracemalloc.is_tracing():  # traced by someone else: no figures of ours
            return fn()
        tracemalloc.start()
        try:
            return fn()
        finally:
            self.last_retained, self.last_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.peak = max(self.peak, self.last_peak)
            self.retained = max(self.retained, self.last_retained)

    def rss_growth(self) -> int:
        return rss_bytes() - self.rss0


def rss_bytes() -> int:
    """The resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0

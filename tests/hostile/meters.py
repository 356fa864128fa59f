"""Deterministic meters for the hostile-guest harness: the work one hypercall does and the
memory a run holds.

Work is counted, never timed. ``WorkMeter`` counts, for every measured call, the Python frames
it enters (``sys.settrace``'s call events: every call of a Python function, comprehension or
lambda, and every resumption of a generator), and the guest-memory accesses it makes; on a
sample of calls (one in ``SAMPLE``, chosen by the caller from the call itself, so that a replay
samples the same calls) it also counts calls of built-in functions (``sys.setprofile``), the
full count the bound ``call_bound`` applies to. The same request on the same state always
makes the same count, so each bound is a deterministic assertion; a request that goes past one
is stopped there (``WorkBoundExceeded``, a ``BaseException`` so that the dispatcher's ``except
Exception`` does not turn it into a model bug) instead of running for hours, as a batch of
2^28 requests would. Every loop of the model that calls a Python function or runs a generator
per iteration is bounded on every call; a loop of built-in calls only, on the sampled calls.
Xen bounds the work of one hypercall by preempting long batches (hypercall_preempt_check and a
continuation, xen/arch/x86/mm.c and xen/common/memory.c); the model must bound it too (design
decision D8).

Memory, for every measured call: the process's resident set at its highest during the call
(Linux resets the high-water mark on request, /proc/self/clear_refs ``5``), above what it was
when the call began, so that no single request makes the hypervisor touch a huge object even
briefly. A call can also reach its peak in memory that is already resident: the C heap's free
chunks, which glibc keeps mapped after a free (a 64 MB buffer carved from 120 MB freed earlier
leaves the resident set where it was; a full test run met this). Before such a call, when the C
heap holds more than ``FREE_HEAP_SLACK`` free, the meter gives the free pages back (glibc's
malloc_trim), so that reusing them makes them resident again and counts. Python's own small-
object pools are not given back: a call can reuse the free slots of its arenas unseen (the
traced calls see them). And what the call leaves behind, as the growth of the Python heap's
allocated blocks (``sys.getallocatedblocks``, the objects still alive) and of the C heap's
bytes in use (glibc's mallinfo2: large buffers, however the allocator reuses memory; the
resident set without glibc). On the sampled calls, ``tracemalloc`` traces the call as well (the
peak and what stays allocated, byte for byte). Over a whole run the resident set's growth is
bounded too, which catches slow growth across many requests. Machine memory is one fixed
mapping (refmodel/memory.py). Where the high-water mark cannot be reset, every call is traced.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import tracemalloc
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

SAMPLE = 16  # one measured call in SAMPLE is also fully counted and traced


class WorkBoundExceeded(BaseException):
    """A request did more work than its bound allows."""


class WorkMeter:
    """Counts the work of one measured call and stops it past a bound:

    * the Python frames it enters (calls of Python functions, generator resumptions), on
      every call, bound ``frame_bound``;
    * on sampled calls, the function calls it makes, built-in functions included (a measure
      of all the work it does), bound ``call_bound``;
    * the guest-memory accesses it makes (each record or buffer read from or written to the
      guest through ``copy_from_guest``, ``copy_to_guest`` or a batch reader), which is what a
      long batch repeats, on every call, bound ``access_bound``. ``instrument`` counts a
      hypervisor's accesses."""

    def __init__(self, call_bound: int, access_bound: int, frame_bound: int) -> None:
        self.call_bound = call_bound
        self.access_bound = access_bound
        self.frame_bound = frame_bound
        self.frames = self.calls = self.accesses = 0  # of the last measured call
        self.max_frames = self.max_calls = self.max_accesses = 0
        self.sampled = 0  # calls fully counted
        self._active = False

    def access(self) -> None:
        if self._active:
            self.accesses += 1
            if self.accesses > self.access_bound:
                raise WorkBoundExceeded(f"more than {self.access_bound} guest-memory accesses")

    def measure(self, fn: Callable[[], T], sample: bool = False) -> T:
        """``fn()``, counted; ``sample``: count built-in calls too."""
        frames = calls = 0
        frame_bound, call_bound = self.frame_bound, self.call_bound

        def trace(_frame: FrameType, event: str, _arg: Any) -> None:
            nonlocal frames
            if event == "call":  # returning None: no line events in the frame
                frames += 1
                if frames > frame_bound:
                    raise WorkBoundExceeded(f"more than {frame_bound} Python frames entered")

        def profile(_frame: FrameType, event: str, _arg: Any) -> None:
            nonlocal frames, calls
            if event == "call":
                frames += 1
                calls += 1
                if frames > frame_bound:
                    raise WorkBoundExceeded(f"more than {frame_bound} Python frames entered")
            elif event == "c_call":
                calls += 1
            else:
                return
            if calls > call_bound:
                raise WorkBoundExceeded(f"more than {call_bound} function calls")

        # A tracer already installed (a debugger, coverage) keeps its place: the frames are
        # then counted by the profile hook, which gives the same call events.
        previous_trace, previous_profile = sys.gettrace(), sys.getprofile()
        use_profile = sample or previous_trace is not None
        self.accesses = 0
        self._active = True
        if use_profile:
            sys.setprofile(profile)
        else:
            sys.settrace(trace)
        try:
            return fn()
        finally:
            if use_profile:
                sys.setprofile(previous_profile)
            else:
                sys.settrace(previous_trace)
            self._active = False
            self.frames = frames
            self.max_frames = max(self.max_frames, frames)
            self.max_accesses = max(self.max_accesses, self.accesses)
            self.calls = calls if sample else 0
            if sample:
                self.sampled += 1
                self.max_calls = max(self.max_calls, calls)

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
    """Memory of measured calls and of the whole process (RSS).

    ``measure`` gives, for one call: ``last_peak``, the most it held at once (bytes: the
    traced peak when traced, else the resident set's high-water mark during the call above
    the resident set when it began), ``last_retained``, what it left allocated (bytes: traced,
    else the growth of the C heap's bytes in use, ``heap_in_use``, or where that cannot be
    read the resident set's growth), and ``last_blocks``, the growth of the Python heap's
    allocated blocks (objects it made that are still alive). Tracing only the
    calls keeps the invariant checks between them at full speed. ``rss_growth`` is the
    resident set's growth since the meter was made: what the run holds in all, machine memory
    included (a fixed mapping)."""

    def __init__(self) -> None:
        self.rss0 = rss_bytes()
        self.peak = 0  # the highest peak of a measured call
        self.retained = 0  # the most a measured call left allocated
        self.blocks = 0  # the most allocated blocks a measured call left
        self.last_peak = self.last_retained = self.last_blocks = 0
        self.traced = 0  # calls traced with tracemalloc

    def measure(self, fn: Callable[[], T], traced: bool = True) -> T:
        """``fn()``, measured; traced with tracemalloc if ``traced`` or if the high-water
        mark cannot be reset."""
        if not traced:
            release_free_heap(FREE_HEAP_SLACK)  # before the reset: the trim lowers the set
        if traced or not reset_peak_rss():
            return self._traced(fn)
        rss, heap, blocks = rss_bytes(), heap_in_use(), sys.getallocatedblocks()
        try:
            return fn()
        finally:
            self.last_blocks = sys.getallocatedblocks() - blocks
            self.last_retained = (heap_in_use() - heap if heap is not None
                                  else rss_bytes() - rss)
            self.last_peak = peak_rss() - rss
            self._record()

    def _traced(self, fn: Callable[[], T]) -> T:
        blocks = sys.getallocatedblocks()
        if tracemalloc.is_tracing():  # traced by someone else: no figures of ours
            self.last_peak = self.last_retained = self.last_blocks = 0
            return fn()
        tracemalloc.start()
        try:
            return fn()
        finally:
            self.last_retained, self.last_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.last_blocks = sys.getallocatedblocks() - blocks
            self.traced += 1
            self._record()

    def _record(self) -> None:
        self.peak = max(self.peak, self.last_peak)
        self.retained = max(self.retained, self.last_retained)
        self.blocks = max(self.blocks, self.last_blocks)

    def rss_growth(self) -> int:
        return rss_bytes() - self.rss0


class _Proc:
    """This process's /proc files the meters read, opened once (Linux; absent elsewhere)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.statm = self._open("/proc/self/statm", os.O_RDONLY)
        self.clear_refs = self._open("/proc/self/clear_refs", os.O_WRONLY)
        self.pid = os.getpid()

    @staticmethod
    def _open(path: str, flags: int) -> int | None:
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except OSError:
            return None


_PROC: list[_Proc] = []  # made on first use, after a fork too (the files are the process's)
_PROCESS_PEAK = [0]  # the process's peak RSS before the last reset of the high-water mark


def _proc() -> _Proc:
    if not _PROC or _PROC[0].pid != os.getpid():
        _PROC[:] = [_Proc()]
    return _PROC[0]


def rss_bytes() -> int:
    """The resident set size of this process (Linux /proc; 0 elsewhere)."""
    p = _proc()
    if p.statm is None:
        return 0
    try:
        return int(os.pread(p.statm, 128, 0).split()[1]) * p.page
    except (OSError, ValueError, IndexError):
        return 0


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h, glibc 2.33 and later)."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn  # type: ignore[no-any-return]


_MALLINFO2 = _mallinfo2()


def heap_in_use() -> int | None:
    """The bytes malloc has handed out and not had back (glibc mallinfo2: the chunks in use
    plus the mmapped ones), or None without glibc. Unlike the resident set, it grows with a
    buffer kept even when the buffer reuses memory freed earlier; Python's small objects live
    in pymalloc arenas outside it, and ``sys.getallocatedblocks`` counts those."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


FREE_HEAP_SLACK = 4 << 20  # free C heap a call may reuse, unseen, before it is given back


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MALLOC_TRIM = _malloc_trim()


def release_free_heap(slack: int) -> bool:
    """Give the C heap's free pages back to the kernel (glibc malloc_trim(0), which also
    releases free pages inside the heap, not only at its top) when more than ``slack`` bytes
    of it are free; whether it did. About 30 us when there is nothing left to give back."""
    if _MALLOC_TRIM is None or heap_free() <= slack:
        return False
    _MALLOC_TRIM(0)
    return True


def heap_free() -> int:
    """The bytes of the C heap that are free (glibc mallinfo2's fordblks; 0 without glibc)."""
    return 0 if _MALLINFO2 is None else int(_MALLINFO2().fordblks)


def peak_rss() -> int:
    """The resident set's high-water mark since the last reset, in bytes (getrusage's
    ru_maxrss, in KB on Linux, follows the reset)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def reset_peak_rss() -> bool:
    """Reset the resident set's high-water mark to its current size (Linux 4.0 and later:
    /proc/PID/clear_refs, value 5); whether it was reset. The process's own peak so far is
    kept for ``process_peak_rss``."""
    p = _proc()
    if p.clear_refs is None:
        return False
    _PROCESS_PEAK[0] = max(_PROCESS_PEAK[0], peak_rss())
    try:
        os.write(p.clear_refs, b"5")
    except OSError:
        return False
    return True


def process_peak_rss() -> int:
    """The process's peak resident set since it started, in bytes (the resets of the
    high-water mark by ``reset_peak_rss`` taken into account)."""
    return max(_PROCESS_PEAK[0], peak_rss())

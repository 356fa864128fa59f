"""The hostile-guest harness's meters catch what they are there to catch (tests/hostile/
meters.py): a hypercall planted into a machine of tests/hostile/world.py (and of the
random-code runs, tests/hostile/randcode.py) does unbounded work, touches a huge object for a
moment or keeps ever more memory, on a call that is fully counted and traced (one in
``SAMPLE``) and on one that is not, and the harness reports it as a failure of its kind
instead of running for hours or letting the process grow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hostile.calls import hc
from hostile.meters import (
    SAMPLE,
    MemoryMeter,
    WorkBoundExceeded,
    WorkMeter,
    heap_free,
    heap_in_use,
    reset_peak_rss,
)
from hostile.randcode import DOMAIN_MB, GUEST, MACHINE_MB, RandomCodeRun, _Checks
from hostile.world import (
    ACCESS_BOUND,
    CALL_BOUND,
    FRAME_BOUND,
    STEP_RETAINED_BLOCKS,
    STEP_RETAINED_BOUND,
    HostileFailure,
    World,
    sampled,
)

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.builder import DEFAULT_VIRT_BASE
from xenspec.spec import abi

Planted = Callable[..., int]


def _call(sample: bool) -> tuple[Any, ...]:
    """A xen_version call of attacker 1 that is (or is not) one of the sampled calls."""
    for k in range(1000):
        call = hc(1, "xen_version", (abi.XENVER_version, k))
        if sampled(call, 0) == sample:
            return call
    raise AssertionError("no such call")


def _failure(planted: Planted, sample: bool) -> str:
    """What the harness reports when the hypervisor's hypercall entry is ``planted``."""
    w = World()
    real = w.hv.hypercall

    def hypercall(v: Any, nr: int, *args: int) -> int:
        if v.domain is w.slots[1].domain:  # type: ignore[union-attr]
            return planted(w, v, nr, *args)
        return int(real(v, nr, *args))

    w.hv.hypercall = hypercall  # type: ignore[method-assign]
    with pytest.raises(HostileFailure) as info:
        w.run([_call(sample)])
    return info.value.problem


def _step(x: int) -> int:
    return x + 1


def _python_loop(w: World, v: Any, nr: int, *args: int) -> int:
    """A loop that calls a Python function each time round, forever."""
    x = 0
    while True:
        x = _step(x)


def _builtin_loop(w: World, v: Any, nr: int, *args: int) -> int:
    """A loop of built-in calls only, forever."""
    x: list[int] = []
    while True:
        x.append(len(x))
        x.pop()


def _guest_reads(w: World, v: Any, nr: int, *args: int) -> int:
    """A batch that reads the same guest record forever (a batch over aliased memory)."""
    while True:
        w.hv.copy_from_guest(v, DEFAULT_VIRT_BASE, 8)


@pytest.mark.parametrize("sample", [False, True])
def test_python_loop_is_stopped_on_every_call(sample: bool) -> None:
    problem = _failure(_python_loop, sample)
    assert "unbounded work" in problem
    bound = CALL_BOUND if sample and CALL_BOUND < FRAME_BOUND else FRAME_BOUND
    assert str(bound) in problem


def test_builtin_loop_is_stopped_on_a_sampled_call() -> None:
    problem = _failure(_builtin_loop, True)
    assert "unbounded work" in problem and f"more than {CALL_BOUND} function calls" in problem


@pytest.mark.parametrize("sample", [False, True])
def test_guest_access_loop_is_stopped(sample: bool) -> None:
    problem = _failure(_guest_reads, sample)
    assert f"unbounded work: more than {ACCESS_BOUND} guest-memory accesses" in problem


def _touch(n: int) -> bytearray:
    buf = bytearray(n)
    for i in range(0, n, 4096):
        buf[i] = 1
    return buf


def _transient(w: World, v: Any, nr: int, *args: int) -> int:
    """64 MB held for a moment, then freed."""
    buf = _touch(64 << 20)
    del buf
    return 0


def _keeps_bytes(w: World, v: Any, nr: int, *args: int) -> int:
    """10 MB kept by the hypervisor after the call (under the peak's bound)."""
    w.hv.planted_leak = _touch(10 << 20)  # type: ignore[attr-defined]
    return 0


def _keeps_objects(w: World, v: Any, nr: int, *args: int) -> int:
    """60,000 small objects kept by the hypervisor after the call: about 2.4 MB, under the
    bound in bytes, over the bound in objects."""
    w.hv.planted_leak = [i + 1000 for i in range(60_000)]  # type: ignore[attr-defined]
    return 0


needs_peak_reset = pytest.mark.skipif(not reset_peak_rss(),
                                      reason="needs /proc/self/clear_refs (Linux)")


@needs_peak_reset
@pytest.mark.parametrize("sample", [False, True])
def test_a_transient_huge_allocation_is_caught(sample: bool) -> None:
    assert "peaked at" in _failure(_transient, sample)


@needs_peak_reset
@pytest.mark.skipif(heap_in_use() is None, reason="needs glibc's mallinfo2")
@pytest.mark.parametrize("sample", [False, True])
def test_a_transient_allocation_in_freed_heap_is_caught(sample: bool) -> None:
    """The 64 MB are carved from C heap freed earlier and still resident (a long test
    process's state, in which a full run once missed them): caught all the same."""
    first = bytearray(20 << 20)
    del first  # glibc now serves blocks under 20 MB from its heap, not from mmap
    blocks = [bytearray(8 << 20) for _ in range(16)]
    del blocks[:-1]  # 120 MB free inside the heap; the last block keeps it from shrinking
    assert heap_free() >= 64 << 20, "the heap holds no large free chunk to reuse"
    assert "peaked at" in _failure(_transient, sample)
    del blocks


@needs_peak_reset
@pytest.mark.parametrize("sample", [False, True])
def test_retained_bytes_are_caught(sample: bool) -> None:
    problem = _failure(_keeps_bytes, sample)
    assert f"MB allocated (bound {STEP_RETAINED_BOUND >> 20} MB)" in problem


@pytest.mark.parametrize("sample", [False, True])
def test_retained_objects_are_caught(sample: bool) -> None:
    problem = _failure(_keeps_objects, sample)
    assert f"more objects allocated (bound {STEP_RETAINED_BLOCKS}" in problem


def test_one_call_in_sample_is_sampled() -> None:
    """The sample is a sixteenth of the calls, give or take, the same in a replay; a call
    repeated all along a run is sampled at some of its places."""
    calls = [hc(1, "xen_version", (abi.XENVER_version, k)) for k in range(4096)]
    n = sum(sampled(c, i) for i, c in enumerate(calls))
    assert 4096 // 32 < n < 4096 // 8
    assert [sampled(c, i) for i, c in enumerate(calls)] == \
        [sampled(c, i) for i, c in enumerate(calls)]
    same = sum(sampled(calls[0], i) for i in range(4096))
    assert 4096 // 32 < same < 4096 // 8


def test_the_meters_count_a_bounded_call() -> None:
    """A call within the bounds: counted, not stopped; the counts and figures are kept."""
    work, memory = WorkMeter(CALL_BOUND, ACCESS_BOUND, FRAME_BOUND), MemoryMeter()
    for sample in (False, True):
        assert memory.measure(lambda s=sample: work.measure(  # type: ignore[misc]
            lambda: sum(_step(i) for i in range(100)), s), traced=sample) == 5050
        assert work.frames >= 200 and work.max_frames >= 200
    assert work.calls >= work.frames and work.sampled == 1
    assert memory.traced == 1


def test_a_stopped_call_restores_the_hooks() -> None:
    work = WorkMeter(CALL_BOUND, ACCESS_BOUND, 50)
    with pytest.raises(WorkBoundExceeded):
        work.measure(lambda: _python_loop(None, None, 0))  # type: ignore[arg-type]
    import sys
    assert sys.gettrace() is None and sys.getprofile() is None


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
@pytest.mark.parametrize("sample", [False, True])
def test_random_code_checks_catch_planted_hypercalls(sample: bool) -> None:
    """The checks of a random-code run (every hypercall of every guest metered): a planted
    endless loop is stopped, a planted leak of objects is reported, on the sampled calls
    (every SAMPLE-th hypercall of the run) and on the others."""
    m = Machine(MACHINE_MB)
    victim = m.add_guest(str(build_guest(GUEST)), DOMAIN_MB, "victim 100000")
    run = RandomCodeRun((0,), 1)
    checks = _Checks(run, m)
    v = victim.vcpus[0]
    planted: list[Planted] = []
    checks.plain = lambda v, nr, *args: planted[0](None, v, nr, *args)
    if sample:  # the next hypercall is the SAMPLE-th
        planted.append(lambda w, v, nr, *args: 0)
        for _ in range(SAMPLE - 1):
            checks.hypercall(v, abi.__HYPERVISOR_xen_version, 0)
        planted.clear()
    planted.append(lambda w, v, nr, *args: _python_loop(w, v, nr))
    with pytest.raises(WorkBoundExceeded):
        checks.hypercall(v, abi.__HYPERVISOR_xen_version, 0)
    leak: list[int] = []
    run.hypercalls -= 1  # the same place in the sample again
    planted[0] = lambda w, v, nr, *args: leak.extend(i + 1000 for i in range(60_000)) or 0
    checks.hypercall(v, abi.__HYPERVISOR_xen_version, 0)
    found = re.search(r"and (\d+) objects allocated", run.problems[0] if run.problems else "")
    assert found is not None and int(found[1]) >= 60_000, run.problems

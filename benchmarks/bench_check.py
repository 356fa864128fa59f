"""Benchmark of the invariant check after every step of the hostile-guest harness (a script,
not a test).

The harness (tests/test_hostile.py, part A) checks every invariant after every hypercall on a
256-frame machine with a victim and three attackers. This script runs hostile runs drawn with
a fixed seed from the harness's own strategy (tests/hostile/calls.py) and, after every call,
times both checks on the same state: the full ``check_invariants`` (every quantifier over
every frame) and the ``IncrementalChecker`` the harness uses (re-evaluating only what changed).
It also asserts that both give the same list of violations, times the full check as it was
before (its event part through ``refmodel.event.check_event_invariants``, which makes the 128
default ports of a domain without event state at every read), and profiles a few of those
(``--profile``). Times are CPU seconds of this process (``time.process_time``), so that a
busy machine does not count the time the script waited for a processor.

Usage: python benchmarks/bench_check.py [--runs N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile.calls import runs
from hostile.world import World
from hypothesis import HealthCheck, given, seed, settings

from xenspec.refmodel.event import check_event_invariants
from xenspec.refmodel.view import ConcreteView, CountingView, _evaluate, check_invariants


def baseline_check(w: World) -> list[str]:
    """The full check with the event view of refmodel.event, as the harness used it before."""
    return _evaluate(ConcreteView(w.hv), CountingView(w.hv), check_event_invariants(w.hv))


class TimedWorld(World):
    """A World that times the full and the incremental check after every call."""

    before: ClassVar[list[float]] = []
    full: ClassVar[list[float]] = []
    fast: ClassVar[list[float]] = []
    first: ClassVar[list[bool]] = []  # the machine's first check (the incremental one is full)

    def check(self, call: Any, running_before: dict[int, bool]) -> str | None:
        t = time.process_time()
        before = baseline_check(self)
        self.before.append(time.process_time() - t)
        t = time.process_time()
        full = check_invariants(self.hv)
        t1 = time.process_time()
        fast = self.checker.check()
        t2 = time.process_time()
        assert fast == full == before, (fast, full, before)
        self.full.append(t1 - t)
        self.fast.append(t2 - t1)
        self.first.append(len(self.rcs) == 1)
        return super().check(call, running_before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4, help="hostile runs (10-24 call groups each)")
    p.add_argument("--profile", action="store_true", help="profile 5 full checks")
    a = p.parse_args()

    @seed(20261206)
    @settings(max_examples=a.runs, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(calls=runs(10, 24))
    def one(calls: list[Any]) -> None:
        TimedWorld(check_memory=False).run(calls)

    one()
    before, full, fast = TimedWorld.before, TimedWorld.full, TimedWorld.fast
    print(f"{len(full)} checked steps on a {World().hv.memory.nr_frames}-frame machine")
    print(f"full check before: median {statistics.median(before) * 1e3:8.2f} ms, "
          f"mean {statistics.mean(before) * 1e3:8.2f} ms")
    print(f"full check:        median {statistics.median(full) * 1e3:8.2f} ms, "
          f"mean {statistics.mean(full) * 1e3:8.2f} ms")
    print(f"incremental check: median {statistics.median(fast) * 1e3:8.2f} ms, "
          f"mean {statistics.mean(fast) * 1e3:8.2f} ms")
    later = [(b, f, x) for b, f, x, first in zip(before, full, fast, TimedWorld.first,
                                                 strict=True) if not first]
    print(f"after a machine's first check ({len(later)} steps): means before "
          f"{statistics.mean(b for b, _, _ in later) * 1e3:.2f} ms, full "
          f"{statistics.mean(f for _, f, _ in later) * 1e3:.2f} ms, incremental "
          f"{statistics.mean(x for _, _, x in later) * 1e3:.2f} ms")
    print(f"speed-up of the incremental check (means): over the full check before "
          f"{statistics.mean(before) / statistics.mean(fast):.1f}x, over the full check now "
          f"{statistics.mean(full) / statistics.mean(fast):.1f}x")
    if a.profile:
        w = World(check_memory=False)
        prof = cProfile.Profile()
        prof.runcall(lambda: [baseline_check(w) for _ in range(5)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()

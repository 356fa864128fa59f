"""The waits of whole runs: run by hand (``python benchmarks/bench_suites.py``), never in tests.

* ``xenspec prove --no-cache -j JOBS``: every proof obligation afresh, the wall time and the
  slowest obligation, beside issue 17's targets (60 s, 10 s);
* ``pytest conformance/`` on the reference model (its parallel workers as the project's
  configuration sets them): the wall time beside the 30 s target;
* with ``--tests``, the README's test command (``python -m pytest``): the wall time beside
  the 5 min target (about 16 minutes on two cores).

Each runs in a subprocess with a cache directory of its own (``XENSPEC_CACHE_DIR``), so that
nothing cached helps and the project's cache is left alone. Times are wall-clock seconds of
one run each: a whole run's time on a busy machine says little, so run it on an idle one.

Usage: python benchmarks/bench_suites.py [--jobs N] [--tests]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_run(cmd: list[str], cache: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Seconds of wall time of ``cmd`` run from the project root, and its result."""
    env = {**os.environ, "XENSPEC_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def line(what: str, seconds: float, target: float, proc: subprocess.CompletedProcess[str],
         extra: str = "") -> str:
    status = "" if proc.returncode == 0 else f"  (exit {proc.returncode}: the run failed)"
    return (f"{what:34} {seconds:8.1f} s  (target {target:.0f} s: ratio "
            f"{seconds / target:.2f}){extra}{status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", type=int, default=2, help="proof workers (default 2)")
    parser.add_argument("--tests", action="store_true",
                        help="also time the README's test command (about 16 minutes)")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="xenspec-bench-") as tmp:
        cache = Path(tmp)
        secs, proc = timed_run([python, "-m", "xenspec.cli", "prove", "--no-cache",
                                "-j", str(args.jobs)], cache)
        slowest = re.search(r"slowest: (.*) \(([\d.]+) s\)", proc.stdout)
        extra = (f"; slowest {float(slowest.group(2)):.1f} s (target 10 s): {slowest.group(1)}"
                 if slowest else "")
        print(line(f"xenspec prove --no-cache -j {args.jobs}", secs, 60, proc, extra),
              flush=True)
        secs, proc = timed_run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "conformance/"], cache)
        print(line("pytest conformance/ (reference)", secs, 30, proc), flush=True)
        if args.tests:
            secs, proc = timed_run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                   cache)
            print(line("the README's test command", secs, 300, proc), flush=True)


if __name__ == "__main__":
    main()

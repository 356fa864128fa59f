"""The kill rate: does the conformance suite catch every deliberately broken implementation?

For each implementation of ``xenspec.conformance.broken`` the suite runs in its own pytest
process (``--implementation=xenspec.conformance.broken:<name>``, the quick Hypothesis profile,
stopping after a few failures). A broken implementation is *killed* when the suite fails and
a failure is charged to the broken rule: the clause is among those the plugin charged the
failure to (the clauses of the check that failed, ``checks.attribute``), as its summary does.
An adapter error counts when it is charged (the implementation failed while carrying out a
hypercall: charged to that hypercall's clause); a failure charged to other clauses does not.
``python -m xenspec.conformance.killrate`` (or ``xenspec kill-rate``) prints the table and
exits non-zero unless every one is killed.

``focused`` runs first only the tests whose clauses marker names a broken clause (the plugin's
``--clauses``), and the whole suite only when that subset does not kill it: a kill in the
subset is a kill by the suite, whose tests are independent of one another, and the subset is
a tenth to a third of the suite. The test command uses it; the command line runs the whole
suite unless asked (``--focused``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenspec.conformance.broken import BROKEN, Broken

SUITE = Path(__file__).resolve().parent
MAXFAIL = 20  # enough for the directed tests' failures to show which rule broke
# Each suite run is one process (the runs themselves go ``jobs`` at a time): where
# pytest-xdist is installed, a source checkout's configuration would make each run parallel.
ONE_PROCESS = ["-n0"] if importlib.util.find_spec("xdist") is not None else []


@dataclass(frozen=True)
class Verdict:
    broken: Broken
    failed: list[dict[str, Any]]  # the failed and errored tests' records from the report
    seconds: float
    error: str = ""  # the run itself went wrong (no report)

    @property
    def pointing(self) -> list[dict[str, Any]]:
        """The failed tests charged to a broken clause."""
        return [t for t in self.failed if set(t.get("charged", ())) & set(self.broken.breaks)]

    @property
    def killed(self) -> bool:
        return bool(self.pointing)

    def line(self) -> str:
        b = self.broken
        if self.error:
            return f"ERROR    {b.name:28} {self.error}"
        if not self.failed:
            return f"SURVIVED {b.name:28} the suite passed ({b.what})"
        if not self.pointing:
            t = self.failed[0]
            return (f"MISSED   {b.name:28} failed, but no failure is charged to "
                    f"{' or '.join(b.breaks)}: {t['nodeid']} charged to "
                    f"{', '.join(t.get('charged', ())) or 'nothing'}")
        t = self.pointing[0]
        msg = t.get("message", "").splitlines()[0][:90] if t.get("message") else ""
        return f"KILLED   {b.name:28} {t['nodeid'].split('::')[-1]}: {msg}"


def run_one(b: Broken, workdir: Path, extra: Iterable[str] = (), focused: bool = False
            ) -> Verdict:
    """One suite run against ``b`` (``focused``: the tests of its clauses first)."""
    if focused:
        first = _run_suite(b, workdir, [*extra, f"--clauses={','.join(b.breaks)}"])
        if first.killed:
            return first
        full = _run_suite(b, workdir, extra)
        return Verdict(b, full.failed, first.seconds + full.seconds, full.error)
    return _run_suite(b, workdir, extra)


def _run_suite(b: Broken, workdir: Path, extra: Iterable[str] = ()) -> Verdict:
    report = workdir / f"{b.name}.json"
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-q", *ONE_PROCESS, "-p", "no:cacheprovider",
           f"--maxfail={MAXFAIL}", f"--implementation=xenspec.conformance.broken:{b.name}",
           f"--conformance-report={report}", *extra]
    env = {**os.environ, "XENSPEC_PROFILE": "quick"}
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    try:
        doc = json.loads(report.read_text())
    except (OSError, ValueError):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return Verdict(b, [], seconds, f"no report (exit {proc.returncode}): {tail[0]}")
    failed = [t for t in doc["tests"] if t["outcome"] in ("failed", "error")]
    return Verdict(b, failed, seconds)


def kill_rate(
    jobs: int = 2, only: list[str] | None = None,
    progress: Callable[[Verdict], None] = lambda v: None, focused: bool = False,
) -> list[Verdict]:
    chosen = [b for b in BROKEN if not only or b.name in only]
    with tempfile.TemporaryDirectory(prefix="xenspec-killrate-") as tmp:
        def one(b: Broken) -> Verdict:
            v = run_one(b, Path(tmp), focused=focused)
            progress(v)
            return v

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(one, chosen))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xenspec kill-rate",
        description="Run the conformance suite against every deliberately broken "
                    "implementation and report which ones it catches.")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="suites run in parallel (default: the number of CPUs)")
    parser.add_argument("--focused", action="store_true",
                        help="run the tests of the broken clauses first, the whole suite only "
                             "if they do not catch it")
    parser.add_argument("names", nargs="*", help="only these broken implementations")
    args = parser.parse_args(argv)
    known = {b.name for b in BROKEN}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"no broken implementation {', '.join(unknown)}; "
                     f"known: {', '.join(sorted(known))}")
    print(f"running the conformance suite against {len(args.names) or len(BROKEN)} broken "
          f"implementations, {args.jobs} at a time", flush=True)
    verdicts = kill_rate(args.jobs, args.names, lambda v: print(v.line(), flush=True),
                         args.focused)
    killed = sum(v.killed for v in verdicts)
    total_s = sum(v.seconds for v in verdicts)
    print(f"kill rate: {killed}/{len(verdicts)} ({100 * killed / max(1, len(verdicts)):.0f}%), "
          f"{total_s:.0f} s of suite time")
    return 0 if killed == len(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())

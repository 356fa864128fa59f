"""What ``xenspec docs`` does: find the documentation sources, optionally refresh the proof and
conformance status the traceability matrix shows, generate the reference pages, and run
Sphinx with warnings as errors in a child process (its messages, never a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import xenspec

Echo = Callable[[str], None]
PYTEST_NO_TESTS = 5  # pytest's exit status when it collected nothing


def source_dir() -> Path | None:
    """``docs/`` of the source tree the package runs from, if there is one."""
    docs = Path(xenspec.__file__).resolve().parent.parent / "docs"
    return docs if (docs / "conf.py").is_file() else None


def cache_dir(source: Path) -> Path:
    """Where the proof and conformance runs leave their status (as docs/conf.py reads it)."""
    configured = os.environ.get("XENSPEC_CACHE_DIR")
    return Path(configured).resolve() if configured else source.parent / ".xenspec-cache"


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "XENSPEC_CACHE_DIR": str(cache)}


def refresh(repo: Path, cache: Path, echo: Echo) -> None:
    """Run every proof obligation and the conformance suite; failures are recorded for the
    matrix, not fatal here."""
    os.environ["XENSPEC_CACHE_DIR"] = str(cache)
    from xenspec.proofs.runner import Result, prove_all

    echo("refreshing the proof status: xenspec prove")

    def progress(r: Result) -> None:
        echo(f"  {r.status:<7} {'cached' if r.cached else f'{r.seconds:.2f}s':>8}  {r.name}")

    results = prove_all(jobs=os.cpu_count() or 1, on_result=progress)
    proved = sum(r.ok for r in results)
    echo(f"  {proved}/{len(results)} obligations proved")
    echo("refreshing the conformance status: pytest conformance")
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance", "-q"], cwd=repo,
                         env=_env(cache), capture_output=True, text=True, check=False)
    tail = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
    if run.returncode == PYTEST_NO_TESTS:
        echo("  no conformance tests collected; the matrix keeps the last run, if any")
    else:
        echo(f"  {tail}")


def generate_pages(source: Path, cache: Path) -> int:
    from xenspec.docgen import generate

    return len(generate(source / "generated", cache))


def sphinx(source: Path, output: Path, cache: Path, echo: Echo) -> str:
    """Build the HTML site; '' on success, else the first problem (all are echoed)."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           str(source), str(output)]
    run = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, check=False)
    if run.returncode == 0:
        return ""
    lines = [ln.strip() for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
    problems = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln] or lines[-1:]
    for line in problems[:20]:
        echo(f"  {line}")
    return problems[0] if problems else f"sphinx-build exited with status {run.returncode}"

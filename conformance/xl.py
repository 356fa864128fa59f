"""``xenspec-xl``: boot one guest test kernel on a real Xen host with ``xl`` and report it as
``xenspec run`` does, so that the conformance suite can judge a real Xen through its command
template path::

    pytest conformance/ --abi compat-pae --implementation='xenspec-xl {elf} {cmdline}'

What it does, with the facts it relies on (Xen 4.x manual pages; none of xl's code):

- writes a domain configuration (xl.cfg(5): ``KEY=VALUE`` lines, strings in single or double
  quotes): ``name`` unique to the run (names of domains on one host must be unique),
  ``type="pv"``, ``kernel`` the image, ``extra`` the command line (appended to the kernel's
  command line), ``memory`` in MB, ``vcpus=1``, and ``on_poweroff``, ``on_reboot`` and
  ``on_crash`` all ``"destroy"``; no ``disk`` or ``vif``;
- runs ``xl create -c CONFIG`` (xl(1): the configuration file is an absolute path; ``-c``
  attaches the domain's console once it has started; ``-F``, with ``--foreground``, keeps xl
  in the foreground until the domain dies), and copies what it prints, the domain's console
  ring as xenconsoled serves it, to standard output as it arrives; xl's own messages go to
  standard error;
- exits with the status ``xenspec run`` gives a shutdown reason (poweroff 0, crash 1,
  reboot 2, suspend 3; 4: the domain did not shut down, or how is not known). The reason is
  xl's own report if it printed one ("Domain N has shut down, reason code R": sched.h
  SHUTDOWN_* numbers; xl prints it when it stays in the foreground), else the console's last
  ``xenspec: shutdown NAME`` line, which the guest kernels' runtime prints just before
  SCHEDOP_shutdown (conformance/guests/runtime/lib.c), else 4. A domain that Xen crashes
  prints no such line: without xl's report it counts as 4, not as a crash;
- destroys the domain (``xl destroy NAME``) when it is done, times out (``--timeout``) or is
  stopped by a signal (SIGTERM, SIGINT, SIGHUP), whatever the domain did.

Errors are one line on standard error, with statuses apart from the shutdown reasons: 64 a
usage error, 66 no such kernel image, 69 no ``xl`` to run. Untested against a real Xen; tested
against the reference model through a stand-in ``xl`` (tests/test_xl_wrapper.py).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

# sched.h SHUTDOWN_* by number, and xenspec run's exit status of each (refmodel/boot.py).
REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog", 5: "soft_reset"}
EXIT_STATUS = {"poweroff": 0, "crash": 1, "reboot": 2, "suspend": 3}
NO_SHUTDOWN = 4
EX_USAGE, EX_NOINPUT, EX_UNAVAILABLE = 64, 66, 69  # sysexits.h

# The runtime's last line before SCHEDOP_shutdown; a console may prefix its lines.
SHUTDOWN_LINE = re.compile(r"xenspec: shutdown (poweroff|reboot|suspend|crash|reason \d+)\s*$",
                           re.MULTILINE)
XL_REPORT = re.compile(r"has shut down, reason code (\d+)")
DEFAULT_MEMORY_MB = 16
DEFAULT_TIMEOUT_S = 50.0  # below the conformance suite's 60 s guard (conformance/test_guests.py)
DESTROY_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WrapperError(Exception):
    """A one-line error and the exit status it gives."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Domain:
    """What the configuration says: the domain's name, kernel, command line and memory."""

    name: str
    kernel: Path
    cmdline: str = ""
    memory_mb: int = DEFAULT_MEMORY_MB


def quote(value: str) -> str:
    """An xl.cfg(5) string: in double quotes, or single quotes if it holds a double quote.
    The syntax has no escapes: a value with both quotes, or a line break, cannot be written."""
    if "\n" in value or "\r" in value or ('"' in value and "'" in value):
        raise WrapperError(f"cannot write {value!r} as an xl.cfg string (it has both quote "
                           "characters or a line break)", EX_USAGE)
    return f"'{value}'" if '"' in value else f'"{value}"'


def config_text(dom: Domain) -> str:
    """The xl.cfg(5) configuration of the domain."""
    lines = [
        "# xenspec-xl: one guest test kernel (xl.cfg(5))",
        f"name = {quote(dom.name)}",
        'type = "pv"',
        f"kernel = {quote(str(dom.kernel))}",
        f"memory = {dom.memory_mb}",
        "vcpus = 1",
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
        "disk = []",
        "vif = []",
    ]
    if dom.cmdline:
        lines.insert(4, f"extra = {quote(dom.cmdline)}")
    return "\n".join(lines) + "\n"


def unique_name() -> str:
    return f"xenspec-{os.getpid()}-{secrets.token_hex(4)}"


def shutdown_reason(console: str, xl_output: str = "") -> str | None:
    """How the domain ended: xl's own report if there is one, else the console's last
    ``xenspec: shutdown`` line; None if neither says."""
    reports = XL_REPORT.findall(xl_output)
    if reports:
        code = int(reports[-1])
        return REASONS.get(code, f"reason {code}")
    lines = SHUTDOWN_LINE.findall(console)
    return lines[-1] if lines else None


def exit_status(reason: str | None) -> int:
    return EXIT_STATUS.get(reason or "", NO_SHUTDOWN)


# --- running xl ------------------------------------------------------------------------------
class _Copy(threading.Thread):
    """Copies a pipe to a stream as it arrives and keeps what went through."""

    def __init__(self, src: IO[bytes], dst: IO[str]) -> None:
        super().__init__(daemon=True)
        self.src, self.dst = src, dst
        self.parts: list[str] = []

    def run(self) -> None:
        for chunk in iter(lambda: os.read(self.src.fileno(), 4096), b""):
            text = chunk.decode("latin-1")
            self.parts.append(text)
            self.dst.write(text)
            self.dst.flush()

    def text(self) -> str:
        return "".join(self.parts)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stopped(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stopped(signum)


def destroy(xl: str, name: str) -> None:
    """``xl destroy NAME``, quietly: the domain may be gone already."""
    try:
        subprocess.run([xl, "destroy", name], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=DESTROY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        print(f"xenspec-xl: could not destroy domain {name}", file=sys.stderr)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_xl(xl: str, config: Path, name: str, timeout_s: float, foreground: bool) -> int:
    """Create the domain with its console attached; the exit status of its shutdown reason."""
    argv = [xl, "create", *(["-F"] if foreground else []), "-c", str(config)]
    # stdin stays an open pipe that is never written: the console client sees no end of input.
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Copy(proc.stdout, sys.stdout), _Copy(proc.stderr, sys.stderr)
    out.start()
    err.start()
    why = ""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        why = f"timed out after {timeout_s:g} s"
    except _Stopped as exc:
        why = f"stopped by {exc}"
    finally:
        for signum in STOP_SIGNALS:  # a second signal must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        _stop(proc)
        destroy(xl, name)
        out.join(timeout=5)
        err.join(timeout=5)
    if why:
        print(f"xenspec-xl: {why}; domain {name} destroyed", file=sys.stderr)
        return NO_SHUTDOWN
    reason = shutdown_reason(out.text(), err.text())
    if reason is None:
        print(f"xenspec-xl: domain {name} gave no shutdown reason (xl exited with status "
              f"{proc.returncode})", file=sys.stderr)
    else:
        print(f"xenspec-xl: domain {name} shut down: {reason}", file=sys.stderr)
    return exit_status(reason)


# --- the command -----------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's status 2 would read as "reboot": a usage error has its own status.
        self.exit(EX_USAGE, f"xenspec-xl: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xenspec-xl",
        description="Boot one xenspec guest test kernel on this Xen host with xl and report "
                    "it as `xenspec run` does: the domain's console (its console ring, what "
                    "`xl create -c` shows) on standard output, the shutdown reason as the exit "
                    "status (poweroff 0, crash 1, reboot 2, suspend 3, not shut down or not "
                    "known 4). The reason is xl's own report if it prints one (--foreground), "
                    "else the kernel's last 'xenspec: shutdown NAME' console line. The domain "
                    "is destroyed at the end, on timeout and on SIGTERM/SIGINT/SIGHUP. For "
                    "the conformance suite: pytest conformance/ --abi compat-pae "
                    "--implementation='xenspec-xl {elf} {cmdline}'. Needs root (xl) and a "
                    "Xen 4.x that runs 32-bit PV guests (the guide's page on a real Xen).",
        epilog="Other exit statuses: 64 usage error, 66 no such kernel image, 69 no xl.")
    p.add_argument("elf", metavar="ELF", help="the guest kernel image (built for the Xen's "
                   "ABI profile: compat-pae for a 64-bit Xen 4.x)")
    p.add_argument("cmdline", metavar="CMDLINE", nargs="?", default="",
                   help="the kernel's command line (xl.cfg extra=)")
    p.add_argument("--xl", default="xl", help="the xl program (default: xl on PATH)")
    p.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
                   help=f"the domain's memory (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"destroy the domain after S seconds (default {DEFAULT_TIMEOUT_S:g}, "
                        "below the suite's 60 s guard)")
    p.add_argument("--keep-config", type=Path, metavar="DIR",
                   help="write the configuration into DIR as NAME.cfg and keep it (default: a "
                        "temporary file, removed)")
    p.add_argument("--foreground", action="store_true",
                   help="run `xl create -F -c`: xl stays until the domain dies and reports "
                        "its shutdown reason itself, which then decides (a domain Xen crashed "
                        "counts as a crash)")
    return p


def _xl_path(xl: str) -> str:
    found = shutil.which(xl)
    if found is None:
        raise WrapperError(f"no xl program {xl!r} (give its path with --xl)", EX_UNAVAILABLE)
    return found


def _domain(args: argparse.Namespace) -> Domain:
    elf = Path(args.elf)
    if not elf.is_file():
        raise WrapperError(f"no such kernel image: {args.elf}", EX_NOINPUT)
    if args.memory <= 0:
        raise WrapperError(f"--memory must be a positive number of MB, not {args.memory}",
                           EX_USAGE)
    dom = Domain(unique_name(), elf.resolve(), args.cmdline, args.memory)
    config_text(dom)  # a command line xl.cfg cannot hold is a usage error, before anything
    return dom


def _with_config(dom: Domain, keep: Path | None, use: Callable[[Path], int]) -> int:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        config = (keep / f"{dom.name}.cfg").resolve()
        config.write_text(config_text(dom))
        return use(config)
    with tempfile.TemporaryDirectory(prefix="xenspec-xl-") as tmp:
        config = Path(tmp).resolve() / f"{dom.name}.cfg"
        config.write_text(config_text(dom))
        return use(config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        dom = _domain(args)
        xl = _xl_path(args.xl)
    except WrapperError as exc:
        print(f"xenspec-xl: {exc}", file=sys.stderr)
        return exc.status
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    try:
        return _with_config(dom, args.keep_config, lambda config: run_xl(
            xl, config, dom.name, args.timeout, args.foreground))
    except OSError as exc:
        print(f"xenspec-xl: cannot run {xl}: {exc.strerror or exc}", file=sys.stderr)
        return EX_UNAVAILABLE


if __name__ == "__main__":
    raise SystemExit(main())

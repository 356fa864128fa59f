"""Finding the implementation under test from ``--implementation=...``.

Three forms (the first that applies):

- a command template containing ``{elf}``: a guest-level implementation run as a program,
  e.g. ``"xl-boot {elf} {cmdline}"``; see ``CommandImplementation``;
- ``module:attribute``: the attribute is a factory (a class, or any callable taking no
  arguments) returning a fresh implementation; each test gets its own;
- a name registered in the ``xenspec.implementations`` entry-point group of an installed
  package (``reference`` is the reference model).
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from xenspec.conformance.adapter import SHUTDOWN_REASONS, GuestRun

ENTRY_POINT_GROUP = "xenspec.implementations"
Factory = Callable[[], object]

# `xenspec run`'s exit status for each shutdown reason; a command must follow it.
EXIT_STATUS = {0: "poweroff", 1: "crash", 2: "reboot", 3: "suspend"}
STOP_GRACE_S = 30.0


class ImplementationError(Exception):
    """The implementation cannot be found or loaded; the message is one line."""


class CommandImplementation:
    """A guest-level implementation that is a command line.

    ``{elf}`` is replaced by the guest image's path and ``{cmdline}`` by its command line (both
    shell-quoted). The command's standard output is the guest console; its exit status is the
    shutdown reason as ``xenspec run`` reports it (0 poweroff, 1 crash, 2 reboot, 3 suspend;
    anything else: the domain did not shut down). A command that runs past the time limit is
    sent SIGTERM, then SIGKILL if it is still there STOP_GRACE_S later, and counts as no
    shutdown.
    """

    offers = frozenset({"guest"})

    def __init__(self, template: str) -> None:
        self.template = template
        self.name = f"command {template!r}"

    def boot_guest(self, elf: Path, cmdline: str, timeout_s: float) -> GuestRun:
        argv = shlex.split(self.template.format(elf=shlex.quote(str(elf)),
                                                cmdline=shlex.quote(cmdline)))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise ImplementationError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return GuestRun(_stop(proc).decode("latin-1"), None, "timed out")
        reason = EXIT_STATUS.get(proc.returncode)
        detail = err.decode("latin-1").strip().splitlines()[-1:] or [""]
        assert reason is None or reason in SHUTDOWN_REASONS
        return GuestRun(out.decode("latin-1"), reason, detail[0])


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    """End a command that ran past its time: SIGTERM first, so that it can clean up (a
    wrapper destroys its domain), then SIGKILL after STOP_GRACE_S; what it printed."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _from_attribute(spec: str) -> Factory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImplementationError(f"cannot import {module_name!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImplementationError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImplementationError(f"{spec} is not a factory (a class or a function)")
    return obj


def _from_entry_point(name: str) -> Factory:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ImplementationError(
            f"no implementation {name!r}: give module:factory, a command with {{elf}}, or one "
            f"of the registered names {', '.join(known) or '(none)'}")
    try:
        obj = found[0].load()
    except Exception as exc:  # a broken third-party package: say which, in one line
        raise ImplementationError(f"cannot load entry point {name!r}: {exc}") from None
    if not callable(obj):
        raise ImplementationError(f"entry point {name!r} is not a factory")
    return obj  # type: ignore[no-any-return]


def load(spec: str) -> Factory:
    """The factory of fresh implementations that ``spec`` names."""
    spec = spec.strip()
    if not spec:
        raise ImplementationError("--implementation is empty")
    if "{elf}" in spec:
        return lambda: CommandImplementation(spec)
    if ":" in spec:
        return _from_attribute(spec)
    if spec == "reference":  # also registered as an entry point; works uninstalled too
        from xenspec.conformance.reference import ReferenceImplementation

        return ReferenceImplementation
    return _from_entry_point(spec)

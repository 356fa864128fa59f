"""The implementation as the tests see it: every adapter call checked.

``Checked`` wraps an adapter. A call that raises, a method an offered level lacks and a result
of the wrong type become an ``AdapterError`` naming the method, so that a broken adapter makes
its tests fail or error, never skip. Methods of what the adapter does not offer
(``xenspec.conformance.adapter.OFFERINGS``) are hidden: ``isinstance`` checks against the
optional protocols see only what is offered.

The result checks are the interface's own types: a frame's ``page_info`` fields, 1024 words a
frame, sixteen hypervisor slots, a guest run's console text and shutdown reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from xenspec.conformance.adapter import (
    METHODS,
    SHUTDOWN_REASONS,
    DomainInfo,
    FrameInfo,
    GrantHandle,
    GuestRun,
    describe,
    offered,
)
from xenspec.spec import abi


class AdapterError(Exception):
    """The adapter failed: a method is missing, raised, or returned the wrong type.
    ``method`` names it."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"adapter error in {method}: {message}")
        self.method = method


def _ints(value: object, length: int | None = None) -> bool:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return False
    if length is not None and len(value) != length:
        return False
    return all(map(isinstance, value, repeat(int)))  # a C loop: 1024 words a frame


_FRAME_FIELDS = ("owner", "type", "type_count", "count", "validated", "pinned", "allocated")
_DOMAIN_FIELDS = ("domid", "virt_base", "nr_mapped", "pt_base_pfn")


def _fields(value: object, fields: tuple[str, ...]) -> str:
    """'' if ``value`` has each field, an int (or bool); otherwise what is wrong."""
    for name in fields:
        if not isinstance(getattr(value, name, None), int):
            return f"no int field {name!r}"
    return ""


def _frame(value: Any) -> FrameInfo:
    wrong = _fields(value, _FRAME_FIELDS)
    if wrong:
        raise TypeError(f"a FrameInfo has int fields {', '.join(_FRAME_FIELDS)}; this one has "
                        f"{wrong}")
    if isinstance(value, FrameInfo):
        return value
    return FrameInfo(value.owner, value.type, value.type_count, value.count,
                     bool(value.validated), bool(value.pinned), bool(value.allocated),
                     bool(getattr(value, "xen_heap", False)))


def _frame_table(value: Any) -> list[FrameInfo]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise TypeError("expected a sequence of FrameInfo")
    return [_frame(v) for v in value]


def _domain(value: Any) -> DomainInfo:
    wrong = _fields(value, _DOMAIN_FIELDS)
    if wrong or not _ints(getattr(value, "p2m", None)) \
            or not _ints(getattr(value, "l1_pfns", None)):
        raise TypeError(f"a DomainInfo has int fields {', '.join(_DOMAIN_FIELDS)} and int "
                        f"sequences p2m and l1_pfns; this one has "
                        f"{wrong or 'no such sequences'}")
    if isinstance(value, DomainInfo):
        return value
    return DomainInfo(value.domid, tuple(value.p2m), value.virt_base, value.nr_mapped,
                      value.pt_base_pfn, tuple(value.l1_pfns))


def _guest_run(value: Any) -> GuestRun:
    console, shutdown = getattr(value, "console", None), getattr(value, "shutdown", 0)
    if not isinstance(console, str) or not (shutdown is None or shutdown in SHUTDOWN_REASONS):
        raise TypeError("a GuestRun has console text (str) and a shutdown reason (one of "
                        f"{', '.join(SHUTDOWN_REASONS)} or None)")
    if isinstance(value, GuestRun):
        return value
    return GuestRun(console, shutdown, str(getattr(value, "detail", "")),
                    dict(getattr(value, "hypercalls", {})))


_HANDLE_FIELDS = ("handle", "flags", "domid", "frame")


def _handles(value: Any) -> list[GrantHandle]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise TypeError("expected a sequence of GrantHandle")
    out = []
    for h in value:
        wrong = _fields(h, _HANDLE_FIELDS)
        if wrong or not _ints(getattr(h, "pte", None), 2):
            raise TypeError(f"a GrantHandle has int fields {', '.join(_HANDLE_FIELDS)} and a "
                            f"pte pair of ints; this one has {wrong or 'no such pair'}")
        out.append(h if isinstance(h, GrantHandle) else
                   GrantHandle(h.handle, h.flags, h.domid, h.frame, tuple(h.pte)))
    return out


def _is(kind: type, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {what}")
        return value
    return check


def _words(length: int | None, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not _ints(value, length):
            raise TypeError(f"expected {what}")
        return value
    return check


def _pairs(value: Any) -> Any:
    if not isinstance(value, Sequence) or not all(_ints(p, 2) for p in value):
        raise TypeError("expected a sequence of (domain id, base mfn) pairs of ints")
    return value


def _nothing(value: Any) -> Any:
    return value


# How each method's result is checked (and normalised to the interface's own types).
RESULTS: dict[str, Callable[[Any], Any]] = {
    "boot_guest": _guest_run,
    "boot_guest_with_disk": _guest_run,
    "create_domain": _domain,
    "hypercall": _is(int, "an int (the hypercall's return value)"),
    "is_running": _is(int, "a bool"),
    "write_pfn": _nothing,
    "read_pfn": _is((bytes, bytearray), "bytes"),  # type: ignore[arg-type]
    "nr_frames": _is(int, "an int"),
    "frame": _frame,
    "frames": _frame_table,
    "entries": _words(abi.L1_PAGETABLE_ENTRIES, "1024 ints"),
    "machphys": _is(int, "an int"),
    "xen_l2_slots": _words(abi.L2_PAGETABLE_XEN_SLOTS, "16 ints (slots 1008..1023)"),
    "vcpu_bases": _pairs,
    "descriptor_frames": _words(None, "a sequence of ints"),
    "xen_written_frames": _words(None, "a sequence of ints"),
    "grant_handles": _handles,
}


def _args(args: tuple[Any, ...]) -> str:
    text = ", ".join(hex(a) if isinstance(a, int) and not isinstance(a, bool) else repr(a)
                     for a in args)
    return text if len(text) <= 200 else text[:200] + "..."


class Checked:
    """``impl`` with every adapter call checked (see the module docstring)."""

    def __init__(self, impl: object) -> None:
        self._impl = impl
        self.offers = offered(impl)
        self.name = describe(impl)
        self._visible = {m for o in self.offers for m in METHODS[o]}
        self._hidden = {m for ms in METHODS.values() for m in ms} - self._visible

    @property
    def wrapped(self) -> object:
        return self._impl

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in self._hidden:
            raise AttributeError(name)
        if name in self._visible and not hasattr(self._impl, name):
            raise AdapterError(name, f"{self.name} offers it but has no {name!r}")
        value = getattr(self._impl, name)
        if name == "counts_like_xen":
            if not isinstance(value, bool):
                raise AdapterError(name, f"expected a bool, got {value!r}")
            return value
        check = RESULTS.get(name)
        if check is None or not callable(value):
            return value

        def call(*args: Any) -> Any:
            try:
                result = value(*args)
            except AdapterError:
                raise
            except Exception as exc:
                raise AdapterError(name, f"{name}({_args(args)}) raised "
                                         f"{type(exc).__name__}: {exc}") from exc
            try:
                return check(result)
            except TypeError as exc:
                raise AdapterError(name, f"{name}({_args(args)}) returned {result!r:.120}: "
                                         f"{exc}") from None

        self.__dict__[name] = call  # the next look-up finds it without coming here
        return call

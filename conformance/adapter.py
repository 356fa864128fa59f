"""The interface an implementation under test offers the conformance suite, at two levels.

Guest level (``GuestLevel``): boot a guest kernel ELF and give back its console text and how the
domain shut down. Any hypervisor can offer this; a real Xen does it with ``xl create -c``. The
guest test kernels report in XTF's words ("Test result: SUCCESS", ...), so nothing else is
needed.

Hypercall level (``HypercallLevel``): create a domain with Xen's start-of-day page tables, issue
a hypercall on its behalf (as its kernel would, arguments in its own memory), and read back the
state the specification talks about: frame owners, types, counts, pin and validation flags,
page-table contents, base pointers. An implementation that exposes this is checked rule by rule,
invariant by invariant, and differentially against the reference model.

Both are structural ``Protocol`` types: an adapter needs no import from this package. The
vocabulary is Xen's ``page_info`` (xen/include/asm-x86/mm.h) and ``start_info``
(xen/include/public/xen.h); frame types use ``xenspec.spec.pagetable.PGT``'s numbering
(PGT_none .. PGT_writable_page of Xen 3.0 shifted down by PGT_type_shift).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

# The result line of an XTF-style test kernel; the last one printed counts.
RESULT_LINE = re.compile(r"Test result: (SUCCESS|SKIP|ERROR|FAILURE)")
SHUTDOWN_REASONS = ("poweroff", "reboot", "suspend", "crash")  # sched.h SHUTDOWN_*


@dataclass(frozen=True)
class GuestRun:
    """What booting one guest gave: its console output and its shutdown reason (one of
    ``SHUTDOWN_REASONS``, or None if it never shut down before the time limit)."""

    console: str
    shutdown: str | None
    detail: str = ""  # e.g. why the hypervisor crashed the domain, if it says
    # Optional: how many of each hypercall (by name) the guest made, for the coverage report.
    hypercalls: dict[str, int] = field(default_factory=dict)

    @property
    def result(self) -> str:
        """SUCCESS, SKIP, ERROR or FAILURE from the last result line; CRASH if there is none."""
        found = RESULT_LINE.findall(self.console)
        return found[-1] if found else "CRASH"


@runtime_checkable
class GuestLevel(Protocol):
    def boot_guest(self, elf: Path, cmdline: str, timeout_s: float) -> GuestRun:
        """Boot ``elf`` as a single-vCPU domain with ``cmdline`` in start_info.cmd_line; return
        when it shuts down or after ``timeout_s`` seconds."""
        ...


@runtime_checkable
class DiskGuestLevel(Protocol):
    """Optional: boot a guest with a virtual block device (blkif, vbd 768; with Xen, an xl
    ``disk=`` line) backed by an image file."""

    def boot_guest_with_disk(self, elf: Path, cmdline: str, timeout_s: float,
                             disk: Path) -> GuestRun:
        ...


@dataclass(frozen=True)
class FrameInfo:
    """One machine frame, as Xen's ``struct page_info`` holds it."""

    owner: int  # domain id; DOMID_XEN for the hypervisor's own frames
    type: int  # PGT: 0 none, 1 L1, 2 L2, 3 L3, 4 L4, 5 GDT, 6 LDT, 7 writable
    type_count: int
    count: int
    validated: bool
    pinned: bool
    allocated: bool  # PGC_allocated: the owner holds it in its allocation
    # A Xen heap page shared with its owner (mm.c, share_xen_page_with_guest: shared_info, the
    # grant frames), which holds one type reference of its own, with no general reference.
    xen_heap: bool = False


@dataclass(frozen=True)
class DomainInfo:
    """A new domain and where its builder put the start-of-day page tables.

    Pfns [0, nr_mapped) are mapped at ``virt_base``; the page directory is pfn ``pt_base_pfn``
    and the L1 tables are ``l1_pfns``, all mapped read-only and followed by the boot stack's
    page, the directory pinned and loaded as the vCPU's base pointer (Xen's x86_32 domain
    builders). ``p2m`` maps pfn -> mfn.
    """

    domid: int
    p2m: tuple[int, ...]
    virt_base: int
    nr_mapped: int
    pt_base_pfn: int
    l1_pfns: tuple[int, ...]


@runtime_checkable
class HypercallLevel(Protocol):
    #: Whether ``FrameInfo.count`` and ``type_count`` follow Xen's accounting (a general
    #: reference per mapping, pin, base pointer and allocation). When False the suite still
    #: compares types, flags and contents but not the numbers.
    counts_like_xen: bool

    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool) -> DomainInfo: ...

    def hypercall(self, domid: int, name: str, *args: int) -> int:
        """Issue hypercall ``name`` (xen.h's name without ``__HYPERVISOR_``) from vCPU 0 of
        ``domid``, running in its kernel; the return value as a signed int."""
        ...

    def is_running(self, domid: int) -> bool: ...

    def write_pfn(self, domid: int, pfn: int, offset: int, data: bytes) -> None:
        """Write into one of the domain's own frames (used for hypercall arguments only)."""
        ...

    def read_pfn(self, domid: int, pfn: int, offset: int, length: int) -> bytes: ...

    def nr_frames(self) -> int: ...

    def frame(self, mfn: int) -> FrameInfo: ...

    def entries(self, mfn: int) -> Sequence[int]:
        """The 1024 32-bit words of frame ``mfn``."""
        ...

    def machphys(self, mfn: int) -> int:
        """The machine-to-physical table's entry for ``mfn`` (xen.h machine_to_phys_mapping)."""
        ...

    def xen_l2_slots(self, domid: int, l2_mfn: int) -> Sequence[int]:
        """The 1024 - L2_PAGETABLE_FIRST_XEN_SLOT entries the hypervisor itself keeps in slots
        L2_PAGETABLE_FIRST_XEN_SLOT..1023 of page directory ``l2_mfn`` of domain ``domid``,
        as it wrote them when it validated that directory (mm.c, alloc_l2_table). They
        depend on the directory, not only on its domain: Xen's slot of LINEAR_PT_VIRT_START
        (slot 1016) maps the directory itself (``l2e_from_pfn(l2_mfn, __PAGE_HYPERVISOR)``),
        and INV-HOLE checks that the entry there names ``l2_mfn``. Raise ValueError, KeyError
        or IndexError for a domain the implementation does not have. (Before the linear slot
        was modelled this method took the domain alone.)"""
        ...

    def vcpu_bases(self) -> Sequence[tuple[int, int]]:
        """(domain id, base pointer mfn) of every vCPU of every domain."""
        ...

    def descriptor_frames(self, domid: int) -> Sequence[int]:
        """The GDT frames vCPU 0 of ``domid`` has installed with set_gdt."""
        ...


@runtime_checkable
class XenWrittenFrames(Protocol):
    """Optional, at the hypercall level: which frames the hypervisor writes into on a guest's
    behalf (shared_info, the grant-table frames, frames its back ends hold mapped), which
    INV-XENPAGE is about. An implementation that does not say is not checked against
    INV-XENPAGE: the suite reports the invariant as not evaluated."""

    def xen_written_frames(self) -> Sequence[int]: ...


@runtime_checkable
class FrameTable(Protocol):
    """Optional, at the hypercall level: the whole frame table in one call. The suite reads
    every frame's ``FrameInfo`` at each invariant check: through ``frames`` where the adapter
    has it, else by one ``frame`` call per frame. An adapter whose every call is a round trip
    to another process (examples/rpc_adapter) saves ``nr_frames`` round trips a check."""

    def frames(self) -> Sequence[FrameInfo]:
        """What ``frame(mfn)`` gives, for every mfn from 0 to ``nr_frames() - 1``, in order."""
        ...


@dataclass(frozen=True)
class GrantHandle:
    """One grant handle of a grantee in use, as Xen's maptrack entry holds it (grant_table.c,
    ``struct grant_mapping``): what the invariants need to tell a grant mapping of another
    domain's frame from a stolen one."""

    handle: int  # the handle map_grant_ref returned
    flags: int  # GNTMAP_* of the mapping (host_map, device_map, readonly, ...)
    domid: int  # the granting domain
    frame: int  # the granted machine frame
    # (L1 table mfn, index) of the PTE the host mapping wrote; (0, 0) for a device mapping
    pte: tuple[int, int] = (0, 0)


@runtime_checkable
class GrantState(Protocol):
    """Optional, at the hypercall level, with ``grant_table_op``: the handles a domain holds.
    INV-OWN, INV-GNT-RO and INV-COUNT read them once a test maps a grant: a PTE of another
    domain's frame is allowed only as the host mapping of one of its table owner's handles,
    and a device mapping holds references of its own."""

    def grant_handles(self, domid: int) -> Sequence[GrantHandle]:
        """The handles of grantee ``domid`` in use (flags not 0), any order; empty for a
        domain that has none (or that the implementation does not know)."""
        ...


# --- what an implementation offers -----------------------------------------------------------
# An adapter says what it offers with an ``offers`` attribute: a set of these names. A test that
# needs something not offered is reported as *not offered*, never as passed; an offered part
# whose methods are missing is an error of every test that needs it, naming the method.
OFFERINGS: dict[str, str] = {
    "guest": "boot guest kernels (GuestLevel)",
    "guest-disk": "boot a guest with a virtual block device (DiskGuestLevel)",
    "hypercall": "domains, hypercalls and frame state: the MMU and descriptor tests and the "
                 "differential suite (HypercallLevel)",
    "events": "event channels and the timer at the hypercall level (test_events.py)",
    "xen-written-frames": "the frames the hypervisor writes into (XenWrittenFrames), which "
                          "INV-XENPAGE needs",
    "grants": "grant tables at the hypercall level (test_grants.py): grant_table_op, and the "
              "grantee's handles (GrantState), which the invariants read",
    "memory": "the balloon at the hypercall level (test_memory.py): memory_op",
}
# The methods each offering needs (an offering may also need another offering).
METHODS: dict[str, tuple[str, ...]] = {
    "guest": ("boot_guest",),
    "guest-disk": ("boot_guest_with_disk",),
    "hypercall": ("counts_like_xen", "create_domain", "hypercall", "is_running", "write_pfn",
                  "read_pfn", "nr_frames", "frame", "entries", "machphys", "xen_l2_slots",
                  "vcpu_bases", "descriptor_frames"),
    "events": (),
    "xen-written-frames": ("xen_written_frames",),
    "grants": ("grant_handles",),
    "memory": (),
}
REQUIRES: dict[str, str] = {"guest-disk": "guest", "events": "hypercall",
                            "xen-written-frames": "hypercall", "grants": "hypercall",
                            "memory": "hypercall"}


class OffersError(ValueError):
    """An adapter's ``offers`` declaration is not a set of known names."""


def declared(impl: object) -> frozenset[str] | None:
    """The adapter's ``offers`` declaration, checked; None if it makes none."""
    raw = getattr(impl, "offers", None)
    if raw is None:
        return None
    if isinstance(raw, str) or not isinstance(raw, (set, frozenset, list, tuple)):
        raise OffersError(f"offers must be a set of names, not {raw!r}")
    names = frozenset(raw)
    unknown = sorted(str(n) for n in names - OFFERINGS.keys())
    if unknown:
        raise OffersError(f"offers names {', '.join(unknown)}; known: {', '.join(OFFERINGS)}")
    lacking = sorted(f"{n} (needs {REQUIRES[n]})" for n in names
                     if n in REQUIRES and REQUIRES[n] not in names)
    if lacking:
        raise OffersError(f"offers {', '.join(lacking)}")
    return names


def offered(impl: object) -> frozenset[str]:
    """What ``impl`` offers: its ``offers`` declaration or, for an adapter that makes none,
    every offering of which it has at least one method (so that a missing method is an error,
    not a silently skipped level); such an adapter is taken to offer events with the
    hypercall level."""
    names = declared(impl)
    if names is not None:
        return names
    out = {o for o, methods in METHODS.items()
           if any(hasattr(impl, m) for m in methods if m != "counts_like_xen")}
    if "hypercall" in out:
        out.add("events")
    return frozenset(out)


def missing(impl: object, offering: str) -> list[str]:
    """The methods (and attributes) of ``offering`` that ``impl`` lacks."""
    return [m for m in METHODS[offering] if not hasattr(impl, m)]


def describe(impl: object) -> str:
    """A short name for an implementation, for reports."""
    name = getattr(impl, "name", None)
    return str(name) if name else type(impl).__name__


def levels(impl: object) -> list[str]:
    """The levels ``impl`` offers: 'guest', 'hypercall', both or none."""
    out = []
    if isinstance(impl, GuestLevel):
        out.append("guest")
    if isinstance(impl, HypercallLevel):
        out.append("hypercall")
    return out

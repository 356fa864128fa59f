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

    def xen_l2_slots(self, domid: int) -> Sequence[int]:
        """The entries the hypervisor itself keeps in slots L2_PAGETABLE_FIRST_XEN_SLOT..1023
        of the domain's page directories."""
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

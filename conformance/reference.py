"""The reference model behind the conformance adapter interface: the default implementation.

``ReferenceImplementation()`` is a fresh machine running ``xenspec.refmodel``; it offers both
levels of ``xenspec.conformance.adapter``. ``setup`` (a function of the new ``Hypervisor`` and
``PVPlatform``) may alter that one machine before use: the broken implementations of
``xenspec.conformance.broken`` are the reference model with one rule changed this way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from xenspec.conformance.adapter import DomainInfo, FrameInfo, GrantHandle, GuestRun
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.builder import DEFAULT_VIRT_BASE, build_initial_tables
from xenspec.refmodel.console import ConsoleLines
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.hypervisor import HYPERCALL_NAMES, HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.memory import PGC_allocated, PGC_xen_heap, PGT_pinned, PGT_validated
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.pvguest import issue
from xenspec.spec import abi
from xenspec.spec.abi_profiles import DEFAULT_PROFILE, PROFILES
from xenspec.spec.pagetable import PGT_root_page_table

Setup = Callable[[Hypervisor, PVPlatform], None]

MACHINE_FRAMES = 1024  # 4 MB: room for a few small domains
GUEST_MACHINE_MB, GUEST_DOMAIN_MB = 64, 16
CONSOLE_KEPT = 1 << 20  # a guest run's console text: its last megabyte at most


class _Tail:
    """The last ``size`` characters of a text written a piece at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: deque[str] = deque()
        self.length = 0

    def append(self, piece: str) -> None:
        self.parts.append(piece)
        self.length += len(piece)
        while self.length - len(self.parts[0]) >= self.size:
            self.length -= len(self.parts.popleft())

    def value(self) -> str:
        return "".join(self.parts)[-self.size:]


def _call_names(calls: dict[int, int]) -> dict[str, int]:
    """The machine's completed hypercalls by name (BootResult.calls)."""
    return {HYPERCALL_NAMES.get(nr, str(nr)): n for nr, n in calls.items()}


class ReferenceImplementation:
    """The reference hypervisor, guest level and hypercall level."""

    name = "reference"
    offers = frozenset({"guest", "guest-disk", "hypercall", "events", "xen-written-frames",
                        "grants", "memory"})
    counts_like_xen = True

    def __init__(self, setup: Setup | None = None, machine_frames: int = MACHINE_FRAMES) -> None:
        self.setup = setup
        # The ABI profile guests boot with (spec/abi_profiles.py; the suite's --abi sets it).
        # The hypercall level is the native profile's whatever it says.
        self.abi = DEFAULT_PROFILE.name
        self.machine_frames = machine_frames
        self._hv: Hypervisor | None = None
        self._pv: PVPlatform | None = None

    # --- guest level -------------------------------------------------------------------------
    def boot_guest(self, elf: Path, cmdline: str, timeout_s: float) -> GuestRun:
        return self._boot(elf, cmdline, timeout_s, None)

    def boot_guest_with_disk(self, elf: Path, cmdline: str, timeout_s: float,
                             disk: Path) -> GuestRun:
        return self._boot(elf, cmdline, timeout_s, disk)

    def _boot(self, elf: Path, cmdline: str, timeout_s: float, disk: Path | None) -> GuestRun:
        """Boot one guest with its store and console rings, as Xen's tools give every guest.
        The console is both of the domain's consoles as ``xenspec run`` prints them
        (``ConsoleLines``): console_io's lines prefixed "(dN) ", the ring's as they are."""
        text = _Tail(CONSOLE_KEPT)
        lines = ConsoleLines(text.append)
        m = Machine(GUEST_MACHINE_MB, trace=True, setup=self.setup, devices=True,
                    console=lines.xen, ring_console=lines.ring, profile=PROFILES[self.abi])
        d = m.add_guest(str(elf), GUEST_DOMAIN_MB, cmdline)
        if disk is not None:
            m.attach_disk(d.domain_id, str(disk))
        m.run(timeout_s=timeout_s)
        lines.flush()
        r = m.result(d)
        detail = "; ".join([r.crash_reason or "", *(x for dev in m.disks for x in dev.messages)])
        return GuestRun(text.value(), r.reason.name if r.reason else None, detail.strip("; "),
                        _call_names(r.calls))

    # --- hypercall level: the machine ----------------------------------------------------------
    @property
    def hv(self) -> Hypervisor:
        if self._hv is None:
            self._hv = Hypervisor(self.machine_frames)
            self._pv = PVPlatform(self._hv)
            # memory_op, as a booted machine has it (refmodel/boot.py, Machine)
            self._hv.hypercall_table.update(MemOp(self._pv).hypercalls())
            if self.setup is not None:
                self.setup(self._hv, self._pv)
        return self._hv

    @property
    def pv(self) -> PVPlatform:
        assert self.hv is not None and self._pv is not None
        return self._pv

    def domain(self, domid: int) -> Domain:
        try:
            return self.hv.domains[domid]
        except KeyError:
            raise ValueError(f"no domain {domid}") from None

    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool) -> DomainInfo:
        d = self.hv.create_domain(nr_pages, privileged=privileged)
        self.pv.setup_domain(d)
        lay = build_initial_tables(self.hv, d, nr_mapped, DEFAULT_VIRT_BASE)
        return DomainInfo(d.domain_id, tuple(d.page_list), lay.virt_base, lay.nr_mapped,
                          lay.pt_base_pfn, lay.l1_pfns)

    def create_domain_with_tables(
        self, nr_pages: int, privileged: bool, layout: DomainInfo,
        tables: Mapping[int, Mapping[int, tuple[int | None, int]]],
    ) -> DomainInfo:
        """A domain whose start-of-day page tables are given rather than built: ``layout``'s
        virt_base, nr_mapped, pt_base_pfn and l1_pfns, and ``tables`` {pfn: {index: (target
        pfn, low 12 bits)}} (target None: the word is the low bits alone). The directory is
        pinned and loaded as the builder does, so the model validates them; ValueError if it
        refuses. The differential run gives the reference model an implementation's layout
        and builder flags this way, which ``DomainInfo`` leaves to the implementation."""
        d = self.hv.create_domain(nr_pages, privileged=privileged)
        self.pv.setup_domain(d)
        mfn = d.page_list
        for pfn, entries in tables.items():
            for index, (target, low) in entries.items():
                word = low if target is None else mfn[target] << abi.PAGE_SHIFT | low
                self.hv.memory.write_entry(mfn[pfn], index, word)
        v, l2 = d.vcpus[0], mfn[layout.pt_base_pfn]
        if not self.hv.mm.pin_page(v, l2, PGT_root_page_table):
            raise ValueError("the page directory does not validate (MMUEXT_PIN_L2_TABLE)")
        if not self.hv.mm.new_guest_cr3(v, l2):
            raise ValueError("the page directory cannot be loaded (new_guest_cr3)")
        return DomainInfo(d.domain_id, tuple(mfn), layout.virt_base, layout.nr_mapped,
                          layout.pt_base_pfn, layout.l1_pfns)

    def hypercall(self, domid: int, name: str, *args: int) -> int:
        nr = HYPERCALL_NUMBERS.get(name)
        if nr is None:
            raise ValueError(f"no hypercall {name!r}")
        # The guest's int $0x82, executed again while the hypercall is continued.
        return issue(self.hv, self.domain(domid).vcpus[0], nr, *args)

    def is_running(self, domid: int) -> bool:
        return self.domain(domid).is_running

    def _maddr(self, domid: int, pfn: int, offset: int, length: int) -> int:
        if offset < 0 or offset + length > abi.PAGE_SIZE:
            raise ValueError("the access must stay within one frame")
        return (self.domain(domid).page_list[pfn] << abi.PAGE_SHIFT) + offset

    def write_pfn(self, domid: int, pfn: int, offset: int, data: bytes) -> None:
        self.hv.memory.write(self._maddr(domid, pfn, offset, len(data)), data)

    def read_pfn(self, domid: int, pfn: int, offset: int, length: int) -> bytes:
        return self.hv.memory.read(self._maddr(domid, pfn, offset, length), length)

    # --- hypercall level: the state ------------------------------------------------------------
    def nr_frames(self) -> int:
        return self.hv.memory.nr_frames

    def frame(self, mfn: int) -> FrameInfo:
        f = self.hv.frames
        return _frame_info(f.owner[mfn], f.type[mfn], f.type_count[mfn], f.count[mfn],
                           f.flags[mfn])

    def frames(self) -> list[FrameInfo]:
        f, n = self.hv.frames, self.nr_frames()
        return [_frame_info(*fields) for fields in zip(
            f.owner[:n], f.type[:n], f.type_count[:n], f.count[:n], f.flags[:n], strict=True)]

    def entries(self, mfn: int) -> Sequence[int]:
        return self.hv.memory.frame_words(mfn).tolist()

    def machphys(self, mfn: int) -> int:
        return int(self.hv.m2p[mfn])

    def xen_l2_slots(self, domid: int, l2_mfn: int) -> Sequence[int]:
        return self.hv.xen_l2_slots(self.domain(domid), l2_mfn)

    def vcpu_bases(self) -> Sequence[tuple[int, int]]:
        return [(d.domain_id, v.guest_table) for d in self.hv.domains.values() for v in d.vcpus]

    def descriptor_frames(self, domid: int) -> Sequence[int]:
        return self.hv.descriptor_table_frames(self.domain(domid).vcpus[0])

    def grant_handles(self, domid: int) -> Sequence[GrantHandle]:
        """The grantee's handles in use (``GrantState``), from its maptrack."""
        t = self.pv.grants.tables.get(domid)
        if t is None:
            return []
        return [GrantHandle(h, mt.flags, mt.domid, mt.frame, mt.pte)
                for h, mt in enumerate(t.maptrack) if mt.flags]

    def xen_written_frames(self) -> Sequence[int]:
        """The frames the model writes into on a guest's behalf (``XenWrittenFrames``)."""
        return [m for m in range(self.hv.memory.nr_frames) if self.hv.hypervisor_writes(m)]


def _frame_info(owner: int, type_: int, type_count: int, count: int, flags: int) -> FrameInfo:
    """A frame's ``FrameInfo`` from the frame table's fields (refmodel/memory.py)."""
    return FrameInfo(owner, type_, type_count, count, bool(flags & PGT_validated),
                     bool(flags & PGT_pinned), bool(flags & PGC_allocated),
                     bool(flags & PGC_xen_heap))

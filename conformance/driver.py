"""A guest kernel stand-in that drives a hypercall-level implementation.

``Guest`` is one domain created through the adapter; its methods issue hypercalls the way a
guest kernel does: argument arrays are written into the domain's own memory (``ARG_PAGES``
consecutive pseudo-physical frames the builder mapped writable, the first such run of the
bootstrap region) and passed by guest-virtual address.

Nothing here assumes where the builder put things: the page directory, the L1 tables, which
frames are mapped writable and where an entry is are read from the adapter's ``DomainInfo``
and from the start-of-day page tables themselves (``mapping``, ``arg_pfn``, ``data_pfns``).
Structure layouts are xen.h's (``mmu_update_t``, ``mmuext_op_t``, ``trap_info_t``), from
``xenspec.spec.abi``. Every call is counted in ``xenspec.conformance.coverage``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xenspec.conformance import coverage
from xenspec.conformance.adapter import DomainInfo, HypercallLevel
from xenspec.spec import abi
from xenspec.spec.guestcalls import PTE_RO, PTE_RW, MMUCalls, pack_mmu_updates, pack_mmuext_ops

__all__ = ["ARG_PAGES", "DONE_OFFSET", "PTE_RO", "PTE_RW", "UNSET", "Guest", "pack_mmu_updates",
           "pack_mmuext_ops"]

ARG_PAGES = 16  # up to 4095 mmu_update requests and *done in the last word
DONE_OFFSET = ARG_PAGES * abi.PAGE_SIZE - 4
UNSET = 0xFFFFFFFF  # *done is preset to this before each batch

class Guest(MMUCalls):
    """One domain of an implementation, with its kernel's hypercall wrappers."""

    def __init__(self, impl: HypercallLevel, nr_pages: int = 128, nr_mapped: int = 64,
                 privileged: bool = False, info: DomainInfo | None = None) -> None:
        """Create a domain, or (``info``) drive one the implementation already has."""
        if nr_mapped < ARG_PAGES + 4:
            raise ValueError(f"a guest needs at least {ARG_PAGES + 4} mapped pages")
        self.impl = impl
        self.privileged = privileged
        self.info: DomainInfo = info or impl.create_domain(nr_pages, nr_mapped, privileged)
        tables: dict[int, Sequence[int]] = {}  # each start-of-day table read once

        def read(mfn: int, index: int) -> int:
            if mfn not in tables:
                tables[mfn] = impl.entries(mfn)
            return tables[mfn][index]

        self._writable = [p for p in range(self.info.nr_mapped) if self._maps_writable(p, read)]
        runs = [p for p in self._writable
                if all(q in self._writable for q in range(p, p + ARG_PAGES))]
        if not runs:
            raise ValueError(f"the builder mapped no {ARG_PAGES} consecutive pfns writable")
        self.arg_pfn = runs[0]

    def _maps_writable(self, pfn: int, read: Callable[[int, int], int]) -> bool:
        at = self.mapping(pfn, read)
        return at is not None and (
            read(*at) & (abi._PAGE_PRESENT | abi._PAGE_RW | ~0xFFF)
            == self.mfn(pfn) << abi.PAGE_SHIFT | abi._PAGE_PRESENT | abi._PAGE_RW)

    def mapping(self, pfn: int, read: Callable[[int, int], int] | None = None
                ) -> tuple[int, int] | None:
        """(L1 table mfn, index) of the entry that maps ``va(pfn)`` in the start-of-day
        directory, or None if its directory slot is empty. ``read`` reads an entry (by
        default ``entry``, from the implementation)."""
        va = self.va(pfn)
        l2e = (read or self.entry)(self.l2_mfn, va >> abi.L2_PAGETABLE_SHIFT)
        if not l2e & abi._PAGE_PRESENT:
            return None
        return l2e >> abi.PAGE_SHIFT, (va >> abi.PAGE_SHIFT) & (abi.L1_PAGETABLE_ENTRIES - 1)

    def l1e_of(self, pfn: int) -> tuple[int, int]:
        """Like ``mapping``, for a pfn of the bootstrap region."""
        at = self.mapping(pfn)
        assert at is not None, f"start of day: pfn {pfn} of the bootstrap region is not mapped"
        return at

    @property
    def data_pfns(self) -> list[int]:
        """Pfns the builder mapped writable, outside the argument area: plain data pages."""
        args = range(self.arg_pfn, self.arg_pfn + ARG_PAGES)
        return [p for p in self._writable if p not in args]

    @property
    def data_pfn(self) -> int:
        """One plain data page, mapped writable by the builder."""
        return self.data_pfns[0]

    # --- addresses ----------------------------------------------------------------------------
    @property
    def domid(self) -> int:
        return self.info.domid

    def mfn(self, pfn: int) -> int:
        return self.info.p2m[pfn]

    def va(self, pfn: int) -> int:
        return self.info.virt_base + (pfn << abi.PAGE_SHIFT)

    @property
    def l2_mfn(self) -> int:
        return self.mfn(self.info.pt_base_pfn)

    @property
    def l1_mfns(self) -> list[int]:
        return [self.mfn(p) for p in self.info.l1_pfns]

    def free_pfns(self) -> range:
        """Frames the builder left unmapped: the tests' own tables and data."""
        return range(self.info.nr_mapped, len(self.info.p2m))

    def free_mfns(self, n: int, skip: int = 0) -> list[int]:
        return [self.mfn(p) for p in self.free_pfns()[skip : skip + n]]

    @property
    def running(self) -> bool:
        return self.impl.is_running(self.domid)

    # --- memory of the argument area -----------------------------------------------------------
    def write_args(self, data: bytes, offset: int = 0) -> int:
        """Place ``data`` in the argument area; return its guest-virtual address."""
        if offset + len(data) > ARG_PAGES * abi.PAGE_SIZE:
            raise ValueError("the arguments do not fit the argument area")
        pos = 0
        while pos < len(data):
            pfn, off = divmod(offset + pos, abi.PAGE_SIZE)
            pfn += self.arg_pfn
            chunk = min(len(data) - pos, abi.PAGE_SIZE - off)
            self.impl.write_pfn(self.domid, pfn, off, data[pos : pos + chunk])
            pos += chunk
        return self.va(self.arg_pfn) + offset

    def read_args(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the argument area from ``offset``, frame by frame."""
        out = b""
        while len(out) < length:
            pfn, off = divmod(offset + len(out), abi.PAGE_SIZE)
            chunk = min(length - len(out), abi.PAGE_SIZE - off)
            out += self.impl.read_pfn(self.domid, self.arg_pfn + pfn, off, chunk)
        return out

    @property
    def arg_pfns(self) -> range:
        return range(self.arg_pfn, self.arg_pfn + ARG_PAGES)

    @property
    def done_va(self) -> int:
        return self.va(self.arg_pfn) + DONE_OFFSET

    def read_done(self) -> int:
        return int.from_bytes(self.read_args(DONE_OFFSET, 4), "little")

    # --- hypercalls ---------------------------------------------------------------------------
    def hypercall(self, name: str, *args: int) -> int:
        coverage.issuing(coverage.call_clause(name, args))
        return self._issue(name, *args)

    def _issue(self, name: str, *args: int) -> int:
        coverage.called(name)
        return self.impl.hypercall(self.domid, name, *(a & 0xFFFFFFFF for a in args))

    def batch(self, name: str, buf: bytes, count: int, foreigndom: int) -> tuple[int, int]:
        """Issue mmu_update or mmuext_op on ``buf``; return (rc, *done)."""
        if len(buf) > DONE_OFFSET:
            raise ValueError("the batch does not fit the argument area")
        self.write_args(UNSET.to_bytes(4, "little"), DONE_OFFSET)
        ptr = self.write_args(buf)
        rc = self._issue(name, ptr, count, self.done_va, foreigndom)  # clause: the requests
        return rc, self.read_done()

    def mmu_update(self, reqs: list[tuple[int, int]],
                   foreigndom: int = abi.DOMID_SELF) -> tuple[int, int]:
        for ptr, _ in reqs:
            coverage.hit(coverage.mmu_update_clause(ptr))
            coverage.issuing(coverage.mmu_update_clause(ptr))
        return self.batch("mmu_update", pack_mmu_updates(reqs), len(reqs), foreigndom)

    def mmuext_op(self, ops: list[tuple[int, int, int]],
                  foreigndom: int = abi.DOMID_SELF) -> tuple[int, int]:
        for cmd, _, _ in ops:
            coverage.hit(coverage.mmuext_clause(cmd))
            coverage.issuing(coverage.mmuext_clause(cmd))
        return self.batch("mmuext_op", pack_mmuext_ops(ops), len(ops), foreigndom)

    def update_va_mapping(self, va: int, pte: int, flags: int = abi.UVMF_NONE) -> int:
        return self.hypercall("update_va_mapping", va, pte, 0, flags)

    def set_trap_table(self, traps: list[tuple[int, int, int, int]]) -> int:
        """traps: (vector, flags, cs, address); the table ends with a zero entry."""
        buf = b"".join(abi.TRAP_INFO_T.pack(*t) for t in traps) + bytes(abi.TRAP_INFO_T.size)
        return self.hypercall("set_trap_table", self.write_args(buf))

    def set_gdt(self, frames: list[int], entries: int) -> int:
        ptr = self.write_args(b"".join(f.to_bytes(4, "little") for f in frames))
        return self.hypercall("set_gdt", ptr, entries)

    def update_descriptor(self, maddr: int, desc: int) -> int:
        return self.hypercall("update_descriptor", maddr & 0xFFFFFFFF, maddr >> 32,
                              desc & 0xFFFFFFFF, desc >> 32)

    # --- state --------------------------------------------------------------------------------
    def entry(self, mfn: int, index: int) -> int:
        return self.impl.entries(mfn)[index]

"""A paravirtual guest driven from Python: a domain plus the hypercall wrappers of its kernel.

Tests, benchmarks and the built-in scenario use it to issue hypercalls the way a guest kernel
does: argument arrays are written into the guest's own memory (the first ``ARG_PAGES`` pages of
the bootstrap region) and passed by guest-virtual address in the argument registers, so every
call exercises the same copy_from_guest path a real guest does. A hypercall the hypervisor
preempts is issued again with the continuation's arguments until it completes (``issue``), as
a real guest's ``int $0x82`` is executed again without the guest noticing.
"""

from __future__ import annotations

from xenspec.refmodel.builder import DEFAULT_VIRT_BASE, InitialLayout, build_initial_tables
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.spec import abi
from xenspec.spec.guestcalls import PTE_RO, PTE_RW, MMUCalls, pack_mmu_updates, pack_mmuext_ops

__all__ = ["ARG_PAGES", "DONE_OFFSET", "PTE_RO", "PTE_RW", "PVGuest", "issue"]

ARG_PAGES = 16  # pfns [0, 16): the argument area (up to 4095 mmu_update requests)
DONE_OFFSET = ARG_PAGES * abi.PAGE_SIZE - 4  # the last word of the area receives *done


def issue(hv: Hypervisor, v: Vcpu, nr: int, *args: int) -> int:
    """Hypercall ``nr`` from ``v`` to completion: while the hypervisor continues it
    (``Vcpu.continuation``), issue it again with the registers the continuation left, as the
    guest's re-executed ``int $0x82`` does. Returns the last piece's result."""
    rc = hv.hypercall(v, nr, *args)
    while v.continuation is not None and v.domain.is_running:
        c = v.continuation
        rc = hv.hypercall(v, c.nr, *c.args)
    return rc


class PVGuest(MMUCalls):
    """One domain with its initial page tables and a Python 'kernel' issuing hypercalls."""

    def __init__(
        self,
        hv: Hypervisor,
        nr_pages: int = 256,
        nr_mapped: int | None = None,
        privileged: bool = False,
        virt_base: int = DEFAULT_VIRT_BASE,
    ) -> None:
        self.hv = hv
        self.domain: Domain = hv.create_domain(nr_pages, privileged=privileged)
        mapped = nr_mapped if nr_mapped is not None else min(nr_pages, 64)
        if mapped < ARG_PAGES + 4:
            raise ValueError(f"a PV guest needs at least {ARG_PAGES + 4} mapped pages")
        self.layout: InitialLayout = build_initial_tables(hv, self.domain, mapped, virt_base)

    # --- addresses ----------------------------------------------------------------------------
    @property
    def vcpu(self) -> Vcpu:
        return self.domain.vcpus[0]

    @property
    def domid(self) -> int:
        return self.domain.domain_id

    def mfn(self, pfn: int) -> int:
        return self.domain.page_list[pfn]

    def va(self, pfn: int) -> int:
        return self.layout.va(pfn)

    @property
    def arg_va(self) -> int:
        return self.va(0)

    @property
    def done_va(self) -> int:
        return self.va(0) + DONE_OFFSET

    # --- raw hypercall -----------------------------------------------------------------------
    def hypercall(self, name: str, *args: int) -> int:
        """Issue a hypercall, continuations included (``issue``)."""
        return issue(self.hv, self.vcpu, HYPERCALL_NUMBERS[name], *args)

    def write_args(self, data: bytes, offset: int = 0) -> int:
        """Place ``data`` in the argument area; return its guest-virtual address."""
        if offset + len(data) > ARG_PAGES * abi.PAGE_SIZE:
            raise ValueError("the batch does not fit the argument area")
        # The area is contiguous in pseudo-physical space only: write page by page.
        pos = 0
        while pos < len(data):
            pfn, off = divmod(offset + pos, abi.PAGE_SIZE)
            chunk = min(len(data) - pos, abi.PAGE_SIZE - off)
            maddr = (self.mfn(pfn) << abi.PAGE_SHIFT) + off
            self.hv.memory.write(maddr, data[pos : pos + chunk])
            pos += chunk
        return self.arg_va + offset

    def _write_batch(self, buf: bytes) -> int:
        if len(buf) > DONE_OFFSET:
            raise ValueError("the batch does not fit the argument area")
        self.write_args(b"\xff\xff\xff\xff", DONE_OFFSET)
        return self.write_args(buf)

    def read_done(self) -> int:
        """The count the batch call stored at ``done_va``, read as the guest reads it: through
        its page tables (a batch may remap the page), 0xFFFFFFFF, as _write_batch left it,
        when nothing maps the address any more."""
        if not self.vcpu.guest_table:  # crashed with no page table (new_guest_cr3)
            return 0xFFFFFFFF
        raw = self.hv.copy_from_guest(self.vcpu, self.done_va, 4)
        return 0xFFFFFFFF if raw is None else int.from_bytes(raw, "little")

    # --- the MMU hypercalls ------------------------------------------------------------------
    def mmu_update(
        self, reqs: list[tuple[int, int]], foreigndom: int = abi.DOMID_SELF
    ) -> tuple[int, int]:
        """Issue one batch; return (rc, *done)."""
        buf = pack_mmu_updates(reqs)
        ptr = self._write_batch(buf)
        rc = self.hypercall("mmu_update", ptr, len(reqs), self.done_va, foreigndom)
        return rc, self.read_done()

    def mmuext_op(
        self, ops: list[tuple[int, int, int]], foreigndom: int = abi.DOMID_SELF
    ) -> tuple[int, int]:
        buf = pack_mmuext_ops(ops)
        ptr = self._write_batch(buf)
        rc = self.hypercall("mmuext_op", ptr, len(ops), self.done_va, foreigndom)
        return rc, self.read_done()

    def update_va_mapping(self, va: int, pte: int, flags: int = abi.UVMF_NONE) -> int:
        return self.hypercall("update_va_mapping", va, pte, 0, flags)

    # --- conveniences built on them ----------------------------------------------------------
    @property
    def l2_mfn(self) -> int:
        return self.mfn(self.layout.pt_base_pfn)

    @property
    def first_l1_mfn(self) -> int:
        return self.mfn(self.layout.l1_pfns[0])

    def free_pfns(self) -> range:
        """Frames the builder left unmapped: free for the tests' own tables and data."""
        return range(self.layout.nr_mapped, self.domain.tot_pages)

"""The guest kernel's side of the MMU hypercalls: argument structures and small wrappers.

A guest passes ``mmu_update`` requests and ``mmuext_op`` operations as arrays of xen.h's
``struct mmu_update`` and ``struct mmuext_op`` in its own memory. ``pack_*`` lays them out;
``MMUCalls`` gives the conveniences a kernel builds on the two batch calls (one entry, pin,
unpin, switch the base pointer). The reference model's Python guest and the conformance
suite's driver both derive from it and provide ``mmu_update`` and ``mmuext_op``.
"""

from __future__ import annotations

from xenspec.spec import abi

PTE_RW = abi._PAGE_PRESENT | abi._PAGE_RW
PTE_RO = abi._PAGE_PRESENT


def pack_mmu_updates(reqs: list[tuple[int, int]]) -> bytes:
    return b"".join(abi.MMU_UPDATE_T.pack(p & (2**64 - 1), v & (2**64 - 1)) for p, v in reqs)


def pack_mmuext_ops(ops: list[tuple[int, int, int]]) -> bytes:
    m = 0xFFFFFFFF
    return b"".join(abi.MMUEXT_OP_T.pack(c & m, a & m, b & m) for c, a, b in ops)


class MMUCalls:
    """Single-entry conveniences over a guest's ``mmu_update`` and ``mmuext_op`` batches."""

    def mmu_update(
        self, reqs: list[tuple[int, int]], foreigndom: int = abi.DOMID_SELF
    ) -> tuple[int, int]:
        """Issue one batch; return (rc, *done)."""
        raise NotImplementedError

    def mmuext_op(
        self, ops: list[tuple[int, int, int]], foreigndom: int = abi.DOMID_SELF
    ) -> tuple[int, int]:
        raise NotImplementedError

    @staticmethod
    def entry_maddr(table_mfn: int, index: int) -> int:
        """The machine address of entry ``index`` of table ``table_mfn`` (mmu_update ptr)."""
        return table_mfn << abi.PAGE_SHIFT | index * abi.PTE_SIZE

    @staticmethod
    def pte(mfn: int, flags: int = PTE_RW) -> int:
        return (mfn << abi.PAGE_SHIFT | flags) & 0xFFFFFFFF

    def set_entry(self, table_mfn: int, index: int, val: int) -> int:
        return self.mmu_update([(self.entry_maddr(table_mfn, index), val)])[0]

    def pin(self, mfn: int, level: int) -> int:
        cmd = abi.MMUEXT_PIN_L1_TABLE if level == 1 else abi.MMUEXT_PIN_L2_TABLE
        return self.mmuext_op([(cmd, mfn, 0)])[0]

    def unpin(self, mfn: int) -> int:
        return self.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, mfn, 0)])[0]

    def new_baseptr(self, mfn: int) -> int:
        return self.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, mfn, 0)])[0]

"""Guest-virtual memory access by the hypervisor: copy_from_guest / copy_to_guest.

Xen reads hypercall arguments through the calling vCPU's own page tables at ring 0, so an
access succeeds exactly when the 2-level walk finds present entries and, for a write, RW at
both levels (Xen runs with CR0.WP set). Addresses at or above HYPERVISOR_VIRT_START are never
guest memory (xen/include/asm-x86/x86_32/uaccess.h, __addr_ok and access_ok).
"""

from __future__ import annotations

from xenspec.refmodel.memory import MachineMemory
from xenspec.spec import abi
from xenspec.spec.pagetable import pte_get_pfn

_PRESENT_RW = abi._PAGE_PRESENT | abi._PAGE_RW
_OFFSET_MASK = abi.PAGE_SIZE - 1


def array_access_ok(ptr: int, count: int, size: int) -> bool:
    """uaccess.h, array_access_ok: the whole array lies below the hypervisor hole."""
    if count < 0 or ptr < 0:
        return False
    return ptr + count * size <= abi.HYPERVISOR_VIRT_START


def translate(memory: MachineMemory, l2mfn: int, va: int, write: bool) -> int | None:
    """The machine address ``va`` maps to under page directory ``l2mfn``, or None."""
    if not l2mfn or not 0 <= va < abi.HYPERVISOR_VIRT_START:
        return None
    need = _PRESENT_RW if write else abi._PAGE_PRESENT
    l2e = memory.read_entry(l2mfn, va >> abi.L2_PAGETABLE_SHIFT)
    if l2e & need != need:
        return None
    l1mfn = pte_get_pfn(l2e)
    if not memory.mfn_valid(l1mfn):
        return None
    l1e = memory.read_entry(l1mfn, (va >> abi.L1_PAGETABLE_SHIFT) & 0x3FF)
    if l1e & need != need:
        return None
    mfn = pte_get_pfn(l1e)
    if not memory.mfn_valid(mfn):
        return None
    return int(mfn << abi.PAGE_SHIFT | (va & _OFFSET_MASK))


def copy_from_guest(memory: MachineMemory, l2mfn: int, va: int, length: int) -> bytes | None:
    """Read ``length`` bytes at guest address ``va``; None if any byte is unmapped."""
    out = bytearray()
    while length > 0:
        maddr = translate(memory, l2mfn, va, write=False)
        if maddr is None:
            return None
        chunk = min(length, abi.PAGE_SIZE - (va & _OFFSET_MASK))
        out += memory.read(maddr, chunk)
        va += chunk
        length -= chunk
    return bytes(out)


def copy_to_guest(memory: MachineMemory, l2mfn: int, va: int, data: bytes) -> bool:
    """Write ``data`` at guest address ``va``; False (nothing written) if any byte faults."""
    pieces: list[tuple[int, int, int]] = []
    pos = 0
    while pos < len(data):
        maddr = translate(memory, l2mfn, va + pos, write=True)
        if maddr is None:
            return False
        chunk = min(len(data) - pos, abi.PAGE_SIZE - ((va + pos) & _OFFSET_MASK))
        pieces.append((maddr, pos, chunk))
        pos += chunk
    for maddr, start, chunk in pieces:
        memory.write(maddr, data[start : start + chunk])
    return True


class GuestReader:
    """Reads consecutive records from a guest array, translating each page once."""

    def __init__(self, memory: MachineMemory, l2mfn: int, va: int) -> None:
        self.memory = memory
        self.l2mfn = l2mfn
        self.va = va
        self._page_va = -1
        self._page_maddr = 0

    def read(self, size: int) -> bytes | None:
        va = self.va
        offset = va & _OFFSET_MASK
        if offset + size > abi.PAGE_SIZE:
            data = copy_from_guest(self.memory, self.l2mfn, va, size)
        else:
            page_va = va - offset
            if page_va != self._page_va:
                maddr = translate(self.memory, self.l2mfn, page_va, write=False)
                if maddr is None:
                    return None
                self._page_va, self._page_maddr = page_va, maddr
            data = self.memory.read(self._page_maddr + offset, size)
        if data is not None:
            self.va = va + size
        return data

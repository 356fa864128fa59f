"""Guest-virtual memory access by the hypervisor: copy_from_guest / copy_to_guest.

Xen reads hypercall arguments through the calling vCPU's own page tables at ring 0, so an
access succeeds exactly when the 2-level walk finds present entries and, for a write, RW at
both levels (Xen runs with CR0.WP set). Addresses at or above HYPERVISOR_VIRT_START are never
guest memory (xen/include/asm-x86/x86_32/uaccess.h, __addr_ok and access_ok).

The compat-pae profile (a 32-bit PAE guest on 64-bit Xen 4.x) walks three levels of 64-bit
entries instead (``translate_pae``), and its hole starts at HYPERVISOR_COMPAT_VIRT_START
(xen/arch/x86/include/asm/x86_64/uaccess.h, __compat_addr_ok and compat_array_access_ok).
"""

from __future__ import annotations

from collections.abc import Callable

from xenspec.refmodel.memory import MachineMemory
from xenspec.spec import abi, abi_profiles, pagetable_pae
from xenspec.spec.pagetable import pte_get_pfn

# A page-table walk: (memory, root frame, linear address, write) -> machine address or None.
Translate = Callable[[MachineMemory, int, int, bool], "int | None"]
# The entries of the last two levels of a walk: (memory, root frame, linear address).
Leaf = Callable[[MachineMemory, int, int], "tuple[int, int]"]

_PRESENT_RW = abi._PAGE_PRESENT | abi._PAGE_RW
_OFFSET_MASK = abi.PAGE_SIZE - 1


def array_access_ok(ptr: int, count: int, size: int,
                    hole: int = abi.HYPERVISOR_VIRT_START) -> bool:
    """uaccess.h, array_access_ok: the whole array lies below the hypervisor hole."""
    if count < 0 or ptr < 0:
        return False
    return ptr + count * size <= hole


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


def translate_pae(memory: MachineMemory, l3mfn: int, va: int, write: bool) -> int | None:
    """The machine address ``va`` maps to under the PAE L3 ``l3mfn`` (compat-pae), or None.

    The L3 entry needs only PRESENT: a 32-bit domain's L3 entries get RW and USER added by
    Xen (pv/mm.h adjust_guest_l3e), so the permission is the L2's and the L1's."""
    if not l3mfn or not 0 <= va < abi_profiles.COMPAT_HYPERVISOR_VIRT_START:
        return None
    l3, l2, l1 = pagetable_pae.table_offsets(va)
    l3e = memory.read_entry64(l3mfn, l3)
    if not l3e & abi._PAGE_PRESENT:
        return None
    mfn = pagetable_pae.pte_get_pfn(l3e)
    need = _PRESENT_RW if write else abi._PAGE_PRESENT
    for index in (l2, l1):
        if not memory.mfn_valid(mfn):
            return None
        e = memory.read_entry64(mfn, index)
        if e & need != need:
            return None
        mfn = pagetable_pae.pte_get_pfn(e)
    if not memory.mfn_valid(mfn):
        return None
    return int(mfn << abi.PAGE_SHIFT | (va & _OFFSET_MASK))


def leaf(memory: MachineMemory, l2mfn: int, va: int) -> tuple[int, int]:
    """The (L2, L1) entries the 2-level walk of ``va`` reads; (0, 0) past an absent L2."""
    l2e = memory.read_entry(l2mfn, va >> abi.L2_PAGETABLE_SHIFT) if l2mfn else 0
    if not l2e & abi._PAGE_PRESENT or not memory.mfn_valid(pte_get_pfn(l2e)):
        return 0, 0
    return l2e, memory.read_entry(pte_get_pfn(l2e), (va >> abi.L1_PAGETABLE_SHIFT) & 0x3FF)


def leaf_pae(memory: MachineMemory, l3mfn: int, va: int) -> tuple[int, int]:
    """The (L2, L1) entries the PAE walk of ``va`` reads; (0, 0) past an absent level."""
    if not l3mfn:
        return 0, 0
    l3, l2, l1 = pagetable_pae.table_offsets(va)
    l3e = memory.read_entry64(l3mfn, l3)
    if not l3e & abi._PAGE_PRESENT or not memory.mfn_valid(pagetable_pae.pte_get_pfn(l3e)):
        return 0, 0
    l2e = memory.read_entry64(pagetable_pae.pte_get_pfn(l3e), l2)
    if not l2e & abi._PAGE_PRESENT or not memory.mfn_valid(pagetable_pae.pte_get_pfn(l2e)):
        return 0, 0
    return l2e, memory.read_entry64(pagetable_pae.pte_get_pfn(l2e), l1)


def copy_from_guest(memory: MachineMemory, l2mfn: int, va: int, length: int,
                    walk: Translate = translate) -> bytes | None:
    """Read ``length`` bytes at guest address ``va``; None if any byte is unmapped."""
    out = bytearray()
    while length > 0:
        maddr = walk(memory, l2mfn, va, False)
        if maddr is None:
            return None
        chunk = min(length, abi.PAGE_SIZE - (va & _OFFSET_MASK))
        out += memory.read(maddr, chunk)
        va += chunk
        length -= chunk
    return bytes(out)


def copy_to_guest(memory: MachineMemory, l2mfn: int, va: int, data: bytes,
                  walk: Translate = translate) -> bool:
    """Write ``data`` at guest address ``va``; False (nothing written) if any byte faults."""
    if data and (va & _OFFSET_MASK) + len(data) <= abi.PAGE_SIZE:  # one page: one walk
        maddr = walk(memory, l2mfn, va, True)
        if maddr is None:
            return False
        memory.write(maddr, data)
        return True
    pieces: list[tuple[int, int, int]] = []
    pos = 0
    while pos < len(data):
        maddr = walk(memory, l2mfn, va + pos, True)
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

    def __init__(self, memory: MachineMemory, l2mfn: int, va: int,
                 walk: Translate = translate) -> None:
        self.memory = memory
        self.walk = walk
        self.l2mfn = l2mfn
        self.va = va
        self._page_va = -1
        self._page_maddr = 0

    def read(self, size: int) -> bytes | None:
        va = self.va
        offset = va & _OFFSET_MASK
        if offset + size > abi.PAGE_SIZE:
            data = copy_from_guest(self.memory, self.l2mfn, va, size, self.walk)
        else:
            maddr = self._page(va - offset)
            if maddr is None:
                return None
            data = self.memory.read(maddr + offset, size)
        if data is not None:
            self.va = va + size
        return data

    def span(self, size: int, n: int) -> tuple[int, int] | None:
        """Where the next records of ``size`` bytes are while they lie in the page of the
        first: its machine address and how many (at most ``n``) follow there; None where
        the first crosses into the next page or its page is not mapped. The records are
        read where they lie, as ``read`` reads them; ``skip`` moves past those consumed."""
        offset = self.va & _OFFSET_MASK
        k = min(n, (abi.PAGE_SIZE - offset) // size)
        if k <= 0:
            return None
        maddr = self._page(self.va - offset)
        return None if maddr is None else (maddr + offset, k)

    def skip(self, length: int) -> None:
        self.va += length

    def _page(self, page_va: int) -> int | None:
        """The machine address of the page at ``page_va``, translated once per page."""
        if page_va != self._page_va:
            maddr = self.walk(self.memory, self.l2mfn, page_va, False)
            if maddr is None:
                return None
            self._page_va, self._page_maddr = page_va, maddr
        return self._page_maddr

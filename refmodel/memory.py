"""Machine memory and the frame table (Xen's ``frame_table`` of ``struct page_info``).

Machine memory is one anonymous mapping: untouched frames cost nothing, so a 64 MB domain is
cheap to create, and the same buffer can later be handed to the CPU emulator as its physical
memory. The frame table keeps, per machine frame, what Xen 3.0.4 keeps in ``page_info``
(xen/include/asm-x86/mm.h): the owner, the general reference count (``count_info``, which
includes the one reference PGC_allocated holds while a domain owns the frame), and the type
state of ``type_info``: type, type count, PGT_validated and PGT_pinned. The fields are held as
flat arrays, one entry per frame.
"""

from __future__ import annotations

import mmap
from array import array

from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

# Owner of a frame nobody owns (on the free list). Xen uses a NULL owner pointer.
DOMID_NONE = -1

# Flag bits of the model's per-frame flags array.
PGT_validated = 0x1  # mm.h, _PGT_validated: the frame's entries were checked for its type
PGT_pinned = 0x2  # mm.h, _PGT_pinned: the guest holds a pin (one type + one general ref)
PGC_allocated = 0x4  # mm.h, _PGC_allocated: the owning domain's allocation reference
# A Xen heap page shared with a guest (domain.c, share_xen_page_with_guest: shared_info, the
# grant-table frames). 3.0.4 tells them by address (IS_XEN_HEAP_FRAME); later Xen has the flag
# PGC_xen_heap. The hypervisor writes into these frames on the guest's behalf.
PGC_xen_heap = 0x8
# Xen 4.x mm.h, _PGT_pae_xen_l2 (compat-pae profile only): this L2 is the one slot 3 of a 32-bit
# PAE domain's L3 names, holding Xen's slots; it is part of the frame's type (get_page_type
# compares it with the type asked for).
PGT_pae_xen_l2 = 0x10

# Counter widths: mm.h (3.0.4), PGC_count_mask is 29 bits and PGT_count_mask 16 bits.
PGC_count_mask = (1 << 29) - 1
PGT_count_mask = (1 << 16) - 1

ENTRIES_PER_FRAME = abi.PAGE_SIZE // abi.PTE_SIZE
ENTRIES64_PER_FRAME = abi.PAGE_SIZE // 8


class MachineMemory:
    """``nr_frames`` machine frames of zero-filled RAM, addressed by machine address."""

    def __init__(self, nr_frames: int) -> None:
        if nr_frames <= 0:
            raise ValueError("machine memory needs at least one frame")
        self.nr_frames = nr_frames
        self.ram = mmap.mmap(-1, nr_frames * abi.PAGE_SIZE)
        # 32-bit little-endian words: entry i of frame f is words[f * 1024 + i].
        self.words = memoryview(self.ram).cast("I")
        # The same memory as 64-bit words, the entries of PAE tables (compat-pae profile).
        self.qwords = memoryview(self.ram).cast("Q")

    def mfn_valid(self, mfn: int) -> bool:
        """mm.h, mfn_valid: the frame number names machine RAM."""
        return 0 <= mfn < self.nr_frames

    def read_entry(self, mfn: int, index: int) -> int:
        return int(self.words[mfn * ENTRIES_PER_FRAME + index])

    def write_entry(self, mfn: int, index: int, value: int) -> None:
        self.words[mfn * ENTRIES_PER_FRAME + index] = value & 0xFFFFFFFF

    def read_entry64(self, mfn: int, index: int) -> int:
        """Entry ``index`` of a PAE table (512 eight-byte entries a frame)."""
        return int(self.qwords[mfn * ENTRIES64_PER_FRAME + index])

    def write_entry64(self, mfn: int, index: int, value: int) -> None:
        self.qwords[mfn * ENTRIES64_PER_FRAME + index] = value & 0xFFFFFFFFFFFFFFFF

    def frame_qwords(self, mfn: int) -> memoryview:
        base = mfn * ENTRIES64_PER_FRAME
        return self.qwords[base : base + ENTRIES64_PER_FRAME]

    def frame_words(self, mfn: int) -> memoryview:
        base = mfn * ENTRIES_PER_FRAME
        return self.words[base : base + ENTRIES_PER_FRAME]

    def read(self, maddr: int, length: int) -> bytes:
        return self.ram[maddr : maddr + length]

    def write(self, maddr: int, data: bytes) -> None:
        self.ram[maddr : maddr + len(data)] = data

    def scrub_frame(self, mfn: int) -> None:
        """Zero a frame before it changes hands (Xen scrubs freed domain memory)."""
        base = mfn * abi.PAGE_SIZE
        self.ram[base : base + abi.PAGE_SIZE] = bytes(abi.PAGE_SIZE)


class FrameTable:
    """Per-frame ownership, reference counts and type state (Xen's page_info array)."""

    def __init__(self, nr_frames: int) -> None:
        self.nr_frames = nr_frames
        self.owner = array("i", [DOMID_NONE]) * nr_frames
        self.count = array("I", [0]) * nr_frames
        self.type = array("B", [PGT.none]) * nr_frames
        self.type_count = array("I", [0]) * nr_frames
        self.flags = array("B", [0]) * nr_frames

    def is_validated(self, mfn: int) -> bool:
        return bool(self.flags[mfn] & PGT_validated)

    def is_pinned(self, mfn: int) -> bool:
        return bool(self.flags[mfn] & PGT_pinned)

    def is_allocated(self, mfn: int) -> bool:
        return bool(self.flags[mfn] & PGC_allocated)

    def describe(self, mfn: int) -> str:
        """One readable line about a frame, for traces and counterexamples."""
        flags = [
            name
            for bit, name in ((PGT_validated, "validated"), (PGT_pinned, "pinned"),
                              (PGC_allocated, "allocated"), (PGC_xen_heap, "xen_heap"),
                              (PGT_pae_xen_l2, "pae_xen_l2"))
            if self.flags[mfn] & bit
        ]
        return (
            f"mfn {mfn:#x}: owner {self.owner[mfn]}, type {PGT(self.type[mfn]).name}"
            f" x{self.type_count[mfn]}, count {self.count[mfn]}"
            + (f", {'|'.join(flags)}" if flags else "")
        )

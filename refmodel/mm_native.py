"""The C twin of ``MM.mmu_update_common`` (refmodel/mmfast.c): its loading and its call.

``MM.mmu_update_common`` (refmodel/mm.py) is the readable fused common case of an
``mmu_update`` batch entry; ``mmfast.c`` does the same for a run of records that lie in one
page of the guest's request array, and stops at the first record that is not the common
case (or that would retype a frame, whose TLB flush is the Python's), which then goes
through the Python. ``MM.mmu_update_bulk`` hands a batch the twin only while
``mmu_update_common`` is the batch's handler (no rule replaced) and the twin is the one this
module was written against. tests/test_mm_native.py holds the twin to the Python: the same
result, frame table and memory on every request of the fused tests and on random batches.

Without gcc the twin is not built and every record goes through the Python.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, ClassVar

from xenspec.refmodel import native
from xenspec.refmodel.memory import FrameTable, MachineMemory
from xenspec.spec import abi
from xenspec.spec.pagetable import FASTPATH_COMPARE, PGT

SOURCE = Path(__file__).resolve().with_name("mmfast.c")


class XsMM(ctypes.Structure):
    """struct xs_mm of mmfast.c."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("words", ctypes.c_void_p), ("owner", ctypes.c_void_p), ("count", ctypes.c_void_p),
        ("type", ctypes.c_void_p), ("type_count", ctypes.c_void_p),
        ("nr_frames", ctypes.c_uint64), ("domid", ctypes.c_int32),
        ("fd_domid", ctypes.c_int32), ("count_max", ctypes.c_uint32),
        ("type_count_max", ctypes.c_uint32), ("disallow", ctypes.c_uint32),
        ("compare", ctypes.c_uint32), ("t_l1", ctypes.c_uint8), ("t_writable", ctypes.c_uint8),
        ("t_ldt", ctypes.c_uint8), ("pad", ctypes.c_uint8),
    ]


_lib: Any = None  # the loaded twin, False if it cannot be built


def library() -> Any:
    """mmfast.c's shared object, built once per source version; None without gcc."""
    global _lib
    if _lib is None:
        _lib = native.load(SOURCE, dll=ctypes.PyDLL) or False
        if _lib:
            fn = _lib.xs_mmu_update_common
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(XsMM), ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int]
    return _lib or None


class CommonTwin:
    """The twin bound to one machine's memory and frame table."""

    def __init__(self, lib: Any, memory: MachineMemory, frames: FrameTable,
                 count_max: int, type_count_max: int) -> None:
        self._fn = lib.xs_mmu_update_common
        self._memory = memory
        self._frames = frames
        self._ram = ctypes.c_char.from_buffer(memory.ram)  # held: the address stays valid
        self._bytes = memory.nr_frames * abi.PAGE_SIZE
        self._mm = XsMM(
            words=ctypes.addressof(self._ram), nr_frames=memory.nr_frames,
            count_max=count_max, type_count_max=type_count_max,
            disallow=abi.L1_DISALLOW_MASK, compare=FASTPATH_COMPARE,
            t_l1=PGT.l1_page_table, t_writable=PGT.writable_page, t_ldt=PGT.ldt_page)
        self._ref = ctypes.byref(self._mm)

    def __call__(self, domid: int, fd_domid: int, maddr: int, n: int) -> int:
        """Records at ``maddr``, ``n`` of them, done while each is the common case of
        domain ``domid``'s batch with FOREIGNDOM ``fd_domid``; how many were done."""
        mm, frames = self._mm, self._frames
        # The frame table's arrays, where they are now (they are not resized, but nothing
        # here relies on it).
        mm.owner = frames.owner.buffer_info()[0]
        mm.count = frames.count.buffer_info()[0]
        mm.type = frames.type.buffer_info()[0]
        mm.type_count = frames.type_count.buffer_info()[0]
        mm.domid, mm.fd_domid = domid, fd_domid
        return int(self._fn(self._ref, self._bytes, maddr, n))

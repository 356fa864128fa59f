"""Descriptor tables: ``set_gdt`` (2) and ``update_descriptor`` (10), and the GDT frames of
the per-domain area.

Rules from Xen 3.0.4 xen/arch/x86/mm.c (do_set_gdt, set_gdt, destroy_gdt,
do_update_descriptor) with the descriptor rule of ``xenspec.spec.desc``: set_gdt takes at most
FIRST_RESERVED_GDT_ENTRY entries (-EINVAL), reads the frame list (-EFAULT), and types every
frame as PGT_gdt_page, which checks all 512 descriptors of it (-EINVAL); the frames are then
mapped read-only at the vCPU's GDT address. update_descriptor writes one checked descriptor at
an 8-aligned machine address of a frame the caller owns that is not a page table.

The MMU (refmodel/mm.py) does not validate descriptor frames itself; ``Desc`` supplies the
GDT/LDT validation to it (see ``alloc_descriptor_page``). The CPU sets the accessed bit of a
descriptor it loads: Xen's GDT mapping is writable by Xen, the model's is read-only (a ring-1
guest is supervisor to the MMU), so the resulting write fault is completed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi
from xenspec.spec.desc import check_descriptor
from xenspec.spec.pagetable import PGT

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_DESCS_PER_PAGE = abi.PAGE_SIZE // 8


class Desc:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.hv.mm.alloc_segdesc_page = self.alloc_descriptor_page
        self.hv.descriptor_table_frames = lambda v: list(pv.arch(v).gdt_frames)

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {
            HYPERCALL_NUMBERS["set_gdt"]: self.do_set_gdt,
            HYPERCALL_NUMBERS["update_descriptor"]: self.do_update_descriptor,
        }

    def alloc_descriptor_page(self, mfn: int) -> bool:
        """mm.c, alloc_segdesc_page: every descriptor of the frame must pass (and is fixed up)."""
        words = self.hv.memory.frame_words(mfn)
        checked: list[tuple[int, int]] = []
        for i in range(_DESCS_PER_PAGE):
            r = check_descriptor(words[2 * i], words[2 * i + 1])
            if r is None:
                return False
            checked.append(r)
        for i, (lo, hi) in enumerate(checked):
            words[2 * i], words[2 * i + 1] = lo, hi
        return True

    # --- set_gdt -------------------------------------------------------------------------
    def destroy_gdt(self, v: Vcpu) -> None:
        arch = self.pv.arch(v)
        from xenspec.refmodel.platform import gdt_virt_start

        for i, mfn in enumerate(arch.gdt_frames):
            self.pv.perdomain_set(v.domain, gdt_virt_start(v) + i * abi.PAGE_SIZE, None)
            self.hv.mm.put_page_and_type(mfn)
        arch.gdt_frames, arch.gdt_ents = [], 0

    def do_set_gdt(self, v: Vcpu, frame_list: int, entries: int) -> int:
        if entries > abi.MAX_GUEST_GDT_ENTRIES:
            return -abi.EINVAL
        nr_pages = (entries + _DESCS_PER_PAGE - 1) // _DESCS_PER_PAGE
        raw = self.hv.copy_from_guest(v, frame_list, 4 * nr_pages) if nr_pages else b""
        if raw is None:
            return -abi.EFAULT
        frames = [int.from_bytes(raw[4 * i : 4 * i + 4], "little") for i in range(nr_pages)]
        mm = self.hv.mm
        taken: list[int] = []
        for mfn in frames:
            if not mm.get_page_and_type_from_pagenr(mfn, PGT.gdt_page, v.domain):
                for t in taken:
                    mm.put_page_and_type(t)
                return -abi.EINVAL
            taken.append(mfn)
        self.destroy_gdt(v)
        from xenspec.refmodel.platform import gdt_virt_start

        for i, mfn in enumerate(frames):
            self.pv.perdomain_set(v.domain, gdt_virt_start(v) + i * abi.PAGE_SIZE, mfn)
        arch = self.pv.arch(v)
        arch.gdt_frames, arch.gdt_ents = frames, entries
        return 0

    # --- update_descriptor -------------------------------------------------------------------
    def do_update_descriptor(
        self, v: Vcpu, pa_lo: int, pa_hi: int, desc_lo: int, desc_hi: int
    ) -> int:
        pa = pa_lo | pa_hi << 32
        mfn = (pa >> abi.PAGE_SHIFT) & 0xFFFFFFFF  # x86_32 Xen: gmfn is an unsigned long
        fixed = check_descriptor(desc_lo, desc_hi)
        if pa % 8 or not self.hv.memory.mfn_valid(mfn) or fixed is None:
            return -abi.EINVAL
        mm = self.hv.mm
        if not mm.get_page(mfn, v.domain):
            return -abi.EINVAL
        rc = -abi.EINVAL
        t = PGT(self.hv.frames.type[mfn])
        want = t if t in (PGT.gdt_page, PGT.ldt_page) else PGT.writable_page
        if mm.get_page_type(mfn, want):
            lo, hi = fixed
            maddr = mfn << abi.PAGE_SHIFT | pa & (abi.PAGE_SIZE - 1)
            self.hv.memory.write(maddr, lo.to_bytes(4, "little") + hi.to_bytes(4, "little"))
            mm.put_page_type(mfn)
            rc = 0
        mm.put_page(mfn)
        return rc

    # --- faults in the GDT area ----------------------------------------------------------------
    def complete_accessed_bit(self, v: Vcpu, cr2: int, error_code: int) -> bool:
        """Complete the CPU's write of a loaded descriptor's accessed bit into this vCPU's GDT
        (Xen's mapping is writable; the model's read-only). True if that is what faulted."""
        from xenspec.refmodel.platform import gdt_virt_start

        off = cr2 - gdt_virt_start(v)
        if not 0 <= off < abi.GDT_PAGES * abi.PAGE_SIZE or not error_code & abi.PFEC_write_access:
            return False
        arch = self.pv.arch(v)
        page = off >> abi.PAGE_SHIFT
        if page >= len(arch.gdt_frames):
            return False
        maddr = (arch.gdt_frames[page] << abi.PAGE_SHIFT) + (off & 0xFF8) + 4
        hi = int.from_bytes(self.hv.memory.read(maddr, 4), "little")
        if not hi & abi._SEGMENT_P or not hi & abi._SEGMENT_S or hi & abi._SEGMENT_ACCESSED:
            return False
        self.hv.memory.write(maddr, (hi | abi._SEGMENT_ACCESSED).to_bytes(4, "little"))
        return True

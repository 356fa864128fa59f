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
descriptor it loads: Xen's GDT and shadow LDT mappings are writable by Xen, the model's are
read-only (a ring-1 guest is supervisor to the MMU), so the resulting write fault is completed
here.

The LDT is mapped lazily, as Xen 3.0 does it: MMUEXT_SET_LDT only records ldt_base/ldt_ents
(the vCPU's LDTR points at its LDT area, config.h LDT_VIRT_START, limit ents*8-1) and drops the
pages mapped so far (mm.c, invalidate_shadow_ldt, also called by new_guest_cr3 and when a
read-only mapping of an LDT frame in use goes away, put_page_from_l1e). The first descriptor
access to a page of the area faults; traps.c handle_gdt_ldt_mapping_fault calls
map_ldt_shadow_page (mm.c): the guest's L1 entry for ldt_base + offset, a general and a
PGT_ldt_page type reference (alloc_segdesc_page validates the frame), the frame mapped in the
area. If that fails the guest gets a #PF at ldt_base + offset. Departures: the model's shadow
mapping is read-only supervisor (the emulator checks no segment limits, so the page must be
safe to reach directly); a ring-1 access to the area inside the LDT limit maps the page as a
descriptor load would (Xen's segment limit would #GP it).

On every return to the guest Xen reloads DS, ES, FS and GS at CPL 0 (x86_32/entry.S,
restore_all_guest, FLT1-FLT4); a fault there goes to the failsafe callback (traps.py).
``reload_data_segments`` applies the CPU's rules of that load to the registers the guest
resumes with; the substrate calls it whenever they or a descriptor may have changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi
from xenspec.spec.desc import check_descriptor
from xenspec.spec.pagetable import PGT, pte_present

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_DESCS_PER_PAGE = abi.PAGE_SIZE // 8
_LDT_PAGES = abi.LDT_VIRT_OFFSET >> abi.PAGE_SHIFT  # 16: MAX_LDT_ENTRIES * 8 bytes
_DATA_SEGMENTS = ("ds", "es", "fs", "gs")  # in the order restore_all_guest loads them


class Desc:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.hv.mm.alloc_segdesc_page = self.alloc_descriptor_page
        self.hv.mm.invalidate_shadow_ldt = self.invalidate_shadow_ldt
        self.hv.descriptor_table_frames = self.descriptor_table_frames

    def descriptor_table_frames(self, v: Vcpu) -> list[int]:
        """The frames ``v``'s descriptor tables reference: its GDT, then its shadow LDT pages
        (each holds one general and one type reference: INV-COUNT)."""
        arch = self.pv.arch(v)
        return [*arch.gdt_frames, *(arch.shadow_ldt[p] for p in sorted(arch.shadow_ldt))]

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
        v.reload_segments = True
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
            if t in (PGT.gdt_page, PGT.ldt_page):
                for w in v.domain.vcpus:  # a loaded selector may name it: reload on return
                    w.reload_segments = True
            mm.put_page_type(mfn)
            rc = 0
        mm.put_page(mfn)
        return rc

    # --- the shadow LDT (mm.c) ---------------------------------------------------------------
    def invalidate_shadow_ldt(self, v: Vcpu) -> None:
        """mm.c, invalidate_shadow_ldt: unmap every LDT page mapped so far and drop its general
        and type reference; the TLB is flushed (perdomain_set) and the segments reloaded."""
        arch = self.pv.arch(v)
        if not arch.shadow_ldt:
            return
        from xenspec.refmodel.platform import ldt_virt_start

        for page, mfn in sorted(arch.shadow_ldt.items()):
            self.pv.perdomain_set(v.domain, ldt_virt_start(v) + (page << abi.PAGE_SHIFT), None)
            self.hv.mm.put_page_and_type(mfn)
        arch.shadow_ldt = {}
        v.reload_segments = True

    def guest_l1e(self, v: Vcpu, va: int) -> int:
        """The L1 entry mapping ``va`` in ``v``'s page tables (Xen reads linear_pg_table), or 0."""
        return self.hv.leaf(self.hv.memory, v.guest_table, va)[1]

    def map_ldt_shadow_page(self, v: Vcpu, page: int) -> bool:
        """mm.c, map_ldt_shadow_page: map page ``page`` of ``v``'s LDT area from the frame the
        guest maps at ldt_base + page * PAGE_SIZE, typed PGT_ldt_page (get_page_and_type)."""
        arch = self.pv.arch(v)
        if page in arch.shadow_ldt:
            return True
        l1e = self.guest_l1e(v, (v.ldt_base + (page << abi.PAGE_SHIFT)) & 0xFFFFFFFF)
        if not pte_present(l1e):
            return False
        mfn = self.hv.pte_pfn(l1e)
        if not self.hv.mm.get_page_and_type_from_pagenr(mfn, PGT.ldt_page, v.domain):
            return False
        from xenspec.refmodel.platform import ldt_virt_start

        self.pv.perdomain_set(v.domain, ldt_virt_start(v) + (page << abi.PAGE_SHIFT), mfn)
        arch.shadow_ldt[page] = mfn
        return True

    def gdt_ldt_fault(self, v: Vcpu, cr2: int, error_code: int, regs: CpuUserRegs) -> bool:
        """A page fault in ``v``'s GDT or LDT area that is Xen's business (traps.c,
        handle_gdt_ldt_mapping_fault): the CPU's accessed-bit write (completed); a descriptor
        read from a GDT page with no frame behind it (#GP with the selector as error code); or,
        inside the LDT limit, a descriptor read from a page not mapped yet: map_ldt_shadow_page,
        and if that fails propagate_page_fault(ldt_base + offset, error code). Xen's segment
        limits keep anything else out of the area, so a user access, or a present page, is not
        a descriptor read. False: the fault is not one of these."""
        if self.complete_accessed_bit(v, cr2, error_code):
            return True
        from xenspec.refmodel.platform import gdt_virt_start, ldt_virt_start

        if error_code & (abi.PFEC_page_present | abi.PFEC_user_mode):
            return False
        gdt_off = cr2 - gdt_virt_start(v)
        if 0 <= gdt_off < abi.GDT_PAGES * abi.PAGE_SIZE:
            self.pv.traps.general_protection(v, gdt_off & 0xFFF8, regs)
            return True
        off = cr2 - ldt_virt_start(v)
        if not 0 <= off < v.ldt_ents * abi.LDT_ENTRY_SIZE:
            return False
        if not self.map_ldt_shadow_page(v, off >> abi.PAGE_SHIFT):
            addr = (v.ldt_base + off) & 0xFFFFFFFF
            self.pv.traps.propagate_page_fault(v, addr, error_code, regs)
        return True

    # --- the segment reload of Xen's return path -----------------------------------------------
    def descriptor_maddr(self, v: Vcpu, sel: int) -> int | None:
        """The machine address of the descriptor ``sel`` names, as the CPU reaches it at CPL 0:
        None where it faults (beyond the LDT limit, an LDT page that cannot be mapped, a GDT
        page with no frame: Xen's #GP or #PF there, in Xen's own reload, means failsafe)."""
        arch = self.pv.arch(v)
        index = sel & 0xFFF8
        page = index >> abi.PAGE_SHIFT
        if sel & 4:
            beyond = index + 7 >= v.ldt_ents * abi.LDT_ENTRY_SIZE
            if beyond or not self.map_ldt_shadow_page(v, page):
                return None
            mfn = arch.shadow_ldt[page]
        elif page < len(arch.gdt_frames):
            mfn = arch.gdt_frames[page]
        elif page == abi.FIRST_RESERVED_GDT_PAGE:
            mfn = self.pv.reserved_gdt_mfn
        else:
            return None
        return (mfn << abi.PAGE_SHIFT) + (index & (abi.PAGE_SIZE - 1))

    def _set_accessed(self, maddr: int) -> int:
        """The CPU's accessed-bit write of a descriptor it loads; the high word."""
        hi = int.from_bytes(self.hv.memory.read(maddr + 4, 4), "little")
        if hi & abi._SEGMENT_P and hi & abi._SEGMENT_S and not hi & abi._SEGMENT_ACCESSED:
            hi |= abi._SEGMENT_ACCESSED
            self.hv.memory.write(maddr + 4, hi.to_bytes(4, "little"))
        return hi

    def load_data_segment(self, v: Vcpu, sel: int) -> int | None:
        """A data-segment load at CPL 0 (Intel SDM, MOV to DS/ES/FS/GS; QEMU helper_load_seg):
        the descriptor's high word (0 for a null selector), or None if the load faults: not a
        code/data descriptor, execute-only code, DPL below RPL (not conforming code), not
        present."""
        if not sel & 0xFFFC:
            return 0
        maddr = self.descriptor_maddr(v, sel)
        if maddr is None:
            return None
        hi = int.from_bytes(self.hv.memory.read(maddr + 4, 4), "little")
        code = bool(hi & abi._SEGMENT_CODE)
        if not hi & abi._SEGMENT_S or (code and not hi & abi._SEGMENT_WR):
            return None
        conforming = code and bool(hi & abi._SEGMENT_EC)
        if not conforming and (hi & abi._SEGMENT_DPL) >> 13 < sel & 3:
            return None
        if not hi & abi._SEGMENT_P:
            return None
        return self._set_accessed(maddr)

    def reload_data_segments(self, v: Vcpu, regs: CpuUserRegs) -> None:
        """x86_32/entry.S, restore_all_guest: DS, ES, FS, GS are loaded at CPL 0; a faulting
        load goes to the failsafe callback. Xen's iret to the guest ring then nulls those whose
        DPL is below it: the substrate's iret does that itself (a selector a ring may not hold
        is never loaded at that ring otherwise), and if that iret faults the failsafe frame
        holds the selectors as they were. For an iret that changes CS or SS, their LDT pages
        are mapped and accessed bits set first (the CPU does both; the model's mappings are
        read-only); the CPU checks the rest."""
        for name in _DATA_SEGMENTS:
            sel = getattr(regs, name) & 0xFFFF
            if self.load_data_segment(v, sel) is None:
                self.pv.traps.failsafe_callback(v, regs, f"loading %{name} with {sel:#x}")
                return
        for sel in (regs.cs, regs.ss):
            if sel & 0xFFFC:
                maddr = self.descriptor_maddr(v, sel & 0xFFFF)
                if maddr is not None:
                    self._set_accessed(maddr)

    # --- faults in the GDT and LDT areas -------------------------------------------------------
    def complete_accessed_bit(self, v: Vcpu, cr2: int, error_code: int) -> bool:
        """Complete the CPU's write of a loaded descriptor's accessed bit into this vCPU's GDT
        or shadow LDT (Xen's mappings are writable; the model's read-only). True if that is
        what faulted."""
        from xenspec.refmodel.platform import gdt_virt_start, ldt_virt_start

        if not error_code & abi.PFEC_write_access:
            return False
        arch = self.pv.arch(v)
        off = cr2 - gdt_virt_start(v)
        ldt_off = cr2 - ldt_virt_start(v)
        if 0 <= off < abi.GDT_PAGES * abi.PAGE_SIZE:
            page = off >> abi.PAGE_SHIFT
            if page >= len(arch.gdt_frames):
                return False
            mfn = arch.gdt_frames[page]
        elif 0 <= ldt_off < _LDT_PAGES * abi.PAGE_SIZE:
            off = ldt_off
            mfn = arch.shadow_ldt.get(off >> abi.PAGE_SHIFT, 0)
            if not mfn:
                return False
        else:
            return False
        maddr = (mfn << abi.PAGE_SHIFT) + (off & 0xFF8)
        hi = int.from_bytes(self.hv.memory.read(maddr + 4, 4), "little")
        if not hi & abi._SEGMENT_P or not hi & abi._SEGMENT_S or hi & abi._SEGMENT_ACCESSED:
            return False
        self._set_accessed(maddr)
        return True

"""The paravirtual MMU of the compat-pae profile: a 32-bit PAE guest on 64-bit Xen 4.x.

This models xen/arch/x86/mm.c of Xen RELEASE-4.19.0 for a 32-bit PV domain
(``is_pv_32bit_domain``): page types L1, L2 and L3 with 64-bit entries (spec/pagetable_pae.py
has the entry format and the flag masks), the validation of each level on its first type
reference (``promote_l1_table`` .. ``promote_l3_table``) and its undoing
(``demote_l1_table`` .. ``demote_l3_table``), the single-entry updates (``mod_l1_entry`` ..
``mod_l3_entry``) and the hypercalls mmu_update, mmuext_op and update_va_mapping with Xen
4.19's error codes. Function names are Xen's; the level functions return 0 or a negative
errno as Xen's do.

The rules that keep a 32-bit domain out of the hypervisor's part of its address space:

* L3 slot 3 must name an L2, which takes the type ``PGT_l2_page_table | PGT_pae_xen_l2``; that
  L2 may not be named by any other table (``pae_xen_mappings_check``: its type count must be
  1), its slots from ``COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT`` on are Xen's and filled by Xen
  (``init_xen_pae_l2_slots``: the read-only compat M2P at 0xF5800000), and a guest cannot
  change them (``mod_l2_entry``, -EPERM) nor L3 slot 3 itself (``mod_l3_entry``, -EINVAL).
* An L3 of a 32-bit domain cannot map an L3 (no linear L3, XSA-185); only read-only linear
  L2s are allowed, and a table with linear entries cannot itself be mapped linearly, nor the
  other way round (``inc_linear_entries``/``inc_linear_uses``, XSA-240).
* Entries 4 to 511 of an L3 are cleared when it is validated (``promote_l3_table``).

Departures, each because the model is not a 64-bit hypervisor:

* Xen keeps a per-vCPU L4 whose slot 0 names the guest's L3 (``new_guest_cr3`` does a
  ``mod_l4_entry``); the model keeps the L3 itself as the vCPU's base (``guest_table``), with
  the same references (one type and one general reference on the L3).
* No preemption inside a table's validation (``-ERESTART`` and partial validation): a table
  is validated or refused in one step, as in the 2-level model; the batch is preempted
  between entries.
* ``adjust_guest_l3e`` (RW, USER and ACCESSED added to a present L3 entry) is not applied to
  the stored entry: the model's walks ignore an L3 entry's permission bits, as Xen's compat
  mode does once the bits are forced on.
* Not modelled: grant-table PTEs (``_PAGE_GNTTAB`` is refused as a disallowed flag), I/O
  memory (no domain has iomem permission: a frame beyond RAM is -EPERM, as Xen answers a
  non-privileged MMIO mapping), MMU_PT_UPDATE_PRESERVE_AD and MMU_PT_UPDATE_NO_TRANSLATE,
  MMUEXT_CLEAR_PAGE and MMUEXT_COPY_PAGE (both -ENOSYS here), L1TF checks on non-present
  entries (the model's entries are never used by a speculating CPU).
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.memory import PGT_count_mask, PGT_pae_xen_l2, PGT_pinned, PGT_validated
from xenspec.refmodel.mm import MMCore
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    COMPAT_HYPERVISOR_VIRT_START,
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    COMPAT_L3_XEN_SLOT,
    EOPNOTSUPP,
    MMUEXT_FLUSH_CACHE_GLOBAL,
    MMUEXT_MARK_SUPER,
    MMUEXT_UNMARK_SUPER,
    PAE_L1_PAGETABLE_ENTRIES,
    PAE_L2_PAGETABLE_ENTRIES,
    PAE_L3_PAGETABLE_ENTRIES,
)
from xenspec.spec.pagetable import PGT
from xenspec.spec.pagetable_pae import (
    entry_has_changed,
    is_guest_l2_slot,
    l1e_disallowed,
    l2e_disallowed,
    l3e_disallowed,
    pte_get_pfn,
    pte_present,
    table_offsets,
)

if TYPE_CHECKING:
    from xenspec.refmodel.hypervisor import Hypervisor

# The slots of a PAE table a frame holds: 512 eight-byte entries at every level (a 32-bit
# domain's L3 is a whole page, of which the CPU uses the first four).
_ENTRIES: Final = PAE_L1_PAGETABLE_ENTRIES
_PGT: tuple[PGT, ...] = tuple(sorted(PGT))
# mm.c do_mmu_update: the command is in the low bits of ptr (sizeof(l1_pgentry_t) - 1).
_PTR_CMD_MASK: Final = 7
# mm.c get_page_from_l1e: a frame number of all ones is INVALID_MFN (-EINVAL, not -EPERM).
_INVALID_MFN: Final = (1 << (52 - abi.PAGE_SHIFT)) - 1


def _core(handler: Callable[[MMCore, Vcpu, int, int], bool]
          ) -> Callable[[MMPae, Vcpu, int, int], int]:
    """A command MMCore implements whose only failure is -EINVAL, refused when the batch
    names a foreign domain (do_mmuext_op: ``currd != pg_owner``, -EPERM)."""
    @functools.wraps(handler)
    def run(self: MMPae, v: Vcpu, arg1: int, arg2: int) -> int:
        if self._foreign_owner(v):
            return -abi.EPERM
        return 0 if handler(self, v, arg1, arg2) else -abi.EINVAL
    return run


class MMPae(MMCore):
    """The compat-pae MMU of the reference hypervisor; one per hypervisor of that profile."""

    RELINQUISH_TYPES: ClassVar[tuple[PGT, ...]] = (PGT.l3_page_table, PGT.l2_page_table)

    def __init__(self, hv: Hypervisor) -> None:
        super().__init__(hv)
        # page_info.linear_pt_count: > 0, the table has that many linear entries; < 0, it is
        # mapped linearly that many times (mm.c inc_linear_entries / inc_linear_uses).
        self.linear_pt_count = array("i", [0]) * self.memory.nr_frames

    # ----------------------------------------------------------------------------------------
    # Type references (mm.c _get_page_type, _put_page_type via MMCore.put_page_type).
    # ----------------------------------------------------------------------------------------
    def get_page_type(self, mfn: int, type: PGT) -> bool:
        return self._get_page_type(mfn, type) == 0

    def _get_page_type(self, mfn: int, type: PGT, pae_xen_l2: bool = False) -> int:
        """Take a type reference of ``type`` (with PGT_pae_xen_l2 when ``pae_xen_l2``); the
        first one on a page-table type validates the frame. 0 or Xen's negative errno."""
        frames = self.frames
        want = PGT_pae_xen_l2 if pae_xen_l2 else 0
        tc = frames.type_count[mfn]
        if tc >= PGT_count_mask:
            return -abi.EINVAL  # "Type count overflow"
        same = frames.type[mfn] == type and frames.flags[mfn] & PGT_pae_xen_l2 == want
        if tc == 0 and not same:
            self.type_change_flush(mfn)
            frames.type[mfn] = type
            frames.flags[mfn] = frames.flags[mfn] & ~(PGT_validated | PGT_pae_xen_l2) | want
            if type == PGT.writable_page:
                frames.flags[mfn] |= PGT_validated
        elif not same:
            return -abi.EINVAL  # "Bad type"
        frames.type_count[mfn] = tc + 1
        if not frames.flags[mfn] & PGT_validated:
            rc = self.validate_page(mfn, type)
            if rc:
                frames.type[mfn] = PGT.none
                frames.type_count[mfn] = 0
                frames.flags[mfn] &= ~PGT_pae_xen_l2
                return rc
            frames.flags[mfn] |= PGT_validated
        return 0

    def get_page_and_type_from_mfn(self, mfn: int, type: PGT, d: Domain,
                                   pae_xen_l2: bool = False) -> int:
        """mm.c get_page_and_type_from_mfn: -EINVAL without a general reference."""
        if not self.get_page_from_pagenr(mfn, d):
            return -abi.EINVAL
        rc = self._get_page_type(mfn, type, pae_xen_l2)
        if rc:
            self.put_page(mfn)
        return rc

    def validate_page(self, mfn: int, type: PGT) -> int:
        """mm.c validate_page: the promote function of the frame's level."""
        d = self.hv.domains.get(self.frames.owner[mfn])
        if d is None:
            return -abi.EINVAL
        if type == PGT.l1_page_table:
            return self.promote_l1_table(mfn, d)
        if type == PGT.l2_page_table:
            return self.promote_l2_table(mfn, d)
        if type == PGT.l3_page_table:
            return self.promote_l3_table(mfn, d)
        if type in (PGT.gdt_page, PGT.ldt_page) and self.alloc_segdesc_page is not None:
            return 0 if self.alloc_segdesc_page(mfn) else -abi.EINVAL
        return -abi.EINVAL

    def free_page_type(self, mfn: int, type: PGT) -> None:
        """mm.c devalidate_page: the demote function of the frame's level."""
        if type == PGT.l1_page_table:
            self.demote_l1_table(mfn)
        elif type == PGT.l2_page_table:
            self.demote_l2_table(mfn)
        elif type == PGT.l3_page_table:
            self.demote_l3_table(mfn)
        self.type_change_flush(mfn)

    # ----------------------------------------------------------------------------------------
    # Entries (mm.c get_page_from_l1e .. l3e, put_page_from_l1e .. l3e).
    # ----------------------------------------------------------------------------------------
    def get_page_from_l1e(self, l1e: int, d: Domain) -> int:
        """A present L1 entry references a frame ``d`` owns; RW takes a writable type ref."""
        if l1e_disallowed(l1e):
            return -abi.EINVAL  # "Bad L1 flags"
        mfn = pte_get_pfn(l1e)
        if not self.memory.mfn_valid(mfn):
            # I/O memory: no domain of the model has iomem permission.
            return -abi.EINVAL if mfn == _INVALID_MFN else -abi.EPERM
        if not self.get_page(mfn, d):
            return -abi.EBUSY  # could_not_pin: not d's, or not in use
        if l1e & abi._PAGE_RW and not self.get_page_type(mfn, PGT.writable_page):
            self.put_page(mfn)
            return -abi.EBUSY  # "Could not get page type PGT_writable_page"
        return 0

    def put_page_from_l1e(self, l1e: int) -> None:
        if pte_present(l1e):
            self.put_l1e_reference(pte_get_pfn(l1e), bool(l1e & abi._PAGE_RW))

    def get_page_from_l2e(self, l2e: int, l2mfn: int, d: Domain) -> int:
        """A present L2 entry names an L1 table, or is a read-only linear map of an L2."""
        if l2e_disallowed(l2e):
            return -abi.EINVAL  # "Bad L2 flags" (PSE among them: no superpages for PV)
        rc = self.get_page_and_type_from_mfn(pte_get_pfn(l2e), PGT.l1_page_table, d)
        if rc == -abi.EINVAL and self.get_l2_linear_pagetable(l2e, l2mfn, d):
            rc = 0
        return rc

    def get_l2_linear_pagetable(self, l2e: int, l2mfn: int, d: Domain) -> bool:
        """mm.c define_get_linear_pagetable(l2): a read-only map of this L2 (no reference) or
        of another validated L2 that has no linear entries, from an L2 not itself mapped
        linearly (XSA-240)."""
        if l2e & abi._PAGE_RW:
            return False  # "Attempt to create linear p.t. with write perms"
        mfn = pte_get_pfn(l2e)
        if mfn == l2mfn:
            return True
        frames = self.frames
        if frames.owner[l2mfn] != d.domain_id or not self.get_page_from_pagenr(mfn, d):
            return False
        if self.linear_pt_count[l2mfn] < 0 or self.linear_pt_count[mfn] > 0:
            self.put_page(mfn)
            return False
        if (frames.type_count[mfn] >= PGT_count_mask or frames.type[mfn] != PGT.l2_page_table
                or not frames.flags[mfn] & PGT_validated):
            self.put_page(mfn)
            return False
        self.linear_pt_count[l2mfn] += 1
        self.linear_pt_count[mfn] -= 1
        frames.type_count[mfn] += 1
        return True

    def put_page_from_l2e(self, l2e: int, l2mfn: int) -> None:
        """mm.c put_page_from_l2e / put_pt_page: a linear entry (an L2 naming an L2) gives
        back its linear counts (_put_page_type with ptpg)."""
        if not pte_present(l2e):
            return
        mfn = pte_get_pfn(l2e)
        if mfn == l2mfn:
            return
        if self.frames.type[mfn] == PGT.l2_page_table:
            self.linear_pt_count[mfn] += 1
            self.linear_pt_count[l2mfn] -= 1
        self.put_page_and_type(mfn)

    def get_page_from_l3e(self, l3e: int, d: Domain) -> int:
        """A present L3 entry names an L2 (no linear L3 for a 32-bit domain: XSA-185)."""
        if l3e_disallowed(l3e):
            return -abi.EINVAL  # "Bad L3 flags"
        return self.get_page_and_type_from_mfn(pte_get_pfn(l3e), PGT.l2_page_table, d)

    def put_page_from_l3e(self, l3e: int, l3mfn: int) -> None:
        if pte_present(l3e) and pte_get_pfn(l3e) != l3mfn:
            self.put_page_and_type(pte_get_pfn(l3e))

    # ----------------------------------------------------------------------------------------
    # Whole tables (mm.c promote_l?_table, demote_l?_table).
    # ----------------------------------------------------------------------------------------
    def promote_l1_table(self, mfn: int, d: Domain) -> int:
        entries = self.memory.frame_qwords(mfn)
        for i in range(_ENTRIES):
            if pte_present(entries[i]):
                rc = self.get_page_from_l1e(entries[i], d)
                if rc:
                    for j in range(i):
                        self.put_page_from_l1e(entries[j])
                    return rc
        return 0

    def promote_l2_table(self, mfn: int, d: Domain) -> int:
        entries = self.memory.frame_qwords(mfn)
        xen_l2 = bool(self.frames.flags[mfn] & PGT_pae_xen_l2)
        for i in range(PAE_L2_PAGETABLE_ENTRIES):
            if is_guest_l2_slot(xen_l2, i) and pte_present(entries[i]):
                rc = self.get_page_from_l2e(entries[i], mfn, d)
                if rc:
                    for j in range(i):
                        self.put_page_from_l2e(entries[j], mfn)
                    return rc
        if xen_l2:
            self.init_xen_pae_l2_slots(mfn, d)
        return 0

    def init_xen_pae_l2_slots(self, l2mfn: int, d: Domain) -> None:
        """mm.c init_xen_pae_l2_slots: Xen's slots of the L2 that L3 slot 3 names, copied
        from the compat idle table (the read-only compat M2P; Hypervisor.xen_pae_l2_slots)."""
        for k, e in enumerate(self.hv.xen_pae_l2_slots(d)):
            self.memory.write_entry64(l2mfn, COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT + k, e)

    def promote_l3_table(self, mfn: int, d: Domain) -> int:
        """Entries 4..511 are cleared; slot 3 must name an L2 that takes PGT_pae_xen_l2 and
        that no other table names; slots 0..2 name L2s or nothing."""
        first_unused = (mfn << abi.PAGE_SHIFT) + PAE_L3_PAGETABLE_ENTRIES * 8
        self.memory.write(first_unused, bytes(abi.PAGE_SIZE - PAE_L3_PAGETABLE_ENTRIES * 8))
        entries = self.memory.frame_qwords(mfn)
        for i in range(PAE_L3_PAGETABLE_ENTRIES):
            e = entries[i]
            if i == COMPAT_L3_XEN_SLOT:
                rc = self._get_l3_xen_slot(e, d)
            elif pte_present(e):
                rc = self.get_page_from_l3e(e, d)
            else:
                continue
            if rc:
                for j in range(i):
                    self.put_page_from_l3e(entries[j], mfn)
                return rc
        return 0

    def _get_l3_xen_slot(self, l3e: int, d: Domain) -> int:
        """promote_l3_table's slot 3 and pae_xen_mappings_check."""
        if not pte_present(l3e) or l3e_disallowed(l3e):
            return -abi.EINVAL
        l2mfn = pte_get_pfn(l3e)
        rc = self.get_page_and_type_from_mfn(l2mfn, PGT.l2_page_table, d, pae_xen_l2=True)
        if rc:
            return rc
        if self.frames.type_count[l2mfn] != 1:
            self.put_page_and_type(l2mfn)  # "PAE L3 3rd slot is shared"
            return -abi.EINVAL
        return 0

    def demote_l1_table(self, mfn: int) -> None:
        for e in self.memory.frame_qwords(mfn):
            if e:
                self.put_page_from_l1e(e)

    def demote_l2_table(self, mfn: int) -> None:
        entries = self.memory.frame_qwords(mfn)
        xen_l2 = bool(self.frames.flags[mfn] & PGT_pae_xen_l2)
        for i in range(PAE_L2_PAGETABLE_ENTRIES):
            if is_guest_l2_slot(xen_l2, i) and entries[i]:
                self.put_page_from_l2e(entries[i], mfn)
        self.frames.flags[mfn] &= ~PGT_pae_xen_l2

    def demote_l3_table(self, mfn: int) -> None:
        entries = self.memory.frame_qwords(mfn)
        for i in range(PAE_L3_PAGETABLE_ENTRIES):
            self.put_page_from_l3e(entries[i], mfn)

    # ----------------------------------------------------------------------------------------
    # Single-entry updates (mm.c mod_l1_entry .. mod_l3_entry).
    # ----------------------------------------------------------------------------------------
    def _mod_entry(self, mfn: int, index: int, new: int, disallowed: Callable[[int], bool],
                   get: Callable[[int], int], put: Callable[[int], None]) -> int:
        """What mod_l1_entry .. mod_l3_entry share: a present new entry with a refused flag
        is -EINVAL; one that changes only whitelisted bits is written as it is (the fast
        path); otherwise it takes its references first; the old entry's go after the write."""
        old = self.memory.read_entry64(mfn, index)
        if pte_present(new):
            if disallowed(new):
                return -abi.EINVAL
            if not entry_has_changed(old, new):
                self.memory.write_entry64(mfn, index, new)
                return 0
            rc = get(new)
            if rc:
                return rc
        self.memory.write_entry64(mfn, index, new)
        put(old)
        return 0

    def mod_l1_entry(self, l1mfn: int, index: int, nl1e: int, d: Domain) -> int:
        """Replace entry ``index`` of L1 ``l1mfn``; new references are taken in ``d``."""
        return self._mod_entry(l1mfn, index, nl1e, l1e_disallowed,
                               lambda e: self.get_page_from_l1e(e, d), self.put_page_from_l1e)

    def mod_l2_entry(self, l2mfn: int, index: int, nl2e: int, d: Domain) -> int:
        if not is_guest_l2_slot(bool(self.frames.flags[l2mfn] & PGT_pae_xen_l2), index):
            return -abi.EPERM  # "L2 update in Xen-private area"
        return self._mod_entry(l2mfn, index, nl2e, l2e_disallowed,
                               lambda e: self.get_page_from_l2e(e, l2mfn, d),
                               lambda e: self.put_page_from_l2e(e, l2mfn))

    def mod_l3_entry(self, l3mfn: int, index: int, nl3e: int, d: Domain) -> int:
        """Slot 3 (Xen's L2) and above cannot be updated by a 32-bit domain."""
        if index >= COMPAT_L3_XEN_SLOT:
            return -abi.EINVAL
        return self._mod_entry(l3mfn, index, nl3e, l3e_disallowed,
                               lambda e: self.get_page_from_l3e(e, d),
                               lambda e: self.put_page_from_l3e(e, l3mfn))

    # ----------------------------------------------------------------------------------------
    # mmu_update (mm.c do_mmu_update, 4.19).
    # ----------------------------------------------------------------------------------------
    def mmu_update_one(self, d: Domain, buf: bytes) -> int:
        ptr, val = abi.MMU_UPDATE_T.unpack(buf)
        cmd = ptr & _PTR_CMD_MASK
        if cmd == abi.MMU_NORMAL_PT_UPDATE:
            return self.normal_pt_update(d, ptr >> abi.PAGE_SHIFT,
                                         (ptr & (abi.PAGE_SIZE - 1)) >> 3, val)
        if cmd == abi.MMU_MACHPHYS_UPDATE:
            return self.machphys_update(ptr >> abi.PAGE_SHIFT, val, d)
        return -abi.ENOSYS

    def normal_pt_update(self, d: Domain, mfn: int, index: int, val: int) -> int:
        """MMU_NORMAL_PT_UPDATE: with a general reference on a frame ``d`` owns, a validated
        frame in use (page_lock) is updated as its type says, any other as plain data."""
        if not self.get_page_from_pagenr(mfn, d):
            return -abi.EINVAL  # "Could not get page for normal update"
        frames = self.frames
        pg_owner = self.foreigndom(d)
        rc = -abi.EINVAL
        if frames.flags[mfn] & PGT_validated and frames.type_count[mfn]:
            type = _PGT[frames.type[mfn]]
            if type == PGT.l1_page_table:
                rc = self.mod_l1_entry(mfn, index, val, pg_owner)
            elif type in (PGT.l2_page_table, PGT.l3_page_table) and pg_owner is d:
                mod = self.mod_l2_entry if type == PGT.l2_page_table else self.mod_l3_entry
                rc = mod(mfn, index, val, d)
                if rc == 0:  # flush_linear_pt: every TLB of the domain's vCPUs
                    for w in d.vcpus:
                        w.flush_tlb()
            elif type == PGT.writable_page:
                self.memory.write_entry64(mfn, index, val)
                rc = 0
        elif self.get_page_type(mfn, PGT.writable_page):
            self.memory.write_entry64(mfn, index, val)
            self.put_page_type(mfn)
            rc = 0
        self.put_page(mfn)
        return rc

    def machphys_update(self, mfn: int, gpfn: int, d: Domain) -> int:
        """MMU_MACHPHYS_UPDATE: M2P[mfn] = gpfn, for a frame the foreign domain owns."""
        if not self.get_page_from_pagenr(mfn, self.foreigndom(d)):
            return -abi.EINVAL  # "Could not get page for mach->phys update"
        self.hv.set_gpfn_from_mfn(mfn, gpfn)
        self.put_page(mfn)
        return 0

    # ----------------------------------------------------------------------------------------
    # mmuext_op (mm.c do_mmuext_op, 4.19): handlers return 0 or a negative errno.
    # ----------------------------------------------------------------------------------------
    def mmuext_op_one(self, v: Vcpu, cmd: int, arg1: int, arg2: int) -> int:
        handler = self._pae_mmuext_handlers.get(cmd)
        if handler is None:
            return -abi.ENOSYS
        return handler(self, v, arg1, arg2)

    def _foreign_owner(self, v: Vcpu) -> bool:
        """The batch names a foreign domain: the commands that act on the caller refuse it
        (``currd != pg_owner``, -EPERM)."""
        return self.foreign is not None and self.foreign is not v.domain

    def pin_page(self, v: Vcpu, mfn: int, type: PGT) -> bool:
        return self.pin_table(v, mfn, type) == 0

    def pin_table(self, v: Vcpu, mfn: int, type: PGT) -> int:
        """do_mmuext_op's pin_page: a type reference (validating) and the pin."""
        rc = self.get_page_and_type_from_mfn(mfn, type, self.foreigndom(v.domain))
        if rc:
            return rc
        if self.frames.flags[mfn] & PGT_pinned:
            self.put_page_and_type(mfn)  # "already pinned"
            return -abi.EINVAL
        self.frames.flags[mfn] |= PGT_pinned
        return 0

    def mmuext_pin_l1_table(self, v: Vcpu, mfn: int, _arg2: int) -> int:
        return self.pin_table(v, mfn, PGT.l1_page_table)

    def mmuext_pin_l2_table(self, v: Vcpu, mfn: int, _arg2: int) -> int:
        return self.pin_table(v, mfn, PGT.l2_page_table)

    def mmuext_pin_l3_table(self, v: Vcpu, mfn: int, _arg2: int) -> int:
        return self.pin_table(v, mfn, PGT.l3_page_table)

    def mmuext_pin_l4_table(self, _v: Vcpu, _mfn: int, _arg2: int) -> int:
        """PIN_L4_TABLE from a 32-bit domain does nothing and succeeds ("break", rc 0)."""
        return 0

    def mmuext_unpin_table_pae(self, v: Vcpu, mfn: int, _arg2: int) -> int:
        """UNPIN_TABLE of a frame the batch's owner (the foreign domain, if named) owns."""
        d = self.foreigndom(v.domain)
        if not self.get_page_from_pagenr(mfn, d):
            return -abi.EINVAL
        if not self.frames.flags[mfn] & PGT_pinned:
            self.put_page(mfn)  # "mfn not pinned"
            return -abi.EINVAL
        self.frames.flags[mfn] &= ~PGT_pinned
        self.put_page_and_type(mfn)
        self.put_page(mfn)
        return 0

    def mmuext_new_baseptr(self, v: Vcpu, mfn: int, _arg2: int) -> int:
        if self._foreign_owner(v):
            return -abi.EPERM
        return self.new_guest_cr3_pae(v, mfn)

    def mmuext_tlb_flush_local_pae(self, v: Vcpu, _arg1: int, _arg2: int) -> int:
        """TLB_FLUSH_LOCAL flushes at once (4.19 flush_tlb_local), not at the batch's end."""
        if self._foreign_owner(v):
            return -abi.EPERM
        v.flush_tlb()
        return 0

    def new_guest_cr3(self, v: Vcpu, mfn: int) -> bool:
        return self.new_guest_cr3_pae(v, mfn) == 0

    def new_guest_cr3_pae(self, v: Vcpu, mfn: int) -> int:
        """mm.c new_guest_cr3 for a 32-bit domain: slot 0 of the vCPU's L4 takes the L3
        (mod_l4_entry: an unchanged entry takes the fast path, no new reference); the old L3
        loses its references; the LDT is destroyed and the TLB flushed."""
        old = v.guest_table
        if mfn != old or not old:  # a new entry, or one naming frame 0 (never a table)
            rc = self.get_page_and_type_from_mfn(mfn, PGT.l3_page_table, v.domain)
            if rc:
                return rc
            v.guest_table = mfn
            if old:
                self.put_page_and_type(old)
        self.invalidate_shadow_ldt(v)
        v.flush_tlb()
        return 0

    def mmuext_flush_cache_pae(self, _v: Vcpu, _arg1: int, _arg2: int) -> int:
        """FLUSH_CACHE needs cache_flush_permitted (physical-device access): -EACCES."""
        return -abi.EPERM if self._foreign_owner(_v) else -abi.EACCES

    def mmuext_new_user_baseptr(self, v: Vcpu, _arg1: int, _arg2: int) -> int:
        """NEW_USER_BASEPTR is for 64-bit guests: -EINVAL from a 32-bit one."""
        return -abi.EPERM if self._foreign_owner(v) else -abi.EINVAL

    def mmuext_set_ldt_pae(self, v: Vcpu, ptr: int, ents: int) -> int:
        """SET_LDT (4.19): with no entries the base is not checked; otherwise it must be
        page-aligned (a 32-bit base always passes 64-bit Xen's __addr_ok, the hole
        included: the LDT's pages are mapped from the guest's own L1 entries, on a fault)."""
        if self._foreign_owner(v):
            return -abi.EPERM
        if ents == 0:
            ptr = 0
        elif ents > abi.MAX_LDT_ENTRIES or ptr & (abi.PAGE_SIZE - 1):
            return -abi.EINVAL
        if (v.ldt_base, v.ldt_ents) != (ptr, ents):
            self.invalidate_shadow_ldt(v)
            v.ldt_base, v.ldt_ents = ptr, ents
            v.reload_segments = True
        return 0

    def mmuext_flush_cache_global(self, v: Vcpu, _arg1: int, _arg2: int) -> int:
        """FLUSH_CACHE_GLOBAL (4.19) without cache_flush_permitted: -EINVAL."""
        return -abi.EPERM if self._foreign_owner(v) else -abi.EINVAL

    def mmuext_unsupported(self, _v: Vcpu, _arg1: int, _arg2: int) -> int:
        """MARK_SUPER / UNMARK_SUPER: superpage tracking is gone from Xen (-EOPNOTSUPP)."""
        return -EOPNOTSUPP

    _pae_mmuext_handlers: ClassVar[dict[int, Callable[[MMPae, Vcpu, int, int], int]]] = {
        abi.MMUEXT_PIN_L1_TABLE: mmuext_pin_l1_table,
        abi.MMUEXT_PIN_L2_TABLE: mmuext_pin_l2_table,
        abi.MMUEXT_PIN_L3_TABLE: mmuext_pin_l3_table,
        abi.MMUEXT_PIN_L4_TABLE: mmuext_pin_l4_table,
        abi.MMUEXT_UNPIN_TABLE: mmuext_unpin_table_pae,
        abi.MMUEXT_NEW_BASEPTR: mmuext_new_baseptr,
        abi.MMUEXT_TLB_FLUSH_LOCAL: mmuext_tlb_flush_local_pae,
        abi.MMUEXT_INVLPG_LOCAL: _core(MMCore.mmuext_invlpg_local),
        abi.MMUEXT_TLB_FLUSH_MULTI: _core(MMCore.mmuext_flush_multi),
        abi.MMUEXT_INVLPG_MULTI: _core(MMCore.mmuext_invlpg_multi),
        abi.MMUEXT_TLB_FLUSH_ALL: _core(MMCore.mmuext_tlb_flush_all),
        abi.MMUEXT_INVLPG_ALL: _core(MMCore.mmuext_invlpg_all),
        abi.MMUEXT_FLUSH_CACHE: mmuext_flush_cache_pae,
        abi.MMUEXT_SET_LDT: mmuext_set_ldt_pae,
        abi.MMUEXT_NEW_USER_BASEPTR: mmuext_new_user_baseptr,
        MMUEXT_FLUSH_CACHE_GLOBAL: mmuext_flush_cache_global,
        MMUEXT_MARK_SUPER: mmuext_unsupported,
        MMUEXT_UNMARK_SUPER: mmuext_unsupported,
    }

    # ----------------------------------------------------------------------------------------
    # update_va_mapping (mm.c __do_update_va_mapping, pv/mm.c map_guest_l1e).
    # ----------------------------------------------------------------------------------------
    def do_update_va_mapping(self, v: Vcpu, va: int, val: int, val_hi: int, flags: int) -> int:
        """Hypercall 14: set the L1 entry that maps ``va`` (the 64-bit entry comes in two
        registers, low word first), then flush as ``flags`` asks; 4.19 skips the flush when
        the update failed."""
        l1mfn = self.guest_map_l1e(v, va)
        if l1mfn is None or not self.get_page_from_pagenr(l1mfn, v.domain):
            return -abi.EINVAL
        frames = self.frames
        rc = -abi.EINVAL
        if (frames.flags[l1mfn] & PGT_validated and frames.type_count[l1mfn]
                and frames.type[l1mfn] == PGT.l1_page_table):
            index = table_offsets(va)[2]
            rc = self.mod_l1_entry(l1mfn, index, val_hi << 32 | val, v.domain)
        self.put_page(l1mfn)
        if rc:
            return rc
        return self._uvmf_flush(v, va, flags)

    def _uvmf_flush(self, v: Vcpu, va: int, flags: int) -> int:
        flush = flags & abi.UVMF_FLUSHTYPE_MASK
        if flush not in (abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG):
            return 0
        targets = self._uvmf_targets(v, flags & ~abi.UVMF_FLUSHTYPE_MASK)
        if targets is None:
            return -abi.EFAULT
        for w in targets:
            if flush == abi.UVMF_TLB_FLUSH:
                w.flush_tlb()
            else:
                w.flush_tlb_one(va)
        return 0

    def guest_map_l1e(self, v: Vcpu, va: int) -> int | None:
        """pv/mm.c map_guest_l1e: the frame the L2 entry for ``va`` names, found through the
        current page tables (present, not a superpage), or None."""
        if not v.guest_table or not 0 <= va < COMPAT_HYPERVISOR_VIRT_START:
            return None
        l3, l2, _ = table_offsets(va)
        l3e = self.memory.read_entry64(v.guest_table, l3)
        l2mfn = pte_get_pfn(l3e)
        if not pte_present(l3e) or not self.memory.mfn_valid(l2mfn):
            return None
        l2e = self.memory.read_entry64(l2mfn, l2)
        if l2e & (abi._PAGE_PRESENT | abi._PAGE_PSE) != abi._PAGE_PRESENT:
            return None
        l1mfn = pte_get_pfn(l2e)
        return int(l1mfn) if self.memory.mfn_valid(l1mfn) else None

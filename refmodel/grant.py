"""Grant tables: ``grant_table_op`` (20), how one domain lets another map or copy its frames.

Rules from Xen 3.0.4 xen/common/grant_table.c (do_grant_table_op, __gnttab_map_grant_ref,
__gnttab_unmap_grant_ref, gnttab_setup_table, __gnttab_copy with __acquire_grant_for_copy) and
xen/arch/x86/mm.c (create_grant_host_mapping, destroy_grant_host_mapping and their va and pte
forms); the interface is xen/include/public/grant_table.h (version-1 entries).

* Each domain has NR_GRANT_FRAMES shared frames of ``grant_entry`` {flags, domid, frame}: Xen
  heap frames given to the domain (asm-x86/grant_table.h gnttab_create_shared_page:
  share_xen_page_with_guest), which the guest maps and writes freely but can never make a page
  table, GDT or LDT frame, nor give back with memory_op (refmodel/hypervisor.py).
  Xen reads an entry only when a mapping or copy first pins it; the hypervisor's own record is
  the active entry (domid, frame, pin counts) and, in the grantee, the maptrack entry behind
  each handle.
* A map checks the flags (device or host map, -> GNTST_bad_gntref), the granting domain
  (GNTST_bad_domain), a free handle (GNTST_no_device_space), the reference (GNTST_bad_gntref),
  then, when the entry is not pinned yet or a first writable pin is asked, that the shared entry
  permits access to the caller and is not read-only for a writable map (GNTST_general_error);
  it sets GTF_reading (and GTF_writing) in the shared entry and pins the active entry. The
  granted frame takes a general reference (and a writable type reference unless read-only)
  for the granter (get_page / get_page_and_type: a page-table frame cannot be granted
  writable). A host mapping writes the PTE (GRANT_PTE_FLAGS, RW unless read-only, USER for
  GNTMAP_application_map) at a virtual address of the caller's current page tables or, with
  GNTMAP_contains_pte, at the machine address of an entry of one of its L1 tables; the PTE
  holds the references, as any L1 entry does, and the entry it replaces drops its own.
* An unmap names a handle (GNTST_bad_handle) and the PTE or bus address to remove; the PTE
  must still map the frame (GNTST_general_error). When the last pin goes, GTF_writing and
  GTF_reading are cleared again. A batch of unmaps ends with a TLB flush.
* A grant in use cannot be revoked by its granter: whatever the granter writes into its shared
  entry, the pins, the references and the grantee's mappings stay until the grantee unmaps.

Departures and limits, each deliberate:

* Each handle remembers the PTE its host mapping wrote, and an unmap must name that PTE
  (GNTST_general_error otherwise). 3.0.4 compares only the frame number, so unmapping a
  writable handle through a read-only PTE of the same frame could leave a writable mapping
  with no writable pin behind. Guests unmap where they mapped, so none notices.
* A PTE address for GNTMAP_contains_pte must be 4-byte aligned and name an L1 table in use.
* The grant table of a domain is created on its first use, not at domain creation (its
  contents are identical: all entries invalid).
* A map with both GNTMAP_host_map and GNTMAP_device_map takes the device mapping's
  references before the PTE is written and fails (GNTST_general_error) if it cannot have
  them, releasing what it took. 3.0.4 takes them after the PTE and ignores the result
  (``(void)get_page``), so at a type count's limit the device mapping held no reference
  and its unmap dropped one it never had; this follows the fix of XSA-224
  (grant_table.c, "gnttab: correct logic to get page references during map requests").
* GNTTABOP_transfer is not modelled (-ENOSYS). GNTTABOP_query_size (Xen 3.1's interface)
  answers the fixed size. The handle space is MAPTRACK_MAX_ENTRIES per domain.

In-model backends (the block device, refmodel/blkback.py) use ``copy_from_grant`` and
``copy_to_grant`` (GNTTABOP_copy's checks, with the backend domain as the copying domain), or
``map_grant_ref`` with GNTMAP_device_map and read machine memory at the bus address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.spec import abi
from xenspec.spec.grant_spec import permits
from xenspec.spec.pagetable import PGT, pte_get_pfn, pte_present

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

# grant_table.c keeps four 8-bit pin counters in act->pin; a counter reaching 0x80 refuses
# further pins (the 0x80808080 test of __gnttab_map_grant_ref).
PIN_LIMIT = 0x80
_ENTRIES_PER_FRAME = abi.PAGE_SIZE // abi.GRANT_ENTRY_T.size


@dataclass
class ActiveGrant:
    """struct active_grant_entry: who has it pinned, which frame, and the pin counts."""

    domid: int = 0
    frame: int = 0
    host_r: int = 0
    host_w: int = 0
    dev_r: int = 0
    dev_w: int = 0

    @property
    def pinned(self) -> bool:
        return bool(self.host_r or self.host_w or self.dev_r or self.dev_w)

    @property
    def write_pinned(self) -> bool:
        return bool(self.host_w or self.dev_w)

    def add(self, flags: int, delta: int) -> None:
        ro = bool(flags & abi.GNTMAP_readonly)
        if flags & abi.GNTMAP_device_map:
            if ro:
                self.dev_r += delta
            else:
                self.dev_w += delta
        if flags & abi.GNTMAP_host_map:
            if ro:
                self.host_r += delta
            else:
                self.host_w += delta


@dataclass
class GrantMapping:
    """struct grant_mapping (maptrack): a handle's granter, reference, flags and frame."""

    domid: int = 0
    ref: int = 0
    flags: int = 0  # 0: the handle is free
    frame: int = 0
    pte: tuple[int, int] = (0, 0)  # (L1 mfn, index) of the host mapping's PTE


@dataclass
class GrantTable:
    domid: int
    shared: list[int]  # the shared frames' mfns
    dying: bool = False  # its domain was destroyed: no new pins, handles still unmap
    active: dict[int, ActiveGrant] = field(default_factory=dict)
    maptrack: list[GrantMapping] = field(default_factory=list)


class GrantError(Exception):
    """One grant operation fails with ``status`` (GNTST_*)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Grants:
    """The grant-table subsystem of one platform (``pv.grants``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv: Hypervisor = pv.hv
        self.tables: dict[int, GrantTable] = {}
        # Frames named by writable device mappings, with how many (Hypervisor.hypervisor_writes).
        self._device_w: dict[int, int] = {}

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["grant_table_op"]: self.do_grant_table_op}

    # ----------------------------------------------------------------------------------------
    # Tables and shared entries.
    # ----------------------------------------------------------------------------------------
    def table(self, d: Domain) -> GrantTable:
        """grant_table_create: the shared frames (Xen heap pages given to the domain)."""
        t = self.tables.get(d.domain_id)
        if t is None and d.is_dying:
            # No Xen page is ever shared with a dying domain (it would never be relinquished):
            # one that never had a table, or whose table went with it, has an empty dying one.
            return GrantTable(d.domain_id, [], dying=True)
        if t is None:
            shared = []
            for _ in range(abi.NR_GRANT_FRAMES):  # gnttab_create_shared_page
                mfn = self.hv.alloc_xenheap_page()
                self.hv.share_xen_page_with_guest(mfn, d, readonly=False)
                shared.append(mfn)
            t = self.tables[d.domain_id] = GrantTable(d.domain_id, shared)
        return t

    def _entry_maddr(self, t: GrantTable, ref: int) -> int:
        mfn = t.shared[ref // _ENTRIES_PER_FRAME]
        return (mfn << abi.PAGE_SHIFT) + (ref % _ENTRIES_PER_FRAME) * abi.GRANT_ENTRY_T.size

    def shared_entry(self, t: GrantTable, ref: int) -> tuple[int, int, int]:
        """(flags, domid, frame) of grant entry ``ref`` as the granter wrote it."""
        data = self.hv.memory.read(self._entry_maddr(t, ref), abi.GRANT_ENTRY_T.size)
        flags, domid, frame = abi.GRANT_ENTRY_T.unpack(data)
        return int(flags), int(domid), int(frame)

    def _set_flags(self, t: GrantTable, ref: int, flags: int) -> None:
        if self.hv.frames.owner[t.shared[ref // _ENTRIES_PER_FRAME]] != t.domid:
            return  # the granter died and its table frame went back to the heap
        self.hv.memory.write(self._entry_maddr(t, ref), (flags & 0xFFFF).to_bytes(2, "little"))

    def _find(self, v: Vcpu, domid: int, self_ok: bool) -> Domain:
        if self_ok and domid == abi.DOMID_SELF:
            return v.domain
        d = self.hv.domains.get(domid)
        if d is None:
            raise GrantError(abi.GNTST_bad_domain)
        return d

    # ----------------------------------------------------------------------------------------
    # Pinning an active entry (shared by map and copy).
    # ----------------------------------------------------------------------------------------
    def _pin(self, ld: Domain, rd: Domain, ref: int, flags: int) -> ActiveGrant:
        """The checks and pin of __gnttab_map_grant_ref / __acquire_grant_for_copy."""
        if not 0 <= ref < abi.NR_GRANT_ENTRIES:
            raise GrantError(abi.GNTST_bad_gntref)
        rt = self.table(rd)
        if rt.dying:
            raise GrantError(abi.GNTST_bad_domain)
        act = rt.active.get(ref)
        if act is None:
            act = rt.active[ref] = ActiveGrant()
        counts = (act.host_r, act.host_w, act.dev_r, act.dev_w)
        if act.pinned and (act.domid != ld.domain_id or max(counts) >= PIN_LIMIT):
            raise GrantError(abi.GNTST_general_error)
        readonly = bool(flags & abi.GNTMAP_readonly)
        if not act.pinned or (not readonly and not act.write_pinned):
            sflags, sdomid, sframe = self.shared_entry(rt, ref)
            # A first pin checks the whole entry (spec.grant_spec.permits); a first writable
            # pin of an entry its grantee has pinned already, only the read-only flag.
            if not act.pinned and not permits(sflags, sdomid, ld.domain_id, readonly):
                raise GrantError(abi.GNTST_general_error)
            if act.pinned and not readonly and sflags & abi.GTF_readonly:
                raise GrantError(abi.GNTST_general_error)
            new = sflags | abi.GTF_reading | (0 if readonly else abi.GTF_writing)
            self._set_flags(rt, ref, new)
            if not act.pinned:
                act.domid, act.frame = sdomid, sframe  # a PV guest names frames by mfn
        act.add(flags, +1)
        return act

    def _unpin(self, rd: Domain, ref: int, flags: int) -> None:
        """Drop one pin; the last writable pin clears GTF_writing, the last pin GTF_reading."""
        rt = self.tables.get(rd.domain_id)
        act = rt.active.get(ref) if rt is not None else None
        if rt is None or act is None:
            # The granter was dying and went with its last frame, the one this handle held
            # (Hypervisor.domain_destroy): its table, and the pin, went with it.
            return
        act.add(flags, -1)
        sflags = self.shared_entry(rt, ref)[0]
        if not flags & abi.GNTMAP_readonly and not act.write_pinned:
            sflags &= ~abi.GTF_writing
        if not act.pinned:
            sflags &= ~abi.GTF_reading
            del rt.active[ref]
        self._set_flags(rt, ref, sflags)

    def _get_frame(self, frame: int, rd: Domain, readonly: bool) -> bool:
        mm = self.hv.mm
        if not self.hv.memory.mfn_valid(frame):
            return False
        if readonly:
            return mm.get_page(frame, rd)
        return mm.get_page_and_type(frame, rd, PGT.writable_page)

    def _put_frame(self, frame: int, readonly: bool) -> None:
        if readonly:
            self.hv.mm.put_page(frame)
        else:
            self.hv.mm.put_page_and_type(frame)

    # ----------------------------------------------------------------------------------------
    # Map and unmap.
    # ----------------------------------------------------------------------------------------
    def map_grant_ref(self, v: Vcpu, host_addr: int, flags: int, ref: int,
                      dom: int) -> tuple[int, int, int]:
        """__gnttab_map_grant_ref: (status, handle, dev_bus_addr)."""
        ld = v.domain
        # The reference and the flags first, then the domain (3.0.4's order).
        if not 0 <= ref < abi.NR_GRANT_ENTRIES or not flags & (abi.GNTMAP_device_map |
                                                                abi.GNTMAP_host_map):
            return abi.GNTST_bad_gntref, 0, 0
        rd = self.hv.domains.get(dom)
        if rd is None:
            return abi.GNTST_bad_domain, 0, 0
        lt = self.table(ld)
        handle = self._get_maptrack_handle(lt)
        if handle is None:
            return abi.GNTST_no_device_space, 0, 0
        try:
            act = self._pin(ld, rd, ref, flags)
        except GrantError as e:
            return e.status, 0, 0
        readonly = bool(flags & abi.GNTMAP_readonly)
        frame = act.frame
        # Each of the host and the device mapping holds references of its own, all taken
        # before the PTE is written; any that cannot be had (a count at its limit) fails the
        # map and releases the others (XSA-224, see the module's departures).
        both = abi.GNTMAP_host_map | abi.GNTMAP_device_map
        taken = 0
        for _ in range(2 if flags & both == both else 1):
            if not self._get_frame(frame, rd, readonly):
                for _ in range(taken):
                    self._put_frame(frame, readonly)
                self._unpin(rd, ref, flags)
                return abi.GNTST_general_error, 0, 0
            taken += 1
        pte = (0, 0)
        if flags & abi.GNTMAP_host_map:
            slot = self.create_grant_host_mapping(v, host_addr, frame, flags)
            if slot is None:
                for _ in range(taken):
                    self._put_frame(frame, readonly)
                self._unpin(rd, ref, flags)
                return abi.GNTST_general_error, 0, 0
            pte = slot
        lt.maptrack[handle] = GrantMapping(rd.domain_id, ref, flags, frame, pte)
        if flags & abi.GNTMAP_device_map and not readonly:
            self._device_w[frame] = self._device_w.get(frame, 0) + 1
        return abi.GNTST_okay, handle, frame << abi.PAGE_SHIFT

    def _drop_device_w(self, frame: int) -> None:
        n = self._device_w[frame] - 1
        if n:
            self._device_w[frame] = n
        else:
            del self._device_w[frame]

    def device_writable(self, mfn: int) -> bool:
        """A writable device mapping names frame ``mfn``: a back end may write into it."""
        return mfn in self._device_w

    @staticmethod
    def _get_maptrack_handle(lt: GrantTable) -> int | None:
        for h, mt in enumerate(lt.maptrack):
            if not mt.flags:
                return h
        if len(lt.maptrack) >= abi.MAPTRACK_MAX_ENTRIES:
            return None
        lt.maptrack.append(GrantMapping())
        return len(lt.maptrack) - 1

    def unmap_grant_ref(self, v: Vcpu, host_addr: int, dev_bus_addr: int, handle: int) -> int:
        """__gnttab_unmap_grant_ref: the status."""
        lt = self.table(v.domain)
        if not 0 <= handle < len(lt.maptrack) or not lt.maptrack[handle].flags:
            return abi.GNTST_bad_handle
        mt = lt.maptrack[handle]
        rd = self.hv.domains.get(mt.domid)
        if rd is None:
            return abi.GNTST_bad_domain
        flags, frame = mt.flags, mt.frame
        readonly = bool(flags & abi.GNTMAP_readonly)
        if dev_bus_addr:
            if dev_bus_addr >> abi.PAGE_SHIFT != frame:
                return abi.GNTST_general_error
            if flags & abi.GNTMAP_device_map:
                mt.flags &= ~abi.GNTMAP_device_map
                if not readonly:
                    self._drop_device_w(frame)
                self._put_frame(frame, readonly)
                self._unpin(rd, mt.ref, abi.GNTMAP_device_map | (flags & abi.GNTMAP_readonly))
        if host_addr and flags & abi.GNTMAP_host_map:
            status = self.destroy_grant_host_mapping(v, host_addr, mt)
            if status != abi.GNTST_okay:
                return status
            mt.flags &= ~abi.GNTMAP_host_map
            self._put_frame(frame, readonly)
            self._unpin(rd, mt.ref, abi.GNTMAP_host_map | (flags & abi.GNTMAP_readonly))
        if not mt.flags & (abi.GNTMAP_device_map | abi.GNTMAP_host_map):
            mt.flags = 0  # put_maptrack_handle
        return abi.GNTST_okay

    # ----------------------------------------------------------------------------------------
    # The PTE of a host mapping (x86 mm.c).
    # ----------------------------------------------------------------------------------------
    def _grant_pte_slot(self, v: Vcpu, addr: int, flags: int) -> tuple[int, int] | None:
        """(L1 mfn, index) of the entry a host mapping names: by virtual address through the
        caller's page tables, or (GNTMAP_contains_pte) by the entry's machine address."""
        hv = self.hv
        if flags & abi.GNTMAP_contains_pte:
            mfn, off = addr >> abi.PAGE_SHIFT, addr & (abi.PAGE_SIZE - 1)
            if (off & 3 or not hv.memory.mfn_valid(mfn)
                    or hv.frames.owner[mfn] != v.domain.domain_id
                    or hv.frames.type[mfn] != PGT.l1_page_table
                    or not hv.frames.is_validated(mfn)):
                return None
            return mfn, off >> 2
        if not 0 <= addr < abi.HYPERVISOR_VIRT_START:
            return None
        l1 = hv.mm.guest_map_l1e(v, addr)
        if l1 is None:
            return None
        return l1, (addr >> abi.L1_PAGETABLE_SHIFT) & (abi.L1_PAGETABLE_ENTRIES - 1)

    def create_grant_host_mapping(self, v: Vcpu, addr: int, frame: int,
                                  flags: int) -> tuple[int, int] | None:
        """Write the grant PTE; the slot written, or None (GNTST_general_error)."""
        slot = self._grant_pte_slot(v, addr, flags)
        if slot is None:
            return None
        pte = frame << abi.PAGE_SHIFT | abi.GRANT_PTE_FLAGS
        if flags & abi.GNTMAP_application_map:
            pte |= abi._PAGE_USER
        if not flags & abi.GNTMAP_readonly:
            pte |= abi._PAGE_RW
        mem = self.hv.memory
        old = mem.read_entry(*slot)
        mem.write_entry(*slot, pte)
        self.hv.mm.put_page_from_l1e(old)
        self._flush(v, addr, flags)
        return slot

    def destroy_grant_host_mapping(self, v: Vcpu, addr: int, mt: GrantMapping) -> int:
        """Clear the handle's PTE: ``addr`` must name it and it must still map the frame."""
        slot = self._grant_pte_slot(v, addr, mt.flags)
        if slot is None or slot != mt.pte:
            return abi.GNTST_general_error
        old = self.hv.memory.read_entry(*slot)
        writable = not mt.flags & abi.GNTMAP_readonly
        if (not pte_present(old) or pte_get_pfn(old) != mt.frame
                or bool(old & abi._PAGE_RW) != writable):
            return abi.GNTST_general_error
        self.hv.memory.write_entry(*slot, 0)
        self._flush(v, addr, mt.flags)
        return abi.GNTST_okay

    @staticmethod
    def _flush(v: Vcpu, addr: int, flags: int) -> None:
        if flags & abi.GNTMAP_contains_pte:
            v.flush_tlb()
        else:
            v.flush_tlb_one(addr)

    # ----------------------------------------------------------------------------------------
    # Copy (__gnttab_copy): each granted side is pinned only for the copy.
    # ----------------------------------------------------------------------------------------
    def _acquire(self, v: Vcpu, domid: int, is_gref: bool, ref_or_mfn: int, readonly: bool,
                 release: list[Callable[[], None]]) -> int:
        """One side of a copy: its frame, referenced (and pinned when named by grant) until
        the ``release`` actions run."""
        if domid != abi.DOMID_SELF and not is_gref:
            raise GrantError(abi.GNTST_permission_denied)  # copy by mfn only for DOMID_SELF
        d = self._find(v, domid, self_ok=True)
        frame = ref_or_mfn
        if is_gref:
            pin = abi.GNTMAP_host_map | (abi.GNTMAP_readonly if readonly else 0)
            frame = self._pin(v.domain, d, ref_or_mfn, pin).frame
            release.append(lambda: self._unpin(d, ref_or_mfn, pin))
        if not self._get_frame(frame, d, readonly):
            raise GrantError(abi.GNTST_general_error)
        release.append(lambda: self._put_frame(frame, readonly))
        return frame

    def copy(self, v: Vcpu, src: tuple[int, int, int], dst: tuple[int, int, int],
             length: int, flags: int) -> int:
        """One gnttab_copy: ``src`` and ``dst`` are (ref or mfn, domid, offset)."""
        release: list[Callable[[], None]] = []
        try:
            if src[2] + length > abi.PAGE_SIZE or dst[2] + length > abi.PAGE_SIZE:
                raise GrantError(abi.GNTST_bad_copy_arg)
            sframe = self._acquire(v, src[1], bool(flags & abi.GNTCOPY_source_gref), src[0],
                                   True, release)
            dframe = self._acquire(v, dst[1], bool(flags & abi.GNTCOPY_dest_gref), dst[0],
                                   False, release)
            mem = self.hv.memory
            mem.write((dframe << abi.PAGE_SHIFT) + dst[2],
                      mem.read((sframe << abi.PAGE_SHIFT) + src[2], length))
            return abi.GNTST_okay
        except GrantError as e:
            return e.status
        finally:
            for undo in reversed(release):
                undo()

    def copy_from_grant(self, v: Vcpu, dom: int, ref: int, offset: int,
                        length: int) -> tuple[int, bytes]:
        """For an in-model backend: read from a frame ``dom`` granted to ``v``'s domain, with
        gnttab_copy's checks (the backend's own buffer is Python memory). (status, bytes)."""
        release: list[Callable[[], None]] = []
        try:
            if not 0 <= offset <= offset + length <= abi.PAGE_SIZE:
                raise GrantError(abi.GNTST_bad_copy_arg)
            frame = self._acquire(v, dom, True, ref, True, release)
            return abi.GNTST_okay, self.hv.memory.read((frame << abi.PAGE_SHIFT) + offset,
                                                       length)
        except GrantError as e:
            return e.status, b""
        finally:
            for undo in reversed(release):
                undo()

    def copy_to_grant(self, v: Vcpu, dom: int, ref: int, offset: int, data: bytes) -> int:
        """For an in-model backend: write into a frame ``dom`` granted writable to ``v``'s
        domain, with gnttab_copy's checks. The status."""
        release: list[Callable[[], None]] = []
        try:
            if not 0 <= offset <= offset + len(data) <= abi.PAGE_SIZE:
                raise GrantError(abi.GNTST_bad_copy_arg)
            frame = self._acquire(v, dom, True, ref, False, release)
            self.hv.memory.write((frame << abi.PAGE_SHIFT) + offset, data)
            return abi.GNTST_okay
        except GrantError as e:
            return e.status
        finally:
            for undo in reversed(release):
                undo()

    # ----------------------------------------------------------------------------------------
    # Setup and queries.
    # ----------------------------------------------------------------------------------------
    def _table_domain(self, v: Vcpu, dom: int) -> Domain:
        """The domain whose table setup_table, query_size or dump_table names: DOMID_SELF, or
        any domain for a privileged caller (GNTST_permission_denied, GNTST_bad_domain)."""
        if dom != abi.DOMID_SELF and not v.domain.is_privileged:
            raise GrantError(abi.GNTST_permission_denied)
        return self._find(v, dom, self_ok=True)

    def setup_table(self, v: Vcpu, dom: int, nr_frames: int) -> tuple[int, list[int]]:
        """gnttab_setup_table: (status, the first ``nr_frames`` shared frames)."""
        if nr_frames > abi.NR_GRANT_FRAMES:
            return abi.GNTST_general_error, []
        try:
            return abi.GNTST_okay, self.table(self._table_domain(v, dom)).shared[:nr_frames]
        except GrantError as e:
            return e.status, []

    def query_size(self, v: Vcpu, dom: int) -> tuple[int, int, int]:
        """GNTTABOP_query_size: (status, nr_frames, max_nr_frames)."""
        try:
            self._table_domain(v, dom)
        except GrantError as e:
            return e.status, 0, 0
        return abi.GNTST_okay, abi.NR_GRANT_FRAMES, abi.NR_GRANT_FRAMES

    # ----------------------------------------------------------------------------------------
    # The hypercall: argument decoding (do_grant_table_op).
    # ----------------------------------------------------------------------------------------
    def do_grant_table_op(self, v: Vcpu, cmd: int, uop: int, count: int) -> int:
        if count > abi.GNTTAB_MAX_BATCH:
            return -abi.EINVAL
        handlers: dict[int, Callable[[Vcpu, int, int], int]] = {
            abi.GNTTABOP_map_grant_ref: self._op_map,
            abi.GNTTABOP_unmap_grant_ref: self._op_unmap,
            abi.GNTTABOP_setup_table: self._op_setup_table,
            abi.GNTTABOP_dump_table: self._op_dump_table,
            abi.GNTTABOP_copy: self._op_copy,
            abi.GNTTABOP_query_size: self._op_query_size,
        }
        handler = handlers.get(cmd)
        if handler is None:
            return -abi.ENOSYS
        return handler(v, uop, count)

    def _batch(self, v: Vcpu, uop: int, count: int, size: int,
               one: Callable[[bytes], bytes]) -> int:
        if not self.hv.array_access_ok(uop, count, size):
            return -abi.EFAULT
        for i in range(count):
            va = uop + i * size
            buf = self.hv.copy_from_guest(v, va, size)
            if buf is None:
                return -abi.EFAULT
            if not self.hv.copy_to_guest(v, va, one(buf)):
                return -abi.EFAULT
        return 0

    def _op_map(self, v: Vcpu, uop: int, count: int) -> int:
        T = abi.GNTTAB_MAP_GRANT_REF_T

        def one(buf: bytes) -> bytes:
            host_addr, flags, ref, dom, _, _, _ = T.unpack(buf)
            status, handle, bus = self.map_grant_ref(v, host_addr, flags, ref, dom)
            return T.pack(host_addr, flags, ref, dom, status, handle, bus)

        return self._batch(v, uop, count, T.size, one)

    def _op_unmap(self, v: Vcpu, uop: int, count: int) -> int:
        T = abi.GNTTAB_UNMAP_GRANT_REF_T

        def one(buf: bytes) -> bytes:
            host_addr, bus, handle, _ = T.unpack(buf)
            status = self.unmap_grant_ref(v, host_addr, bus, handle)
            return T.pack(host_addr, bus, handle, status)

        rc = self._batch(v, uop, count, T.size, one)
        for u in v.domain.vcpus:  # flush_tlb_mask(d->domain_dirty_cpumask)
            u.flush_tlb()
        return rc

    def _op_copy(self, v: Vcpu, uop: int, count: int) -> int:
        T = abi.GNTTAB_COPY_T

        def one(buf: bytes) -> bytes:
            sref, sdom, soff, dref, ddom, doff, length, flags, _ = T.unpack(buf)
            status = self.copy(v, (sref, sdom, soff), (dref, ddom, doff), length, flags)
            return T.pack(sref, sdom, soff, dref, ddom, doff, length, flags, status)

        return self._batch(v, uop, count, T.size, one)

    def _single(self, v: Vcpu, uop: int, count: int, size: int,
                one: Callable[[bytes], bytes]) -> int:
        """setup_table, dump_table and query_size take exactly one argument (-EINVAL)."""
        if count != 1:
            return -abi.EINVAL
        buf = self.hv.copy_from_guest(v, uop, size)
        if buf is None:
            return -abi.EFAULT
        return 0 if self.hv.copy_to_guest(v, uop, one(buf)) else -abi.EFAULT

    def _op_setup_table(self, v: Vcpu, uop: int, count: int) -> int:
        T = abi.GNTTAB_SETUP_TABLE_T

        def one(buf: bytes) -> bytes:
            dom, nr_frames, _, frame_list = T.unpack(buf)
            status, frames = self.setup_table(v, dom, nr_frames)
            for i, mfn in enumerate(frames):  # (void)copy_to_guest_offset: failures ignored
                self.hv.copy_to_guest(v, frame_list + 4 * i, mfn.to_bytes(4, "little"))
            return T.pack(dom, nr_frames, status, frame_list)

        return self._single(v, uop, count, T.size, one)

    def _op_query_size(self, v: Vcpu, uop: int, count: int) -> int:
        T = abi.GNTTAB_QUERY_SIZE_T

        def one(buf: bytes) -> bytes:
            dom = T.unpack(buf)[0]
            status, nr, mx = self.query_size(v, dom)
            return T.pack(dom, nr, mx, status)

        return self._single(v, uop, count, T.size, one)

    def _op_dump_table(self, v: Vcpu, uop: int, count: int) -> int:
        """gnttab_dump_table prints to Xen's console; the model only answers its status."""
        T = abi.GNTTAB_DUMP_TABLE_T

        def one(buf: bytes) -> bytes:
            dom = T.unpack(buf)[0]
            try:
                self._table_domain(v, dom)
            except GrantError as e:
                return T.pack(dom, e.status)
            return T.pack(dom, abi.GNTST_okay)

        return self._single(v, uop, count, T.size, one)

    # ----------------------------------------------------------------------------------------
    # Domain destruction (gnttab_release_mappings, grant_table_destroy).
    # ----------------------------------------------------------------------------------------
    def destroy_domain(self, d: Domain) -> None:
        """Release the dying domain's handles: device mappings drop their references; host
        mappings' references go with its page tables (relinquish_memory). Its shared frames
        are Xen heap pages on its xenpage_list: domain destruction relinquishes them
        (refmodel/domctl.py), and they return to the heap once nothing maps them."""
        t = self.tables.get(d.domain_id)
        if t is None:
            # None made yet: none is made for the dead domain either (it may stay known while
            # another domain maps one of its frames), so no new Xen page is ever shared with it.
            self.tables[d.domain_id] = GrantTable(d.domain_id, [], dying=True)
            return
        for mt in t.maptrack:
            if not mt.flags:
                continue
            rd = self.hv.domains.get(mt.domid)
            ro = mt.flags & abi.GNTMAP_readonly
            if mt.flags & abi.GNTMAP_device_map:
                if not ro:
                    self._drop_device_w(mt.frame)
                self._put_frame(mt.frame, bool(ro))
            if rd is not None and mt.ref in self.table(rd).active:
                for kind in (abi.GNTMAP_device_map, abi.GNTMAP_host_map):
                    if mt.flags & kind:
                        self._unpin(rd, mt.ref, kind | ro)
            mt.flags = 0
        t.dying = True

    def domain_destroyed(self, domid: int) -> None:
        """grant_table_destroy (common/domain.c, domain_destroy): the table goes with the
        domain structure, once nothing of the domain is left, so that a later domain given
        the same id starts without one (and not with the dead one's, whose frames went back
        to the heap)."""
        self.tables.pop(domid, None)

    # ----------------------------------------------------------------------------------------
    # What the invariants ask of the grant state (refmodel/view.py).
    # ----------------------------------------------------------------------------------------
    def slot_writers(self, grantee: int, l1: int, index: int, frame: int) -> list[int]:
        """The grantee's host-mapping handles that wrote the present PTE (l1, index) for
        ``frame``, writable ones first: several when a later map wrote the same PTE again
        (with GNTMAP_contains_pte, the same value), each of which the symbolic state's ghost
        ``gnt_slot`` may name."""
        t = self.tables.get(grantee)
        if t is None:
            return []
        hs = [h for h, mt in enumerate(t.maptrack)
              if mt.flags & abi.GNTMAP_host_map and mt.pte == (l1, index) and mt.frame == frame]
        return sorted(hs, key=lambda h: bool(t.maptrack[h].flags & abi.GNTMAP_readonly))

    def slot_handle(self, grantee: int, l1: int, index: int, frame: int) -> int:
        """The handle a present PTE (l1, index) mapping ``frame`` belongs to: the first of
        ``slot_writers``, a writable one if there is one; -1 if none (the symbolic state's
        ghost ``gnt_slot``)."""
        writers = self.slot_writers(grantee, l1, index, frame)
        return writers[0] if writers else -1

    def mapping(self, grantee: int, handle: int) -> GrantMapping:
        t = self.tables.get(grantee)
        if t is None or not 0 <= handle < len(t.maptrack):
            return GrantMapping()
        return t.maptrack[handle]

    def device_refs(self) -> list[tuple[int, bool]]:
        """(frame, writable) of every device mapping: each holds references of its own."""
        return [(mt.frame, not mt.flags & abi.GNTMAP_readonly)
                for t in self.tables.values() for mt in t.maptrack
                if mt.flags & abi.GNTMAP_device_map]

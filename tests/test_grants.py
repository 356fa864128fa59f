"""Grant tables in the reference model (refmodel/grant.py): grant_table_op's commands with Xen's
status codes, the shared entry's flags, references held by mappings, revocation attempts, and
the invariants (INV-OWN's grant clause, INV-GNT-RO, INV-COUNT with device mappings) on every
state reached."""

from __future__ import annotations

import pytest

from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.grant import Grants
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

SELF = abi.DOMID_SELF
MAP_T, UNMAP_T = abi.GNTTAB_MAP_GRANT_REF_T, abi.GNTTAB_UNMAP_GRANT_REF_T


class Gnt:
    """GNTTABOP_* of one guest, the argument structure in its argument area."""

    def __init__(self, g: Guest) -> None:
        self.g = g

    def op(self, cmd: int, data: bytes, count: int = 1) -> tuple[int, bytes]:
        va = self.g.write_args(data)
        rc = self.g.hypercall("grant_table_op", cmd, va, count)
        return rc, self.g.read_args(0, len(data))

    def map(self, host_addr: int, flags: int, ref: int, dom: int) -> tuple[int, int, int]:
        rc, out = self.op(abi.GNTTABOP_map_grant_ref, MAP_T.pack(host_addr, flags, ref, dom,
                                                                 0, 0, 0))
        assert rc == 0
        _, _, _, _, status, handle, bus = MAP_T.unpack(out)
        return status, handle, bus

    def unmap(self, host_addr: int, handle: int, bus: int = 0) -> int:
        rc, out = self.op(abi.GNTTABOP_unmap_grant_ref, UNMAP_T.pack(host_addr, bus, handle, 0))
        assert rc == 0
        return int(UNMAP_T.unpack(out)[3])

    def setup_table(self, nr_frames: int, dom: int = SELF) -> tuple[int, int, list[int]]:
        T = abi.GNTTAB_SETUP_TABLE_T
        frame_list = self.g.write_args(bytes(16), offset=64)
        rc, out = self.op(abi.GNTTABOP_setup_table, T.pack(dom, nr_frames, 0, frame_list))
        raw = self.g.read_args(64, 4 * nr_frames)
        frames = [int.from_bytes(raw[4 * i : 4 * i + 4], "little") for i in range(nr_frames)]
        return rc, int(T.unpack(out)[2]), frames


@pytest.fixture
def impl() -> ReferenceImplementation:
    return ReferenceImplementation()


def grants(impl: ReferenceImplementation) -> Grants:
    g = impl.pv.grants
    assert g is not None
    return g


def pair(impl: ReferenceImplementation) -> tuple[Guest, Guest]:
    return Guest(impl, 48, 32), Guest(impl, 48, 32)


def grant(impl: ReferenceImplementation, granter: Guest, ref: int, grantee: int, mfn: int,
          flags: int = abi.GTF_permit_access) -> None:
    """The granter writes entry ``ref`` of its table (as a guest does through its mapping)."""
    t = grants(impl).table(impl.hv.domains[granter.domid])
    maddr = (t.shared[ref // 512] << abi.PAGE_SHIFT) + (ref % 512) * 8
    impl.hv.memory.write(maddr, abi.GRANT_ENTRY_T.pack(flags, grantee, mfn))


def shared_flags(impl: ReferenceImplementation, granter: Guest, ref: int) -> int:
    t = grants(impl).table(impl.hv.domains[granter.domid])
    return grants(impl).shared_entry(t, ref)[0]


def pte_of(impl: ReferenceImplementation, g: Guest, va: int) -> int:
    l1 = impl.hv.mm.guest_map_l1e(impl.hv.domains[g.domid].vcpus[0], va)
    assert l1 is not None
    return impl.hv.memory.read_entry(l1, (va >> 12) & 1023)


def assert_invariants(impl: ReferenceImplementation) -> None:
    assert check_invariants(impl.hv) == []


def test_setup_table_and_query_size(impl: ReferenceImplementation) -> None:
    a, _b = pair(impl)
    gnt = Gnt(a)
    rc, status, frames = gnt.setup_table(abi.NR_GRANT_FRAMES)
    assert (rc, status) == (0, abi.GNTST_okay)
    assert frames == grants(impl).table(impl.hv.domains[a.domid]).shared
    assert all(impl.hv.frames.owner[f] == a.domid for f in frames)
    assert gnt.setup_table(abi.NR_GRANT_FRAMES + 1)[1] == abi.GNTST_general_error
    assert gnt.setup_table(1, dom=_b.domid)[1] == abi.GNTST_permission_denied
    T = abi.GNTTAB_QUERY_SIZE_T
    rc, out = gnt.op(abi.GNTTABOP_query_size, T.pack(SELF, 0, 0, 0))
    assert rc == 0 and T.unpack(out)[1:] == (abi.NR_GRANT_FRAMES, abi.NR_GRANT_FRAMES,
                                             abi.GNTST_okay)
    D = abi.GNTTAB_DUMP_TABLE_T
    assert D.unpack(gnt.op(abi.GNTTABOP_dump_table, D.pack(SELF, 1))[1])[1] == abi.GNTST_okay
    assert D.unpack(gnt.op(abi.GNTTABOP_dump_table, D.pack(_b.domid, 1))[1])[1] == (
        abi.GNTST_permission_denied)
    assert gnt.op(abi.GNTTABOP_setup_table, bytes(16), count=2)[0] == -abi.EINVAL
    assert gnt.op(abi.GNTTABOP_map_grant_ref, bytes(32), count=513)[0] == -abi.EINVAL
    assert gnt.op(abi.GNTTABOP_transfer, bytes(16))[0] == -abi.ENOSYS
    assert gnt.op(99, bytes(16))[0] == -abi.ENOSYS
    # The owner maps its own grant frame writable, as a guest must to write its entries.
    va = a.va(a.free_pfns()[0])
    assert a.update_va_mapping(va, frames[0] << 12 | 0x67) == 0
    assert_invariants(impl)


def test_map_write_unmap_round_trip(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 5, b.domid, frame)
    count0 = int(impl.hv.frames.count[frame])
    va = b.va(b.free_pfns()[1])
    status, handle, bus = Gnt(b).map(va, abi.GNTMAP_host_map, 5, a.domid)
    assert status == abi.GNTST_okay and bus == frame << 12
    pte = pte_of(impl, b, va)
    assert pte >> 12 == frame and pte & abi._PAGE_RW and not pte & abi._PAGE_USER
    assert shared_flags(impl, a, 5) & (abi.GTF_reading | abi.GTF_writing) == (
        abi.GTF_reading | abi.GTF_writing)
    assert impl.hv.frames.count[frame] == count0 + 1
    assert impl.hv.frames.type[frame] == PGT.writable_page
    assert_invariants(impl)
    # Only the PTE the handle wrote unmaps it.
    assert Gnt(b).unmap(va + 4096, handle) == abi.GNTST_general_error
    assert Gnt(b).unmap(va, handle) == abi.GNTST_okay
    assert pte_of(impl, b, va) == 0
    assert shared_flags(impl, a, 5) == abi.GTF_permit_access
    assert impl.hv.frames.count[frame] == count0
    assert Gnt(b).unmap(va, handle) == abi.GNTST_bad_handle
    assert_invariants(impl)


def test_read_only_grant_is_never_mapped_writable(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame, abi.GTF_permit_access | abi.GTF_readonly)
    va = b.va(b.free_pfns()[1])
    assert Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)[0] == abi.GNTST_general_error
    status, handle, _ = Gnt(b).map(va, abi.GNTMAP_host_map | abi.GNTMAP_readonly, 1, a.domid)
    assert status == abi.GNTST_okay
    assert not pte_of(impl, b, va) & abi._PAGE_RW
    # A read-only pin does not let a later writable map through either.
    va2 = b.va(b.free_pfns()[2])
    assert Gnt(b).map(va2, abi.GNTMAP_host_map, 1, a.domid)[0] == abi.GNTST_general_error
    assert shared_flags(impl, a, 1) & abi.GTF_writing == 0
    # The grantee cannot make the mapping writable with an ordinary update either.
    assert b.update_va_mapping(va, frame << 12 | 0x67) == -abi.EINVAL
    assert_invariants(impl)
    assert Gnt(b).unmap(va, handle) == abi.GNTST_okay


@pytest.mark.parametrize(("flags", "ref", "dom_of", "expect"), [
    (0, 1, "a", abi.GNTST_bad_gntref),                      # neither host nor device map
    (abi.GNTMAP_host_map, abi.NR_GRANT_ENTRIES, "a", abi.GNTST_bad_gntref),
    (abi.GNTMAP_host_map, 1, "nobody", abi.GNTST_bad_domain),
    # The reference is checked with the flags, before the domain (grant_table.c, 3.0.4).
    (abi.GNTMAP_host_map, abi.NR_GRANT_ENTRIES, "nobody", abi.GNTST_bad_gntref),
    (abi.GNTMAP_host_map, 2, "a", abi.GNTST_general_error),  # entry 2 is not granted
    (abi.GNTMAP_host_map, 3, "a", abi.GNTST_general_error),  # granted to another domain
])
def test_map_refusals(impl: ReferenceImplementation, flags: int, ref: int, dom_of: str,
                      expect: int) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame)
    grant(impl, a, 3, a.domid, frame)
    dom = {"a": a.domid, "nobody": 0x7000}[dom_of]
    va = b.va(b.free_pfns()[1])
    before = pte_of(impl, b, va)
    assert Gnt(b).map(va, flags, ref, dom)[0] == expect
    assert pte_of(impl, b, va) == before
    assert shared_flags(impl, a, 1) == abi.GTF_permit_access
    assert_invariants(impl)


def test_bad_host_addresses(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame)
    for va in (abi.HYPERVISOR_VIRT_START, 0x1000):  # the hole; no L1 behind the L2 slot
        assert Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)[0] == abi.GNTST_general_error
    # GNTMAP_contains_pte: the machine address of an entry of the caller's own L1 only.
    own_l1 = b.l1_mfns[0]
    other_l1 = a.l1_mfns[0]
    flags = abi.GNTMAP_host_map | abi.GNTMAP_contains_pte
    assert Gnt(b).map(other_l1 << 12 | 40 * 4, flags, 1, a.domid)[0] == abi.GNTST_general_error
    assert Gnt(b).map(own_l1 << 12 | 2, flags, 1, a.domid)[0] == abi.GNTST_general_error
    status, handle, _ = Gnt(b).map(own_l1 << 12 | 40 * 4, flags, 1, a.domid)
    assert status == abi.GNTST_okay
    assert impl.hv.memory.read_entry(own_l1, 40) >> 12 == frame
    assert shared_flags(impl, a, 1) & abi.GTF_reading
    assert_invariants(impl)
    assert Gnt(b).unmap(own_l1 << 12 | 40 * 4, handle) == abi.GNTST_okay
    assert shared_flags(impl, a, 1) == abi.GTF_permit_access


def test_page_table_frame_cannot_be_granted_writable(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    l1 = a.l1_mfns[0]
    grant(impl, a, 1, b.domid, l1)
    va = b.va(b.free_pfns()[1])
    assert Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)[0] == abi.GNTST_general_error
    assert shared_flags(impl, a, 1) == abi.GTF_permit_access  # the pin was undone
    assert_invariants(impl)


def test_grant_in_use_cannot_be_revoked(impl: ReferenceImplementation) -> None:
    """Whatever the granter does, the grantee's mapping and its references stay."""
    a, b = pair(impl)
    pfn = a.free_pfns()[0]
    frame = a.mfn(pfn)
    grant(impl, a, 1, b.domid, frame)
    va = b.va(b.free_pfns()[1])
    status, handle, _ = Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)
    assert status == abi.GNTST_okay
    grant(impl, a, 1, 0, 0, 0)  # the granter wipes its entry
    # ... and tries to make the frame a page table and to give it back to Xen.
    assert a.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, frame, 0)])[0] < 0
    impl.hv.hypercall_table.update(MemOp(impl.pv).hypercalls())
    T = abi.XEN_MEMORY_RESERVATION_T
    extents = a.write_args(frame.to_bytes(4, "little"), offset=64)
    res = a.write_args(T.pack(extents, 1, 0, 0, SELF))
    assert a.hypercall("memory_op", abi.XENMEM_decrease_reservation, res) == 1
    # The frame left the granter's reservation but not the grantee: still referenced, still
    # mapped, still the granter's, not on the heap.
    assert pte_of(impl, b, va) >> 12 == frame
    assert impl.hv.frames.owner[frame] == a.domid and impl.hv.frames.count[frame] > 0
    assert_invariants(impl)
    assert Gnt(b).unmap(va, handle) == abi.GNTST_okay
    assert impl.hv.frames.owner[frame] != a.domid  # the last reference freed it
    assert_invariants(impl)


def test_implicit_unmap_leaves_a_stuck_handle(impl: ReferenceImplementation) -> None:
    """Overwriting a grant PTE by mmu_update drops its references (the PTE held them); the
    handle stays in use and can no longer unmap (grant_table.h: "Mappings should only be
    destroyed via GNTTABOP_unmap_grant_ref")."""
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame)
    va = b.va(b.free_pfns()[1])
    count0 = int(impl.hv.frames.count[frame])
    status, handle, _ = Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)
    assert status == abi.GNTST_okay
    assert b.update_va_mapping(va, 0) == 0
    assert impl.hv.frames.count[frame] == count0
    assert_invariants(impl)
    assert Gnt(b).unmap(va, handle) == abi.GNTST_general_error
    assert shared_flags(impl, a, 1) & abi.GTF_reading  # the grant still reads as in use


def test_device_map_and_copy(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    impl.hv.memory.write(frame << 12, b"granted data")
    grant(impl, a, 1, b.domid, frame)
    grant(impl, a, 2, b.domid, frame, abi.GTF_permit_access | abi.GTF_readonly)
    gr = grants(impl)
    vb = impl.hv.domains[b.domid].vcpus[0]
    status, handle, bus = gr.map_grant_ref(vb, 0, abi.GNTMAP_device_map, 1, a.domid)
    assert status == abi.GNTST_okay and bus == frame << 12
    assert_invariants(impl)  # INV-COUNT counts the device mapping's references
    assert gr.unmap_grant_ref(vb, 0, bus, handle) == abi.GNTST_okay
    assert gr.copy_from_grant(vb, a.domid, 2, 0, 12) == (abi.GNTST_okay, b"granted data")
    assert gr.copy_to_grant(vb, a.domid, 2, 0, b"x") == abi.GNTST_general_error  # read-only
    assert gr.copy_to_grant(vb, a.domid, 1, 4000, b"y" * 200) == abi.GNTST_bad_copy_arg
    assert gr.copy_to_grant(vb, a.domid, 1, 0, b"GRANTED") == abi.GNTST_okay
    assert impl.hv.memory.read(frame << 12, 12) == b"GRANTED data"
    assert shared_flags(impl, a, 1) == abi.GTF_permit_access  # copies pin only while copying
    # GNTTABOP_copy from the hypercall: grant -> the caller's own frame, by mfn.
    dest = b.mfn(b.free_pfns()[3])
    T = abi.GNTTAB_COPY_T
    op = T.pack(1, a.domid, 0, dest, SELF, 16, 7, abi.GNTCOPY_source_gref, 0)
    rc, out = Gnt(b).op(abi.GNTTABOP_copy, op)
    assert rc == 0 and T.unpack(out)[-1] == abi.GNTST_okay
    assert impl.hv.memory.read((dest << 12) + 16, 7) == b"GRANTED"
    op = T.pack(frame, a.domid, 0, dest, SELF, 0, 7, 0, 0)  # by mfn of another domain
    assert T.unpack(Gnt(b).op(abi.GNTTABOP_copy, op)[1])[-1] == abi.GNTST_permission_denied
    assert_invariants(impl)


def test_pin_counter_limit(impl: ReferenceImplementation) -> None:
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame)
    vb = impl.hv.domains[b.domid].vcpus[0]
    gr = grants(impl)
    flags = abi.GNTMAP_device_map | abi.GNTMAP_readonly
    results = [gr.map_grant_ref(vb, 0, flags, 1, a.domid)[0] for _ in range(0x81)]
    assert results[:0x80] == [abi.GNTST_okay] * 0x80
    assert results[0x80] == abi.GNTST_general_error
    assert_invariants(impl)


def test_grants_of_a_dying_granter(impl: ReferenceImplementation) -> None:
    """gnttab_release_mappings / grant_table_destroy: once the granter is destroyed no new pin
    is taken from its table, its table frames (Xen heap pages on its xenpage_list) go back to
    the heap when its memory is relinquished (and are never written again), and a grantee's
    existing mapping still unmaps."""
    a, b = pair(impl)
    frame = a.mfn(a.free_pfns()[0])
    grant(impl, a, 1, b.domid, frame)
    grant(impl, a, 2, b.domid, frame)
    va = b.va(b.free_pfns()[1])
    status, handle, _ = Gnt(b).map(va, abi.GNTMAP_host_map, 1, a.domid)
    assert status == abi.GNTST_okay
    table = grants(impl).table(impl.hv.domains[a.domid])
    grants(impl).destroy_domain(impl.hv.domains[a.domid])
    impl.hv.relinquish_memory(impl.hv.domains[a.domid], list(table.shared))
    assert all(impl.hv.frames.owner[m] != a.domid for m in table.shared)
    va2 = b.va(b.free_pfns()[2])
    assert Gnt(b).map(va2, abi.GNTMAP_host_map, 2, a.domid)[0] == abi.GNTST_bad_domain
    reused = impl.hv.alloc_domheap_page(impl.hv.domains[b.domid])
    before = impl.hv.memory.read(reused << 12, 4096)
    assert Gnt(b).unmap(va, handle) == abi.GNTST_okay
    assert impl.hv.memory.read(reused << 12, 4096) == before
    assert_invariants(impl)

"""The frames the hypervisor writes into on a guest's behalf (refmodel/hypervisor.py): shared_info
and the grant-table frames are Xen heap pages shared with the guest (mm.c,
share_xen_page_with_guest), the console and store rings are held by the back ends' foreign
mappings, and Xen's private frames (per-domain page tables, the stub and reserved GDT pages)
take no reference at all. None of them can become a page-table, GDT or LDT frame, nor return
to the heap while it is written; a destroyed domain's Xen pages are freed once nothing maps
them, and every state reached keeps INV-COUNT."""

from __future__ import annotations

import pytest

from xenspec.conformance.driver import Guest
from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.memory import DOMID_NONE, PGC_allocated, PGC_xen_heap
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi
from xenspec.spec.guestcalls import PTE_RO, PTE_RW
from xenspec.spec.pagetable import PAGE_TABLE_TYPES, PGT

needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
SELF = abi.DOMID_SELF


@pytest.fixture
def impl() -> ReferenceImplementation:
    return ReferenceImplementation()


def dom(impl: ReferenceImplementation, g: Guest) -> Domain:
    return impl.hv.domains[g.domid]


def shared_info(impl: ReferenceImplementation, g: Guest) -> int:
    return impl.pv.darch(dom(impl, g)).shared_info_mfn


def grant_frames(impl: ReferenceImplementation, g: Guest) -> list[int]:
    return list(impl.pv.grants.table(dom(impl, g)).shared)


def assert_invariants(impl: ReferenceImplementation) -> None:
    assert check_invariants(impl.hv) == []


def clear(impl: ReferenceImplementation, g: Guest, mfn: int) -> None:
    """The guest zeroes frame ``mfn`` through a writable mapping of its own (so that it would
    validate as an empty table), then unmaps it."""
    va = g.va(g.free_pfns()[-1])
    assert g.update_va_mapping(va, g.pte(mfn, PTE_RW)) == 0
    assert impl.hv.copy_to_guest(dom(impl, g).vcpus[0], va, bytes(abi.PAGE_SIZE))
    assert g.update_va_mapping(va, 0) == 0


def never_a_table(impl: ReferenceImplementation, mfn: int) -> None:
    """What INV-XENPAGE asks of a frame the hypervisor writes."""
    assert impl.hv.hypervisor_writes(mfn)
    assert PGT(impl.hv.frames.type[mfn]) not in (*PAGE_TABLE_TYPES, PGT.gdt_page, PGT.ldt_page)


# --- shared_info and the grant frames: Xen heap pages shared with the guest ---------------------
def test_shared_info_is_a_shared_xen_heap_page(impl: ReferenceImplementation) -> None:
    g = Guest(impl, 48, 32)
    si, f = shared_info(impl, g), impl.hv.frames
    assert f.owner[si] == g.domid and f.type[si] == PGT.writable_page
    assert (f.type_count[si], f.count[si]) == (1, 1)
    assert f.flags[si] & PGC_xen_heap and f.flags[si] & PGC_allocated
    assert si in dom(impl, g).xenpage_list and si not in dom(impl, g).page_list
    assert impl.hv.m2p[si] == abi.INVALID_M2P_ENTRY
    never_a_table(impl, si)
    assert_invariants(impl)


@pytest.mark.parametrize("level", [1, 2])
def test_shared_info_cannot_be_pinned(impl: ReferenceImplementation, level: int) -> None:
    """Pinned as an L1 and linked into the directory, a page fault's address written into
    vcpu_info.arch.cr2 would be a PTE of the guest's choice; pinned as a directory, the frame
    would outlive its domain. get_page_type fails: the permanent writable type reference."""
    g = Guest(impl, 48, 32)
    si = shared_info(impl, g)
    clear(impl, g, si)
    assert g.pin(si, level) == -abi.EINVAL
    never_a_table(impl, si)
    assert_invariants(impl)


def test_shared_info_cannot_be_linked_as_an_l1(impl: ReferenceImplementation) -> None:
    g = Guest(impl, 48, 32)
    si = shared_info(impl, g)
    clear(impl, g, si)
    slot = (g.va(0) >> abi.L2_PAGETABLE_SHIFT) + 1  # a directory slot the builder left empty
    assert impl.hv.memory.read_entry(g.l2_mfn, slot) == 0
    assert g.set_entry(g.l2_mfn, slot, g.pte(si, PTE_RW)) == -abi.EINVAL
    assert impl.hv.memory.read_entry(g.l2_mfn, slot) == 0
    never_a_table(impl, si)
    assert_invariants(impl)


def test_shared_info_cannot_be_a_gdt_or_ldt_frame(impl: ReferenceImplementation) -> None:
    g = Guest(impl, 48, 32)
    si = shared_info(impl, g)
    clear(impl, g, si)
    frame_list = g.write_args(si.to_bytes(4, "little"), offset=64)
    assert g.hypercall("set_gdt", frame_list, 16) == -abi.EINVAL
    va = g.va(g.free_pfns()[0])
    assert g.update_va_mapping(va, g.pte(si, PTE_RO)) == 0
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, va, 16)])[0] == 0
    v = dom(impl, g).vcpus[0]
    assert not impl.pv.desc.map_ldt_shadow_page(v, 0)
    never_a_table(impl, si)
    assert_invariants(impl)


def test_shared_info_maps_writable(impl: ReferenceImplementation) -> None:
    g = Guest(impl, 48, 32)
    si, f = shared_info(impl, g), impl.hv.frames
    va = g.va(g.free_pfns()[0])
    assert g.update_va_mapping(va, g.pte(si, PTE_RW)) == 0
    assert (f.type_count[si], f.count[si]) == (2, 2)
    assert_invariants(impl)
    assert g.pin(si, 1) == -abi.EINVAL  # mapped or not
    assert g.update_va_mapping(va, 0) == 0
    assert (f.type_count[si], f.count[si]) == (1, 1) and f.owner[si] == g.domid
    never_a_table(impl, si)
    assert_invariants(impl)


def test_grant_frames_cannot_be_linked_or_pinned(impl: ReferenceImplementation) -> None:
    g = Guest(impl, 48, 32)
    frames = grant_frames(impl, g)
    slot = (g.va(0) >> abi.L2_PAGETABLE_SHIFT) + 1
    va = g.va(g.free_pfns()[0])
    for mfn in frames:
        assert g.update_va_mapping(va, g.pte(mfn, PTE_RW)) == 0  # the guest writes its grants
        assert g.pin(mfn, 1) == -abi.EINVAL
        assert g.set_entry(g.l2_mfn, slot, g.pte(mfn, PTE_RW)) == -abi.EINVAL
        assert g.update_va_mapping(va, 0) == 0
        assert g.pin(mfn, 2) == -abi.EINVAL
        assert g.set_entry(g.l2_mfn, slot, g.pte(mfn, PTE_RW)) == -abi.EINVAL
        assert impl.hv.frames.flags[mfn] & PGC_xen_heap
        assert mfn in dom(impl, g).xenpage_list
        never_a_table(impl, mfn)
    assert_invariants(impl)


def decrease(impl: ReferenceImplementation, g: Guest, mfns: list[int]) -> int:
    impl.hv.hypercall_table.update(MemOp(impl.pv).hypercalls())
    T = abi.XEN_MEMORY_RESERVATION_T
    extents = g.write_args(b"".join(m.to_bytes(4, "little") for m in mfns), offset=64)
    res = g.write_args(T.pack(extents, len(mfns), 0, 0, SELF))
    return g.hypercall("memory_op", abi.XENMEM_decrease_reservation, res)


@pytest.mark.parametrize("which", ["shared_info", "grant frame"])
def test_decrease_reservation_refuses_a_xen_heap_page(impl: ReferenceImplementation,
                                                      which: str) -> None:
    """Freed, the frame would go to the next domain (as a page table, say) while the
    hypervisor still writes this one's vcpu_info or grant flags into it."""
    g = Guest(impl, 48, 32)
    mfn = shared_info(impl, g) if which == "shared_info" else grant_frames(impl, g)[0]
    ordinary = g.mfn(g.free_pfns()[0])
    before = impl.hv.memory.read(mfn << abi.PAGE_SHIFT, abi.PAGE_SIZE)
    tot = dom(impl, g).tot_pages
    # The extents before it are done; the call stops at it: the number done.
    assert decrease(impl, g, [ordinary, mfn, g.mfn(g.free_pfns()[1])]) == 1
    assert dom(impl, g).tot_pages == tot - 1
    f = impl.hv.frames
    assert f.owner[mfn] == g.domid and mfn not in impl.hv.free_list
    assert f.flags[mfn] & PGC_allocated and (f.type_count[mfn], f.count[mfn]) == (1, 1)
    assert impl.hv.memory.read(mfn << abi.PAGE_SHIFT, abi.PAGE_SIZE) == before  # not scrubbed
    never_a_table(impl, mfn)
    assert_invariants(impl)
    if which == "shared_info":  # and the hypervisor still writes the domain's vcpu_info there
        v = dom(impl, g).vcpus[0]
        impl.pv.vcpu_info_write32(v, abi.VCPU_INFO_arch_cr2, 0xC0DE0000)
        raw = impl.hv.memory.read((mfn << abi.PAGE_SHIFT) + abi.SHARED_INFO_vcpu_info
                                  + abi.VCPU_INFO_arch_cr2, 4)
        assert int.from_bytes(raw, "little") == 0xC0DE0000


# --- Xen's private frames: no guest reference at all -------------------------------------------
@pytest.mark.parametrize("which", ["perdomain_pt", "stub", "reserved_gdt", "m2p"])
def test_xen_private_frames_cannot_be_mapped_even_as_domid_xen(
        impl: ReferenceImplementation, which: str) -> None:
    """A privileged domain naming DOMID_XEN as FOREIGNDOM reaches only frames Xen shares with
    it (none in the model): mapped writable, a per-domain page table would let it map any frame
    into any domain's per-domain area, the stub page would change code the hypervisor runs."""
    g = Guest(impl, 48, 32, privileged=True)
    other = Guest(impl, 48, 32)
    d = dom(impl, other)
    mfn = {"perdomain_pt": d.perdomain_pt[0], "stub": impl.pv.darch(d).stub_mfn,
           "reserved_gdt": impl.pv.reserved_gdt_mfn, "m2p": impl.hv.m2p_start}[which]
    va = g.va(g.free_pfns()[0])
    l1 = impl.hv.mm.guest_map_l1e(dom(impl, g).vcpus[0], va)
    assert l1 is not None
    index = (va >> abi.PAGE_SHIFT) & (abi.L1_PAGETABLE_ENTRIES - 1)
    for flags in (PTE_RW, PTE_RO):
        rc, done = g.mmu_update([(g.entry_maddr(l1, index), g.pte(mfn, flags))],
                                foreigndom=abi.DOMID_XEN)
        assert (rc, done) == (-abi.EINVAL, 0)
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, mfn, 0)], foreigndom=abi.DOMID_XEN)[0] < 0
    f = impl.hv.frames
    assert f.owner[mfn] == abi.DOMID_XEN and f.count[mfn] == 0 and f.type_count[mfn] == 0
    assert_invariants(impl)


# --- the console and store rings: held by the back ends while connected ------------------------
@pytest.mark.parametrize("ring", ["console", "store"])
def test_a_connected_ring_cannot_become_a_table(impl: ReferenceImplementation, ring: str) -> None:
    """xenconsoled and xenstored write the ring through foreign mappings that hold a writable
    type reference; without it the guest could unmap the ring and pin it as an L1, and the
    daemon's index updates would be PTEs of the guest's choice."""
    g = Guest(impl, 48, 32)
    d = dom(impl, g)
    mfn = g.mfn(g.free_pfns()[0])  # mapped by nothing of the guest's
    if ring == "console":
        impl.pv.consrings.attach(d, mfn)
    else:
        impl.pv.xenstore.introduce(d, mfn)
    for level in (1, 2):
        assert g.pin(mfn, level) == -abi.EINVAL
    slot = (g.va(0) >> abi.L2_PAGETABLE_SHIFT) + 1
    assert g.set_entry(g.l2_mfn, slot, g.pte(mfn, PTE_RW)) == -abi.EINVAL
    assert impl.hv.backend_maps == {mfn: 1}
    assert (impl.hv.frames.type[mfn], impl.hv.frames.type_count[mfn]) == (PGT.writable_page, 1)
    assert_invariants(impl)
    # Given back, it stays the guest's (and served) while the daemon maps it.
    assert decrease(impl, g, [mfn]) == 1
    assert impl.hv.frames.owner[mfn] == g.domid and mfn not in impl.hv.free_list
    never_a_table(impl, mfn)
    assert_invariants(impl)
    # The daemon lets go (domain destruction): the last reference frees the frame.
    (impl.pv.consrings if ring == "console" else impl.pv.xenstore).release(d)
    assert impl.hv.backend_maps == {}
    assert impl.hv.frames.owner[mfn] == DOMID_NONE and impl.hv.free_list.count(mfn) == 1
    assert_invariants(impl)


def test_a_ring_that_is_a_page_table_is_not_connected(impl: ReferenceImplementation) -> None:
    from xenspec.refmodel.backend import ForeignMapError

    g = Guest(impl, 48, 32)
    l1 = g.l1_mfns[0]
    before = impl.hv.memory.read(l1 << abi.PAGE_SHIFT, abi.PAGE_SIZE)
    with pytest.raises(ForeignMapError):
        impl.pv.consrings.attach(dom(impl, g), l1)
    assert impl.hv.memory.read(l1 << abi.PAGE_SHIFT, abi.PAGE_SIZE) == before  # not cleared
    assert impl.hv.backend_maps == {} and not impl.pv.consrings.conns
    assert_invariants(impl)


# --- destruction --------------------------------------------------------------------------------
def owned_by(m: Machine, domid: int) -> list[int]:
    return [mfn for mfn in range(m.hv.memory.nr_frames) if m.hv.frames.owner[mfn] == domid]


@needs_gcc
def test_destroy_frees_the_xen_pages_once() -> None:
    m = Machine(memory_mb=32, devices=True)
    m.pv.backends.domain()  # the back ends' domain, made on first use, stays
    free = len(m.hv.free_list)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    d = m.hv.domains[domid]
    m.pv.grants.table(d)
    xen_pages = list(d.xenpage_list)
    rings = [m.pv.consrings.conns[domid].mfn, m.pv.xenstore.conns[domid].mfn]
    assert len(xen_pages) == 1 + abi.NR_GRANT_FRAMES
    assert sorted(m.hv.backend_maps) == sorted(rings)
    assert check_invariants(m.hv) == []
    m.domctl.destroy(domid)
    assert domid not in m.hv.domains and owned_by(m, domid) == []
    assert m.hv.backend_maps == {}
    assert len(m.hv.free_list) == free and len(set(m.hv.free_list)) == free
    for mfn in xen_pages + rings:
        assert m.hv.frames.owner[mfn] == DOMID_NONE and not m.hv.hypervisor_writes(mfn)
    assert check_invariants(m.hv) == []


@needs_gcc
def test_a_mapped_shared_info_outlives_its_domain_and_no_longer() -> None:
    """A privileged domain's foreign mapping of shared_info (the tools map it; here the back
    ends' domain) holds it past the domain's destruction, as for any frame: it stays the dead
    domain's, which stays known, and it still cannot change type; the mapping's end frees it,
    once, and the dead domain with it."""
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    d = m.hv.domains[domid]
    si = m.pv.darch(d).shared_info_mfn
    hv = m.hv
    m.pv.backends.map_foreign(d, si)
    m.domctl.destroy(domid)
    assert hv.frames.owner[si] == domid and si not in hv.free_list
    assert domid in hv.domains and hv.domains[domid].xenpage_list == [si]
    assert not hv.mm.get_page_type(si, PGT.l1_page_table)
    assert hv.frames.type[si] == PGT.writable_page and hv.hypervisor_writes(si)
    assert check_invariants(hv) == []
    m.pv.backends.unmap_foreign(si)
    assert hv.frames.owner[si] == DOMID_NONE and hv.free_list.count(si) == 1
    assert owned_by(m, domid) == [] and domid not in hv.domains  # gone with its last page
    assert check_invariants(hv) == []


# --- the hypervisor's writes through the guest's page tables and grant device mappings --------
def test_copy_to_guest_never_writes_through_a_read_only_mapping(
        impl: ReferenceImplementation) -> None:
    """Xen writes a hypercall's results as __put_user does with CR0.WP set: the guest's own L1
    table, mapped read-only in its bootstrap region, is not a place setup_table can write the
    grant frame numbers to (the write fails, which setup_table ignores)."""
    g = Guest(impl, 48, 32)
    l1 = g.l1_mfns[0]
    before = impl.hv.memory.read(l1 << abi.PAGE_SHIFT, abi.PAGE_SIZE)
    l1_va = g.va(g.info.l1_pfns[0])
    v = dom(impl, g).vcpus[0]
    assert not impl.hv.copy_to_guest(v, l1_va, b"\xff" * 4)
    T = abi.GNTTAB_SETUP_TABLE_T
    uop = g.write_args(T.pack(SELF, abi.NR_GRANT_FRAMES, 0, l1_va))
    assert g.hypercall("grant_table_op", abi.GNTTABOP_setup_table, uop, 1) == 0
    assert T.unpack(g.read_args(0, T.size))[2] == abi.GNTST_okay
    assert impl.hv.memory.read(l1 << abi.PAGE_SHIFT, abi.PAGE_SIZE) == before
    assert_invariants(impl)


def test_a_writable_device_mapping_is_written_by_the_hypervisor(
        impl: ReferenceImplementation) -> None:
    """blkback writes guest frames through writable grant device mappings: such a frame holds a
    writable type reference (no table) and counts as written while mapped."""
    a, b = Guest(impl, 48, 32), Guest(impl, 48, 32)
    frame = a.mfn(a.free_pfns()[0])
    t = impl.pv.grants.table(dom(impl, a))
    impl.hv.memory.write(t.shared[0] << abi.PAGE_SHIFT | 8,
                         abi.GRANT_ENTRY_T.pack(abi.GTF_permit_access, b.domid, frame))
    v = dom(impl, b).vcpus[0]
    status, handle, bus = impl.pv.grants.map_grant_ref(v, 0, abi.GNTMAP_device_map, 1, a.domid)
    assert status == abi.GNTST_okay and impl.hv.hypervisor_writes(frame)
    assert a.pin(frame, 1) == -abi.EINVAL
    never_a_table(impl, frame)
    assert_invariants(impl)
    assert impl.pv.grants.unmap_grant_ref(v, 0, bus, handle) == abi.GNTST_okay
    assert not impl.hv.hypervisor_writes(frame)
    assert_invariants(impl)


@needs_gcc
def test_no_grant_table_is_made_for_a_dead_domain() -> None:
    """A destroyed domain stays known while another domain maps one of its frames; naming it
    in a grant operation must not share new Xen heap pages with it (they would never be
    relinquished)."""
    m = Machine(memory_mb=32)
    other = m.add_guest(str(build_guest("hello")), 4, paused=True)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    d = m.hv.domains[domid]
    mfn = d.page_list[0]  # a kernel page, mapped writable
    m.pv.backends.map_foreign(d, mfn)
    m.domctl.destroy(domid)
    assert domid in m.hv.domains and owned_by(m, domid) == [mfn]
    v = other.vcpus[0]
    status, _, _ = m.pv.grants.map_grant_ref(v, 0, abi.GNTMAP_device_map, 0, domid)
    assert status == abi.GNTST_bad_domain
    assert owned_by(m, domid) == [mfn] and m.hv.domains[domid].xenpage_list == []
    assert check_invariants(m.hv) == []
    m.pv.backends.unmap_foreign(mfn)
    assert owned_by(m, domid) == []
    assert check_invariants(m.hv) == []


@needs_gcc
def test_a_new_domain_with_a_dead_domains_id_gets_a_grant_table_of_its_own() -> None:
    """Once a destroyed domain is gone, its id may be given again (DOM0_CREATEDOMAIN with a
    domid): the new domain's grant table is new, shared with it, not the dead one's."""
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    m.pv.grants.table(m.hv.domains[domid])
    m.domctl.destroy(domid)
    assert domid not in m.hv.domains
    d = m.hv.create_domain(4, domid=domid)
    m.pv.setup_domain(d)
    t = m.pv.grants.table(d)
    assert not t.dying and len(t.shared) == abi.NR_GRANT_FRAMES
    for mfn in t.shared:
        assert m.hv.frames.owner[mfn] == domid and m.hv.frames.flags[mfn] & PGC_xen_heap
    assert sorted(d.xenpage_list) == sorted([m.pv.darch(d).shared_info_mfn, *t.shared])


@needs_gcc
def test_nothing_writes_a_dying_domains_released_shared_info() -> None:
    """A destroyed domain kept known by a frame another domain maps has released its
    shared_info: the time and event writes that would go there write nothing (they went to
    machine frame 0 once its shared_info_mfn was cleared)."""
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    d = m.hv.domains[domid]
    m.pv.backends.map_foreign(d, d.page_list[0])
    m.domctl.destroy(domid)
    assert domid in m.hv.domains and m.pv.darch(d).shared_info_mfn == 0
    m.hv.memory.scrub_frame(0)
    m.pv.vtime.use_guest_tsc()
    m.pv.vcpu_info_write8(d.vcpus[0], abi.VCPU_INFO_evtchn_upcall_pending, 1)
    m.pv.vcpu_info_write32(d.vcpus[0], abi.VCPU_INFO_arch_cr2, 0x1234)
    assert m.hv.memory.read(0, abi.PAGE_SIZE) == bytes(abi.PAGE_SIZE)

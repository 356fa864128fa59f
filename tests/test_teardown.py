"""Hostile call sequences followed by domain destruction (refmodel/domctl.py destroy): each
sequence here once left a reference the teardown did not undo, or undid one twice (an
AssertionError "reference count underflow" / "type count underflow" in mm.put_page /
put_page_type), or broke INV-COUNT. After each: no exception, every invariant holds, and
once every domain is destroyed every frame is back on the heap.
"""

from __future__ import annotations

from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGT_count_mask
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi


class MachineImpl(ReferenceImplementation):
    """The reference model's hypercall level on a ``Machine``, whose ``domctl`` destroys."""

    def __init__(self, memory_mb: int = 4) -> None:
        super().__init__()
        self.m = Machine(memory_mb=memory_mb)

    @property
    def hv(self) -> Hypervisor:
        return self.m.hv

    @property
    def pv(self) -> PVPlatform:
        return self.m.pv


def grant(impl: ReferenceImplementation, granter: Guest, ref: int, grantee: int,
          mfn: int) -> None:
    """The granter writes entry ``ref`` of its grant table, as a guest does."""
    t = impl.pv.grants.table(impl.hv.domains[granter.domid])
    maddr = (t.shared[0] << abi.PAGE_SHIFT) + ref * abi.GRANT_ENTRY_T.size
    impl.hv.memory.write(maddr, abi.GRANT_ENTRY_T.pack(abi.GTF_permit_access, grantee, mfn))


def destroy_all(impl: MachineImpl, free_before: int, *guests: Guest) -> None:
    for g in guests:
        impl.m.domctl.destroy(g.domid)
        assert check_invariants(impl.hv) == []
    assert not impl.hv.domains
    assert len(impl.hv.free_list) == free_before


def test_pinned_xen_heap_frames_are_relinquished() -> None:
    """domain_relinquish_resources relinquishes d->xenpage_list (the Xen-heap frames shared
    with the domain: shared_info, the grant-table frames) as well as d->page_list. A grant
    frame pinned as a page directory was left pinned, validated and owned by a domain that
    no longer existed: its frames never came back and the checker met a directory of no
    domain."""
    impl = MachineImpl()
    free = len(impl.hv.free_list)
    a = Guest(impl, 48, 32)
    shared = impl.pv.grants.table(impl.hv.domains[a.domid]).shared
    a.pin(shared[0], 2)  # whether the pin is allowed or not, destruction undoes it
    a.pin(shared[1], 1)
    assert check_invariants(impl.hv) == []
    destroy_all(impl, free, a)


def test_device_and_host_map_at_the_type_count_limit() -> None:
    """A grant mapped with GNTMAP_host_map | GNTMAP_device_map takes references for each.
    With the granted frame one type reference short of PGT_count_mask, 3.0.4's unchecked
    second get_page_type left the device mapping with none, which its teardown dropped
    anyway (INV-COUNT, then a type count underflow when the granter was destroyed). The map
    now fails as after XSA-224 and nothing changes."""
    impl = MachineImpl()
    free = len(impl.hv.free_list)
    a, b = Guest(impl, 100, 32), Guest(impl, 48, 32)
    frames = impl.hv.frames
    target = a.mfn(20)  # mapped writable by the bootstrap tables
    # The granter maps it writable in L1 tables it writes and pins, up to one reference
    # below the limit.
    need = PGT_count_mask - 1 - int(frames.type_count[target])
    for pfn in a.free_pfns():
        if not need:
            break
        n = min(need, abi.L1_PAGETABLE_ENTRIES)
        words = [target << abi.PAGE_SHIFT | abi._PAGE_PRESENT | abi._PAGE_RW] * n
        words += [0] * (abi.L1_PAGETABLE_ENTRIES - n)
        impl.write_pfn(a.domid, pfn, 0, b"".join(w.to_bytes(4, "little") for w in words))
        assert a.pin(a.mfn(pfn), 1) == 0
        need -= n
    assert frames.type_count[target] == PGT_count_mask - 1
    grant(impl, a, 1, b.domid, target)
    before = (int(frames.count[target]), int(frames.type_count[target]))
    vb = impl.hv.domains[b.domid].vcpus[0]
    flags = abi.GNTMAP_host_map | abi.GNTMAP_device_map
    status, _, _ = impl.pv.grants.map_grant_ref(vb, b.va(b.free_pfns()[0]), flags, 1, a.domid)
    assert status == abi.GNTST_general_error
    assert (frames.count[target], frames.type_count[target]) == before
    assert check_invariants(impl.hv) == []
    destroy_all(impl, free, b, a)

"""Hostile call sequences followed by domain destruction (refmodel/domctl.py destroy): each
sequence here once left a reference the teardown did not undo, or undid one twice (an
AssertionError "reference count underflow" / "type count underflow" in mm.put_page /
put_page_type), or broke INV-COUNT. After each: no exception, every invariant holds, and
once every domain is destroyed every frame is back on the heap.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from xenspec.conformance.adapter import DomainInfo
from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGT_count_mask
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import IncrementalChecker, check_invariants
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT


class MachineImpl(ReferenceImplementation):
    """The reference model's hypercall level on a ``Machine``, whose ``domctl`` destroys."""

    def __init__(self, memory_mb: int = 4) -> None:
        super().__init__()
        self.m = Machine(memory_mb=memory_mb)
        self.p2m: dict[int, tuple[int, ...]] = {}

    @property
    def hv(self) -> Hypervisor:
        return self.m.hv

    @property
    def pv(self) -> PVPlatform:
        return self.m.pv

    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool) -> DomainInfo:
        info = super().create_domain(nr_pages, nr_mapped, privileged)
        self.p2m[info.domid] = info.p2m
        return info

    def _maddr(self, domid: int, pfn: int, offset: int, length: int) -> int:
        """The guest writes its arguments through its own mappings: pfn -> mfn as built
        (the balloon reorders page_list, not the guest's mappings)."""
        return (self.p2m[domid][pfn] << abi.PAGE_SHIFT) + offset


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


def test_a_dead_domain_goes_with_its_last_frame() -> None:
    """A destroyed domain whose frame another domain still maps stays, as Xen's struct domain
    does, until that frame is freed; then it is gone (page_alloc.c free_domheap_pages drops
    the domain's reference with its last page; domain.c put_domain -> domain_destroy), and
    no hypercall can name it any more (event_channel.c find_domain_by_id: -ESRCH)."""
    impl = MachineImpl()
    free = len(impl.hv.free_list)
    a, b = Guest(impl, 40, 24), Guest(impl, 40, 24)
    frame = a.mfn(30)
    grant(impl, a, 1, b.domid, frame)
    vb = impl.hv.domains[b.domid].vcpus[0]
    status, handle, _ = impl.pv.grants.map_grant_ref(vb, b.va(20), abi.GNTMAP_host_map, 1,
                                                     a.domid)
    assert status == abi.GNTST_okay
    impl.m.domctl.destroy(a.domid)
    assert impl.hv.domains[a.domid].page_list == [frame]  # kept alive by b's mapping
    assert impl.pv.grants.unmap_grant_ref(vb, b.va(20), 0, handle) == abi.GNTST_okay
    assert a.domid not in impl.hv.domains
    assert b.hypercall("event_channel_op", abi.EVTCHNOP_bind_interdomain,
                       b.write_args(abi.EVTCHN_BIND_INTERDOMAIN_T.pack(a.domid, 1, 0))) == (
        -abi.ESRCH)
    assert check_invariants(impl.hv) == []
    destroy_all(impl, free, b)


# ------------------------------------------------------------------------------------------
# Hostile sequences from two unprivileged domains, with destruction at any point.
# ------------------------------------------------------------------------------------------
PTE_FLAGS = st.sampled_from([0x1, 0x3, 0x5, 0x7, 0x23, 0x63, 0x67, 0x103, 0x0])
PICK = st.integers(0, 2**16)
KIND = st.sampled_from(["own", "own", "own", "table", "other", "xen_heap", "beyond"])


class TeardownMachine(RuleBasedStateMachine):
    """Page tables, pins, base pointers, GDT and LDT frames, grants (host and device maps),
    the balloon and destruction, in any order; every invariant after every step, and every
    frame back on the heap once both domains are destroyed."""

    @initialize()
    def boot(self) -> None:
        self.impl = MachineImpl()
        self.free = len(self.impl.hv.free_list)
        self.guests = [Guest(self.impl, 40, 24), Guest(self.impl, 40, 24)]
        self.impl.hv.hypercall_table.update(self.impl.m.memop.hypercalls())
        self.checker = IncrementalChecker(self.impl.hv)

    def live(self, who: int) -> Guest | None:
        g = self.guests[who]
        ok = self.running(g.domid) and self.impl.hv.domains[g.domid].is_running
        return g if ok else None

    def frame(self, g: Guest, kind: str, pick: int) -> int:
        hv = self.impl.hv
        if kind == "table":
            tables = [m for m in hv.domains[g.domid].page_list if 1 <= hv.frames.type[m] <= 2]
            return tables[pick % len(tables)] if tables else g.mfn(pick % 40)
        if kind == "other":
            return self.guests[1 - self.guests.index(g)].mfn(pick % 40)
        if kind == "xen_heap":
            d = hv.domains[g.domid]
            heap = [self.impl.pv.darch(d).shared_info_mfn, *self.impl.pv.grants.table(d).shared]
            return heap[pick % len(heap)]
        if kind == "beyond":
            return hv.memory.nr_frames + pick % 3
        return g.mfn(pick % 40)

    def writable(self, g: Guest, mfn: int) -> bool:
        """The guest can write the frame's contents: its own, and mappable writable (a frame
        of another type loses it when mapped so, at type count 0)."""
        f = self.impl.hv.frames
        if f.owner[mfn] != g.domid or mfn in self.impl.pv.grants.table(
                self.impl.hv.domains[g.domid]).shared:
            return False
        if f.type[mfn] not in (PGT.none, PGT.writable_page):
            if f.type_count[mfn]:
                return False
            assert self.impl.hv.mm.get_page_type(mfn, PGT.writable_page)
            self.impl.hv.mm.put_page_type(mfn)
        return True

    @rule(who=st.integers(0, 1), table=PICK, tkind=KIND, index=st.integers(0, 1023),
          pick=PICK, kind=KIND, flags=PTE_FLAGS)
    def set_entry(self, who: int, table: int, tkind: str, index: int, pick: int, kind: str,
                  flags: int) -> None:
        if (g := self.live(who)) is not None:
            g.set_entry(self.frame(g, tkind, table), index,
                        g.pte(self.frame(g, kind, pick), flags))

    @rule(who=st.integers(0, 1), pfn=st.integers(24, 39), level=st.integers(1, 2),
          entries=st.lists(st.tuples(st.integers(0, 1007), PICK, KIND, PTE_FLAGS), max_size=6),
          how=st.sampled_from(["pin", "hook", "baseptr"]))
    def make_table(self, who: int, pfn: int, level: int,
                   entries: list[tuple[int, int, str, int]], how: str) -> None:
        """Write a table into a free frame, then pin it, hook it into the current directory
        or load it as the base pointer."""
        g = self.live(who)
        if g is None or not self.writable(g, g.mfn(pfn)):
            return
        words = [0] * abi.L1_PAGETABLE_ENTRIES
        for index, target, kind, flags in entries:
            words[index] = g.pte(self.frame(g, kind, target), flags)
        self.impl.write_pfn(g.domid, pfn, 0, b"".join(w.to_bytes(4, "little") for w in words))
        mfn = g.mfn(pfn)
        if how == "pin":
            g.pin(mfn, level)
        elif how == "hook" and level == 1:
            g.set_entry(g.l2_mfn, 700 + pfn, g.pte(mfn, 0x7))
        else:
            g.new_baseptr(mfn)

    @rule(who=st.integers(0, 1), pick=PICK, kind=KIND, unpin=st.booleans())
    def pin_or_unpin(self, who: int, pick: int, kind: str, unpin: bool) -> None:
        if (g := self.live(who)) is not None:
            mfn = self.frame(g, kind, pick)
            if unpin:
                g.unpin(mfn)
            else:
                g.pin(mfn, 1 + pick % 2)

    @rule(who=st.integers(0, 1), pfn=st.integers(24, 39), ldt=st.booleans())
    def descriptor_table(self, who: int, pfn: int, ldt: bool) -> None:
        """A zeroed frame as the GDT (set_gdt), or as the LDT: mapped read-only at a page of
        the bootstrap region, set_ldt, and its first page mapped as a descriptor load
        would (map_ldt_shadow_page)."""
        g = self.live(who)
        if g is None or not self.writable(g, g.mfn(pfn)):
            return
        mfn = g.mfn(pfn)
        self.impl.write_pfn(g.domid, pfn, 0, bytes(abi.PAGE_SIZE))
        if not ldt:
            g.set_gdt([mfn], 512)
            return
        va = g.va(17)
        if g.update_va_mapping(va, g.pte(mfn, abi._PAGE_PRESENT)) == 0:
            g.mmuext_op([(abi.MMUEXT_SET_LDT, va, 512)])
            v = self.impl.hv.domains[g.domid].vcpus[0]
            self.impl.pv.desc.map_ldt_shadow_page(v, 0)

    @rule(who=st.integers(0, 1), ref=st.integers(0, 3), pick=PICK, kind=KIND,
          flags=st.sampled_from([abi.GNTMAP_host_map, abi.GNTMAP_device_map,
                                 abi.GNTMAP_host_map | abi.GNTMAP_device_map,
                                 abi.GNTMAP_host_map | abi.GNTMAP_readonly]),
          slot=st.integers(18, 23))
    def grant_and_map(self, who: int, ref: int, pick: int, kind: str, flags: int,
                      slot: int) -> None:
        """The other domain grants a frame (any frame it names), this one maps it."""
        g, granter = self.live(who), self.live(1 - who)
        if g is None or granter is None:
            return
        grant(self.impl, granter, ref, g.domid, self.frame(granter, kind, pick))
        v = self.impl.hv.domains[g.domid].vcpus[0]
        self.impl.pv.grants.map_grant_ref(v, g.va(slot), flags, ref, granter.domid)

    @rule(who=st.integers(0, 1), handle=st.integers(0, 7), slot=st.integers(18, 23),
          bus=st.booleans())
    def unmap(self, who: int, handle: int, slot: int, bus: bool) -> None:
        if (g := self.live(who)) is None:
            return
        grants = self.impl.pv.grants
        mt = grants.mapping(g.domid, handle)
        v = self.impl.hv.domains[g.domid].vcpus[0]
        grants.unmap_grant_ref(v, g.va(slot), mt.frame << abi.PAGE_SHIFT if bus else 0, handle)

    @rule(who=st.integers(0, 1), pick=PICK, kind=KIND)
    def give_back(self, who: int, pick: int, kind: str) -> None:
        """decrease_reservation of any frame it names."""
        if (g := self.live(who)) is None:
            return
        extents = g.write_args(self.frame(g, kind, pick).to_bytes(4, "little"), 64)
        res = g.write_args(abi.XEN_MEMORY_RESERVATION_T.pack(extents, 1, 0, 0, abi.DOMID_SELF),
                           128)
        g.hypercall("memory_op", abi.XENMEM_decrease_reservation, res)

    @rule(who=st.integers(0, 1))
    def destroy(self, who: int) -> None:
        if self.running(self.guests[who].domid):
            self.impl.m.domctl.destroy(self.guests[who].domid)

    def running(self, domid: int) -> bool:
        """The domain exists and destroy has not begun (Domain.is_dying)."""
        d = self.impl.hv.domains.get(domid)
        return d is not None and not d.is_dying

    @invariant()
    def invariants_hold(self) -> None:
        if hasattr(self, "impl"):
            found = self.checker.check()  # incremental; the full check at the teardown
            assert not found, "\n".join(found)

    def teardown(self) -> None:
        if not hasattr(self, "impl"):
            return
        assert check_invariants(self.impl.hv) == []
        for g in self.guests:
            if self.running(g.domid):
                self.impl.m.domctl.destroy(g.domid)
        assert check_invariants(self.impl.hv) == []
        assert len(self.impl.hv.free_list) == self.free, "frames outlived both domains"


TeardownMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("XENSPEC_TEARDOWN_EXAMPLES", "8")),
    stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestTeardown = TeardownMachine.TestCase

"""Hypercall level: the balloon (``memory_op``), through the adapter.

Rules of Xen 3.0.4 xen/common/memory.c (do_memory_op, increase_reservation,
decrease_reservation, populate_physmap, guest_remove_page) on the interface of
xen/include/public/memory.h (``struct xen_memory_reservation``; the command's low 4 bits are
the operation, the rest the extent to start from). A reservation operation returns the number
of extents done, counted from the start extent, and answers every refusal of its arguments
with that start extent, never an errno; the size queries do answer with errnos. A paravirtual
guest names its frames by machine frame number.

The model follows XSA-31 for an extent order above MAX_ORDER (xenspec.conformance.profiles);
no test here depends on it.
"""

from __future__ import annotations

import pytest

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.checks import Frame, assert_frame, assert_invariants
from xenspec.conformance.driver import ARG_PAGES, Guest
from xenspec.spec import abi
from xenspec.spec.invariants import FREE_FRAME_OWNER
from xenspec.spec.pagetable import PGT

pytestmark = pytest.mark.needs("memory")

SELF = abi.DOMID_SELF
EPERM, ESRCH, EFAULT, ENOSYS = -abi.EPERM, -abi.ESRCH, -abi.EFAULT, -abi.ENOSYS
INC, DEC, POP = (abi.XENMEM_increase_reservation, abi.XENMEM_decrease_reservation,
                 abi.XENMEM_populate_physmap)
DEC_C, INC_C = "memory_op/decrease_reservation", "memory_op/increase_reservation"
SHIFT = abi.XENMEM_START_EXTENT_SHIFT
LIST = 0x100  # the extent list's offset in the argument area (the reservation is at 0)


class Mem:
    """XENMEM_* wrappers of one domain: the reservation at the start of its argument area,
    the extent list after it."""

    def __init__(self, g: Guest) -> None:
        self.g = g

    @property
    def list_va(self) -> int:
        return self.g.va(self.g.arg_pfn) + LIST

    def reservation(self, op: int, extents: list[int] | None, nr: int | None = None,
                    order: int = 0, address_bits: int = 0, dom: int = SELF,
                    start: int = 0, extent_start: int | None = None) -> int:
        """Issue ``op``: ``extents`` written as the list (None: extent_start NULL, or
        ``extent_start`` as given); ``nr`` defaults to the list's length."""
        if extents is not None:
            self.g.write_args(b"".join(x.to_bytes(4, "little") for x in extents), LIST)
        ptr = (self.list_va if extents is not None else 0) if extent_start is None \
            else extent_start
        n = len(extents or []) if nr is None else nr
        va = self.g.write_args(abi.XEN_MEMORY_RESERVATION_T.pack(ptr, n, order, address_bits,
                                                                 dom))
        return self.g.hypercall("memory_op", op | start << SHIFT, va)

    def extents(self, n: int) -> list[int]:
        raw = self.g.read_args(LIST, 4 * n)
        return [int.from_bytes(raw[i : i + 4], "little") for i in range(0, 4 * n, 4)]

    def size(self, op: int, dom: int = SELF) -> int:
        va = self.g.write_args(dom.to_bytes(2, "little"))
        return self.g.hypercall("memory_op", op, va)


def owned(impl: HypercallLevel, mfn: int, domid: int) -> bool:
    f = impl.frame(mfn)
    return f.owner == domid and f.count > 0


@pytest.mark.clauses("memory_op")
def test_sizes_and_unknown_operations(hv_impl: HypercallLevel) -> None:
    """maximum_ram_page is max_page; current_reservation and maximum_reservation are the
    domain's tot_pages and max_pages, for another domain only with privilege (-EPERM) and
    if it exists (-ESRCH); an unreadable domid is -EFAULT; an operation not modelled (the
    machphys list, an unknown one) is -ENOSYS."""
    a, b = Guest(hv_impl, 48, 32), Guest(hv_impl, 64, 32)
    priv = Guest(hv_impl, 40, 32, privileged=True)
    ma = Mem(a)
    assert a.hypercall("memory_op", abi.XENMEM_maximum_ram_page, 0) == hv_impl.nr_frames(), \
        "memory_op: maximum_ram_page is the number of machine frames (max_page)"
    assert ma.size(abi.XENMEM_current_reservation) == 48
    assert ma.size(abi.XENMEM_maximum_reservation) == 48
    assert ma.size(abi.XENMEM_current_reservation, b.domid) == EPERM
    assert ma.size(abi.XENMEM_maximum_reservation, b.domid) == EPERM
    assert Mem(priv).size(abi.XENMEM_current_reservation, b.domid) == 64
    assert Mem(priv).size(abi.XENMEM_maximum_reservation, a.domid) == 48
    assert Mem(priv).size(abi.XENMEM_current_reservation, 0x7000) == ESRCH
    for op in (abi.XENMEM_current_reservation, abi.XENMEM_maximum_reservation):
        assert a.hypercall("memory_op", op, 0x1000) == EFAULT
        assert a.hypercall("memory_op", op, abi.HYPERVISOR_VIRT_START) == EFAULT
    for op in (abi.XENMEM_machphys_mfn_list, 7, 15):
        assert a.hypercall("memory_op", op, a.va(a.arg_pfn)) == ENOSYS, f"memory_op {op}"


@pytest.mark.clauses("memory_op/decrease_reservation", "memory_op/increase_reservation",
                     "INV-COUNT", "INV-FREE-REF")
def test_give_back_and_take_again(hv_impl: HypercallLevel) -> None:
    """decrease_reservation frees the domain's unused frames (tot_pages drops); with room
    below max_pages increase_reservation hands out as many (written to the list, or with a
    NULL list not written), each the domain's with only its allocation reference; past
    max_pages it stops, returning the extents done."""
    g = Guest(hv_impl, 48, 32)
    m = Mem(g)
    give = g.free_mfns(3)
    assert m.reservation(DEC, give) == 3, f"{DEC_C}: three unused frames"
    for mfn in give:
        assert not owned(hv_impl, mfn, g.domid), f"{DEC_C}: frame {mfn:#x} is still held"
    assert m.size(abi.XENMEM_current_reservation) == 45
    assert_invariants(hv_impl, [g])
    assert m.reservation(INC, [0, 0]) == 2, f"{INC_C}: two frames below max_pages"
    got = m.extents(2)
    assert len(set(got)) == 2, f"{INC_C}: extents written {got}"
    for mfn in got:
        assert owned(hv_impl, mfn, g.domid), f"{INC_C}: frame {mfn:#x} is not the domain's"
        assert hv_impl.frame(mfn).allocated
        assert_frame(hv_impl, mfn, Frame(PGT.none, 0, 1), f"{INC_C}: a new frame")
    assert m.reservation(INC, None, nr=1) == 1, f"{INC_C}: a NULL list"
    assert m.size(abi.XENMEM_current_reservation) == 48
    assert m.reservation(INC, [0, 0]) == 0, f"{INC_C}: past max_pages"
    assert m.extents(2) == [0, 0], f"{INC_C}: nothing written past max_pages"
    assert_invariants(hv_impl, [g])


@pytest.mark.clauses("memory_op/decrease_reservation", "INV-COUNT", "INV-FREE-REF")
def test_referenced_frames_stay_until_released(hv_impl: HypercallLevel) -> None:
    """guest_remove_page drops the pin and the allocation reference and its own: a frame
    still mapped stays the domain's (and in tot_pages) until the mapping goes, a pinned table
    with nothing else is freed at once. It stops at the first frame that is not the domain's
    (another's, one already given back, a Xen heap page shared with it), returning the
    extents done."""
    a, b = Guest(hv_impl, 48, 32), Guest(hv_impl, 48, 32)
    m = Mem(a)
    data = a.data_pfn
    mapped, at = a.mfn(data), a.l1e_of(data)
    pinned, x = a.free_mfns(2)
    assert a.pin(pinned, 1) == 0
    assert m.reservation(DEC, [mapped, pinned]) == 2
    assert_frame(hv_impl, mapped, Frame(PGT.writable_page, 1, 1, validated=True),
                 f"{DEC_C}: a mapped frame keeps its mapping's references only")
    f = hv_impl.frame(mapped)
    assert f.owner == a.domid and not f.allocated, f"{DEC_C}: the mapped frame: {f}"
    assert not owned(hv_impl, pinned, a.domid), f"{DEC_C}: the pinned table was not freed"
    assert m.size(abi.XENMEM_current_reservation) == 47, \
        f"{DEC_C}: the mapped frame counts until its last reference goes"
    assert m.reservation(DEC, [mapped]) == 1, f"{DEC_C}: the mapped frame again"
    assert_frame(hv_impl, mapped, Frame(PGT.writable_page, 1, 1, validated=True),
                 f"{DEC_C}: a frame whose allocation is gone keeps its mapping's references "
                 "(guest_remove_page drops the allocation reference only once)")
    assert_invariants(hv_impl, [a, b])
    assert a.set_entry(*at, 0) == 0
    assert not owned(hv_impl, mapped, a.domid), f"{DEC_C}: freed with its last reference"
    assert m.size(abi.XENMEM_current_reservation) == 46
    (theirs,) = b.free_mfns(1)
    assert m.reservation(DEC, [x, theirs, x]) == 1, f"{DEC_C}: another domain's frame"
    assert owned(hv_impl, theirs, b.domid)
    (y,) = a.free_mfns(1, skip=3)
    assert m.reservation(DEC, [y, y]) == 1, f"{DEC_C}: a frame given back twice"
    va = a.write_args(abi.GNTTAB_SETUP_TABLE_T.pack(SELF, 1, 0, a.va(a.arg_pfn) + 0x400))
    assert a.hypercall("grant_table_op", abi.GNTTABOP_setup_table, va, 1) == 0
    shared = int.from_bytes(a.read_args(0x400, 4), "little")
    assert m.reservation(DEC, [shared]) == 0, \
        f"{DEC_C}: a grant-table frame (a Xen heap page) cannot be given back"
    assert owned(hv_impl, shared, a.domid)
    assert_invariants(hv_impl, [a, b])


@pytest.mark.clauses("memory_op/decrease_reservation", "memory_op/increase_reservation")
def test_refusals_answer_the_start_extent(hv_impl: HypercallLevel) -> None:
    """do_memory_op: an unreadable reservation, more extents than the command can count, a
    start extent past nr_extents, DMA below 30 address bits, another domain without
    privilege or no such domain: the answer is the start extent, nothing done. A start
    extent resumes the list there. An extent order above 0 needs privilege (nothing done
    otherwise); an extent list that is not writable or readable stops the operation."""
    g, other = Guest(hv_impl, 48, 32), Guest(hv_impl, 48, 32)
    priv = Guest(hv_impl, 48, 32, privileged=True)
    m = Mem(g)
    give = g.free_mfns(4)
    for op in (INC, DEC, POP):
        name = DEC_C if op == DEC else INC_C
        for start in (0, 2):
            assert g.hypercall("memory_op", op | start << SHIFT, 0x1000) == start, \
                f"{name}: an unreadable reservation answers the start extent {start}"
        assert m.reservation(op, give, nr=1 << (32 - SHIFT), start=1) == 1, \
            f"{name}: nr_extents above ULONG_MAX >> START_EXTENT_SHIFT"
        assert m.reservation(op, give, start=5) == 5, f"{name}: a start past nr_extents"
        assert m.reservation(op, give, address_bits=20, start=1) == 1, \
            f"{name}: DMA memory below dma_bitsize"
        assert m.reservation(op, give, dom=other.domid, start=2) == 2, \
            f"{name}: another domain without privilege"
        assert Mem(priv).reservation(op, give, dom=0x7000, start=1) == 1, \
            f"{name}: no such domain"
        if op != DEC:
            assert m.reservation(op, give, order=1) == 0, f"{name}: order 1 without privilege"
    for mfn in give:
        assert owned(hv_impl, mfn, g.domid), "memory_op: a refused call gave a frame back"
    assert m.size(abi.XENMEM_current_reservation) == 48
    assert m.reservation(DEC, give, address_bits=32) == 4, \
        f"{DEC_C}: address_bits at the machine's width asks for nothing special"
    assert m.reservation(INC, [0, 0, 0], start=2) == 3, f"{INC_C}: resumed at extent 2"
    assert m.extents(3)[:2] == [0, 0] and owned(hv_impl, m.extents(3)[2], g.domid)
    # increase_reservation writes each mfn after allocating its extent: a list it cannot
    # write stops the call there, the frame allocated (memory.c: "return i").
    assert m.reservation(INC, None, nr=2, extent_start=0x1000) == 0, \
        f"{INC_C}: an extent list the guest has not mapped"
    pd = g.va(g.info.pt_base_pfn)
    assert m.reservation(INC, None, nr=2, extent_start=pd) == 0, \
        f"{INC_C}: an extent list the guest maps read-only"
    assert m.size(abi.XENMEM_current_reservation) == 47
    assert m.reservation(DEC, None, nr=1, extent_start=0x1000) == 0, \
        f"{DEC_C}: an unreadable extent list"
    assert_invariants(hv_impl, [g, other, priv])


@pytest.mark.clauses("memory_op/decrease_reservation", "memory_op/increase_reservation",
                     "INV-COUNT")
def test_orders_and_populate_physmap(hv_impl: HypercallLevel) -> None:
    """A privileged domain's extent of order 1 is two aligned frames, both its own;
    decrease_reservation of order 1 gives back both; populate_physmap reads a pfn per
    extent, allocates, records the M2P entry of each frame (gpfn + j, the pfn need not be
    aligned) and writes the mfn back."""
    g = Guest(hv_impl, 64, 32, privileged=True)
    m = Mem(g)
    give = g.free_mfns(6)
    assert m.reservation(DEC, give) == 6
    assert m.reservation(INC, [0], order=1) == 1, f"{INC_C}: order 1, privileged"
    (base,) = m.extents(1)
    assert base % 2 == 0, f"{INC_C}: an order-1 extent at {base:#x} is not aligned"
    assert owned(hv_impl, base, g.domid) and owned(hv_impl, base + 1, g.domid)
    assert m.size(abi.XENMEM_current_reservation) == 60
    assert m.reservation(DEC, [base], order=1) == 1, f"{DEC_C}: order 1"
    assert not owned(hv_impl, base, g.domid) and not owned(hv_impl, base + 1, g.domid)
    # An extent of order 1 given back names its first frame; the second is the next one,
    # whether or not the first is aligned (memory.c: gmfn + j).
    assert m.reservation(INC, [0, 0], order=1) == 2, f"{INC_C}: two extents of order 1"
    mine = set(m.extents(2)) | {x + 1 for x in m.extents(2)}
    odd = sorted(x for x in mine if x % 2 and x + 1 in mine)
    if odd:
        assert m.reservation(DEC, [odd[0]], order=1) == 1, \
            f"{DEC_C}: an extent of order 1 at the odd frame {odd[0]:#x}"
        assert not owned(hv_impl, odd[0], g.domid) and not owned(hv_impl, odd[0] + 1, g.domid)
        assert m.reservation(DEC, sorted(mine - {odd[0], odd[0] + 1})) == 2
    else:
        assert m.reservation(DEC, sorted(mine)) == 4
    assert m.reservation(POP, [0x900, 0x901]) == 2, "populate_physmap of two pfns"
    got = m.extents(2)
    for pfn, mfn in zip((0x900, 0x901), got, strict=True):
        assert owned(hv_impl, mfn, g.domid), f"{INC_C}: populate_physmap: {mfn:#x}"
        assert hv_impl.machphys(mfn) == pfn, \
            f"{INC_C}: populate_physmap: M2P of {mfn:#x} is {hv_impl.machphys(mfn):#x}"
    assert m.reservation(POP, [0xA01], order=1) == 1, "populate_physmap of order 1"
    (pair,) = m.extents(1)
    assert [hv_impl.machphys(pair), hv_impl.machphys(pair + 1)] == [0xA01, 0xA02], \
        f"{INC_C}: populate_physmap: the M2P of an extent's frames is gpfn + j"
    assert m.size(abi.XENMEM_current_reservation) == 62
    assert_invariants(hv_impl, [g])


@pytest.mark.clauses("memory_op/decrease_reservation", "memory_op/increase_reservation")
def test_long_lists_complete(hv_impl: HypercallLevel) -> None:
    """A list longer than one invocation's work (Xen continues it with the extents done in
    the command's high bits; the guest sees one call) is done whole, in order."""
    g = Guest(hv_impl, 400, 32)
    m = Mem(g)
    give = g.free_mfns(300)
    assert len(give) * 4 + LIST <= ARG_PAGES * abi.PAGE_SIZE
    assert m.reservation(DEC, give) == 300, f"{DEC_C}: 300 frames"
    assert not any(owned(hv_impl, x, g.domid) for x in give)
    assert m.reservation(INC, [0] * 300) == 300, f"{INC_C}: 300 frames"
    got = m.extents(300)
    assert len(set(got)) == 300 and all(owned(hv_impl, x, g.domid) for x in got)
    assert m.size(abi.XENMEM_current_reservation) == 400
    assert_invariants(hv_impl, [g])


@pytest.mark.clauses("memory_op/decrease_reservation", "memory_op/increase_reservation",
                     "INV-FREE-REF")
def test_the_heap_runs_out(hv_impl: HypercallLevel) -> None:
    """alloc_domheap_pages (page_alloc.c) hands each free frame out once, down to the last:
    the aligned extents of order 1 and 2 a privileged domain takes leave the heap, the last
    free frames go to the domain that asks (increase_reservation answers the extents done,
    written to its list), and with none left an extent is refused."""
    priv, g = Guest(hv_impl, 64, 32, privileged=True), Guest(hv_impl, 48, 32)
    mp, m = Mem(priv), Mem(g)
    assert mp.reservation(DEC, priv.free_mfns(16)) == 16, f"{DEC_C}: 16 unused frames"
    assert m.reservation(DEC, g.free_mfns(8)) == 8, f"{DEC_C}: 8 unused frames"
    taken: list[int] = []
    for order in (1, 2, 1, 2, 1, 1):
        assert mp.reservation(INC, [0], order=order) == 1, f"{INC_C}: an extent of order {order}"
        (base,) = mp.extents(1)
        assert base % (1 << order) == 0, f"{INC_C}: extent {base:#x} of order {order} unaligned"
        taken += range(base, base + (1 << order))
    assert len(set(taken)) == 16 and all(owned(hv_impl, x, priv.domid) for x in taken), \
        f"{INC_C}: the extents' frames {[hex(x) for x in taken]} are not all the domain's"

    def free() -> list[int]:
        return [x for x in range(hv_impl.nr_frames())
                if hv_impl.frame(x).owner == FREE_FRAME_OWNER]

    filler = Guest(hv_impl, len(free()) - 8, 32)  # the builder's own frames come on top
    left = free()
    assert 0 < len(left) < 8, f"the heap should be down to a few frames, not {len(left)}"
    assert m.reservation(INC, [0] * 8) == len(left), \
        f"{INC_C}: {len(left)} frames were free, room for 8 below max_pages"
    got = m.extents(len(left))
    assert sorted(got) == left, \
        f"{INC_C}: handed out {[hex(x) for x in got]}, the free frames were " \
        f"{[hex(x) for x in left]}"
    assert all(owned(hv_impl, x, g.domid) for x in got) and not free()
    assert m.reservation(INC, [0]) == 0, f"{INC_C}: an extent with no free frame left"
    assert m.reservation(DEC, [got[0]]) == 1, f"{DEC_C}: one frame back"
    assert m.reservation(INC, [0]) == 1, f"{INC_C}: the one free frame"
    assert_invariants(hv_impl, [priv, g, filler])

"""Hypercall level: one test per rule of the paravirtual MMU (xen/arch/x86/mm.c, Xen 3.0.4,
x86_32 non-PAE).

Every test drives a domain of the implementation as its kernel would, through
``xenspec.conformance.driver.Guest``, checks the exact return code and ``*done`` count, the
resulting frame state (``page_info`` through the adapter; counts only when the implementation
keeps Xen's), table contents and the M2P, and ends with every invariant checked on the state
left behind. A failure message starts with the rule broken: the mm.c function or the invariant.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from xenspec.conformance.adapter import HypercallLevel, XenWrittenFrames
from xenspec.conformance.checks import Frame, assert_frame, assert_invariants, frame_of
from xenspec.conformance.driver import (
    DONE_OFFSET,
    PTE_RO,
    PTE_RW,
    UNSET,
    Guest,
    pack_mmu_updates,
    pack_mmuext_ops,
)
from xenspec.conformance.view import frame_table, xen_slots
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT, pte_get_pfn

EINVAL, ENOSYS, EFAULT, ESRCH = -abi.EINVAL, -abi.ENOSYS, -abi.EFAULT, -abi.ESRCH
NONE, L1, L2, WRITABLE = PGT.none, PGT.l1_page_table, PGT.l2_page_table, PGT.writable_page
MACHPHYS = abi.MMU_MACHPHYS_UPDATE

FREE = Frame(NONE, 0, 1)  # a frame the domain owns and uses for nothing


def data_frames(g: Guest, n: int) -> list[int]:
    """Free frames past the one the ``l1`` fixture takes."""
    return g.free_mfns(n, skip=1)


def xen_frames(impl: HypercallLevel) -> list[int]:
    """Some frames the hypervisor owns (first, middle, last)."""
    xen = [m for m, f in enumerate(frame_table(impl)) if f.owner == abi.DOMID_XEN]
    return sorted({xen[0], xen[len(xen) // 2], xen[-1]}) if xen else []


def raw_batch(g: Guest, name: str, uptr: int, count: int, done: int = UNSET,
              foreigndom: int = abi.DOMID_SELF) -> tuple[int, int]:
    """Issue mmu_update/mmuext_op with a hand-made array pointer and preset *done."""
    g.write_args(done.to_bytes(4, "little"), DONE_OFFSET)
    rc = g.hypercall(name, uptr, count, g.done_va, foreigndom)
    return rc, g.read_done()


def base_of(impl: HypercallLevel, domid: int) -> list[int]:
    """The base pointers of ``domid``'s vCPUs."""
    return [base for d, base in impl.vcpu_bases() if d == domid]


@pytest.fixture
def g(hv_impl: HypercallLevel) -> Guest:
    return Guest(hv_impl, 128)


@pytest.fixture
def l1(g: Guest) -> int:
    """A pinned, empty L1 table."""
    (mfn,) = g.free_mfns(1)
    assert g.pin(mfn, 1) == 0, "MMUEXT_PIN_L1_TABLE: an empty L1 table could not be pinned"
    return mfn


# --- 1. plain writes ---------------------------------------------------------------------------
@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
def test_normal_update_of_untyped_frame_is_plain_write(g: Guest) -> None:
    """do_mmu_update MMU_NORMAL_PT_UPDATE, not_a_pt: an untyped frame is written as data."""
    impl, (m,) = g.impl, g.free_mfns(1)
    assert g.mmu_update([(g.entry_maddr(m, 7), 0xDEADBEEF)]) == (0, 1), \
        "do_mmu_update: a write into an untyped frame of the domain was refused"
    assert g.entry(m, 7) == 0xDEADBEEF, "do_mmu_update: the data write did not land"
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True),
                 "do_mmu_update not_a_pt: the frame takes the writable type, no type ref kept")
    assert_invariants(impl, [g])


# --- 2-6. L1 entries ---------------------------------------------------------------------------
@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-COUNT")
def test_l1_entry_takes_and_drops_references(g: Guest, l1: int) -> None:
    """mod_l1_entry/get_page_from_l1e/put_page_from_l1e: RO = general ref, RW = + writable type."""
    impl, (a, b) = g.impl, data_frames(g, 2)
    ptr = g.entry_maddr(l1, 0)
    rule = "get_page_from_l1e/put_page_from_l1e"
    assert g.mmu_update([(ptr, g.pte(a, PTE_RO))]) == (0, 1), f"{rule}: RO map refused"
    assert_frame(impl, a, Frame(NONE, 0, 2), f"{rule}: an RO entry takes a general ref only")
    assert g.mmu_update([(ptr, g.pte(a, PTE_RW))]) == (0, 1), f"{rule}: RW map refused"
    assert_frame(impl, a, Frame(WRITABLE, 1, 2, validated=True),
                 f"{rule}: an RW entry takes a general and a writable type ref")
    assert g.mmu_update([(ptr, g.pte(b, PTE_RW))]) == (0, 1), f"{rule}: replacement refused"
    assert_frame(impl, a, Frame(WRITABLE, 0, 1, validated=True),
                 f"{rule}: replacing an entry drops the old target's refs")
    assert_frame(impl, b, Frame(WRITABLE, 1, 2, validated=True),
                 f"{rule}: the new target takes a general and a writable type ref")
    assert g.mmu_update([(ptr, 0)]) == (0, 1), f"{rule}: clearing an entry refused"
    assert_frame(impl, b, Frame(WRITABLE, 0, 1, validated=True),
                 f"{rule}: clearing an entry drops its refs")
    assert g.entry(l1, 0) == 0, "mod_l1_entry: the entry was not cleared"
    assert_frame(impl, l1, Frame(L1, 1, 2, True, True),
                 f"{rule}: updates of its entries changed the L1 table's own state")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
@pytest.mark.parametrize(("flag", "ok"), [(abi._PAGE_PAT, False), (abi._PAGE_GLOBAL, False),
                                          (abi._PAGE_AVAIL, True)], ids=["PAT", "GLOBAL", "AVAIL"])
def test_l1_disallowed_flags(g: Guest, l1: int, flag: int, ok: bool) -> None:
    """mod_l1_entry, L1_DISALLOW_MASK: PAT and GLOBAL refused; AVAIL bits 9-11 are the guest's."""
    impl, (a,) = g.impl, data_frames(g, 1)
    pte = g.pte(a, PTE_RO | flag)
    rule = f"mod_l1_entry L1_DISALLOW_MASK ({flag:#x} {'allowed' if ok else 'disallowed'})"
    assert g.mmu_update([(g.entry_maddr(l1, 3), pte)]) == ((0, 1) if ok else (EINVAL, 0)), \
        f"{rule}: wrong result"
    assert g.entry(l1, 3) == (pte if ok else 0), f"{rule}: wrong entry left in the L1"
    assert_frame(impl, a, Frame(NONE, 0, 2) if ok else FREE, f"{rule}: wrong refs on the target")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-OWN", "INV-ISO")
def test_l1_entry_must_map_own_ram(g: Guest, l1: int) -> None:
    """get_page_from_l1e: foreign, Xen-owned and beyond-RAM (I/O, no permission) frames refused."""
    impl = g.impl
    other = Guest(impl, 32, 32)
    targets = [other.mfn(other.data_pfn), impl.nr_frames(), 0x3FFFF, *xen_frames(impl)]
    for t in targets:
        before = impl.frame(t) if t < impl.nr_frames() else None
        for flags in (PTE_RO, PTE_RW):
            assert g.mmu_update([(g.entry_maddr(l1, 4), g.pte(t, flags))]) == (EINVAL, 0), \
                f"INV-OWN: an L1 entry mapping frame {t:#x}, not the domain's RAM, was accepted"
            assert g.entry(l1, 4) == 0, f"INV-OWN: the refused entry for {t:#x} was written"
        if before is not None:
            assert impl.frame(t) == before, f"get_page_from_l1e: refused map changed {t:#x}"
    assert_invariants(impl, [g, other])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-NOWRPT")
def test_page_table_frames_only_map_read_only(g: Guest, l1: int) -> None:
    """get_page_from_l1e -> get_page_type(writable) fails on a frame in use as L1/L2."""
    impl = g.impl
    ptr = g.entry_maddr(l1, 1)
    for what, pt in (("page directory", g.l2_mfn), ("L1 table", g.l1_mfns[0]),
                     ("pinned L1 table", l1)):
        before = frame_of(impl, pt)
        assert g.mmu_update([(ptr, g.pte(pt, PTE_RW))]) == (EINVAL, 0), \
            f"INV-NOWRPT: a writable mapping of a {what} was accepted"
        assert g.entry(l1, 1) == 0, f"INV-NOWRPT: a writable mapping of a {what} was written"
        assert_frame(impl, pt, before, f"get_page_from_l1e: the refused RW map of a {what} "
                                       "changed its state")
        assert g.mmu_update([(ptr, g.pte(pt, PTE_RO))]) == (0, 1), \
            f"get_page_from_l1e: a read-only mapping of a {what} was refused"
        assert_frame(impl, pt, replace(before, count=before.count + 1),
                     f"get_page_from_l1e: an RO map of a {what} takes one general ref only")
        assert_invariants(impl, [g])
        assert g.mmu_update([(ptr, 0)]) == (0, 1), "mod_l1_entry: clearing an entry refused"
        assert_frame(impl, pt, before, f"put_page_from_l1e: unmapping a {what} did not "
                                       "drop its ref")


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE", "INV-NOWRPT")
@pytest.mark.parametrize("cmd", [abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE],
                         ids=["L1", "L2"])
def test_writably_mapped_frame_cannot_be_pinned(g: Guest, cmd: int) -> None:
    """get_page_type: a frame with writable type count > 0 cannot become a page table."""
    impl = g.impl
    m = g.mfn(g.data_pfn)  # mapped read-write by the domain builder
    before = frame_of(impl, m)
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True),
                 "start of day: a bootstrap data frame is mapped once, read-write")
    assert g.mmuext_op([(cmd, m, 0)]) == (EINVAL, 0), \
        "INV-NOWRPT: a frame mapped writable was pinned as a page table"
    assert_frame(impl, m, before, "get_page_type: the refused pin changed the frame")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE", "INV-XENPAGE")
@pytest.mark.needs("xen-written-frames")
@pytest.mark.parametrize("cmd", [abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE],
                         ids=["L1", "L2"])
def test_a_frame_the_hypervisor_writes_cannot_be_pinned(g: Guest, cmd: int) -> None:
    """share_xen_page_with_guest: shared_info (and every frame the hypervisor writes into on
    the domain's behalf) holds Xen's writable type reference, so it never becomes a page table
    (a pinned shared_info L1 would take the faulting address the hypervisor stores in cr2 as
    an entry)."""
    impl = g.impl
    assert isinstance(impl, XenWrittenFrames)  # it offers xen-written-frames (the needs mark)
    mine = [m for m in impl.xen_written_frames() if impl.frame(m).owner == g.domid]
    assert mine, "the domain has no frame the hypervisor writes into (shared_info is one)"
    for m in mine:
        before = frame_of(impl, m)
        assert g.mmuext_op([(cmd, m, 0)]) == (EINVAL, 0), \
            f"INV-XENPAGE: mfn {m:#x}, which the hypervisor writes into, was pinned"
        assert_frame(impl, m, before, "get_page_type: the refused pin changed the frame")
    assert_invariants(impl, [g])


# --- 7-11. L2 entries --------------------------------------------------------------------------
@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-L2REF", "INV-VALID")
def test_l2_entry_validates_l1(g: Guest) -> None:
    """get_page_from_l2e: the frame named gets a type ref as L1 and is validated."""
    impl, (t,) = g.impl, g.free_mfns(1)
    pte = g.pte(t, PTE_RW)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), pte)]) == (0, 1), \
        "get_page_from_l2e: an L2 entry naming an empty frame was refused"
    assert g.entry(g.l2_mfn, 5) == pte, "mod_l2_entry: the entry was not written"
    assert_frame(impl, t, Frame(L1, 1, 2, validated=True),
                 "INV-L2REF: the frame an L2 entry names must become a validated L1 table")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-L2REF", "INV-NOWRPT")
def test_l2_entry_to_invalid_l1_refused(g: Guest) -> None:
    """get_page_type: failed alloc_l1_table resets the type to none; general count unchanged."""
    impl, (bad,) = g.impl, g.free_mfns(1)
    # As data, `bad` gets an entry mapping the page directory read-write.
    assert g.mmu_update([(g.entry_maddr(bad, 0), g.pte(g.l2_mfn, PTE_RW))]) == (0, 1), \
        "do_mmu_update: a write into an untyped frame of the domain was refused"
    l2_before = frame_of(impl, g.l2_mfn)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), g.pte(bad, PTE_RW))]) == (EINVAL, 0), \
        "INV-NOWRPT: an L1 table mapping the page directory writable was accepted"
    assert g.entry(g.l2_mfn, 5) == 0, "INV-L2REF: the refused L2 entry was written"
    assert_frame(impl, bad, FREE, "get_page_type: failed alloc_l1_table must leave it untyped")
    assert_frame(impl, g.l2_mfn, l2_before, "get_page_from_l2e: a refused entry changed the L2")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-HOLE")
@pytest.mark.parametrize("flag", [abi._PAGE_PSE, abi._PAGE_GLOBAL], ids=["PSE", "GLOBAL"])
def test_l2_disallowed_flags(g: Guest, flag: int) -> None:
    """mod_l2_entry, L2_DISALLOW_MASK: PSE and GLOBAL are refused in a present L2 entry."""
    impl, (t,) = g.impl, g.free_mfns(1)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), g.pte(t, PTE_RW | flag))]) == \
        (EINVAL, 0), f"mod_l2_entry L2_DISALLOW_MASK: an L2 entry with flag {flag:#x} accepted"
    assert g.entry(g.l2_mfn, 5) == 0, "mod_l2_entry: the refused entry was written"
    assert_frame(impl, t, FREE, "mod_l2_entry: a refused entry took refs on its target")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-HOLE")
def test_l2_xen_slots_cannot_be_written(g: Guest) -> None:
    """mod_l2_entry, is_guest_l2_slot: slots 1008..1023 are Xen's, even a write of 0."""
    impl, (t,) = g.impl, g.free_mfns(1)
    xen = list(xen_slots(impl, g.domid, g.l2_mfn))
    for slot in (abi.L2_PAGETABLE_FIRST_XEN_SLOT, abi.LINEAR_PT_SLOT, 1023):
        for val in (0, g.pte(t, PTE_RW)):
            assert g.mmu_update([(g.entry_maddr(g.l2_mfn, slot), val)]) == (EINVAL, 0), \
                f"INV-HOLE: a write of {val:#x} to hypervisor slot {slot} was accepted"
    assert [g.entry(g.l2_mfn, i) for i in range(abi.L2_PAGETABLE_FIRST_XEN_SLOT, 1024)] == xen, \
        "INV-HOLE: the hypervisor slots of the page directory changed"
    assert_frame(impl, t, FREE, "mod_l2_entry: a refused entry took refs on its target")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-NOWRPT")
def test_linear_self_map(g: Guest) -> None:
    """get_linear_pagetable: an RO self-map takes no reference; RW is refused."""
    impl = g.impl
    l2, ptr = g.l2_mfn, g.entry_maddr(g.l2_mfn, 5)
    before = frame_of(impl, l2)
    assert g.mmu_update([(ptr, g.pte(l2, PTE_RW))]) == (EINVAL, 0), \
        "INV-NOWRPT: a writable linear self-map of the page directory was accepted"
    assert g.entry(l2, 5) == 0, "INV-NOWRPT: the refused RW self-map was written"
    assert g.mmu_update([(ptr, g.pte(l2, PTE_RO))]) == (0, 1), \
        "get_linear_pagetable: a read-only self-map was refused"
    assert g.entry(l2, 5) == g.pte(l2, PTE_RO), "mod_l2_entry: the RO self-map was not written"
    assert_frame(impl, l2, before, "get_linear_pagetable: a self-map takes no reference")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmuext_op/PIN_L2_TABLE", "INV-NOWRPT",
                     "INV-L2REF")
def test_linear_map_of_other_l2(g: Guest) -> None:
    """get_linear_pagetable: an RO map of another validated L2 takes a general and a type ref."""
    impl, (other,) = g.impl, g.free_mfns(1)
    pinned = Frame(L2, 1, 2, True, True)
    assert g.pin(other, 2) == 0, "MMUEXT_PIN_L2_TABLE: an empty page directory was refused"
    assert_frame(impl, other, pinned, "MMUEXT_PIN_L2_TABLE: a pin takes a general and type ref")
    ptr = g.entry_maddr(g.l2_mfn, 6)
    assert g.mmu_update([(ptr, g.pte(other, PTE_RW))]) == (EINVAL, 0), \
        "INV-NOWRPT: a writable linear map of another page directory was accepted"
    assert_frame(impl, other, pinned, "get_linear_pagetable: a refused map took refs")
    assert g.mmu_update([(ptr, g.pte(other, PTE_RO))]) == (0, 1), \
        "get_linear_pagetable: a read-only map of another validated L2 was refused"
    assert_frame(impl, other, Frame(L2, 2, 3, True, True),
                 "get_linear_pagetable: an RO linear map takes a general and a type ref")
    assert_invariants(impl, [g])
    assert g.mmu_update([(ptr, 0)]) == (0, 1), "mod_l2_entry: clearing an entry refused"
    assert_frame(impl, other, pinned, "put_page_from_l2e: clearing the map drops its refs")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "INV-NOWRPT")
@pytest.mark.fix("XSA-182")
def test_ro_linear_entry_cannot_be_flipped_writable(g: Guest) -> None:
    """mod_l2_entry fast path (XSA-182 fix): an RO linear entry cannot become RW in place."""
    impl, (other,) = g.impl, g.free_mfns(1)
    assert g.pin(other, 2) == 0, "MMUEXT_PIN_L2_TABLE: an empty page directory was refused"
    for slot, target in ((5, g.l2_mfn), (6, other)):
        ptr = g.entry_maddr(g.l2_mfn, slot)
        assert g.mmu_update([(ptr, g.pte(target, PTE_RO))]) == (0, 1), \
            "get_linear_pagetable: a read-only linear map was refused"
        before = frame_of(impl, target)
        assert g.mmu_update([(ptr, g.pte(target, PTE_RW))]) == (EINVAL, 0), \
            "INV-NOWRPT: an RO linear entry was made writable in place (XSA-182)"
        assert g.entry(g.l2_mfn, slot) == g.pte(target, PTE_RO), \
            "INV-NOWRPT: the refused RW linear entry was written"
        assert_frame(impl, target, before, "mod_l2_entry: a refused update changed the target")
    assert_invariants(impl, [g])


# --- 11a. the type-count limit ------------------------------------------------------------------
# mm.h (3.0.4): PGT_count_mask is (1U<<16)-1, so a frame holds at most 65535 type references.
# get_page_type refuses the next one ("Type count overflow", mm.c), get_linear_pagetable the
# next read-only map of a page directory at that count; both answer -EINVAL for the entry.
TYPE_COUNT_MAX = (1 << 16) - 1


def fill_entries(g: Guest, slots: list[tuple[int, int]], pte: int) -> None:
    """Write ``pte`` into every (table, index) of ``slots``, in batches that fit the argument
    area; each batch must succeed whole."""
    step = DONE_OFFSET // abi.MMU_UPDATE_T.size
    for at in range(0, len(slots), step):
        reqs = [(g.entry_maddr(t, i), pte) for t, i in slots[at : at + step]]
        assert g.mmu_update(reqs) == (0, len(reqs)), \
            f"mod_l?_entry: entries {at}-{at + len(reqs) - 1} of {len(slots)} were refused " \
            f"before the frame's type count reached {TYPE_COUNT_MAX:#x}"


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmuext_op/PIN_L1_TABLE", "INV-COUNT")
def test_type_count_limit(hv_impl: HypercallLevel) -> None:
    """get_page_type: 65535 writable mappings of one frame are accepted (65535 type
    references), the 65536th is refused; with one mapping gone it is accepted."""
    g = Guest(hv_impl, 160)
    impl, tables = g.impl, g.free_mfns(64)
    (data,) = g.free_mfns(1, skip=64)
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, t, 0) for t in tables]) == (0, 64), \
        "MMUEXT_PIN_L1_TABLE: 64 empty L1 tables could not be pinned"
    slots = [(t, i) for t in tables for i in range(abi.L1_PAGETABLE_ENTRIES)]
    fill_entries(g, slots[:TYPE_COUNT_MAX], g.pte(data, PTE_RW))
    full = Frame(WRITABLE, TYPE_COUNT_MAX, TYPE_COUNT_MAX + 1, True)
    assert_frame(impl, data, full, "get_page_type: 65535 writable mappings")
    last = g.entry_maddr(*slots[TYPE_COUNT_MAX])
    assert g.mmu_update([(last, g.pte(data, PTE_RW))]) == (EINVAL, 0), \
        "get_page_type: a 65536th type reference was taken (type count overflow)"
    assert_frame(impl, data, full, "get_page_type: a refused mapping took references")
    assert g.mmu_update([(g.entry_maddr(*slots[0]), 0)]) == (0, 1), \
        "mod_l1_entry: clearing an entry refused"
    assert g.mmu_update([(last, g.pte(data, PTE_RW))]) == (0, 1), \
        "get_page_type: the 65535th type reference was refused"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmuext_op/PIN_L2_TABLE", "INV-COUNT")
def test_linear_map_type_count_limit(hv_impl: HypercallLevel) -> None:
    """get_linear_pagetable: read-only maps of a pinned page directory in other directories
    take type references up to 65535 (the pin's included); the next map is refused."""
    g = Guest(hv_impl, 160)
    impl, frames = g.impl, g.free_mfns(67)
    target, dirs = frames[0], frames[1:]
    ops = [(abi.MMUEXT_PIN_L2_TABLE, m, 0) for m in frames]
    assert g.mmuext_op(ops) == (0, len(ops)), \
        "MMUEXT_PIN_L2_TABLE: 67 empty page directories could not be pinned"
    guest_slots = abi.HYPERVISOR_VIRT_START >> abi.L2_PAGETABLE_SHIFT
    slots = [(t, i) for t in dirs for i in range(guest_slots)]
    fill_entries(g, slots[: TYPE_COUNT_MAX - 1], g.pte(target, PTE_RO))
    full = Frame(L2, TYPE_COUNT_MAX, TYPE_COUNT_MAX + 1, True, True)
    assert_frame(impl, target, full, "get_linear_pagetable: 65534 read-only maps and the pin")
    last = g.entry_maddr(*slots[TYPE_COUNT_MAX - 1])
    assert g.mmu_update([(last, g.pte(target, PTE_RO))]) == (EINVAL, 0), \
        "get_linear_pagetable: a 65536th type reference was taken (type count overflow)"
    assert_frame(impl, target, full, "get_linear_pagetable: a refused map took references")
    assert g.mmu_update([(g.entry_maddr(*slots[0]), 0)]) == (0, 1), \
        "mod_l2_entry: clearing an entry refused"
    assert g.mmu_update([(last, g.pte(target, PTE_RO))]) == (0, 1), \
        "get_linear_pagetable: the 65535th type reference was refused"
    assert_invariants(impl, [g])


# --- 12. batches -------------------------------------------------------------------------------
@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
def test_batch_stops_at_first_failure(g: Guest, l1: int) -> None:
    """do_mmu_update: the loop breaks at the first failed request; *done counts those before."""
    impl, (a,) = g.impl, data_frames(g, 1)
    reqs = [(g.entry_maddr(l1, i), g.pte(a, PTE_RO | (abi._PAGE_GLOBAL if i == 1 else 0)))
            for i in range(3)]
    assert g.mmu_update(reqs) == (EINVAL, 1), \
        "do_mmu_update: a batch must stop at its first failure with *done = requests done"
    assert [g.entry(l1, i) for i in range(3)] == [g.pte(a, PTE_RO), 0, 0], \
        "do_mmu_update: requests after the failed one were carried out"
    assert_frame(impl, a, Frame(NONE, 0, 2), "do_mmu_update: refs of a stopped batch are wrong")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
@pytest.mark.parametrize("cmd", [2, 3])
def test_unknown_mmu_update_command(g: Guest, l1: int, cmd: int) -> None:
    """do_mmu_update: an unknown command (ptr & 3) stops the batch with -ENOSYS."""
    impl, (a,) = g.impl, data_frames(g, 1)
    reqs = [(g.entry_maddr(l1, i) | (cmd if i == 1 else 0), g.pte(a, PTE_RO)) for i in range(3)]
    assert g.mmu_update(reqs) == (ENOSYS, 1), \
        f"do_mmu_update: unknown command {cmd} must stop the batch with -ENOSYS"
    assert [g.entry(l1, i) for i in range(3)] == [g.pte(a, PTE_RO), 0, 0], \
        "do_mmu_update: requests after the unknown command were carried out"
    assert_frame(impl, a, Frame(NONE, 0, 2), "do_mmu_update: refs of a stopped batch are wrong")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmuext_op/TLB_FLUSH", "INV-HOLE")
@pytest.mark.parametrize("name", ["mmu_update", "mmuext_op"])
@pytest.mark.parametrize(("uptr", "count"), [
    (abi.HYPERVISOR_VIRT_START, 1),        # in the hypervisor hole
    (abi.HYPERVISOR_VIRT_START - 16, 2),   # reaching into it
    (0x1000, 1),                           # below the hole but unmapped
], ids=["hole", "into-hole", "unmapped"])
def test_bad_request_array_faults(g: Guest, name: str, uptr: int, count: int) -> None:
    """guest_handle_okay / __copy_from_guest: a bad array pointer is -EFAULT with *done = 0."""
    assert raw_batch(g, name, uptr, count) == (EFAULT, 0), \
        f"{name} copy_from_guest: a request array at {uptr:#x} must fault (-EFAULT, *done 0)"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
def test_preempted_batch_adds_previous_done(g: Guest, l1: int) -> None:
    """do_mmu_update, MMU_UPDATE_PREEMPTED: the old *done is added to this call's count."""
    impl, (a,) = g.impl, data_frames(g, 1)
    uptr = g.write_args(pack_mmu_updates([(g.entry_maddr(l1, i), g.pte(a, PTE_RO))
                                          for i in range(2)]))
    assert raw_batch(g, "mmu_update", uptr, 2 | abi.MMU_UPDATE_PREEMPTED, done=5) == (0, 7), \
        "do_mmu_update MMU_UPDATE_PREEMPTED: *done must be the old *done plus this call's"
    assert_frame(impl, a, Frame(NONE, 0, 3), "do_mmu_update: both RO entries take a ref each")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
def test_long_batch_is_continued_where_it_stopped(g: Guest, l1: int) -> None:
    """do_mmu_update, hypercall_create_continuation: a batch preempted part way is continued
    with the request pointer advanced past the entries done (the loop's
    guest_handle_add_offset), so every entry lands once and ``*done`` counts all of them."""
    impl, (a,) = g.impl, data_frames(g, 1)
    n = 600  # longer than any one invocation's budget: preempted and continued at least once
    reqs = [(g.entry_maddr(l1, i), g.pte(a, PTE_RO)) for i in range(n)]
    assert g.mmu_update(reqs) == (0, n), \
        "do_mmu_update: a long batch continued after preemption did not complete every entry"
    assert [g.entry(l1, i) for i in range(n)] == [g.pte(a, PTE_RO)] * n, \
        "do_mmu_update: an entry of a continued batch did not land in its own slot"
    assert_frame(impl, a, Frame(NONE, 0, 1 + n),
                 "get_page_from_l1e: each RO entry of a continued batch takes one general ref")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH", "mmuext_op/PIN_L1_TABLE")
def test_preempted_mmuext_batch_adds_previous_done(g: Guest) -> None:
    """do_mmuext_op, MMU_UPDATE_PREEMPTED: the flag is cleared from the count and the old
    *done is added to this call's, as in do_mmu_update."""
    ops = pack_mmuext_ops([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)] * 2)
    uptr = g.write_args(ops)
    assert raw_batch(g, "mmuext_op", uptr, 2 | abi.MMU_UPDATE_PREEMPTED, done=5) == (0, 7), \
        "do_mmuext_op MMU_UPDATE_PREEMPTED: *done must be the old *done plus this call's"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH", "mmuext_op/PIN_L1_TABLE", "INV-PIN")
def test_long_mmuext_batch_is_continued_where_it_stopped(g: Guest) -> None:
    """do_mmuext_op, hypercall_create_continuation: a preempted batch continues with the
    operation pointer advanced past the operations done, so the last operation (a pin) is
    carried out once, at the end, and ``*done`` counts every operation."""
    impl, (t,) = g.impl, g.free_mfns(1)
    n = 600  # longer than any one invocation's budget: preempted and continued at least once
    ops = [(abi.MMUEXT_INVLPG_LOCAL, 0xC0005000, 0)] * (n - 1) + [(abi.MMUEXT_PIN_L1_TABLE, t, 0)]
    assert g.mmuext_op(ops) == (0, n), \
        "do_mmuext_op: a long batch continued after preemption did not complete every operation"
    assert_frame(impl, t, Frame(L1, 1, 2, True, True),
                 "do_mmuext_op: the last operation of a continued batch (a pin) was not done once")
    assert_invariants(impl, [g])


# --- 13-14. foreign domain and the M2P ---------------------------------------------------------
@pytest.mark.clauses("mmu_update/MACHPHYS_UPDATE", "INV-ISO")
def test_foreigndom_unprivileged(g: Guest) -> None:
    """set_foreigndom: DOMID_SELF ok; own domid or another domain from a domU -> -ESRCH."""
    impl = g.impl
    other = Guest(impl, 32, 32)
    m = g.mfn(g.data_pfn)
    assert g.mmu_update([(m << 12 | MACHPHYS, 0x100)]) == (0, 1), \
        "MMU_MACHPHYS_UPDATE: an update of the domain's own frame was refused"
    for fd in (g.domid, other.domid):
        assert g.mmu_update([(m << 12 | MACHPHYS, 0x200)], foreigndom=fd) == (ESRCH, 0), \
            f"set_foreigndom: an unprivileged domain named foreign domain {fd} (not -ESRCH)"
    assert impl.machphys(m) == 0x100, "set_foreigndom: a refused batch changed the M2P"
    assert_invariants(impl, [g, other])


@pytest.mark.clauses("mmu_update/MACHPHYS_UPDATE", "INV-ISO")
def test_foreigndom_privileged(g: Guest) -> None:
    """set_foreigndom: a privileged domain may act on an existing domain; unknown -> -ESRCH."""
    impl = g.impl
    priv = Guest(impl, 64, privileged=True)
    m = g.mfn(g.data_pfn)
    req = [(m << 12 | MACHPHYS, 0x300)]
    assert priv.mmu_update(req) == (EINVAL, 0), \
        "INV-ISO: without FOREIGNDOM a privileged domain updated another domain's M2P entry"
    assert priv.mmu_update(req, foreigndom=priv.domid) == (ESRCH, 0), \
        "set_foreigndom: naming itself as foreign domain must be -ESRCH"
    assert priv.mmu_update(req, foreigndom=0x1234) == (ESRCH, 0), \
        "set_foreigndom: naming a domain that does not exist must be -ESRCH"
    assert impl.machphys(m) == g.data_pfn, "set_foreigndom: a refused batch changed the M2P"
    assert priv.mmu_update(req, foreigndom=g.domid) == (0, 1), \
        "MMU_MACHPHYS_UPDATE: a privileged domain with FOREIGNDOM was refused"
    assert impl.machphys(m) == 0x300, "MMU_MACHPHYS_UPDATE: the M2P entry was not written"
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True),
                 "MMU_MACHPHYS_UPDATE: the frame's own state must not change")
    assert_invariants(impl, [g, priv])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH")
def test_foreigndom_domid_io_accepted_for_domu(g: Guest) -> None:
    """set_foreigndom: a domU may name DOMID_IO (I/O mappings at the caller's privilege)."""
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)], foreigndom=abi.DOMID_IO) == \
        (0, 1), "set_foreigndom: DOMID_IO named by an unprivileged domain was refused"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "mmuext_op/PIN_L1_TABLE", "INV-OWN")
def test_foreigndom_domid_io_reaches_no_ram(g: Guest, l1: int) -> None:
    """set_foreigndom: DOMID_IO makes dom_io FOREIGNDOM, which owns no RAM: get_page_from_l1e
    takes the references of a RAM frame from dom_io and fails (only I/O memory reverts to the
    caller for the permission check), and so do MMUEXT_PIN_* and MMU_MACHPHYS_UPDATE
    (get_page_from_pagenr(mfn, FOREIGNDOM)) on the domain's own frames."""
    impl, (a, t) = g.impl, data_frames(g, 2)
    io = abi.DOMID_IO
    for flags in (PTE_RO, PTE_RW):
        assert g.mmu_update([(g.entry_maddr(l1, 0), g.pte(a, flags))], foreigndom=io) == \
            (EINVAL, 0), "get_page_from_l1e: with FOREIGNDOM=DOMID_IO a domain mapped its own RAM"
    assert g.entry(l1, 0) == 0, "get_page_from_l1e: the refused DOMID_IO mapping was written"
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, t, 0)], foreigndom=io) == (EINVAL, 0), \
        "MMUEXT_PIN_L1_TABLE: with FOREIGNDOM=DOMID_IO a domain pinned its own frame"
    assert g.mmu_update([(a << 12 | MACHPHYS, 0x99)], foreigndom=io) == (EINVAL, 0), \
        "MMU_MACHPHYS_UPDATE: with FOREIGNDOM=DOMID_IO a domain's own M2P entry was updated"
    for m in (a, t):
        assert_frame(impl, m, FREE, "set_foreigndom DOMID_IO: refused requests changed a frame")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmu_update/MACHPHYS_UPDATE", "INV-ISO")
def test_machphys_update(g: Guest) -> None:
    """MMU_MACHPHYS_UPDATE: M2P[mfn] = val for a frame the (foreign) domain owns, else -EINVAL."""
    impl = g.impl
    other = Guest(impl, 32, 32)
    m = g.mfn(g.data_pfn)
    assert g.mmu_update([(m << 12 | MACHPHYS, 0x77)]) == (0, 1), \
        "MMU_MACHPHYS_UPDATE: an update of the domain's own frame was refused"
    assert impl.machphys(m) == 0x77, "MMU_MACHPHYS_UPDATE: the M2P entry was not written"
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True),
                 "MMU_MACHPHYS_UPDATE: the frame's own state must not change")
    for t in (other.mfn(other.data_pfn), *xen_frames(impl)):
        old = impl.machphys(t)
        assert g.mmu_update([(t << 12 | MACHPHYS, 0x77)]) == (EINVAL, 0), \
            f"INV-ISO: the M2P entry of frame {t:#x}, not the domain's, was updated"
        assert impl.machphys(t) == old, f"INV-ISO: the M2P entry of {t:#x} changed"
    assert g.mmu_update([(impl.nr_frames() << 12 | MACHPHYS, 0)]) == (EINVAL, 0), \
        "MMU_MACHPHYS_UPDATE: a frame beyond RAM was accepted"
    assert_invariants(impl, [g, other])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE")
def test_mmu_update_ptr_high_bits_truncated(g: Guest, l1: int) -> None:
    """do_mmu_update: gmfn = req.ptr >> PAGE_SHIFT is truncated to 32 bits on x86_32."""
    (a,) = data_frames(g, 1)
    assert g.mmu_update([(1 << 44 | g.entry_maddr(l1, 0), g.pte(a, PTE_RO))]) == (0, 1), \
        "do_mmu_update: gmfn must be truncated to 32 bits (unsigned long on x86_32)"
    assert g.entry(l1, 0) == g.pte(a, PTE_RO), "do_mmu_update: the entry was not written"
    assert_invariants(g.impl, [g])


# --- 15. pinning -------------------------------------------------------------------------------
@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE", "INV-PIN", "INV-HOLE")
def test_pin_l1_and_l2(g: Guest) -> None:
    """do_mmuext_op MMUEXT_PIN_L1/L2_TABLE: a type ref, validation, and the pin flag."""
    impl, (a, b) = g.impl, g.free_mfns(2)
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, a, 0), (abi.MMUEXT_PIN_L2_TABLE, b, 0)]) == \
        (0, 2), "MMUEXT_PIN_L1/L2_TABLE: pinning empty tables was refused"
    assert_frame(impl, a, Frame(L1, 1, 2, True, True),
                 "INV-PIN: a pinned L1 must be a validated L1 with a type ref")
    assert_frame(impl, b, Frame(L2, 1, 2, True, True),
                 "INV-PIN: a pinned L2 must be a validated L2 with a type ref")
    assert [g.entry(b, i) for i in range(abi.L2_PAGETABLE_FIRST_XEN_SLOT, 1024)] == \
        list(xen_slots(impl, g.domid, b)), \
        "INV-HOLE: alloc_l2_table must fill the hypervisor slots of a new page directory"
    assert pte_get_pfn(g.entry(b, abi.LINEAR_PT_SLOT)) == b, \
        "alloc_l2_table: the linear page-table slot must map the new directory itself"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "INV-PIN")
def test_pin_l1_with_non_present_entries(g: Guest) -> None:
    """alloc_l1_table -> get_page_from_l1e: an entry without _PAGE_PRESENT is the guest's
    (a swap entry, say) and is accepted whatever its other bits; a present entry in the same
    table naming a frame the domain does not own makes the pin fail."""
    impl, (t, u) = g.impl, g.free_mfns(2)
    junk = 0xFFFFF000 | abi._PAGE_RW | abi._PAGE_USER  # not present; frame and bits are junk
    xen = xen_frames(impl)[0]
    assert g.mmu_update([(g.entry_maddr(u, 0), junk), (g.entry_maddr(u, 1), g.pte(xen, PTE_RO))]) \
        == (0, 2), "do_mmu_update: writes into an untyped frame were refused"
    assert g.pin(u, 1) == EINVAL, \
        "get_page_from_l1e: an L1 table with an entry mapping a Xen frame was pinned"
    assert_frame(impl, u, FREE, "alloc_l1_table: a table that fails validation keeps no refs")
    assert g.mmu_update([(g.entry_maddr(t, 0), junk)]) == (0, 1), \
        "do_mmu_update: a write into an untyped frame was refused"
    assert g.pin(t, 1) == 0, \
        "get_page_from_l1e: an L1 table whose only entry is not present was refused"
    assert_frame(impl, t, Frame(L1, 1, 2, True, True),
                 "INV-PIN: the pinned L1 must be validated, with a type ref")
    assert g.entry(t, 0) == junk, "alloc_l1_table: a non-present entry must be kept as it is"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/PIN_L2_TABLE", "INV-PIN")
def test_pin_l2_with_non_present_entries(g: Guest) -> None:
    """alloc_l2_table -> get_page_from_l2e: a guest slot without _PAGE_PRESENT is accepted
    whatever its other bits, and kept as it is; a present slot naming a Xen frame makes the
    pin fail."""
    impl, (t, u) = g.impl, g.free_mfns(2)
    junk = 0xFFFFF000 | abi._PAGE_RW | abi._PAGE_USER  # not present; frame and bits are junk
    xen = xen_frames(impl)[0]
    assert g.mmu_update([(g.entry_maddr(t, 0), junk), (g.entry_maddr(u, 0), junk),
                         (g.entry_maddr(u, 1), g.pte(xen, PTE_RO))]) == (0, 3), \
        "do_mmu_update: writes into untyped frames were refused"
    assert g.pin(u, 2) == EINVAL, \
        "get_page_from_l2e: a page directory with a slot naming a Xen frame was pinned"
    assert_frame(impl, u, FREE, "alloc_l2_table: a table that fails validation keeps no refs")
    assert g.pin(t, 2) == 0, \
        "get_page_from_l2e: a page directory whose only guest slot in use is not present was " \
        "refused"
    assert_frame(impl, t, Frame(L2, 1, 2, True, True),
                 "INV-PIN: the pinned L2 must be validated, with a type ref")
    assert g.entry(t, 0) == junk, "alloc_l2_table: a non-present slot must be kept as it is"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE", "INV-PIN")
def test_pin_twice_refused(g: Guest, l1: int) -> None:
    """MMUEXT_PIN_*: "already pinned" drops the new refs and fails; so does a type mismatch."""
    impl = g.impl
    before = frame_of(impl, l1)
    for cmd, what in ((abi.MMUEXT_PIN_L1_TABLE, "pin of a pinned L1"),
                      (abi.MMUEXT_PIN_L2_TABLE, "L2 pin of a pinned L1")):
        assert g.mmuext_op([(cmd, l1, 0)]) == (EINVAL, 0), f"MMUEXT_PIN_*: a {what} succeeded"
        assert_frame(impl, l1, before, f"MMUEXT_PIN_*: the refused {what} left refs behind")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE", "INV-ISO")
def test_pin_foreign_frame_refused(g: Guest) -> None:
    """MMUEXT_PIN_*: get_page_and_type_from_pagenr fails on a frame of another domain."""
    impl = g.impl
    other = Guest(impl, 48, 32)
    (t,) = other.free_mfns(1)
    for cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE):
        assert g.mmuext_op([(cmd, t, 0)]) == (EINVAL, 0), \
            "INV-ISO: a domain pinned a frame of another domain"
        assert_frame(impl, t, FREE, "INV-ISO: a refused foreign pin changed the frame")
    assert_invariants(impl, [g, other])


@pytest.mark.clauses("mmuext_op/PIN_L1_TABLE")
@pytest.mark.parametrize("cmd", [abi.MMUEXT_PIN_L3_TABLE, abi.MMUEXT_PIN_L4_TABLE],
                         ids=["L3", "L4"])
def test_pin_l3_l4_ignored(g: Guest, cmd: int) -> None:
    """MMUEXT_PIN_L3/L4 on 2-level paging: ignored, succeeds, changes nothing."""
    impl, (t,) = g.impl, g.free_mfns(1)
    assert g.mmuext_op([(cmd, t, 0)]) == (0, 1), \
        "do_mmuext_op: MMUEXT_PIN_L3/L4 on 2-level paging must succeed as a no-op"
    assert_frame(impl, t, FREE, "do_mmuext_op: MMUEXT_PIN_L3/L4 must change nothing")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/UNPIN_TABLE", "INV-PIN")
def test_unpin_of_unpinned_frame_refused(g: Guest) -> None:
    """MMUEXT_UNPIN_TABLE: "not pinned" fails, leaving counts as they were."""
    impl, (t,) = g.impl, g.free_mfns(1)
    for m, what in ((t, "an untyped frame"), (g.l1_mfns[0], "a validated, unpinned L1")):
        before = frame_of(impl, m)
        assert g.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, m, 0)]) == (EINVAL, 0), \
            f"MMUEXT_UNPIN_TABLE: unpinning {what} succeeded"
        assert_frame(impl, m, before, f"MMUEXT_UNPIN_TABLE: a refused unpin changed {what}")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/UNPIN_TABLE", "INV-VALID", "INV-COUNT")
def test_unpin_releases_table_and_its_references(g: Guest, l1: int) -> None:
    """MMUEXT_UNPIN_TABLE -> put_page_type -> free_l1_table: entries drop their references."""
    impl, (d,) = g.impl, data_frames(g, 1)
    assert g.mmu_update([(g.entry_maddr(l1, 0), g.pte(d, PTE_RW))]) == (0, 1), \
        "mod_l1_entry: an RW map of a data frame was refused"
    assert_frame(impl, d, Frame(WRITABLE, 1, 2, validated=True),
                 "get_page_from_l1e: an RW entry takes a general and a writable type ref")
    assert g.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, l1, 0)]) == (0, 1), \
        "MMUEXT_UNPIN_TABLE: unpinning a pinned L1 was refused"
    assert_frame(impl, l1, Frame(L1, 0, 1),
                 "INV-VALID: an unpinned, unused L1 must lose its pin, type ref and validation")
    assert_frame(impl, d, Frame(WRITABLE, 0, 1, validated=True),
                 "free_l1_table: the entries of a released L1 must drop their refs")
    assert g.entry(l1, 0) == g.pte(d, PTE_RW), "free_l1_table: the table's contents must stay"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/UNPIN_TABLE", "INV-VALID", "INV-L2REF")
def test_unpin_l2_releases_its_l1_tables(g: Guest, l1: int) -> None:
    """MMUEXT_UNPIN_TABLE -> put_page_type -> free_l2_table: each guest slot of a released
    page directory drops the references its entry holds (put_page_from_l2e), here the type
    ref on the L1 table it names."""
    impl, (p,) = g.impl, data_frames(g, 1)
    assert g.pin(p, 2) == 0, "MMUEXT_PIN_L2_TABLE: an empty page directory was refused"
    assert g.mmu_update([(g.entry_maddr(p, 3), g.pte(l1, PTE_RW))]) == (0, 1), \
        "get_page_from_l2e: an entry naming a pinned L1 was refused"
    assert_frame(impl, l1, Frame(L1, 2, 3, True, True),
                 "get_page_from_l2e: the entry takes a general and a type ref on the L1")
    assert g.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, p, 0)]) == (0, 1), \
        "MMUEXT_UNPIN_TABLE: unpinning a pinned page directory was refused"
    assert_frame(impl, p, Frame(L2, 0, 1),
                 "INV-VALID: an unpinned, unused page directory loses its pin, type ref and "
                 "validation")
    assert_frame(impl, l1, Frame(L1, 1, 2, True, True),
                 "free_l2_table: the entries of a released page directory must drop their refs")
    assert_invariants(impl, [g])


# --- 16. base pointer --------------------------------------------------------------------------
@pytest.mark.clauses("mmuext_op/NEW_BASEPTR", "INV-BASE")
def test_new_baseptr_switches_tables(g: Guest) -> None:
    """new_guest_cr3: a type ref on the new directory, the old one's dropped."""
    impl, (new,) = g.impl, g.free_mfns(1)
    # The new directory names the L1 tables of every slot of the bootstrap region, so that the
    # argument area stays reachable.
    first = g.va(0) >> abi.L2_PAGETABLE_SHIFT
    last = g.va(g.info.nr_mapped - 1) >> abi.L2_PAGETABLE_SHIFT
    reqs = [(g.entry_maddr(new, s), g.entry(g.l2_mfn, s)) for s in range(first, last + 1)]
    assert g.mmu_update(reqs) == (0, len(reqs)), \
        "do_mmu_update: a write into an untyped frame of the domain was refused"
    assert g.pin(new, 2) == 0, "MMUEXT_PIN_L2_TABLE: a valid page directory was refused"
    old = g.l2_mfn
    assert base_of(impl, g.domid) == [old], "start of day: the base pointer is pt_base"
    before = frame_of(impl, old)  # pinned, the base pointer, and whatever maps it
    assert (before.type, before.validated, before.pinned) == (L2, True, True), \
        f"start of day: pt_base must be a pinned, validated page directory, is {before}"
    assert g.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, new, 0)]) == (0, 1), \
        "new_guest_cr3: switching to a pinned, valid page directory was refused"
    assert base_of(impl, g.domid) == [new], "INV-BASE: the vCPU's base pointer did not switch"
    assert_frame(impl, old, replace(before, type_count=before.type_count - 1,
                                    count=before.count - 1),
                 "new_guest_cr3: the old directory's base refs must be dropped")
    assert_frame(impl, new, Frame(L2, 2, 3, True, True),
                 "new_guest_cr3: the new directory takes a general and a type ref")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/NEW_BASEPTR", "INV-BASE")
def test_new_baseptr_to_invalid_directory_crashes_domain(g: Guest) -> None:
    """new_guest_cr3 (3.0.4): retry without the old base; a second failure crashes the domain."""
    impl, (bad,) = g.impl, g.free_mfns(1)
    pse_entry = g.pte(g.l1_mfns[0], PTE_RW | abi._PAGE_PSE)
    assert g.mmu_update([(g.entry_maddr(bad, 0), pse_entry)]) == (0, 1), \
        "do_mmu_update: a write into an untyped frame of the domain was refused"
    old = g.l2_mfn
    before = frame_of(impl, old)
    rc, done = g.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, bad, 0)])
    assert rc == EINVAL, "new_guest_cr3: an invalid page directory must fail with -EINVAL"
    assert done == UNSET, "new_guest_cr3: *done written with no page table left to write it"
    assert not g.running, "new_guest_cr3: the second validation failure must crash the domain"
    assert base_of(impl, g.domid) == [0], "INV-BASE: the crashed vCPU must have no base pointer"
    assert_frame(impl, old, replace(before, type_count=before.type_count - 1,
                                    count=before.count - 1),
                 "new_guest_cr3: the old base's reference must be dropped before the retry")
    assert_frame(impl, bad, FREE, "get_page_type: failed alloc_l2_table must leave it untyped")
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/NEW_BASEPTR", "INV-BASE", "INV-ISO")
def test_new_baseptr_to_foreign_directory_crashes_domain(g: Guest) -> None:
    """new_guest_cr3: get_page_and_type_from_pagenr(mfn, PGT_root_page_table, d) fails on
    another domain's page directory, twice; the caller is crashed, the other is untouched."""
    impl = g.impl
    other = Guest(impl, 32, 32)
    target = other.l2_mfn
    before = frame_of(impl, target)
    rc, _ = g.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, target, 0)])
    assert rc == EINVAL, "INV-ISO: a domain loaded another domain's page directory"
    assert not g.running, "new_guest_cr3: the second validation failure must crash the domain"
    assert base_of(impl, g.domid) == [0], "INV-BASE: the crashed vCPU must have no base pointer"
    assert base_of(impl, other.domid) == [target], \
        "INV-ISO: another domain's base pointer changed"
    assert_frame(impl, target, before, "INV-ISO: another domain's page directory changed")
    assert other.running, "INV-ISO: another domain stopped"
    assert_invariants(impl, [g, other])


# --- 17. other extended ops --------------------------------------------------------------------
@pytest.mark.clauses("mmuext_op/TLB_FLUSH")
def test_tlb_flush_and_invlpg(g: Guest) -> None:
    """MMUEXT_TLB_FLUSH_LOCAL/ALL, MMUEXT_INVLPG_LOCAL/ALL: succeed and change no frame or
    table (what they flush is checked on the reference model in tests/test_mm_rules.py)."""
    impl = g.impl
    tables = {m: list(impl.entries(m)) for m in (g.l2_mfn, *g.l1_mfns)}
    frames = {m: impl.frame(m) for m in range(impl.nr_frames())}
    for cmd in (abi.MMUEXT_TLB_FLUSH_LOCAL, abi.MMUEXT_TLB_FLUSH_ALL):
        assert g.mmuext_op([(cmd, 0, 0)]) == (0, 1), f"do_mmuext_op: TLB flush {cmd} failed"
    ops = [(abi.MMUEXT_INVLPG_LOCAL, 0xC0005000, 0), (abi.MMUEXT_INVLPG_ALL, 0xC0006000, 0)]
    assert g.mmuext_op(ops) == (0, 2), "do_mmuext_op: MMUEXT_INVLPG_LOCAL/ALL failed"
    assert {m: list(impl.entries(m)) for m in tables} == tables, \
        "do_mmuext_op: a TLB flush changed a page table"
    assert {m: impl.frame(m) for m in frames} == frames, \
        "do_mmuext_op: a TLB flush changed frame state"
    assert_invariants(impl, [g])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH")
def test_tlb_flush_multi(g: Guest) -> None:
    """MMUEXT_TLB_FLUSH_MULTI/INVLPG_MULTI: copy_from_guest(vcpumask) failure -> -EINVAL."""
    for cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
        for where in (0x1000, abi.HYPERVISOR_VIRT_START):
            assert g.mmuext_op([(cmd, 0xC0005000, where)]) == (EINVAL, 0), \
                f"do_mmuext_op {cmd}: an unreadable vCPU mask at {where:#x} must be -EINVAL"
    mask = g.write_args((1).to_bytes(4, "little"), 0x2000)  # vCPU 0
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_MULTI, 0, mask),
                        (abi.MMUEXT_INVLPG_MULTI, 0xC0005000, mask)]) == (0, 2), \
        "do_mmuext_op: TLB_FLUSH_MULTI/INVLPG_MULTI with a valid vCPU mask failed"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH")
def test_flush_cache_refused(g: Guest) -> None:
    """MMUEXT_FLUSH_CACHE: needs cache_flush_permitted (physical device access)."""
    assert g.mmuext_op([(abi.MMUEXT_FLUSH_CACHE, 0, 0)]) == (EINVAL, 0), \
        "do_mmuext_op MMUEXT_FLUSH_CACHE: a domain without device access must get -EINVAL"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmuext_op/SET_LDT")
def test_set_ldt(g: Guest) -> None:
    """MMUEXT_SET_LDT: page-aligned base, <= 8192 entries, below HYPERVISOR_VIRT_START (the
    vCPU's LDT base and size are checked on the reference model in tests/test_mm_rules.py)."""
    for base, ents, why in ((0xC0000800, 1, "unaligned base"), (0x10000000, 8193, "> 8192"),
                            (0xFBFFF000, 513, "reaching into the hypervisor hole")):
        assert g.mmuext_op([(abi.MMUEXT_SET_LDT, base, ents)]) == (EINVAL, 0), \
            f"MMUEXT_SET_LDT: an LDT {why} ({base:#x}, {ents}) was accepted"
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0x10000000, 8192)]) == (0, 1), \
        "MMUEXT_SET_LDT: an LDT of 8192 entries was refused"
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0xFBFFF000, 512)]) == (0, 1), \
        "MMUEXT_SET_LDT: an LDT ending at HYPERVISOR_VIRT_START was refused"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("mmuext_op/TLB_FLUSH")
def test_unknown_mmuext_command(g: Guest) -> None:
    """do_mmuext_op default: "Invalid extended pt command" -> -ENOSYS, batch stops there."""
    assert g.mmuext_op([(99, 0, 0)]) == (ENOSYS, 0), \
        "do_mmuext_op: an unknown command must be -ENOSYS"
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_ALL, 0, 0), (99, 0, 0),
                        (abi.MMUEXT_TLB_FLUSH_ALL, 0, 0)]) == (ENOSYS, 1), \
        "do_mmuext_op: an unknown command must stop the batch with *done = ops before it"
    assert_invariants(g.impl, [g])


# --- 18. update_va_mapping ---------------------------------------------------------------------
@pytest.mark.clauses("update_va_mapping", "INV-HOLE")
@pytest.mark.parametrize("va", [abi.HYPERVISOR_VIRT_START, 0xFFFFF000])
def test_uvm_in_hypervisor_hole_refused(g: Guest, va: int) -> None:
    """do_update_va_mapping: !__addr_ok(va) -> -EINVAL."""
    assert g.update_va_mapping(va, 0) == EINVAL, \
        f"INV-HOLE: update_va_mapping of {va:#x}, in the hypervisor hole, was accepted"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("update_va_mapping")
def test_uvm_without_l1_refused(g: Guest) -> None:
    """guest_map_l1e: the L2 slot of va is empty -> -EINVAL, nothing changes."""
    impl, (a,) = g.impl, g.free_mfns(1)
    assert g.update_va_mapping(0x00400000, g.pte(a, PTE_RO)) == EINVAL, \
        "guest_map_l1e: update_va_mapping of an address with no L1 table must be -EINVAL"
    assert_frame(impl, a, FREE, "guest_map_l1e: a refused update took refs")
    assert_invariants(impl, [g])


@pytest.mark.clauses("update_va_mapping", "INV-L2REF")
@pytest.mark.fix("uva-l1-only")
def test_uvm_through_linear_slot_refused(g: Guest) -> None:
    """do_update_va_mapping acts only on an L1 table: through a directory slot holding a
    read-only linear map of the directory, the "L1 entry" would be a directory entry, written
    without get_page_from_l2e's validation. Later Xen checks the type of the frame
    guest_map_l1e returns (-EINVAL); Xen 3.0.4 did not (the specification follows the fix)."""
    impl, (a,) = g.impl, g.free_mfns(1)
    empty = [s for s in range(abi.L2_PAGETABLE_FIRST_XEN_SLOT) if not g.entry(g.l2_mfn, s)]
    linear, target = empty[-1], empty[0]  # the linear slot, and the slot the write would hit
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, linear), g.pte(g.l2_mfn, PTE_RO))]) == \
        (0, 1), "get_linear_pagetable: a read-only self-map was refused"
    before = frame_of(impl, g.l2_mfn)
    va = linear << abi.L2_PAGETABLE_SHIFT | target << abi.PAGE_SHIFT
    assert g.update_va_mapping(va, g.pte(a, PTE_RW)) == EINVAL, \
        "do_update_va_mapping: an entry was written through a linear page-directory slot"
    assert g.entry(g.l2_mfn, target) == 0, \
        "do_update_va_mapping: an unvalidated entry was written into the page directory"
    assert_frame(impl, a, FREE, "do_update_va_mapping: a refused update took refs")
    assert_frame(impl, g.l2_mfn, before, "do_update_va_mapping: the directory changed")
    assert_invariants(impl, [g])


@pytest.mark.clauses("update_va_mapping", "INV-COUNT")
def test_uvm_updates_entry_and_references(g: Guest) -> None:
    """do_update_va_mapping -> mod_l1_entry: new refs taken, the old entry's dropped."""
    impl, (new,) = g.impl, g.free_mfns(1)
    va, old = g.va(g.data_pfn), g.mfn(g.data_pfn)
    assert g.update_va_mapping(va, g.pte(new, PTE_RO)) == 0, \
        "do_update_va_mapping: an RO map of the domain's own free frame was refused"
    assert g.entry(*g.l1e_of(g.data_pfn)) == g.pte(new, PTE_RO), \
        "do_update_va_mapping: the entry mapping va was not written"
    assert_frame(impl, old, Frame(WRITABLE, 0, 1, validated=True),
                 "put_page_from_l1e: the replaced entry's refs must be dropped")
    assert_frame(impl, new, Frame(NONE, 0, 2), "get_page_from_l1e: an RO entry takes a ref")
    assert_invariants(impl, [g])


@pytest.mark.clauses("update_va_mapping")
def test_uvm_bad_vcpu_bitmap_faults(g: Guest) -> None:
    """do_update_va_mapping: get_user(vmask, bmap_ptr) fails -> -EFAULT after the update."""
    impl = g.impl
    pte = g.pte(g.mfn(g.data_pfn), PTE_RO)  # was mapped RW
    assert g.update_va_mapping(g.va(g.data_pfn), pte, 0x1000 | abi.UVMF_TLB_FLUSH) == EFAULT, \
        "do_update_va_mapping: an unreadable vCPU bitmap must be -EFAULT"
    assert g.entry(*g.l1e_of(g.data_pfn)) == pte, \
        "do_update_va_mapping: the update is made before the vCPU bitmap is read"
    assert_frame(impl, g.mfn(g.data_pfn), Frame(WRITABLE, 0, 2, validated=True),
                 "mod_l1_entry: RW -> RO drops the writable type ref, keeps the general one")
    assert_invariants(impl, [g])


@pytest.mark.clauses("update_va_mapping")
@pytest.mark.parametrize("flush", [abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG], ids=["TLB", "INVLPG"])
def test_uvm_flush_targets(g: Guest, flush: int) -> None:
    """do_update_va_mapping: the flush's targets are flags & ~UVMF_FLUSHTYPE_MASK, UVMF_LOCAL,
    UVMF_ALL or a pointer to a vCPU bitmap; each readable one is accepted (rc 0)."""
    impl, va = g.impl, g.va(g.data_pfn)
    mask = g.write_args((1).to_bytes(4, "little"), 0x2000)  # vCPU 0
    frames = g.free_mfns(3)
    for target, new in zip((abi.UVMF_LOCAL, abi.UVMF_ALL, mask), frames, strict=True):
        assert g.update_va_mapping(va, g.pte(new, PTE_RO), flush | target) == 0, \
            f"do_update_va_mapping: flush {flush} to targets {target:#x} was refused"
        assert g.entry(*g.l1e_of(g.data_pfn)) == g.pte(new, PTE_RO), \
            "do_update_va_mapping: the entry mapping va was not written"
        assert_frame(impl, new, Frame(NONE, 0, 2), "get_page_from_l1e: an RO entry takes a ref")
    assert_invariants(impl, [g])


# --- 19. hostile arguments ---------------------------------------------------------------------
ERRNOS = {0} | {-v for k, v in vars(abi).items() if re.fullmatch(r"E[0-9A-Z]+", k)}


def _word(rng: random.Random, g: Guest, bits: int) -> int:
    """A hostile value: random bits, or something near a real frame, entry or address."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.getrandbits(bits)
    if kind == 1:
        return g.mfn(rng.randrange(len(g.info.p2m))) << 12 | rng.getrandbits(12)
    if kind == 2:
        return g.va(rng.randrange(g.info.nr_mapped)) + rng.getrandbits(12)
    if kind == 3:
        table = rng.choice([g.l2_mfn, g.l1_mfns[0]])
        return g.entry_maddr(table, rng.randrange(1024)) | rng.randrange(4)
    if kind == 4:
        return rng.choice([0, 1, 2, 3, 4, 5, 0xFBFFF000, 0xFC000000, 0xFFFFFFFF, 1 << 31])
    return rng.randrange(1 << 20)


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "update_va_mapping", "mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE",
                     "mmuext_op/UNPIN_TABLE", "mmuext_op/NEW_BASEPTR", "mmuext_op/TLB_FLUSH",
                     "mmuext_op/SET_LDT", "INV-HOLE", "INV-NOWRPT", "INV-OWN", "INV-COUNT",
                     "INV-VALID", "INV-PIN", "INV-BASE", "INV-L2REF", "INV-ISO")
def test_hostile_arguments(hv_factory: Callable[[], HypercallLevel]) -> None:
    """All three MMU hypercalls: garbage yields 0 or a negative errno, and invariants hold. A
    garbage NEW_BASEPTR may crash the domain, as in Xen; the test goes on with a fresh machine."""
    rng = random.Random(20061220)
    impl = hv_factory()
    g = Guest(impl, 64)
    for step in range(600):
        if not g.running:
            assert_invariants(impl, [g])
            impl = hv_factory()
            g = Guest(impl, 64)
        which = rng.randrange(4)
        fd = rng.choice([abi.DOMID_SELF] * 12 + [g.domid, 0, abi.DOMID_IO, rng.getrandbits(16)])
        what = ""
        try:
            if which == 0:
                reqs = [(_word(rng, g, 64), _word(rng, g, 64)) for _ in range(rng.randrange(1, 4))]
                what = f"mmu_update({[(hex(p), hex(v)) for p, v in reqs]}, foreigndom={fd:#x})"
                rc, _ = g.mmu_update(reqs, foreigndom=fd)
            elif which == 1:
                ops = [(rng.choice([rng.randrange(16), rng.getrandbits(32)]),
                        _word(rng, g, 32), _word(rng, g, 32)) for _ in range(rng.randrange(1, 4))]
                what = f"mmuext_op({[tuple(map(hex, op)) for op in ops]}, foreigndom={fd:#x})"
                rc, _ = g.mmuext_op(ops, foreigndom=fd)
            elif which == 2:
                args = [_word(rng, g, 32) for _ in range(4)]
                what = f"update_va_mapping{tuple(map(hex, args))}"
                rc = g.hypercall("update_va_mapping", *args)
            else:
                name = rng.choice(["mmu_update", "mmuext_op"])
                count = rng.choice([_word(rng, g, 32), rng.randrange(8)])
                args = [_word(rng, g, 32), count, _word(rng, g, 32), fd]
                what = f"{name}{tuple(map(hex, args))}"
                rc = g.hypercall(name, *args)
        except Exception as exc:  # the implementation failed, rather than the guest
            pytest.fail(f"step {step}: {what}: the implementation raised {exc!r}")
        assert rc in ERRNOS, f"step {step}: {what} returned {rc}, not 0 or a negative errno"
        if step % 100 == 99:
            assert_invariants(impl, [g])
    assert_invariants(impl, [g])


# --- 20. isolation -----------------------------------------------------------------------------
@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "update_va_mapping", "mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE",
                     "mmuext_op/UNPIN_TABLE", "INV-ISO", "INV-OWN")
def test_domain_cannot_reach_another_domains_frames(g: Guest, l1: int) -> None:
    """get_page (owner check): a domain cannot map another domain's frames (get_page_from_l1e,
    via mmu_update or update_va_mapping), write into them (do_mmu_update:
    get_page_from_pagenr(mfn, current->domain)), pin or unpin them
    (get_page_and_type_from_pagenr) or change their M2P entries (MMU_MACHPHYS_UPDATE); naming
    the other domain as FOREIGNDOM is -ESRCH for an unprivileged domain (set_foreigndom)."""
    impl = g.impl
    other = Guest(impl, 48, 32)
    data, pinned = other.free_mfns(2)
    assert other.pin(pinned, 1) == 0, "MMUEXT_PIN_L1_TABLE: an empty L1 table was refused"
    targets = {"a free frame": data, "a data frame": other.mfn(other.data_pfn),
               "a pinned L1": pinned,
               "its L1 table": other.l1_mfns[0], "its page directory": other.l2_mfn}
    state = {m: (impl.frame(m), list(impl.entries(m)), impl.machphys(m))
             for m in targets.values()}
    own_entry = g.entry(*g.l1e_of(g.data_pfn))
    for what, t in targets.items():
        for flags in (PTE_RO, PTE_RW):
            assert g.mmu_update([(g.entry_maddr(l1, 0), g.pte(t, flags))]) == (EINVAL, 0), \
                f"INV-ISO: a domain mapped {what} of another domain (mmu_update)"
            assert g.update_va_mapping(g.va(g.data_pfn), g.pte(t, flags)) == EINVAL, \
                f"INV-ISO: a domain mapped {what} of another domain (update_va_mapping)"
        assert g.mmu_update([(g.entry_maddr(t, 0), 0x1234)]) == (EINVAL, 0), \
            f"INV-ISO: a domain wrote into {what} of another domain (mmu_update)"
        for cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_UNPIN_TABLE):
            assert g.mmuext_op([(cmd, t, 0)]) == (EINVAL, 0), \
                f"INV-ISO: a domain (un)pinned {what} of another domain (mmuext_op {cmd})"
        assert g.mmu_update([(t << 12 | MACHPHYS, 0x55)]) == (EINVAL, 0), \
            f"INV-ISO: a domain changed the M2P entry of {what} of another domain"
        assert g.mmu_update([(g.entry_maddr(l1, 0), g.pte(t, PTE_RO))],
                            foreigndom=other.domid) == (ESRCH, 0), \
            "set_foreigndom: an unprivileged domain named another domain as FOREIGNDOM"
    assert g.entry(l1, 0) == 0, "INV-ISO: a refused foreign mapping was written"
    assert g.entry(*g.l1e_of(g.data_pfn)) == own_entry, \
        "INV-ISO: a refused update_va_mapping changed the entry"
    for what, t in targets.items():
        assert (impl.frame(t), list(impl.entries(t)), impl.machphys(t)) == state[t], \
            f"INV-ISO: {what} of another domain changed (frame state, contents or M2P entry)"
    assert_invariants(impl, [g, other])


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "mmuext_op/PIN_L1_TABLE", "mmuext_op/UNPIN_TABLE", "INV-ISO", "INV-OWN")
def test_privileged_domain_reaches_foreign_frames_only_with_foreigndom(g: Guest) -> None:
    """set_foreigndom: a privileged domain acts on another domain's frames only when it names
    that domain as FOREIGNDOM: get_page_from_l1e(l1e, FOREIGNDOM) maps them into its own L1,
    MMUEXT_PIN_* uses get_page_and_type_from_pagenr(mfn, type, FOREIGNDOM), MMU_MACHPHYS_UPDATE
    checks the owner against FOREIGNDOM. MMU_NORMAL_PT_UPDATE writes (get_page_from_pagenr(mfn,
    current->domain)) and MMUEXT_UNPIN_TABLE (get_page_from_pagenr(mfn, d)) act only on the
    caller's own frames, FOREIGNDOM or not: only the owner can unpin a foreign pin."""
    impl = g.impl
    priv = Guest(impl, 96, 64, privileged=True)
    (pl1,) = priv.free_mfns(1)
    assert priv.pin(pl1, 1) == 0, "MMUEXT_PIN_L1_TABLE: an empty L1 table was refused"
    t, table = g.free_mfns(2)
    ptr = priv.entry_maddr(pl1, 0)
    # Without FOREIGNDOM the other domain's frames are out of reach.
    assert priv.mmu_update([(ptr, priv.pte(t, PTE_RW))]) == (EINVAL, 0), \
        "INV-ISO: a privileged domain mapped another's frame without FOREIGNDOM"
    assert priv.pin(table, 1) == EINVAL, \
        "INV-ISO: a privileged domain pinned another's frame without FOREIGNDOM"
    assert priv.mmu_update([(t << 12 | MACHPHYS, 0x66)]) == (EINVAL, 0), \
        "INV-ISO: a privileged domain changed another's M2P entry without FOREIGNDOM"
    assert_frame(impl, t, FREE, "INV-ISO: refused foreign requests changed the frame")
    assert_frame(impl, table, FREE, "INV-ISO: refused foreign requests changed the frame")
    # Writing into another domain's frame is refused even with FOREIGNDOM.
    for fd in (abi.DOMID_SELF, g.domid):
        assert priv.mmu_update([(priv.entry_maddr(t, 0), 0x1234)], foreigndom=fd) == \
            (EINVAL, 0), "do_mmu_update: a privileged domain wrote into another's frame"
    assert g.entry(t, 0) == 0, "INV-ISO: another domain's frame was written"
    # With FOREIGNDOM: map, pin, M2P.
    assert priv.mmu_update([(ptr, priv.pte(t, PTE_RW))], foreigndom=g.domid) == (0, 1), \
        "get_page_from_l1e(FOREIGNDOM): a privileged domain's foreign map was refused"
    assert priv.entry(pl1, 0) == priv.pte(t, PTE_RW), "mod_l1_entry: the entry was not written"
    assert_frame(impl, t, Frame(WRITABLE, 1, 2, validated=True),
                 "get_page_from_l1e(FOREIGNDOM): the foreign frame takes the mapping's refs")
    assert priv.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, table, 0)], foreigndom=g.domid) == \
        (0, 1), "MMUEXT_PIN_L1_TABLE(FOREIGNDOM): a privileged domain's foreign pin was refused"
    assert_frame(impl, table, Frame(L1, 1, 2, True, True),
                 "MMUEXT_PIN_L1_TABLE(FOREIGNDOM): the pin takes a general and a type ref")
    assert priv.mmu_update([(t << 12 | MACHPHYS, 0x66)], foreigndom=g.domid) == (0, 1), \
        "MMU_MACHPHYS_UPDATE(FOREIGNDOM): a privileged domain's foreign update was refused"
    assert impl.machphys(t) == 0x66, "MMU_MACHPHYS_UPDATE: the M2P entry was not written"
    assert impl.frame(t).owner == g.domid and impl.frame(table).owner == g.domid, \
        "INV-ISO: foreign access changed a frame's owner"
    assert_invariants(impl, [g, priv])
    # And back: unmap, unpin.
    assert priv.mmu_update([(ptr, 0)]) == (0, 1), "mod_l1_entry: clearing an entry refused"
    assert_frame(impl, t, Frame(WRITABLE, 0, 1, validated=True),
                 "put_page_from_l1e: unmapping the foreign frame drops its refs")
    for fd in (abi.DOMID_SELF, g.domid):  # UNPIN checks the caller, not FOREIGNDOM (3.0.4)
        assert priv.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, table, 0)], foreigndom=fd) == \
            (EINVAL, 0), "MMUEXT_UNPIN_TABLE: get_page_from_pagenr(mfn, d) is the caller's " \
                         "domain: a privileged domain unpinned another's frame"
    assert_frame(impl, table, Frame(L1, 1, 2, True, True),
                 "MMUEXT_UNPIN_TABLE: a refused unpin changed the frame")
    assert g.unpin(table) == 0, "MMUEXT_UNPIN_TABLE: the owner could not unpin its frame"
    assert_frame(impl, table, Frame(L1, 0, 1), "MMUEXT_UNPIN_TABLE: the pin's refs must go")
    assert_invariants(impl, [g, priv])

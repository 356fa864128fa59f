"""One test per rule of the paravirtual MMU (xen/arch/x86/mm.c, Xen 3.0.4, x86_32 non-PAE).

Every test drives the model as a guest kernel would, through ``PVGuest``, and checks the exact
return code, the ``*done`` count and the resulting frame state.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

import pytest

from xenspec.refmodel.hypervisor import Hypervisor, HypervisorBug
from xenspec.refmodel.pvguest import DONE_OFFSET, PTE_RO, PTE_RW, PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

EINVAL, ENOSYS, EFAULT, ESRCH = -abi.EINVAL, -abi.ENOSYS, -abi.EFAULT, -abi.ESRCH
NONE, L1, L2, WRITABLE = PGT.none, PGT.l1_page_table, PGT.l2_page_table, PGT.writable_page
MACHPHYS = abi.MMU_MACHPHYS_UPDATE
UNSET = 0xFFFFFFFF  # PVGuest presets *done to this before each call


class Frame(NamedTuple):
    type: PGT
    type_count: int
    count: int
    validated: bool = False
    pinned: bool = False


FREE = Frame(NONE, 0, 1)  # a frame the domain owns and uses for nothing


def frame(hv: Hypervisor, mfn: int) -> Frame:
    f = hv.frames
    return Frame(PGT(f.type[mfn]), f.type_count[mfn], f.count[mfn],
                 f.is_validated(mfn), f.is_pinned(mfn))


def free_mfns(g: PVGuest, n: int) -> list[int]:
    return [g.mfn(pfn) for pfn in g.free_pfns()[:n]]


def entry(hv: Hypervisor, mfn: int, index: int) -> int:
    return hv.memory.read_entry(mfn, index)


def data_frames(g: PVGuest, n: int) -> list[int]:
    """Free frames past the one the ``l1`` fixture takes."""
    return [g.mfn(pfn) for pfn in g.free_pfns()[1 : 1 + n]]


def raw_batch(g: PVGuest, name: str, uptr: int, count: int, done: int = UNSET,
              foreigndom: int = abi.DOMID_SELF) -> tuple[int, int]:
    """Issue mmu_update/mmuext_op with a hand-made array pointer and preset *done."""
    g.write_args(done.to_bytes(4, "little"), DONE_OFFSET)
    rc = g.hypercall(name, uptr, count, g.done_va, foreigndom)
    return rc, g.read_done()


@pytest.fixture
def hv() -> Hypervisor:
    return Hypervisor(1024)


@pytest.fixture
def g(hv: Hypervisor) -> PVGuest:
    return PVGuest(hv, 128)


@pytest.fixture
def l1(g: PVGuest) -> int:
    """A pinned, empty L1 table."""
    (mfn,) = free_mfns(g, 1)
    assert g.pin(mfn, 1) == 0
    return mfn


# --- 1. plain writes ---------------------------------------------------------------------------
def test_normal_update_of_untyped_frame_is_plain_write(hv, g):
    """do_mmu_update MMU_NORMAL_PT_UPDATE, not_a_pt: an untyped frame is written as data."""
    (m,) = free_mfns(g, 1)
    assert g.mmu_update([(g.entry_maddr(m, 7), 0xDEADBEEF)]) == (0, 1)
    assert entry(hv, m, 7) == 0xDEADBEEF
    assert frame(hv, m) == Frame(WRITABLE, 0, 1, validated=True)
    assert check_invariants(hv) == []


# --- 2-6. L1 entries ---------------------------------------------------------------------------
def test_l1_entry_takes_and_drops_references(hv, g, l1):
    """mod_l1_entry/get_page_from_l1e/put_page_from_l1e: RO = general ref, RW = + writable type."""
    a, b = data_frames(g, 2)
    ptr = g.entry_maddr(l1, 0)
    assert g.mmu_update([(ptr, g.pte(a, PTE_RO))]) == (0, 1)
    assert frame(hv, a) == Frame(NONE, 0, 2)
    assert g.mmu_update([(ptr, g.pte(a, PTE_RW))]) == (0, 1)
    assert frame(hv, a) == Frame(WRITABLE, 1, 2, validated=True)
    assert g.mmu_update([(ptr, g.pte(b, PTE_RW))]) == (0, 1)  # replacing drops a's refs
    assert frame(hv, a) == Frame(WRITABLE, 0, 1, validated=True)
    assert frame(hv, b) == Frame(WRITABLE, 1, 2, validated=True)
    assert g.mmu_update([(ptr, 0)]) == (0, 1)
    assert frame(hv, b) == Frame(WRITABLE, 0, 1, validated=True)
    assert entry(hv, l1, 0) == 0
    assert frame(hv, l1) == Frame(L1, 1, 2, True, True)
    assert check_invariants(hv) == []


@pytest.mark.parametrize("flag, ok", [(abi._PAGE_PAT, False), (abi._PAGE_GLOBAL, False),
                                      (abi._PAGE_AVAIL, True)], ids=["PAT", "GLOBAL", "AVAIL"])
def test_l1_disallowed_flags(hv, g, l1, flag, ok):
    """mod_l1_entry, L1_DISALLOW_MASK: PAT and GLOBAL refused; AVAIL bits 9-11 are the guest's."""
    (a,) = data_frames(g, 1)
    pte = g.pte(a, PTE_RO | flag)
    assert g.mmu_update([(g.entry_maddr(l1, 3), pte)]) == ((0, 1) if ok else (EINVAL, 0))
    assert entry(hv, l1, 3) == (pte if ok else 0)
    assert frame(hv, a) == (Frame(NONE, 0, 2) if ok else FREE)
    assert check_invariants(hv) == []


def test_l1_entry_must_map_own_ram(hv, g, l1):
    """get_page_from_l1e: foreign, Xen-owned and beyond-RAM (I/O, no permission) frames refused."""
    other = PVGuest(hv, 32)
    targets = [other.mfn(20), hv.memory.nr_frames, 0x3FFFF, 0, hv.m2p_l1]
    for t in targets:
        before = frame(hv, t) if hv.memory.mfn_valid(t) else None
        for flags in (PTE_RO, PTE_RW):
            assert g.mmu_update([(g.entry_maddr(l1, 4), g.pte(t, flags))]) == (EINVAL, 0)
            assert entry(hv, l1, 4) == 0
        if before is not None:
            assert frame(hv, t) == before
    assert check_invariants(hv) == []


def test_page_table_frames_only_map_read_only(hv, g, l1):
    """get_page_from_l1e -> get_page_type(writable) fails on a frame in use as L1/L2."""
    ptr = g.entry_maddr(l1, 1)
    for pt in (g.l2_mfn, g.first_l1_mfn, l1):
        before = frame(hv, pt)
        assert g.mmu_update([(ptr, g.pte(pt, PTE_RW))]) == (EINVAL, 0)
        assert entry(hv, l1, 1) == 0
        assert frame(hv, pt) == before
        assert g.mmu_update([(ptr, g.pte(pt, PTE_RO))]) == (0, 1)
        assert frame(hv, pt) == before._replace(count=before.count + 1)
        assert check_invariants(hv) == []
        assert g.mmu_update([(ptr, 0)]) == (0, 1)
        assert frame(hv, pt) == before


@pytest.mark.parametrize("cmd", [abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE])
def test_writably_mapped_frame_cannot_be_pinned(hv, g, cmd):
    """get_page_type: a frame with writable type count > 0 cannot become a page table."""
    m = g.mfn(20)  # mapped read-write by the domain builder
    before = frame(hv, m)
    assert before == Frame(WRITABLE, 1, 2, validated=True)
    assert g.mmuext_op([(cmd, m, 0)]) == (EINVAL, 0)
    assert frame(hv, m) == before
    assert check_invariants(hv) == []


# --- 7-11. L2 entries --------------------------------------------------------------------------
def test_l2_entry_validates_l1(hv, g):
    """get_page_from_l2e: the frame named gets a type ref as L1 and is validated."""
    (t,) = free_mfns(g, 1)
    pte = g.pte(t, PTE_RW)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), pte)]) == (0, 1)
    assert entry(hv, g.l2_mfn, 5) == pte
    assert frame(hv, t) == Frame(L1, 1, 2, validated=True)
    assert check_invariants(hv) == []


def test_l2_entry_to_invalid_l1_refused(hv, g):
    """get_page_type: failed alloc_l1_table resets the type to none; general count unchanged."""
    (bad,) = free_mfns(g, 1)
    # As data, `bad` gets an entry mapping the page directory read-write.
    assert g.mmu_update([(g.entry_maddr(bad, 0), g.pte(g.l2_mfn, PTE_RW))]) == (0, 1)
    l2_before = frame(hv, g.l2_mfn)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), g.pte(bad, PTE_RW))]) == (EINVAL, 0)
    assert entry(hv, g.l2_mfn, 5) == 0
    assert frame(hv, bad) == FREE
    assert frame(hv, g.l2_mfn) == l2_before
    assert check_invariants(hv) == []


@pytest.mark.parametrize("flag", [abi._PAGE_PSE, abi._PAGE_GLOBAL], ids=["PSE", "GLOBAL"])
def test_l2_disallowed_flags(hv, g, flag):
    """mod_l2_entry, L2_DISALLOW_MASK: PSE and GLOBAL are refused in a present L2 entry."""
    (t,) = free_mfns(g, 1)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, 5), g.pte(t, PTE_RW | flag))]) == (EINVAL, 0)
    assert entry(hv, g.l2_mfn, 5) == 0
    assert frame(hv, t) == FREE
    assert check_invariants(hv) == []


def test_l2_xen_slots_cannot_be_written(hv, g):
    """mod_l2_entry, is_guest_l2_slot: slots 1008..1023 are Xen's, even a write of 0."""
    xen = hv.xen_l2_slots(g.domain)
    (t,) = free_mfns(g, 1)
    for slot in (abi.L2_PAGETABLE_FIRST_XEN_SLOT, abi.LINEAR_PT_SLOT, 1023):
        for val in (0, g.pte(t, PTE_RW)):
            assert g.mmu_update([(g.entry_maddr(g.l2_mfn, slot), val)]) == (EINVAL, 0)
    assert [entry(hv, g.l2_mfn, i) for i in range(1008, 1024)] == xen
    assert frame(hv, t) == FREE
    assert check_invariants(hv) == []


def test_linear_self_map(hv, g):
    """get_linear_pagetable: an RO self-map takes no reference; RW is refused."""
    l2, ptr = g.l2_mfn, g.entry_maddr(g.l2_mfn, 5)
    before = frame(hv, l2)
    assert g.mmu_update([(ptr, g.pte(l2, PTE_RW))]) == (EINVAL, 0)
    assert entry(hv, l2, 5) == 0
    assert g.mmu_update([(ptr, g.pte(l2, PTE_RO))]) == (0, 1)
    assert entry(hv, l2, 5) == g.pte(l2, PTE_RO)
    assert frame(hv, l2) == before
    assert check_invariants(hv) == []


def test_linear_map_of_other_l2(hv, g):
    """get_linear_pagetable: an RO map of another validated L2 takes a general and a type ref."""
    (other,) = free_mfns(g, 1)
    assert g.pin(other, 2) == 0
    assert frame(hv, other) == Frame(L2, 1, 2, True, True)
    ptr = g.entry_maddr(g.l2_mfn, 6)
    assert g.mmu_update([(ptr, g.pte(other, PTE_RW))]) == (EINVAL, 0)
    assert frame(hv, other) == Frame(L2, 1, 2, True, True)
    assert g.mmu_update([(ptr, g.pte(other, PTE_RO))]) == (0, 1)
    assert frame(hv, other) == Frame(L2, 2, 3, True, True)
    assert check_invariants(hv) == []
    assert g.mmu_update([(ptr, 0)]) == (0, 1)
    assert frame(hv, other) == Frame(L2, 1, 2, True, True)


def test_ro_linear_entry_cannot_be_flipped_writable(hv, g):
    """mod_l2_entry fast path (XSA-182 fix): an RO linear entry cannot become RW in place."""
    (other,) = free_mfns(g, 1)
    assert g.pin(other, 2) == 0
    for slot, target in ((5, g.l2_mfn), (6, other)):
        ptr = g.entry_maddr(g.l2_mfn, slot)
        assert g.mmu_update([(ptr, g.pte(target, PTE_RO))]) == (0, 1)
        before = frame(hv, target)
        assert g.mmu_update([(ptr, g.pte(target, PTE_RW))]) == (EINVAL, 0)
        assert entry(hv, g.l2_mfn, slot) == g.pte(target, PTE_RO)
        assert frame(hv, target) == before
    assert check_invariants(hv) == []


# --- 12. batches -------------------------------------------------------------------------------
def test_batch_stops_at_first_failure(hv, g, l1):
    """do_mmu_update: the loop breaks at the first failed request; *done counts those before."""
    (a,) = data_frames(g, 1)
    reqs = [(g.entry_maddr(l1, i), g.pte(a, PTE_RO | (abi._PAGE_GLOBAL if i == 1 else 0)))
            for i in range(3)]
    assert g.mmu_update(reqs) == (EINVAL, 1)
    assert [entry(hv, l1, i) for i in range(3)] == [g.pte(a, PTE_RO), 0, 0]
    assert frame(hv, a) == Frame(NONE, 0, 2)
    assert check_invariants(hv) == []


@pytest.mark.parametrize("cmd", [2, 3])
def test_unknown_mmu_update_command(hv, g, l1, cmd):
    """do_mmu_update: an unknown command (ptr & 3) stops the batch with -ENOSYS."""
    (a,) = data_frames(g, 1)
    reqs = [(g.entry_maddr(l1, i) | (cmd if i == 1 else 0), g.pte(a, PTE_RO)) for i in range(3)]
    assert g.mmu_update(reqs) == (ENOSYS, 1)
    assert [entry(hv, l1, i) for i in range(3)] == [g.pte(a, PTE_RO), 0, 0]
    assert frame(hv, a) == Frame(NONE, 0, 2)
    assert check_invariants(hv) == []


@pytest.mark.parametrize("name", ["mmu_update", "mmuext_op"])
@pytest.mark.parametrize("uptr, count", [
    (abi.HYPERVISOR_VIRT_START, 1),        # in the hypervisor hole
    (abi.HYPERVISOR_VIRT_START - 16, 2),   # reaching into it
    (0x1000, 1),                           # below the hole but unmapped
])
def test_bad_request_array_faults(hv, g, name, uptr, count):
    """guest_handle_okay / __copy_from_guest: a bad array pointer is -EFAULT with *done = 0."""
    assert raw_batch(g, name, uptr, count) == (EFAULT, 0)
    assert check_invariants(hv) == []


def test_preempted_batch_adds_previous_done(hv, g, l1):
    """do_mmu_update, MMU_UPDATE_PREEMPTED: the old *done is added to this call's count."""
    (a,) = data_frames(g, 1)
    buf = b"".join(abi.MMU_UPDATE_T.pack(g.entry_maddr(l1, i), g.pte(a, PTE_RO))
                   for i in range(2))
    uptr = g.write_args(buf)
    assert raw_batch(g, "mmu_update", uptr, 2 | abi.MMU_UPDATE_PREEMPTED, done=5) == (0, 7)
    assert frame(hv, a) == Frame(NONE, 0, 3)
    assert check_invariants(hv) == []


# --- 13-14. foreign domain and the M2P ---------------------------------------------------------
def test_foreigndom_unprivileged(hv, g):
    """set_foreigndom: DOMID_SELF ok; own domid or another domain from a domU -> -ESRCH."""
    other = PVGuest(hv, 32)
    m = g.mfn(20)
    assert g.mmu_update([(m << 12 | MACHPHYS, 0x100)]) == (0, 1)
    for fd in (g.domid, other.domid):
        assert g.mmu_update([(m << 12 | MACHPHYS, 0x200)], foreigndom=fd) == (ESRCH, 0)
    assert hv.m2p[m] == 0x100
    assert check_invariants(hv) == []


def test_foreigndom_privileged(hv, g):
    """set_foreigndom: a privileged domain may act on an existing domain; unknown -> -ESRCH."""
    priv = PVGuest(hv, 64, privileged=True)
    m = g.mfn(20)
    req = [(m << 12 | MACHPHYS, 0x300)]
    assert priv.mmu_update(req) == (EINVAL, 0)  # without foreigndom the frame is not priv's
    assert priv.mmu_update(req, foreigndom=priv.domid) == (ESRCH, 0)
    assert priv.mmu_update(req, foreigndom=0x1234) == (ESRCH, 0)
    assert hv.m2p[m] == 20
    assert priv.mmu_update(req, foreigndom=g.domid) == (0, 1)
    assert hv.m2p[m] == 0x300
    assert frame(hv, m) == Frame(WRITABLE, 1, 2, validated=True)
    assert check_invariants(hv) == []


def test_foreigndom_domid_io_accepted_for_domu(hv, g):
    """set_foreigndom: a domU may name DOMID_IO (I/O mappings at the caller's privilege)."""
    n = g.vcpu.tlb_flushes
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)], foreigndom=abi.DOMID_IO) == (0, 1)
    assert g.vcpu.tlb_flushes == n + 1


def test_machphys_update(hv, g):
    """MMU_MACHPHYS_UPDATE: M2P[mfn] = val for a frame the (foreign) domain owns, else -EINVAL."""
    other = PVGuest(hv, 32)
    m = g.mfn(20)
    assert g.mmu_update([(m << 12 | MACHPHYS, 0x77)]) == (0, 1)
    assert hv.m2p[m] == 0x77
    assert frame(hv, m) == Frame(WRITABLE, 1, 2, validated=True)
    for t in (other.mfn(20), 0, hv.m2p_l1):
        old = hv.m2p[t]
        assert g.mmu_update([(t << 12 | MACHPHYS, 0x77)]) == (EINVAL, 0)
        assert hv.m2p[t] == old
    assert g.mmu_update([(hv.memory.nr_frames << 12 | MACHPHYS, 0)]) == (EINVAL, 0)
    assert check_invariants(hv) == []


def test_mmu_update_ptr_high_bits_truncated(hv, g, l1):
    """do_mmu_update: gmfn = req.ptr >> PAGE_SHIFT is truncated to 32 bits on x86_32."""
    (a,) = data_frames(g, 1)
    assert g.mmu_update([(1 << 44 | g.entry_maddr(l1, 0), g.pte(a, PTE_RO))]) == (0, 1)
    assert entry(hv, l1, 0) == g.pte(a, PTE_RO)


# --- 15. pinning -------------------------------------------------------------------------------
def test_pin_l1_and_l2(hv, g):
    """do_mmuext_op MMUEXT_PIN_L1/L2_TABLE: a type ref, validation, and the pin flag."""
    a, b = free_mfns(g, 2)
    assert g.mmuext_op([(abi.MMUEXT_PIN_L1_TABLE, a, 0), (abi.MMUEXT_PIN_L2_TABLE, b, 0)]) == (0, 2)
    assert frame(hv, a) == Frame(L1, 1, 2, True, True)
    assert frame(hv, b) == Frame(L2, 1, 2, True, True)
    assert [entry(hv, b, i) for i in range(1008, 1024)] == hv.xen_l2_slots(g.domain)
    assert check_invariants(hv) == []


def test_pin_twice_refused(hv, g, l1):
    """MMUEXT_PIN_*: "already pinned" drops the new refs and fails; so does a type mismatch."""
    before = frame(hv, l1)
    for cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE):
        assert g.mmuext_op([(cmd, l1, 0)]) == (EINVAL, 0)
        assert frame(hv, l1) == before
    assert check_invariants(hv) == []


def test_pin_foreign_frame_refused(hv, g):
    """MMUEXT_PIN_*: get_page_and_type_from_pagenr fails on a frame of another domain."""
    other = PVGuest(hv, 48, nr_mapped=32)
    t = other.mfn(other.free_pfns()[0])
    for cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE):
        assert g.mmuext_op([(cmd, t, 0)]) == (EINVAL, 0)
        assert frame(hv, t) == FREE
    assert check_invariants(hv) == []


@pytest.mark.parametrize("cmd", [abi.MMUEXT_PIN_L3_TABLE, abi.MMUEXT_PIN_L4_TABLE])
def test_pin_l3_l4_ignored(hv, g, cmd):
    """MMUEXT_PIN_L3/L4 on 2-level paging: ignored, succeeds, changes nothing."""
    (t,) = free_mfns(g, 1)
    assert g.mmuext_op([(cmd, t, 0)]) == (0, 1)
    assert frame(hv, t) == FREE
    assert check_invariants(hv) == []


def test_unpin_of_unpinned_frame_refused(hv, g):
    """MMUEXT_UNPIN_TABLE: "not pinned" fails, leaving counts as they were."""
    (t,) = free_mfns(g, 1)
    for m in (t, g.first_l1_mfn):  # untyped; validated L1 but not pinned
        before = frame(hv, m)
        assert g.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, m, 0)]) == (EINVAL, 0)
        assert frame(hv, m) == before
    assert check_invariants(hv) == []


def test_unpin_releases_table_and_its_references(hv, g, l1):
    """MMUEXT_UNPIN_TABLE -> put_page_type -> free_l1_table: entries drop their references."""
    (d,) = data_frames(g, 1)
    assert g.mmu_update([(g.entry_maddr(l1, 0), g.pte(d, PTE_RW))]) == (0, 1)
    assert frame(hv, d) == Frame(WRITABLE, 1, 2, validated=True)
    assert g.mmuext_op([(abi.MMUEXT_UNPIN_TABLE, l1, 0)]) == (0, 1)
    assert frame(hv, l1) == Frame(L1, 0, 1)
    assert frame(hv, d) == Frame(WRITABLE, 0, 1, validated=True)
    assert entry(hv, l1, 0) == g.pte(d, PTE_RW)  # contents stay; only references go
    assert check_invariants(hv) == []


# --- 16. base pointer --------------------------------------------------------------------------
def test_new_baseptr_switches_tables(hv, g):
    """new_guest_cr3: a type ref on the new directory, the old one's dropped."""
    (new,) = free_mfns(g, 1)
    slot = g.layout.virt_base >> abi.L2_PAGETABLE_SHIFT  # keep the kernel mapping reachable
    assert g.mmu_update([(g.entry_maddr(new, slot), entry(hv, g.l2_mfn, slot))]) == (0, 1)
    assert g.pin(new, 2) == 0
    old = g.l2_mfn
    assert frame(hv, old) == Frame(L2, 2, 4, True, True)
    assert g.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, new, 0)]) == (0, 1)
    assert g.vcpu.guest_table == new
    assert frame(hv, old) == Frame(L2, 1, 3, True, True)
    assert frame(hv, new) == Frame(L2, 2, 3, True, True)
    assert check_invariants(hv) == []


def test_new_baseptr_to_invalid_directory_crashes_domain(hv, g):
    """new_guest_cr3 (3.0.4): retry without the old base; a second failure crashes the domain."""
    (bad,) = free_mfns(g, 1)
    pse_entry = g.pte(g.first_l1_mfn, PTE_RW | abi._PAGE_PSE)
    assert g.mmu_update([(g.entry_maddr(bad, 0), pse_entry)]) == (0, 1)
    old = g.l2_mfn
    rc, done = g.mmuext_op([(abi.MMUEXT_NEW_BASEPTR, bad, 0)])
    assert rc == EINVAL
    assert done == UNSET  # no page table is left to write *done through
    assert not g.domain.is_running
    assert g.vcpu.guest_table == 0
    assert frame(hv, old) == Frame(L2, 1, 3, True, True)  # the base reference was dropped
    assert frame(hv, bad) == FREE
    assert check_invariants(hv) == []


# --- 17. other extended ops --------------------------------------------------------------------
def test_tlb_flush_and_invlpg(hv, g):
    """MMUEXT_TLB_FLUSH_LOCAL/ALL, MMUEXT_INVLPG_LOCAL/ALL: flush this domain's vCPUs."""
    v, n = g.vcpu, g.vcpu.tlb_flushes
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)]) == (0, 1)
    assert v.tlb_flushes == n + 1
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_ALL, 0, 0)]) == (0, 1)
    assert v.tlb_flushes == n + 2
    ops = [(abi.MMUEXT_INVLPG_LOCAL, 0xC0005000, 0), (abi.MMUEXT_INVLPG_ALL, 0xC0006000, 0)]
    assert g.mmuext_op(ops) == (0, 2)
    assert v.tlb_invlpgs == [0xC0005000, 0xC0006000]
    assert v.tlb_flushes == n + 2
    assert check_invariants(hv) == []


def test_tlb_flush_multi(hv, g):
    """MMUEXT_TLB_FLUSH_MULTI/INVLPG_MULTI: copy_from_guest(vcpumask) failure -> -EINVAL."""
    v, n = g.vcpu, g.vcpu.tlb_flushes
    for cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
        assert g.mmuext_op([(cmd, 0xC0005000, 0x1000)]) == (EINVAL, 0)
        assert g.mmuext_op([(cmd, 0xC0005000, abi.HYPERVISOR_VIRT_START)]) == (EINVAL, 0)
    assert (v.tlb_flushes, v.tlb_invlpgs) == (n, [])
    mask = g.write_args((1).to_bytes(4, "little"), 0x2000)  # vCPU 0
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_MULTI, 0, mask),
                        (abi.MMUEXT_INVLPG_MULTI, 0xC0005000, mask)]) == (0, 2)
    assert (v.tlb_flushes, v.tlb_invlpgs) == (n + 1, [0xC0005000])


def test_flush_cache_refused(hv, g):
    """MMUEXT_FLUSH_CACHE: needs cache_flush_permitted (physical device access)."""
    assert g.mmuext_op([(abi.MMUEXT_FLUSH_CACHE, 0, 0)]) == (EINVAL, 0)
    assert check_invariants(hv) == []


def test_set_ldt(hv, g):
    """MMUEXT_SET_LDT: page-aligned base, <= 8192 entries, below HYPERVISOR_VIRT_START."""
    v = g.vcpu
    for base, ents in ((0xC0000800, 1), (0x10000000, 8193), (0xFBFFF000, 513)):
        assert g.mmuext_op([(abi.MMUEXT_SET_LDT, base, ents)]) == (EINVAL, 0)
        assert (v.ldt_base, v.ldt_ents) == (0, 0)
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0x10000000, 8192)]) == (0, 1)
    assert (v.ldt_base, v.ldt_ents) == (0x10000000, 8192)
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0xFBFFF000, 512)]) == (0, 1)  # ends at the hole
    assert (v.ldt_base, v.ldt_ents) == (0xFBFFF000, 512)


def test_unknown_mmuext_command(hv, g):
    """do_mmuext_op default: "Invalid extended pt command" -> -ENOSYS, batch stops there."""
    n = g.vcpu.tlb_flushes
    assert g.mmuext_op([(99, 0, 0)]) == (ENOSYS, 0)
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_ALL, 0, 0), (99, 0, 0),
                        (abi.MMUEXT_TLB_FLUSH_ALL, 0, 0)]) == (ENOSYS, 1)
    assert g.vcpu.tlb_flushes == n + 1


# --- 18. update_va_mapping ---------------------------------------------------------------------
@pytest.mark.parametrize("va", [abi.HYPERVISOR_VIRT_START, 0xFFFFF000])
def test_uvm_in_hypervisor_hole_refused(hv, g, va):
    """do_update_va_mapping: !__addr_ok(va) -> -EINVAL."""
    assert g.update_va_mapping(va, 0) == EINVAL
    assert check_invariants(hv) == []


def test_uvm_without_l1_refused(hv, g):
    """guest_map_l1e: the L2 slot of va is empty -> -EINVAL, nothing changes."""
    (a,) = free_mfns(g, 1)
    assert g.update_va_mapping(0x00400000, g.pte(a, PTE_RO)) == EINVAL
    assert frame(hv, a) == FREE
    assert check_invariants(hv) == []


def test_uvm_updates_entry_and_references(hv, g):
    """do_update_va_mapping -> mod_l1_entry: new refs taken, the old entry's dropped."""
    (new,) = free_mfns(g, 1)
    va, old = g.va(20), g.mfn(20)
    assert g.update_va_mapping(va, g.pte(new, PTE_RO)) == 0
    assert entry(hv, g.first_l1_mfn, 20) == g.pte(new, PTE_RO)
    assert frame(hv, old) == Frame(WRITABLE, 0, 1, validated=True)
    assert frame(hv, new) == Frame(NONE, 0, 2)
    assert check_invariants(hv) == []


def test_uvm_invlpg_flushes_va(hv, g):
    """do_update_va_mapping, UVMF_INVLPG|UVMF_LOCAL: invalidate va on this vCPU."""
    va = g.va(20)
    assert g.update_va_mapping(va, g.pte(g.mfn(20), PTE_RO), abi.UVMF_INVLPG) == 0
    assert g.vcpu.tlb_invlpgs == [va]


def test_uvm_failed_update_still_flushes(hv, g):
    """do_update_va_mapping (3.0.4): the flush runs even when the update failed."""
    n = g.vcpu.tlb_flushes
    assert g.update_va_mapping(0x00400000, 0, abi.UVMF_TLB_FLUSH) == EINVAL
    assert g.vcpu.tlb_flushes == n + 1


def test_uvm_bad_vcpu_bitmap_faults(hv, g):
    """do_update_va_mapping: get_user(vmask, bmap_ptr) fails -> -EFAULT after the update."""
    pte = entry(hv, g.first_l1_mfn, 20)
    assert g.update_va_mapping(g.va(20), pte, 0x1000 | abi.UVMF_TLB_FLUSH) == EFAULT
    assert entry(hv, g.first_l1_mfn, 20) == pte


# --- 19-20. hostile arguments and unknown hypercalls -------------------------------------------
ERRNOS = {0} | {-v for k, v in vars(abi).items() if re.fullmatch(r"E[0-9A-Z]+", k)}


def _word(rng: random.Random, g: PVGuest, bits: int) -> int:
    """A hostile value: random bits, or something near a real frame, entry or address."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.getrandbits(bits)
    if kind == 1:
        return g.mfn(rng.randrange(g.domain.tot_pages)) << 12 | rng.getrandbits(12)
    if kind == 2:
        return g.va(rng.randrange(g.layout.nr_mapped)) + rng.getrandbits(12)
    if kind == 3:
        table = rng.choice([g.l2_mfn, g.first_l1_mfn])
        return g.entry_maddr(table, rng.randrange(1024)) | rng.randrange(4)
    if kind == 4:
        return rng.choice([0, 1, 2, 3, 4, 5, 0xFBFFF000, 0xFC000000, 0xFFFFFFFF, 1 << 31])
    return rng.randrange(1 << 20)


def test_hostile_arguments_never_raise():
    """All three MMU hypercalls: garbage yields 0 or a negative errno, and invariants hold."""
    hv = Hypervisor(4096)
    rng = random.Random(20061220)
    g = PVGuest(hv, 64)
    for step in range(600):
        if not g.domain.is_running:  # a garbage NEW_BASEPTR crashes the domain, as in Xen
            g = PVGuest(hv, 64)
        which = rng.randrange(4)
        fd = rng.choice([abi.DOMID_SELF] * 12 + [g.domid, 0, abi.DOMID_IO, rng.getrandbits(16)])
        try:
            if which == 0:
                reqs = [(_word(rng, g, 64), _word(rng, g, 64)) for _ in range(rng.randrange(1, 4))]
                rc, _ = g.mmu_update(reqs, foreigndom=fd)
            elif which == 1:
                ops = [(rng.choice([rng.randrange(16), rng.getrandbits(32)]),
                        _word(rng, g, 32), _word(rng, g, 32)) for _ in range(rng.randrange(1, 4))]
                rc, _ = g.mmuext_op(ops, foreigndom=fd)
            elif which == 2:
                rc = g.hypercall("update_va_mapping", *(_word(rng, g, 32) for _ in range(4)))
            else:
                count = rng.choice([_word(rng, g, 32), rng.randrange(8)])
                rc = g.hypercall(rng.choice(["mmu_update", "mmuext_op"]),
                                 _word(rng, g, 32), count, _word(rng, g, 32), fd)
        except HypervisorBug as exc:  # an exception escaped the model
            pytest.fail(f"step {step}: {exc}")
        assert rc in ERRNOS, f"step {step}: rc {rc}"
        if step % 100 == 99:
            assert check_invariants(hv) == [], f"after step {step}"
    assert check_invariants(hv) == []


@pytest.mark.parametrize("nr", [11, 63, 64, 1000])
def test_unknown_hypercall_numbers(hv, g, nr):
    """entry.S hypercall_table / NR_hypercalls: unimplemented numbers return -ENOSYS."""
    assert hv.hypercall(g.vcpu, nr, 1, 2, 3, 4, 5) == ENOSYS
    assert check_invariants(hv) == []

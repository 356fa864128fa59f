"""Hypercall level: grant tables (``grant_table_op``), through the adapter.

Rules of Xen 3.0.4 xen/common/grant_table.c (do_grant_table_op, gnttab_setup_table,
__gnttab_map_grant_ref, __gnttab_unmap_grant_ref, __gnttab_copy) and xen/arch/x86/mm.c
(create_grant_host_mapping, destroy_grant_host_mapping and their va and pte forms), on the
interface of xen/include/public/grant_table.h (version-1 entries, GTF_* flags, GNTMAP_* flags,
GNTST_* statuses). ``GNTTABOP_query_size`` is Xen 3.1's interface, answered with the fixed size.

A granting domain learns its shared frames with setup_table and writes its entries with
``mmu_update`` (a normal update of a frame of its own that is no page table is a plain store,
mm.c do_mmu_update), the frame word before the flags word, as grant_table.h asks. The suite
reads the GTF_reading and GTF_writing bits Xen sets back from the shared frame (``entries``),
the PTE a host mapping writes from the grantee's L1, and every granted frame's references. Each
test ends with every invariant checked: a grant mapping of another domain's frame is allowed
only as the host mapping of one of its grantee's handles, which the adapter reports
(``GrantState``, the "grants" offering).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.checks import Frame, assert_frame, assert_invariants
from xenspec.conformance.driver import Guest
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

pytestmark = pytest.mark.needs("grants")

SELF = abi.DOMID_SELF
EINVAL, EFAULT, ENOSYS = -abi.EINVAL, -abi.EFAULT, -abi.ENOSYS
OKAY, GENERAL, BAD_DOMAIN, BAD_REF, BAD_HANDLE = (
    abi.GNTST_okay, abi.GNTST_general_error, abi.GNTST_bad_domain, abi.GNTST_bad_gntref,
    abi.GNTST_bad_handle)
HOST, DEV, RO = abi.GNTMAP_host_map, abi.GNTMAP_device_map, abi.GNTMAP_readonly
PERMIT, GTF_RO = abi.GTF_permit_access, abi.GTF_readonly
READING, WRITING = abi.GTF_reading, abi.GTF_writing
NONE, WRITABLE = PGT.none, PGT.writable_page
PER_FRAME = abi.PAGE_SIZE // abi.GRANT_ENTRY_T.size
MAP, UNMAP, COPY = "grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref", \
    "grant_table_op/copy"
SETUP = "grant_table_op/setup_table"

# Where the tests put a structure's OUT lists in the argument area (the structure is at 0).
LIST_OFFSET = 0x800


class Gnt:
    """GNTTABOP_* wrappers of one domain: structures go in its argument area."""

    def __init__(self, g: Guest) -> None:
        self.g = g
        self._frames: list[int] | None = None

    def op(self, cmd: int, data: bytes, count: int = 1) -> tuple[int, bytes]:
        va = self.g.write_args(data)
        rc = self.g.hypercall("grant_table_op", cmd, va, count)
        return rc, self.g.read_args(0, len(data))

    # --- setup_table and the shared entries ----------------------------------------------------
    def setup_table(self, nr: int = abi.NR_GRANT_FRAMES, dom: int = SELF,
                    count: int = 1) -> tuple[int, int, list[int]]:
        """(rc, status, the frame list written)."""
        self.g.write_args(b"\xff" * 4 * max(nr, 1), LIST_OFFSET)
        lst = self.g.va(self.g.arg_pfn) + LIST_OFFSET
        rc, out = self.op(abi.GNTTABOP_setup_table,
                          abi.GNTTAB_SETUP_TABLE_T.pack(dom, nr, 0, lst), count)
        status = abi.GNTTAB_SETUP_TABLE_T.unpack(out)[2]
        raw = self.g.read_args(LIST_OFFSET, 4 * nr) if status == OKAY else b""
        return rc, status, [int.from_bytes(raw[i : i + 4], "little")
                            for i in range(0, len(raw), 4)]

    @property
    def frames(self) -> list[int]:
        if self._frames is None:
            rc, status, frames = self.setup_table()
            assert (rc, status) == (0, OKAY), \
                f"{SETUP}: setup_table of the domain's own table gave rc {rc}, status {status}"
            self._frames = frames
        return self._frames

    def where(self, ref: int) -> tuple[int, int]:
        """(shared frame, first word) of entry ``ref``."""
        return self.frames[ref // PER_FRAME], 2 * (ref % PER_FRAME)

    def entry(self, ref: int) -> tuple[int, int, int]:
        """(flags, domid, frame) of entry ``ref`` as the shared frame holds it."""
        mfn, w = self.where(ref)
        words = self.g.impl.entries(mfn)
        return words[w] & 0xFFFF, words[w] >> 16, words[w + 1]

    def flags(self, ref: int) -> int:
        return self.entry(ref)[0]

    def grant(self, ref: int, grantee: int, mfn: int, flags: int = PERMIT) -> None:
        """Write entry ``ref``: the frame first, then the flags and the domain."""
        at, w = self.where(ref)
        ok = self.g.mmu_update([(self.g.entry_maddr(at, w + 1), mfn),
                                (self.g.entry_maddr(at, w), flags | grantee << 16)])
        assert ok == (0, 2), f"do_mmu_update: writing grant entry {ref} was refused: {ok}"

    # --- map, unmap, copy ----------------------------------------------------------------------
    def map(self, addr: int, flags: int, ref: int, dom: int) -> tuple[int, int, int, int]:
        """(rc, status, handle, dev_bus_addr)."""
        T = abi.GNTTAB_MAP_GRANT_REF_T
        rc, out = self.op(abi.GNTTABOP_map_grant_ref,
                          T.pack(addr, flags, ref, dom, 0x5A5A, 0xA5A5A5A5, 0x5A5A5A5A5A))
        _, _, _, _, status, handle, bus = T.unpack(out)
        return rc, status, handle, bus

    def map_ok(self, addr: int, flags: int, ref: int, dom: int) -> int:
        rc, status, handle, _ = self.map(addr, flags, ref, dom)
        assert (rc, status) == (0, OKAY), \
            f"{MAP}: map of ref {ref} of d{dom} (flags {flags:#x}) gave rc {rc}, status {status}"
        return handle

    def unmap(self, addr: int, bus: int, handle: int) -> tuple[int, int]:
        T = abi.GNTTAB_UNMAP_GRANT_REF_T
        rc, out = self.op(abi.GNTTABOP_unmap_grant_ref, T.pack(addr, bus, handle, 0x5A5A))
        return rc, T.unpack(out)[3]

    def copy(self, src: tuple[int, int, int], dst: tuple[int, int, int], length: int,
             flags: int) -> tuple[int, int]:
        """``src``, ``dst``: (ref or mfn, domid, offset). (rc, status)."""
        T = abi.GNTTAB_COPY_T
        rc, out = self.op(abi.GNTTABOP_copy, T.pack(*src, *dst, length, flags, 0x5A5A))
        return rc, T.unpack(out)[8]


@dataclass(frozen=True)
class Window:
    """A page of the grantee's address space whose PTE is in an L1 of its own: ``va`` is
    mapped by entry ``index`` of the pinned table ``l1``."""

    va: int
    l1: int
    index: int

    @property
    def pte_maddr(self) -> int:
        return (self.l1 << abi.PAGE_SHIFT) + 4 * self.index


def window(g: Guest, index: int = 0) -> Window:
    """Pin one of the domain's free frames as an empty L1 and hook it into the first empty
    guest slot (above slot 0) of its page directory."""
    (l1,) = g.free_mfns(1)
    assert g.pin(l1, 1) == 0, "MMUEXT_PIN_L1_TABLE: an empty L1 table could not be pinned"
    slot = next(i for i in range(1, abi.L2_PAGETABLE_FIRST_XEN_SLOT)
                if not g.entry(g.l2_mfn, i) & abi._PAGE_PRESENT)
    assert g.mmu_update([(g.entry_maddr(g.l2_mfn, slot), g.pte(l1))]) == (0, 1), \
        "mod_l2_entry: hooking a pinned L1 into an empty directory slot was refused"
    return Window((slot << abi.L2_PAGETABLE_SHIFT) + (index << abi.PAGE_SHIFT), l1, index)


def grant_pte(frame: int, flags: int) -> int:
    """The PTE create_grant_host_mapping writes (mm.c): GRANT_PTE_FLAGS, RW unless read-only,
    USER for GNTMAP_application_map."""
    pte = frame << abi.PAGE_SHIFT | abi.GRANT_PTE_FLAGS
    if not flags & RO:
        pte |= abi._PAGE_RW
    if flags & abi.GNTMAP_application_map:
        pte |= abi._PAGE_USER
    return pte


@pytest.fixture
def pair(hv_impl: HypercallLevel) -> tuple[Guest, Guest]:
    """(grantee, granter): two unprivileged domains."""
    return Guest(hv_impl, 64, 32), Guest(hv_impl, 64, 32)


# --- setup_table, query_size and the batch --------------------------------------------------
@pytest.mark.clauses("grant_table_op/setup_table", "INV-XENPAGE")
def test_setup_table(hv_impl: HypercallLevel) -> None:
    """gnttab_setup_table: NR_GRANT_FRAMES shared frames, the domain's, writable, never page
    tables; more than that is GNTST_general_error; another domain needs privilege
    (GNTST_permission_denied) and must exist (GNTST_bad_domain); exactly one structure
    (-EINVAL), readable (-EFAULT)."""
    a, b = Guest(hv_impl, 64, 32), Guest(hv_impl, 64, 32)
    priv = Guest(hv_impl, 64, 32, privileged=True)
    ga = Gnt(a)
    rc, status, frames = ga.setup_table()
    assert (rc, status) == (0, OKAY), f"{SETUP}: own table: rc {rc}, status {status}"
    assert len(set(frames)) == abi.NR_GRANT_FRAMES, f"{SETUP}: frames {frames}"
    for m in frames:
        f = hv_impl.frame(m)
        assert (f.owner, f.type) == (a.domid, WRITABLE), \
            f"{SETUP}: shared frame {m:#x} is not the domain's writable page: {f}"
    assert ga.setup_table(1)[1:] == (OKAY, frames[:1]), f"{SETUP}: the first frame alone"
    assert ga.setup_table(abi.NR_GRANT_FRAMES + 1)[:2] == (0, GENERAL), \
        f"{SETUP}: more frames than the table has"
    assert ga.setup_table(count=2)[0] == EINVAL, f"{SETUP}: count != 1"
    assert ga.setup_table(count=0)[0] == EINVAL, f"{SETUP}: count 0"
    assert a.hypercall("grant_table_op", abi.GNTTABOP_setup_table, 0x1000, 1) == EFAULT
    assert ga.setup_table(dom=b.domid)[:2] == (0, abi.GNTST_permission_denied), \
        f"{SETUP}: an unprivileged domain asked for another's table"
    rc, status, theirs = Gnt(priv).setup_table(dom=a.domid)
    assert (rc, status, theirs) == (0, OKAY, frames), \
        f"{SETUP}: a privileged domain asking for d{a.domid}'s table: {rc}, {status}, {theirs}"
    assert Gnt(priv).setup_table(dom=0x7000)[:2] == (0, BAD_DOMAIN)
    assert a.pin(frames[0], 1) == EINVAL, \
        "MMUEXT_PIN_L1_TABLE: a shared grant frame can never become a page table"
    assert_invariants(hv_impl, [a, b, priv])


@pytest.mark.clauses("grant_table_op/query_size")
def test_query_size(pair: tuple[Guest, Guest]) -> None:
    """GNTTABOP_query_size (Xen 3.1's interface, which the model answers with the fixed
    size): (nr_frames, max_nr_frames, status); another domain's needs privilege; exactly one
    structure. Xen 3.0.4 has no such command (-ENOSYS): then the test is not offered."""
    a, b = pair
    ga = Gnt(a)
    Q = abi.GNTTAB_QUERY_SIZE_T
    rc, out = ga.op(abi.GNTTABOP_query_size, Q.pack(SELF, 0, 0, 0x5A5A))
    if rc == ENOSYS:
        raise NotImplementedError("GNTTABOP_query_size (Xen 3.1's interface; Xen 3.0.4 "
                                  "answers -ENOSYS)")
    assert (rc, *Q.unpack(out)) == (0, SELF, abi.NR_GRANT_FRAMES, abi.NR_GRANT_FRAMES, OKAY), \
        "grant_table_op/query_size: (nr_frames, max_nr_frames, status)"
    rc, out = ga.op(abi.GNTTABOP_query_size, Q.pack(b.domid, 0, 0, 0x5A5A))
    assert (rc, Q.unpack(out)[3]) == (0, abi.GNTST_permission_denied)
    rc, out = ga.op(abi.GNTTABOP_query_size, Q.pack(SELF, 0, 0, 0), 2)
    assert rc == EINVAL, "grant_table_op/query_size: count != 1"


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/copy")
def test_batch_arguments(pair: tuple[Guest, Guest]) -> None:
    """do_grant_table_op: more than 512 operations -EINVAL, an unknown or unmodelled command
    (GNTTABOP_transfer) -ENOSYS, an unreadable array -EFAULT, a count of 0 does nothing."""
    a, _ = pair
    va = a.va(a.arg_pfn)
    assert a.hypercall("grant_table_op", abi.GNTTABOP_map_grant_ref, va,
                       abi.GNTTAB_MAX_BATCH + 1) == EINVAL
    assert a.hypercall("grant_table_op", 7, va, 1) == ENOSYS
    assert a.hypercall("grant_table_op", abi.GNTTABOP_transfer, va, 1) == ENOSYS
    assert a.hypercall("grant_table_op", abi.GNTTABOP_map_grant_ref, 0x1000, 1) == EFAULT
    assert a.hypercall("grant_table_op", abi.GNTTABOP_copy, 0xFFFFF000, 2) == EFAULT
    assert a.hypercall("grant_table_op", abi.GNTTABOP_map_grant_ref, 0x1000, 0) == 0


# --- map and unmap: the host form -----------------------------------------------------------
@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                     "INV-OWN", "INV-COUNT", "INV-GNT-RO")
def test_writable_host_map_and_unmap(pair: tuple[Guest, Guest]) -> None:
    """A writable host mapping: GTF_reading and GTF_writing set, the PTE written with RW, the
    frame referenced writable for the granter; the unmap clears the PTE and both bits and
    drops the references; the handle is free afterwards (GNTST_bad_handle)."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    (m,) = b.free_mfns(1)
    gb.grant(5, a.domid, m)
    w = window(a)
    rc, status, h, bus = ga.map(w.va, HOST, 5, b.domid)
    assert (rc, status) == (0, OKAY), f"{MAP}: a permitted writable map gave {rc}, {status}"
    assert bus == m << abi.PAGE_SHIFT, f"{MAP}: dev_bus_addr {bus:#x}, frame {m:#x}"
    assert gb.flags(5) == PERMIT | READING | WRITING, \
        f"{MAP}: the entry's flags after a writable pin are {gb.flags(5):#x}"
    assert a.entry(w.l1, w.index) == grant_pte(m, HOST), \
        f"{MAP}: create_grant_va_mapping wrote {a.entry(w.l1, w.index):#x}"
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True),
                 f"{MAP}: a writable host mapping holds a general and a writable type ref")
    assert_invariants(impl, [a, b])
    assert ga.unmap(w.va, 0, h) == (0, OKAY), f"{UNMAP}: unmap of a live handle refused"
    assert a.entry(w.l1, w.index) == 0, f"{UNMAP}: the PTE was not cleared"
    assert gb.flags(5) == PERMIT, f"{UNMAP}: flags after the last unpin: {gb.flags(5):#x}"
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True),
                 f"{UNMAP}: the unmap drops the mapping's references")
    assert ga.unmap(w.va, 0, h) == (0, BAD_HANDLE), f"{UNMAP}: the handle was freed"
    assert_invariants(impl, [a, b])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                     "INV-GNT-RO", "INV-COUNT")
def test_readonly_grant(pair: tuple[Guest, Guest]) -> None:
    """A GTF_readonly entry: a writable map is refused ("Attempt to write-pin a r/o grant
    entry", GNTST_general_error) with nothing pinned; a read-only map sets GTF_reading alone,
    writes a PTE without RW and takes a general reference only; while it is pinned a writable
    map is refused again; its unmap clears GTF_reading."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    (m,) = b.free_mfns(1)
    gb.grant(9, a.domid, m, PERMIT | GTF_RO)
    w = window(a)
    assert ga.map(w.va, HOST, 9, b.domid)[:2] == (0, GENERAL), \
        f"{MAP}: a writable map of a read-only grant"
    assert gb.flags(9) == PERMIT | GTF_RO, f"{MAP}: a refused map left flags {gb.flags(9):#x}"
    assert_frame(impl, m, Frame(NONE, 0, 1), f"{MAP}: a refused map left references")
    h = ga.map_ok(w.va, HOST | RO, 9, b.domid)
    assert gb.flags(9) == PERMIT | GTF_RO | READING, f"{MAP}: flags {gb.flags(9):#x}"
    assert a.entry(w.l1, w.index) == grant_pte(m, HOST | RO), f"{MAP}: read-only PTE"
    assert_frame(impl, m, Frame(NONE, 0, 2), f"{MAP}: a read-only mapping holds a general ref")
    w2 = Window(w.va + abi.PAGE_SIZE, w.l1, w.index + 1)
    assert ga.map(w2.va, HOST, 9, b.domid)[:2] == (0, GENERAL), \
        f"{MAP}: a writable map of a read-only grant already pinned read-only"
    assert gb.flags(9) == PERMIT | GTF_RO | READING and a.entry(w2.l1, w2.index) == 0
    assert_invariants(impl, [a, b])
    assert ga.unmap(w.va, 0, h) == (0, OKAY)
    assert gb.flags(9) == PERMIT | GTF_RO, \
        f"{UNMAP}: the last read-only unpin must clear GTF_reading: {gb.flags(9):#x}"
    assert_frame(impl, m, Frame(NONE, 0, 1), f"{UNMAP}: references left")
    assert_invariants(impl, [a, b])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                     "INV-COUNT")
def test_readonly_then_writable_pins(pair: tuple[Guest, Guest]) -> None:
    """A writable entry mapped read-only, then writable: the first writable pin sets
    GTF_writing; the writable unmap clears it and leaves GTF_reading for the read-only one."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    (m,) = b.free_mfns(1)
    gb.grant(1, a.domid, m)
    w = window(a)
    r = ga.map_ok(w.va, HOST | RO, 1, b.domid)
    assert gb.flags(1) == PERMIT | READING, f"{MAP}: read-only pin: {gb.flags(1):#x}"
    w2 = w.va + abi.PAGE_SIZE
    rw = ga.map_ok(w2, HOST, 1, b.domid)
    assert gb.flags(1) == PERMIT | READING | WRITING, f"{MAP}: writable pin: {gb.flags(1):#x}"
    assert_frame(impl, m, Frame(WRITABLE, 1, 3, validated=True), f"{MAP}: two mappings' refs")
    assert_invariants(impl, [a, b])
    assert ga.unmap(w2, 0, rw) == (0, OKAY)
    assert gb.flags(1) == PERMIT | READING, \
        f"{UNMAP}: the last writable unpin clears GTF_writing only: {gb.flags(1):#x}"
    assert_frame(impl, m, Frame(WRITABLE, 0, 2, validated=True), f"{UNMAP}: refs left")
    assert ga.unmap(w.va, 0, r) == (0, OKAY)
    assert gb.flags(1) == PERMIT
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: refs left")
    assert_invariants(impl, [a, b])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "INV-OWN", "INV-COUNT")
def test_map_refusals(pair: tuple[Guest, Guest]) -> None:
    """__gnttab_map_grant_ref in its order of checks: no host or device flag
    GNTST_bad_gntref; no such granting domain (DOMID_SELF included) GNTST_bad_domain; a
    reference beyond the table GNTST_bad_gntref; an entry that does not permit access to the
    caller (invalid, another grantee's, a transfer entry) GNTST_general_error; a frame that is
    a page table (get_page_and_type) or an address with no L1 of the caller's (mm.c
    create_grant_host_mapping) GNTST_general_error. A refused map leaves the entry's flags,
    the frame's references and the caller's tables as they were."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    m, pt = b.free_mfns(2)
    assert b.pin(pt, 1) == 0
    gb.grant(3, a.domid, m)
    gb.grant(4, 0x7000, m)
    gb.grant(6, a.domid, m, abi.GTF_accept_transfer)
    gb.grant(7, a.domid, pt)
    w = window(a)
    (data,) = a.free_mfns(1, skip=1)
    cases = [
        ("neither host nor device map", w.va, 0, 3, b.domid, BAD_REF),
        ("only GNTMAP_readonly", w.va, RO, 3, b.domid, BAD_REF),
        ("no such domain", w.va, HOST, 3, 0x7000, BAD_DOMAIN),
        ("DOMID_SELF is no granting domain", w.va, HOST, 3, SELF, BAD_DOMAIN),
        ("a reference beyond the table", w.va, HOST, abi.NR_GRANT_ENTRIES, b.domid, BAD_REF),
        ("a reference of 2^31", w.va, HOST, 0x80000000, b.domid, BAD_REF),
        ("an invalid entry", w.va, HOST, 2, b.domid, GENERAL),
        ("an entry granted to another domain", w.va, HOST, 4, b.domid, GENERAL),
        ("a transfer entry", w.va, HOST, 6, b.domid, GENERAL),
        ("a writable map of a page table", w.va, HOST, 7, b.domid, GENERAL),
        ("an address in the hypervisor's area", abi.HYPERVISOR_VIRT_START, HOST, 3, b.domid,
         GENERAL),
        ("an address whose directory slot is empty", w.va + (1 << 22) * 512, HOST, 3, b.domid,
         GENERAL),
        ("a PTE address in a frame that is no L1", data << abi.PAGE_SHIFT,
         HOST | abi.GNTMAP_contains_pte, 3, b.domid, GENERAL),
        ("a PTE address in the granter's L1", pt << abi.PAGE_SHIFT,
         HOST | abi.GNTMAP_contains_pte, 3, b.domid, GENERAL),
    ]
    if a.entry(a.l2_mfn, (w.va >> 22) + 512) & abi._PAGE_PRESENT:
        cases = [c for c in cases if "slot is empty" not in c[0]]
    before = {r: gb.entry(r) for r in (2, 3, 4, 6, 7)}
    for what, addr, flags, ref, dom, want in cases:
        rc, status, _, _ = ga.map(addr, flags, ref, dom)
        assert (rc, status) == (0, want), f"{MAP}: {what}: rc {rc}, status {status}, " \
                                          f"expected {want}"
        assert {r: gb.entry(r) for r in before} == before, \
            f"{MAP}: {what}: the refused map changed the granter's entries"
        assert a.entry(w.l1, w.index) == 0, f"{MAP}: {what}: a PTE was written"
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True),
                 f"{MAP}: refused maps left references (a writable one whose PTE could not be "
                 "written took the writable type, and dropped its count again)")
    assert_frame(impl, pt, Frame(PGT.l1_page_table, 1, 2, validated=True, pinned=True),
                 f"{MAP}: a refused map of a page table changed it")
    assert ga.map(w.va, HOST | RO, 7, b.domid)[:2] == (0, OKAY), \
        f"{MAP}: a page table may be granted read-only"
    assert_invariants(impl, [a, b])


@pytest.mark.fix("XSA-227")
@pytest.mark.clauses("grant_table_op/map_grant_ref", "INV-VALID")
def test_pte_address_off_an_entry_refused(pair: tuple[Guest, Guest]) -> None:
    """A GNTMAP_contains_pte address that is not aligned to an entry is refused
    (GNTST_general_error) and writes nothing: XSA-227. Xen 3.0.4 writes the grant PTE across
    two entries of the L1 table."""
    a, b = pair
    ga, gb = Gnt(a), Gnt(b)
    (m,) = b.free_mfns(1)
    gb.grant(3, a.domid, m)
    w = window(a)
    for off in (1, 2, 3):
        rc, status, _, _ = ga.map(w.pte_maddr + off, HOST | abi.GNTMAP_contains_pte, 3, b.domid)
        assert (rc, status) == (0, GENERAL), \
            f"{MAP}: a PTE address {off} bytes into an entry: rc {rc}, status {status}"
        assert (a.entry(w.l1, w.index), a.entry(w.l1, w.index + 1)) == (0, 0), \
            f"{MAP}: a refused map wrote the L1 table"
        assert gb.flags(3) == PERMIT, f"{MAP}: a refused map left flags {gb.flags(3):#x}"
    assert_invariants(a.impl, [a, b])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                     "INV-OWN", "INV-COUNT")
def test_pte_form_and_application_map(pair: tuple[Guest, Guest]) -> None:
    """GNTMAP_contains_pte: host_addr is the machine address of an entry of one of the
    caller's L1 tables (create_grant_pte_mapping), and the unmap names it the same way;
    GNTMAP_application_map adds _PAGE_USER to the PTE. The entry a grant PTE replaces drops
    its own references."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    m, n = b.free_mfns(2)
    gb.grant(11, a.domid, m)
    gb.grant(12, a.domid, n, PERMIT | GTF_RO)
    w = window(a)
    (old,) = a.free_mfns(1, skip=1)
    assert a.mmu_update([(w.pte_maddr, a.pte(old))]) == (0, 1)
    flags = HOST | abi.GNTMAP_contains_pte | abi.GNTMAP_application_map
    h = ga.map_ok(w.pte_maddr, flags, 11, b.domid)
    assert a.entry(w.l1, w.index) == grant_pte(m, flags), \
        f"{MAP}: create_grant_pte_mapping wrote {a.entry(w.l1, w.index):#x}"
    assert_frame(impl, old, Frame(WRITABLE, 0, 1, validated=True),
                 f"{MAP}: the replaced entry's references were not dropped")
    w2 = Window(w.va + abi.PAGE_SIZE, w.l1, w.index + 1)
    h2 = ga.map_ok(w2.va, HOST | RO | abi.GNTMAP_application_map, 12, b.domid)
    assert a.entry(w2.l1, w2.index) == grant_pte(n, HOST | RO | abi.GNTMAP_application_map)
    assert_invariants(impl, [a, b])
    assert ga.unmap(w.pte_maddr, 0, h) == (0, OKAY), f"{UNMAP}: unmap by PTE address"
    assert a.entry(w.l1, w.index) == 0 and gb.flags(11) == PERMIT
    assert ga.unmap(w2.va, 0, h2) == (0, OKAY)
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: references left")
    assert_frame(impl, n, Frame(NONE, 0, 1), f"{UNMAP}: references left")
    assert_invariants(impl, [a, b])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                     "INV-COUNT")
def test_device_map(pair: tuple[Guest, Guest]) -> None:
    """GNTMAP_device_map: no PTE, dev_bus_addr the frame's machine address, references held by
    the mapping itself; the unmap names that bus address (another is GNTST_general_error) and
    may leave the host half of a mapping that has both."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    m, n = b.free_mfns(2)
    gb.grant(20, a.domid, m)
    gb.grant(21, a.domid, n, PERMIT | GTF_RO)
    rc, status, h, bus = ga.map(0, DEV, 20, b.domid)
    assert (rc, status, bus) == (0, OKAY, m << abi.PAGE_SHIFT), \
        f"{MAP}: device map: rc {rc}, status {status}, bus {bus:#x}"
    assert gb.flags(20) == PERMIT | READING | WRITING
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True),
                 f"{MAP}: a writable device mapping holds a general and a writable type ref")
    rc, status, hr, _ = ga.map(0, DEV | RO, 21, b.domid)
    assert (rc, status) == (0, OKAY)
    assert_frame(impl, n, Frame(NONE, 0, 2), f"{MAP}: a read-only device mapping's ref")
    assert_invariants(impl, [a, b])
    assert ga.unmap(0, (m + 1) << abi.PAGE_SHIFT, h) == (0, GENERAL), \
        f"{UNMAP}: a bus address of another frame"
    assert ga.unmap(0, m << abi.PAGE_SHIFT, h) == (0, OKAY)
    assert gb.flags(20) == PERMIT
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: refs left")
    assert ga.unmap(0, n << abi.PAGE_SHIFT, hr) == (0, OKAY)
    assert gb.flags(21) == PERMIT | GTF_RO
    assert_frame(impl, n, Frame(NONE, 0, 1), f"{UNMAP}: refs left")

    w = window(a)
    both = ga.map_ok(w.va, HOST | DEV, 20, b.domid)
    assert_frame(impl, m, Frame(WRITABLE, 2, 3, validated=True),
                 f"{MAP}: host and device mappings hold references each")
    assert_invariants(impl, [a, b])
    assert ga.unmap(0, m << abi.PAGE_SHIFT, both) == (0, OKAY), f"{UNMAP}: the device half"
    assert a.entry(w.l1, w.index) == grant_pte(m, HOST), f"{UNMAP}: the host half stays"
    assert gb.flags(20) == PERMIT | READING | WRITING
    assert_invariants(impl, [a, b])
    assert ga.unmap(w.va, 0, both) == (0, OKAY), f"{UNMAP}: the host half"
    assert ga.unmap(w.va, 0, both) == (0, BAD_HANDLE)
    assert gb.flags(20) == PERMIT
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: refs left")
    assert_invariants(impl, [a, b])


@pytest.mark.clauses("grant_table_op/unmap_grant_ref", "INV-OWN", "INV-COUNT")
def test_unmap_refusals_and_revocation(pair: tuple[Guest, Guest]) -> None:
    """__gnttab_unmap_grant_ref: a handle out of range or free is GNTST_bad_handle; an address
    whose PTE does not map the handle's frame is GNTST_general_error and keeps the mapping. A
    grant in use cannot be revoked: the granter rewriting its entry changes nothing of the
    mapping, and another domain named in the entry cannot pin it meanwhile."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    c = Guest(impl, 64, 32)
    (m,) = b.free_mfns(1)
    gb.grant(2, a.domid, m)
    w = window(a)
    h = ga.map_ok(w.va, HOST, 2, b.domid)
    for bad in (h + 1, 0xFFFF, 0xFFFFFFFF):
        assert ga.unmap(w.va, 0, bad) == (0, BAD_HANDLE), f"{UNMAP}: handle {bad:#x}"
    assert ga.unmap(w.va + abi.PAGE_SIZE, 0, h) == (0, GENERAL), \
        f"{UNMAP}: an address whose PTE maps nothing"
    assert ga.unmap(abi.HYPERVISOR_VIRT_START, 0, h) == (0, GENERAL)
    assert a.entry(w.l1, w.index) == grant_pte(m, HOST), f"{UNMAP}: a refused unmap cleared it"
    gb.grant(2, c.domid, m)  # the granter tries to hand the entry to another domain
    wc = window(c)
    assert Gnt(c).map(wc.va, HOST, 2, b.domid)[:2] == (0, GENERAL), \
        f"{MAP}: an entry pinned by one grantee cannot be pinned by another"
    gb.grant(2, a.domid, 0, abi.GTF_invalid)  # and to revoke it
    assert a.entry(w.l1, w.index) == grant_pte(m, HOST)
    assert_frame(impl, m, Frame(WRITABLE, 1, 2, validated=True), "INV-COUNT: revoked refs")
    assert_invariants(impl, [a, b, c])
    assert ga.unmap(w.va, 0, h) == (0, OKAY), f"{UNMAP}: the grantee unmaps after revocation"
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: refs left")
    assert_invariants(impl, [a, b, c])


@pytest.mark.clauses("grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref")
def test_pin_counter_limit_and_handles(pair: tuple[Guest, Guest]) -> None:
    """An entry's four 8-bit pin counters: once one reaches 0x80, every further pin of the
    entry is refused (grant_table.c: the 0x80808080 test, GNTST_general_error) until an unmap
    brings it back; each mapping has a handle of its own, unmapped on its own."""
    a, b = pair
    ga, gb = Gnt(a), Gnt(b)
    (m,) = b.free_mfns(1)
    gb.grant(8, a.domid, m)
    T = abi.GNTTAB_MAP_GRANT_REF_T
    n = 0x80
    batch = b"".join(T.pack(0, DEV | RO, 8, b.domid, 0, 0, 0) for _ in range(n + 1))
    va = a.write_args(batch)
    assert a.hypercall("grant_table_op", abi.GNTTABOP_map_grant_ref, va, n + 1) == 0
    out = a.read_args(0, len(batch))
    results = [T.unpack(out[i * T.size : (i + 1) * T.size]) for i in range(n + 1)]
    statuses = [r[4] for r in results]
    assert statuses[:n] == [OKAY] * n and statuses[n] == GENERAL, \
        f"{MAP}: statuses of 0x81 read-only device pins: {sorted(set(statuses))}, last " \
        f"{statuses[n]}"
    handles = sorted({r[5] for r in results[:n]})
    assert len(handles) == n, f"{MAP}: {len(handles)} distinct handles for {n} mappings"
    assert_frame(a.impl, m, Frame(NONE, 0, 1 + n), f"{MAP}: one general ref per device map")
    assert ga.map(0, DEV, 8, b.domid)[:2] == (0, GENERAL), \
        f"{MAP}: a counter at its limit refuses a pin of another kind too"
    assert ga.unmap(0, m << abi.PAGE_SHIFT, handles[0]) == (0, OKAY)
    rc, status, h, _ = ga.map(0, DEV, 8, b.domid)
    assert (rc, status) == (0, OKAY), f"{MAP}: below the limit again: {rc}, {status}"
    assert gb.flags(8) == PERMIT | READING | WRITING
    for handle in [*handles[1:], h]:
        assert ga.unmap(0, m << abi.PAGE_SHIFT, handle) == (0, OKAY)
    assert gb.flags(8) == PERMIT
    assert_frame(a.impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{UNMAP}: refs left")
    assert_invariants(a.impl, [a, b])


# --- copy -----------------------------------------------------------------------------------
@pytest.mark.clauses("grant_table_op/copy", "INV-COUNT")
def test_copy(pair: tuple[Guest, Guest]) -> None:
    """__gnttab_copy: from a granted frame (GNTCOPY_source_gref) into one of the caller's own
    (DOMID_SELF, by frame number), and back into a writable grant; each side pinned for the
    copy only (the flags are as before after it). Offset plus length beyond the page is
    GNTST_bad_copy_arg on either side; a frame named by number for another domain
    GNTST_permission_denied; a read-only grant as destination, or a frame of another domain
    named as the caller's own, GNTST_general_error."""
    a, b = pair
    impl, ga, gb = a.impl, Gnt(a), Gnt(b)
    m, ro = b.free_mfns(2)
    mine, other = a.free_mfns(2, skip=0)
    pattern = [0x11111111 * (i % 15 + 1) for i in range(abi.L1_PAGETABLE_ENTRIES)]
    assert b.mmu_update([(b.entry_maddr(m, i), x) for i, x in enumerate(pattern)]) == \
        (0, abi.L1_PAGETABLE_ENTRIES)
    gb.grant(1, a.domid, m)
    gb.grant(2, a.domid, ro, PERMIT | GTF_RO)
    SRC, DST = abi.GNTCOPY_source_gref, abi.GNTCOPY_dest_gref
    assert ga.copy((1, b.domid, 8), (mine, SELF, 16), 32, SRC) == (0, OKAY)
    assert impl.entries(mine)[4:12] == pattern[2:10], f"{COPY}: the bytes copied"
    assert impl.entries(mine)[:4] == [0] * 4 and impl.entries(mine)[12] == 0
    assert gb.flags(1) == PERMIT, f"{COPY}: the source stays pinned: {gb.flags(1):#x}"
    end = abi.PAGE_SIZE
    assert ga.copy((1, b.domid, end - 4), (mine, SELF, end - 4), 4, SRC) == (0, OKAY), \
        f"{COPY}: a copy ending at the end of both pages"
    assert impl.entries(mine)[1023] == pattern[1023]
    assert ga.copy((1, b.domid, end - 3), (mine, SELF, 0), 4, SRC) == \
        (0, abi.GNTST_bad_copy_arg), f"{COPY}: the source runs past its page"
    assert ga.copy((1, b.domid, 0), (mine, SELF, end - 3), 4, SRC) == \
        (0, abi.GNTST_bad_copy_arg), f"{COPY}: the destination runs past its page"
    assert ga.copy((m, b.domid, 0), (mine, SELF, 0), 4, 0) == \
        (0, abi.GNTST_permission_denied), f"{COPY}: another domain's frame by number"
    assert ga.copy((1, b.domid, 0), (2, b.domid, 0), 4, SRC | DST) == (0, GENERAL), \
        f"{COPY}: into a read-only grant"
    assert ga.copy((1, b.domid, 0), (m, SELF, 0), 4, SRC) == (0, GENERAL), \
        f"{COPY}: into another domain's frame named as the caller's"
    assert ga.copy((1, 0x7000, 0), (mine, SELF, 0), 4, SRC) == (0, BAD_DOMAIN)
    assert ga.copy((abi.NR_GRANT_ENTRIES, b.domid, 0), (mine, SELF, 0), 4, SRC) == \
        (0, BAD_REF)
    assert a.mmu_update([(a.entry_maddr(other, 0), 0xCAFEF00D)]) == (0, 1)
    assert ga.copy((other, SELF, 0), (1, b.domid, 4), 4, DST) == (0, OKAY), \
        f"{COPY}: into a writable grant"
    assert impl.entries(m)[1] == 0xCAFEF00D and impl.entries(m)[0] == pattern[0]
    assert (gb.flags(1), gb.flags(2)) == (PERMIT, PERMIT | GTF_RO)
    assert_frame(impl, m, Frame(WRITABLE, 0, 1, validated=True), f"{COPY}: refs left")
    assert_frame(impl, ro, Frame(NONE, 0, 1), f"{COPY}: a refused copy left references")
    assert_invariants(impl, [a, b])

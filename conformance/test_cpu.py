"""Hypercall level: descriptor tables and the CPU hypercalls whose effect the adapter can see.

set_gdt and update_descriptor change frame types and memory, which the adapter reads back:
the frame-type rules of GDT pages (mm.c do_set_gdt, alloc_segdesc_page) and Xen's descriptor
rule (mm.c check_descriptor: DPL 0 raised to 1, nothing reaching the hypervisor hole, no
system descriptor but call gates). The trap table, callbacks and kernel stack live in the
vCPU, which the adapter does not expose: only their return codes are checked here; what they
do is checked at the guest level (test_guests.py: traps, ring3, crash).
"""

from __future__ import annotations

import pytest

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.checks import Frame, assert_frame, assert_invariants
from xenspec.conformance.driver import PTE_RO, Guest
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

EINVAL, EFAULT = -abi.EINVAL, -abi.EFAULT
DATA_RW = abi._SEGMENT_S | abi._SEGMENT_P | abi._SEGMENT_DB | abi._SEGMENT_WR
TSS = abi._SEGMENT_P | 0x900


def dpl(n: int) -> int:
    return n << 13


def mkdesc(base: int, limit: int, flags: int) -> int:
    """A descriptor as the CPU reads it (Intel SDM 3.4.5): 64 bits, low word first."""
    lo = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    hi = (base >> 16) & 0xFF | limit & 0xF0000 | base & 0xFF000000 | flags
    return hi << 32 | lo


def descriptor(g: Guest, mfn: int, index: int) -> int:
    words = g.impl.entries(mfn)
    return int(words[2 * index + 1]) << 32 | int(words[2 * index])


@pytest.fixture
def g(hv_impl: HypercallLevel) -> Guest:
    return Guest(hv_impl, 96, 40)


@pytest.mark.clauses("set_gdt", "INV-NOWRPT", "INV-COUNT")
def test_set_gdt_types_its_frames(g: Guest) -> None:
    """do_set_gdt: each frame takes a GDT type reference; replacing the GDT drops it."""
    a, b = g.free_mfns(2)
    assert g.set_gdt([a], 512) == 0, "set_gdt: one clean frame must be accepted"
    assert_frame(g.impl, a, Frame(PGT.gdt_page, 1, 2, validated=True),
                 "set_gdt: an installed frame holds one GDT type and one general reference")
    assert g.impl.descriptor_frames(g.domid) == [a], "set_gdt: the vCPU's GDT is the frame"
    assert_invariants(g.impl, [g])
    assert g.set_gdt([b], 1) == 0, "set_gdt: a second GDT replaces the first"
    assert_frame(g.impl, a, Frame(PGT.gdt_page, 0, 1, validated=True),
                 "set_gdt: the replaced GDT's frame must lose its references")
    assert g.set_gdt([], 0) == 0, "set_gdt: an empty GDT"
    assert g.impl.descriptor_frames(g.domid) == [], "set_gdt with 0 entries leaves no frame"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("set_gdt", "INV-NOWRPT")
def test_set_gdt_refuses_writable_and_foreign_frames(g: Guest, hv_impl: HypercallLevel) -> None:
    """do_set_gdt: get_page_and_type(PGT_gdt_page) fails on a frame mapped writable (INV-NOWRPT)
    or owned by another domain."""
    other = Guest(hv_impl, 48, 32)
    mapped = g.mfn(g.data_pfn)  # mapped read-write by the domain builder
    for frame, why in ((mapped, "a frame mapped writable"), (other.free_mfns(1)[0],
                                                           "another domain's frame")):
        assert g.set_gdt([frame], 512) == EINVAL, f"INV-NOWRPT: set_gdt accepted {why}"
        assert g.impl.frame(frame).type != PGT.gdt_page, f"set_gdt typed {why} as a GDT"
    assert_invariants(hv_impl, [g, other])


@pytest.mark.clauses("set_gdt", "INV-COUNT")
def test_set_gdt_of_several_frames(g: Guest) -> None:
    """do_set_gdt: the frame list holds one frame number per 512 entries, each taken in
    order (copy_from_guest of the list, then each frame gets a GDT type reference)."""
    frames = g.free_mfns(3)
    assert g.set_gdt(frames, 3 * 512) == 0, "set_gdt: three clean frames must be accepted"
    assert g.impl.descriptor_frames(g.domid) == frames, \
        "set_gdt: the vCPU's GDT must be the listed frames, in order"
    for m in frames:
        assert_frame(g.impl, m, Frame(PGT.gdt_page, 1, 2, validated=True),
                     "set_gdt: each installed frame holds one GDT type and one general reference")
    assert g.set_gdt([], 0) == 0, "set_gdt: an empty GDT"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("set_gdt")
def test_set_gdt_argument_errors(g: Guest) -> None:
    """do_set_gdt: too many entries -EINVAL; an unreadable frame list -EFAULT; a frame holding
    a TSS descriptor fails validation (alloc_segdesc_page)."""
    (a,) = g.free_mfns(1)
    assert g.set_gdt([a], abi.FIRST_RESERVED_GDT_ENTRY + 1) == EINVAL, (
        "set_gdt: more entries than FIRST_RESERVED_GDT_ENTRY must be -EINVAL")
    assert g.hypercall("set_gdt", 0x1000, 1) == EFAULT, "set_gdt: unreadable list -> -EFAULT"
    assert g.hypercall("set_gdt", abi.HYPERVISOR_VIRT_START, 1) == EFAULT, (
        "set_gdt: a frame list in the hypervisor hole must be -EFAULT")
    (bad,) = g.free_mfns(1, skip=1)
    # As data: the high word of descriptor 5 says "present TSS".
    assert g.mmu_update([(g.entry_maddr(bad, 11), TSS | dpl(1))]) == (0, 1)
    assert g.set_gdt([bad], 512) == EINVAL, "INV-PRIV: set_gdt accepted a frame with a TSS"
    assert g.impl.frame(bad).type != PGT.gdt_page
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("update_descriptor", "INV-PRIV")
def test_update_descriptor_applies_the_rule(g: Guest) -> None:
    """do_update_descriptor + check_descriptor: DPL 0 becomes 1, a 4 GB limit is cut at the
    hole; a TSS, a misaligned address and a segment reaching the hole are refused."""
    (a,) = g.free_mfns(1)
    assert g.set_gdt([a], 512) == 0
    ma = (a << abi.PAGE_SHIFT) + 8 * 4
    flat0 = mkdesc(0, 0xFFFFF, DATA_RW | dpl(0) | abi._SEGMENT_G)
    assert g.update_descriptor(ma, flat0) == 0, "update_descriptor: a DPL-0 flat segment"
    d = descriptor(g, a, 4)
    assert (d >> 32) & abi._SEGMENT_DPL == dpl(1), (
        f"INV-PRIV: update_descriptor stored a DPL-0 descriptor {d:#018x}; Xen raises it to 1")
    limit = (d & 0xFFFF) | (d >> 32) & 0xF0000
    assert (limit + 1) << abi.PAGE_SHIFT <= abi.GUEST_SEGMENT_MAX_ADDR, (
        f"INV-PRIV: the stored segment reaches the hypervisor hole (limit {limit:#x} pages)")
    before = descriptor(g, a, 5)
    for value, addr, why in (
        (mkdesc(0, 0x67, TSS | dpl(1)), ma + 8, "a TSS descriptor"),
        (mkdesc(0, 0xFFFFF, DATA_RW | dpl(1)), ma + 8 + 4, "a misaligned address"),
        (mkdesc(0xFC3F0000, 0xFFFFF, DATA_RW | dpl(1)), ma + 8, "a segment reaching the hole"),
        (mkdesc(abi.GUEST_SEGMENT_MAX_ADDR - 4096, 0, DATA_RW | dpl(1) | abi._SEGMENT_G),
         ma + 8, "a base within a page of the hole"),
    ):
        assert g.update_descriptor(addr, value) == EINVAL, (
            f"INV-PRIV: update_descriptor accepted {why}")
    assert descriptor(g, a, 5) == before, "a refused update_descriptor must not write"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("update_descriptor")
def test_update_descriptor_address_above_4gb_refused(g: Guest) -> None:
    """do_update_descriptor: the machine address is 64 bits (pa_lo, pa_hi); its frame number,
    pa >> PAGE_SHIFT, is beyond the machine's RAM when pa_hi is not 0 (here 4: 16 GB up),
    -EINVAL, and the frame its low word names is left alone."""
    (plain,) = g.free_mfns(1)
    value = mkdesc(0, 0xFFF, DATA_RW | dpl(3))
    before = descriptor(g, plain, 2)
    assert g.update_descriptor(4 << 32 | (plain << abi.PAGE_SHIFT) + 16, value) == EINVAL, (
        "update_descriptor: a machine address above 4 GB was accepted")
    assert descriptor(g, plain, 2) == before, (
        "update_descriptor: the frame named by the address's low word was written")
    assert g.update_descriptor((plain << abi.PAGE_SHIFT) + 16, value) == 0, (
        "update_descriptor on plain memory must succeed")
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("update_descriptor", "INV-NOWRPT")
def test_update_descriptor_frame_types(g: Guest) -> None:
    """do_update_descriptor: plain memory and GDT/LDT frames take it; page tables do not."""
    (plain,) = g.free_mfns(1)
    value = mkdesc(0, 0xFFF, DATA_RW | dpl(3))
    assert g.update_descriptor((plain << abi.PAGE_SHIFT) + 16, value) == 0, (
        "update_descriptor on plain memory must succeed")
    assert descriptor(g, plain, 2) == value, "update_descriptor must write the descriptor"
    for mfn, what in ((g.l2_mfn, "the page directory"), (g.l1_mfns[0], "an L1 table")):
        assert g.update_descriptor(mfn << abi.PAGE_SHIFT, value) == EINVAL, (
            f"INV-NOWRPT: update_descriptor wrote into {what}")
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("set_gdt", "update_descriptor", "INV-NOWRPT")
def test_gdt_frame_cannot_be_mapped_writable(g: Guest) -> None:
    """get_page_from_l1e: a GDT frame takes read-only mappings only (INV-NOWRPT)."""
    (a,) = g.free_mfns(1)
    assert g.set_gdt([a], 512) == 0
    va = g.va(g.data_pfns[1])
    assert g.update_va_mapping(va, g.pte(a)) == EINVAL, (
        "INV-NOWRPT: a writable mapping of a live GDT frame was accepted")
    assert g.update_va_mapping(va, g.pte(a, PTE_RO)) == 0, "a read-only map of a GDT frame"
    assert_invariants(g.impl, [g])


@pytest.mark.clauses("set_trap_table")
def test_set_trap_table_return_codes(g: Guest) -> None:
    """do_set_trap_table: entries up to one with address 0; NULL clears; unreadable -EFAULT."""
    assert g.set_trap_table([(14, 0, abi.FLAT_KERNEL_CS, 0xC0001000)]) == 0
    assert g.hypercall("set_trap_table", 0) == 0, "set_trap_table(NULL) clears the table"
    assert g.hypercall("set_trap_table", 0x1000) == EFAULT, "an unreadable table is -EFAULT"
    assert g.hypercall("set_trap_table", abi.HYPERVISOR_VIRT_START) == EFAULT, (
        "a trap table in the hypervisor hole must be -EFAULT")


@pytest.mark.clauses("set_callbacks", "stack_switch", "fpu_taskswitch")
def test_vcpu_state_hypercalls_succeed(g: Guest) -> None:
    """set_callbacks, stack_switch, fpu_taskswitch only record state in the vCPU (Xen 3.0.4
    returns 0 whatever the selectors, fixing RPL 0 to 1). Their effect on delivery is tested
    at the guest level; event callbacks have no event source yet in this suite."""
    assert g.hypercall("set_callbacks", abi.FLAT_KERNEL_CS, 0xC0001000,
                       abi.FLAT_KERNEL_CS, 0xC0002000) == 0
    assert g.hypercall("set_callbacks", 0, 0, 0, 0) == 0
    assert g.hypercall("stack_switch", abi.FLAT_KERNEL_SS, 0xC0010000) == 0
    assert g.hypercall("fpu_taskswitch", 1) == 0
    assert g.hypercall("fpu_taskswitch", 0) == 0

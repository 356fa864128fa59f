"""The start-of-day layout of Xen 3.0.4's builders (refmodel/builder.py, refmodel/elfbuild.py),
with the numbers worked out by hand from tools/libxc/xc_linux_build.c setup_guest and
xen/arch/x86/domain_build.c construct_dom0: the order of the bootstrap elements, the search
for the number of page-table frames, the 4 MB rounding with 512 KB after the boot stack, the
refusal of a region larger than the domain, the entry flags (L1_PROT, L2_PROT), the initial
registers, and the M2P's debug pattern (x86_32/mm.c paging_init) for frames nobody owns.
"""

from __future__ import annotations

import pytest

from xenspec.refmodel.builder import L1_PROT, L2_PROT, BuildError, build_initial_tables
from xenspec.refmodel.elfbuild import BuiltDomain, GuestImage, build_domain
from xenspec.refmodel.hypervisor import M2P_UNUSED_ENTRY, Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi

BASE = 0xC0000000
PAGE = abi.PAGE_SIZE


def build(kernel_pages: int, nr_pages: int, devices: bool = False,
          privileged: bool = False) -> tuple[Hypervisor, BuiltDomain]:
    hv = Hypervisor(nr_pages + 200)
    image = GuestImage([(BASE, b"\x90", kernel_pages * PAGE)], BASE, BASE, None)
    return hv, build_domain(hv, PVPlatform(hv), image, nr_pages, devices=devices,
                            privileged=privileged)


def si(hv: Hypervisor, b: BuiltDomain, offset: int) -> int:
    pfn = (b.start_info_va - BASE) // PAGE
    raw = hv.memory.read(b.domain.page_list[pfn] * PAGE + offset, 4)
    return int.from_bytes(raw, "little")


def pfn_of(va: int) -> int:
    return (va - BASE) // PAGE


def test_domu_order_kernel_p2m_start_info_store_console_tables_stack() -> None:
    """xc_linux_build.c: 10 kernel pages, the p2m list of 1024 entries (one page), start_info,
    the store and console pages, two table frames, then the boot stack."""
    hv, b = build(10, 1024, devices=True)
    assert si(hv, b, abi.START_INFO_mfn_list) == BASE + 10 * PAGE
    assert b.start_info_va == b.regs.esi == BASE + 11 * PAGE
    mfns = b.domain.page_list
    assert si(hv, b, abi.START_INFO_store_mfn) == mfns[12]
    assert si(hv, b, abi.START_INFO_console_mfn) == mfns[13]
    assert si(hv, b, abi.START_INFO_pt_base) == BASE + 14 * PAGE
    assert si(hv, b, abi.START_INFO_nr_pt_frames) == 2
    assert b.regs.esp == BASE + 17 * PAGE  # vstack_start (pfn 16) + PAGE_SIZE
    assert b.nr_mapped == 1024


def test_store_and_console_pages_are_in_the_layout_without_back_ends() -> None:
    """Without back ends the two pages are still there (xc_linux_build.c always lays them
    out); start_info names none of them."""
    hv, b = build(10, 1024)
    assert si(hv, b, abi.START_INFO_pt_base) == BASE + 14 * PAGE
    assert si(hv, b, abi.START_INFO_store_mfn) == si(hv, b, abi.START_INFO_console_mfn) == 0


def test_dom0_order_has_no_store_or_console_page() -> None:
    """construct_dom0: start_info (with the VGA console info, one page) is followed by the
    page tables."""
    hv, b = build(10, 1024, privileged=True)
    assert si(hv, b, abi.START_INFO_pt_base) == BASE + 12 * PAGE
    assert b.regs.esp == BASE + 15 * PAGE
    assert si(hv, b, abi.START_INFO_flags) == abi.SIF_PRIVILEGED | abi.SIF_INITDOMAIN


def test_a_table_frame_that_pushes_the_region_past_4mb_is_searched_for() -> None:
    """1911 kernel pages and 3072 pages (a 3-page p2m list): the tables start at pfn 1917.
    Two frames: the stack ends at pfn 1920, exactly 512 KB below 8 MB, so 8 MB, which needs 3.
    Three: the stack ends at 1921, less than 512 KB below 8 MB, so 12 MB, which needs 4. Four
    cover 12 MB: nr_pt_frames is 4 and the stack is pfn 1921."""
    hv, b = build(1911, 3072)
    assert si(hv, b, abi.START_INFO_pt_base) == BASE + 1917 * PAGE
    assert si(hv, b, abi.START_INFO_nr_pt_frames) == 4
    assert b.regs.esp == BASE + 1922 * PAGE
    assert b.nr_mapped == 3072
    l2 = b.domain.page_list[1917]
    slots = [hv.memory.read_entry(l2, (BASE >> 22) + k) for k in range(4)]
    assert all(e & abi._PAGE_PRESENT for e in slots[:3]) and slots[3] == 0


def test_too_much_space_is_refused() -> None:
    """The same image needs 12 MB: a domain of one page less is refused, not cut short."""
    with pytest.raises(BuildError, match="too much space"):
        build(1911, 3071)
    with pytest.raises(BuildError, match="too much space"):
        build(1, 1023)


@pytest.mark.parametrize("kernel_pages,nr_pages,region,stack_end", [
    (889, 1024, 1024, 896),   # exactly 512 KB (128 pages) after the stack: 4 MB
    (888, 2048, 1024, 896),   # the same with a two-page p2m list
    (889, 2048, 2048, 898),   # 127 pages would follow: 4 MB more, and a third table frame
])
def test_at_least_512kb_after_the_boot_stack(kernel_pages: int, nr_pages: int, region: int,
                                             stack_end: int) -> None:
    _, b = build(kernel_pages, nr_pages)
    assert b.regs.esp == BASE + stack_end * PAGE
    assert b.nr_mapped == region
    assert region - stack_end >= 128


def test_890_kernel_pages_do_not_fit_4mb() -> None:
    with pytest.raises(BuildError, match="too much space"):
        build(890, 1024)


@pytest.mark.parametrize("privileged", [False, True])
def test_entry_flags_are_l1_prot_and_l2_prot(privileged: bool) -> None:
    """Every L1 entry of the region is L1_PROT (present, writable, accessed; no _PAGE_USER,
    no _PAGE_DIRTY), the tables' own without _PAGE_RW; every directory entry L2_PROT."""
    hv, b = build(10, 1024, privileged=privileged)
    assert L1_PROT == abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED
    assert L2_PROT == L1_PROT | abi._PAGE_DIRTY | abi._PAGE_USER
    pt = pfn_of(si(hv, b, abi.START_INFO_pt_base))
    nr_pt = si(hv, b, abi.START_INFO_nr_pt_frames)
    mfns = b.domain.page_list
    l2e = hv.memory.read_entry(mfns[pt], BASE >> 22)
    assert l2e == mfns[pt + 1] << 12 | L2_PROT
    for pfn in range(b.nr_mapped):
        want = L1_PROT & ~abi._PAGE_RW if pt <= pfn < pt + nr_pt else L1_PROT
        assert hv.memory.read_entry(mfns[pt + 1], pfn) == mfns[pfn] << 12 | want, pfn


def test_initial_registers() -> None:
    """xc_linux_build_internal: flat ring-1 selectors, EIP the entry, ESP the top of the boot
    stack, ESI start_info, the other general registers 0, EFLAGS.IF."""
    _, b = build(10, 1024)
    r = b.regs
    assert (r.cs, r.ss, r.ds, r.es, r.fs, r.gs) == (
        abi.FLAT_KERNEL_CS, abi.FLAT_KERNEL_SS, *[abi.FLAT_KERNEL_DS] * 4)
    assert (r.eip, r.esi) == (BASE, BASE + 11 * PAGE)
    assert (r.eax, r.ebx, r.ecx, r.edx, r.edi, r.ebp) == (0,) * 6
    assert r.eflags & abi.X86_EFLAGS_IF


def test_build_initial_tables_puts_the_boot_stack_after_the_tables() -> None:
    """The tables are not the region's last pages: the boot stack's page follows them,
    mapped writable."""
    hv = Hypervisor(256)
    d = hv.create_domain(64)
    lay = build_initial_tables(hv, d, 40)
    assert lay.pt_pfns == (37, 38) and lay.stack_pfn == 39
    l1 = d.page_list[38]
    assert hv.memory.read_entry(l1, 39) == d.page_list[39] << 12 | L1_PROT
    with pytest.raises(BuildError):
        build_initial_tables(hv, hv.create_domain(64), 40, pt_base_pfn=38)  # no stack page


def test_m2p_of_frames_nobody_owns_is_the_debug_pattern() -> None:
    """paging_init fills the M2P with 0x55555555; a domain's frames get their pfns; Xen's and
    free frames keep the pattern."""
    hv, b = build(10, 1024)
    assert M2P_UNUSED_ENTRY == 0x55555555
    for pfn, mfn in enumerate(b.domain.page_list):
        assert hv.m2p[mfn] == pfn
    assert hv.free_list and all(hv.m2p[m] == M2P_UNUSED_ENTRY for m in hv.free_list)
    assert hv.m2p[hv.m2p_start] == M2P_UNUSED_ENTRY  # a frame of the M2P itself
    # The table's last frame is the pattern past the machine's frames too (mpt_size).
    last = hv.m2p_l1 - 1
    assert hv.memory.read_entry(last, abi.L1_PAGETABLE_ENTRIES - 1) == M2P_UNUSED_ENTRY

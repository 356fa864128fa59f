"""The pictures: the 32-bit address space with the hypervisor hole (computed from
``spec.abi``), the frame-type state machine (types from ``spec.pagetable.PGT``), and the paths
of a hypercall and of a bounced exception (numbers from ``spec.abi``), with their pages."""

from __future__ import annotations

from dataclasses import dataclass

from xenspec.docgen import rst, svg
from xenspec.docgen.matrix import target
from xenspec.docgen.svg import Step
from xenspec.spec import abi
from xenspec.spec.pagetable import PAGE_TABLE_TYPES, PGT

TOP = 1 << 32
SLOT_BYTES = 1 << abi.L2_PAGETABLE_SHIFT


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    name: str
    what: str
    xen: bool
    per: str = ""  # whose entry the slot holds, where it differs: "directory" or "domain"


def regions() -> list[Region]:
    """The address space of a guest, bottom up, from the constants of arch-x86_32.h and
    asm-x86/config.h; the gaps of Xen's area are Xen's own (not modelled)."""
    known = [
        Region(0, abi.HYPERVISOR_VIRT_START, "guest",
               f"the guest's: page-directory slots 0..{abi.L2_PAGETABLE_FIRST_XEN_SLOT - 1}",
               False),
        Region(abi.MACH2PHYS_VIRT_START, abi.MACH2PHYS_VIRT_END, "M2P (read-only)",
               "machine-to-physical table, mapped read-only for guests", True),
        Region(abi.LINEAR_PT_VIRT_START, abi.LINEAR_PT_VIRT_START + SLOT_BYTES,
               "linear page table",
               "the page directory itself, used as a page table: each directory's slot "
               f"{abi.LINEAR_PT_SLOT} names its own frame (mm.c alloc_l2_table), so the "
               "directory's L1 tables appear here; Xen maps it read-write for itself "
               "(__PAGE_HYPERVISOR), the reference model read-only", True, "directory"),
        Region(abi.PERDOMAIN_VIRT_START,
               abi.PERDOMAIN_VIRT_START + (abi.PERDOMAIN_MBYTES << 20),
               "per-domain area", "each vCPU's GDT and LDT mappings: the domain's own page "
               "tables, the same in all its directories", True, "domain"),
    ]
    out, at = [], 0
    for r in known:
        if r.start > at:
            out.append(Region(at, r.start, "Xen", "Xen's own (not modelled)", True))
        out.append(r)
        at = r.end
    if at < TOP:
        out.append(Region(at, TOP, "Xen", "Xen's own (not modelled)", True))
    return out


def slots(r: Region) -> str:
    """The page-directory slots that map region ``r``."""
    first, last = r.start // SLOT_BYTES, (r.end - 1) // SLOT_BYTES
    return f"slot {first}" if first == last else f"slots {first}..{last}"


def address_space_svg() -> str:
    width, height, y0, y1 = 860, 470, 30, 440
    body = [svg.text(20, 18, "The 32-bit virtual address space of every guest", weight="bold")]
    body += _full_bar(120, 80, y0, y1) + _hole_bar(520, 150, y0, y1)
    return svg.document(width, height, body, "Guest address space and the hypervisor hole")


def _full_bar(x: float, w: float, y0: float, y1: float) -> list[str]:
    def y(a: int) -> float:
        return y1 - (y1 - y0) * a / TOP

    hole = y(abi.HYPERVISOR_VIRT_START)
    return [svg.rect(x, hole, w, y1 - hole, "#dcefdc"),
            svg.rect(x, y0, w, hole - y0, "#f4c7c3"),
            svg.text(x + w / 2, (hole + y1) / 2, "guest", "middle", weight="bold"),
            svg.text(x + w / 2, (hole + y1) / 2 + 16,
                     f"{abi.HYPERVISOR_VIRT_START >> 20} MB", "middle"),
            svg.text(x - 8, y1 + 4, "0x00000000", "end", size=11),
            svg.text(x - 8, hole + 12, f"{abi.HYPERVISOR_VIRT_START:#010x}", "end", size=11),
            svg.text(x - 8, y0 + 4, "0xffffffff", "end", size=11),
            svg.text(x + w + 8, y0 + 10, f"hole: {(TOP - abi.HYPERVISOR_VIRT_START) >> 20} MB",
                     size=11),
            svg.line(x + w, y0, 520, 30, "#b55", dash="3 3"),
            svg.line(x + w, hole, 520, 440, "#b55", dash="3 3")]


def _hole_bar(x: float, w: float, y0: float, y1: float) -> list[str]:
    base, span = abi.HYPERVISOR_VIRT_START, TOP - abi.HYPERVISOR_VIRT_START

    def y(a: int) -> float:
        return y1 - (y1 - y0) * (a - base) / span

    body = []
    for r in regions()[1:]:
        top, bottom = y(r.end), y(r.start)
        fill = "#f4c7c3" if r.name == "Xen" else "#f9e0a8"
        per = f": per {r.per}" if r.per else ""
        body += [svg.rect(x, top, w, bottom - top, fill),
                 svg.text(x + w / 2, (top + bottom) / 2 + 4, r.name, "middle", size=11),
                 svg.text(x - 6, bottom - 2, f"{r.start:#010x}", "end", size=10),
                 svg.text(x + w + 8, (top + bottom) / 2 + 4, slots(r) + per, size=10)]
    limit = y(abi.GUEST_SEGMENT_MAX_ADDR)
    body += [svg.line(x - 70, limit, x + w + 120, limit, "#1a5fb4", dash="6 3", width=1.6),
             svg.text(x + w + 120, limit - 4, "GUEST_SEGMENT_MAX_ADDR", "end", size=10,
                      fill="#1a5fb4")]
    return body


def layout_page() -> str:
    rows = [[rst.literal(f"{r.start:#010x}"), rst.literal(f"{r.end - 1:#010x}"),
             f"{(r.end - r.start) >> 20} MB",
             slots(r).removeprefix("slots ").removeprefix("slot "), rst.escape(r.what)]
            for r in regions()]
    return rst.page(
        rst.label("address-space"), rst.heading("Address space"),
        "Xen occupies the top of every address space so that a hypercall or an exception "
        "needs no address-space switch (SOSP'03 s2.1.1). The guest owns everything below "
        f"``HYPERVISOR_VIRT_START`` = {abi.HYPERVISOR_VIRT_START:#x}; the page-directory "
        f"slots from {abi.L2_PAGETABLE_FIRST_XEN_SLOT} up hold Xen's entries, which no guest "
        f"can change ({rst.ref(target('INV-HOLE'), 'INV-HOLE')}). Xen writes them when it "
        "validates a directory (mm.c, ``alloc_l2_table``), and they are Xen's entries *for "
        f"that directory*: slot {abi.LINEAR_PT_SLOT} (``LINEAR_PT_VIRT_START``) names the "
        "directory's own frame, so two directories of one domain differ there, and the "
        "per-domain slots name the domain's own tables; no reference is taken for any of "
        "them. The guest's flat segments "
        f"end at ``GUEST_SEGMENT_MAX_ADDR`` = {abi.GUEST_SEGMENT_MAX_ADDR:#x}, so the "
        "read-only machine-to-physical table is the only part of the hole a guest can read. "
        "Computed from ``spec.abi`` (arch-x86_32.h, asm-x86/config.h, Xen 3.0.4 non-PAE).",
        ".. image:: images/address-space.svg\n   :alt: the 32-bit address space, the "
        "hypervisor hole enlarged on the right\n",
        rst.table(["Start", "End", "Size", "L2 slots", "What"], rows, widths="15 15 10 15 45"),
    )


# ----------------------------------------------------------------------------------------------
# Frame types.
# ----------------------------------------------------------------------------------------------
# The rule the picture draws is mm.c's get_page_type / put_page_type (Xen 3.0.4): a frame's
# type may change only while its type count is zero; taking the first type reference of a page
# table validates it (alloc_l1_table, alloc_l2_table); dropping the last de-validates it.
TYPE_USES: dict[PGT, str] = {
    PGT.writable_page: "a writable mapping (L1 entry with RW), mmu_update of plain memory",
    PGT.l1_page_table: "an L2 entry, MMUEXT_PIN_L1_TABLE; validates all 1024 entries",
    PGT.l2_page_table: "MMUEXT_PIN_L2_TABLE, MMUEXT_NEW_BASEPTR; validates the guest "
                       "slots and writes Xen's",
    PGT.gdt_page: "set_gdt; every descriptor passes the descriptor rule",
    PGT.ldt_page: "the first use of an LDT entry (mm.c, map_ldt_shadow_page)",
}


def page_types_svg() -> str:
    width, height = 860, 360
    cx, cy = 430, 190
    body = [svg.text(20, 22, "A frame's type (PGT_*) and when it may change", weight="bold"),
            svg.rect(cx - 120, cy - 30, 240, 60, "#eeeeee", rx=30),
            svg.text(cx, cy - 4, "type count 0", "middle", weight="bold"),
            svg.text(cx, cy + 14, "any type; may be retyped", "middle", size=11)]
    types = list(TYPE_USES)
    spots = [(130, 70), (730, 70), (730, 310), (130, 310), (430, 320)]
    for t, (x, y) in zip(types, spots, strict=True):
        body += _type_node(t, x, y, cx, cy)
    body.append(svg.text(20, height - 8, "Red: never mapped writable while in use "
                         "(INV-NOWRPT). L1/L2 take the type only by validation.", size=11))
    return svg.document(width, height, body, "Frame-type state machine")


def _type_node(t: PGT, x: float, y: float, cx: float, cy: float) -> list[str]:
    table = t in PAGE_TABLE_TYPES or t in (PGT.gdt_page, PGT.ldt_page)
    fill = "#f4c7c3" if table else "#dcefdc"
    name = f"PGT_{t.name}" + (" (validated)" if t in PAGE_TABLE_TYPES else "")
    sx, sy = (x + cx) / 2, (y + cy) / 2
    return [svg.rect(x - 105, y - 22, 210, 44, fill, rx=8),
            svg.text(x, y - 3, name, "middle", weight="bold", size=11),
            svg.text(x, y + 13, "type count > 0", "middle", size=10),
            svg.path(f"M{cx + (x - cx) * 0.28:.0f},{cy + (y - cy) * 0.28 - 6:.0f} "
                     f"L{x - (x - cx) * 0.3:.0f},{y - (y - cy) * 0.3 - 6:.0f}"),
            svg.path(f"M{x - (x - cx) * 0.3:.0f},{y - (y - cy) * 0.3 + 6:.0f} "
                     f"L{cx + (x - cx) * 0.28:.0f},{cy + (y - cy) * 0.28 + 6:.0f}", "#888"),
            svg.text(sx, sy - 12, "get_page_type", "middle", size=10, fill="#1a5fb4"),
            svg.text(sx, sy + 22, "last put_page_type", "middle", size=10, fill="#666")]


def page_types_page() -> str:
    rows = [[rst.literal(f"PGT_{t.name}"), str(int(t)), rst.escape(TYPE_USES.get(t, "unused on "
            "non-PAE x86_32" if t in (PGT.l3_page_table, PGT.l4_page_table) else "no type yet"))]
            for t in PGT]
    return rst.page(
        rst.label("page-types"), rst.heading("Frame types"),
        "Every machine frame has one type at a time (``spec.pagetable.PGT``, from "
        "asm-x86/mm.h). A frame may change type only while no reference of its current type "
        "exists (mm.c, get_page_type); a page table takes its type only by validation of all "
        "its entries, and loses its validation with its last type reference (put_page_type). "
        "This is what makes a page table unwritable while it is in use (SOSP'03 s3.3.3).",
        ".. image:: images/page-types.svg\n   :alt: the frame types around the count-zero "
        "state\n",
        rst.table(["Type", "Value", "Taken by"], rows, widths="30 10 60"),
    )


# ----------------------------------------------------------------------------------------------
# Paths through the hypervisor.
# ----------------------------------------------------------------------------------------------
def hypercall_svg() -> str:
    stub = abi.HYPERCALL_STUB_SIZE
    steps = [
        Step(0, 1, f"call hypercall_page + nr * {stub}"),
        Step(1, 2, f"mov $nr, %eax; int ${abi.HYPERCALL_VECTOR:#x}"),
        Step(2, 2, f"nr < NR_hypercalls ({abi.NR_hypercalls}) with a handler? else -ENOSYS"),
        Step(2, 2, "do_<name>(EBX, ECX, EDX, ESI, EDI); copy requests from guest memory"),
        Step(2, 2, "validity condition holds? apply the effects : -errno, state unchanged"),
        Step(2, 1, "EAX = result; return to ring 1"),
        Step(1, 0, "ret"),
    ]
    return svg.sequence(["guest kernel (ring 1)", "hypercall page", "Xen (ring 0)"], steps,
                        "The path of a hypercall")


def bounce_svg() -> str:
    steps = [
        Step(0, 1, f"fault, e.g. page fault (vector {abi.TRAP_page_fault})"),
        Step(1, 1, "handler in trap_ctxt[vector] (set_trap_table)? else crash the domain"),
        Step(1, 1, f"page fault: CR2 into vcpu_info.arch.cr2 (offset {abi.VCPU_INFO_arch_cr2})"),
        Step(1, 1, "from ring 3: switch to the stack_switch stack (SS:ESP)"),
        Step(1, 1, "push [error code], EIP, CS | mask << 16, EFLAGS [, ESP, SS]"),
        Step(1, 2, "jump to the handler's CS:EIP"),
        Step(2, 2, "handle it (e.g. map a page with mmu_update)"),
        Step(2, 1, f"iret hypercall ({abi.__HYPERVISOR_iret}): pop the frame"),
        Step(1, 0, "resume in ring 3"),
    ]
    return svg.sequence(["process (ring 3)", "Xen (ring 0)", "guest kernel (ring 1)"], steps,
                        "The path of a bounced exception")


def paths_page() -> str:
    return rst.page(
        rst.label("paths"), rst.heading("Paths through the hypervisor"),
        rst.heading("A hypercall", 1),
        "A guest kernel calls the stub of its hypercall page that Xen wrote at start of day "
        "(x86_32/traps.c, hypercall_page_initialise); the stub traps into Xen, which "
        "dispatches on EAX (x86_32/entry.S, hypercall_table) and returns the result in EAX. "
        f"Clauses: {rst.ref('hypercalls', 'the hypercalls')}.",
        ".. image:: images/hypercall-path.svg\n   :alt: sequence of a hypercall\n",
        rst.heading("A bounced exception", 1),
        "An exception in the guest enters Xen, which delivers it to the handler the guest "
        "registered, on the guest kernel's stack, with a frame like the processor's "
        "(x86_32/entry.S, create_bounce_frame; SOSP'03 s2.1.2). A system call with a trap "
        "gate of DPL 3 takes the same path "
        f"({rst.ref(target('syscall/fast_path'), 'syscall/fast_path')}); the kernel returns "
        f"with the iret hypercall ({rst.ref(target('iret'), 'iret')}). Clauses: "
        f"{rst.ref(target('bounce/exception'), 'bounce/exception')}, "
        f"{rst.ref(target('bounce/page_fault'), 'bounce/page_fault')}.",
        ".. image:: images/bounce-path.svg\n   :alt: sequence of a bounced page fault\n",
    )


FIGURES = {
    "address-space.svg": address_space_svg,
    "page-types.svg": page_types_svg,
    "hypercall-path.svg": hypercall_svg,
    "bounce-path.svg": bounce_svg,
}

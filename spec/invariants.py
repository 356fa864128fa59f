"""The safety invariants of the paravirtual MMU and CPU interface, each defined once against
``StateView``.

Each invariant has its id, a statement in words, and the source of the rule. The same function
checks a concrete reference-model state (``xenspec.refmodel.view``) and, given a symbolic view,
yields the Z3 formula the proofs use. A table is "in use" when it has its page-table type and is
validated: only then do its entries hold references (mm.c, alloc_l?_table / free_l?_table).

INV-COUNT relates the reference model's counters to the references that exist. The
specification abstracts each count to whether references exist (Xen's rules only ever test a
count against zero), so INV-COUNT and INV-VALID are the refinement relation between the two:
they are evaluated on every concrete state, not proved symbolically. So is the type-reference
part of INV-XENPAGE: the specification counts Xen's own reference on a frame it writes into
as a writable type reference, and the concrete check sees that the count is there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from xenspec.spec import abi
from xenspec.spec.desc import descriptor_is_safe
from xenspec.spec.pagetable import PGT
from xenspec.spec.paging import (
    Level,
    XenSlots,
    conj,
    disj,
    guest_entries,
    has_xen_slots,
)
from xenspec.spec.state import Bool, StateView, Word


@dataclass(frozen=True)
class Invariant:
    id: str
    statement: str
    source: str
    check: Callable[[StateView], Bool]
    part: str = ""  # a conjunct of the invariant ``id``, proved on its own (PROOF_PARTS)

    @property
    def label(self) -> str:
        return f"{self.id} ({self.part})" if self.part else self.id


def in_use_table(s: StateView, f: Word, type: PGT) -> Bool:
    of_type = s.type(f) == int(type)
    if of_type is False:  # a concrete frame of another type: its flag need not be read
        return False
    return s.and_(of_type, s.validated(f))


def tables_in_use(s: StateView, f: Word, levels: Sequence[Level],
                  body: Callable[[Level], Bool]) -> list[Bool]:
    """For each level of ``levels``: if ``f`` is a table of that level in use, body(level)."""
    return [s.implies(in_use_table(s, f, lv.type), partial(body, lv)) for lv in levels]


def inv_hole(s: StateView) -> Bool:
    """INV-HOLE: the hypervisor slots of every table in use that has them hold Xen's own
    entries for that table, so no guest-controlled entry translates an address in
    [HYPERVISOR_VIRT_START, 4G).

    Native (3.0.4): slots 1008..1023 of every page directory in use. Xen's entries are a
    function of the directory, not only of its domain: the slot of LINEAR_PT_VIRT_START maps
    the directory itself (mm.c, alloc_l2_table: ``l2e_from_pfn(pfn, __PAGE_HYPERVISOR)``).
    Every view gives ``xen_l2e`` by the one rule ``spec.pagetable.xen_l2_slot``, so the frame
    in that slot is the directory's own whatever an implementation says its slots are.

    Compat PAE (4.19): slots from COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT of every L2 in use of
    type PGT_pae_xen_l2 (init_xen_pae_l2_slots), and every L3 in use names such an L2 in its
    slot 3, the slot that translates HYPERVISOR_COMPAT_VIRT_START, and has nothing in
    entries 4 to 511 (promote_l3_table)."""
    p = s.paging

    def xen_slots_ok(f: Word, lv: Level) -> Bool:
        premise = in_use_table(s, f, lv.type)
        if lv.xen_slots is XenSlots.FLAGGED:
            premise = s.and_(premise, s.pae_xen_l2(f))
        return s.implies(premise, lambda: s.forall_indices(
            lv.first_xen_slot, lv.entries, lambda i: s.entry(f, i) == s.xen_l2e(f, i)))

    def root_ok(f: Word, slot: int) -> Bool:
        e = s.entry(f, slot)
        l2 = p.pte_get_pfn(e)
        return s.implies(in_use_table(s, f, p.root.type), lambda: s.and_(
            p.pte_present(e), s.mfn_valid(l2), in_use_table(s, l2, p.below(p.root).type),
            s.pae_xen_l2(l2),
            s.forall_indices(p.root.entries, p.root.frame_entries,
                             lambda i: s.entry(f, i) == 0),
        ))

    def table_ok(f: Word) -> Bool:
        terms = [xen_slots_ok(f, lv) for lv in p.levels if lv.xen_slots is not XenSlots.NONE]
        if p.root_xen_slot is not None:
            terms.append(root_ok(f, p.root_xen_slot))
        return conj(s, terms)

    return s.forall_frames(table_ok)


def inv_nowrpt(s: StateView) -> Bool:
    """INV-NOWRPT: every writable entry of an L1 table in use maps a frame of the writable type
    (never a page table, GDT or LDT frame), and every guest entry of a table in use above L1
    that names a table of its own level (a linear page-table map) is read-only."""
    p = s.paging

    def l1_ok(f: Word) -> Bool:
        return s.forall_present_entries(
            f, 0, p.l1.entries,
            lambda i, e: s.implies(
                p.pte_writable(e), lambda: s.type(p.pte_get_pfn(e)) == int(PGT.writable_page)
            ),
        )

    def linear_ok(f: Word, lv: Level) -> Bool:
        return guest_entries(s, f, lv, lambda i, e: s.implies(
            s.type(p.pte_get_pfn(e)) == int(lv.type), lambda: s.not_(p.pte_writable(e))))

    return s.forall_frames(
        lambda f: s.and_(
            s.implies(in_use_table(s, f, p.l1.type), lambda: l1_ok(f)),
            *tables_in_use(s, f, [lv for lv in p.upper if lv.linear],
                           lambda lv: linear_ok(f, lv)),
        )
    )


def grant_mapped(s: StateView, f: Word, i: Word, e: Word) -> Bool:
    """The PTE (f, i) is the host mapping of a grant handle of its table's owner for the frame
    it names: the handle is in use for a host mapping of that frame, which belongs to the
    domain that granted it, and wrote that PTE (grant_table.c __gnttab_map_grant_ref: get_page
    on the granter's frame; mm.c create_grant_host_mapping)."""
    d, h = s.owner(f), s.gnt_slot(f, i)
    pte_l1, pte_idx = s.mt_pte(d, h)
    target = s.paging.pte_get_pfn(e)
    return s.and_(
        (s.mt_flags(d, h) & abi.GNTMAP_host_map) != 0,
        s.mt_frame(d, h) == target, s.owner(target) == s.mt_dom(d, h),
        pte_l1 == f, pte_idx == i,
    )


def foreign_entry(s: StateView, f: Word, e: Word) -> Bool:
    """An entry of ``f`` naming another domain's frame, the table's owner unprivileged."""
    return s.and_(s.owner(s.paging.pte_get_pfn(e)) != s.owner(f),
                  s.not_(s.is_privileged(s.owner(f))))


def names_own_frame(s: StateView, f: Word, e: Word,
                    foreign_ok: Callable[[], Bool] | None) -> Bool:
    """Entry ``e`` of table ``f`` names machine RAM of the table's owner (or, where
    ``foreign_ok`` holds, of another domain)."""
    target = s.paging.pte_get_pfn(e)
    if foreign_ok is None:
        return s.and_(s.mfn_valid(target), s.owner(target) == s.owner(f))
    return s.and_(s.mfn_valid(target), s.implies(s.owner(target) != s.owner(f), foreign_ok))


def own_l1(s: StateView) -> Bool:
    """INV-OWN, L1 part: a present entry of an L1 in use names RAM of the table's owner, or of
    another domain when the owner is privileged (FOREIGNDOM) or the entry is the host mapping
    of one of the owner's grant handles."""
    return s.forall_frames(lambda f: s.implies(
        in_use_table(s, f, PGT.l1_page_table),
        lambda: s.forall_present_entries(
            f, 0, s.paging.l1.entries,
            lambda i, e: names_own_frame(s, f, e, lambda: s.or_(
                s.is_privileged(s.owner(f)), grant_mapped(s, f, i, e))),
        ),
    ))


def own_l2(s: StateView) -> Bool:
    """INV-OWN, part of the tables above L1: a present guest entry of a page directory (or, with
    PAE, of an L2 or L3) in use names RAM of the table's owner."""
    return _own_upper(s, s.paging.upper)


def own_directories(s: StateView) -> Bool:
    """``own_l2`` at the directory level (the native root, the PAE L2)."""
    return _own_upper(s, s.paging.upper[:1])


def own_l3s(s: StateView) -> Bool:
    """``own_l2`` at the PAE L3 (true of the native profile, which has none)."""
    return _own_upper(s, s.paging.upper[1:])


def _own_upper(s: StateView, levels: Sequence[Level]) -> Bool:
    if not levels:
        return s.and_()
    return s.forall_frames(lambda f: conj(s, tables_in_use(
        s, f, levels,
        lambda lv: guest_entries(s, f, lv, lambda i, e: names_own_frame(s, f, e, None)))))


def inv_own(s: StateView) -> Bool:
    """INV-OWN: a present entry of a table in use names machine RAM owned by the table's owner.
    An L1 of a privileged domain may also name a frame of another domain (FOREIGNDOM), and an
    L1 entry may name another domain's frame when it is the host mapping of a grant handle of
    the table's owner: no frame of another domain is mapped without a grant."""
    return s.and_(own_l1(s), own_l2(s))


def inv_gnt_ro(s: StateView) -> Bool:
    """INV-GNT-RO: a frame granted read-only is never mapped writable by its grantee. A writable
    entry of an L1 in use naming another domain's frame (the table's owner unprivileged) is
    the host mapping of a writable grant handle (GNTMAP_readonly clear); a handle is writable
    only if the granter's entry was not GTF_readonly when Xen first write-pinned it
    (grant_table.c, __gnttab_map_grant_ref: "Attempt to write-pin a r/o grant entry")."""
    return s.forall_frames(
        lambda f: s.implies(
            in_use_table(s, f, PGT.l1_page_table),
            lambda: s.forall_present_entries(
                f, 0, s.paging.l1.entries,
                lambda i, e: s.implies(s.paging.pte_writable(e), lambda: s.implies(
                    foreign_entry(s, f, e),
                    lambda: s.and_(
                        grant_mapped(s, f, i, e),
                        (s.mt_flags(s.owner(f), s.gnt_slot(f, i)) & abi.GNTMAP_readonly) == 0,
                    ),
                )),
            ),
        )
    )


def inv_pin(s: StateView) -> Bool:
    """INV-PIN: a pinned frame is a validated page table (of any level)."""
    return s.forall_frames(
        lambda f: s.implies(
            s.pinned(f),
            lambda: s.and_(is_page_table(s, f), s.validated(f)),
        )
    )


def is_page_table(s: StateView, f: Word) -> Bool:
    """Frame ``f`` has one of the paging structure's table types."""
    return disj(s, [s.type(f) == int(t) for t in s.paging.table_types])


def inv_l2ref(s: StateView) -> Bool:
    """INV-L2REF: a present guest entry of a table in use above L1 names a validated table of
    the level below, or (a linear map, where the level allows one) a validated table of its
    own level, so tables in use only reference tables in use (mm.c, get_page_from_l2e and,
    with PAE, get_page_from_l3e take a type reference that keeps the target validated)."""
    return _tables_name_tables(s, s.paging.upper)


def l2ref_directories(s: StateView) -> Bool:
    """INV-L2REF at the directory level (the native root, the PAE L2)."""
    return _tables_name_tables(s, s.paging.upper[:1])


def l2ref_l3s(s: StateView) -> Bool:
    """INV-L2REF at the PAE L3 (true of the native profile, which has none)."""
    return _tables_name_tables(s, s.paging.upper[1:])


def _tables_name_tables(s: StateView, levels: Sequence[Level]) -> Bool:
    p = s.paging
    if not levels:
        return s.and_()

    def names_table(lv: Level, e: Word) -> Bool:
        target = p.pte_get_pfn(e)
        ok = [in_use_table(s, target, p.below(lv).type)]
        if lv.linear:
            ok.append(in_use_table(s, target, lv.type))
        return disj(s, ok)

    return s.forall_frames(lambda f: conj(s, tables_in_use(
        s, f, levels, lambda lv: guest_entries(s, f, lv, lambda i, e: names_table(lv, e)))))


def inv_base(s: StateView) -> Bool:
    """INV-BASE: every vCPU's page-table base is 0 (none) or a validated root table (a page
    directory; with PAE an L3) owned by the vCPU's domain."""
    return s.forall_vcpus(
        lambda v: s.implies(
            s.base(v) != 0,
            lambda: s.and_(
                s.mfn_valid(s.base(v)),
                in_use_table(s, s.base(v), s.paging.root.type),
                s.owner(s.base(v)) == s.vcpu_domain(v),
            ),
        )
    )


def inv_validated(s: StateView) -> Bool:
    """INV-COUNT (type part): a page-table frame is validated exactly while its type count is
    non-zero (mm.c: put_page_type de-validates a table at count 0; get_page_type validates)."""
    return s.forall_frames(
        lambda f: s.implies(
            is_page_table(s, f),
            lambda: s.validated(f) == (s.type_count(f) != 0),
        )
    )


def unprivileged_selector(s: StateView, sel: Word) -> Bool:
    """A selector the guest may hand Xen to load: null (Xen crashes the domain rather than load
    it, null_trap_bounce) or RPL 1..3 (asm-x86/desc.h, __fixup_guest_selector raises RPL 0 to
    GUEST_KERNEL_RPL 1)."""
    return s.or_((sel & 3) != 0, (sel & 0xFFFFFFFC) == 0)


def is_descriptor_table(s: StateView, f: Word) -> Bool:
    return s.or_(s.type(f) == int(PGT.gdt_page), s.type(f) == int(PGT.ldt_page))


def descriptors_safe(s: StateView, f: Word) -> Bool:
    """Every descriptor of frame ``f`` is safe (spec.desc)."""
    return s.forall_descriptors(f, descriptor_is_safe)


def installed_gdt_frame(s: StateView, f: Word) -> Bool:
    return s.and_(s.type(f) == int(PGT.gdt_page), s.gdt_referenced(f))


def inv_priv(s: StateView) -> Bool:
    """INV-PRIV: nothing a guest registers makes Xen enter ring 0 on its behalf. Every virtual
    IDT entry's code selector, both callback selectors and the stack_switch stack selector are
    null or unprivileged; every frame typed GDT or LDT is validated and holds only safe
    descriptors; every frame a vCPU's GDT names is typed GDT and holds a type reference, so
    that it cannot change type while installed."""

    return s.and_(priv_selectors(s), priv_descriptors(s))


def priv_selectors(s: StateView) -> Bool:
    """INV-PRIV, vCPU part: registered selectors are safe; installed GDT frames are GDT frames
    holding a type reference."""

    def vcpu_ok(v: Word) -> Bool:
        return s.and_(
            s.forall_indices(0, abi.NR_VECTORS,
                             lambda n: unprivileged_selector(s, s.trap_cs(v, n))),
            unprivileged_selector(s, s.event_cs(v)),
            unprivileged_selector(s, s.failsafe_cs(v)),
            unprivileged_selector(s, s.kernel_ss(v)),
            s.forall_indices(0, abi.GDT_PAGES, lambda k: s.implies(
                s.gdt_frame(v, k) != 0, lambda: installed_gdt_frame(s, s.gdt_frame(v, k)),
            )),
        )

    return s.forall_vcpus(vcpu_ok)


def priv_descriptors(s: StateView) -> Bool:
    """INV-PRIV, frame part: a frame typed GDT or LDT is validated and its descriptors safe."""
    return s.forall_frames(lambda f: s.implies(
        is_descriptor_table(s, f), lambda: s.and_(s.validated(f), descriptors_safe(s, f)),
    ))


def inv_iso(s: StateView) -> Bool:
    """INV-ISO, in the form the state supports: no domain's tables in use, base pointers or GDT
    frames reference another domain's frames. Table entries are INV-OWN (an L1 of a privileged
    domain may name a frame of FOREIGNDOM); a vCPU's base pointer and every frame of its GDT
    are valid frames of the vCPU's domain (``iso_vcpus``). Isolation through event channels
    is stated separately (spec.event_spec, INV-EVT-XDOM), grant mappings by INV-OWN and
    INV-GNT-RO. The LDT pages mapped on a fault (mm.c, map_ldt_shadow_page) are not in the
    symbolic state: the model takes them only through get_page_and_type for the vCPU's own
    domain, and INV-COUNT counts their references on concrete states."""
    return s.and_(inv_own(s), iso_vcpus(s))


def iso_vcpus(s: StateView) -> Bool:
    """INV-ISO's own conjunct: every vCPU's base pointer and GDT frames, where not 0, are
    valid frames of the vCPU's domain (mm.c new_guest_cr3 and set_gdt take them with
    get_page, which checks the owner)."""

    def owned(v: Word, f: Word) -> Bool:
        return s.implies(f != 0, lambda: s.and_(s.mfn_valid(f), s.owner(f) == s.vcpu_domain(v)))

    return s.forall_vcpus(lambda v: s.and_(
        owned(v, s.base(v)),
        s.forall_indices(0, abi.GDT_PAGES, lambda k: owned(v, s.gdt_frame(v, k))),
    ))


# The owner the reference model gives a frame on the heap's free list (refmodel/memory.py,
# DOMID_NONE: Xen's NULL owner); as a 32-bit word it is no domain id.
FREE_FRAME_OWNER = -1

XENPAGE_SOURCE = ("x86 mm.c share_xen_page_with_guest, get_page_type; domain.c "
                  "arch_domain_create; grant_table.c grant_table_create")


def inv_free_ref(s: StateView) -> Bool:
    """INV-FREE-REF: nothing references a frame on the heap's free list: no present entry of a
    table in use names it, no vCPU's base pointer or GDT names it, and it is neither pinned,
    a page table in use nor an installed GDT frame. A frame handed to a domain comes from the
    free list (memory.c increase_reservation, populate_physmap: alloc_domheap_pages), so no
    domain ever receives a frame that another still maps or holds (SOSP'03 s3.3.3: a frame
    is retasked only when its reference count is zero; page_alloc.c free_domheap_pages from
    put_page)."""
    return s.and_(free_ref_tables(s), free_ref_frames(s), free_ref_vcpus(s))


def _not_free(s: StateView, f: Word) -> Bool:
    return s.owner(f) != FREE_FRAME_OWNER


def free_ref_tables(s: StateView) -> Bool:
    """INV-FREE-REF, tables: no present guest entry of a table in use names a free frame."""
    p = s.paging

    def entries_ok(f: Word, lv: Level) -> Bool:
        def body(i: Word, e: Word) -> Bool:
            return _not_free(s, p.pte_get_pfn(e))

        if lv.n == 1:
            return s.forall_present_entries(f, 0, lv.entries, body)
        return guest_entries(s, f, lv, body)

    return s.forall_frames(lambda f: s.and_(*tables_in_use(
        s, f, p.levels, lambda lv: entries_ok(f, lv))))


def free_ref_frames(s: StateView) -> Bool:
    """INV-FREE-REF, frames: a free frame is neither pinned, a table in use nor an installed
    GDT frame."""
    p = s.paging
    return s.forall_frames(lambda f: s.implies(
        s.owner(f) == FREE_FRAME_OWNER,
        lambda: s.and_(s.not_(s.pinned(f)),
                       *[s.not_(in_use_table(s, f, t)) for t in p.table_types],
                       s.not_(s.gdt_referenced(f))),
    ))


def free_ref_vcpus(s: StateView) -> Bool:
    """INV-FREE-REF, vCPUs: no base pointer or GDT frame is a free frame."""
    return s.forall_vcpus(lambda v: s.and_(
        s.implies(s.base(v) != 0, lambda: _not_free(s, s.base(v))),
        s.forall_indices(0, abi.GDT_PAGES, lambda k: s.implies(
            s.gdt_frame(v, k) != 0, lambda: _not_free(s, s.gdt_frame(v, k)))),
    ))


def inv_xenpage(s: StateView) -> Bool:
    """INV-XENPAGE: a frame the hypervisor writes into on a guest's behalf is never a page
    table, page directory, GDT or LDT frame of any domain: it is a validated frame of the
    writable type, owned by a domain (never on the heap's free list).

    Xen writes into such frames whatever the guest does: shared_info (vcpu_info, the faulting
    address cr2 of a page fault, time, event bits), the grant-table frames, and the frames a
    back end holds mapped (the console ring, the xenstore page). Were one of them an L1, L2,
    GDT or LDT frame, each such write would plant an entry or descriptor no validation has
    seen: a domain that pinned its shared_info as an L1 could make Xen write, as cr2, a
    writable PTE naming another domain's page directory. Xen shuts this out when it shares the
    page (x86 mm.c, share_xen_page_with_guest, called by domain.c arch_domain_create for
    shared_info and by grant_table.c grant_table_create through gnttab_create_shared_page,
    both XENSHARE_writable): the page gets type PGT_writable_page, PGT_validated, and a type
    count of 1 that Xen never drops while it shares the page, so get_page_type to any other
    type fails (a type changes only at type count 0). A back end's mapping is a writable
    foreign mapping, which holds a writable type reference the same way.

    The type reference itself is a count, which the specification abstracts (``has_type_refs``
    in spec.mm_spec counts Xen's reference on every frame it writes into, so no type
    acquisition takes one, and decrease_reservation refuses one): on concrete states
    ``inv_xenpage_ref`` checks that the count is there."""
    return s.forall_frames(
        lambda f: s.implies(
            s.hypervisor_writes(f),
            lambda: s.and_(s.owner(f) != FREE_FRAME_OWNER,
                           s.type(f) == int(PGT.writable_page), s.validated(f)),
        )
    )


def inv_xenpage_ref(s: StateView) -> Bool:
    """INV-XENPAGE (type reference): a frame the hypervisor writes into holds a type
    reference (share_xen_page_with_guest: type count 1; a back end's writable mapping: one
    per mapping), the count the specification's ``has_type_refs`` stands for. A concrete check
    (the specification abstracts counts)."""
    return s.forall_frames(
        lambda f: s.implies(s.hypervisor_writes(f), lambda: s.type_count(f) != 0)
    )


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("INV-HOLE", "No guest-controlled mapping reaches the hypervisor's top 64 MB: "
              "every page directory in use holds Xen's entries for it there, its own frame in "
              "the linear page-table slot.",
              "SOSP'03 s2.1.1; xen/arch/x86/mm.c alloc_l2_table, is_guest_l2_slot", inv_hole),
    Invariant("INV-NOWRPT", "No page-table, GDT or LDT frame is mapped writable.",
              "SOSP'03 s3.3.3; mm.c get_page_from_l1e, get_linear_pagetable", inv_nowrpt),
    Invariant("INV-OWN", "A domain's tables map only frames it owns, or frames granted to it.",
              "mm.c get_page (owner check), get_page_from_l1e; grant_table.c "
              "__gnttab_map_grant_ref; mm.c create_grant_host_mapping", inv_own),
    Invariant("INV-GNT-RO", "A frame granted read-only is never mapped writable by its grantee.",
              "grant_table.h GTF_readonly, GNTMAP_readonly; grant_table.c "
              "__gnttab_map_grant_ref", inv_gnt_ro),
    Invariant("INV-PIN", "A pinned frame is a validated page table or page directory.",
              "mm.c do_mmuext_op MMUEXT_PIN_*; SOSP'03 s3.3.3", inv_pin),
    Invariant("INV-BASE", "Every vCPU's base pointer is a validated page directory it owns.",
              "mm.c new_guest_cr3", inv_base),
    Invariant("INV-L2REF", "Page directories in use reference only tables in use.",
              "mm.c get_page_from_l2e, get_linear_pagetable", inv_l2ref),
    Invariant("INV-PRIV", "Xen alone runs in ring 0: guest selectors and descriptors are safe.",
              "SOSP'03 s2.1.1, s2.1.2; asm-x86/desc.h __fixup_guest_selector; traps.c "
              "do_set_trap_table; x86_32/traps.c register_guest_callback; x86_32/mm.c "
              "do_stack_switch, check_descriptor; mm.c set_gdt, alloc_segdesc_page", inv_priv),
    Invariant("INV-FREE-REF", "Nothing references a frame on the free list.",
              "SOSP'03 s3.3.3; page_alloc.c free_domheap_pages; memory.c guest_remove_page, "
              "increase_reservation", inv_free_ref),
    Invariant("INV-ISO", "No domain's tables, base pointers or GDT name another's frames.",
              "SOSP'03 s2; mm.c get_page (owner check), new_guest_cr3, set_gdt", inv_iso),
    Invariant("INV-XENPAGE", "A frame Xen writes into for a guest is never a table, GDT or "
              "LDT frame.", XENPAGE_SOURCE, inv_xenpage),
)

# The proofs discharge INV-PRIV, INV-OWN, INV-FREE-REF and INV-ISO conjunct by conjunct: each
# part is preserved on its own, and the solver finds them far easier apart than together
# (compat-pae mmu_update of an L3 entry against INV-FREE-REF: 29 s whole, 6 s for its hardest
# part). INV-ISO's first conjunct is INV-OWN, whose parts are proved as such: its one part of
# its own is the vCPUs' frames (an L2 update validating a new L1: 34 s whole, 0.04 s so).
_PRIV = next(i for i in INVARIANTS if i.id == "INV-PRIV")
_OWN = next(i for i in INVARIANTS if i.id == "INV-OWN")
_FREE_REF = next(i for i in INVARIANTS if i.id == "INV-FREE-REF")
_ISO = next(i for i in INVARIANTS if i.id == "INV-ISO")
_L2REF = next(i for i in INVARIANTS if i.id == "INV-L2REF")
PROOF_PARTS: dict[str, tuple[Invariant, ...]] = {
    # INV-OWN's L1 part carries the grant clause; the part above L1 (``own_l2``, "L2 entries",
    # assumed as one formula: obligations.assumable) is what most others need, and is proved
    # by level: the compat-pae NEW_BASEPTR obligation took 7 to 11 s whole, under 0.6 s and
    # 0.9 to 2.7 s for its two levels (Z3 seeds 0 to 3).
    "INV-OWN": (
        Invariant("INV-OWN", "L1 entries name the owner's frames, FOREIGNDOM's, or granted "
                  "ones.", _OWN.source, own_l1, "L1 entries"),
        Invariant("INV-OWN", "Page-directory entries name the owner's frames.", _OWN.source,
                  own_directories, "directory entries"),
        Invariant("INV-OWN", "PAE L3 entries name the owner's frames.", _OWN.source, own_l3s,
                  "L3 entries"),
    ),
    "INV-PRIV": (
        Invariant("INV-PRIV", "Registered selectors are unprivileged; installed GDT frames are "
                  "referenced GDT frames.", _PRIV.source, priv_selectors, "selectors"),
        Invariant("INV-PRIV", "GDT and LDT frames are validated and hold only safe descriptors.",
                  _PRIV.source, priv_descriptors, "descriptors"),
    ),
    "INV-FREE-REF": (
        Invariant("INV-FREE-REF", "No entry of a table in use names a free frame.",
                  _FREE_REF.source, free_ref_tables, "tables"),
        Invariant("INV-FREE-REF", "A free frame is not pinned, in use as a table or a GDT.",
                  _FREE_REF.source, free_ref_frames, "frames"),
        Invariant("INV-FREE-REF", "No base pointer or GDT frame is free.",
                  _FREE_REF.source, free_ref_vcpus, "vCPUs"),
    ),
    # By level: the L3 part of an L3 taken for NEW_BASEPTR took 10 s to 36 s as one with the
    # directories' (depending on nothing but the names of bound variables), 2 s apart.
    "INV-L2REF": (
        Invariant("INV-L2REF", "Directories in use name tables in use.", _L2REF.source,
                  l2ref_directories, "directories"),
        Invariant("INV-L2REF", "PAE L3s in use name L2s in use.", _L2REF.source, l2ref_l3s,
                  "L3s"),
    ),
    # The rest of INV-ISO is INV-OWN, proved by INV-OWN's parts.
    "INV-ISO": (
        Invariant("INV-ISO", "Base pointers and GDT frames are the vCPU's domain's.",
                  _ISO.source, iso_vcpus, "vCPU frames"),
    ),
}


def proof_invariants() -> tuple[Invariant, ...]:
    """The invariants as the proofs discharge them (INVARIANTS, with PROOF_PARTS split; each
    invariant is the conjunction of its parts, INV-ISO of its part and INV-OWN's)."""
    return tuple(p for inv in INVARIANTS for p in PROOF_PARTS.get(inv.id, (inv,)))


# Invariants about the reference counters themselves. The specification abstracts a count to
# whether references exist, so these relate the reference model's counters to that
# abstraction (its refinement relation) and are evaluated on concrete states only.
COUNTER_INVARIANTS: tuple[Invariant, ...] = (
    Invariant("INV-VALID", "A page-table frame is validated exactly while it has type refs.",
              "mm.c get_page_type / put_page_type", inv_validated),
    Invariant("INV-XENPAGE", "A frame Xen writes into for a guest holds a type reference.",
              XENPAGE_SOURCE, inv_xenpage_ref, "type reference"),
)


# ------------------------------------------------------------------------------------------
# INV-COUNT: reference counts equal the references that exist (concrete states).
# ------------------------------------------------------------------------------------------
class EnumerableState(StateView, Protocol):
    """A concrete view that can also enumerate what exists."""

    def frames(self) -> range: ...
    def vcpus(self) -> range: ...
    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]: ...
    def descriptor_frames(self, vcpu: int) -> list[int]: ...
    def device_refs(self) -> list[tuple[int, bool]]: ...


def references(s: EnumerableState) -> tuple[dict[int, int], dict[int, int]]:
    """Count the references that exist, frame by frame: (general, type).

    The rules of mm.c (3.0.4): PGC_allocated holds one general reference; a pin holds one
    general and one type reference; a vCPU base pointer holds one of each; a present entry of
    an L1 in use holds a general reference, and a writable type reference when RW; a present
    guest entry of a page directory in use holds a general and a type reference on the L1 (or
    linear-mapped directory) it names, except a directory's map of itself, which holds none
    (with PAE, so does a guest entry of an L2 or L3 in use: mm.c RELEASE-4.19.0,
    get_page_from_l2e, get_page_from_l3e);
    a GDT frame installed by set_gdt holds one of each (mm.c, set_gdt / destroy_gdt), and so
    does an LDT page mapped on a fault (map_ldt_shadow_page / invalidate_shadow_ldt); a grant
    device mapping holds a general reference, and a writable type reference unless read-only
    (grant_table.c, __gnttab_map_grant_ref); a grant host mapping's references are its PTE's.
    """
    general: dict[int, int] = {}
    typed: dict[int, int] = {}
    p = s.paging

    def add(table: dict[int, int], mfn: int) -> None:
        table[mfn] = table.get(mfn, 0) + 1

    for f in s.frames():
        if s.allocated(f):
            add(general, f)
        if s.pinned(f):
            add(general, f)
            add(typed, f)
        if in_use_table(s, f, p.l1.type):
            for _, e in s.present_entries(f, 0, p.l1.entries):
                add(general, p.pte_get_pfn(e))
                if p.pte_writable(e):
                    add(typed, p.pte_get_pfn(e))
        for lv in p.upper:
            if in_use_table(s, f, lv.type):
                hi = lv.first_xen_slot if has_xen_slots(s, f, lv) else lv.entries
                for _, e in s.present_entries(f, 0, hi):
                    if p.pte_get_pfn(e) != f:
                        add(general, p.pte_get_pfn(e))
                        add(typed, p.pte_get_pfn(e))
    for f, writable in s.device_refs():  # grant device mappings (grant_table.c)
        add(general, f)
        if writable:
            add(typed, f)
    for v in s.vcpus():
        if s.base(v):
            add(general, s.base(v))
            add(typed, s.base(v))
        for f in s.descriptor_frames(v):  # one of each per GDT frame and mapped LDT page
            add(general, f)
            add(typed, f)
    return general, typed


def count_violations(s: EnumerableState) -> list[str]:
    """INV-COUNT: every frame's general and type counts equal the references that exist."""
    general, typed = references(s)
    bad = []
    for f in s.frames():
        if s.count(f) != general.get(f, 0) or s.type_count(f) != typed.get(f, 0):
            bad.append(
                f"mfn {f:#x}: count {s.count(f):#x} (references {general.get(f, 0):#x}), "
                f"type count {s.type_count(f):#x} (references {typed.get(f, 0):#x})"
            )
    return bad


def inv_free(s: StateView) -> Bool:
    """INV-FREE: a frame no domain owns (on the heap's free list) carries no reference at all:
    no general or type reference, no pin, no allocation reference. With INV-COUNT (the counts
    are the references that exist) a frame is therefore never handed to another domain while
    anything still references it: Xen frees a frame only when its count drops to zero
    (page_alloc.c free_domheap_pages from put_page; memory.c guest_remove_page and x86
    domain.c relinquish_memory drop references, they never free), and a frame may be retasked
    only at count 0 (SOSP'03 s3.3.3). A concrete check (the specification abstracts counts);
    INV-FREE-REF is its form in the specification's terms, proved for every hypercall."""
    return s.forall_frames(
        lambda f: s.implies(
            s.owner(f) == FREE_FRAME_OWNER,
            lambda: s.and_(s.count(f) == 0, s.type_count(f) == 0,
                           s.not_(s.allocated(f)), s.not_(s.pinned(f))),
        )
    )

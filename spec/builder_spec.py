"""The domain builder's start-of-day state as a specification: a ``SymState`` that is a function
of the builder's parameters, and the obligations that it satisfies every invariant.

What the builder makes (refmodel/builder.py, build_initial_tables; refmodel/elfbuild.py,
build_domain; Xen 3.0's tools/libxc/xc_linux_build.c setup_guest and
xen/arch/x86/domain_build.c construct_dom0 lay a domain out the same way):

* the domain owns ``nr_pages`` machine frames, pseudo-physical frame ``pfn`` being machine
  frame ``p2m[pfn]``; the p2m is any injective function into valid frames other than frame 0
  (page_alloc.c alloc_domheap_pages hands each frame out once; the model reserves frames from
  0 for Xen: hypervisor.py _reserve_xen_frames), and Xen's M2P table (machine_to_phys_mapping,
  set_gpfn_from_mfn) is its inverse: ``m2p[p2m[pfn]] == pfn``;
* the domain also owns its shared_info frame, which is not one of its pages
  (share_xen_page_with_guest; 0 when there is none, as for builder.py alone);
* the bootstrap region maps pfns [0, nr_mapped) at ``virt_base`` (4 MB aligned); the page
  directory is pfn ``pt_base``, followed by the ``nr_l1`` L1 tables (one per 4 MB), mapped
  read-only (L1_PROT without _PAGE_RW), and then by at least one page, the boot stack; every
  other mapped pfn (kernel, p2m list, start_info, store and console pages, boot stack, the
  padding) is mapped read-write. L1 entries are L1_PROT (no _PAGE_USER: no ring-3 access),
  directory entries L2_PROT (with _PAGE_USER), the x86_32 values of both builders;
* the directory's guest slots first_slot .. first_slot + nr_l1 - 1 name the L1s; its slots from
  L2_PAGETABLE_FIRST_XEN_SLOT are Xen's for this directory (mm.c alloc_l2_table copies the
  domain's in and maps the directory itself at LINEAR_PT_VIRT_START); the rest are 0;
* the directory is pinned (MMUEXT_PIN_L2_TABLE) and vCPU 0's base pointer: validating it types
  the L1s, and they type every frame they map writable (mm.c get_page_from_l1e), so the mapped
  frames other than the tables are writable pages, all validated; the other frames are
  untyped;
* vCPU 0's context is all zeros (the model), or what xc_linux_build.c writes (``tools_ctxt``):
  every virtual IDT entry and both callbacks with FLAT_KERNEL_CS, kernel_ss FLAT_KERNEL_SS;
  no GDT frames (gdt_ents 0), no grant handles, no other vCPU has a base pointer;
* every frame the domain does not own keeps whatever owner it had (Xen, the free list, a
  domain without page tables such as the model's backend domain), untyped and unpinned;
* the frames the hypervisor writes into on a guest's behalf (``xen_written``) are the
  domain's shared_info frame, which Xen shares with it writable (domain.c arch_domain_create:
  share_xen_page_with_guest, XENSHARE_writable), and any others of the machine: grant-table
  frames (grant_table.c grant_table_create, likewise; the model creates a domain's grant
  table on first use, so the builder's domain has none yet), other domains' shared_info, and
  pages of the domain a back end maps (its store and console rings, which build_domain puts
  after start_info, below the page tables). Those Xen shares have the writable type,
  validated, and Xen's type reference (share_xen_page_with_guest: PGT_writable_page |
  PGT_validated, count 1); they
  are no page of the domain and not on the free list (``xen_pages``).

The builder's own limits (builder.py BuildError checks) are ``layout``; the machine's are
``machine`` and ``allocation``. Memory that is not a page table (the kernel image, the p2m list,
start_info, Xen's frames) is an arbitrary ``junk`` array: no invariant may depend on it. Where
build_domain puts the kernel, the p2m list, start_info, the store and console pages, the page
tables and the boot stack is ``elf_layout`` (xc_linux_build.c setup_guest's arithmetic, the
search for the number of table frames included), and a new domain's event channels are
``initial_events``.

Everything is a function of ``BuildParams``: symbolic for the proofs (unbounded over every
parameter), concrete for the refinement check against the model's builder and for the
witness that the invariants together are satisfiable. The obligations (``obligation_list``):
the initial state satisfies each invariant; build_domain's region meets ``layout``, puts
everything it loads below the page tables and the boot stack after them with at least 512 KB
of the region after it, and its number of table frames is the least the search accepts;
the new domain's event channels satisfy the event invariants; and
(``invariants_satisfiable``) one concrete machine the builder makes, with tables in use,
satisfies all invariants at once, so that none of the obligations that assume them holds
vacuously.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import z3

from xenspec.spec import abi
from xenspec.spec.branches import Check, all_of, require
from xenspec.spec.event_spec import EVT_INVARIANTS, EvtInvariant, EvtState, SymEvtView
from xenspec.spec.event_spec import machine as event_machine
from xenspec.spec.invariants import FREE_FRAME_OWNER, INVARIANTS, Invariant, proof_invariants
from xenspec.spec.pagetable import PGT, xen_l2_slot
from xenspec.spec.symbolic import SymState, SymView, W, bv, fresh_name, reset_fresh

Word = Any
Bool = Any

# The entry flags of both x86_32 builders (xc_linux_build.c and domain_build.c, L1_PROT and
# L2_PROT); the page tables' own L1 entries lose _PAGE_RW (setup_pg_tables).
L1_PROT = abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED
L1_PROT_RO = L1_PROT & ~abi._PAGE_RW
L2_PROT = (abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_ACCESSED | abi._PAGE_DIRTY
           | abi._PAGE_USER)
# A non-PAE x86_32 PTE holds a 20-bit frame number: the machine has at most 2^20 frames.
MAX_FRAMES = 1 << (32 - abi.PAGE_SHIFT)


@dataclass(frozen=True)
class BuildParams:
    """The builder's parameters and the machine it builds on (every field a Z3 term)."""

    nr_frames: Word  # machine frames (max_page)
    domid: Word
    vcpu: Word  # the domain's vCPU 0, numbered across the machine
    nr_pages: Word  # the domain's pages (tot_pages)
    nr_mapped: Word  # pages of the bootstrap region
    virt_base: Word
    pt_base: Word  # the page directory's pfn; the L1s follow it, then the boot stack
    tools_ctxt: Bool  # vCPU 0's context as xc_linux_build.c writes it (else zeros)
    kernel_sp: Word  # the boot stack's top (tools_ctxt)
    p2m: Any  # pfn -> mfn
    m2p: Any  # mfn -> pfn: Xen's M2P table
    shared_info: Word  # the domain's shared_info frame (0: none)
    xen_written: Any  # frame -> Bool: the frames the hypervisor writes into for a guest
    other_owner: Any  # frame -> domid: the owner of each frame that is not the domain's
    junk: Any  # (frame, index) -> word: contents of frames that are not page tables
    vcpu_domain: Any  # vcpu -> domid (the state's fixed arrays)
    privileged: Any  # domid -> Bool
    xen_l2e: Callable[[Word, Word], Word]  # (domid, index) -> Xen's directory entry
    linear_pt_flags: Word  # the flags of a directory's map of itself (SymState's)

    def evolve(self, **changes: Any) -> BuildParams:
        return replace(self, **changes)


def symbolic_params() -> BuildParams:
    """Every parameter free; the fixed arrays under the names ``SymState.fresh`` gives them."""
    bvs = {n: z3.BitVec(n, 32) for n in ("nr_frames", "domid", "vcpu", "nr_pages", "nr_mapped",
                                         "virt_base", "pt_base", "kernel_sp", "shared_info")}
    return BuildParams(
        **bvs, tools_ctxt=z3.Bool("tools_ctxt"),
        p2m=z3.Array("p2m", W, W), m2p=z3.Array("m2p", W, W),
        other_owner=z3.Array("other_owner", W, W),
        xen_written=z3.Array("xen_written", W, z3.BoolSort()),
        junk=z3.Array("junk", W, W, W),
        vcpu_domain=z3.Array("vcpu_domain", W, W),
        privileged=z3.Array("privileged", W, z3.BoolSort()),
        xen_l2e=z3.Function("xen_l2e", W, W, W),
        linear_pt_flags=z3.BitVec("linear_pt_flags", 32),
    )


# ----------------------------------------------------------------------------------------------
# The layout (refmodel/builder.py).
# ----------------------------------------------------------------------------------------------
def nr_l1(p: BuildParams) -> Word:
    """One L1 per 4 MB of the region: ceil(nr_mapped / 1024)."""
    return z3.LShR(p.nr_mapped + (abi.L1_PAGETABLE_ENTRIES - 1), 10)


def pt_base(p: BuildParams) -> Word:
    """The page directory's pfn; the L1s follow it."""
    return p.pt_base


def pt_end(p: BuildParams) -> Word:
    """The first pfn after the tables: the boot stack's (xc_linux_build.c vstack_start)."""
    return p.pt_base + 1 + nr_l1(p)


def first_slot(p: BuildParams) -> Word:
    return z3.LShR(p.virt_base, abi.L2_PAGETABLE_SHIFT)


def in_p2m(p: BuildParams, f: Word) -> Bool:
    """Frame ``f`` is one of the domain's pages (its M2P entry names a pfn that maps back)."""
    return z3.And(z3.ULT(p.m2p[f], p.nr_pages), p.p2m[p.m2p[f]] == f)


def owned(p: BuildParams, f: Word) -> Bool:
    return z3.Or(in_p2m(p, f), z3.And(f == p.shared_info, p.shared_info != 0))


def is_l2_pfn(p: BuildParams, pfn: Word) -> Bool:
    return pfn == pt_base(p)


def is_l1_pfn(p: BuildParams, pfn: Word) -> Bool:
    return z3.And(z3.ULT(pt_base(p), pfn), z3.ULT(pfn, pt_end(p)))


def is_pt_pfn(p: BuildParams, pfn: Word) -> Bool:
    return z3.And(z3.ULE(pt_base(p), pfn), z3.ULT(pfn, pt_end(p)))


def pfn_type(p: BuildParams, pfn: Word) -> Word:
    """The type a page of the domain has once the directory is pinned."""
    return z3.If(is_l2_pfn(p, pfn), bv(PGT.l2_page_table),
                 z3.If(is_l1_pfn(p, pfn), bv(PGT.l1_page_table),
                       z3.If(z3.ULT(pfn, p.nr_mapped), bv(PGT.writable_page), bv(PGT.none))))


def l1e(p: BuildParams, pfn: Word) -> Word:
    """The entry mapping ``pfn``: L1_PROT, read-only for the page tables."""
    flags = z3.If(is_pt_pfn(p, pfn), bv(L1_PROT_RO), bv(L1_PROT))
    return (p.p2m[pfn] << abi.PAGE_SHIFT) | flags


def l1_entry(p: BuildParams, k: Word, i: Word) -> Word:
    """Entry ``i`` of the ``k``-th L1: pfn k * 1024 + i if it lies in the region, else 0."""
    pfn = (k << 10) + i
    inside = z3.And(z3.ULT(i, bv(abi.L1_PAGETABLE_ENTRIES)), z3.ULT(pfn, p.nr_mapped))
    return z3.If(inside, l1e(p, pfn), bv(0))


def l2_entry(p: BuildParams, i: Word) -> Word:
    """Entry ``i`` of the page directory: the L1s, then Xen's slots for it, else 0. (Below
    first_slot, ``k`` wraps past every nr_l1 the layout allows: at most 1024.)"""
    k = i - first_slot(p)
    guest = (p.p2m[pt_base(p) + 1 + k] << abi.PAGE_SHIFT) | L2_PROT
    xen = z3.And(z3.ULE(bv(abi.L2_PAGETABLE_FIRST_XEN_SLOT), i),
                 z3.ULT(i, bv(abi.L2_PAGETABLE_ENTRIES)))
    mine = xen_l2_slot(p.xen_l2e(p.domid, i), p.p2m[pt_base(p)], i, p.linear_pt_flags)
    return z3.If(z3.ULT(k, nr_l1(p)), guest, z3.If(xen, mine, bv(0)))


# ----------------------------------------------------------------------------------------------
# The state, field by field.
# ----------------------------------------------------------------------------------------------
def _frame_map(body: Callable[[Word], Any]) -> Any:
    f = z3.BitVec("bf", 32)
    return z3.Lambda([f], body(f))


def owner(p: BuildParams) -> Any:
    return _frame_map(lambda f: z3.If(owned(p, f), p.domid, p.other_owner[f]))


def frame_type(p: BuildParams) -> Any:
    """The domain's pages by their place in the region; the pages Xen shares (shared_info,
    grant frames) writable (share_xen_page_with_guest); every other frame untyped."""
    return _frame_map(lambda f: z3.If(
        in_p2m(p, f), pfn_type(p, p.m2p[f]),
        z3.If(p.xen_written[f], bv(PGT.writable_page), bv(PGT.none))))


def validated(p: BuildParams) -> Any:
    """Every mapped page: the tables by validation, the rest as writable pages; and the
    pages Xen shares (share_xen_page_with_guest sets PGT_validated)."""
    return _frame_map(lambda f: z3.If(in_p2m(p, f), z3.ULT(p.m2p[f], p.nr_mapped),
                                      p.xen_written[f]))


def pinned(p: BuildParams) -> Any:
    return _frame_map(lambda f: z3.And(in_p2m(p, f), is_l2_pfn(p, p.m2p[f])))


def memory(p: BuildParams) -> Any:
    f, i = z3.BitVecs("bmf bmi", 32)
    pfn = p.m2p[f]
    table = z3.If(z3.And(in_p2m(p, f), is_l2_pfn(p, pfn)), l2_entry(p, i),
                  z3.If(z3.And(in_p2m(p, f), is_l1_pfn(p, pfn)),
                        l1_entry(p, pfn - pt_base(p) - 1, i), z3.Select(p.junk, f, i)))
    return z3.Lambda([f, i], table)


def base(p: BuildParams) -> Any:
    v = z3.BitVec("bv", 32)
    return z3.Lambda([v], z3.If(v == p.vcpu, p.p2m[pt_base(p)], bv(0)))


def _vcpu0(p: BuildParams, value: Word) -> Any:
    """vCPU 0's ``value`` under the tools' context, 0 otherwise and for every other vCPU."""
    v = z3.BitVec("bv", 32)
    return z3.Lambda([v], z3.If(z3.And(p.tools_ctxt, v == p.vcpu), value, bv(0)))


def _vcpu0_table(p: BuildParams, value: Word) -> Any:
    v, n = z3.BitVecs("bv bn", 32)
    return z3.Lambda([v, n], z3.If(z3.And(p.tools_ctxt, v == p.vcpu), value, bv(0)))


def _zero1() -> Any:
    return z3.K(W, bv(0))


def _zero2() -> Any:
    return z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], bv(0))


def initial_state(p: BuildParams) -> SymState:
    """The machine right after the builder: one domain laid out, everything else idle."""
    return SymState(
        owner=owner(p), type=frame_type(p), validated=validated(p), pinned=pinned(p),
        mem=memory(p), base=base(p),
        trap_cs=_vcpu0_table(p, bv(abi.FLAT_KERNEL_CS)), trap_addr=_zero2(),
        trap_flags=_zero2(),
        event_cs=_vcpu0(p, bv(abi.FLAT_KERNEL_CS)), event_eip=_zero1(),
        failsafe_cs=_vcpu0(p, bv(abi.FLAT_KERNEL_CS)), failsafe_eip=_zero1(),
        kernel_ss=_vcpu0(p, bv(abi.FLAT_KERNEL_SS)), kernel_sp=_vcpu0(p, p.kernel_sp),
        gdt_frame=_zero2(), gdt_ents=_zero1(), gdt_ref=z3.K(W, z3.BoolVal(False)),
        nr_frames=p.nr_frames, vcpu_domain=p.vcpu_domain, privileged=p.privileged,
        xen_l2e=p.xen_l2e, linear_pt_flags=p.linear_pt_flags, xen_written=p.xen_written,
    )


# ----------------------------------------------------------------------------------------------
# What the builder and the machine guarantee of the parameters.
# ----------------------------------------------------------------------------------------------
def machine(p: BuildParams) -> Bool:
    """At most 2^20 frames (non-PAE PTEs), frame 0 is Xen's, the domain is a guest domain
    (DOMID_FIRST_RESERVED and above name no domain: xen.h) and owns its vCPU 0."""
    return z3.And(z3.ULE(p.nr_frames, bv(MAX_FRAMES)), p.other_owner[bv(0)] == abi.DOMID_XEN,
                  z3.ULT(p.domid, bv(abi.DOMID_FIRST_RESERVED)), p.vcpu_domain[p.vcpu] == p.domid)


def page_allocated(p: BuildParams, pfn: Word) -> Bool:
    """Page ``pfn`` is a valid frame other than 0, and the M2P names ``pfn`` for it."""
    mfn = p.p2m[pfn]
    return z3.And(z3.ULT(bv(0), mfn), z3.ULT(mfn, p.nr_frames), p.m2p[mfn] == pfn)


def allocation(p: BuildParams, pfns: list[int] | None = None) -> Bool:
    """The domain's pages: every pfn below nr_pages is a distinct frame (the M2P inverts the
    p2m), over all pfns, or over ``pfns`` when the caller knows nr_pages (concrete); the
    shared_info frame, if any, is a valid frame other than the domain's pages."""
    if pfns is None:
        pfn = z3.BitVec("pfn", 32)
        pages = z3.ForAll([pfn], z3.Implies(z3.ULT(pfn, p.nr_pages), page_allocated(p, pfn)),
                          patterns=[p.p2m[pfn]])
    else:
        pages = z3.And(*[page_allocated(p, bv(x)) for x in pfns])
    return z3.And(pages, allocation_bounds(p))


def allocation_bounds(p: BuildParams) -> Bool:
    """What the allocation implies without a quantifier: the pages are distinct frames other
    than frame 0, so there are fewer of them than frames (create_domain asks for them from the
    free list); the shared_info frame, if any, is a valid frame other than the domain's pages."""
    si = p.shared_info
    shared = z3.Or(si == 0, z3.And(z3.ULT(si, p.nr_frames), z3.Not(in_p2m(p, si))))
    return z3.And(z3.ULT(p.nr_pages, p.nr_frames), shared)


def p2m_points(formula: Bool) -> list[Word]:
    """The ground pfns at which ``formula`` reads the p2m, once every read of the state's
    lambda-arrays is beta-reduced."""
    points: dict[int, Word] = {}
    seen: set[int] = set()
    todo = [z3.simplify(formula)]
    while todo:
        e = todo.pop()
        if e.get_id() in seen:
            continue
        seen.add(e.get_id())
        if z3.is_quantifier(e):
            todo.append(e.body())
            continue
        if z3.is_select(e) and e.num_args() == 2 and e.arg(0).decl().name() == "p2m" \
                and z3.is_app(e.arg(1)) and not _has_var(e.arg(1)):
            points[e.arg(1).get_id()] = e.arg(1)
        todo += e.children()
    return list(points.values())


def _has_var(e: Word) -> bool:
    return z3.is_var(e) or (z3.is_app(e) and any(_has_var(c) for c in e.children()))


def allocation_at(p: BuildParams, formula: Bool) -> Bool:
    """``allocation`` where ``formula`` needs it: its quantified part instantiated at every pfn
    ``formula`` reads the p2m at. Each instance is a consequence of ``allocation``, so an
    obligation proved from them holds for every allocation; and the obligation becomes
    quantifier-free, which the solver decides quickly and steadily."""
    instances = [z3.Implies(z3.ULT(x, p.nr_pages), page_allocated(p, x))
                 for x in p2m_points(formula)]
    return z3.And(*instances, allocation_bounds(p))


def layout_check(p: BuildParams) -> Check:
    """build_initial_tables' checks by name, in its order (each a BuildError; the branches of
    ``start_of_day/build_initial_tables``):

    * ``aligned``: the virtual base is 4 MB aligned. The model's own check: setup_guest
      (xc_linux_build.c) refuses only a base that is not page aligned ("Guest OS must load
      to a page boundary"), and construct_dom0 (domain_build.c) rounds v_start down to 4 MB;
      the model's tables give the region whole L1s, one per 4 MB slot, as both then do;
    * ``pt_base``: the page directory lies in the region; ``tables_fit``: so do the L1s and
      the boot stack's page after them; ``pages``: the region is no larger than the domain.
      One check of the model (one message); in Xen the search for the number of table
      frames puts the tables and the stack inside the region by construction
      (xc_linux_build.c setup_guest, domain_build.c construct_dom0), and the region must
      fit the domain ("Initial guest OS requires too much space");
    * ``below_hole``: the base is not above HYPERVISOR_VIRT_START; ``room``: the region
      ends at or below it. One check of the model ("would reach the hypervisor hole"). Xen
      3.0.4's x86_32 builders make no such check (setup_pg_tables would write the guest's
      L1s into Xen's directory slots, which alloc_l2_table then overwrites); its x86_64
      construct_dom0 refuses "DOM0 image overlaps with Xen private area".

    ``layout`` is its ``holds``: the conjunction in this order."""
    room = z3.LShR(bv(abi.HYPERVISOR_VIRT_START) - p.virt_base, abi.PAGE_SHIFT)
    return all_of(
        require("aligned", p.virt_base & ((1 << abi.L2_PAGETABLE_SHIFT) - 1) == 0),
        require("pt_base", z3.ULT(p.pt_base, p.nr_mapped)),
        require("tables_fit", z3.ULE(nr_l1(p) + 2, p.nr_mapped - p.pt_base)),
        require("pages", z3.ULE(p.nr_mapped, p.nr_pages)),
        require("below_hole", z3.ULE(p.virt_base, bv(abi.HYPERVISOR_VIRT_START))),
        require("room", z3.ULE(p.nr_mapped, room)),
    )


def layout(p: BuildParams) -> Bool:
    """builder.py's checks: a 4 MB aligned base; the directory, the L1s and the boot stack's
    page inside the region; no more than the domain's pages; nothing at or above
    HYPERVISOR_VIRT_START (each a BuildError; by name: ``layout_check``)."""
    return layout_check(p).holds


def xen_page(p: BuildParams, f: Word) -> Bool:
    """Frame ``f``, if the hypervisor writes into it, is a page of the domain below its page
    tables (a ring a back end maps: build_domain puts the store and console frames there), or
    no page of the domain and on no free list (a Xen heap page Xen shares: shared_info, a
    grant frame)."""
    return z3.Implies(p.xen_written[f], z3.If(
        in_p2m(p, f), z3.ULT(p.m2p[f], pt_base(p)),
        z3.Select(owner(p), f) != bv(FREE_FRAME_OWNER & 0xFFFFFFFF)))


def shared_info_written(p: BuildParams) -> Bool:
    """The domain's shared_info frame, if it has one, is written by Xen (arch_domain_create)."""
    return z3.Implies(p.shared_info != 0, p.xen_written[p.shared_info])


def xen_pages(p: BuildParams, frames: list[int] | None = None) -> Bool:
    """What the builder and Xen make of the frames the hypervisor writes into: ``xen_page``
    for every frame (or for ``frames``, when the caller knows the machine: concrete), and
    shared_info among them."""
    if frames is None:
        f = z3.BitVec("xf", 32)
        each = z3.ForAll([f], xen_page(p, f))
    else:
        each = z3.And(*[xen_page(p, bv(x)) for x in frames])
    return z3.And(each, shared_info_written(p))


def constraints(p: BuildParams, pfns: list[int] | None = None) -> Bool:
    return z3.And(machine(p), allocation(p, pfns), layout(p), xen_pages(p))


# ----------------------------------------------------------------------------------------------
# The ELF builder's bootstrap region (refmodel/elfbuild.py build_domain, refmodel/builder.py
# bootstrap_layout; tools/libxc/xc_linux_build.c setup_guest, xen/arch/x86/domain_build.c
# construct_dom0): the kernel from pfn 0, then the p2m list, start_info, the store and console
# pages (``tools``: xc_linux_build.c; construct_dom0 has none), the page tables, the boot stack;
# the region rounded up to 4 MB with at least 512 KB after the stack; the number of table
# frames found by the builders' exhaustive search.
# ----------------------------------------------------------------------------------------------
_PADDING_PAGES = (512 << 10) >> abi.PAGE_SHIFT
_SLOT_PAGES = 1 << (abi.L2_PAGETABLE_SHIFT - abi.PAGE_SHIFT)


def _wide(x: Word) -> Word:
    """A 32-bit value as 64 bits: build_domain computes in Python integers, and every value
    here stays far below 2^64, so 64-bit arithmetic is exact."""
    return z3.ZeroExt(32, x)


def _ceil_div(x: Word, shift: int) -> Word:
    return z3.LShR(x + ((1 << shift) - 1), shift)


def _round_4mb(x: Word) -> Word:
    return _ceil_div(x, 10) << 10


def _w64(x: int) -> Word:
    return z3.BitVecVal(x, 64)


def region_pages(pt_pfn: Word, nr_pt: Word) -> Word:
    """The region's pages for ``nr_pt`` table frames from ``pt_pfn``: the boot stack follows
    them; v_end is the stack's end rounded up to 4 MB, and 4 MB more if less than 512 KB would
    follow the stack (setup_guest's loop body)."""
    stack_end = pt_pfn + nr_pt + 1
    v_end = _round_4mb(stack_end)
    return z3.If(z3.ULT(v_end - stack_end, _w64(_PADDING_PAGES)), v_end + _SLOT_PAGES, v_end)


def tables_needed(pt_pfn: Word, nr_pt: Word) -> Word:
    """1 + NR(v_start, v_end, L2_PAGETABLE_SHIFT): the directory and one L1 per 4 MB slot of
    the region ``nr_pt`` frames give (v_start is 4 MB aligned)."""
    return 1 + z3.LShR(region_pages(pt_pfn, nr_pt), 10)


def table_search(pt_pfn: Word) -> Word:
    """The builders' search for the number of table frames, in closed form: with ``need`` =
    ``tables_needed``, need(need(2)). The search tries 2, 3, ... and stops at the first n with
    need(n) <= n; need never decreases and, for a directory below ``PT_PFN_LIMIT``, grows by
    at most one from 2 to need(2), so the answer is need(2) or need(2) + 1 = need(need(2))
    (the obligation ``elf_layout_fits("search")`` proves it is the search's answer)."""
    return tables_needed(pt_pfn, tables_needed(pt_pfn, _w64(2)))


# The hole's first pfn: no region below the hole has more pages, so every accepted image's
# directory pfn is below it (the obligation ``elf_layout_fits("closed")``).
PT_PFN_LIMIT = abi.HYPERVISOR_VIRT_START >> abi.PAGE_SHIFT


def search_facts(pt_pfn: Word, nr_pt: Word) -> list[Bool]:
    """What the search obligations prove of every accepted image's tables: its directory below
    ``PT_PFN_LIMIT`` (``closed``); ``nr_pt`` below it too and a fixed point of
    ``tables_needed`` (``search``); the region leaving 512 KB after the boot stack
    (``padding``). The ``limits`` and ``placed`` obligations take them as hypotheses: without
    them the solver rederives them through three nested adder circuits, for minutes."""
    limit = _w64(PT_PFN_LIMIT)
    return [z3.ULT(pt_pfn, limit), z3.ULT(nr_pt, limit), tables_needed(pt_pfn, nr_pt) == nr_pt,
            z3.ULE(pt_pfn + nr_pt + 1 + _PADDING_PAGES, region_pages(pt_pfn, nr_pt))]


@dataclass(frozen=True)
class ElfLayout:
    """Where build_domain puts things, in pfns of the region (64-bit terms); ``nr_mapped`` is
    the region's size, ``nr_pt`` its table frames (the directory and ``nr_pt - 1`` L1s)."""

    kernel_pages: Word
    p2m_pfn: Word
    start_info_pfn: Word
    store_pfn: Word  # == start_info_pfn + 1 with ``tools``; the console page follows
    pt_pfn: Word
    nr_pt: Word
    stack_pfn: Word
    nr_mapped: Word


def elf_layout(virt_base: Word, kernel_end: Word, nr_pages: Word, tools: Bool) -> ElfLayout:
    """setup_guest's arithmetic (``tools``) or construct_dom0's. The number of table frames is
    the search's answer in closed form (``table_search``)."""
    kernel_pages = _ceil_div(_wide(kernel_end) - _wide(virt_base), abi.PAGE_SHIFT)
    p2m_pfn = kernel_pages
    start_info_pfn = p2m_pfn + _ceil_div(_wide(nr_pages), 10)  # 4-byte entries, 1024 a page
    pt_pfn = start_info_pfn + z3.If(tools, _w64(3), _w64(1))
    nr_pt = table_search(pt_pfn)
    return ElfLayout(kernel_pages, p2m_pfn, start_info_pfn, start_info_pfn + 1, pt_pfn, nr_pt,
                     pt_pfn + nr_pt, region_pages(pt_pfn, nr_pt))


def elf_requirements(virt_base: Word, kernel_end: Word, nr_pages: Word, lay: ElfLayout
                     ) -> Check:
    """The checks parse_image and build_domain (refmodel/elfbuild.py) make before building,
    by name and in the model's order, for an image [start, ``kernel_end``) with its entry
    point (the start is VIRT_BASE or above, else ``image_above_base`` fails):

    * ``aligned``: VIRT_BASE is 4 MB aligned (elfbuild.py _identify). The model's own check,
      as ``layout_check``'s: setup_guest (xc_linux_build.c) asks only for page alignment,
      construct_dom0 (domain_build.c) rounds v_start down to 4 MB;
    * ``image_above_base``: the image, with its entry point, lies above VIRT_BASE
      (parseelfimage in xen/common/elf.c and tools/libxc/xc_load_elf.c: "ELF start or
      entries are out of bounds" when v_start > kernstart or the entry is outside the image;
      the model: _identify, "lies outside [VIRT_BASE, HYPERVISOR_VIRT_START)");
    * ``image_below_hole``: the image ends at or below HYPERVISOR_VIRT_START (_identify, the
      same message; the model's own, as ``layout_check``'s ``room``);
    * ``pages``: the region is no larger than the domain (setup_guest and construct_dom0:
      "Initial guest OS requires too much space"; the model's bootstrap_layout; an image
      that alone spans more than the domain's memory is refused earlier, by parse_image);
    * ``room``: the region ends at or below HYPERVISOR_VIRT_START (build_domain: "would
      reach the hypervisor hole"; a region that wraps past 4 GB is refused earlier, by
      bootstrap_layout, as setup_guest's increment_ulong does: "Value wrapped to zero").

    Not here, as the model does not check them: x86_32 construct_dom0 also refuses an
    initial domain below 1 GB ("Initial loading isn't allowed to lowest 1GB of memory"),
    and parseelfimage accepts an entry point at the image's end, which _identify refuses.

    ``elf_accepts`` is its ``holds``."""
    top = _wide(virt_base) + (lay.nr_mapped << abi.PAGE_SHIFT)
    return all_of(
        require("aligned", virt_base & ((1 << abi.L2_PAGETABLE_SHIFT) - 1) == 0),
        require("image_above_base", z3.ULT(virt_base, kernel_end)),
        require("image_below_hole", z3.ULE(kernel_end, bv(abi.HYPERVISOR_VIRT_START))),
        require("pages", z3.ULE(lay.nr_mapped, _wide(nr_pages))),
        require("room", z3.ULE(top, _w64(abi.HYPERVISOR_VIRT_START))),
    )


def elf_accepts(virt_base: Word, kernel_end: Word, nr_pages: Word, lay: ElfLayout) -> Bool:
    """The checks parse_image and build_domain make before building: VIRT_BASE 4 MB aligned,
    the image (with its entry point) inside [VIRT_BASE, HYPERVISOR_VIRT_START), the region no
    larger than the domain ("Initial guest OS requires too much space") and below the hole
    (by name: ``elf_requirements``)."""
    return elf_requirements(virt_base, kernel_end, nr_pages, lay).holds


def elf_check(virt_base: Word, kernel_end: Word, nr_pages: Word, tools: Bool) -> Check:
    """build_domain's branches (``start_of_day/build_domain``): ``elf_requirements`` for the
    layout ``tools`` gives, the success split by builder: ``tools``, a domain the tools build
    (xc_linux_build.c setup_guest: the store and console pages after start_info), or
    ``dom0``, the initial domain (domain_build.c construct_dom0: none)."""
    req = elf_requirements(virt_base, kernel_end, nr_pages,
                           elf_layout(virt_base, kernel_end, nr_pages, tools))
    passes = (("tools", z3.And(tools, req.holds)), ("dom0", z3.And(z3.Not(tools), req.holds)))
    return Check(req.holds, passes, req.fails)


def elf_layout_fits(part: str) -> z3.Solver:
    """Unsatisfiable iff the ELF builder's layout has property ``part``:

    * ``limits``: for every image and size build_domain accepts, the region it asks
      build_initial_tables for meets the builder's limits (``layout``), with the page
      directory where build_domain's own arithmetic puts it and exactly the table frames the
      search counted, so the initial state is one ``initial_state`` describes;
    * ``placed``: for every accepted image, the kernel, the p2m list, start_info, the store
      and console pages lie in that order in ordinary pages below the page directory, the boot
      stack is the page after the tables and at least 512 KB of the region follow it;
    * ``closed``: every accepted image's directory pfn is below ``PT_PFN_LIMIT`` and its
      number of table frames is ``table_search``'s;
    * ``search``: for every directory pfn below ``PT_PFN_LIMIT``, ``table_search``'s answer is
      the first n from 2 up with tables_needed(n) <= n, the answer of the builders'
      exhaustive search; it is below the limit and tables_needed(n) == n;
    * ``padding``: for every directory pfn and number of tables below the limit,
      ``region_pages`` leaves 512 KB after the boot stack.

    ``limits`` and ``placed`` assume ``search_facts`` of the image's tables, which
    ``closed``, ``search`` and ``padding`` prove for every accepted image."""
    reset_fresh()
    if part in ("search", "padding"):
        return _search_lemma(part)
    virt_base, kernel_end, nr_pages = z3.BitVecs("virt_base kernel_end nr_pages", 32)
    tools = z3.Bool("tools")
    lay = elf_layout(virt_base, kernel_end, nr_pages, tools)
    p = symbolic_params().evolve(virt_base=virt_base, nr_pages=nr_pages,
                                 nr_mapped=z3.Extract(31, 0, lay.nr_mapped),
                                 pt_base=z3.Extract(31, 0, lay.pt_pfn))
    goal = {
        "limits": z3.And(layout(p), _wide(pt_base(p)) == lay.pt_pfn,
                         _wide(nr_l1(p)) + 1 == lay.nr_pt),
        "placed": z3.And(z3.ULE(lay.kernel_pages, lay.p2m_pfn),
                         z3.ULT(lay.p2m_pfn, lay.start_info_pfn),
                         z3.Implies(tools, lay.store_pfn + 1 < lay.pt_pfn),
                         z3.ULT(lay.start_info_pfn, lay.pt_pfn),
                         lay.stack_pfn == lay.pt_pfn + lay.nr_pt,
                         z3.ULE(lay.stack_pfn + 1 + _PADDING_PAGES, lay.nr_mapped)),
        "closed": z3.And(z3.ULT(lay.pt_pfn, _w64(PT_PFN_LIMIT)),
                         lay.nr_pt == table_search(lay.pt_pfn)),
    }[part]
    facts = [] if part == "closed" else search_facts(lay.pt_pfn, lay.nr_pt)
    solver = z3.Solver()
    solver.add(elf_accepts(virt_base, kernel_end, nr_pages, lay), z3.ULT(0, nr_pages), *facts,
               z3.Not(goal))
    solver.add(z3.BitVec("elf nr_mapped", 64) == lay.nr_mapped,
               z3.BitVec("elf pt_pfn", 64) == lay.pt_pfn, z3.BitVec("elf nr_pt", 64) == lay.nr_pt)
    return solver


def _search_lemma(part: str) -> z3.Solver:
    """``search`` and ``padding`` (``elf_layout_fits``): over a free directory pfn (and number
    of tables) below ``PT_PFN_LIMIT``."""
    pt, n, m = z3.BitVecs("pt_pfn nr_pt smaller_nr_pt", 64)
    limit = _w64(PT_PFN_LIMIT)
    if part == "search":
        a = table_search(pt)
        goal = z3.And(z3.ULE(_w64(2), a), z3.ULT(a, limit), tables_needed(pt, a) == a,
                      z3.Implies(z3.And(z3.ULE(_w64(2), m), z3.ULT(m, a)),
                                 z3.UGT(tables_needed(pt, m), m)))
        bounds = [z3.ULT(pt, limit)]
    else:
        goal = z3.ULE(pt + n + 1 + _PADDING_PAGES, region_pages(pt, n))
        bounds = [z3.ULT(pt, limit), z3.ULT(n, limit)]
    solver = z3.Solver()
    solver.add(*bounds, z3.Not(goal))
    return solver


# ----------------------------------------------------------------------------------------------
# Event channels of the new domain (spec.event_spec's state): event_channel.c evtchn_init gives
# a domain its first bucket with port 0 ECS_RESERVED; every other port is free, no VIRQ is
# bound. Alone on the machine (the tools' store and console channels, bound to a backend
# domain with ``devices``, are not described here).
# ----------------------------------------------------------------------------------------------
def initial_events(p: BuildParams, nvcpus: Word) -> EvtState:
    d, port = z3.BitVecs("ed ep", 32)
    v, q = z3.BitVecs("ev eq", 32)
    zero2 = z3.Lambda([d, port], bv(0))
    return EvtState(
        state=z3.Lambda([d, port], z3.If(port == 0, bv(abi.ECS_RESERVED), bv(abi.ECS_FREE))),
        rdom=zero2, rport=zero2, notify=zero2, virq=zero2,
        pending=z3.Array("evt.pending", W, W, z3.BoolSort()),
        mask=z3.Array("evt.mask", W, W, z3.BoolSort()),
        nports=z3.K(W, bv(abi.EVTCHNS_PER_BUCKET)),
        virq_port=z3.Lambda([d, v, q], bv(0)),
        exists=z3.Lambda([d], d == p.domid), nvcpus=z3.K(W, nvcpus), privileged=p.privileged,
    )


def events_satisfy(inv: EvtInvariant) -> z3.Solver:
    """Unsatisfiable iff the new domain's event state satisfies ``inv`` for every domain id
    and number of vCPUs (1 to MAX_VIRT_CPUS)."""
    reset_fresh()
    p = symbolic_params()
    nvcpus = z3.BitVec("nr_vcpus", 32)
    solver = z3.Solver()
    solver.add(z3.ULT(p.domid, bv(abi.DOMID_FIRST_RESERVED)), z3.ULT(0, nvcpus),
               z3.ULE(nvcpus, abi.MAX_VIRT_CPUS))
    solver.add(z3.Not(inv.check(SymEvtView(initial_events(p, nvcpus), witness=True))))
    return solver


# ----------------------------------------------------------------------------------------------
# Obligations.
# ----------------------------------------------------------------------------------------------
def satisfies(inv: Invariant, p: BuildParams | None = None) -> z3.Solver:
    """Unsatisfiable iff every state the builder can make satisfies ``inv``: the constraints
    (``allocation`` instantiated where the goal needs it), and the invariant's negation with its
    quantifiers as named witnesses."""
    reset_fresh()
    p = symbolic_params() if p is None else p
    s = initial_state(p)
    view = SymView(s, witness=True)
    goal = z3.And(z3.Not(inv.check(view)), *named_facts(p, s, view.witnesses),
                  *xen_pages_at(p, view.witnesses))
    solver = z3.Solver()
    solver.add(machine(p), layout(p), allocation_at(p, goal), goal)
    return solver


def xen_pages_at(p: BuildParams, witnesses: list[tuple[str, Word]]) -> list[Bool]:
    """``xen_pages`` where a goal needs it: at each witness frame (instances of its
    quantified part, as ``allocation_at`` takes them), and shared_info's part."""
    return [*[xen_page(p, w) for kind, w in witnesses if kind == "frame"],
            shared_info_written(p)]


def named_facts(p: BuildParams, s: SymState, witnesses: list[tuple[str, Word]]) -> list[Bool]:
    """Definitions that name what a counterexample is about, so that the printed model shows
    it: the layout, and each witness frame's pfn, owner and type (they constrain nothing)."""
    facts = [z3.BitVec("pt_end", 32) == pt_end(p), z3.BitVec("nr_l1", 32) == nr_l1(p)]
    for kind, w in witnesses:
        if kind == "frame":
            facts += [z3.BitVec(f"pfn of {w}", 32) == p.m2p[w],
                      z3.BitVec(f"owner of {w}", 32) == s.owner[w],
                      z3.BitVec(f"type of {w}", 32) == s.type[w]]
    return facts


def obligation_list() -> list[tuple[str, Callable[[], z3.Solver]]]:
    """(name, solver factory): the builder's initial state satisfies each invariant."""
    def factory(inv: Invariant) -> Callable[[], z3.Solver]:
        return lambda: satisfies(inv)

    return [*[(f"start_of_day: the domain builder's initial state satisfies {inv.label}",
               factory(inv)) for inv in proof_invariants()],
            ("start_of_day: the ELF builder's region meets the domain builder's limits",
             lambda: elf_layout_fits("limits")),
            ("start_of_day: the ELF builder puts the kernel, p2m list, start_info, store and "
             "console pages below the page tables and the boot stack after them, with 512 KB "
             "of the region after it", lambda: elf_layout_fits("placed")),
            ("start_of_day: the ELF builder puts its page directory below the hole's first pfn "
             "and counts its table frames by the search's closed form",
             lambda: elf_layout_fits("closed")),
            ("start_of_day: the ELF builder's number of page-table frames is the answer of "
             "Xen's exhaustive search", lambda: elf_layout_fits("search")),
            ("start_of_day: the ELF builder's region leaves 512 KB after the boot stack for "
             "any tables below the hole's first pfn", lambda: elf_layout_fits("padding")),
            *[(f"start_of_day: a new domain's event channels satisfy {inv.id}",
               events_factory(inv)) for inv in EVT_INVARIANTS]]


def events_factory(inv: EvtInvariant) -> Callable[[], z3.Solver]:
    return lambda: events_satisfy(inv)


# ----------------------------------------------------------------------------------------------
# The invariants together are satisfiable: a concrete machine the builder makes satisfies all
# of them at once, with tables in use (so no invariant holds only because nothing is in use).
# ----------------------------------------------------------------------------------------------
def concrete_params(nr_frames: int, domid: int, p2m: list[int], nr_mapped: int,
                    virt_base: int, pt_base: int, shared_info: int = 0,
                    tools_ctxt: bool = True, xen_written: list[int] | None = None) -> BuildParams:
    """Parameters with every value given: the frames not in ``p2m`` (nor shared_info) are
    Xen's, non-table memory is 0, the domain is vCPU 0's and unprivileged, and Xen's directory
    slots are 0. The hypervisor writes into ``xen_written`` (by default shared_info alone)."""
    p2m_arr, m2p_arr = z3.K(W, bv(0)), z3.K(W, bv(0xFFFFFFFF))
    for pfn, mfn in enumerate(p2m):
        p2m_arr, m2p_arr = z3.Store(p2m_arr, bv(pfn), bv(mfn)), z3.Store(m2p_arr, bv(mfn), bv(pfn))
    written = z3.K(W, z3.BoolVal(False))
    for mfn in ([shared_info] if shared_info else []) if xen_written is None else xen_written:
        written = z3.Store(written, bv(mfn), z3.BoolVal(True))
    return BuildParams(
        nr_frames=bv(nr_frames), domid=bv(domid), vcpu=bv(0), nr_pages=bv(len(p2m)),
        nr_mapped=bv(nr_mapped), virt_base=bv(virt_base), pt_base=bv(pt_base),
        tools_ctxt=z3.BoolVal(tools_ctxt), kernel_sp=bv(virt_base), p2m=p2m_arr, m2p=m2p_arr,
        shared_info=bv(shared_info), xen_written=written,
        other_owner=z3.K(W, bv(abi.DOMID_XEN)), junk=_zero2(),
        vcpu_domain=z3.K(W, bv(domid)), privileged=z3.K(W, z3.BoolVal(False)),
        xen_l2e=lambda d, i: bv(0), linear_pt_flags=bv(0),
    )


# One domain (1) of 6 pages on a machine of 16 frames, the region 5 pages at 3 GB: pfns 0-1
# ordinary, 2 the directory, 3 the L1, 4 the boot stack; shared_info in frame 12; the
# hypervisor writes into shared_info and into pfn 1 (frame 4), as a back end does into a ring.
WITNESS = dict(nr_frames=16, domid=1, p2m=[9, 4, 7, 5, 11, 6], nr_mapped=5,
               virt_base=0xC0000000, pt_base=2, shared_info=12, xen_written=[12, 4])


def in_use(s: SymState, p: BuildParams) -> Bool:
    """The witness is not trivial: vCPU 0 runs on a pinned directory whose first guest slot
    names an L1 in use, which maps pfn 0 writable."""
    l2 = s.base[p.vcpu]
    l2e = z3.Select(s.mem, l2, first_slot(p))
    l1 = z3.LShR(l2e, abi.PAGE_SHIFT)
    pte = z3.Select(s.mem, l1, bv(0))
    return z3.And(l2 != 0, s.pinned[l2], s.type[l1] == int(PGT.l1_page_table), s.validated[l1],
                  pte & (abi._PAGE_PRESENT | abi._PAGE_RW) == abi._PAGE_PRESENT | abi._PAGE_RW)


def witness_form(fact: Bool) -> Bool:
    """A universally quantified ``fact`` with its bound variables as fresh free constants: under
    the negation of an obligation that is the same statement, and quantifier-free."""
    if not (z3.is_quantifier(fact) and fact.is_forall()):
        return fact
    names = [fresh_name(fact.var_name(k)) for k in range(fact.num_vars())]
    consts = [z3.Const(n, fact.var_sort(k)) for k, n in enumerate(names)]
    return z3.substitute_vars(fact.body(), *reversed(consts))


def invariants_satisfiable(state_facts: Callable[[SymState], tuple[Bool, ...]]) -> z3.Solver:
    """Unsatisfiable iff the witness machine meets the builder's constraints, the standing
    facts ``state_facts`` every obligation assumes of a state (and the event obligations'
    standing assumptions), and every invariant, the event-channel ones included (the proof
    parts are their conjuncts), in the form the obligations assume them, with tables in use:
    the invariants are not vacuous. A decidable question: the witness is concrete and every
    quantifier is a witness constant."""
    reset_fresh()
    p = concrete_params(**WITNESS)  # type: ignore[arg-type]
    s = initial_state(p)
    evts = initial_events(p, bv(1))
    invs = [inv.check(SymView(s, witness=True)) for inv in INVARIANTS]
    invs += [inv.check(SymEvtView(evts, witness=True)) for inv in EVT_INVARIANTS]
    facts = [witness_form(f) for f in state_facts(s)]
    facts += [witness_form(f) for f in event_machine(evts, p.domid).children()]
    solver = z3.Solver()
    solver.add(z3.Not(z3.And(constraints(p, list(range(len(WITNESS["p2m"])))),  # type: ignore
                             *facts, in_use(s, p), *invs)))
    return solver

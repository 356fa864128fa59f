"""Transition specifications of ``memory_op``'s reservation changes: a domain gives a frame back
to the heap, or receives one from it (the balloon).

Rules from xen/common/memory.c of Xen 3.0.4: decrease_reservation removes each extent with
guest_remove_page (the frame must be the domain's: get_page; its pin goes with its type
reference; its allocation reference goes), and the frame returns to the heap only when its last
reference goes (page_alloc.c free_domheap_pages from put_page), scrubbed; increase_reservation
and populate_physmap take frames from the heap (alloc_domheap_pages), which holds only frames
that nothing references. One extent of order 0 per call, as one step of the batch; the
pseudo-physical bookkeeping (M2P, the guest's p2m) is not part of this state.

In the spec's terms, "its last reference goes" is: no table in use maps the frame, no vCPU's
base pointer or GDT names it, it is not pinned, not a page table in use, not an installed GDT
frame (``unreferenced``). Whether a frame returns to the heap is left to a choice, allowed only
when it is unreferenced: the model frees it exactly then (INV-COUNT checks the model's counts).

Departure from Xen 3.0.4: decrease_reservation refuses a frame the hypervisor writes into on
the domain's behalf (``spec_decrease_reservation``; INV-XENPAGE), where 3.0.4 drops its
allocation reference and keeps the page out of the heap. A frame of the free list is never one
Xen writes into (INV-XENPAGE), so increase_reservation needs no check of its own.
"""

from __future__ import annotations

from typing import Any

import z3

from xenspec.spec import abi
from xenspec.spec.branches import all_of, require
from xenspec.spec.invariants import FREE_FRAME_OWNER
from xenspec.spec.mm_spec import (
    Transition,
    drop_references,
    entry,
    fresh_bool,
    in_use,
    mfn_valid,
    pick,
)
from xenspec.spec.pagetable import PGT, pte_get_pfn, pte_present
from xenspec.spec.symbolic import SymState, bv, forall

Word = Any
Bool = Any
FREE = bv(FREE_FRAME_OWNER & 0xFFFFFFFF)


def unreferenced(s: SymState, f: Word) -> Bool:
    """Nothing in ``s`` references frame ``f``."""

    def not_mapped(t: Word, i: Word) -> Bool:
        e = entry(s, t, i)
        in_l1 = z3.And(in_use(s, t, PGT.l1_page_table), z3.ULT(i, bv(abi.L1_PAGETABLE_ENTRIES)))
        in_l2 = z3.And(in_use(s, t, PGT.l2_page_table),
                       z3.ULT(i, bv(abi.L2_PAGETABLE_FIRST_XEN_SLOT)))
        return z3.Implies(z3.And(mfn_valid(s, t), z3.Or(in_l1, in_l2), pte_present(e)),
                          pte_get_pfn(e) != f)

    return z3.And(
        z3.Not(s.pinned[f]), z3.Not(s.gdt_ref[f]),
        z3.Not(in_use(s, f, PGT.l1_page_table)), z3.Not(in_use(s, f, PGT.l2_page_table)),
        forall(("frame", "index"), not_mapped),
        forall(("vcpu",), lambda v: s.base[v] != f),
        forall(("vcpu", "index"), lambda v, k: z3.Implies(
            z3.ULT(k, bv(abi.GDT_PAGES)), z3.Select(s.gdt_frame, v, k) != f)),
    )


def on_free_list(s: SymState, f: Word) -> Bool:
    """alloc_domheap_pages takes frames of the heap's free list only."""
    return s.owner[f] == FREE


def xen_page_removable(s: SymState, f: Word) -> Bool:
    """A frame the hypervisor writes into on the domain's behalf is refused (INV-XENPAGE)."""
    return z3.Not(s.xen_written[f])


def spec_decrease_reservation(s: SymState, v: Word, f: Word) -> Transition:
    """XENMEM_decrease_reservation of frame ``f`` by its own domain: the pin goes (which may
    de-validate tables, as an unpin does); the frame returns to the heap, scrubbed and untyped,
    if nothing references it any more, and otherwise stays the domain's. A frame the
    hypervisor writes into on the domain's behalf (shared_info, a grant frame, a ring a back
    end maps) is refused and left as it was: in Xen 3.0.4 guest_remove_page drops such a Xen
    heap page's allocation reference and reports success, but the page never returns to the
    domain heap (page_alloc.c free_domheap_pages only takes a Xen heap frame off the domain's
    list) and keeps Xen's writable type reference; refusing it outright is stricter,
    and leaves every frame Xen writes a writable frame of its domain."""
    d = s.vcpu_domain[v]
    # guest_remove_page's checks, in order: mfn_valid, get_page (the frame is the domain's),
    # then (a departure, above) not a frame Xen writes into.
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                require("xen_page", xen_page_removable(s, f)))
    choice_d, mid = drop_references(s.evolve(pinned=z3.Store(s.pinned, f, False)))
    freed = fresh_bool("freed")
    x, i = z3.BitVecs("x i", 32)
    gone = mid.evolve(
        owner=z3.Store(mid.owner, f, FREE),
        type=z3.Store(mid.type, f, bv(int(PGT.none))),
        validated=z3.Store(mid.validated, f, False),
        mem=z3.Lambda([x, i], z3.If(x == f, bv(0), z3.Select(mid.mem, x, i))),
    )
    new = pick(freed, gone, mid)
    choice = z3.And(choice_d, z3.Implies(freed, unreferenced(mid, f)))
    return Transition(ok.holds, new, bv(1), bv(0), choice, check=ok)  # the extents done


def spec_increase_reservation(s: SymState, v: Word, f: Word) -> Transition:
    """XENMEM_increase_reservation / populate_physmap: the heap gives the caller's domain frame
    ``f``, which must be on the free list; it arrives untyped, unpinned, with any contents."""
    d = s.vcpu_domain[v]
    # alloc_domheap_pages gives a frame of the heap (``mfn_valid``) off its free list.
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("free_list", on_free_list(s, f)))
    new = s.evolve(owner=z3.Store(s.owner, f, d),
                   type=z3.Store(s.type, f, bv(int(PGT.none))),
                   validated=z3.Store(s.validated, f, False),
                   pinned=z3.Store(s.pinned, f, False))
    return Transition(ok.holds, new, bv(1), bv(0), check=ok)

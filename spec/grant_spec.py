"""Transition specifications of the grant-table operations that change the symbolic state.

The rules are those of xen/common/grant_table.c (Xen 3.0.4: __gnttab_map_grant_ref,
__gnttab_unmap_grant_ref, __gnttab_copy) and xen/arch/x86/mm.c (create_grant_host_mapping,
destroy_grant_host_mapping), over the state of ``spec.symbolic``: a grantee's handles
(``mt_*``), the ghost ``gnt_slot`` naming the handle a grant PTE belongs to, and each domain's
shared grant frames (``gnt_table``), whose entries are read bit for bit from ``mem``
(struct grant_entry: flags in the low half of word 2r, the domid in its high half, the frame
in word 2r + 1 of frame r / 512).

Simplifications, each making the spec stricter than Xen where a guest breaks the protocol of
grant_table.h: the spec reads the granter's entry on every map (Xen reads it only for a first
pin or a first writable pin, and then maps the frame it pinned first), so a map is allowed
only while the entry permits it. The model does as Xen does, so a map of an entry pinned
already that its granter has rewritten since is an open disagreement (the spec refuses what
the model and Xen do: tests/test_branches.py, an expected failure): stating Xen's rule needs
the active grant entries (who pinned a reference, its frame, its pin counts) in the state.
Device mappings (GNTMAP_device_map) hold references outside
this state and are checked on concrete states only (INV-COUNT); a copy changes nothing here
but the destination frame's contents, which must take the writable type. setup_table,
query_size and dump_table change no state.
"""

from __future__ import annotations

from typing import Any

import z3

from xenspec.spec import abi
from xenspec.spec.branches import PASS, Check, all_of, cases, require
from xenspec.spec.desc import _and, _or  # connectives for ints and bit-vectors alike
from xenspec.spec.mm_spec import (
    Transition,
    can_take_type,
    entry,
    in_use_check,
    mfn_valid,
    pick,
    retype_writable,
    set_entry,
)
from xenspec.spec.pagetable import PGT, pte_get_pfn, pte_present, pte_writable
from xenspec.spec.symbolic import SymState, bv, fresh_name

Word = Any
Bool = Any
GRANT_PTE_FLAGS = abi.GRANT_PTE_FLAGS  # mm.c: present, accessed, dirty


def grant_entry(s: SymState, g: Word, ref: Word) -> tuple[Word, Word, Word]:
    """(flags, domid, frame) of entry ``ref`` of domain ``g``'s shared table."""
    frame = z3.Select(s.gnt_table, g, z3.LShR(ref, 9))
    word = (ref & 511) * 2
    head = entry(s, frame, word)
    return head & 0xFFFF, z3.LShR(head, 16), entry(s, frame, word + 1)


def permits(sflags: Word, sdomid: Word, d: Word, readonly: Bool) -> Bool:
    """The granter's entry lets domain ``d`` map it: GTF_permit_access to ``d``, and not
    GTF_readonly for a writable map ("Attempt to write-pin a r/o grant entry"). Written once
    for ints (refmodel/grant.py) and bit-vectors, as spec.desc's rule is."""
    return _and(sflags & abi.GTF_type_mask == abi.GTF_permit_access, sdomid == d,
                _or(readonly, sflags & abi.GTF_readonly == 0))


def granter_owns(s: SymState, t: Word, g: Word) -> Bool:
    """get_page(frame, rd): the granted frame is machine RAM of the granting domain (a domain,
    found by its id); a non-PAE PTE holds 20 frame bits."""
    return z3.And(granter_found(g), frame_owned_check(s, t, g).holds)


def granter_found(g: Word) -> Bool:
    """find_domain_by_id(dom): no DOMID_* special names a domain (a domain id that names none
    owns no frame, which ``frame_owned_check`` refuses)."""
    return z3.ULT(g, bv(abi.DOMID_FIRST_RESERVED))


def frame_owned_check(s: SymState, t: Word, g: Word) -> Check:
    """get_page(frame, rd) with its named conditions: ``frame`` is RAM a PTE can name,
    ``frame_owner`` says it is the granter's."""
    return all_of(require("frame", z3.And(mfn_valid(s, t), z3.ULT(t, bv(1 << 20)))),
                  require("frame_owner", s.owner[t] == g))


def permits_check(sflags: Word, sdomid: Word, d: Word, readonly: Bool) -> Check:
    """``permits`` with its two named conditions, in __gnttab_map_grant_ref's order: "Bad
    flags or dom" (``permit``), then "Attempt to write-pin a r/o grant entry"
    (``readonly``; not a condition of an access known to read only, a copy's source)."""
    if readonly is True:
        return require("permit", permits(sflags, sdomid, d, z3.BoolVal(True)))
    return all_of(require("permit", permits(sflags, sdomid, d, z3.BoolVal(True))),
                  require("readonly", permits(sflags, sdomid, d, readonly)))


def grant_pte_slot(s: SymState, v: Word, addr: Word, by_pte: bool) -> tuple[Check, Word, Word]:
    """(ok, L1 frame, index) of the PTE a host mapping names: by virtual address through the
    vCPU's page directory (the L2 slot must name an L1 in use), or with GNTMAP_contains_pte
    (``by_pte``) by the entry's machine address in an L1 in use of the caller's (x86 mm.c,
    create_grant_va_mapping / create_grant_pte_mapping and their destroy_ forms)."""
    if by_pte:
        l1 = z3.LShR(addr, abi.PAGE_SHIFT)
        ok = all_of(require("pte_aligned", (addr & 3) == 0), require("l1_mfn", mfn_valid(s, l1)),
                    require("l1_owner", s.owner[l1] == s.vcpu_domain[v]),
                    in_use_check(s, l1, PGT.l1_page_table, "l1"))
        return ok, l1, z3.LShR(addr & (abi.PAGE_SIZE - 1), 2)
    base = s.base[v]
    l2e = entry(s, base, z3.LShR(addr, abi.L2_PAGETABLE_SHIFT))
    l1 = pte_get_pfn(l2e)
    ok = all_of(require("guest_va", z3.ULT(addr, bv(abi.HYPERVISOR_VIRT_START))),
                require("base", base != 0), require("l2e_present", pte_present(l2e)),
                require("l1_mfn", mfn_valid(s, l1)), in_use_check(s, l1, PGT.l1_page_table, "l1"))
    return ok, l1, z3.LShR(addr, abi.PAGE_SHIFT) & 0x3FF


def form_flag(flags: Word, by_pte: bool) -> Bool:
    """The GNTMAP_contains_pte bit selects the form (the handle's flags, for an unmap)."""
    bit = flags & abi.GNTMAP_contains_pte
    return bit != 0 if by_pte else bit == 0


def spec_map_grant_ref(s: SymState, v: Word, addr: Word, flags: Word, ref: Word, g: Word,
                       h: Word, by_pte: bool = False) -> Transition:
    """GNTTABOP_map_grant_ref with GNTMAP_host_map: handle ``h`` (a free one) maps the frame
    of ``g``'s entry ``ref`` at the PTE ``addr`` names, read-only or writable as the flags
    say, if the entry permits access to the caller (and writing, for a writable map).

    The named conditions follow __gnttab_map_grant_ref's order of checks: the request is one
    of this spec's (``scope``: no device mapping, this form of host address), ``host_map`` and
    ``ref`` (GNTST_bad_gntref), the granting ``domain`` (GNTST_bad_domain), a free ``handle``
    (GNTST_no_device_space), the entry (``permit``, ``readonly``), get_page (``frame``,
    ``frame_owner``) and get_page_type (``writable_type``), then create_grant_host_mapping
    (the PTE's slot)."""
    d = s.vcpu_domain[v]
    readonly = (flags & abi.GNTMAP_readonly) != 0
    sflags, sdomid, t = grant_entry(s, g, ref)
    slot_ok, l1, idx = grant_pte_slot(s, v, addr, by_pte)
    ok = all_of(
        require("scope", z3.And(flags & abi.GNTMAP_device_map == 0, form_flag(flags, by_pte))),
        require("host_map", flags & abi.GNTMAP_host_map != 0),
        require("ref", z3.ULT(ref, bv(abi.NR_GRANT_ENTRIES))),
        require("domain", granter_found(g)),
        require("handle", z3.And(z3.ULT(h, bv(abi.MAPTRACK_MAX_ENTRIES)),
                                 z3.Select(s.mt_flags, d, h) == 0)),
        permits_check(sflags, sdomid, d, readonly),
        frame_owned_check(s, t, g),
        require("writable_type", z3.Or(readonly, can_take_type(s, t, PGT.writable_page))),
        slot_ok,
    )
    pte = (t << abi.PAGE_SHIFT) | GRANT_PTE_FLAGS
    pte = pte | z3.If(readonly, bv(0), bv(abi._PAGE_RW))
    pte = pte | z3.If(flags & abi.GNTMAP_application_map != 0, bv(abi._PAGE_USER), bv(0))
    x = z3.BitVec(fresh_name("x"), 32)
    retyped = z3.Lambda([x], z3.And(z3.Not(readonly), x == t,
                                    s.type[t] != int(PGT.writable_page)))
    new = retype_writable(s, retyped).evolve(
        mem=set_entry(s, l1, idx, pte),
        gnt_slot=z3.Store(s.gnt_slot, l1, idx, h),
        mt_flags=z3.Store(s.mt_flags, d, h, flags),
        mt_dom=z3.Store(s.mt_dom, d, h, g),
        mt_frame=z3.Store(s.mt_frame, d, h, t),
        mt_l1=z3.Store(s.mt_l1, d, h, l1),
        mt_idx=z3.Store(s.mt_idx, d, h, idx),
    )
    return Transition(ok.holds, new, bv(0), bv(abi.GNTST_general_error), check=ok)


def spec_unmap_grant_ref(s: SymState, v: Word, addr: Word, h: Word,
                         by_pte: bool = False) -> Transition:
    """GNTTABOP_unmap_grant_ref of a host mapping: the PTE ``addr`` names must be the one the
    handle wrote and still map its frame with its writability; it is cleared and the handle's
    host mapping ends. A host address of 0 names no host mapping: the call succeeds and
    changes nothing (__gnttab_unmap_grant_ref: ``op->host_addr != 0`` guards
    destroy_grant_host_mapping; no device mapping is in this spec's state).

    Named conditions, in __gnttab_unmap_grant_ref's order: the handle has a host mapping
    (``handle``: GNTST_bad_handle), of this form (``scope``), then (``host``: a non-zero
    host address) destroy_grant_host_mapping: the PTE's slot, the handle's own PTE
    (``handle_pte``, a departure: see refmodel/grant.py), which still maps the handle's frame
    (``pte_present``, ``pte_frame``) with its writability (``pte_rw``)."""
    d = s.vcpu_domain[v]
    flags = z3.Select(s.mt_flags, d, h)
    slot_ok, l1, idx = grant_pte_slot(s, v, addr, by_pte)
    e = entry(s, l1, idx)
    destroy = all_of(
        slot_ok,
        require("handle_pte", z3.And(l1 == z3.Select(s.mt_l1, d, h),
                                     idx == z3.Select(s.mt_idx, d, h))),
        require("pte_present", pte_present(e)),
        require("pte_frame", pte_get_pfn(e) == z3.Select(s.mt_frame, d, h)),
        require("pte_rw", pte_writable(e) == (flags & abi.GNTMAP_readonly == 0)),
    )
    no_host = addr == 0
    ok = all_of(
        require("handle", flags & abi.GNTMAP_host_map != 0),
        require("scope", form_flag(flags, by_pte)),
        cases(("no_host_addr", no_host, PASS), ("host", None, destroy)),
    )
    rest = flags & ~abi.GNTMAP_host_map
    # put_maptrack_handle: a handle with neither a host nor a device mapping left is free.
    left = rest & (abi.GNTMAP_host_map | abi.GNTMAP_device_map) != 0
    new = s.evolve(mem=set_entry(s, l1, idx, bv(0)),
                   mt_flags=z3.Store(s.mt_flags, d, h, z3.If(left, rest, bv(0))))
    return Transition(ok.holds, pick(no_host, s, new), bv(0), bv(abi.GNTST_general_error),
                      check=ok)


def copy_side(s: SymState, d: Word, is_gref: bool, ref_or_mfn: Word, dom: Word,
              readonly: bool) -> tuple[Check, Word]:
    """(ok, frame) of one side of a copy made by domain ``d``: a grant reference of ``dom``
    that permits the access (__acquire_grant_for_copy), or a frame of the caller's own named
    by number (only with DOMID_SELF: "only allow copy-by-mfn for DOMID_SELF"). The named
    conditions follow __gnttab_copy's order: ``self`` (GNTST_permission_denied), ``domain``
    (GNTST_bad_domain), ``ref`` (GNTST_bad_gntref), the entry (``permit``, ``readonly``),
    then get_page (``frame``, ``frame_owner``)."""
    if not is_gref:
        return all_of(require("self", dom == abi.DOMID_SELF),
                      frame_owned_check(s, ref_or_mfn, d)), ref_or_mfn
    # DOMID_SELF names the caller's own domain, for a grant reference too (__gnttab_copy:
    # "if ( op->source.domid == DOMID_SELF ) sd = current->domain").
    g = z3.If(dom == abi.DOMID_SELF, d, dom)
    sflags, sdomid, t = grant_entry(s, g, ref_or_mfn)
    return all_of(require("domain", granter_found(g)),
                  require("ref", z3.ULT(ref_or_mfn, bv(abi.NR_GRANT_ENTRIES))),
                  permits_check(sflags, sdomid, d, readonly if readonly else z3.BoolVal(False)),
                  frame_owned_check(s, t, g)), t


def _side(name: str, c: Check) -> Check:
    """``c`` with its conditions named for one side of a copy (src_..., dst_...)."""
    return Check(c.holds, tuple((f"{name}_{n}" if n else n, x) for n, x in c.passes),
                 tuple((f"{name}_{n}", x) for n, x in c.fails))


def spec_copy(s: SymState, v: Word, src: tuple[bool, Word, Word],
              dst: tuple[bool, Word, Word]) -> Transition:
    """GNTTABOP_copy of one span: ``src`` and ``dst`` are (by grant, ref or mfn, domid). Only
    the destination frame's contents change, and it takes the writable type first
    (get_page_and_type(PGT_writable_page)), so no table, GDT or LDT frame is ever written by a
    copy; each granted side is pinned for the copy only. The source is acquired before the
    destination, as __gnttab_copy does."""
    d = s.vcpu_domain[v]
    src_ok, _ = copy_side(s, d, *src, readonly=True)
    dst_ok, frame = copy_side(s, d, *dst, readonly=False)
    ok = all_of(_side("src", src_ok), _side("dst", dst_ok),
                require("dst_writable_type", can_take_type(s, frame, PGT.writable_page)))
    data = z3.Array(fresh_name("copied"), z3.BitVecSort(32), z3.BitVecSort(32))
    f, i = z3.BitVec(fresh_name("f"), 32), z3.BitVec(fresh_name("i"), 32)
    x = z3.BitVec(fresh_name("x"), 32)
    retyped = z3.Lambda([x], z3.And(x == frame, s.type[frame] != int(PGT.writable_page)))
    mid = retype_writable(s, retyped)
    new = mid.evolve(mem=z3.Lambda([f, i], z3.If(f == frame, data[i], z3.Select(s.mem, f, i))))
    return Transition(ok.holds, new, bv(0), bv(abi.GNTST_general_error), check=ok)

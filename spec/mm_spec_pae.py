"""Transition specifications of the compat-pae profile's MMU hypercalls, one per hypercall.

The profile is a 32-bit PV guest on 64-bit Xen 4.19 (spec/paging.py, COMPAT_PAE); the rules
are xen/arch/x86/mm.c at RELEASE-4.19.0 for such a domain, as refmodel/mm_pae.py models them:

* an L1 entry is ``get_page_from_l1e`` (flags in ``l1_disallow_mask``, the frame FOREIGNDOM's
  RAM, RW only onto a frame that can take the writable type);
* an L2 entry names an L1 (validated on the way if need be) or, read-only, an L2
  (``get_l2_linear_pagetable``); its slots from COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT are not
  the guest's in the L2 of type PGT_pae_xen_l2 (``mod_l2_entry``: -EPERM);
* an L3 entry names an L2 without PGT_pae_xen_l2 (``get_page_from_l3e``; no linear L3,
  XSA-185); slots 3 and above cannot be updated (``mod_l3_entry``: -EINVAL); validating an
  L3 (``promote_l3_table``) clears entries 4 to 511, first, so that they stay cleared when it
  fails, and needs slot 3 to name an L2 that takes PGT_pae_xen_l2, whose Xen slots
  ``init_xen_pae_l2_slots`` writes;
* ``do_mmu_update``: a validated table in use is updated by its level (an L2 or L3 of the
  caller only), any other frame as data once it takes the writable type.

The style and the abstractions are spec.mm_spec's (whose level-free vocabulary this module
uses): reference counts are the existence of references, whole-table validation and
de-validation cascades are given by their defining property over fresh sets that stand for
Xen's iteration, and a spec allows more than Xen does where Xen's result depends on that
iteration (which frames take the writable type, which tables lose their validation), so
the proofs cover a superset of Xen's behaviours. Not specified here: the XSA-240 counts of
linear tables and the rule that one L3 names an L2 with PGT_pae_xen_l2 (both are counts; the
concrete checks of refmodel/view_pae.py check them), and the refinement of the model's
handlers against these specs (proofs/refinement.py covers the native profile only).
"""

from __future__ import annotations

from typing import Any

import z3

from xenspec.spec import abi, mm_spec, symbolic
from xenspec.spec.abi_profiles import (
    COMPAT_HYPERVISOR_VIRT_START,
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    COMPAT_L3_XEN_SLOT,
)
from xenspec.spec.branches import Check, all_of, any_of, require
from xenspec.spec.mm_spec import (
    Branch,
    Transition,
    fresh_set,
    in_use,
    in_use_check,
    mfn_valid,
    pick,
    retype_writable,
    xen_type_ref,
)
from xenspec.spec.pagetable import PGT
from xenspec.spec.pagetable_pae import (
    entry_has_changed,
    l1e_disallowed,
    l2e_disallowed,
    l3e_disallowed,
    pte_present,
    pte_writable,
)
from xenspec.spec.paging import COMPAT_PAE, pae_frame
from xenspec.spec.symbolic import SymState, bv, exists, forall, memo, memo_expanded

Word = Any
Bool = Any
ENTRIES = 512  # entries of a PAE table frame (L1 and L2; an L3 frame too)
L3_USED = 4  # the L3 entries the processor reads
XEN_SLOT = COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT
PAGING = COMPAT_PAE
TABLE_TYPES = PAGING.table_types


def entry(s: SymState, f: Word, i: Word) -> Word:
    return z3.Select(s.mem, f, i)


def set_entry(s: SymState, f: Word, i: Word, e: Word) -> z3.ArrayRef:
    return z3.Store(s.mem, f, i, e)


def guest_slot(s: SymState, f: Word, i: Word) -> Bool:
    """Slot ``i`` of the L2 ``f`` is the guest's (asm/x86_64/page.h is_guest_l2_slot)."""
    return z3.And(z3.ULT(i, bv(ENTRIES)), z3.Or(z3.Not(s.pae_xen_l2[f]), z3.ULT(i, bv(XEN_SLOT))))


def is_table(s: SymState, g: Word) -> Bool:
    return z3.Or(*[s.type[g] == int(t) for t in TABLE_TYPES])


# ----------------------------------------------------------------------------------------------
# Type references (the abstraction of mm_spec.has_type_refs, over three levels).
# ----------------------------------------------------------------------------------------------
def rw_mapped(s: SymState, g: Word) -> Bool:
    """Some L1 in use maps ``g`` writable: ``g`` holds a writable type reference."""
    def body(t: Word, i: Word) -> Bool:
        *conds, frame = rw_entry(s, t, i)
        return z3.And(*conds, frame == g)
    return memo_expanded(s, "rw_mapped", g, ("frame", "index"),
                         lambda: exists(("frame", "index"), body))


def rw_entry(s: SymState, t: Word, i: Word) -> tuple[Bool, Bool, Bool, Bool, Word]:
    """Entry ``i`` of frame ``t`` as ``rw_mapped`` reads it (mm_spec.rw_entry): whether it is a
    writable entry of an L1 in use, and the frame it maps; built once per state for an
    expanded frame and index."""
    def build() -> tuple[Bool, Bool, Bool, Bool, Word]:
        e = entry(s, t, i)
        return (mfn_valid(s, t), in_use(s, t, PGT.l1_page_table), z3.ULT(i, bv(ENTRIES)),
                pte_writable(e), pae_frame(e))
    if z3.is_bv_value(t) and z3.is_bv_value(i):
        return memo(s, ("rw_entry", t.as_long(), i.as_long()), build)
    return build()


def has_type_refs(s: SymState, g: Word, xen: bool = True) -> Bool:
    """Type count non-zero: a writable frame mapped RW, a table in use, an installed GDT
    frame, or (unless ``xen`` is False) a frame Xen writes into (mm_spec.has_type_refs)."""
    tables = z3.Or(*[in_use(s, g, t) for t in TABLE_TYPES])
    refs = [z3.If(s.type[g] == int(PGT.writable_page), rw_mapped(s, g), tables),
            z3.And(s.type[g] == int(PGT.gdt_page), s.gdt_ref[g])]
    return z3.Or(*refs, *([xen_type_ref(s, g)] if xen else []))


def can_take_type(s: SymState, g: Word, t: PGT, xen_l2: bool = False) -> Bool:
    """_get_page_type: the frame has the type already (for an L2, with or without
    PGT_pae_xen_l2 as asked), or it has no type references."""
    same = s.type[g] == int(t)
    if t == PGT.l2_page_table:
        same = z3.And(same, s.pae_xen_l2[g] == xen_l2)
    return z3.Or(same, z3.Not(has_type_refs(s, g, xen=t != PGT.writable_page)))


def retypable(s: SymState, r: z3.ArrayRef) -> Bool:
    """Every frame of ``r`` may take the writable type."""
    return forall(("frame",), lambda h: z3.Implies(r[h], can_take_type(s, h, PGT.writable_page)))


# ----------------------------------------------------------------------------------------------
# Entries (get_page_from_l1e .. l3e).
# ----------------------------------------------------------------------------------------------
def owned_by(s: SymState, g: Word, d: Word, name: str) -> Check:
    return all_of(require(f"{name}_mfn", mfn_valid(s, g)),
                  require(f"{name}_owner", s.owner[g] == d))


def l1e_check(s: SymState, e: Word, fd: Word) -> Check:
    g = pae_frame(e)
    return any_of(
        ("absent", require("l1e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l1e_flags", z3.Not(l1e_disallowed(e))), owned_by(s, g, fd, "l1e"),
            require("l1e_rw_type",
                    z3.Implies(pte_writable(e), can_take_type(s, g, PGT.writable_page))),
        )),
    )


def l2e_check(s: SymState, l2: Word, e: Word, d: Word) -> Check:
    """An L1 in use of ``d``, or a read-only map of this L2 or of another L2 in use."""
    g = pae_frame(e)
    return any_of(
        ("absent", require("l2e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l2e_flags", z3.Not(l2e_disallowed(e))),
            any_of(
                ("l1", all_of(owned_by(s, g, d, "l2e"),
                              in_use_check(s, g, PGT.l1_page_table, "l2e_l1"))),
                ("linear", all_of(require("l2e_linear_ro", z3.Not(pte_writable(e))), any_of(
                    ("self", require("l2e_self", g == l2)),
                    ("other", all_of(owned_by(s, g, d, "l2e"),
                                     in_use_check(s, g, PGT.l2_page_table, "l2e_l2"))),
                ))),
            ),
        )),
    )


def l3e_check(s: SymState, e: Word, d: Word) -> Check:
    """An L2 in use of ``d`` without PGT_pae_xen_l2."""
    g = pae_frame(e)
    return any_of(
        ("absent", require("l3e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l3e_flags", z3.Not(l3e_disallowed(e))), owned_by(s, g, d, "l3e"),
            in_use_check(s, g, PGT.l2_page_table, "l3e_l2"),
            require("l3e_not_xen_l2", z3.Not(s.pae_xen_l2[g])),
        )),
    )


def xen_slot_check(s: SymState, e: Word, d: Word) -> Check:
    """promote_l3_table's slot 3: present, allowed flags, an L2 in use with PGT_pae_xen_l2."""
    g = pae_frame(e)
    return all_of(require("l3_slot3_present", pte_present(e)),
                  require("l3_slot3_flags", z3.Not(l3e_disallowed(e))),
                  owned_by(s, g, d, "l3_slot3"), in_use_check(s, g, PGT.l2_page_table, "slot3"),
                  require("slot3_xen_l2", s.pae_xen_l2[g]))


# ----------------------------------------------------------------------------------------------
# Validation (promote_l1_table .. promote_l3_table) and de-validation.
# ----------------------------------------------------------------------------------------------
def validate(s: SymState, d: Word, l1s: z3.ArrayRef, l2s: z3.ArrayRef, xen_l2: z3.ArrayRef,
             l3: Word | None) -> tuple[Check, Bool, SymState]:
    """Frames of ``l1s`` become L1s, of ``l2s`` L2s, of ``xen_l2`` L2s with PGT_pae_xen_l2
    (Xen's slots written), and ``l3`` (if given) an L3 with entries 4..511 cleared, all in
    use at once: (entries pass, choice constraints, resulting state). Each new table had no
    type reference; the RW targets of the new L1s take the writable type (fresh ``r``)."""
    h = z3.BitVec("h", 32)

    def is_l3(x: Word) -> Bool:
        return x == l3 if l3 is not None else z3.BoolVal(False)

    new_l2 = z3.Lambda([h], z3.Or(l2s[h], xen_l2[h]))
    is_new = z3.Lambda([h], z3.Or(l1s[h], new_l2[h], is_l3(h)))
    mid = s.evolve(
        type=z3.Lambda([h], z3.If(l1s[h], bv(PGT.l1_page_table), z3.If(
            new_l2[h], bv(PGT.l2_page_table),
            z3.If(is_l3(h), bv(PGT.l3_page_table), s.type[h])))),
        validated=z3.Lambda([h], z3.Or(is_new[h], s.validated[h])),
        pae_xen_l2=z3.Lambda([h], z3.If(is_new[h], xen_l2[h], s.pae_xen_l2[h])),
    )

    def fresh(n: Word) -> Bool:
        """A new table: RAM of ``d`` with no type reference, new at one level only."""
        one = z3.And(z3.Not(z3.And(l1s[n], new_l2[n])), z3.Not(z3.And(l2s[n], xen_l2[n])),
                     z3.Not(z3.And(z3.Or(l1s[n], new_l2[n]), is_l3(n))))
        return z3.Implies(is_new[n], z3.And(mfn_valid(s, n), s.owner[n] == d, one,
                                            z3.Not(has_type_refs(s, n))))

    l1_ok = forall(("frame", "index"), lambda n, j: z3.Implies(
        z3.And(l1s[n], z3.ULT(j, bv(ENTRIES))), l1e_check(mid, entry(s, n, j), d).holds))
    l2_ok = forall(("frame", "index"), lambda n, j: z3.Implies(
        z3.And(new_l2[n], guest_slot(mid, n, j)), l2e_check(mid, n, entry(s, n, j), d).holds))
    ok = all_of(require("new_tables_fresh", forall(("frame",), fresh)),
                require("new_l1_entries", l1_ok), require("new_l2_entries", l2_ok))
    if l3 is not None:
        ok = all_of(ok, *[require(f"l3_entry{k}", l3e_check(mid, entry(s, l3, bv(k)), d).holds)
                          for k in range(COMPAT_L3_XEN_SLOT)],
                    xen_slot_check(mid, entry(s, l3, bv(COMPAT_L3_XEN_SLOT)), d))
    r = fresh_set("retyped")
    covers = forall(("frame", "index"), lambda t, i: z3.Implies(
        z3.And(l1s[t], z3.ULT(i, bv(ENTRIES)), pte_writable(entry(s, t, i))),
        r[pae_frame(entry(s, t, i))]))
    new = retype_writable(mid, r)
    x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
    new = new.evolve(mem=z3.Lambda([x, k], z3.If(
        z3.And(xen_l2[x], z3.ULE(bv(XEN_SLOT), k), z3.ULT(k, bv(ENTRIES))),
        s.xen_l2e(s.owner[x], k),
        z3.If(z3.And(is_l3(x), z3.ULE(bv(L3_USED), k)), z3.BitVecVal(0, 64),
              z3.Select(s.mem, x, k)))))
    return ok, z3.And(covers, retypable(mid, r)), new


def none() -> z3.ArrayRef:
    return z3.K(z3.BitVecSort(32), z3.BoolVal(False))


def chosen(name: str, allowed: Bool) -> z3.ArrayRef:
    """A set of frames Xen's iteration validates, empty unless ``allowed``."""
    h = z3.BitVec("h", 32)
    return z3.Lambda([h], z3.And(allowed, fresh_set(name)[h]))


def drop_references(s: SymState) -> tuple[Bool, SymState]:
    """put_page_type after references went away: the fresh set ``gone`` holds the tables
    de-validated (free_page_type, demote_l?_table), each unpinned, no base, and named by no
    guest entry of a table that stays in use."""
    gone = fresh_set("devalidated")
    h = z3.BitVec("h", 32)
    new = s.evolve(validated=z3.Lambda([h], z3.And(s.validated[h], z3.Not(gone[h]))))

    def names(t: Word, i: Word) -> Bool:
        return z3.Or(z3.And(in_use(new, t, PGT.l2_page_table), guest_slot(s, t, i)),
                     z3.And(in_use(new, t, PGT.l3_page_table), z3.ULT(i, bv(L3_USED))))

    def no_refs_left(g: Word, t: Word, i: Word) -> Bool:
        e = entry(s, t, i)
        return z3.Implies(z3.And(gone[g], mfn_valid(s, t), t != g, names(t, i), pte_present(e)),
                          pae_frame(e) != g)

    def no_root(g: Word, v: Word) -> Bool:
        return z3.Implies(gone[g], z3.And(z3.Not(s.pinned[g]), s.base[v] != g, is_table(s, g)))

    choice = z3.And(forall(("frame", "frame", "index"), no_refs_left),
                    forall(("frame", "vcpu"), no_root))
    return choice, new


# ----------------------------------------------------------------------------------------------
# Single-entry updates (mod_l1_entry .. mod_l3_entry).
# ----------------------------------------------------------------------------------------------
def fast_path(e: Word, old: Word, disallowed: Any) -> Bool:
    return z3.And(pte_present(e), z3.Not(disallowed(e)), z3.Not(entry_has_changed(old, e)))


def mod_l1_entry(s: SymState, t: Word, i: Word, e: Word, fd: Word) -> tuple[Check, Bool,
                                                                                SymState]:
    """Replace entry ``i`` of the L1 in use ``t``; the new RW target takes the writable type."""
    fast = fast_path(e, entry(s, t, i), l1e_disallowed)
    ok = any_of(("fast", require("fast", fast)), ("", l1e_check(s, e, fd)))
    g = pae_frame(e)
    h = z3.BitVec("h", 32)
    r = z3.Lambda([h], z3.And(z3.Not(fast), pte_writable(e), h == g,
                              s.type[g] != int(PGT.writable_page)))
    return ok, z3.BoolVal(True), retype_writable(s, r).evolve(mem=set_entry(s, t, i, e))


def mod_upper_entry(s: SymState, t: Word, i: Word, e: Word, d: Word, level: int,
                    validating: bool) -> tuple[Check, Bool, SymState]:
    """mod_l2_entry / mod_l3_entry: replace guest entry ``i`` of the table in use ``t``.
    Without ``validating``, the fast path or a target in use; with it, the slow path that
    validates the new target first (for an L2 entry a new L1; for an L3 entry a new L2 and
    the new L1s under it). The two are one call's two ways, proved apart."""
    if level == 2:
        slot = require("guest_slot", guest_slot(s, t, i))
    else:
        slot = require("guest_slot", z3.ULT(i, bv(COMPAT_L3_XEN_SLOT)))
    fast = fast_path(e, entry(s, t, i), l2e_disallowed if level == 2 else l3e_disallowed)
    if not validating:
        mid, choice_v = s, z3.BoolVal(True)
        ok = all_of(slot, any_of(("fast", require("fast", fast)), ("", entry_check(s, t, e, d,
                                                                              level))))
    else:
        h = z3.BitVec("h", 32)
        target = z3.Lambda([h], h == pae_frame(e))
        if level == 2:
            valid, choice_v, mid = validate(s, d, target, none(), none(), None)
        else:
            valid, choice_v, mid = validate(s, d, chosen("new_l1", z3.BoolVal(True)), target,
                                            none(), None)
        ok = all_of(slot, require("slow", z3.Not(fast)), require("present", pte_present(e)),
                    valid, entry_check(mid, t, e, d, level))
    choice_d, new = drop_references(mid.evolve(mem=set_entry(mid, t, i, e)))
    return ok, z3.And(choice_v, choice_d), new


def entry_check(s: SymState, t: Word, e: Word, d: Word, level: int) -> Check:
    return l2e_check(s, t, e, d) if level == 2 else l3e_check(s, e, d)


# ----------------------------------------------------------------------------------------------
# The hypercalls.
# ----------------------------------------------------------------------------------------------
def decode_ptr(ptr: Word) -> tuple[Word, Word, Word]:
    """A 64-bit mmu_update ``ptr`` on 64-bit Xen: (frame, entry index, command). The frame is
    ``ptr >> PAGE_SHIFT`` (as a 32-bit frame number: ``pae_frame``'s rule), the index bits
    3..11, the command the low bits below sizeof(l1_pgentry_t) (do_mmu_update)."""
    frame = z3.If(z3.Extract(63, 44, ptr) == 0, z3.Extract(43, 12, ptr),
                  z3.BitVecVal(0xFFFFFFFF, 32))
    return frame, z3.ZeroExt(23, z3.Extract(11, 3, ptr)), z3.Extract(2, 0, ptr)


def spec_mmu_update(s: SymState, v: Word, ptr: Word, val: Word, fd: Word,
                    level: int, validating: bool = False) -> Transition:
    """MMU_NORMAL_PT_UPDATE of a frame the caller owns, one case of do_mmu_update's switch
    at a time: ``level`` 1 to 3, the frame is a table in use of that level, updated through
    its checks (an L2 or L3 only for the caller itself); ``level`` 0, it is no table in use
    and is written as data once it takes the writable type. The call is the union of the
    four (exactly one case applies to a frame). For an L2 or L3, ``validating`` is the slow
    path that validates the entry's target (mod_upper_entry)."""
    d = s.vcpu_domain[v]
    f, i, cmd = decode_ptr(ptr)
    owned = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                   require("cmd", cmd == abi.MMU_NORMAL_PT_UPDATE))
    tables = [in_use(s, f, t) for t in TABLE_TYPES]
    if level == 1:
        ok, choice, new = mod_l1_entry(s, f, i, val, fd)
    elif level in (2, 3):
        ok, choice, new = mod_upper_entry(s, f, i, val, d, level, validating)
        ok = all_of(require("pg_owner_is_caller", fd == d), ok)
    else:
        h = z3.BitVec("h", 32)
        plain = z3.Lambda([h], z3.And(h == f, s.type[f] != int(PGT.writable_page)))
        new = retype_writable(s, plain).evolve(mem=set_entry(s, f, i, val))
        ok = require("writable_type", can_take_type(s, f, PGT.writable_page))
        choice = z3.BoolVal(True)
    case = tables[level - 1] if level else z3.Not(z3.Or(*tables))
    ok = all_of(owned, require("table" if level else "data", case), ok)
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def walk(s: SymState, base: Word, va: Word) -> tuple[Word, Word, Bool]:
    """The L1 and index that map ``va`` under the L3 ``base``, and whether the walk gets there
    (present L3 and L2 entries)."""
    l3e = entry(s, base, z3.LShR(va, 30))
    l2e = entry(s, pae_frame(l3e), z3.LShR(va, 21) & 0x1FF)
    return pae_frame(l2e), z3.LShR(va, 12) & 0x1FF, z3.And(pte_present(l3e), pte_present(l2e))


def spec_update_va_mapping(s: SymState, v: Word, va: Word, val: Word) -> Transition:
    """update_va_mapping: mod_l1_entry on the L1 that maps ``va`` under the vCPU's L3, a
    frame of the caller's (do_update_va_mapping: map_guest_l1e, then get_page_from_mfn of
    the L1 for the caller, -EINVAL without it)."""
    d = s.vcpu_domain[v]
    base = s.base[v]
    walked, i, reached = walk(s, base, va)
    # The L1 the walk reaches. In a proof, a constant equal to it: the solver instantiates
    # the invariants' quantifiers with one term instead of the walk's nested entries. On a
    # concrete state (the refinement check), the walk itself: a failure must be one for the
    # L1 the walk reaches, not for a constant chosen to differ from it.
    t = walked if symbolic.CONCRETE else z3.BitVec("l1_of_va", 32)
    ok_l1, choice, new = mod_l1_entry(s, t, i, val, d)
    ok = all_of(require("guest_va", z3.ULT(va, bv(COMPAT_HYPERVISOR_VIRT_START))),
                require("base", base != 0), require("walk", z3.And(reached, t == walked)),
                require("l1_mfn", mfn_valid(s, t)), require("l1_owner", s.owner[t] == d),
                in_use_check(s, t, PGT.l1_page_table, "l1"),
                ok_l1)
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def take(s: SymState, f: Word, level: int, d: Word) -> tuple[Check, Bool, SymState]:
    """get_page_and_type(f, PGT_l<level>_page_table): in use already, or validated now with
    the tables under it that Xen's iteration validates on the way (fresh sets)."""
    t = TABLE_TYPES[level - 1]
    already = z3.And(in_use(s, f, t), z3.Not(s.pae_xen_l2[f])) if level == 2 else in_use(s, f, t)
    h = z3.BitVec("h", 32)
    me = z3.Lambda([h], z3.And(z3.Not(already), h == f))
    if level == 1:
        valid, choice, new = validate(s, d, me, none(), none(), None)
    elif level == 2:
        valid, choice, new = validate(s, d, chosen("new_l1", z3.Not(already)), me, none(), None)
    else:
        fresh = z3.Not(already)
        valid, choice, new = validate(s, d, chosen("new_l1", fresh), chosen("new_l2", fresh),
                                      chosen("new_xen_l2", fresh), f)
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                any_of(("in_use", require("in_use", already)), ("validate", valid)))
    return ok, choice, pick(already, s, new)


def refused_after_clearing(s: SymState, f: Word, d: Word, ok: Bool) -> Branch:
    """A failed take of ``f`` as an L3 that got as far as promote_l3_table: the frame is RAM
    of ``d`` with no type reference, so _get_page_type validates it, and promote_l3_table
    clears entries 4..511 before it looks at slots 0..3 ("most easily achieved by clearing
    them out"); a slot that fails leaves them cleared (mm.c at RELEASE-4.19.0, lines
    1526-1534)."""
    x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
    cleared = s.evolve(mem=z3.Lambda([x, k], z3.If(
        z3.And(x == f, z3.ULE(bv(L3_USED), k)), z3.BitVecVal(0, 64), z3.Select(s.mem, x, k))))
    promoted = z3.And(mfn_valid(s, f), s.owner[f] == d,
                      z3.Not(in_use(s, f, PGT.l3_page_table)), z3.Not(has_type_refs(s, f)))
    return Branch("refused, L3 cleared", z3.And(z3.Not(ok), promoted), cleared,
                  bv(-abi.EINVAL), z3.BoolVal(True))


def spec_pin_table(s: SymState, f: Word, level: int, fd: Word) -> Transition:
    """MMUEXT_PIN_L1_TABLE .. PIN_L3_TABLE: take a type reference of the level and pin (an
    L3 that fails its validation is left with entries 4..511 cleared)."""
    ok, choice, after = take(s, f, level, fd)
    ok = all_of(require("not_pinned", z3.Not(s.pinned[f])), ok)
    new = after.evolve(pinned=z3.Store(after.pinned, f, True))
    others = (refused_after_clearing(s, f, fd, ok.holds),) if level == 3 else ()
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, others, check=ok)


def spec_unpin_table(s: SymState, d: Word, f: Word) -> Transition:
    """MMUEXT_UNPIN_TABLE: spec.mm_spec's, with this profile's de-validation."""
    return mm_spec.spec_unpin_table(s, d, f, drop_references)


def spec_new_baseptr(s: SymState, v: Word, f: Word) -> Transition:
    """MMUEXT_NEW_BASEPTR (new_guest_cr3, 4.19): take an L3 reference on ``f``, install it,
    drop the old base's. A failure leaves the old base (4.19 does not crash the domain), and
    an L3 that failed its validation with entries 4..511 cleared."""
    d = s.vcpu_domain[v]
    ok, choice, taken = take(s, f, 3, d)
    choice_d, new = drop_references(taken.evolve(base=z3.Store(taken.base, v, f)))
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), z3.And(choice, choice_d),
                      (refused_after_clearing(s, f, d, ok.holds),), check=ok)


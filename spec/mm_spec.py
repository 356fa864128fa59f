"""Transition specifications of the MMU hypercalls, in the style of Hyperkernel's handler specs.

Each ``spec_<hypercall>`` takes a symbolic state and symbolic arguments and returns a
``Transition``: the condition under which the call succeeds, the state after it, the value it
returns, and ``choice`` constraints on the fresh symbols that stand for choices Xen makes by
iteration (which tables a pin validates, which frames a dropped reference de-validates).
When the condition is false the call fails with the returned errno and the MMU state is
unchanged, except where a spec says otherwise (NEW_BASEPTR's crash).

The rules are those of xen/arch/x86/mm.c (Xen 3.0.4, non-PAE), with reference counts abstracted
to the existence of references (``has_type_refs``): mm.c tests counts only against zero.
Cascades and whole-table validation are specified by their defining property rather than by
Xen's loop: a de-validated frame had no reference left from a table in use, a newly validated
table had entries that all pass the entry checks. Batched calls (mmu_update, mmuext_op) are
specified one request at a time: a batch is their sequence, stopping at the first failure.

Where Xen's result depends on its iteration, the spec allows more than Xen does: the set of
frames that take the writable type along a validation may hold any frame that could take it,
and a dropped reference may, but need not, de-validate a table left without references. The
proofs therefore cover a superset of Xen's behaviours; the refinement check
(proofs.refinement) fixes these choices to what the model did, and INV-COUNT/INV-VALID check
on concrete states that the model de-validates exactly at count zero. Argument decoding
errors that leave the state alone (-EFAULT, -ESRCH, -ENOSYS) are outside these specs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import z3

from xenspec.spec import abi
from xenspec.spec.branches import PASS, Check, all_of, any_of, cases, require
from xenspec.spec.pagetable import (
    PGT,
    entry_has_changed,
    l1e_disallowed,
    l2e_disallowed,
    pte_get_pfn,
    pte_present,
    pte_writable,
    xen_l2_slot,
)
from xenspec.spec.symbolic import (
    STATE_FIELDS,
    SymState,
    bv,
    exists,
    forall,
    fresh_name,
    memo,
    memo_expanded,
)

Word = Any
Bool = Any
FIRST_XEN_SLOT = abi.L2_PAGETABLE_FIRST_XEN_SLOT
# A vCPU's GDT spans at most 16 frames (vcpu_guest_context.gdt_frames[16]); guests use 14.
GDT_FRAMES = abi.GDT_PAGES


@dataclass(frozen=True)
class Branch:
    """Another way a call can end: under ``cond`` it leaves state ``new`` and returns ``rc``."""

    name: str
    cond: Bool
    new: SymState
    rc: Word
    choice: Bool
    # Why it ends this way, when there are several reasons (spec.branches): (name, condition).
    reasons: tuple[tuple[str, Bool], ...] = ()


@dataclass(frozen=True)
class Transition:
    ok: Bool  # the call succeeds with ``new``
    new: SymState
    rc: Word  # EAX on success; ``err`` on failure
    err: Word
    choice: Bool = True  # constraints on this transition's fresh choice symbols
    others: tuple[Branch, ...] = ()  # outcomes besides "ok" and "fails leaving state alone"
    # ``ok`` with its named ways to pass and fail (spec.branches); ``ok`` is ``check.holds``.
    check: Check | None = None


# A refinement check against a concrete outcome fixes the spec's choices to what the model
# did (proofs.refinement); proofs leave them free.
CHOOSE: Callable[[str], Any] | None = None


def fresh_set(name: str) -> z3.ArrayRef:
    """A set of frames the spec leaves to Xen's iteration (``name`` says which)."""
    if CHOOSE is not None:
        return CHOOSE(name)
    return z3.Array(fresh_name(name), z3.BitVecSort(32), z3.BoolSort())


def fresh_bool(name: str) -> z3.BoolRef:
    if CHOOSE is not None:
        return CHOOSE(name)
    return z3.Bool(fresh_name(name))


def new_l1_set(already: Bool) -> z3.ArrayRef:
    """The L1 tables a directory's validation validates with it: a free choice, empty when the
    directory is in use already (its entries hold their references)."""
    chosen = fresh_set("new_l1")
    h = z3.BitVec("h", 32)
    return z3.Lambda([h], z3.And(z3.Not(already), chosen[h]))


# ----------------------------------------------------------------------------------------------
# Vocabulary.
# ----------------------------------------------------------------------------------------------
def mfn_valid(s: SymState, f: Word) -> Bool:
    return z3.ULT(f, s.nr_frames)


def in_use(s: SymState, f: Word, t: PGT) -> Bool:
    return z3.And(s.type[f] == int(t), s.validated[f])


def in_use_check(s: SymState, f: Word, t: PGT, name: str) -> Check:
    """``in_use`` with its two named conditions: ``name``_type and ``name``_validated."""
    return all_of(require(f"{name}_type", s.type[f] == int(t)),
                  require(f"{name}_validated", s.validated[f]))


def entry(s: SymState, f: Word, i: Word) -> Word:
    return z3.Select(s.mem, f, i)


def rw_mapped(s: SymState, g: Word) -> Bool:
    """Some L1 table in use maps ``g`` writable: ``g`` holds a writable type reference."""
    def body(t: Word, i: Word) -> Bool:
        *conds, frame = rw_entry(s, t, i)
        return z3.And(*conds, frame == g)
    return memo_expanded(s, "rw_mapped", g, ("frame", "index"),
                         lambda: exists(("frame", "index"), body))


def rw_entry(s: SymState, t: Word, i: Word) -> tuple[Bool, Bool, Bool, Bool, Word]:
    """Entry ``i`` of frame ``t`` as ``rw_mapped`` reads it: whether it is a writable entry of
    an L1 table in use (four conditions), and the frame it maps. Built once per state for an
    expanded frame and index (``symbolic.memo``)."""
    def build() -> tuple[Bool, Bool, Bool, Bool, Word]:
        e = entry(s, t, i)
        return (mfn_valid(s, t), in_use(s, t, PGT.l1_page_table), z3.ULT(i, bv(1024)),
                pte_writable(e), pte_get_pfn(e))
    if z3.is_bv_value(t) and z3.is_bv_value(i):
        return memo(s, ("rw_entry", t.as_long(), i.as_long()), build)
    return build()


def xen_type_ref(s: SymState, g: Word) -> Bool:
    """Xen holds a writable type reference on ``g`` because it writes into the frame on a
    guest's behalf (x86 mm.c, share_xen_page_with_guest: type count 1, never dropped while the
    page is shared; a back end's writable mapping holds one the same way)."""
    return s.xen_written[g]


def has_type_refs(s: SymState, g: Word, xen: bool = True) -> Bool:
    """Type count non-zero: a writable frame mapped RW, a GDT frame some vCPU has installed
    (``gdt_ref``, kept by set_gdt; INV-PRIV says every installed frame has it), a page-table
    frame in use (INV-VALID), or (unless ``xen`` is False) a frame Xen writes into
    (``xen_type_ref``: Xen's own reference, of the writable type INV-XENPAGE keeps it at).
    LDT frames take no type references in the model (Xen takes them when it maps an LDT page
    on a fault, which is not modelled)."""
    page_table_refs = z3.If(
        s.type[g] == int(PGT.writable_page), rw_mapped(s, g),
        z3.Or(in_use(s, g, PGT.l1_page_table), in_use(s, g, PGT.l2_page_table)),
    )
    refs = [page_table_refs, z3.And(s.type[g] == int(PGT.gdt_page), s.gdt_ref[g])]
    return z3.Or(*refs, *([xen_type_ref(s, g)] if xen else []))


def can_take_type(s: SymState, g: Word, t: PGT) -> Bool:
    """get_page_type: the type is the frame's type already, or the frame has no type refs.
    Xen's reference on a frame it writes into is a writable one: it stops every other type,
    and is left out for the writable type itself, which such a frame has already
    (INV-XENPAGE)."""
    return z3.Or(s.type[g] == int(t),
                 z3.Not(has_type_refs(s, g, xen=t != PGT.writable_page)))


def l1e_ok(s: SymState, e: Word, fd: Word) -> Bool:
    """get_page_from_l1e: a present entry maps RAM of FOREIGNDOM, RW only a writable-able frame."""
    return l1e_check(s, e, fd).holds


def l1e_check(s: SymState, e: Word, fd: Word) -> Check:
    g = pte_get_pfn(e)
    return any_of(
        ("absent", require("l1e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l1e_flags", z3.Not(l1e_disallowed(e))),
            require("l1e_mfn", mfn_valid(s, g)),
            require("l1e_owner", s.owner[g] == fd),
            require("l1e_rw_type",
                    z3.Implies(pte_writable(e), can_take_type(s, g, PGT.writable_page))),
        )),
    )


def set_entry(s: SymState, f: Word, i: Word, e: Word) -> z3.ArrayRef:
    return z3.Store(s.mem, f, i, e)


def retype_writable(s: SymState, r: z3.ArrayRef) -> SymState:
    """Frames in ``r`` take the writable type (validated at once, as get_page_type does)."""
    h = z3.BitVec("h", 32)
    return s.evolve(
        type=z3.Lambda([h], z3.If(r[h], bv(PGT.writable_page), s.type[h])),
        validated=z3.Lambda([h], z3.Or(r[h], s.validated[h])),
    )


def retypable(s: SymState, r: z3.ArrayRef) -> Bool:
    """Every frame of ``r`` may take the writable type."""
    return forall(("frame",), lambda h: z3.Implies(r[h], can_take_type(s, h, PGT.writable_page)))


def covers_rw_targets(s: SymState, tables: Any, r: z3.ArrayRef, hi: int) -> Bool:
    """``r`` holds every frame an RW entry of a table in ``tables`` (a predicate) maps."""
    return forall(("frame", "index"), lambda t, i: z3.Implies(
        z3.And(tables(t), z3.ULT(i, bv(hi)), pte_writable(entry(s, t, i))),
        r[pte_get_pfn(entry(s, t, i))],
    ))


# ----------------------------------------------------------------------------------------------
# Validation and de-validation (get_page_type / put_page_type).
# ----------------------------------------------------------------------------------------------
def validate_tables(
    s: SymState, l2: Word | None, l1s: z3.ArrayRef, d: Word
) -> tuple[Bool, Bool, SymState]:
    ok, choice, new = validate_tables_check(s, l2, l1s, d)
    return ok.holds, choice, new


def validate_tables_check(
    s: SymState, l2: Word | None, l1s: z3.ArrayRef, d: Word
) -> tuple[Check, Bool, SymState]:
    """Make ``l2`` (if given) a page directory and the frames of ``l1s`` L1 tables in use, as
    alloc_l2_table / alloc_l1_table do: (entries pass, choice constraints, resulting state).

    ``l1s`` are frames with no type references that become L1 tables; their RW targets take
    the writable type (the fresh set ``r``). The directory's hypervisor slots become Xen's
    entries for it (``xen_l2_slot``: the domain's, and its own frame at LINEAR_PT_SLOT)."""
    h = z3.BitVec("h", 32)
    is_new = z3.Lambda([h], z3.Or(l1s[h], h == l2) if l2 is not None else l1s[h])
    mid = s.evolve(
        type=z3.Lambda([h], z3.If(
            l1s[h], bv(PGT.l1_page_table),
            z3.If(h == l2, bv(PGT.l2_page_table), s.type[h]) if l2 is not None else s.type[h],
        )),
        validated=z3.Lambda([h], z3.Or(is_new[h], s.validated[h])),
    )
    l1_entries_ok = forall(("frame", "index"), lambda n, j: z3.Implies(
        z3.And(l1s[n], z3.ULT(j, bv(1024))), l1e_ok(mid, entry(s, n, j), d)
    ))
    # A new L1 has no type reference: none from tables, GDTs or mappings, and not Xen's.
    l1s_fresh = forall(("frame",), lambda n: z3.Implies(l1s[n], z3.And(
        mfn_valid(s, n), s.owner[n] == d, z3.Not(has_type_refs(s, n, xen=False)),
        z3.Not(xen_type_ref(s, n)), n != l2 if l2 is not None else z3.BoolVal(True),
    )))
    ok = all_of(require("new_l1_entries", l1_entries_ok), require("new_l1_fresh", l1s_fresh))
    if l2 is not None:
        ok = all_of(ok, require("l2_entries", forall(("index",), lambda j: z3.Implies(
            z3.ULT(j, bv(FIRST_XEN_SLOT)), l2e_ok(mid, l2, entry(s, l2, j), d)
        ))))
    r = fresh_set("retyped")
    choice = z3.And(covers_rw_targets(s, lambda t: l1s[t], r, 1024), retypable(mid, r))
    new = retype_writable(mid, r)
    if l2 is not None:
        x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
        xen_slots = z3.Lambda([x, k], z3.If(
            z3.And(x == l2, z3.ULE(bv(FIRST_XEN_SLOT), k), z3.ULT(k, bv(1024))),
            xen_l2_slot(s.xen_l2e(s.owner[l2], k), l2, k, s.linear_pt_flags),
            z3.Select(s.mem, x, k),
        ))
        new = new.evolve(mem=xen_slots)
    return ok, choice, new


def l2e_ok(s: SymState, l2: Word, e: Word, d: Word) -> Bool:
    """get_page_from_l2e: an L1 in use, or a read-only map of this or another directory."""
    return l2e_check(s, l2, e, d).holds


def l2e_check(s: SymState, l2: Word, e: Word, d: Word) -> Check:
    g = pte_get_pfn(e)
    return any_of(
        ("absent", require("l2e_present", z3.Not(pte_present(e)))),
        ("present", all_of(
            require("l2e_flags", z3.Not(l2e_disallowed(e))),
            any_of(
                ("l1", require("l2e_l1", z3.And(mfn_valid(s, g), s.owner[g] == d,
                                                in_use(s, g, PGT.l1_page_table)))),
                ("linear", all_of(require("l2e_linear_ro", z3.Not(pte_writable(e))), any_of(
                    ("self", require("l2e_self", g == l2)),
                    ("other", all_of(require("l2e_mfn", mfn_valid(s, g)),
                                     require("l2e_owner", s.owner[g] == d),
                                     in_use_check(s, g, PGT.l2_page_table, "l2e_l2"))),
                ))),
            ),
        )),
    )


def drop_references(s: SymState) -> tuple[Bool, SymState]:
    """put_page_type after references went away: tables left with no type reference lose
    their validation (mm.c, free_page_type), which may cascade. The fresh set ``gone`` holds
    the de-validated tables; each had no pin, no base pointer, and no reference left from a
    directory that stays in use. Returns (choice constraints, resulting state)."""
    gone = fresh_set("devalidated")
    h = z3.BitVec("h", 32)
    new = s.evolve(validated=z3.Lambda([h], z3.And(s.validated[h], z3.Not(gone[h]))))

    def no_refs_left(g: Word, t: Word, i: Word) -> Bool:
        e = entry(s, t, i)
        return z3.Implies(
            z3.And(gone[g], mfn_valid(s, t), in_use(new, t, PGT.l2_page_table), t != g,
                   z3.ULT(i, bv(FIRST_XEN_SLOT)), pte_present(e)),
            pte_get_pfn(e) != g,
        )

    def no_root(g: Word, v: Word) -> Bool:
        return z3.Implies(gone[g], z3.And(
            z3.Not(s.pinned[g]), s.base[v] != g,
            z3.Or(s.type[g] == int(PGT.l1_page_table), s.type[g] == int(PGT.l2_page_table)),
        ))

    choice = z3.And(forall(("frame", "frame", "index"), no_refs_left),
                    forall(("frame", "vcpu"), no_root))
    return choice, new


# ----------------------------------------------------------------------------------------------
# Single-entry updates: mod_l1_entry / mod_l2_entry.
# ----------------------------------------------------------------------------------------------
def mod_l1_entry(s: SymState, t: Word, i: Word, e: Word, fd: Word) -> tuple[Bool, Bool, SymState]:
    """Replace entry ``i`` of the L1 in use ``t``: (ok, choice, new state)."""
    ok, choice, new = mod_l1_entry_check(s, t, i, e, fd)
    return ok.holds, choice, new


def mod_l1_entry_check(
    s: SymState, t: Word, i: Word, e: Word, fd: Word
) -> tuple[Check, Bool, SymState]:
    old = entry(s, t, i)
    fast = z3.And(pte_present(e), z3.Not(l1e_disallowed(e)), z3.Not(entry_has_changed(old, e)))
    ok = any_of(("fast", require("fast", fast)), ("", l1e_check(s, e, fd)))
    g = pte_get_pfn(e)
    h = z3.BitVec("h", 32)
    # The new RW target takes the writable type if it has not got it.
    r = z3.Lambda([h], z3.And(
        z3.Not(fast), pte_writable(e), h == g, s.type[g] != int(PGT.writable_page)
    ))
    new = retype_writable(s, r).evolve(mem=set_entry(s, t, i, e))
    return ok, z3.BoolVal(True), new


def mod_l2_entry(s: SymState, t: Word, i: Word, e: Word, d: Word) -> tuple[Bool, Bool, SymState]:
    """Replace guest entry ``i`` of the page directory in use ``t``: (ok, choice, new)."""
    ok, choice, new = mod_l2_entry_check(s, t, i, e, d)
    return ok.holds, choice, new


def mod_l2_entry_check(
    s: SymState, t: Word, i: Word, e: Word, d: Word
) -> tuple[Check, Bool, SymState]:
    old = entry(s, t, i)
    g = pte_get_pfn(e)
    fast = z3.And(pte_present(e), z3.Not(l2e_disallowed(e)), z3.Not(entry_has_changed(old, e)))
    # The slow path may validate the target as a new L1 (``l1s`` is that one frame or none).
    h = z3.BitVec("h", 32)
    validate_g = fresh_bool("validate_target")
    l1s = z3.Lambda([h], z3.And(validate_g, z3.Not(fast), h == g))
    valid_l1s, choice_v, mid = validate_tables_check(s, None, l1s, d)
    slow_ok = all_of(valid_l1s, l2e_check(mid, t, e, d))
    ok = all_of(require("guest_slot", z3.ULT(i, bv(FIRST_XEN_SLOT))),
                any_of(("fast", require("fast", fast)), ("", slow_ok)))
    written = mid.evolve(mem=set_entry(mid, t, i, e))
    choice_d, new = drop_references(written)
    choice = z3.And(choice_v, choice_d)
    return ok, choice, new


# ----------------------------------------------------------------------------------------------
# The hypercalls.
# ----------------------------------------------------------------------------------------------
def decode_ptr(ptr: Word) -> tuple[Word, Word, Word]:
    """A 64-bit mmu_update ``ptr``: (frame, entry index, command). x86_32 Xen keeps the frame
    number in an unsigned long, so only bits 12..43 name the frame."""
    return z3.Extract(43, 12, ptr), z3.ZeroExt(22, z3.Extract(11, 2, ptr)), z3.Extract(1, 0, ptr)


def spec_mmu_update(s: SymState, v: Word, ptr: Word, val: Word, fd: Word) -> Transition:
    """One MMU_NORMAL_PT_UPDATE request of the batch: write ``val`` at machine address ``ptr``
    of a frame the caller owns, through the checks its frame's type calls for."""
    d = s.vcpu_domain[v]
    f, i, cmd = decode_ptr(ptr)
    owned = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                   require("cmd", cmd == abi.MMU_NORMAL_PT_UPDATE))
    l1_ok, l1_choice, l1_new = mod_l1_entry_check(s, f, i, val, fd)
    l2_ok, l2_choice, l2_new = mod_l2_entry_check(s, f, i, val, d)
    # A frame that is no table in use is written as plain memory once it takes the writable
    # type ("not_a_pt"). A table not in use is validated for the write and de-validated after
    # it: it keeps its type (the set ``kept``), its RW targets may have taken the writable type
    # on the way (``transient``), or, if it no longer validates, it becomes plain memory.
    h = z3.BitVec("h", 32)
    kept = fresh_set("kept_table")
    transient = fresh_set("retyped")
    was_table = z3.Or(s.type[f] == int(PGT.l1_page_table), s.type[f] == int(PGT.l2_page_table))
    keep = z3.And(was_table, kept[f])
    r = z3.Lambda([h], z3.Or(
        z3.And(h == f, z3.Not(keep), s.type[f] != int(PGT.writable_page)),
        z3.And(keep, transient[h], h != f),
    ))
    plain_choice = retypable(s, r)
    plain_ok = can_take_type(s, f, PGT.writable_page)
    plain_new = retype_writable(s, r).evolve(mem=set_entry(s, f, i, val))
    is_l1 = in_use(s, f, PGT.l1_page_table)
    is_l2 = in_use(s, f, PGT.l2_page_table)
    ok = all_of(owned, cases(("l1", is_l1, l1_ok), ("l2", is_l2, l2_ok),
                             ("plain", None, require("writable_type", plain_ok))))
    new = pick(is_l1, l1_new, pick(is_l2, l2_new, plain_new))
    choice = z3.If(is_l1, l1_choice, z3.If(is_l2, l2_choice, plain_choice))
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def spec_machphys_update(s: SymState, v: Word, ptr: Word, val: Word, fd: Word) -> Transition:
    """MMU_MACHPHYS_UPDATE: M2P[mfn] = val for a frame FOREIGNDOM owns (no page-table state)."""
    f, _, cmd = decode_ptr(ptr)
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == fd),
                require("cmd", cmd == abi.MMU_MACHPHYS_UPDATE))
    return Transition(ok.holds, s, bv(0), bv(-abi.EINVAL), check=ok)


def spec_update_va_mapping(s: SymState, v: Word, va: Word, val: Word) -> Transition:
    """update_va_mapping: mod_l1_entry on the L1 that maps ``va`` under the vCPU's base."""
    d = s.vcpu_domain[v]
    base = s.base[v]
    l2e = entry(s, base, z3.LShR(va, abi.L2_PAGETABLE_SHIFT))
    t = pte_get_pfn(l2e)
    i = z3.LShR(va, abi.PAGE_SHIFT) & 0x3FF
    ok_l1, choice, new = mod_l1_entry_check(s, t, i, val, d)
    ok = all_of(
        require("guest_va", z3.ULT(va, bv(abi.HYPERVISOR_VIRT_START))), require("base", base != 0),
        require("l2e_present", pte_present(l2e)), require("l1_mfn", mfn_valid(s, t)),
        in_use_check(s, t, PGT.l1_page_table, "l1"), ok_l1,
    )
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def spec_pin_table(s: SymState, f: Word, level: int, fd: Word) -> Transition:
    """MMUEXT_PIN_L1_TABLE / PIN_L2_TABLE: take (validating) a type reference and pin."""
    t = PGT.l1_page_table if level == 1 else PGT.l2_page_table
    already = in_use(s, f, t)
    n = z3.BitVec("n", 32)
    if level == 1:
        l1s = z3.Lambda([n], z3.And(n == f, z3.Not(already)))
        valid, choice, validated = validate_tables_check(s, None, l1s, fd)
        fresh_ok = valid
    else:
        l1s = new_l1_set(already)
        valid, choice, validated = validate_tables_check(s, f, l1s, fd)
        fresh_ok = all_of(valid, require("no_type_refs", z3.Not(has_type_refs(s, f))))
    ok = all_of(
        require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == fd),
        require("not_pinned", z3.Not(s.pinned[f])),
        any_of(("in_use", require("in_use", already)), ("validate", fresh_ok)),
    )
    after = pick(already, s, validated)
    new = after.evolve(pinned=z3.Store(after.pinned, f, True))
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def spec_unpin_table(s: SymState, d: Word, f: Word,
                     drop: Callable[[SymState], tuple[Bool, SymState]] | None = None
                     ) -> Transition:
    """MMUEXT_UNPIN_TABLE: drop the pin's references; the table may lose its validation
    (``drop``: the paging mode's de-validation, this module's ``drop_references`` by
    default)."""
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                require("pinned", s.pinned[f]))
    choice, new = (drop or drop_references)(s.evolve(pinned=z3.Store(s.pinned, f, False)))
    return Transition(ok.holds, new, bv(0), bv(-abi.EINVAL), choice, check=ok)


def take_root(s: SymState, v: Word, f: Word) -> tuple[Check, Bool, SymState]:
    """get_page_and_type(f, PGT_root_page_table) and install ``f`` as ``v``'s base."""
    d = s.vcpu_domain[v]
    already = in_use(s, f, PGT.l2_page_table)
    l1s = new_l1_set(already)
    valid, choice, validated = validate_tables_check(s, f, l1s, d)
    ok = all_of(require("mfn_valid", mfn_valid(s, f)), require("owner", s.owner[f] == d),
                any_of(("in_use", require("in_use", already)), ("validate", all_of(
                    valid, require("no_type_refs", z3.Not(has_type_refs(s, f)))))))
    after = pick(already, s, validated)
    return ok, choice, after.evolve(base=z3.Store(after.base, v, f))


def spec_new_baseptr(s: SymState, v: Word, f: Word) -> Transition:
    """MMUEXT_NEW_BASEPTR (new_guest_cr3, 3.0.4): take a root reference on ``f``, then drop the
    old base. If ``f`` does not validate, Xen drops the old base first and retries; if it
    still fails the domain is crashed with no page table (``crash_new``)."""
    ok1, choice1, new1 = take_root(s, v, f)
    choice1d, new1 = drop_references(new1)
    choice_c, without_old = drop_references(s.evolve(base=z3.Store(s.base, v, bv(0))))
    ok2, choice2, new2 = take_root(without_old, v, f)
    # A retry always validates: dropping references only de-validates, so a frame in use as a
    # directory once the old base is gone was in use before, and the first attempt took it.
    retry = Branch("retry", z3.And(z3.Not(ok1.holds), ok2.holds), new2, bv(0),
                   z3.And(choice_c, choice2),
                   reasons=tuple(r for r in ok2.passes if not r[0].startswith("in_use")))
    # The crash leaves ``without_old``: only the choices of dropping the old base bind it. The
    # retry's validation choices (which RW targets take the writable type) describe a state
    # that never comes to be, and may have no solution at all (the frame that failed to
    # validate is one of them), which would make this branch impossible.
    crash = Branch("crash", z3.And(z3.Not(ok1.holds), z3.Not(ok2.holds)), without_old,
                   bv(-abi.EINVAL), choice_c, reasons=ok2.fails)
    # A first failure is always a retry or a crash: the call has no failure of its own.
    return Transition(ok1.holds, new1, bv(0), bv(-abi.EINVAL), z3.And(choice1, choice1d),
                      others=(retry, crash), check=Check(ok1.holds, ok1.passes, ()))


def spec_mmuext_no_state(s: SymState) -> Transition:
    """TLB flushes and INVLPG, PIN_L3/L4 on non-PAE ("Ignore pinning of subdirectories"):
    no page-table state changes, and the call succeeds. (The flushes of a vCPU set named by
    a guest bitmap fail with -EINVAL when the bitmap cannot be read, and MMUEXT_FLUSH_CACHE
    without physical-device privilege; neither is described here.)"""
    return Transition(z3.BoolVal(True), s, bv(0), bv(-abi.EINVAL), check=PASS)


def spec_mmuext_set_ldt(s: SymState, ptr: Word, ents: Word) -> Transition:
    """MMUEXT_SET_LDT (mm.c do_mmuext_op, Xen 3.0.4): the LDT at linear address ``ptr`` with
    ``ents`` entries becomes the vCPU's. Named conditions, in Xen's order ("Bad args to
    SET_LDT", -EINVAL): ``aligned`` (the base is page aligned), ``ents`` (at most 8192
    entries), ``access_ok`` (array_access_ok: the table ends at or below
    HYPERVISOR_VIRT_START, x86_32 uaccess.h; with at most 8192 entries of 8 bytes its size
    cannot wrap). The base and size are the vCPU's (guest_context.ldt_base, ldt_ents), not in
    this state, nor the shadow LDT mappings the change drops (invalidate_shadow_ldt): no state
    here changes."""
    end = z3.ZeroExt(32, ptr) + z3.ZeroExt(32, ents) * abi.LDT_ENTRY_SIZE
    ok = all_of(require("aligned", ptr & (abi.PAGE_SIZE - 1) == 0),
                require("ents", z3.ULE(ents, bv(abi.MAX_LDT_ENTRIES))),
                require("access_ok", z3.ULE(end, z3.BitVecVal(abi.HYPERVISOR_VIRT_START, 64))))
    return Transition(ok.holds, s, bv(0), bv(-abi.EINVAL), check=ok)


def pick(cond: Bool, a: SymState, b: SymState) -> SymState:
    """The state ``a`` where ``cond`` holds, else ``b`` (field by field; a field both leave
    as it was is not wrapped in a choice)."""
    return a.evolve(**{f: z3.If(cond, getattr(a, f), getattr(b, f)) for f in STATE_FIELDS
                       if not getattr(a, f).eq(getattr(b, f))})

"""The proof obligations: for each hypercall spec and each invariant, the invariant holds after
the call in every state where all invariants held before, for all arguments (unbounded).

An obligation is the unsatisfiability of: the invariants of the old state it assumes (as
``ForAll``s; ``ASSUMES``), the machine's standing assumptions, the spec's choice constraints
that bear on the goal (``read_choices``), the success condition, and the negated invariant
of the new state with its quantifiers replaced by named witnesses (so a counterexample names
the frame and entry that break it). Where a failing call still changes
state (NEW_BASEPTR crashing the domain), the failure branch is an obligation of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import z3

from xenspec.spec import (
    abi,
    builder_spec,
    cpu_spec,
    event_spec,
    grant_spec,
    memop_spec,
    mm_spec,
    mm_spec_pae,
    symbolic,
)
from xenspec.spec.invariants import (
    INVARIANTS,
    PROOF_PARTS,
    Invariant,
    own_l2,
    proof_invariants,
)
from xenspec.spec.mm_spec import Transition
from xenspec.spec.pagetable import PGT, pte_get_pfn, pte_present
from xenspec.spec.paging import COMPAT_PAE, NATIVE, Paging
from xenspec.spec.symbolic import SymState, SymView, bv

SpecBuilder = Callable[[SymState], Transition]


def _args(*names: str, width: int = 32) -> list[z3.BitVecRef]:
    return [z3.BitVec(n, width) for n in names]


def _mmu_update(s: SymState) -> Transition:
    v, val, fd = _args("v", "val", "fd")
    (ptr,) = _args("ptr", width=64)
    return mm_spec.spec_mmu_update(s, v, ptr, val, fd)


def _machphys_update(s: SymState) -> Transition:
    v, val, fd = _args("v", "val", "fd")
    (ptr,) = _args("ptr", width=64)
    return mm_spec.spec_machphys_update(s, v, ptr, val, fd)


def _update_va_mapping(s: SymState) -> Transition:
    v, va, val = _args("v", "va", "val")
    return mm_spec.spec_update_va_mapping(s, v, va, val)


def _pin(level: int) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        f, fd = _args("mfn", "fd")
        return mm_spec.spec_pin_table(s, f, level, fd)

    return build


def _unpin(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return mm_spec.spec_unpin_table(s, s.vcpu_domain[v], f)


def _new_baseptr(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return mm_spec.spec_new_baseptr(s, v, f)


def _no_state(s: SymState) -> Transition:
    return mm_spec.spec_mmuext_no_state(s)


def _set_ldt(s: SymState) -> Transition:
    ptr, ents = _args("linear_addr", "nr_ents")  # mmuext_op's arg1 and arg2 (xen.h)
    return mm_spec.spec_mmuext_set_ldt(s, ptr, ents)


def _set_trap_table(s: SymState) -> Transition:
    v, vector, flags, cs, address = _args("v", "vector", "flags", "cs", "address")
    return cpu_spec.spec_set_trap_table_entry(s, v, vector, flags, cs, address)


def _set_trap_table_null(s: SymState) -> Transition:
    (v,) = _args("v")
    return cpu_spec.spec_set_trap_table_null(s, v)


def _set_callbacks(s: SymState) -> Transition:
    v, ecs, eeip, fcs, feip = _args("v", "event_cs", "event_eip", "failsafe_cs", "failsafe_eip")
    return cpu_spec.spec_set_callbacks(s, v, ecs, eeip, fcs, feip)


def _callback_op_register(s: SymState) -> Transition:
    v, vcpu_id, type_, cs, eip = _args("v", "vcpu_id", "type", "cs", "eip")
    return cpu_spec.spec_callback_op_register(s, v, vcpu_id, type_, cs, eip)


def _stack_switch(s: SymState) -> Transition:
    v, ss, esp = _args("v", "ss", "esp")
    return cpu_spec.spec_stack_switch(s, v, ss, esp)


def iret_frame() -> cpu_spec.IretFrame:
    eax, eip, cs, eflags, esp3, ss3 = _args("eax", "eip", "cs", "eflags", "outer_esp", "outer_ss")
    return cpu_spec.IretFrame(eax, eip, cs, eflags, esp3, ss3,
                              z3.Bool("readable"), z3.Bool("outer_readable"))


def _iret(s: SymState) -> Transition:
    v, esp, ss = _args("v", "esp", "ss")
    return cpu_spec.spec_iret(s, v, esp, ss, iret_frame())


def _set_gdt(s: SymState) -> Transition:
    v, entries = _args("v", "entries")
    frames = _args(*[f"frame{k}" for k in range(cpu_spec.MAX_GDT_LIST)])
    return cpu_spec.spec_set_gdt(s, v, frames, entries)


def _update_descriptor(s: SymState) -> Transition:
    v, lo, hi = _args("v", "lo", "hi")
    (pa,) = _args("pa", width=64)
    return cpu_spec.spec_update_descriptor(s, v, pa, lo, hi)


def _map_grant_ref(by_pte: bool) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        v, addr, flags, ref, g, h = _args("v", "host_addr", "flags", "ref", "dom", "handle")
        return grant_spec.spec_map_grant_ref(s, v, addr, flags, ref, g, h, by_pte)

    return build


def _unmap_grant_ref(by_pte: bool) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        v, addr, h = _args("v", "host_addr", "handle")
        return grant_spec.spec_unmap_grant_ref(s, v, addr, h, by_pte)

    return build


def _gnttab_copy(src_gref: bool, dst_gref: bool) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        v, sref, sdom, dref, ddom = _args("v", "src", "src_dom", "dst", "dst_dom")
        return grant_spec.spec_copy(s, v, (src_gref, sref, sdom), (dst_gref, dref, ddom))

    return build


def _decrease_reservation(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return memop_spec.spec_decrease_reservation(s, v, f)


def _increase_reservation(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return memop_spec.spec_increase_reservation(s, v, f)


# (name, builder, the foreign-domain argument's name or None)
HYPERCALL_SPECS: tuple[tuple[str, SpecBuilder], ...] = (
    ("mmu_update/NORMAL_PT_UPDATE", _mmu_update),
    ("mmu_update/MACHPHYS_UPDATE", _machphys_update),
    ("update_va_mapping", _update_va_mapping),
    ("mmuext_op/PIN_L1_TABLE", _pin(1)),
    ("mmuext_op/PIN_L2_TABLE", _pin(2)),
    ("mmuext_op/UNPIN_TABLE", _unpin),
    ("mmuext_op/NEW_BASEPTR", _new_baseptr),
    ("mmuext_op/flushes,PIN_L3/L4", _no_state),
    ("mmuext_op/SET_LDT", _set_ldt),
    ("set_trap_table", _set_trap_table),
    ("set_trap_table/NULL", _set_trap_table_null),
    ("set_callbacks", _set_callbacks),
    ("callback_op/register", _callback_op_register),
    ("stack_switch", _stack_switch),
    ("iret", _iret),
    ("set_gdt", _set_gdt),
    ("update_descriptor", _update_descriptor),
    ("memory_op/decrease_reservation", _decrease_reservation),
    ("memory_op/increase_reservation", _increase_reservation),
    ("grant_table_op/map_grant_ref", _map_grant_ref(False)),
    ("grant_table_op/map_grant_ref/contains_pte", _map_grant_ref(True)),
    ("grant_table_op/unmap_grant_ref", _unmap_grant_ref(False)),
    ("grant_table_op/unmap_grant_ref/contains_pte", _unmap_grant_ref(True)),
    ("grant_table_op/copy", _gnttab_copy(True, False)),
    ("grant_table_op/copy/to_grant", _gnttab_copy(False, True)),
)


# The compat-pae profile's MMU hypercalls (spec/mm_spec_pae.py), proved against the same
# invariants over its paging structure (spec/paging.py, COMPAT_PAE); 64-bit entries.
PAE = "compat-pae: "


def _pae_mmu_update(level: int, validating: bool = False) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        v, fd = _args("v", "fd")
        ptr, val = _args("ptr", "val", width=64)
        return mm_spec_pae.spec_mmu_update(s, v, ptr, val, fd, level, validating)

    return build


def _pae_update_va_mapping(s: SymState) -> Transition:
    v, va = _args("v", "va")
    (val,) = _args("val", width=64)
    return mm_spec_pae.spec_update_va_mapping(s, v, va, val)


def _pae_pin(level: int) -> SpecBuilder:
    def build(s: SymState) -> Transition:
        f, fd = _args("mfn", "fd")
        return mm_spec_pae.spec_pin_table(s, f, level, fd)

    return build


def _pae_unpin(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return mm_spec_pae.spec_unpin_table(s, s.vcpu_domain[v], f)


def _pae_new_baseptr(s: SymState) -> Transition:
    v, f = _args("v", "mfn")
    return mm_spec_pae.spec_new_baseptr(s, v, f)


PAE_SPECS: tuple[tuple[str, SpecBuilder], ...] = (
    (PAE + "mmu_update/NORMAL_PT_UPDATE/L1", _pae_mmu_update(1)),
    (PAE + "mmu_update/NORMAL_PT_UPDATE/L2", _pae_mmu_update(2)),
    (PAE + "mmu_update/NORMAL_PT_UPDATE/L2/new L1", _pae_mmu_update(2, True)),
    (PAE + "mmu_update/NORMAL_PT_UPDATE/L3", _pae_mmu_update(3)),
    (PAE + "mmu_update/NORMAL_PT_UPDATE/L3/new L2", _pae_mmu_update(3, True)),
    (PAE + "mmu_update/NORMAL_PT_UPDATE/data", _pae_mmu_update(0)),
    (PAE + "update_va_mapping", _pae_update_va_mapping),
    (PAE + "mmuext_op/PIN_L1_TABLE", _pae_pin(1)),
    (PAE + "mmuext_op/PIN_L2_TABLE", _pae_pin(2)),
    (PAE + "mmuext_op/PIN_L3_TABLE", _pae_pin(3)),
    (PAE + "mmuext_op/UNPIN_TABLE", _pae_unpin),
    (PAE + "mmuext_op/NEW_BASEPTR", _pae_new_baseptr),
)


def paging_of_spec(hypercall: str) -> Paging:
    """The paging structure an obligation's states have."""
    return COMPAT_PAE if hypercall.startswith(PAE) else NATIVE


def fresh_state(hypercall: str) -> SymState:
    """The state before the call, of the hypercall's profile."""
    pae = paging_of_spec(hypercall) is COMPAT_PAE
    return SymState.fresh("old", entry_bits=64 if pae else 32)


def state_facts(s: SymState) -> tuple[z3.BoolRef, ...]:
    """What holds of every machine state: vCPUs belong to guest domains, no RAM belongs to
    DOMID_IO, frame 0 is Xen's (0 names no frame in a base pointer or GDT slot)."""
    v, f = z3.BitVecs("ax_v ax_f", 32)
    guest = z3.ForAll([v], z3.ULT(s.vcpu_domain[v], bv(abi.DOMID_FIRST_RESERVED)))
    no_io = z3.ForAll([f], s.owner[f] != bv(abi.DOMID_IO))
    xen_frame0 = s.owner[bv(0)] == bv(abi.DOMID_XEN)
    return guest, no_io, xen_frame0


def assumptions(s: SymState) -> z3.BoolRef:
    """The machine's state facts (``state_facts``), and FOREIGNDOM is the caller unless the
    caller is privileged (set_foreigndom), and always names a domain (never the free list's
    owner)."""
    fd, vv = z3.BitVecs("fd v", 32)
    d = s.vcpu_domain[vv]
    foreign = z3.And(z3.Or(fd == d, fd == bv(abi.DOMID_IO), s.privileged[d]),
                     fd != memop_spec.FREE)
    return z3.And(*state_facts(s), foreign)


# What an obligation assumes of the old state: the MMU invariants rely on one another; the
# CPU-interface invariants need only themselves (and INV-ISO the MMU's base-pointer rule).
# Assuming fewer invariants proves more, and keeps the solver off quantifiers it does not need.
OWN_L1, OWN_L2 = "INV-OWN (L1 entries)", "INV-OWN (L2 entries)"
MMU_INVARIANTS = ("INV-HOLE", "INV-NOWRPT", OWN_L1, OWN_L2, "INV-PIN", "INV-BASE", "INV-L2REF")
FREE_REF = ("INV-FREE-REF (tables)", "INV-FREE-REF (frames)", "INV-FREE-REF (vCPUs)")
ISO = "INV-ISO (vCPU frames)"
ASSUMES: dict[str, tuple[str, ...]] = {
    # An installed GDT frame is validated only by the descriptor part (GDT-typed frames are).
    "INV-PRIV (selectors)": ("INV-PRIV (selectors)", "INV-PRIV (descriptors)"),
    "INV-PRIV (descriptors)": ("INV-PRIV (descriptors)",),
    ISO: (ISO, "INV-BASE"),
    # A writable grant PTE's handle: INV-OWN says which handle a grant PTE belongs to.
    "INV-GNT-RO": (*MMU_INVARIANTS, "INV-GNT-RO"),
    # The entries of tables in use name their owners' frames (or FOREIGNDOM's), never the free
    # list's: ownership is what the table part needs. With every MMU invariant assumed, the
    # compat-pae L2 update validating a new L1 took 32 s to 42 s; with these, 4 to 6 s.
    "INV-FREE-REF (tables)": (OWN_L1, OWN_L2, "INV-FREE-REF (tables)"),
    # Pins, tables in use, GDTs and base pointers are taken with get_page, which checks the
    # owner: the other two parts need only themselves.
    "INV-FREE-REF (frames)": ("INV-FREE-REF (frames)",),
    "INV-FREE-REF (vCPUs)": ("INV-FREE-REF (vCPUs)",),
    # Tables in use name tables in use: the directories' ownership is enough (the L1 part
    # with its grant clause made these obligations slow).
    "INV-L2REF (directories)": tuple(i for i in MMU_INVARIANTS if i != OWN_L1),
    # An L3's entries name L2s in use: INV-L2REF's parts suffice. For the compat-pae
    # NEW_BASEPTR obligation: 2 s so; 23 s with INV-HOLE too; over 10 min with INV-L2REF
    # assumed whole instead of its parts.
    "INV-L2REF (L3s)": ("INV-L2REF (directories)", "INV-L2REF (L3s)"),
    # INV-OWN's L3 level: the L3's entries name the owner's L2s; ownership above L1 suffices
    # (compat-pae NEW_BASEPTR: 0.9 to 2.7 s so over Z3 seeds 0 to 3; with every MMU invariant
    # assumed, 2 s, 29 s, or unknown within 120 s).
    "INV-OWN (L3 entries)": (OWN_L2,),
    # No writable mapping of a table needs no more either: with the L1 part, E-matching over
    # its grant clause took mmu_update's from 2 s to 30-75 s, depending on the random seed.
    "INV-NOWRPT": tuple(i for i in MMU_INVARIANTS if i != OWN_L1),
    # A frame Xen writes into has a type reference (mm_spec's has_type_refs: Xen's own), so
    # it takes no other type than the writable one it has; nothing else is needed.
    "INV-XENPAGE": ("INV-XENPAGE",),
}


# What an obligation about a given hypercall also assumes: the heap's frames are unreferenced.
SPEC_ASSUMES: dict[str, tuple[str, ...]] = {
    "memory_op/decrease_reservation": FREE_REF,
    "memory_op/increase_reservation": FREE_REF,
}


def assumable() -> tuple[Invariant, ...]:
    """What an obligation may assume, in order: the invariants as proved (proof_invariants),
    and besides its parts INV-L2REF whole, and INV-OWN's part above L1 whole (``own_l2``, in
    the place of its two levels). Obligations assume these whole: proved by level, each is
    assumed as one formula, the one it was before the split, since the solver's time on the
    other obligations depends on their text (an assumption of INV-L2REF's two parts instead
    took the compat-pae L1 update against INV-GNT-RO from under 1 s to 54 s)."""
    l2ref = next(i for i in INVARIANTS if i.id == "INV-L2REF")
    own = next(i for i in PROOF_PARTS["INV-OWN"] if i.part == "directory entries")
    own_above_l1 = replace(own, check=own_l2, part="L2 entries")
    out: list[Invariant] = []
    for inv in proof_invariants():
        if inv.id == l2ref.id and l2ref not in out:
            out.append(l2ref)
        if inv is own:
            out.append(own_above_l1)
        out.append(inv)
    return tuple(out)


def assumed(inv: Invariant, hypercall: str = "", bounded: bool = False) -> tuple[str, ...]:
    """The invariants an obligation assumes of the state before the call. The counterexample
    search in small machines (``bounded``) assumes every MMU invariant too: its quantifiers
    range over the machine's frames only, so without INV-OWN's L1 part (entries name the
    table owner's frames, which are in the machine) an entry may name a frame outside it
    that no invariant constrains, and the search reports states no domain can reach. Its
    counterexamples are states that satisfy every invariant."""
    extra = MMU_INVARIANTS if bounded else ()
    return (*ASSUMES.get(inv.label, MMU_INVARIANTS), *SPEC_ASSUMES.get(hypercall, ()), *extra)


@dataclass
class Obligation:
    hypercall: str
    invariant: Invariant
    branch: str  # "success", or the name of another outcome (NEW_BASEPTR's retry, crash)
    solver: z3.Solver
    witnesses: list[tuple[str, z3.BitVecRef]]
    old: SymState
    new: SymState

    @property
    def name(self) -> str:
        suffix = "" if self.branch == "success" else f" [{self.branch}]"
        return f"{self.hypercall} preserves {self.invariant.label}{suffix}"


def build(hypercall: str, builder: SpecBuilder, inv: Invariant, branch: str) -> Obligation:
    """Assemble one obligation in a fresh solver (fresh names restart for each obligation, so
    its SMT-LIB text, the cache key, does not depend on what was built before)."""
    symbolic.reset_fresh()
    old = fresh_state(hypercall)
    paging = paging_of_spec(hypercall)
    t = builder(old)
    if branch == "success":
        cond, new, choice = t.ok, t.new, t.choice
    else:
        (other,) = [b for b in t.others if b.name == branch]
        cond, new, choice = other.cond, other.new, other.choice
    solver = z3.Solver()
    bounded = symbolic.SCOPE.frames is not None
    for known in assumable():
        if known.label in assumed(inv, hypercall, bounded):
            fact = known.check(SymView(old, paging=paging))
            if not (z3.is_and(fact) and fact.num_args() == 0):  # no tables of the part
                solver.add(fact)
    goal = SymView(new, witness=True, paging=paging)
    negated = z3.Not(inv.check(goal))
    if not bounded:  # the unbounded proof, not the counterexample search
        choice = z3.And(*read_choices(choice, z3.And(cond, negated)))
    solver.add(assumptions(old), choice, cond)
    solver.add(negated)
    solver.add(*symbolic.scope_constraints(old, goal.witnesses))
    return Obligation(hypercall, inv, branch, solver, goal.witnesses, old, new)


def _conjuncts(e: z3.BoolRef) -> list[z3.BoolRef]:
    return [c for a in e.children() for c in _conjuncts(a)] if z3.is_and(e) else [e]


def _fresh_constants(e: z3.ExprRef) -> dict[str, z3.ExprRef]:
    """The fresh symbols (``symbolic.fresh_name``: a spec's choices) in ``e``, by name."""
    return {x.decl().name(): x for x in symbolic.uninterpreted_constants(e)
            if "!" in x.decl().name()}


def _read_by(e: z3.ExprRef, symbols: dict[str, z3.ExprRef]) -> set[str]:
    """The names of ``symbols`` that ``e`` reads: each replaced in ``e`` by Z3 (a walk of the
    term in C, where walking the negated goal in Python took a fifth of an easy obligation's
    time)."""
    out = set()
    for name, x in symbols.items():
        other = z3.FreshConst(x.sort())
        if not z3.substitute(e, (x, other)).eq(e):
            out.add(name)
    return out


def read_choices(choice: z3.BoolRef, rest: z3.BoolRef) -> list[z3.BoolRef]:
    """The conjuncts of a spec's choice constraints that bear on ``rest`` (the call's
    condition and the negated goal): those about a choice symbol that ``rest`` reads, or that a
    conjunct kept reads, and those about no choice symbol. The others constrain only choices
    the goal never looks at (set_gdt's fixed-up descriptors, for a goal about selectors); the
    proofs leave them out, which can only make an obligation harder to prove, never prove a
    false one (the bounded counterexample search keeps them all)."""
    conjuncts = _conjuncts(z3.BoolVal(True) if choice is True else choice)
    constants = [_fresh_constants(c) for c in conjuncts]
    parts = [(c, set(names)) for c, names in zip(conjuncts, constants, strict=True)]
    read = _read_by(rest, {n: x for names in constants for n, x in names.items()})
    kept = [c for c, names in parts if not names]
    pending = [(c, names) for c, names in parts if names]
    grew = True
    while grew:
        grew = False
        for c, names in list(pending):
            if names & read:
                kept.append(c)
                read |= names
                pending.remove((c, names))
                grew = True
    return kept


@functools.cache
def all_obligations() -> tuple[tuple[str, SpecBuilder, Invariant, str], ...]:
    """Every (hypercall, invariant, branch) triple, in a fixed order."""
    out = []
    for name, builder in (*HYPERCALL_SPECS, *PAE_SPECS):
        symbolic.reset_fresh()
        branches = ["success"] + [b.name for b in builder(fresh_state(name)).others]
        for branch in branches:
            for inv in proof_invariants():
                out.append((name, builder, inv, branch))
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Obligations about a rule rather than a hypercall's effect on the MMU state.
# ----------------------------------------------------------------------------------------------
def _descriptor_rule_is_safe() -> z3.Solver:
    """INV-PRIV, descriptor part: whatever two words a guest passes to set_gdt or
    update_descriptor, what the rule accepts is safe as Xen stores it (spec.desc)."""
    from xenspec.spec.desc import descriptor_is_safe, descriptor_rule

    lo, hi = z3.BitVecs("lo hi", 32)
    ok, out_lo, out_hi = descriptor_rule(lo, hi)
    solver = z3.Solver()
    solver.add(ok, z3.Not(descriptor_is_safe(out_lo, out_hi)))
    return solver


def _descriptor_rule_is_idempotent() -> z3.Solver:
    """A descriptor the rule stored passes the rule again, unchanged (a guest reading back its
    GDT and writing it again changes nothing)."""
    from xenspec.spec.desc import descriptor_rule

    lo, hi = z3.BitVecs("lo hi", 32)
    ok, out_lo, out_hi = descriptor_rule(lo, hi)
    ok2, lo2, hi2 = descriptor_rule(out_lo, out_hi)
    solver = z3.Solver()
    solver.add(ok, z3.Not(z3.And(ok2, lo2 == out_lo, hi2 == out_hi)))
    return solver


def _iret_never_resumes_ring0() -> z3.Solver:
    """INV-PRIV for the guest's own registers: whatever frame a guest hands iret, it resumes
    outside ring 0 with IOPL 0, virtual-8086 mode off and interrupts enabled, or is crashed."""
    esp, ss = z3.BitVecs("esp ss", 32)
    r = cpu_spec.iret_result(esp, ss, iret_frame())
    safe = z3.And((r.cs & 3) != 0, (r.eflags & abi.X86_EFLAGS_IOPL) == 0,
                  (r.eflags & abi.X86_EFLAGS_VM) == 0, (r.eflags & abi.X86_EFLAGS_IF) != 0)
    solver = z3.Solver()
    solver.add(r.ok, z3.Not(safe))
    return solver


def _writes_need_writable_grant() -> z3.Solver:
    """INV-GNT-RO's other half: map_grant_ref makes a writable mapping, and a copy writes into
    a granted frame, only when the grant entry permits access to the caller and does not say
    GTF_readonly."""
    symbolic.reset_fresh()
    s = SymState.fresh("old")
    v, addr, flags, ref, g, h, src = _args("v", "host_addr", "flags", "ref", "dom", "handle",
                                         "src")
    d = s.vcpu_domain[v]

    def allowed(granter: z3.BitVecRef) -> z3.BoolRef:
        sflags, sdomid, _ = grant_spec.grant_entry(s, granter, ref)
        return z3.And(sflags & abi.GTF_type_mask == abi.GTF_permit_access, sdomid == d,
                      sflags & abi.GTF_readonly == 0)

    goals = [z3.And(grant_spec.spec_map_grant_ref(s, v, addr, flags, ref, g, h, by_pte).ok,
                    flags & abi.GNTMAP_readonly == 0, z3.Not(allowed(g)))
             for by_pte in (False, True)]
    # A copy's DOMID_SELF names the caller's own table (grant_table.c, __gnttab_copy).
    copy = grant_spec.spec_copy(s, v, (False, src, bv(abi.DOMID_SELF)), (True, ref, g))
    goals.append(z3.And(copy.ok, z3.Not(allowed(z3.If(g == abi.DOMID_SELF, d, g)))))
    solver = z3.Solver()
    solver.add(z3.Or(*goals))
    return solver


def _heap_hands_out_unreferenced_frames() -> z3.Solver:
    """A frame is never handed to a domain while anything references it: increase_reservation
    and populate_physmap take a frame of the free list, and by INV-FREE-REF nothing references
    such a frame."""
    symbolic.reset_fresh()
    s = SymState.fresh("old")
    v, f = _args("v", "mfn")
    t = memop_spec.spec_increase_reservation(s, v, f)
    free_ref = next(i for i in INVARIANTS if i.id == "INV-FREE-REF")
    solver = z3.Solver()
    solver.add(assumptions(s), free_ref.check(SymView(s)), t.ok,
               z3.Not(memop_spec.unreferenced(s, f)))
    return solver


def _grants_not_revoked(builder: SpecBuilder) -> Callable[[], z3.Solver]:
    """A grant in use cannot be revoked underneath its user: when an unprivileged domain other
    than the grantee makes the call, the grantee's grant PTE (in its L1 in use, mapping the
    handle's frame) and the handle stay as they were."""

    def build() -> z3.Solver:
        symbolic.reset_fresh()
        old = SymState.fresh("old")
        t = builder(old)
        new = t.new
        caller = old.vcpu_domain[z3.BitVec("v", 32)]
        ld, h = z3.BitVecs("grantee handle", 32)
        f, i = z3.Select(old.mt_l1, ld, h), z3.Select(old.mt_idx, ld, h)

        def live(s: SymState) -> z3.BoolRef:
            e = z3.Select(s.mem, f, i)
            return z3.And((z3.Select(s.mt_flags, ld, h) & abi.GNTMAP_host_map) != 0,
                          mm_spec.in_use(s, f, PGT.l1_page_table), s.owner[f] == ld,
                          pte_present(e), pte_get_pfn(e) == z3.Select(s.mt_frame, ld, h))

        solver = z3.Solver()
        for known in assumable():
            if known.label in (OWN_L1, OWN_L2, "INV-BASE"):  # the caller's tables are its own
                solver.add(known.check(SymView(old)))
        solver.add(assumptions(old), t.choice, t.ok, caller != ld,
                   z3.Not(old.privileged[caller]), live(old))
        unchanged = z3.And(live(new), z3.Select(new.mem, f, i) == z3.Select(old.mem, f, i),
                           z3.Select(new.mt_flags, ld, h) == z3.Select(old.mt_flags, ld, h))
        solver.add(z3.Not(unchanged))
        return solver

    return build


GRANT_SPECS = tuple((n, b) for n, b in HYPERCALL_SPECS if n.startswith("grant_table_op/"))

RULE_OBLIGATIONS: tuple[tuple[str, Callable[[], z3.Solver]], ...] = (
    ("descriptor rule (set_gdt, update_descriptor) yields only safe descriptors: INV-PRIV",
     _descriptor_rule_is_safe),
    ("descriptor rule is idempotent", _descriptor_rule_is_idempotent),
    ("iret resumes the guest outside ring 0, IOPL 0, interrupts on: INV-PRIV",
     _iret_never_resumes_ring0),
    ("memory_op gives a domain only frames nothing references: INV-FREE-REF",
     _heap_hands_out_unreferenced_frames),
    ("map_grant_ref and copy write only through grants without GTF_readonly: INV-GNT-RO",
     _writes_need_writable_grant),
    *((f"{n} by another domain leaves a grantee's mapping in place: grants not revoked",
       _grants_not_revoked(b)) for n, b in GRANT_SPECS),
    # Event channels: each EVTCHNOP preserves each event invariant (spec.event_spec).
    *event_spec.obligation_list(),
    # The domain builder's start-of-day state satisfies each invariant (spec.builder_spec),
    # and a machine it makes meets them all at once: the invariants are not vacuous.
    *builder_spec.obligation_list(),
    ("the invariants together are satisfiable (not vacuous): a start_of_day machine meets "
     "them all",
     lambda: builder_spec.invariants_satisfiable(state_facts)),
)


def obligation_names() -> list[str]:
    """The names of every obligation, in ``prove_one`` index order."""
    names = [f"{n} preserves {inv.label}" + ("" if b == "success" else f" [{b}]")
             for n, _, inv, b in all_obligations()]
    return names + [name for name, _ in RULE_OBLIGATIONS]

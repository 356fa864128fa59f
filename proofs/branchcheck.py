"""Spec-guided refinement: every named branch of a transition spec, checked on the model.

For each branch of a hypercall's spec (``spec.branches``) the solver is asked for a small
machine state and arguments that take exactly that branch: the machine is a small reference
model (``Machine``: Xen's frames, one domain of a few frames with one vCPU, free frames), its
fixed part is what the model built, and the solver chooses the domain's frames' types,
validated and pinned bits, their entries at a few indices (``INDICES``: the first slots, the
last guest slot, the Xen slots), the vCPU's base pointer and the call's arguments. The state
satisfies the invariants (``spec.invariants``, expanded over the machine), and the
reference-count abstraction holds of it (a page-table frame is validated exactly when a pin,
a base pointer or a page directory in use references it: INV-VALID).

That state is then put into the model directly: the frame table's types and flags, machine
memory, the vCPU's ``guest_table``, and counts recomputed from the references that exist
(``spec.invariants.references``, as INV-COUNT defines them). The model must then satisfy every
invariant, counters included. Its handler runs (one mmu_update request, one mmuext_op, one
update_va_mapping), and the outcome is compared with the spec twice: ``check_refinement``
(some outcome the spec allows), and the branch itself: the spec, on the state the model was
in and with the choices the model made, takes that branch and produces the model's return
value and state. A model that takes another branch fails the second check even where the
first would pass.

Where a branch has a boundary (``Family.hints``: a virtual address just below or at
HYPERVISOR_VIRT_START, the last guest slot against the first Xen slot, the last machine frame
against the first beyond RAM), the first state asked for sits on it when it can. Further
states are asked for with different values of ``Family.signature`` (the types of the frames
the call reads), so that one branch is exercised on each kind of frame that can take it.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import z3

from xenspec.proofs import runner
from xenspec.proofs.obligations import HYPERCALL_SPECS, assumable
from xenspec.proofs.refinement import (
    Snapshot,
    check_refinement,
    observed_choices,
    possible_outcomes,
    same_state,
)
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.memory import PGT_pinned, PGT_validated
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.pvguest import ARG_PAGES, PVGuest, issue
from xenspec.refmodel.view import ConcreteView, check_invariants
from xenspec.sharedfiles import update_json_dict
from xenspec.spec import abi, cpu_spec, mm_spec, symbolic
from xenspec.spec import branches as spec_branches
from xenspec.spec.branches import NamedBranch, branches
from xenspec.spec.desc import descriptor_rule
from xenspec.spec.invariants import references
from xenspec.spec.mm_spec import Transition
from xenspec.spec.pagetable import PGT, PGT_root_page_table, pte_get_pfn, pte_present
from xenspec.spec.symbolic import Scope, SymState, SymView, bv

W = z3.BitVecSort(32)
FIRST_XEN_SLOT = abi.L2_PAGETABLE_FIRST_XEN_SLOT
# The entry indices the solver may fill: the first two, the last guest slot of a directory,
# the first Xen slot, Xen's slots in use (M2P, linear, per-domain) and the last entry.
INDICES: tuple[int, ...] = (0, 1, FIRST_XEN_SLOT - 1, FIRST_XEN_SLOT, abi.LINEAR_PT_SLOT,
                            abi.PERDOMAIN_SLOT, abi.PERDOMAIN_SLOT + 1, 1023)
MACHINE_FRAMES = 16
DOMAIN_PAGES = 5
TYPES = (PGT.none, PGT.l1_page_table, PGT.l2_page_table, PGT.writable_page)


@dataclass(frozen=True)
class FrameScope(Scope):
    """A bounded scope whose frame quantifiers range over ``frame_list`` only: the frames the
    solver may change and those their entries may name. The others are Xen's and free frames
    the model built, whose invariants the concrete check (``check_invariants``) covers."""

    frame_list: tuple[int, ...] = ()

    def domain(self, kind: str) -> list[int] | None:
        if kind == "frame":
            return list(self.frame_list)
        return super().domain(kind)


@dataclass
class Machine:
    """The small machine: Xen's frames, one domain of ``DOMAIN_PAGES`` frames, free frames."""

    hv: Hypervisor
    d: Domain

    @staticmethod
    def build() -> Machine:
        hv = Hypervisor(MACHINE_FRAMES)
        return Machine(hv, hv.create_domain(DOMAIN_PAGES))

    @property
    def v(self) -> Vcpu:
        return self.d.vcpus[0]


@dataclass(frozen=True)
class Family:
    """How to check one hypercall spec on the model: its builder (obligations.HYPERCALL_SPECS,
    arguments as named constants), how to run the model's handler with those arguments, and
    which terms distinguish the states worth trying."""

    name: str
    run: Callable[[Any, dict[str, int]], int]  # (Machine or CpuMachine, arguments) -> rc
    args: tuple[str, ...]
    # Constraints on the arguments: they touch only the machine's indices, name frames near it.
    domain: Callable[[dict[str, z3.ExprRef]], list[z3.BoolRef]]
    hints: Callable[[dict[str, z3.ExprRef]], list[z3.BoolRef]] = lambda a: []
    signature: Callable[[SymState, dict[str, z3.ExprRef]], list[z3.ExprRef]] = (
        lambda s, a: [])
    # The argument that names the frame the call acts on ("ptr", "pa" or "mfn"), tried one
    # frame at a time; "" if none.
    frame: str = ""
    # The machine the family runs on: "mmu" (``Machine``: the solver chooses the domain's
    # frames), or "cpu" (``CpuMachine``: a guest with page tables and the CPU interface; the
    # solver chooses the ``open`` frames of it, or nothing but the arguments).
    bench: str = "mmu"
    open: int = 0
    # Put the arguments where the handler reads them (guest memory), before the state is taken.
    prepare: Callable[[Any, dict[str, int]], None] = lambda m, a: None
    # What the spec's state does not hold but the branch decides (iret: the crash and the
    # registers): None, or what differs.
    observe: Callable[[Any, dict[str, int], str], str | None] = lambda m, a, b: None
    # Boundaries each branch is tried at, one at a time, beside its other states (a limit
    # and one past it): a state for every one the branch can take.
    boundaries: Callable[[dict[str, z3.ExprRef]], list[z3.BoolRef]] = lambda a: []


@dataclass
class Case:
    """One branch taken once: the state and arguments the solver chose, and the verdict."""

    family: str
    branch: str
    args: dict[str, int]
    problem: str | None


@dataclass
class Report:
    """Which branches the checks took (``hit``) and which they could not reach."""

    hit: dict[str, list[Case]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    def failures(self) -> list[Case]:
        return [c for cs in self.hit.values() for c in cs if c.problem is not None]

    def lines(self) -> list[str]:
        out = []
        for name in sorted(set(self.hit) | set(self.unreachable)):
            cases = self.hit.get(name, [])
            if cases:
                out.append(f"hit {len(cases)}x  {name}")
            else:
                out.append(f"NOT HIT    {name}: {self.unreachable.get(name, '?')}")
        return out


# ----------------------------------------------------------------------------------------------
# The solver's side: a machine state with the domain's frames left open.
# ----------------------------------------------------------------------------------------------
def _table(values: dict[int, Any], default: Any) -> z3.ArrayRef:
    """An array given by its values at a few points, as an If-chain under a lambda: a read at
    any index simplifies to bit-vector terms (no array theory for the solver)."""
    x = z3.BitVec("x", 32)
    body = default
    for i, v in sorted(values.items(), reverse=True):
        body = z3.If(x == i, v, body)
    return z3.Lambda([x], body)


def open_state(m: Machine, base: Snapshot) -> tuple[SymState, dict[Any, Any]]:
    """The model's state with the domain's frames (types, flags, entries at ``INDICES``) and
    the vCPU's base pointer left to the solver; (state, the unknowns by frame)."""
    fixed = base.encode()
    frames = list(m.d.page_list)
    unknown: dict[Any, Any] = {"frames": frames}
    n = base.nr_frames
    typ: dict[int, Any] = {f: bv(base.type[f]) for f in range(n)}
    val: dict[int, Any] = {f: z3.BoolVal(base.validated[f]) for f in range(n)}
    pin: dict[int, Any] = {f: z3.BoolVal(base.pinned[f]) for f in range(n)}
    for f in frames:
        t, vd, p = z3.BitVec(f"gen.type{f}", 32), z3.Bool(f"gen.valid{f}"), z3.Bool(f"gen.pin{f}")
        unknown[f] = (t, vd, p)
        typ[f], val[f], pin[f] = t, vd, p
    words = {(f, i): z3.BitVec(f"gen.mem{f}.{i}", 32) for f in frames for i in INDICES}
    fixed_words = {k: bv(e) for k, e in base.entries.items() if k[0] not in frames}
    unknown["mem"] = words
    x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
    body: Any = bv(0)
    for (f, i), e in sorted({**fixed_words, **words}.items(), reverse=True):
        body = z3.If(z3.And(x == f, k == i), e, body)
    mem = z3.Lambda([x, k], body)
    b = z3.BitVec("gen.base", 32)
    unknown["base"] = b
    s = fixed.evolve(
        owner=_table({f: bv(o) for f, o in enumerate(base.owner)}, bv(0)),
        type=_table(typ, bv(0)), validated=_table(val, z3.BoolVal(False)),
        pinned=_table(pin, z3.BoolVal(False)), mem=mem, base=_table({0: b}, bv(0)),
        xen_written=_table({f: z3.BoolVal(w) for f, w in enumerate(base.xen_written)},
                           z3.BoolVal(False)),
        gdt_ref=_table({}, z3.BoolVal(False)),
    )
    return s, unknown


def model_facts(s: SymState, unknown: dict[Any, Any]) -> list[z3.BoolRef]:
    """What the model's frame table adds to the invariants: the types in use; a writable
    frame is validated and an untyped one is not; a page-table frame is validated exactly
    when something holds a type reference on it (INV-VALID): a pin, the base pointer, or an
    entry of a page directory in use (other than the directory's map of itself)."""
    frames: list[int] = unknown["frames"]
    out = []
    b = unknown["base"]
    out.append(z3.Or(b == 0, *[b == f for f in frames]))
    for f in frames:
        t, vd, p = unknown[f]
        out.append(z3.Or(*[t == int(x) for x in TYPES]))
        out.append(z3.Implies(t == int(PGT.writable_page), vd))
        out.append(z3.Implies(t == int(PGT.none), z3.Not(vd)))
        referenced = [p, b == f]
        for g in frames:
            if g == f:
                continue
            for i in INDICES:
                if i >= FIRST_XEN_SLOT:
                    continue
                e = z3.Select(s.mem, bv(g), bv(i))
                referenced.append(z3.And(mm_spec.in_use(s, bv(g), PGT.l2_page_table),
                                         pte_present(e), pte_get_pfn(e) == f))
        table = z3.Or(t == int(PGT.l1_page_table), t == int(PGT.l2_page_table))
        out.append(z3.Implies(table, vd == z3.Or(*referenced)))
    return out


# The invariants that constrain the states asked for: those about page tables and base
# pointers. The machine has no grant, CPU-interface or Xen-written state for the others to
# speak of (and the concrete check of the state built covers them all).
GENERATION_INVARIANTS = ("INV-HOLE", "INV-NOWRPT", "INV-OWN (L1 entries)",
                         "INV-OWN (L2 entries)", "INV-PIN", "INV-BASE",
                         "INV-L2REF (directories)", "INV-L2REF (L3s)")


def invariants(s: SymState) -> list[z3.BoolRef]:
    """GENERATION_INVARIANTS on ``s``, each as the obligations assume it (``assumable``)."""
    view = SymView(s)
    chosen = [inv for inv in assumable() if inv.label in GENERATION_INVARIANTS]
    assert len(chosen) == len(GENERATION_INVARIANTS), "an invariant named here is not known"
    return [inv.check(view) for inv in chosen]


# ----------------------------------------------------------------------------------------------
# The model's side: put a solver's state into the model.
# ----------------------------------------------------------------------------------------------
def install(m: Machine, unknown: dict[Any, Any], model: z3.ModelRef) -> None:
    """Write the solver's state into the model's frame table, memory and vCPU, and set every
    count to the references that exist."""
    hv, frames = m.hv, unknown["frames"]

    def num(term: z3.ExprRef) -> int:
        return int(model.eval(term, model_completion=True).as_long())

    for f in frames:
        t, vd, p = unknown[f]
        hv.frames.type[f] = num(t)
        flags = int(hv.frames.flags[f]) & ~(PGT_validated | PGT_pinned)
        flags |= PGT_validated if z3.is_true(model.eval(vd, model_completion=True)) else 0
        flags |= PGT_pinned if z3.is_true(model.eval(p, model_completion=True)) else 0
        hv.frames.flags[f] = flags
        for i in INDICES:
            hv.memory.write_entry(f, i, num(unknown["mem"][(f, i)]))
    m.v.guest_table = num(unknown["base"])
    general, typed = references(ConcreteView(hv))
    for f in frames:
        hv.frames.count[f] = general.get(f, 0)
        hv.frames.type_count[f] = typed.get(f, 0)


# ----------------------------------------------------------------------------------------------
# The hypercall families.
# ----------------------------------------------------------------------------------------------
def _mmuext(cmd: int, arg1: str = "mfn", arg2: str = ""
            ) -> Callable[[Machine, dict[str, int]], int]:
    """mmuext_op command ``cmd`` with the arguments named ``arg1`` and ``arg2`` (0 if none)."""
    def run(m: Machine, a: dict[str, int]) -> int:
        m.hv.mm.set_foreigndom(m.d, abi.DOMID_SELF)
        try:
            return m.hv.mm.mmuext_op_one(m.v, cmd, a.get(arg1, 0), a.get(arg2, 0))
        finally:
            m.hv.mm.foreign = None

    return run


def _set_ldt_boundaries(a: dict[str, z3.ExprRef]) -> list[z3.BoolRef]:
    """SET_LDT's: 8192 entries and one more; a table ending at the hole and one entry past
    it; a base one byte off a page boundary."""
    ptr, ents = (z3.ZeroExt(32, a[n]) for n in ("linear_addr", "nr_ents"))
    end = ptr + ents * abi.LDT_ENTRY_SIZE
    return [ents == abi.MAX_LDT_ENTRIES, ents == abi.MAX_LDT_ENTRIES + 1,
            end == abi.HYPERVISOR_VIRT_START, end == abi.HYPERVISOR_VIRT_START + 8,
            ptr & (abi.PAGE_SIZE - 1) == 1]


def _mmu_update(m: Machine, a: dict[str, int]) -> int:
    m.hv.mm.set_foreigndom(m.d, abi.DOMID_SELF)
    try:
        return m.hv.mm.mmu_update_one(m.d, abi.MMU_UPDATE_T.pack(a["ptr"], a["val"]))
    finally:
        m.hv.mm.foreign = None


def _update_va_mapping(m: Machine, a: dict[str, int]) -> int:
    return m.hv.mm.do_update_va_mapping(m.v, a["va"], a["val"], 0, abi.UVMF_NONE)


def _one_of(x: z3.ExprRef, values: tuple[int, ...]) -> z3.BoolRef:
    return z3.Or(*[x == i for i in values])


def _frame_arg(f: z3.ExprRef) -> list[z3.BoolRef]:
    return [z3.ULE(f, bv(MACHINE_FRAMES + 1))]


def _frame_hints(f: z3.ExprRef) -> list[z3.BoolRef]:
    return [f == MACHINE_FRAMES - 1, f == MACHINE_FRAMES]


def _ptr_domain(a: dict[str, z3.ExprRef], cmd: int) -> list[z3.BoolRef]:
    ptr = a["ptr"]
    return [z3.Extract(63, 44, ptr) == 0, z3.ULE(z3.Extract(43, 12, ptr), bv(MACHINE_FRAMES + 1)),
            _one_of(z3.ZeroExt(22, z3.Extract(11, 2, ptr)), INDICES),
            z3.Extract(1, 0, ptr) == cmd]


def _ptr_hints(a: dict[str, z3.ExprRef]) -> list[z3.BoolRef]:
    index = z3.ZeroExt(22, z3.Extract(11, 2, a["ptr"]))
    frame = z3.Extract(43, 12, a["ptr"])
    return [index == FIRST_XEN_SLOT - 1, index == FIRST_XEN_SLOT, index == 1023,
            *_frame_hints(frame)]


def _ptr_signature(s: SymState, a: dict[str, z3.ExprRef]) -> list[z3.ExprRef]:
    return [s.type[z3.Extract(43, 12, a["ptr"])], s.type[pte_get_pfn(a["val"])]]


def _va_domain(a: dict[str, z3.ExprRef]) -> list[z3.BoolRef]:
    va = a["va"]
    return [_one_of(z3.LShR(va, 22), INDICES), _one_of(z3.LShR(va, 12) & 0x3FF, INDICES)]


def _va_signature(s: SymState, a: dict[str, z3.ExprRef]) -> list[z3.ExprRef]:
    l2e = z3.Select(s.mem, s.base[bv(0)], z3.LShR(a["va"], 22))
    return [s.type[pte_get_pfn(l2e)], a["val"] & abi._PAGE_PRESENT]


def _mfn_signature(s: SymState, a: dict[str, z3.ExprRef]) -> list[z3.ExprRef]:
    return [s.type[a["mfn"]]]


def _mmuext_on_frame(cmd: str, args: tuple[str, ...]) -> Family:
    """The family of an mmuext_op command that acts on the frame ``mfn``."""
    return Family(f"mmuext_op/{cmd}", _mmuext(getattr(abi, f"MMUEXT_{cmd}")), args,
                  lambda a: _frame_arg(a["mfn"]), lambda a: _frame_hints(a["mfn"]),
                  _mfn_signature, "mfn")


# ----------------------------------------------------------------------------------------------
# The CPU-interface families (spec.cpu_spec).
# ----------------------------------------------------------------------------------------------
GDT_LIST = cpu_spec.MAX_GDT_LIST
CPU_FRAMES = 64
# The descriptors the solver may write into an open frame: the first and the last of the page.
DESC_WORDS = (0, 1, 1022, 1023)
CPU_TYPES = (PGT.none, PGT.l1_page_table, PGT.writable_page, PGT.gdt_page, PGT.ldt_page)


@dataclass
class CpuMachine:
    """A guest of 30 frames (21 mapped: argument pages, page tables) on a 64-frame machine with
    the CPU interface (``PVPlatform``). Its domain (0) has a second vCPU on the same page
    directory, so that a call can come from a vCPU other than domain 0's first."""

    hv: Hypervisor
    pv: PVPlatform
    g: PVGuest

    @staticmethod
    def build() -> CpuMachine:
        hv = Hypervisor(CPU_FRAMES)
        pv = PVPlatform(hv)
        g = PVGuest(hv, 30, nr_mapped=21)
        d = g.domain
        second = Vcpu(1, d)
        d.vcpus.append(second)
        pv.setup_domain(d)
        # Its base pointer holds a root reference on the directory, as VCPUOP_initialise's.
        assert hv.mm.get_page_and_type_from_pagenr(g.l2_mfn, PGT_root_page_table, d)
        second.guest_table = g.l2_mfn
        return CpuMachine(hv, pv, g)

    @property
    def d(self) -> Domain:
        return self.g.domain

    @property
    def v(self) -> Vcpu:
        return self.g.vcpu

    def open_frames(self, n: int) -> list[int]:
        """The last ``n`` of the guest's frames: not mapped, no type, no type references."""
        return list(self.d.page_list[-n:]) if n else []

    def scope_frames(self, n: int) -> list[int]:
        """The open frames and one frame of each other kind a call may name: the page
        directory, the L1, an argument page and another mapped page (writable, mapped RW), a
        frame not mapped, the shared_info frame (Xen writes into it), a frame of Xen's and a
        free one."""
        g, hv = self.g, self.hv
        kinds = [g.l2_mfn, g.first_l1_mfn, g.mfn(0), g.mfn(ARG_PAGES),
                 self.d.page_list[-n - 1], self.pv.darch(self.d).shared_info_mfn,
                 self.d.perdomain_pt[0], hv.free_list[-1]]
        return sorted({*self.open_frames(n), *kinds})


def open_cpu_state(m: CpuMachine, base: Snapshot, n: int) -> tuple[SymState, dict[Any, Any]]:
    """The machine's state with ``n`` of the guest's frames left to the solver: their types,
    validated bits and the words of ``DESC_WORDS``; (state, the unknowns by frame)."""
    s = base.encode()
    frames = m.open_frames(n)
    unknown: dict[Any, Any] = {"frames": frames}
    typ, val, mem = s.type, s.validated, s.mem
    words = {}
    for f in frames:
        t, vd = z3.BitVec(f"gen.type{f}", 32), z3.Bool(f"gen.valid{f}")
        unknown[f] = (t, vd)
        typ, val = z3.Store(typ, bv(f), t), z3.Store(val, bv(f), vd)
        for i in DESC_WORDS:
            words[(f, i)] = z3.BitVec(f"gen.mem{f}.{i}", 32)
            mem = z3.Store(mem, bv(f), bv(i), words[(f, i)])
    unknown["mem"] = words
    return s.evolve(type=typ, validated=val, mem=mem), unknown


def cpu_facts(unknown: dict[Any, Any]) -> list[z3.BoolRef]:
    """An open frame has no type references (nothing maps it): it is validated exactly when
    its type is one that stays validated at type count 0 (writable, GDT, LDT); a GDT or LDT
    frame holds its descriptors as the rule stored them (INV-PRIV)."""
    out = []
    for f in unknown["frames"]:
        t, vd = unknown[f]
        desc = z3.Or(t == int(PGT.gdt_page), t == int(PGT.ldt_page))
        out.append(z3.Or(*[t == int(x) for x in CPU_TYPES]))
        out.append(vd == z3.Or(t == int(PGT.writable_page), desc))
        for j in DESC_WORDS[::2]:
            lo, hi = unknown["mem"][(f, j)], unknown["mem"][(f, j + 1)]
            ok, fixed_lo, fixed_hi = descriptor_rule(lo, hi)
            out.append(z3.Implies(desc, z3.And(ok, fixed_lo == lo, fixed_hi == hi)))
    return out


def install_cpu(m: CpuMachine, unknown: dict[Any, Any], model: z3.ModelRef) -> None:
    """Write the solver's choices for the open frames into the model."""
    hv = m.hv
    for f in unknown["frames"]:
        t, vd = unknown[f]
        hv.frames.type[f] = _value(model, t)
        flags = int(hv.frames.flags[f]) & ~(PGT_validated | PGT_pinned)
        hv.frames.flags[f] = flags | (PGT_validated if _value(model, vd) else 0)
        for i in DESC_WORDS:
            hv.memory.write_entry(f, i, _value(model, unknown["mem"][(f, i)]))
    general, typed = references(ConcreteView(hv))
    for f in unknown["frames"]:
        hv.frames.count[f] = general.get(f, 0)
        hv.frames.type_count[f] = typed.get(f, 0)


def cpu_context(family: Family) -> Context:
    template = CpuMachine.build()
    base = Snapshot.take(template.hv)
    frames = template.scope_frames(family.open)
    # Index quantifiers range over the words in use in those frames and the open words.
    indices = sorted({i for (f, i) in base.entries if f in frames} | set(DESC_WORDS))
    scope = FrameScope(frames=CPU_FRAMES, vcpus=len(base.bases), indices=tuple(indices),
                       frame_list=tuple(frames))
    previous = symbolic.SCOPE
    symbolic.set_scope(scope)
    try:
        symbolic.reset_fresh()
        s, unknown = open_cpu_state(template, base, family.open)
        t = _spec_with_choices(family.name, s, scope.frame_list)
        a = _args(family)
        common = [z3.simplify(c) for c in [*cpu_facts(unknown), *family.domain(a)]]
        named = {b.name: b for b in branches(t)}
    finally:
        symbolic.set_scope(previous)
    return Context(family, scope, s, unknown, t, a, common, named)


def _issue(m: CpuMachine, name: str, *args: int, vcpu: int = 0) -> int:
    return issue(m.hv, m.d.vcpus[vcpu], HYPERCALL_NUMBERS[name], *args)


def _byte(x: z3.ExprRef) -> z3.BoolRef:
    return z3.ULE(x, bv(0xFF))


def _in_frames(f: z3.ExprRef, frames: list[int]) -> z3.BoolRef:
    """``f`` is one of ``frames`` or the first frame beyond the machine."""
    return _one_of(f, (*frames, CPU_FRAMES))


def _trap_entry_args(m: CpuMachine, a: dict[str, int]) -> None:
    entry = abi.TRAP_INFO_T.pack(a["vector"], a["flags"], a["cs"], a["address"])
    m.g.write_args(entry + abi.TRAP_INFO_T.pack(0, 0, 0, 0))


def _callback_args(m: CpuMachine, a: dict[str, int]) -> None:
    m.g.write_args(abi.CALLBACK_REGISTER_T.pack(a["type"], 0, a["cs"], a["eip"]))


def _gdt_args(m: CpuMachine, a: dict[str, int]) -> None:
    m.g.write_args(b"".join(a[f"frame{k}"].to_bytes(4, "little") for k in range(GDT_LIST)))


class _IretCpu:
    """The registers of the vCPU at its iret hypercall (the model reads them through
    ``ArchVcpu.cpu``)."""

    def __init__(self, regs: CpuUserRegs) -> None:
        self.regs = regs

    def user_regs(self) -> CpuUserRegs:
        return self.regs


def _iret_stacks(m: CpuMachine) -> list[tuple[int, bool, bool]]:
    """Where iret's frame may be, with whether its four words and the outer two can be read:
    in the argument area; the last 16 bytes before the first page not mapped; that page; the
    highest address whose 40 bytes end at HYPERVISOR_VIRT_START (access_ok holds, nothing is
    mapped there) and the next one (access_ok fails)."""
    end = m.g.va(21)  # the guest maps pages 0..20
    top = abi.HYPERVISOR_VIRT_START - 40
    return [(m.g.arg_va + 0x100, True, True), (end - 16, True, False), (end, False, False),
            (top, False, False), (top + 1, False, False)]


def _iret_domain(a: dict[str, z3.ExprRef], stacks: list[tuple[int, bool, bool]]
                 ) -> list[z3.BoolRef]:
    return [a["v"] == 0, z3.ULE(a["ss"], bv(0xFFFF)), z3.Or(*[
        z3.And(a["esp"] == esp, a["readable"] == r, a["outer_readable"] == o)
        for esp, r, o in stacks])]


def _iret_frame(m: CpuMachine, a: dict[str, int]) -> None:
    words = [a[n] for n in ("eax", "eip", "cs", "eflags", "outer_esp", "outer_ss")]
    frame = b"".join(w.to_bytes(4, "little") for w in words)
    if a["readable"]:
        assert m.hv.copy_to_guest(m.v, a["esp"], frame[: 24 if a["outer_readable"] else 16])
    regs = CpuUserRegs(esp=a["esp"], ss=a["ss"], cs=abi.FLAT_RING1_CS)
    m.pv.arch(m.v).cpu = _IretCpu(regs)


def _iret_observed(m: CpuMachine, a: dict[str, int], branch: str) -> str | None:
    """The domain is crashed exactly on a failure; on success the registers are the spec's."""
    ok = branch.startswith("ok")
    if m.d.is_running != ok:
        return f"branch {branch}: the domain is {'running' if m.d.is_running else 'crashed'}"
    if not ok:
        return None
    f = cpu_spec.IretFrame(bv(a["eax"]), bv(a["eip"]), bv(a["cs"]), bv(a["eflags"]),
                           bv(a["outer_esp"]), bv(a["outer_ss"]), z3.BoolVal(bool(a["readable"])),
                           z3.BoolVal(bool(a["outer_readable"])))
    r = cpu_spec.iret_result(bv(a["esp"]), bv(a["ss"]), f)
    cpu = m.pv.arch(m.v).cpu
    assert isinstance(cpu, _IretCpu)
    regs = cpu.regs
    got = (regs.eip, regs.cs, regs.eflags, regs.esp, regs.ss)
    want = tuple(z3.simplify(x).as_long() for x in (r.eip, r.cs, r.eflags, r.esp, r.ss))
    mask = m.pv.vcpu_info_read8(m.v, abi.VCPU_INFO_evtchn_upcall_mask)
    if got != want or mask != z3.simplify(r.upcall_mask).as_long():
        return f"iret resumed at {got}, mask {mask}; the spec says {want}"
    return None


@functools.cache
def _template() -> CpuMachine:
    """The CPU machine as built (the argument domains name its frames and addresses)."""
    return CpuMachine.build()


def _pa_frame(a: dict[str, z3.ExprRef]) -> z3.ExprRef:
    return z3.Extract(43, 12, a["pa"])


CPU_FAMILIES: tuple[Family, ...] = (
    Family("set_trap_table", lambda m, a: _issue(m, "set_trap_table", m.g.arg_va),
           ("v", "vector", "flags", "cs", "address"),
           lambda a: [a["v"] == 0, _byte(a["vector"]), _byte(a["flags"]),
                      z3.ULE(a["cs"], bv(0xFFFF))],
           lambda a: [a["cs"] == 0, a["vector"] == 0xFF],
           lambda s, a: [a["cs"] & 3, a["vector"] == abi.SYSCALL_VECTOR],
           bench="cpu", prepare=_trap_entry_args),
    Family("set_trap_table/NULL", lambda m, a: _issue(m, "set_trap_table", 0), ("v",),
           lambda a: [a["v"] == 0], bench="cpu"),
    Family("set_callbacks",
           lambda m, a: _issue(m, "set_callbacks", a["event_cs"], a["event_eip"],
                               a["failsafe_cs"], a["failsafe_eip"]),
           ("v", "event_cs", "event_eip", "failsafe_cs", "failsafe_eip"),
           lambda a: [a["v"] == 0],
           lambda a: [a["event_cs"] == 0, a["failsafe_cs"] == 0xFFFFFFFF],
           lambda s, a: [a["event_cs"] & 3, a["failsafe_cs"] & 3], bench="cpu"),
    Family("callback_op/register",
           lambda m, a: _issue(m, "callback_op", abi.CALLBACKOP_register, m.g.arg_va,
                               vcpu=a["v"]),
           ("v", "vcpu_id", "type", "cs", "eip"),
           lambda a: [z3.ULE(a["v"], bv(1)), a["vcpu_id"] == a["v"],
                      z3.ULE(a["type"], bv(0xFFFF))],
           lambda a: [a["type"] == abi.CALLBACKTYPE_nmi + 1, a["cs"] == 0],
           lambda s, a: [a["type"], a["cs"] & 3], bench="cpu", prepare=_callback_args),
    Family("stack_switch", lambda m, a: _issue(m, "stack_switch", a["ss"], a["esp"]),
           ("v", "ss", "esp"), lambda a: [a["v"] == 0], lambda a: [a["ss"] == 0],
           lambda s, a: [a["ss"] & 3], bench="cpu"),
    Family("iret", lambda m, a: _issue(m, "iret"),
           ("v", "esp", "ss", "eax", "eip", "cs", "eflags", "outer_esp", "outer_ss",
            "readable", "outer_readable"),
           lambda a: _iret_domain(a, _iret_stacks(_template())),
           lambda a: [a["cs"] & 3 == 0, a["cs"] & 3 == 2],
           lambda s, a: [a["esp"], a["cs"] & 3], bench="cpu", prepare=_iret_frame,
           observe=_iret_observed),
    Family("set_gdt", lambda m, a: _issue(m, "set_gdt", m.g.arg_va, a["entries"]),
           ("v", "entries", *[f"frame{k}" for k in range(GDT_LIST)]),
           lambda a: [a["v"] == 0, z3.ULE(a["entries"], bv(2 * abi.MAX_GUEST_GDT_ENTRIES)),
                      *[_in_frames(a[f"frame{k}"], _template().scope_frames(3))
                        for k in range(GDT_LIST)]],
           lambda a: [a["entries"] == abi.MAX_GUEST_GDT_ENTRIES,
                      a["entries"] == abi.MAX_GUEST_GDT_ENTRIES + 1],
           lambda s, a: [s.type[a["frame0"]], a["entries"] == 0],
           bench="cpu", open=3, prepare=_gdt_args),
    Family("update_descriptor",
           lambda m, a: _issue(m, "update_descriptor", a["pa"] & 0xFFFFFFFF, a["pa"] >> 32,
                               a["lo"], a["hi"]),
           ("v", "pa", "lo", "hi"),
           lambda a: [a["v"] == 0, z3.Extract(63, 44, a["pa"]) == 0,
                      _in_frames(_pa_frame(a), _template().scope_frames(3))],
           lambda a: [z3.Extract(11, 3, a["pa"]) == 511],
           lambda s, a: [s.type[_pa_frame(a)], a["hi"] & (abi._SEGMENT_P | abi._SEGMENT_S)],
           frame="pa", bench="cpu", open=3),
)


FAMILIES: tuple[Family, ...] = (
    Family("mmu_update/NORMAL_PT_UPDATE", _mmu_update, ("ptr", "val", "v", "fd"),
           lambda a: _ptr_domain(a, abi.MMU_NORMAL_PT_UPDATE), _ptr_hints, _ptr_signature,
           "ptr"),
    Family("mmu_update/MACHPHYS_UPDATE", _mmu_update, ("ptr", "val", "v", "fd"),
           lambda a: _ptr_domain(a, abi.MMU_MACHPHYS_UPDATE),
           lambda a: _frame_hints(z3.Extract(43, 12, a["ptr"])), frame="ptr"),
    Family("update_va_mapping", _update_va_mapping, ("va", "val", "v"), _va_domain,
           lambda a: [a["va"] == abi.HYPERVISOR_VIRT_START - 1,
                      a["va"] == abi.HYPERVISOR_VIRT_START],
           _va_signature),
    _mmuext_on_frame("PIN_L1_TABLE", ("mfn", "fd")),
    _mmuext_on_frame("PIN_L2_TABLE", ("mfn", "fd")),
    _mmuext_on_frame("UNPIN_TABLE", ("mfn", "v")),
    _mmuext_on_frame("NEW_BASEPTR", ("mfn", "v")),
    Family("mmuext_op/flushes,PIN_L3/L4", _mmuext(abi.MMUEXT_TLB_FLUSH_LOCAL), (),
           lambda a: []),
    Family("mmuext_op/SET_LDT", _mmuext(abi.MMUEXT_SET_LDT, "linear_addr", "nr_ents"),
           ("linear_addr", "nr_ents"), lambda a: [], boundaries=_set_ldt_boundaries),
    *CPU_FAMILIES,
)

# Branches no check can take, and why. A condition the model decides before the spec's
# handler is reached (the dispatch on the request's command) is not a branch of the handler.
UNREACHABLE: dict[str, str] = {
    "mmu_update/NORMAL_PT_UPDATE fail/cmd":
        "the model dispatches on the command (mm.c do_mmu_update's switch): a request with "
        "another command reaches another handler, not this one",
    "mmu_update/MACHPHYS_UPDATE fail/cmd":
        "the model dispatches on the command (mm.c do_mmu_update's switch)",
    # The base pointer is a directory in use (INV-BASE), whose present guest entries name
    # frames in use it owns (INV-OWN, INV-L2REF): the checks stay, as in Xen's
    # guest_map_l1e, but no state satisfying the invariants fails them.
    "update_va_mapping fail/l1_mfn":
        "implied by INV-BASE, INV-OWN and INV-L2REF: a directory in use names RAM only",
    "update_va_mapping fail/l1_validated":
        "implied by INV-L2REF: a directory in use names only tables in use",
    # A frame that is no table in use and cannot take the writable type has a reference of
    # another type (has_type_refs): only a GDT some vCPU has installed, Xen's own reference
    # being of the writable type. The machine these checks build installs no GDT (gdt_ref is
    # False in open_state); the CPU-interface checks are where GDTs are installed.
    "mmu_update/NORMAL_PT_UPDATE fail/plain/writable_type":
        "only a frame of an installed GDT is refused the writable type outside tables in use, "
        "and the MMU checks' machine installs no GDT",
}


# ----------------------------------------------------------------------------------------------
# Checking one branch.
# ----------------------------------------------------------------------------------------------
def _builders() -> dict[str, Callable[[SymState], Transition]]:
    return dict(HYPERCALL_SPECS)


def spec_with_args(family: Family, values: dict[str, int]) -> Callable[[SymState], Transition]:
    """The family's spec with its argument constants replaced by the concrete values."""
    builder = _builders()[family.name]

    def spec(s: SymState) -> Transition:
        t = builder(s)
        return _substitute_transition(t, values)

    return spec


def _subst(x: Any, pairs: list[tuple[z3.ExprRef, z3.ExprRef]]) -> Any:
    return z3.substitute(x, *pairs) if pairs and isinstance(x, z3.ExprRef) else x


WIDE_ARGS = ("ptr", "pa")  # 64-bit arguments
BOOL_ARGS = ("readable", "outer_readable")  # iret: whether the frame's words can be read


def _pairs(values: dict[str, int]) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
    out: list[tuple[z3.ExprRef, z3.ExprRef]] = []
    for name, x in values.items():
        if name in BOOL_ARGS:
            out.append((z3.Bool(name), z3.BoolVal(bool(x))))
            continue
        width = 64 if name in WIDE_ARGS else 32
        out.append((z3.BitVec(name, width), z3.BitVecVal(x, width)))
    return out


def _substitute_transition(t: Transition, values: dict[str, int]) -> Transition:
    """``t`` with the arguments' values; its conditions, choices and return values simplified
    as well: a condition the values decide becomes True or False, and with it whatever it
    guards (set_gdt's quantified choices, in a branch the arguments rule out) leaves the
    solver's query instead of being instantiated over the whole machine's memory."""
    pairs = _pairs(values)

    def state(s: SymState) -> SymState:
        return s.evolve(**{f: _subst(getattr(s, f), pairs) for f in symbolic.STATE_FIELDS})

    def cond(x: Any) -> Any:
        x = _subst(x, pairs)
        return z3.simplify(x) if isinstance(x, z3.ExprRef) else x

    others = tuple(mm_spec.Branch(b.name, cond(b.cond), state(b.new), cond(b.rc),
                                  cond(b.choice), tuple((n, cond(c)) for n, c in b.reasons))
                   for b in t.others)
    check = t.check
    if check is not None:
        from xenspec.spec.branches import Check
        check = Check(cond(check.holds), tuple((n, cond(c)) for n, c in check.passes),
                      tuple((n, cond(c)) for n, c in check.fails))
    return Transition(cond(t.ok), state(t.new), cond(t.rc), cond(t.err), cond(t.choice),
                      others, check)


def _solver(timeout_s: int = 30) -> z3.Solver:
    solver = z3.Solver()
    solver.set("timeout", timeout_s * 1000)
    return solver


def check_branch(before: Snapshot, after: Snapshot, rc: int,
                 spec: Callable[[SymState], Transition], name: str) -> str | None:
    """None if the spec, on the model's state before the call and with the choices the model
    made, takes branch ``name`` and ends as the model did; else what differs."""
    symbolic.set_concrete(True)  # a concrete state (as in check_refinement)
    try:
        return _check_branch(before, after, rc, spec, name)
    finally:
        symbolic.set_concrete(False)


def _check_branch(before: Snapshot, after: Snapshot, rc: int,
                  spec: Callable[[SymState], Transition], name: str) -> str | None:
    indices = sorted(before.indices() | after.indices() | set(INDICES))
    symbolic.reset_fresh()
    old = before.encode()
    if name.startswith("fail"):
        # A failure: which reason the spec gives is not observable; the model must fail
        # with the spec's errno and leave the state alone, on a state where the spec takes
        # this branch (for some choice: the choice the model would have made is undone).
        # The choice constraints are not asked for: they bind the state a success would
        # leave, and a failure often is exactly their having no solution (an RW entry to a
        # frame that cannot take the writable type leaves no set to retype).
        t = spec(old)
        (b,) = [x for x in branches(t) if x.name == name]
        if not z3.is_true(z3.simplify(t.err == rc)):
            return f"branch {name}: the model returned {rc}, the spec {z3.simplify(t.err)}"
        query = z3.And(b.cond, same_state(old, after, indices, (old, before)))
    else:
        mm_spec.CHOOSE = observed_choices(before, after)
        try:
            t = spec(old)
            (b,) = [x for x in branches(t) if x.name == name]
            if name.startswith("ok"):
                rc_spec, new, choice = t.rc, t.new, t.choice
            else:
                (o,) = [x for x in t.others if name.startswith(f"other/{x.name}")]
                rc_spec, new, choice = o.rc, o.new, o.choice
            if not z3.is_true(z3.simplify(rc_spec == rc)):
                return f"branch {name}: the model returned {rc}, the spec {z3.simplify(rc_spec)}"
            if name.startswith("ok"):
                query = z3.And(b.cond, choice, same_state(new, after, indices, (old, before)))
            else:
                # Another outcome (NEW_BASEPTR's retry or crash): it ends as the model did
                # with the model's choices; why it ends so (which check of the retried
                # validation failed or passed) is asked for some choice, as for a failure: a
                # failed validation leaves no trace of the choices it made.
                query = z3.And(z3.Not(t.ok), o.cond, choice,
                               same_state(new, after, indices, (old, before)))
        finally:
            mm_spec.CHOOSE = None
        if not name.startswith("ok") and not _holds_for_some_choice(old, spec, name):
            return f"the spec does not take branch {name} on this state for any choice"
    answer = _decide(query)
    if answer == z3.sat:
        return None
    return f"the model's outcome is not that of branch {name} (solver: {answer})"


def _decide(query: z3.BoolRef) -> z3.CheckSatResult:
    """sat or unsat for a query on a concrete state; an "unknown" (a time limit reached on a
    busy machine, or a search gone astray) is asked again once, with another random seed
    and a longer limit, before it is reported."""
    solver = _solver(60)
    solver.add(query)
    answer = solver.check()
    if answer != z3.unknown:
        return answer
    solver = _solver(300)
    solver.set("random_seed", 7)
    solver.add(query)
    return solver.check()


def _holds_for_some_choice(old: SymState, spec: Callable[[SymState], Transition],
                           name: str) -> bool:
    t = spec(old)
    (b,) = [x for x in branches(t) if x.name == name]
    return bool(_decide(b.cond) == z3.sat)


def solve_branch(common: list[z3.BoolRef], b: NamedBranch, extra: list[z3.BoolRef],
                 choice: z3.BoolRef, pins: list[list[tuple[z3.ExprRef, z3.ExprRef]]] | None = None,
                 ) -> z3.ModelRef | None:
    """A model of the family's common constraints, the branch and ``extra``; None if there
    is none. A fresh solver each time (Z3's incremental mode is much slower on these). The
    frame an argument names is tried one value at a time (``pins``: substitutions), which
    lets every read of the state simplify to the frame's own fields. With several pins the
    terms are simplified once first, so that each pin's simplification starts from the
    smaller terms (the same formulas: the grant families' checks took 53 s before, 23 s
    after, with the same satisfiable and unsatisfiable pins)."""
    if pins is None:
        pins = [[]]
    terms = [z3.BoolVal(x) if isinstance(x, bool) else x for x in (b.cond, choice, *extra)]
    if len(pins) > 1:
        terms = [z3.simplify(c) for c in terms]
    for pin in pins:
        solver = _solver(20)
        pinned = terms
        if pin:
            pinned = [z3.substitute(c, *pin) for c in terms] + [x == y for x, y in pin]
        solver.add(*common, *[z3.simplify(c) for c in pinned])
        if solver.check() == z3.sat:
            return solver.model()
    return None


ARG_NAMES = ("ptr", "val", "v", "fd", "va", "mfn", "vector", "flags", "cs", "address",
             "event_cs", "event_eip", "failsafe_cs", "failsafe_eip", "vcpu_id", "type", "eip",
             "ss", "esp", "eax", "eflags", "outer_esp", "outer_ss", "readable",
             "outer_readable", "entries", "lo", "hi", "pa", "linear_addr", "nr_ents",
             *[f"frame{k}" for k in range(GDT_LIST)])


def _args(family: Family) -> dict[str, z3.ExprRef]:
    return {n: z3.Bool(n) if n in BOOL_ARGS else z3.BitVec(n, 64 if n in WIDE_ARGS else 32)
            for n in ARG_NAMES}


@dataclass
class Context:
    """One family's solver set up once: the template machine, the open state, the spec on it
    (under the bounded scope), and a solver holding the invariants and argument ranges."""

    family: Family
    scope: Scope
    s: SymState
    unknown: dict[Any, Any]
    t: Transition
    args: dict[str, z3.ExprRef]
    common: list[z3.BoolRef]
    branches: dict[str, NamedBranch]
    # _no_earlier_outcome's constraints, by the outcome they stop before (the same for
    # every failure of the family): built once, the choices they quantify found by a walk
    # of the whole spec.
    earlier: dict[str, list[z3.BoolRef]] = field(default_factory=dict)


_CONTEXTS: dict[str, Context] = {}


def context(family: Family) -> Context:
    ctx = _CONTEXTS.get(family.name)
    if ctx is not None:
        return ctx
    if family.bench == "cpu":
        ctx = _CONTEXTS[family.name] = cpu_context(family)
        return ctx
    template = Machine.build()
    base = Snapshot.take(template.hv)
    # Frame quantifiers range over the domain's frames, frame 0 and one free frame: only the
    # domain's frames can be tables, hold references or take a type.
    interesting = sorted({0, *template.d.page_list, template.hv.free_list[-1]})
    scope = FrameScope(frames=MACHINE_FRAMES, vcpus=1, indices=INDICES,
                       frame_list=tuple(interesting))
    previous = symbolic.SCOPE
    symbolic.set_scope(scope)
    try:
        symbolic.reset_fresh()
        s, unknown = open_state(template, base)
        t = _spec_with_choices(family.name, s, scope.frame_list)
        a = _args(family)
        common = [*invariants(s), *model_facts(s, unknown), a["v"] == 0,
                  a["fd"] == template.d.domain_id, *family.domain(a)]
        common = [z3.simplify(c) for c in common]
        named = {b.name: b for b in branches(t)}
    finally:
        symbolic.set_scope(previous)
    ctx = _CONTEXTS[family.name] = Context(family, scope, s, unknown, t, a, common, named)
    return ctx


def _spec_with_choices(name: str, s: SymState, frames: tuple[int, ...]) -> Transition:
    """Family ``name``'s spec on ``s``, its choices fresh Booleans over ``frames``."""
    mm_spec.CHOOSE = _choices(frames)
    try:
        return _builders()[name](s)
    finally:
        mm_spec.CHOOSE = None


def _choices(frames: tuple[int, ...]) -> Callable[[str], Any]:
    """The spec's choices as fresh Booleans, one per frame that can be chosen (instead of
    fresh arrays): the solver then sees bit-vectors and Booleans only."""
    count = iter(range(1 << 30))

    def choose(name: str) -> Any:
        k = next(count)
        if name in ("validate_target", "freed"):
            return z3.Bool(f"choice.{name}.{k}")
        return _table({f: z3.Bool(f"choice.{name}.{k}.{f}") for f in frames},
                      z3.BoolVal(False))

    return choose


def branch_names(family: Family) -> list[str]:
    """The names of ``family``'s branches, from its spec (``spec.branches``)."""
    symbolic.reset_fresh()
    return [b.name for b in branches(_builders()[family.name](SymState.fresh("old")))]


def family(name: str) -> Family:
    (f,) = [f for f in FAMILIES if f.name == name]
    return f


def _pins(ctx: Context) -> list[list[tuple[z3.ExprRef, z3.ExprRef]]]:
    """One substitution per frame the call's frame argument may name: the domain's frames
    first, then the others of the scope, then the first frame beyond the machine."""
    name = ctx.family.frame
    if not name:
        return [[]]
    assert isinstance(ctx.scope, FrameScope) and ctx.scope.frames is not None
    frames = [*ctx.unknown["frames"], *[f for f in ctx.scope.frame_list
                                         if f not in ctx.unknown["frames"]], ctx.scope.frames]
    if name == "mfn":
        return [[(ctx.args["mfn"], bv(f))] for f in frames]
    ptr = ctx.args[name]
    low = z3.BitVec("ptr.low", 12)
    return [[(ptr, z3.Concat(z3.BitVecVal(0, 20), bv(f), low))] for f in frames]


def states_for(ctx: Context, b: NamedBranch, per_branch: int,
               accept: Callable[[z3.ModelRef], bool] = lambda m: True) -> list[z3.ModelRef]:
    """Up to ``per_branch`` states taking branch ``b`` that ``accept`` takes (at most twice as
    many more are tried): the first on a boundary of the family's hints where one is, the
    others differing in the family's signature. For the MMU, no outcome before ``b``'s may be
    possible for any choice of the spec (``_no_earlier_outcome``). A failure's state need not
    meet the spec's choice constraints (no choice lets the call succeed); nor need a
    CPU-interface call's: its choices constrain only the state after it (set_gdt's fixed-up
    memory and released frames), and some choice fits every state before it."""
    free = b.kind == "fail" or ctx.family.bench == "cpu"
    choice = _choice_of(ctx.t, b) if not free else z3.BoolVal(True)
    pins = _pins(ctx)
    mmu = ctx.family.bench == "mmu"
    first = _earlier(ctx, b) if mmu else []
    hints = ctx.family.hints(ctx.args)
    # The first state tried: one where the branch's check is the only one that fails, so that
    # a model without that check lets the call through; then one on a boundary of the hints.
    attempts = [[*first, *_sole_failure(ctx, b)]] if mmu and b.kind == "fail" else []
    attempts += [[*first, z3.Or(*hints)]] if hints else []
    model = None
    for extra in [*attempts, first]:
        model = solve_branch(ctx.common, b, extra, choice, pins)
        if model is not None:
            break
    found: list[z3.ModelRef] = []
    blocked: list[z3.BoolRef] = []
    sig = ctx.family.signature(ctx.s, ctx.args)
    tries = 3 * per_branch
    while model is not None and len(found) < per_branch and tries > 0:
        tries -= 1
        if accept(model):
            found.append(model)
        if not sig:
            break
        blocked.append(z3.Or(*[x != model.eval(x, model_completion=True) for x in sig]))
        model = solve_branch(ctx.common, b, [*first, *blocked], choice, pins)
    # Then a state on each of the family's boundaries the branch can take, each on its own.
    for edge in ctx.family.boundaries(ctx.args):
        model = solve_branch(ctx.common, b, [*first, edge], choice, pins)
        if model is not None and accept(model):
            found.append(model)
    return found


def check_one(family: Family, branch: str, per_branch: int = 3) -> list[Case]:
    """Check branch ``branch`` of ``family`` on the model: one case per state found (none:
    no state of the small machine takes the branch)."""
    return [run() for run in cases_for(family, branch, per_branch)]


def cases_for(family: Family, branch: str, per_branch: int = 3) -> list[Callable[[], Case]]:
    """The checks of branch ``branch`` of ``family``, one per state the solver finds, each to
    run on the model: the states depend on the spec alone, so a check can be run again on a
    changed model (benchmarks/mutation/branch_judge.py runs them on mutants)."""
    ctx = context(family)
    b = ctx.branches[branch]
    previous = symbolic.SCOPE
    symbolic.set_scope(ctx.scope)
    try:
        found = states_for(ctx, b, per_branch, _first_outcome_is(family, ctx, b)
                           if b.kind != "ok" and family.bench == "mmu" else lambda m: True)
    finally:
        symbolic.set_scope(previous)
    # The checks on concrete states use the unbounded scope, as check_refinement's other
    # callers do: over concrete arrays the solver decides it, and the terms stay small.
    return [functools.partial(run_case, family, branch, ctx.unknown, m, ctx.args)
            for m in found]


def _sole_failure(ctx: Context, b: NamedBranch) -> list[z3.BoolRef]:
    """The spec built with the requirement that fails ``b`` negated (``spec.branches.FLIP``)
    succeeds: on such a state that requirement is the only one that fails."""
    assert isinstance(ctx.scope, FrameScope), "the MMU checks' scope"
    with spec_branches.flipped(b.name.split("/")[-1]):
        t = _spec_with_choices(ctx.family.name, ctx.s, ctx.scope.frame_list)
    return [z3.simplify(z3.And(t.ok, t.choice))]


def _earlier(ctx: Context, b: NamedBranch) -> list[z3.BoolRef]:
    """``_no_earlier_outcome`` for the family's spec, built once per outcome."""
    key = b.kind if b.kind != "other" else "other/" + b.name.split("/")[1]
    if key not in ctx.earlier:
        ctx.earlier[key] = _no_earlier_outcome(ctx.t, b)
    return ctx.earlier[key]


def _no_earlier_outcome(t: Transition, b: NamedBranch) -> list[z3.BoolRef]:
    """For a branch other than success: whatever the spec's choices (the per-frame Booleans
    of ``_choices``), no outcome the spec puts before ``b``'s is possible; a failure comes
    after every outcome. A branch holds for some choice, while Xen makes one: without this,
    the solver picks a state where the call fails for its choice and succeeds for Xen's."""
    if b.kind == "ok":
        return []
    outcomes = [z3.And(t.ok, t.choice)]
    for o in t.others:
        if b.kind == "other" and b.name.split("/")[1] == o.name:
            break
        outcomes.append(z3.And(z3.Not(t.ok), o.cond, o.choice))
    out = []
    for outcome in outcomes:
        xs = _choice_booleans(outcome)
        out.append(z3.ForAll(xs, z3.Not(outcome)) if xs else z3.Not(outcome))
    return out


def _choice_booleans(e: z3.ExprRef) -> list[z3.ExprRef]:
    """The choice Booleans (``_choices``) that ``e`` reads."""
    return [x for x in symbolic.uninterpreted_constants(e)
            if x.decl().name().startswith("choice.")]


def _first_outcome_is(family: Family, ctx: Context,
                      b: NamedBranch) -> Callable[[z3.ModelRef], bool]:
    """Whether, on the state a model of the solver describes, the first outcome the spec
    allows for any of its choices is the one of ``b`` (a failure: none). A branch holds for
    some choice of the sets the spec leaves to Xen's iteration (say, which L1 tables a
    directory's validation validates), while Xen makes one choice: get_page_from_l2e tries
    the L1 type first (mm.c), so a state where the entry's frame validates as an L1 is no
    failure at all; NEW_BASEPTR retries only where the first attempt fails whatever the
    choice. States where an earlier outcome is possible are not checks of this branch."""
    want = [] if b.kind == "fail" else [b.name.split("/")[1]]

    def accept(model: z3.ModelRef) -> bool:
        m = Machine.build()
        install(m, ctx.unknown, model)
        values = {n: int(model.eval(ctx.args[n], model_completion=True).as_long())
                  for n in family.args}
        spec = spec_with_args(family, {k: x for k, x in values.items() if k != "fd"} |
                              {"fd": m.d.domain_id})
        previous = symbolic.SCOPE
        symbolic.set_scope(Scope())
        try:
            return possible_outcomes(Snapshot.take(m.hv), spec)[:1] == want
        finally:
            symbolic.set_scope(previous)
    return accept


def check_family(family: Family, report: Report, per_branch: int = 3,
                 only: Callable[[str], bool] = lambda name: True) -> None:
    """Check every branch of ``family`` (those ``only`` selects) on the model."""
    for name in branch_names(family):
        key = f"{family.name} {name}"
        if not only(key):
            continue
        cases = check_one(family, name, per_branch)
        report.hit[key] = cases
        if not cases:
            report.unreachable[key] = UNREACHABLE.get(key, "no state found")


def _choice_of(t: Transition, b: NamedBranch) -> z3.BoolRef:
    if b.kind == "ok":
        return t.choice
    if b.kind == "fail":
        return t.choice
    (o,) = [x for x in t.others if b.name.startswith(f"other/{x.name}")]
    return o.choice


def _value(model: z3.ModelRef, x: z3.ExprRef) -> int:
    v = model.eval(x, model_completion=True)
    return int(z3.is_true(v)) if z3.is_bool(v) else int(v.as_long())


def run_case(family: Family, branch: str, unknown: dict[Any, Any], model: z3.ModelRef,
             a: dict[str, z3.ExprRef]) -> Case:
    """Build the solver's state in a fresh machine, run the handler, check the outcome."""
    values = {n: _value(model, a[n]) for n in family.args}
    # The fresh machine is the template again (same seed): the same frames, the same domain.
    m: Any
    if family.bench == "cpu":
        m = CpuMachine.build()
        install_cpu(m, unknown, model)
    else:
        m = Machine.build()
        install(m, unknown, model)
    family.prepare(m, values)
    bad = check_invariants(m.hv)
    if bad:
        return Case(family.name, branch, values, "the state built breaks: " + "; ".join(bad))
    before = Snapshot.take(m.hv)
    try:
        rc = family.run(m, values)
    except Exception as e:  # a model that fails internally has left the spec's behaviours
        return Case(family.name, branch, values,
                    f"the model raised {type(e).__name__}: {e}")
    # The invariants after the call too: INV-COUNT (the model's counters are the references
    # that exist) sees what the spec abstracts away, a count the call left wrong.
    bad = check_invariants(m.hv)
    if bad:
        return Case(family.name, branch, values, "the state after breaks: " + "; ".join(bad))
    after = Snapshot.take(m.hv)
    spec = spec_with_args(family, {k: x for k, x in values.items() if k != "fd"} |
                          {"fd": m.d.domain_id})
    # A failure: no choice of the spec's may succeed (check_refinement); every branch: the
    # spec takes it on this state and ends as the model did (check_branch, which for a
    # success or another outcome implies what check_refinement asks). iret returns 0 both
    # when it crashes the domain and when it pops EAX 0: its outcome is told by ``observe``.
    problem = family.observe(m, values, branch)
    # (A CPU-interface spec has no choice a failure's condition depends on: check_branch
    # below asks all that check_refinement would.)
    if problem is None and branch.startswith("fail") and family.bench != "cpu":
        problem = check_refinement(before, after, rc, spec, tuple(INDICES))
    if problem is None:
        problem = check_branch(before, after, rc, spec, branch)
    return Case(family.name, branch, values, problem)


BRANCHES_FILE = "branches-last.json"


def record(key: str, cases: list[Case], unreachable: dict[str, str] | None = None) -> None:
    """Merge one branch's result into the cache's ``branches-last.json`` (read by the
    documentation's traceability matrix): how often it was hit, how many checks failed, and
    why a branch no state takes is not hit (``unreachable``, by default this module's)."""
    reasons = UNREACHABLE if unreachable is None else unreachable
    entry = {"hit": len(cases), "failed": sum(c.problem is not None for c in cases),
             "reason": "" if cases else reasons.get(key, "no state found"),
             "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}

    def merge(data: dict[str, Any]) -> None:
        data[key] = entry

    update_json_dict(runner.cache_dir() / BRANCHES_FILE, merge)  # workers run in parallel


def check_all(families: tuple[Family, ...] = FAMILIES, per_branch: int = 3,
              only: Callable[[str], bool] = lambda name: True) -> Report:
    report = Report()
    for family in families:
        check_family(family, report, per_branch, only)
    for key, why in UNREACHABLE.items():
        if not report.hit.get(key):
            report.unreachable[key] = why
    return report

"""The symbolic hypervisor state: the specification's state in Z3, and its ``StateView``.

The state is what Xen 3.0.4 keeps per frame and per vCPU (xen/include/asm-x86/mm.h, page_info;
xen/include/asm-x86/domain.h, arch.guest_table; xen/include/public/arch-x86_32.h,
vcpu_guest_context: the virtual IDT trap_ctxt, kernel_ss/kernel_sp, the event and failsafe
callbacks, gdt_frames/gdt_ents), with one abstraction: reference counts are
represented by whether references exist (``has_type_refs`` in ``mm_spec``), because every rule
of mm.c tests a count only against zero. Frames, indices, domain ids and vCPU ids are 32-bit
bit-vectors; page-table contents are a two-dimensional array (frame, index) -> entry, so the
entry format of ``spec.pagetable`` applies bit for bit. Descriptors live in the same array: the
descriptor at byte 8i of a frame is its words 2i (low) and 2i+1 (high). Per-vCPU tables are
two-dimensional arrays too: (vCPU, vector) for the virtual IDT, (vCPU, k) for the GDT frames.

``SymView`` implements ``StateView`` over a ``SymState``: quantifiers become ``ForAll`` over
fresh bound variables, connectives become Z3's. The invariants in ``spec.invariants`` evaluated
on a ``SymView`` are the formulas the proofs use.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import z3
from z3 import z3core

from xenspec.spec import abi
from xenspec.spec.pagetable import xen_l2_slot
from xenspec.spec.paging import COMPAT_PAE, NATIVE, Paging

T = TypeVar("T")

W = z3.BitVecSort(32)
Word = Any
Bool = Any
_fresh = itertools.count()


@dataclass(frozen=True)
class Scope:
    """How quantifiers are built. Unbounded (the proofs): ``ForAll``/``Exists`` over all 32-bit
    values. Bounded (counterexample search): quantifiers over frames and vCPUs are expanded
    over a small machine of ``frames`` frames and ``vcpus`` vCPUs, which the solver can model."""

    frames: int | None = None
    vcpus: int | None = None
    # Entry indices to expand over; only sound when every other entry of every table is 0
    # (the refinement check, whose states are concrete, knows exactly which are not).
    indices: tuple[int, ...] | None = None

    def domain(self, kind: str) -> list[int] | None:
        if kind == "index":
            return None if self.indices is None else list(self.indices)
        bound = self.frames if kind == "frame" else self.vcpus if kind == "vcpu" else None
        return None if bound is None else list(range(bound))


SCOPE = Scope()

# True while a spec is evaluated on a concrete state (proofs.refinement checks an outcome of
# the model): a definition that the proofs state by quantifiers over a fresh array may then be
# given as a function (a Lambda) of the state instead. Both define the same words; the solver
# evaluates the function where it would have to search for an array satisfying quantifiers.
CONCRETE = False


def set_concrete(on: bool) -> None:
    global CONCRETE
    CONCRETE = on


def uninterpreted_constants(e: z3.ExprRef) -> list[z3.ExprRef]:
    """The uninterpreted constants ``e`` reads (a spec's fresh symbols, its choices), each
    once, in the order of a depth-first walk of every distinct subterm (quantifier bodies
    included). The walk reads Z3's terms through the C API, without a Python object per
    subterm: a family's spec (12,663 subterms) took 2.0 s through z3.py's ``children()`` and
    takes 0.38 s so."""
    ctx = e.ctx
    ref = ctx.ref()
    out: list[z3.ExprRef] = []
    seen: set[int] = set()
    todo = [e.as_ast()]
    while todo:
        a = todo.pop()
        key = z3core.Z3_get_ast_id(ref, a)
        if key in seen:
            continue
        seen.add(key)
        kind = z3core.Z3_get_ast_kind(ref, a)
        if kind == z3.Z3_QUANTIFIER_AST:
            todo.append(z3core.Z3_get_quantifier_body(ref, a))
        elif kind in (z3.Z3_APP_AST, z3.Z3_NUMERAL_AST):
            n = z3core.Z3_get_app_num_args(ref, a)
            todo.extend(z3core.Z3_get_app_arg(ref, a, k) for k in range(n))
            decl = z3core.Z3_get_app_decl(ref, a)
            if n == 0 and z3core.Z3_get_decl_kind(ref, decl) == z3.Z3_OP_UNINTERPRETED:
                out.append(z3.z3._to_expr_ref(a, ctx))
    return out


def set_scope(scope: Scope) -> None:
    global SCOPE
    SCOPE = scope


def _quantified(kinds: tuple[str, ...], body: Callable[..., Bool], forall: bool) -> Bool:
    if not kinds:
        return body()
    kind, rest = kinds[0], kinds[1:]
    values = SCOPE.domain(kind)
    if values is not None:
        terms = [_quantified(rest, lambda *xs, x=x: body(bv(x), *xs), forall) for x in values]
        return z3.And(*terms) if forall else z3.Or(*terms)
    var = z3.BitVec(fresh_name(kind), 32)
    inner = _quantified(rest, lambda *xs: body(var, *xs), forall)
    return z3.ForAll([var], inner) if forall else z3.Exists([var], inner)


def forall(kinds: tuple[str, ...], body: Callable[..., Bool]) -> Bool:
    """For all values of the given kinds ("frame", "index", "vcpu"): body(values...)."""
    return _quantified(kinds, body, True)


def exists(kinds: tuple[str, ...], body: Callable[..., Bool]) -> Bool:
    return _quantified(kinds, body, False)


def quantify(kinds: tuple[str, ...], body: Callable[..., Bool],
             witnesses: list[tuple[str, z3.BitVecRef]] | None = None, prefix: str = "") -> Bool:
    """For all values of the given kinds: one ``ForAll`` over fresh variables (never expanded,
    whatever the scope); or, given the list ``witnesses`` (the goal side of a proof), ``body``
    of fresh free constants, appended to that list so that a model names them."""
    xs = [z3.BitVec(fresh_name(prefix + kind), 32) for kind in kinds]
    if witnesses is None:
        return z3.ForAll(xs, body(*xs))
    witnesses += list(zip(kinds, xs, strict=True))
    return body(*xs)


def descriptor_pair(j: Word, j2: Word) -> Bool:
    """Words ``j`` and ``j2`` of a frame are one descriptor: j even, j2 = j + 1."""
    return z3.And(z3.ULT(j, bv(abi.L1_PAGETABLE_ENTRIES)), (j & 1) == 0, j2 == j + 1)


def forall_descriptor_words(mem: z3.ArrayRef, f: Word, body: Callable[[Word, Word], Bool]) -> Bool:
    """For every descriptor (words j, j + 1) of frame ``f``: body(low word, high word).

    The two words are bound separately and matched together (a multi-pattern), so that an
    instance creates no entry the quantifier could match again."""
    values = SCOPE.domain("index")
    if values is not None:
        evens = sorted({j & ~1 for j in values})
        return z3.And(*[body(z3.Select(mem, f, bv(j)), z3.Select(mem, f, bv(j + 1)))
                        for j in evens])
    j, j2 = (z3.BitVec(fresh_name("index"), 32) for _ in range(2))
    lo, hi = z3.Select(mem, f, j), z3.Select(mem, f, j2)
    formula = z3.Implies(descriptor_pair(j, j2), body(lo, hi))
    if not all(z3.is_var(x) or x.decl().kind() == z3.Z3_OP_UNINTERPRETED for x in (mem, f)):
        # A concrete memory or a computed frame: no term to match on.
        return z3.ForAll([j, j2], formula)
    return z3.ForAll([j, j2], formula, patterns=[z3.MultiPattern(lo, hi)])


def scope_constraints(s: SymState, witnesses: list[tuple[str, z3.BitVecRef]]) -> list[Bool]:
    """In a bounded scope: the machine has exactly that many frames, and the goal's witnesses
    lie inside it."""
    out: list[Bool] = []
    if SCOPE.frames is not None:
        out.append(s.nr_frames == SCOPE.frames)
    if SCOPE.vcpus is not None:
        calling = z3.BitVec("v", 32)  # the calling vCPU argument of a hypercall spec
        out += [z3.ULT(w, bv(SCOPE.vcpus)) for w in [calling] + [w for k, w in witnesses
                                                                  if k == "vcpu"]]
    return out


def fresh_name(prefix: str) -> str:
    """A name no other symbol of the obligation under construction has."""
    return f"{prefix}!{next(_fresh)}"


@contextlib.contextmanager
def aside() -> Iterator[None]:
    """Names made inside are numbered apart and leave the obligation's numbering where it was:
    for terms a proof does not use (a failure's named reasons), so that the obligation, and
    the solver's search on it, stays the same. Only for bound variables (a name made inside
    may be made again)."""
    global _fresh
    saved = _fresh
    _fresh = itertools.count(1 << 30)
    try:
        yield
    finally:
        _fresh = saved


def reset_fresh() -> None:
    """Restart fresh-name numbering (each proof obligation is built from a clean slate)."""
    global _fresh
    _fresh = itertools.count()


@functools.lru_cache(maxsize=1 << 16)
def bv(x: int) -> z3.BitVecRef:
    """A 32-bit constant (cached: specs and snapshots make the same few constants often)."""
    return z3.BitVecVal(x, 32)


# Terms of one state built once (``memo``): a bounded scope expands a quantifier over the
# machine's frames and indices into one term per value, and a definition such as
# mm_spec.rw_mapped is expanded again for every frame it is asked about. The parts of its body
# that depend on the state and the expanded values alone are the same each time.
_MEMO: dict[int, tuple[Any, dict[Hashable, Any]]] = {}
MEMO_STATES = 64


def memo(s: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, built once for state ``s`` and ``key``; ``compute`` must depend on ``s``
    and ``key`` alone (not on the scope, fresh names or choices). Equal terms are the same Z3
    terms, so the result is the term building it again would give."""
    slot = _MEMO.get(id(s))
    if slot is None or slot[0] is not s:  # the state is held in the slot: its id stays its own
        if len(_MEMO) >= MEMO_STATES:
            _MEMO.clear()
        slot = _MEMO[id(s)] = (s, {})
    table = slot[1]
    if key not in table:
        table[key] = compute()
    return table[key]  # type: ignore[no-any-return]


def memo_expanded(s: Any, name: str, x: z3.ExprRef, kinds: tuple[str, ...],
                  build: Callable[[], T]) -> T:
    """``build()``, definition ``name`` of state ``s`` and term ``x``, quantified over
    ``kinds``: built once per state, term and scope where the scope expands every one of
    ``kinds`` (its terms then have no fresh names); built each time otherwise."""
    if any(SCOPE.domain(kind) is None for kind in kinds):
        return build()
    # ``x`` is held beside the result: while it is, no other term has its id.
    return memo(s, (name, SCOPE, x.get_id()), lambda: (x, build()))[1]


def cells_equal(array: z3.ArrayRef, cells: Sequence[tuple[tuple[int, ...], int | bool]]
                ) -> z3.BoolRef:
    """``z3.And`` of ``z3.Select(array, *map(bv, indices)) == value`` for each
    ``(indices, value)`` of ``cells`` (``array`` indexed by 32-bit words): the same term, its
    cells built through Z3's C API. A refinement check compares a whole machine, tens of
    thousands of cells, where z3.py's wrappers cost more than the terms
    (tests/test_adapter_fast_paths.py compares the two)."""
    ctx = array.ctx
    ref, base = ctx.ref(), array.as_ast()
    value_sort = array.sort().range()
    boolean = value_sort.kind() == z3.Z3_BOOL_SORT
    values: dict[int | bool, z3.ExprRef] = {}
    terms = (z3core.Ast * len(cells))()
    # Z3 keeps a term no other holds only until its next call: the numerals are held by
    # z3.py objects (bv's cache, ``values``), each select by its equation, and each equation
    # by a reference of its own until the conjunction holds it.
    try:
        for k, (indices, x) in enumerate(cells):
            value = values.get(x)
            if value is None:
                value = values[x] = (z3.BoolVal(bool(x)) if boolean
                                     else z3.BitVecVal(x, value_sort))
            if len(indices) == 1:
                cell = z3core.Z3_mk_select(ref, base, bv(indices[0]).as_ast())
            else:
                args = (z3core.Ast * len(indices))(*[bv(i).as_ast() for i in indices])
                cell = z3core.Z3_mk_select_n(ref, base, len(indices), args)
            terms[k] = z3core.Z3_mk_eq(ref, cell, value.as_ast())
            z3core.Z3_inc_ref(ref, terms[k])
        return z3.BoolRef(z3core.Z3_mk_and(ref, len(cells), terms), ctx)
    finally:
        for term in terms:
            if term:
                z3core.Z3_dec_ref(ref, term)


def cell_equations(array: z3.ArrayRef, cells: Sequence[tuple[tuple[int, ...], int | bool]]
                   ) -> list[z3.BoolRef]:
    """The equations of ``cells_equal`` one by one, for a caller that orders them among
    others (the solver's time on a query depends on the order of its conjuncts)."""
    conjunction = cells_equal(array, cells)
    return [conjunction.arg(k) for k in range(conjunction.num_args())] if cells else []


def stores(base: z3.ArrayRef, cells: Sequence[tuple[tuple[z3.ExprRef, ...], z3.ExprRef]]
           ) -> z3.ArrayRef:
    """``base`` with ``z3.Store(arr, *indices, value)`` applied for each ``(indices, value)``
    of ``cells`` in order: the same term, the chain built through Z3's C API (a snapshot of a
    machine stores thousands of values; tests/test_adapter_fast_paths.py compares the two).
    Each store is held by the next, and the numerals by the caller's objects."""
    ctx = base.ctx
    ref, array = ctx.ref(), base.as_ast()
    for indices, value in cells:
        if len(indices) == 1:
            array = z3core.Z3_mk_store(ref, array, indices[0].as_ast(), value.as_ast())
        else:
            args = (z3core.Ast * len(indices))(*[x.as_ast() for x in indices])
            array = z3core.Z3_mk_store_n(ref, array, len(indices), args, value.as_ast())
    return z3.ArrayRef(array, ctx)


def _const2(x: Any) -> z3.ArrayRef:
    """A two-dimensional array holding ``x`` everywhere (no grant state: the default)."""
    return z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], x)


@dataclass(frozen=True)
class SymState:
    """One symbolic hypervisor state (every field a Z3 term)."""

    owner: z3.ArrayRef  # frame -> domid
    type: z3.ArrayRef  # frame -> PGT
    validated: z3.ArrayRef  # frame -> Bool
    pinned: z3.ArrayRef  # frame -> Bool
    mem: z3.ArrayRef  # (frame, index) -> entry
    base: z3.ArrayRef  # vcpu -> frame (0: none)
    # The CPU interface (vcpu_guest_context): selectors are stored as the CPU loads them.
    trap_cs: z3.ArrayRef  # (vcpu, vector) -> code selector (0: no handler)
    trap_addr: z3.ArrayRef  # (vcpu, vector) -> handler address
    trap_flags: z3.ArrayRef  # (vcpu, vector) -> trap_info flags (DPL, IF)
    event_cs: z3.ArrayRef  # vcpu -> selector
    event_eip: z3.ArrayRef
    failsafe_cs: z3.ArrayRef
    failsafe_eip: z3.ArrayRef
    kernel_ss: z3.ArrayRef  # vcpu -> stack_switch's ring-1 stack selector (0: none)
    kernel_sp: z3.ArrayRef
    gdt_frame: z3.ArrayRef  # (vcpu, k) -> frame k of the GDT set_gdt installed (0: none)
    gdt_ents: z3.ArrayRef  # vcpu -> GDT entries
    # Whether some vCPU's GDT holds a type reference on a frame (the type count of a GDT frame
    # abstracted to "non-zero", as for page tables).
    gdt_ref: z3.ArrayRef  # frame -> Bool
    # Fixed for the life of a state: the machine, the vCPUs' domains, privilege, Xen's slots.
    nr_frames: z3.BitVecRef
    vcpu_domain: z3.ArrayRef  # vcpu -> domid
    privileged: z3.ArrayRef  # domid -> Bool
    # (domid, index) -> the entry Xen copies into hypervisor slot ``index`` of each of the
    # domain's page directories; at LINEAR_PT_SLOT each directory maps itself instead, with the
    # flags ``linear_pt_flags`` (pagetable.xen_l2_slot: Xen's slots are per directory).
    xen_l2e: Callable[[Word, Word], Word]
    linear_pt_flags: z3.BitVecRef
    # The frames the hypervisor writes into on a guest's behalf (shared_info, grant frames,
    # frames a back end maps): Xen shares them when it creates a domain or its grant table,
    # which no hypercall of the specification does, so no hypercall changes the set. A ghost
    # of Xen's own writable type reference on each (share_xen_page_with_guest): mm_spec's
    # has_type_refs counts it.
    xen_written: z3.ArrayRef  # frame -> Bool
    # Grant tables (grant_table.c). A grantee's handles (maptrack): flags (0: free), the frame
    # and the PTE its host mapping wrote; ghost ``gnt_slot``: which handle a PTE belongs to.
    # Granters: their shared frames.
    gnt_slot: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (frame, index) -> h
    mt_flags: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, h) -> GNTMAP_*
    mt_dom: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, h) -> granter
    mt_frame: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, h) -> frame
    mt_l1: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, h) -> PTE frame
    mt_idx: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, h) -> PTE index
    gnt_table: z3.ArrayRef = field(default_factory=lambda: _const2(bv(0)))  # (domid, k) -> frame
    # Compat PAE: the type flag PGT_pae_xen_l2 (spec.paging); no frame has it natively.
    pae_xen_l2: z3.ArrayRef = field(default_factory=lambda: z3.K(W, z3.BoolVal(False)))

    @staticmethod
    def fresh(name: str, entry_bits: int = 32) -> SymState:
        """A state of free symbols; ``entry_bits`` 64 for the compat-pae profile, whose
        page-table entries are 64-bit (its ``xen_l2e`` then names Xen's PAE slots)."""
        def arr(field: str, rng: z3.SortRef) -> z3.ArrayRef:
            return z3.Array(f"{name}.{field}", W, rng)

        entry = z3.BitVecSort(entry_bits)
        pae = {} if entry_bits == 32 else {
            "pae_xen_l2": arr("pae_xen_l2", z3.BoolSort())}

        return SymState(
            owner=arr("owner", W),
            type=arr("type", W),
            validated=arr("validated", z3.BoolSort()),
            pinned=arr("pinned", z3.BoolSort()),
            mem=z3.Array(f"{name}.mem", W, W, entry),
            base=arr("base", W),
            trap_cs=z3.Array(f"{name}.trap_cs", W, W, W),
            trap_addr=z3.Array(f"{name}.trap_addr", W, W, W),
            trap_flags=z3.Array(f"{name}.trap_flags", W, W, W),
            event_cs=arr("event_cs", W), event_eip=arr("event_eip", W),
            failsafe_cs=arr("failsafe_cs", W), failsafe_eip=arr("failsafe_eip", W),
            kernel_ss=arr("kernel_ss", W), kernel_sp=arr("kernel_sp", W),
            gdt_frame=z3.Array(f"{name}.gdt_frame", W, W, W),
            gdt_ents=arr("gdt_ents", W), gdt_ref=arr("gdt_ref", z3.BoolSort()),
            nr_frames=z3.BitVec("nr_frames", 32),
            vcpu_domain=z3.Array("vcpu_domain", W, W),
            privileged=z3.Array("privileged", W, z3.BoolSort()),
            xen_l2e=z3.Function("xen_l2e", W, W, entry),
            linear_pt_flags=z3.BitVec("linear_pt_flags", 32),
            xen_written=z3.Array("xen_written", W, z3.BoolSort()),
            gnt_slot=z3.Array(f"{name}.gnt_slot", W, W, W),
            mt_flags=z3.Array(f"{name}.mt_flags", W, W, W),
            mt_dom=z3.Array(f"{name}.mt_dom", W, W, W),
            mt_frame=z3.Array(f"{name}.mt_frame", W, W, W),
            mt_l1=z3.Array(f"{name}.mt_l1", W, W, W),
            mt_idx=z3.Array(f"{name}.mt_idx", W, W, W),
            gnt_table=z3.Array(f"{name}.gnt_table", W, W, W),
            **pae,
        )

    def evolve(self, **changes: Any) -> SymState:
        return replace(self, **changes)


# The fields a hypercall may change (the others are fixed for the life of a state).
STATE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(SymState)
    if f.name not in ("nr_frames", "vcpu_domain", "privileged", "xen_l2e", "linear_pt_flags",
                      "xen_written")
)


class SymView:
    """``StateView`` over a ``SymState``: the invariants as Z3 formulas.

    With ``witness=True`` every quantifier is replaced by a fresh free constant instead of a
    ``ForAll``: the negation of the resulting formula is the invariant's negation with its
    counterexample named (the "goal side" of a proof), and ``witnesses`` lists the constants
    so that a model can be read back as the frames and entries involved.
    """

    def __init__(self, s: SymState, witness: bool = False, paging: Paging = NATIVE) -> None:
        self.s = s
        self.paging = paging
        self.witness = witness
        self.witnesses: list[tuple[str, z3.BitVecRef]] = []

    def _forall(self, kind: str, body: Callable[[Word], Bool]) -> Bool:
        if not self.witness:
            return forall((kind,), body)
        return quantify((kind,), body, self.witnesses)

    # frames
    def owner(self, mfn: Word) -> Word:
        return self.s.owner[mfn]

    def type(self, mfn: Word) -> Word:
        return self.s.type[mfn]

    def type_count(self, mfn: Word) -> Word:
        raise NotImplementedError("the specification abstracts counts; see spec.mm_spec")

    def count(self, mfn: Word) -> Word:
        raise NotImplementedError("the specification abstracts counts; see spec.mm_spec")

    def validated(self, mfn: Word) -> Bool:
        return self.s.validated[mfn]

    def pinned(self, mfn: Word) -> Bool:
        return self.s.pinned[mfn]

    def allocated(self, mfn: Word) -> Bool:
        return z3.BoolVal(True)

    def mfn_valid(self, mfn: Word) -> Bool:
        return z3.ULT(mfn, self.s.nr_frames)

    def is_privileged(self, domid: Word) -> Bool:
        return self.s.privileged[domid]

    def hypervisor_writes(self, mfn: Word) -> Bool:
        return self.s.xen_written[mfn]

    def pae_xen_l2(self, mfn: Word) -> Bool:
        return self.s.pae_xen_l2[mfn]

    # memory
    def entry(self, mfn: Word, index: Word) -> Word:
        return z3.Select(self.s.mem, mfn, index)

    def xen_l2e(self, l2mfn: Word, index: Word) -> Word:
        if self.paging is COMPAT_PAE:  # the same in every such L2 of a domain
            return self.s.xen_l2e(self.s.owner[l2mfn], index)
        return xen_l2_slot(self.s.xen_l2e(self.s.owner[l2mfn], index), l2mfn, index,
                           self.s.linear_pt_flags)

    # vCPUs
    def base(self, vcpu: Word) -> Word:
        return self.s.base[vcpu]

    def vcpu_domain(self, vcpu: Word) -> Word:
        return self.s.vcpu_domain[vcpu]

    # vCPU CPU state
    def trap_cs(self, vcpu: Word, vector: Word) -> Word:
        return z3.Select(self.s.trap_cs, vcpu, vector)

    def event_cs(self, vcpu: Word) -> Word:
        return self.s.event_cs[vcpu]

    def failsafe_cs(self, vcpu: Word) -> Word:
        return self.s.failsafe_cs[vcpu]

    def kernel_ss(self, vcpu: Word) -> Word:
        return self.s.kernel_ss[vcpu]

    def gdt_frame(self, vcpu: Word, k: Word) -> Word:
        return z3.Select(self.s.gdt_frame, vcpu, k)

    def gdt_referenced(self, mfn: Word) -> Bool:
        return self.s.gdt_ref[mfn]

    # grant tables
    def gnt_slot(self, mfn: Word, index: Word) -> Word:
        return z3.Select(self.s.gnt_slot, mfn, index)

    def mt_flags(self, domid: Word, handle: Word) -> Word:
        return z3.Select(self.s.mt_flags, domid, handle)

    def mt_dom(self, domid: Word, handle: Word) -> Word:
        return z3.Select(self.s.mt_dom, domid, handle)

    def mt_frame(self, domid: Word, handle: Word) -> Word:
        return z3.Select(self.s.mt_frame, domid, handle)

    def mt_pte(self, domid: Word, handle: Word) -> tuple[Word, Word]:
        return z3.Select(self.s.mt_l1, domid, handle), z3.Select(self.s.mt_idx, domid, handle)

    # quantifiers
    def forall_frames(self, body: Callable[[Word], Bool]) -> Bool:
        return self._forall("frame", lambda f: z3.Implies(self.mfn_valid(f), body(f)))

    def forall_vcpus(self, body: Callable[[Word], Bool]) -> Bool:
        return self._forall("vcpu", body)

    def forall_present_entries(
        self, mfn: Word, lo: int, hi: int, body: Callable[[Word, Word], Bool]
    ) -> Bool:
        def at(i: Word) -> Bool:
            e = self.entry(mfn, i)
            guard = z3.And(z3.ULE(bv(lo), i), z3.ULT(i, bv(hi)), (e & abi._PAGE_PRESENT) != 0)
            return z3.Implies(guard, body(i, e))

        return self._forall("index", at)

    def forall_indices(self, lo: int, hi: int, body: Callable[[Word], Bool]) -> Bool:
        return self._forall(
            "index", lambda i: z3.Implies(z3.And(z3.ULE(bv(lo), i), z3.ULT(i, bv(hi))), body(i))
        )

    def forall_descriptors(self, mfn: Word, body: Callable[[Word, Word], Bool]) -> Bool:
        if self.paging is COMPAT_PAE:  # 64-bit words: descriptor k is word k
            def at(k: Word) -> Bool:
                e = self.entry(mfn, k)
                return z3.Implies(z3.ULT(k, bv(abi.L1_PAGETABLE_ENTRIES // 2)),
                                  body(z3.Extract(31, 0, e), z3.Extract(63, 32, e)))

            return self._forall("index", at)
        if not self.witness:
            return forall_descriptor_words(self.s.mem, mfn, body)
        return quantify(("index", "index"), lambda j, j2: z3.Implies(
            descriptor_pair(j, j2), body(self.entry(mfn, j), self.entry(mfn, j2))),
            self.witnesses)

    # connectives
    def and_(self, *terms: Bool) -> Bool:
        return z3.And(*terms)

    def or_(self, *terms: Bool) -> Bool:
        return z3.Or(*terms)

    def not_(self, a: Bool) -> Bool:
        return z3.Not(a)

    def implies(self, premise: Bool, conclusion: Callable[[], Bool]) -> Bool:
        return z3.Implies(premise, conclusion())


"""Paths that read the same thing faster, each held against the plain path it stands for.

- The conformance view reads the frame table in one ``frames`` call where the adapter has it
  (``adapter.FrameTable``), else one ``frame`` call per frame: both give the same table, and a
  ``frames`` that disagrees with ``nr_frames`` or gives no ``FrameInfo`` is an adapter error.
- The differential comparison (``replay.Side.state``) keeps each frame's named words by its
  words: after every step, the state it reads equals the one a side with no such memory reads.
- A bounded scope builds ``mm_spec.rw_mapped``'s terms once per state (``symbolic.memo``): the
  terms are those built afresh, and another state has its own.
- The refinement check's comparison of memory (``symbolic.cells_equal``) and its snapshots'
  arrays (``symbolic.stores``) are built through Z3's C API as the terms z3.py would build.
- ``symbolic.uninterpreted_constants`` walks a term through Z3's C API and finds the constants,
  in the order, that a walk through z3.py finds.
"""

from __future__ import annotations

from typing import Any

import pytest
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenspec.conformance.adapter import FrameInfo, FrameTable
from xenspec.conformance.checked import AdapterError, Checked
from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.replay import Side, check_step, make_sides, named_words
from xenspec.conformance.test_differential import doms, entries, foreign, indices, refs
from xenspec.conformance.view import ImplementationView
from xenspec.proofs import branchcheck
from xenspec.spec import abi, mm_spec, mm_spec_pae, symbolic
from xenspec.spec.symbolic import Scope, SymState, bv


class Without:
    """``impl`` without one of its methods (as an adapter that never had it)."""

    def __init__(self, impl: object, name: str) -> None:
        self._impl, self._name = impl, name

    def __getattr__(self, name: str) -> Any:
        if name == self._name:
            raise AttributeError(name)
        return getattr(self._impl, name)


def busy_reference() -> ReferenceImplementation:
    """A reference machine with two domains, one with a pinned L1 table."""
    ref = ReferenceImplementation()
    g, _ = Guest(ref, 64, 32), Guest(ref, 64, 32, privileged=True)
    (m,) = g.free_mfns(1)
    assert g.pin(m, 1) == 0
    return ref


def test_the_reference_frame_table_is_its_frames_one_by_one() -> None:
    ref = busy_reference()
    assert isinstance(ref, FrameTable)
    assert ref.frames() == [ref.frame(m) for m in range(ref.nr_frames())]


def test_the_view_reads_the_same_table_with_frames_and_without() -> None:
    ref = busy_reference()
    plain = Checked(Without(ref, "frames"))
    assert not isinstance(plain, FrameTable)
    assert ImplementationView(plain).infos == ImplementationView(Checked(ref)).infos


class ShortTable(ReferenceImplementation):
    def frames(self) -> list[FrameInfo]:
        return super().frames()[:-1]


class TupleTable(ReferenceImplementation):
    def frames(self) -> list[FrameInfo]:
        return [(f.owner, f.type) for f in super().frames()]  # type: ignore[misc]


@pytest.mark.parametrize("impl", [ShortTable, TupleTable])
def test_a_wrong_frame_table_is_an_adapter_error(impl: type[ReferenceImplementation]) -> None:
    with pytest.raises(AdapterError) as exc:
        ImplementationView(Checked(impl()))
    assert exc.value.method == "frames"


steps = st.lists(st.one_of(
    st.fixed_dictionaries({"call": st.just("mmu_update"), "dom": doms, "table": refs,
                           "index": indices, "value": entries, "fd": foreign}),
    st.fixed_dictionaries({"call": st.just("mmuext_op"), "dom": doms, "frame": refs,
                           "cmd": st.sampled_from([abi.MMUEXT_PIN_L1_TABLE,
                                                   abi.MMUEXT_PIN_L2_TABLE,
                                                   abi.MMUEXT_UNPIN_TABLE]),
                           "fd": foreign}),
), min_size=1, max_size=12)


class Afresh(Side):
    """A side that names every frame's words afresh."""

    def named_words(self, words: Any, word: Any) -> Any:
        return named_words(words, word)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_the_differential_state_is_the_state_read_afresh(sequence: list[dict[str, Any]]
                                                         ) -> None:
    sides = make_sides(ReferenceImplementation)
    for step in sequence:
        check_step(sides, step)
        for side in sides:
            assert side.state() == Afresh(side.impl, side.guests).state(), step


@pytest.mark.parametrize(("spec", "bits"), [(mm_spec, 32), (mm_spec_pae, 64)])
def test_rw_mapped_built_once_per_state_is_built_afresh(
        spec: Any, bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(symbolic, "SCOPE", Scope(frames=3, vcpus=1, indices=(0, 5)))
    a, b = SymState.fresh("a", bits), SymState.fresh("b", bits)
    written = a.evolve(mem=z3.Store(a.mem, bv(1), bv(5), z3.BitVecVal(0x2003, bits)))
    g = bv(2)
    once = [spec.rw_mapped(s, g) for s in (a, b, written)]
    assert once[0].eq(spec.rw_mapped(a, g))  # the memory's own
    assert not once[0].eq(once[1]) and not once[0].eq(once[2])  # each state its own

    def afresh(s: Any, key: Any, compute: Any) -> Any:
        return compute()

    monkeypatch.setattr(symbolic, "memo", afresh)
    monkeypatch.setattr(spec, "memo", afresh)
    for s, term in zip((a, b, written), once, strict=True):
        assert term.eq(spec.rw_mapped(s, g))


@pytest.mark.parametrize("bits", [32, 64])
def test_cells_equal_is_the_conjunction_z3py_builds(bits: int) -> None:
    mem = SymState.fresh("m", bits).mem
    cells = [((f, i), (f * 1021 + i * 7) % 5 * (2**bits - 1) // 4)
             for f in range(6) for i in (0, 1, 511, 1023)]
    built = symbolic.cells_equal(mem, cells)
    assert built.eq(z3.And(*[z3.Select(mem, bv(f), bv(i)) == v for (f, i), v in cells]))
    assert symbolic.cells_equal(mem, []).eq(z3.And())
    flags = SymState.fresh("n", bits).validated  # one index, Boolean values
    one = [((f,), f % 3 == 0) for f in range(9)]
    assert symbolic.cells_equal(flags, one).eq(z3.And(*[flags[bv(f)] == x for (f,), x in one]))
    equations = symbolic.cell_equations(flags, one)
    assert len(equations) == len(one)
    assert all(e.eq(flags[bv(f)] == x) for e, ((f,), x) in zip(equations, one, strict=True))
    assert symbolic.cell_equations(flags, []) == []


def test_stores_is_the_chain_z3py_builds() -> None:
    cells = [((bv(f), bv(i)), bv(f ^ i)) for f in range(5) for i in (0, 3, 1023)]
    base = z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], bv(0))
    chain = base
    for (f, i), v in cells:
        chain = z3.Store(chain, f, i, v)
    assert symbolic.stores(base, cells).eq(chain)
    flags = z3.K(z3.BitVecSort(32), z3.BoolVal(False))
    one = [((bv(k),), z3.BoolVal(k % 2 == 0)) for k in range(7)]
    chain = flags
    for (k,), x in one:
        chain = z3.Store(chain, k, x)
    assert symbolic.stores(flags, one).eq(chain)
    assert symbolic.stores(flags, []).eq(flags)


def _constants_through_z3py(e: z3.ExprRef) -> list[z3.ExprRef]:
    """The plain walk ``symbolic.uninterpreted_constants`` stands for: every distinct subterm
    through z3.py's ``children()`` and ``body()``, depth first."""
    out, seen, todo = [], set(), [e]
    while todo:
        x = todo.pop()
        if x.get_id() in seen:
            continue
        seen.add(x.get_id())
        if z3.is_quantifier(x):
            todo.append(x.body())
        elif z3.is_app(x):
            todo.extend(x.children())
            if z3.is_const(x) and x.decl().kind() == z3.Z3_OP_UNINTERPRETED:
                out.append(x)
    return out


def test_uninterpreted_constants_are_those_z3py_walks_to() -> None:
    symbolic.reset_fresh()
    s = SymState.fresh("s")
    spec = branchcheck._builders()["mmu_update/NORMAL_PT_UPDATE"](s)
    h = z3.BitVec("h", 32)
    owner = z3.Lambda([h], s.owner[h + 1])[bv(1)]  # a lambda, its body read too
    term = z3.And(spec.ok, spec.choice, owner == s.vcpu_domain[bv(0)])
    found = symbolic.uninterpreted_constants(term)
    names = {str(x) for x in found}  # the state's arrays, the arguments, the spec's choices
    assert {"s.mem", "s.owner", "ptr", "val", "fd"} <= names and any("!" in n for n in names)
    assert [x.sexpr() for x in found] == [x.sexpr() for x in _constants_through_z3py(term)]
    assert all(a.eq(b) for a, b in zip(found, _constants_through_z3py(term), strict=True))
    assert symbolic.uninterpreted_constants(bv(7)) == []

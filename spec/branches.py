"""Named branches of a transition spec: every distinct way a call can end, with its condition.

A spec builds its success condition ``ok`` out of named requirements instead of a bare
conjunction, so that the ways it can end are enumerated from the spec itself rather than
listed beside it:

* ``require(name, cond)``: a condition the call checks; it fails as branch ``name``;
* ``all_of(a, b, ...)``: the conjunction, checked in order: the call fails as ``b``'s
  failure only where ``a`` holds (each conjunct failing while the ones before it hold);
* ``any_of((label, a), (label, b), ...)``: the disjunction: the call passes by the first
  alternative that holds (``label``), and fails by the last one's failures, the others
  failing too (a fast path, or an entry that is not present, is such an alternative);
* ``cases((label, guard, a), ..., (label, None, z))``: an If-chain on the state: the call
  takes the first alternative whose guard holds, and passes or fails by it.

``Check.holds`` is the very formula the spec wrote before (``z3.And``, ``z3.Or``, ``z3.If`` of
the same terms, in the same order), so the proofs, which use only ``Transition.ok``, see the
same obligations. ``branches`` lists a transition's named branches: ``ok/<path>`` for each
way to succeed, ``fail/<path>`` for each failure that leaves the state alone, and
``other/<name>`` for each other outcome the spec names (``Transition.others``). Their
conditions are pairwise exclusive and together cover every state and argument.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import z3

Bool = Any


@dataclass(frozen=True)
class Check:
    """A success condition with its named ways to pass and to fail."""

    holds: Bool
    passes: tuple[tuple[str, Bool], ...]
    fails: tuple[tuple[str, Bool], ...]


def _join(*names: str) -> str:
    return "/".join(n for n in names if n)


# The name of a requirement to build negated (None: none). A branch check sets it to build
# the spec in which exactly that requirement fails and the others hold: a state where the
# call fails for that reason alone (proofs.branchcheck_gem).
FLIP: str | None = None


@contextlib.contextmanager
def flipped(name: str | None) -> Iterator[None]:
    """Specs built inside are built with requirement ``name`` negated (``FLIP``)."""
    global FLIP
    FLIP = name
    try:
        yield
    finally:
        FLIP = None


def require(name: str, cond: Bool) -> Check:
    """``cond`` must hold; where it does not the call fails as ``name``."""
    if name == FLIP:
        cond = z3.Not(cond)
    return Check(cond, (("", cond),), ((name, z3.Not(cond)),))


def all_of(*checks: Check) -> Check:
    """Every check in order (``z3.And`` of their conditions)."""
    holds = z3.And(*[c.holds for c in checks])
    passes = []
    for combo in itertools.product(*[c.passes for c in checks]):
        passes.append((_join(*[n for n, _ in combo]), z3.And(*[p for _, p in combo])))
    fails = []
    for k, c in enumerate(checks):
        before = [x.holds for x in checks[:k]]
        fails += [(n, z3.And(*before, f) if before else f) for n, f in c.fails]
    return Check(holds, tuple(passes), tuple(fails))


def any_of(*alternatives: tuple[str, Check]) -> Check:
    """The first alternative that holds (``z3.Or`` of their conditions); the call fails by the
    last alternative's failures, all of them failing."""
    holds = z3.Or(*[c.holds for _, c in alternatives])
    passes = []
    for k, (label, c) in enumerate(alternatives):
        earlier = [z3.Not(x.holds) for _, x in alternatives[:k]]
        passes += [(_join(label, n), z3.And(*earlier, p) if earlier else p) for n, p in c.passes]
    earlier = [z3.Not(x.holds) for _, x in alternatives[:-1]]
    label, last = alternatives[-1]
    fails = tuple((_join(label, n), z3.And(*earlier, f)) for n, f in last.fails)
    return Check(holds, tuple(passes), fails)


def cases(*alternatives: tuple[str, Bool | None, Check]) -> Check:
    """An If-chain: the first alternative whose guard holds decides (the last has guard
    None: otherwise)."""
    assert alternatives and alternatives[-1][1] is None, "the last case is 'otherwise'"
    holds = alternatives[-1][2].holds
    for _, guard, c in reversed(alternatives[:-1]):
        holds = z3.If(guard, c.holds, holds)
    passes, fails = [], []
    earlier: list[Bool] = []
    for label, guard, c in alternatives:
        path = earlier + ([guard] if guard is not None else [])
        passes += [(_join(label, n), z3.And(*path, p)) for n, p in c.passes]
        fails += [(_join(label, n), z3.And(*path, f)) for n, f in c.fails]
        if guard is not None:
            earlier = [*earlier, z3.Not(guard)]
    return Check(holds, tuple(passes), tuple(fails))


PASS = Check(z3.BoolVal(True), (("", z3.BoolVal(True)),), ())


@dataclass(frozen=True)
class NamedBranch:
    """One way a transition can end: ``kind`` is "ok", "fail" or "other"."""

    name: str
    kind: str
    cond: Bool  # over the state, the arguments and the transition's choice symbols


def check_branches(check: Check) -> list[NamedBranch]:
    """The named branches of a success condition alone, a call with no other outcome (the
    domain builder's checks: spec.builder_spec), in order: its ways to pass, then to fail."""
    return [*[NamedBranch(_join("ok", n), "ok", c) for n, c in check.passes],
            *[NamedBranch(_join("fail", n), "fail", c) for n, c in check.fails]]


def branches(t: Any) -> list[NamedBranch]:
    """The named branches of transition ``t`` (an ``mm_spec.Transition``), in spec order."""
    out: list[NamedBranch] = []
    check: Check | None = t.check
    rest = [z3.Not(b.cond) for b in t.others]
    if check is None:
        out.append(NamedBranch("ok", "ok", t.ok))
        out.append(NamedBranch("fail", "fail", z3.And(z3.Not(t.ok), *rest)))
    else:
        out += [NamedBranch(_join("ok", n), "ok", c) for n, c in check.passes]
        out += [NamedBranch(_join("fail", n), "fail", z3.And(c, *rest)) for n, c in check.fails]
    for b in t.others:
        if not b.reasons:
            out.append(NamedBranch(_join("other", b.name), "other", b.cond))
        else:
            out += [NamedBranch(_join("other", b.name, n), "other", z3.And(b.cond, c))
                    for n, c in b.reasons]
    return out

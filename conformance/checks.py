"""Checks shared by the hypercall-level conformance tests.

``assert_invariants`` evaluates every invariant of ``xenspec.spec.invariants`` on an
implementation (through ``xenspec.conformance.view``) and fails naming the invariants broken;
each invariant checked counts once in ``xenspec.conformance.coverage``, and one the adapter
gives no data for is recorded there as not evaluated. ``Frame`` and
``assert_frame`` compare one frame's ``page_info`` with what the rule says it must be: type,
counts and flags, or only the type and flags when the implementation does not keep Xen's
reference counts (``HypercallLevel.counts_like_xen`` False).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xenspec.conformance import coverage
from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.driver import Guest
from xenspec.conformance.view import evaluated, not_evaluated, violations
from xenspec.spec.clauses import BY_ID
from xenspec.spec.pagetable import PGT


def invariants_checked(impl: HypercallLevel) -> list[str]:
    """The ids of the invariants ``violations`` evaluates on ``impl``."""
    ids = list(dict.fromkeys(inv.id for inv in evaluated(impl)))
    if "INV-COUNT" not in not_evaluated(impl):
        ids.append("INV-COUNT")
    return ids


def assert_invariants(impl: HypercallLevel, guests: Iterable[Guest] = ()) -> None:
    """Every invariant holds on ``impl``'s current state. ``guests`` are the domains the test
    created; the privileged ones among them may map frames of another domain (FOREIGNDOM)."""
    privileged = frozenset(g.domid for g in guests if g.privileged)
    for cid in invariants_checked(impl):
        if cid in BY_ID:
            coverage.hit(cid)
    for cid, why in not_evaluated(impl).items():
        coverage.not_evaluated(cid, why)
    found = violations(impl, privileged)
    if found:
        broken = sorted({line.split(":", 1)[0] for line in found})
        detail = "\n  ".join(found[:20]) + ("\n  ..." if len(found) > 20 else "")
        raise AssertionError(
            f"invariant(s) {', '.join(broken)} broken by the state the hypercalls left:\n"
            f"  {detail}")


@dataclass(frozen=True)
class Frame:
    """The part of a frame's ``page_info`` a rule determines."""

    type: int  # PGT
    type_count: int
    count: int
    validated: bool = False
    pinned: bool = False

    def __str__(self) -> str:
        try:
            name = PGT(self.type).name
        except ValueError:
            name = f"type {self.type}"
        flags = "".join([" validated" if self.validated else "", " pinned" if self.pinned else ""])
        return f"{name} type_count={self.type_count} count={self.count}{flags}"


def frame_of(impl: HypercallLevel, mfn: int) -> Frame:
    f = impl.frame(mfn)
    return Frame(f.type, f.type_count, f.count, f.validated, f.pinned)


def same_frame(impl: HypercallLevel, got: Frame, want: Frame) -> bool:
    """Whether ``got`` is ``want``: all fields, or type and flags only when ``impl`` does not
    count references like Xen."""
    if impl.counts_like_xen:
        return got == want
    return (got.type, got.validated, got.pinned) == (want.type, want.validated, want.pinned)


def assert_frame(impl: HypercallLevel, mfn: int, want: Frame, rule: str) -> None:
    """Frame ``mfn`` is in state ``want``; otherwise fail with ``rule`` (the rule broken)."""
    got = frame_of(impl, mfn)
    assert same_frame(impl, got, want), f"{rule}: frame {mfn:#x} is {got}, expected {want}"

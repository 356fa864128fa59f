"""Checks shared by the hypercall-level conformance tests.

``assert_invariants`` evaluates every invariant of ``xenspec.spec.invariants`` on an
implementation (through ``xenspec.conformance.view``) and fails naming the invariants broken,
each with its witness; each invariant checked counts once in ``xenspec.conformance.coverage``,
and one the adapter gives no data for is recorded there as not evaluated. ``Frame`` and
``assert_frame`` compare one frame's ``page_info`` with what the rule says it must be: type,
counts and flags, or only the type and flags when the implementation does not keep Xen's
reference counts (``HypercallLevel.counts_like_xen`` False).

A failing check raises ``ClauseFailure``, which names the clauses whose check failed: the
invariants broken; for ``assert_frame``, the clause its message starts with or else the
clause of the hypercall the test issued last, and INV-COUNT too when the counts are wrong.
The plugin charges the failure to those clauses only (``attribute``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xenspec.conformance import coverage
from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.driver import Guest
from xenspec.conformance.view import evaluated, not_evaluated, violation_records
from xenspec.spec.clauses import BY_ID
from xenspec.spec.pagetable import PGT


def invariants_checked(impl: HypercallLevel) -> list[str]:
    """The ids of the invariants ``violations`` evaluates on ``impl``."""
    ids = list(dict.fromkeys(inv.id for inv in evaluated(impl)))
    if "INV-COUNT" not in not_evaluated(impl):
        ids.append("INV-COUNT")
    return ids


class ClauseFailure(AssertionError):
    """A check failed; ``clauses`` are the clauses whose check it is."""

    def __init__(self, message: str, clauses: Iterable[str]) -> None:
        super().__init__(message)
        self.clauses = tuple(dict.fromkeys(clauses))


def named_clause(message: str) -> str | None:
    """The clause id a failure message starts with (the suite's convention: "INV-NOWRPT: ...",
    "mmu_update/NORMAL_PT_UPDATE dom0 ..."), if it starts with one."""
    head = message.lstrip().split(None, 1)[0].rstrip(":,") if message.strip() else ""
    return head if head in BY_ID else None


def attribute(exc: BaseException, fallback: Iterable[str]) -> tuple[tuple[str, ...], str]:
    """The clauses a test failure is charged to, and how they were found: the failed check's
    own clauses ("check"), the clause the message starts with ("message"), the clause of the
    hypercall the test issued last ("last hypercall"), or, when none says, ``fallback``, the
    test's own clauses ("test")."""
    if isinstance(exc, ClauseFailure) and exc.clauses:
        return exc.clauses, "check"
    named = named_clause(str(exc))
    if named:
        return (named,), "message"
    if coverage.LAST:
        return (coverage.LAST,), "last hypercall"
    return tuple(fallback), "test"


def assert_invariants(impl: HypercallLevel, guests: Iterable[Guest] = ()) -> None:
    """Every invariant holds on ``impl``'s current state. ``guests`` are the domains the test
    created; the privileged ones among them may map frames of another domain (FOREIGNDOM)."""
    privileged = frozenset(g.domid for g in guests if g.privileged)
    for cid in invariants_checked(impl):
        if cid in BY_ID:
            coverage.hit(cid)
    for cid, why in not_evaluated(impl).items():
        coverage.not_evaluated(cid, why)
    found = violation_records(impl, privileged)
    if found:
        broken = sorted({v.id for v in found})
        detail = "\n  ".join(str(v) for v in found[:20]) + ("\n  ..." if len(found) > 20 else "")
        raise ClauseFailure(
            f"invariant(s) {', '.join(broken)} broken by the state the hypercalls left:\n"
            f"  {detail}", broken)


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
        return f"{name} type_count={self.type_count:#x} count={self.count:#x}{flags}"


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
    if same_frame(impl, got, want):
        return
    clause = named_clause(rule) or coverage.LAST
    counts = (got.type_count, got.count) != (want.type_count, want.count)
    raise ClauseFailure(f"{rule}: frame {mfn:#x} is {got}, expected {want}",
                        [c for c in (clause, "INV-COUNT" if counts else None) if c])

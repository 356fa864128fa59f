"""Every proof obligation as a pytest item: (hypercall x invariant), unbounded, cached.

Each result is also recorded in prove-last.json, as ``xenspec prove`` does, so that the
documentation's traceability matrix shows the proofs a test run discharged. An obligation the
solver cannot decide within its time limit is an expected failure (xfail) with the reason; a
counterexample fails the test."""

from __future__ import annotations

import pytest

from xenspec.proofs.obligations import obligation_names
from xenspec.proofs.runner import prove_one, record_last_run

NAMES = obligation_names()


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_obligation(index: int) -> None:
    result = prove_one(index)
    record_last_run([result])
    if result.status == "unknown":
        # The solver gave up within its time limit and the bounded search found no
        # counterexample: not proved, not refuted. Reported as xfail, never as a pass; a
        # counterexample fails below.
        pytest.xfail(f"{result.name}: solver answered unknown in {result.seconds:.0f} s")
    assert result.ok, "\n".join([f"{result.name}: {result.status}", *result.counterexample])


def test_every_assumption_names_an_invariant() -> None:
    """An assumption is named by its label (``obligations.ASSUMES``, ``SPEC_ASSUMES``, the MMU
    invariants, the branch checks' ``GENERATION_INVARIANTS``): a label no assumable invariant
    has would be left out of every obligation without a word (a part renamed, split)."""
    from xenspec.proofs import branchcheck, obligations
    from xenspec.spec.invariants import proof_invariants

    labels = {inv.label for inv in obligations.assumable()}
    named = {*obligations.MMU_INVARIANTS, *branchcheck.GENERATION_INVARIANTS,
             *(x for xs in obligations.ASSUMES.values() for x in xs),
             *(x for xs in obligations.SPEC_ASSUMES.values() for x in xs)}
    assert named - labels == set()
    proved = {inv.label for inv in proof_invariants()}
    assert set(obligations.ASSUMES) - proved == set(), "an ASSUMES key no obligation has"

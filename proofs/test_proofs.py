"""Every proof obligation as a pytest item: (hypercall x invariant), unbounded, cached."""

from __future__ import annotations

import pytest

from xenspec.proofs.obligations import all_obligations
from xenspec.proofs.runner import prove_one

OBLIGATIONS = all_obligations()


@pytest.mark.parametrize(
    "index",
    range(len(OBLIGATIONS)),
    ids=[f"{name}-{inv.id}" + ("" if br == "success" else f"-{br}")
         for name, _, inv, br in OBLIGATIONS],
)
def test_obligation(index: int) -> None:
    result = prove_one(index)
    assert result.ok, "\n".join([f"{result.name}: {result.status}", *result.counterexample])

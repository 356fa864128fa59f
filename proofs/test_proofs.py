"""Every proof obligation as a pytest item: (hypercall x invariant), unbounded, cached."""

from __future__ import annotations

import pytest

from xenspec.proofs.obligations import obligation_names
from xenspec.proofs.runner import prove_one

NAMES = obligation_names()


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_obligation(index: int) -> None:
    result = prove_one(index)
    assert result.ok, "\n".join([f"{result.name}: {result.status}", *result.counterexample])

"""The conformance suite's grant-table and memory_op parts (conformance/test_grants.py,
conformance/test_memory.py) and the optional offerings they need.

The invariants judge a grant mapping of another domain's frame by the grantee's handles, which
an adapter reports through ``grant_handles`` (the "grants" offering): the view must read them
(a PTE no handle accounts for is a violation of INV-OWN), a malformed answer is an adapter
error naming the method, and an implementation that does not offer grants or memory_op has
those tests reported as not offered, never passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance.adapter import GrantHandle, offered
from xenspec.conformance.checked import AdapterError, Checked
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.test_grants import HOST, Gnt, window
from xenspec.conformance.view import violations

ROOT = Path(__file__).resolve().parent.parent


def mapped_grant() -> tuple[Checked, ReferenceImplementation, int, int]:
    """A reference machine where domain a maps a frame domain b granted it, writable."""
    from xenspec.conformance.driver import Guest

    ref = ReferenceImplementation()
    impl = Checked(ref)
    a, b = Guest(impl, 64, 32), Guest(impl, 64, 32)
    (m,) = b.free_mfns(1)
    Gnt(b).grant(3, a.domid, m)
    w = window(a)
    Gnt(a).map_ok(w.va, HOST, 3, b.domid)
    return impl, ref, a.domid, m


class ForgetfulHandles(ReferenceImplementation):
    """Reports no grant handle at all."""

    def grant_handles(self, domid: int) -> Sequence[GrantHandle]:
        return []


class MalformedHandles(ReferenceImplementation):
    def grant_handles(self, domid: int) -> Sequence[GrantHandle]:
        return [(0, 2, 1, 5)]  # type: ignore[list-item]


def test_the_reference_offers_grants_and_memory() -> None:
    assert {"grants", "memory"} <= offered(ReferenceImplementation())


def test_the_view_accounts_grant_ptes_to_their_handles() -> None:
    impl, _, grantee, m = mapped_grant()
    assert violations(impl) == []
    (h,) = impl.grant_handles(grantee)
    assert (h.flags, h.frame) == (HOST, m) and h.pte != (0, 0)


def test_a_grant_pte_no_handle_accounts_for_breaks_inv_own() -> None:
    """The same state, with an adapter that reports no handle: the grant PTE is a mapping of
    another domain's frame without a grant."""
    impl = Checked(ForgetfulHandles())
    from xenspec.conformance.driver import Guest

    a, b = Guest(impl, 64, 32), Guest(impl, 64, 32)
    (m,) = b.free_mfns(1)
    Gnt(b).grant(3, a.domid, m)
    w = window(a)
    Gnt(a).map_ok(w.va, HOST, 3, b.domid)
    found = violations(impl)
    assert any(v.startswith("INV-OWN") for v in found), found
    assert any(v.startswith("INV-GNT-RO") for v in found), found


def test_a_malformed_grant_handles_answer_names_the_method() -> None:
    impl = Checked(MalformedHandles())
    with pytest.raises(AdapterError) as exc:
        impl.grant_handles(0)
    assert exc.value.method == "grant_handles"


def test_grants_and_memory_not_offered_are_reported_so(tmp_path: Path) -> None:
    """An implementation of the hypercall level that does not offer grants or memory_op: every
    test of those modules is not offered (and a run of only those checked nothing)."""
    (tmp_path / "plain_adapter.py").write_text(
        "from xenspec.conformance.reference import ReferenceImplementation\n\n\n"
        "class Plain(ReferenceImplementation):\n"
        "    offers = frozenset({'hypercall', 'events'})\n")
    report = tmp_path / "report.json"
    env = {**os.environ, "XENSPEC_PROFILE": "quick", "XENSPEC_CACHE_DIR": str(tmp_path / "c"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_grants.py",
         "conformance/test_memory.py", "-q", "-p", "no:cacheprovider",
         "--implementation=plain_adapter:Plain", f"--conformance-report={report}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    doc: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert doc["tests"] and {t["outcome"] for t in doc["tests"]} == {"not offered"}
    messages = {t["message"].split(" (")[0] for t in doc["tests"]}
    assert any("grants" in m for m in messages) and any("memory" in m for m in messages), \
        messages

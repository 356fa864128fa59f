"""What the traceability matrix knows: which proof obligations belong to which clause, how
the last ``xenspec prove`` ended for each (``prove-last.json``), and what the last conformance
run recorded (``conformance.json``). Missing files mean "not run yet"; nothing is made up."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenspec.docgen.source import getsource
from xenspec.proofs.obligations import (
    HYPERCALL_SPECS,
    RULE_OBLIGATIONS,
    all_obligations,
    obligation_names,
)
from xenspec.spec.clauses import CLAUSES, Clause

PROVE_FILE = "prove-last.json"
CONFORMANCE_FILE = "conformance.json"
BRANCHES_FILE = "branches-last.json"  # proofs.branchcheck.BRANCHES_FILE


# ----------------------------------------------------------------------------------------------
# Obligations grouped by clause.
# ----------------------------------------------------------------------------------------------
def _spec_name(c: Clause) -> str:
    return c.spec.split(":", 1)[1] if ":" in c.spec else ""


def _calls(fn: Callable[..., Any], name: str) -> bool:
    return bool(name) and re.search(rf"\b{re.escape(name)}\(", getsource(fn)) is not None


def _hypercall_clauses(spec_label: str, builder: Callable[..., Any]) -> list[str]:
    """The clause a hypercall spec's obligations belong to: the clause with the same id, else
    the clauses whose spec function the builder calls (one spec may state several commands)."""
    ids = {c.id for c in CLAUSES}
    if spec_label in ids:
        return [spec_label]
    return [c.id for c in CLAUSES if c.spec and _calls(builder, _spec_name(c))
            and c.id not in [n for n, _ in HYPERCALL_SPECS]]


def _rule_clauses(name: str, make: Callable[..., Any]) -> list[str]:
    """A rule obligation belongs to the clauses it names and those whose spec it calls."""
    words = set(re.findall(r"[\w/-]+", name))
    return [c.id for c in CLAUSES if c.id in words or (c.spec and _calls(make, _spec_name(c)))]


def obligations_by_clause() -> dict[str, list[str]]:
    """Clause id -> names of its proof obligations (hypercall obligations also count for the
    invariant they preserve)."""
    out: dict[str, list[str]] = {c.id: [] for c in CLAUSES}
    names = obligation_names()
    for name, (label, builder, inv, _) in zip(names, all_obligations(), strict=False):
        for cid in [*_hypercall_clauses(label, builder), inv.id]:
            out.setdefault(cid, []).append(name)
    for name, make in RULE_OBLIGATIONS:
        for cid in _rule_clauses(name, make):
            out[cid].append(name)
    return out


# ----------------------------------------------------------------------------------------------
# The last runs.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProofStatus:
    status: str
    seconds: float
    cached: bool
    timestamp: str


@dataclass(frozen=True)
class TestRecord:
    nodeid: str
    outcome: str
    clauses: tuple[str, ...]
    duration: float


@dataclass(frozen=True)
class ClauseTally:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    hits: int = 0
    error: int = 0  # adapter errors charged to the clause
    not_offered: int = 0  # tests the implementation does not offer what they need for
    not_applicable: int = 0  # tests of a later Xen fix the run's --xen-profile lacks


@dataclass
class Conformance:
    implementation: str
    finished: str
    tests: list[TestRecord] = field(default_factory=list)
    clauses: dict[str, ClauseTally] = field(default_factory=dict)
    profile: str = ""  # --xen-profile of the run ('' in records made before it existed)


@dataclass
class Status:
    proofs: dict[str, ProofStatus] | None  # None: never proved here
    conformance: Conformance | None  # None: the suite never ran here
    problems: list[str] = field(default_factory=list)  # unreadable files, unknown clause ids
    # The last branch checks (proofs.branchcheck, tests/test_branches.py): "family branch" ->
    # hit (states checked), failed, reason (why not hit), timestamp. None: never run here.
    branches: dict[str, dict[str, Any]] | None = None


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} is unreadable ({exc}); treated as not run")
        return None


def _proofs(data: Any) -> dict[str, ProofStatus] | None:
    if not isinstance(data, dict):
        return None
    return {name: ProofStatus(str(e.get("status", "?")), float(e.get("seconds", 0.0)),
                             bool(e.get("cached", False)), str(e.get("timestamp", "")))
            for name, e in data.items() if isinstance(e, dict)}


def _tally(e: dict[str, Any]) -> ClauseTally:
    return ClauseTally(*(int(e.get(k, 0)) for k in ("tests", "passed", "failed", "skipped",
                                                    "hits", "error", "not_offered",
                                                    "not_applicable")))


def _conformance(data: Any) -> Conformance | None:
    if not isinstance(data, dict):
        return None
    tests = [TestRecord(str(t.get("nodeid", "?")), str(t.get("outcome", "?")),
                        tuple(str(c) for c in t.get("clauses", [])),
                        float(t.get("duration", 0.0)))
             for t in data.get("tests", []) if isinstance(t, dict)]
    clauses = {str(k): _tally(v) for k, v in data.get("clauses", {}).items()
               if isinstance(v, dict)}
    return Conformance(str(data.get("implementation", "?")), str(data.get("finished", "?")),
                       tests, clauses, str(data.get("profile", "")))


def load(cache_dir: Path) -> Status:
    problems: list[str] = []
    proofs = _proofs(_read_json(cache_dir / PROVE_FILE, problems))
    conf = _conformance(_read_json(cache_dir / CONFORMANCE_FILE, problems))
    if conf is not None:
        known = {c.id for c in CLAUSES}
        named = set(conf.clauses) | {c for t in conf.tests for c in t.clauses}
        problems += [f"the conformance run names clause {cid!r}, which the registry lacks"
                     for cid in sorted(named - known)]
    branches = _read_json(cache_dir / BRANCHES_FILE, problems)
    return Status(proofs, conf, problems,
                  {str(k): v for k, v in branches.items() if isinstance(v, dict)}
                  if isinstance(branches, dict) else None)


def builders_by_clause() -> dict[str, list[tuple[str, Callable[..., Any]]]]:
    """Clause id -> the (label, builder) pairs of ``proofs.obligations.HYPERCALL_SPECS`` that
    instantiate its spec with symbolic arguments."""
    out: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
    for label, builder in HYPERCALL_SPECS:
        for cid in _hypercall_clauses(label, builder):
            out.setdefault(cid, []).append((label, builder))
    return out

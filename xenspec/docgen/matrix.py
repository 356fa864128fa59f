"""The traceability matrix: for every clause, its proof obligations with their status and time
from the last ``xenspec prove``, and the conformance tests that exercised it with how often the
suite hit it. A clause's own page carries the same rows in detail."""

from __future__ import annotations

from xenspec.docgen import rst
from xenspec.docgen.status import PROVE_FILE, ClauseTally, ProofStatus, Status, TestRecord
from xenspec.spec.clauses import CLAUSES, Clause, Kind

NOT_RUN = "not run yet"


def slug(cid: str) -> str:
    return cid.lower().replace("/", "-").replace(",", "-")


def target(cid: str) -> str:
    return f"clause-{slug(cid)}"


def _proof_cell(names: list[str], status: Status) -> tuple[str, str]:
    """(status summary, total seconds) of a clause's obligations."""
    if not names:
        return "no obligation", ""
    if status.proofs is None:
        return f"{len(names)}: {NOT_RUN}", ""
    found = [status.proofs[n] for n in names if n in status.proofs]
    proved = sum(p.status == "proved" for p in found)
    failed = [p for p in found if p.status != "proved"]
    text = f"{proved}/{len(names)} proved"
    if failed:
        text += f", **{len(failed)} {'/'.join(sorted({p.status for p in failed}))}**"
    if len(found) < len(names):
        text += f", {len(names) - len(found)} not proved yet"
    return text, f"{sum(p.seconds for p in found):.2f}" if found else ""


def _test_cells(cid: str, status: Status) -> tuple[str, str]:
    """(tests: passed/failed/skipped, hits) of a clause in the last conformance run."""
    if status.conformance is None:
        return NOT_RUN, NOT_RUN
    tally = status.conformance.clauses.get(cid)
    if tally is None:
        tally = _tally_from_tests(cid, status.conformance.tests)
    if tally.tests == 0:
        return "no test", str(tally.hits)
    failed = f", **{tally.failed} failed**" if tally.failed else ""
    skipped = f", {tally.skipped} skipped" if tally.skipped else ""
    error = f", **{tally.error} error**" if tally.error else ""
    offered = f", {tally.not_offered} not offered" if tally.not_offered else ""
    na = f", {tally.not_applicable} not applicable" if tally.not_applicable else ""
    return (f"{tally.passed}/{tally.tests} passed{failed}{error}{skipped}{offered}{na}",
            str(tally.hits))


def _tally_from_tests(cid: str, tests: list[TestRecord]) -> ClauseTally:
    mine = [t for t in tests if cid in t.clauses]
    count = {o: sum(t.outcome == o for t in mine) for o in ("passed", "failed", "skipped")}
    return ClauseTally(len(mine), count["passed"], count["failed"], count["skipped"], 0)


def sources_line(status: Status) -> str:
    """Where the numbers come from, and when they were made."""
    if status.proofs is None:
        proofs = f"Proofs: {NOT_RUN} (``xenspec prove`` writes ``{PROVE_FILE}``)."
    else:
        stamps = sorted(p.timestamp for p in status.proofs.values() if p.timestamp)
        when = f", last at {stamps[-1]}" if stamps else ""
        proofs = f"Proofs: the last ``xenspec prove`` ({len(status.proofs)} obligations{when})."
    if status.conformance is None:
        tests = f"Conformance: {NOT_RUN} (``pytest conformance`` records the run)."
    else:
        c = status.conformance
        profile = f" under profile {rst.literal(c.profile)}" if c.profile else ""
        tests = (f"Conformance: {len(c.tests)} tests against "
                 f"{rst.literal(c.implementation)}{profile}, finished "
                 f"{rst.escape(c.finished)}.")
    notes = rst.bullets(rst.escape(p) for p in status.problems)
    return rst.page(proofs + "\n" + tests, notes)


def matrix_page(obligations: dict[str, list[str]], status: Status) -> str:
    header = ["Clause", "Kind", "Proof obligations", "Proof s", "Conformance tests", "Hits"]
    rows = []
    for c in CLAUSES:
        proof, secs = _proof_cell(obligations.get(c.id, []), status)
        tests, hits = _test_cells(c.id, status)
        rows.append([rst.ref(target(c.id), c.id), c.kind.value, proof, secs, tests, hits])
    return rst.page(
        rst.label("traceability-matrix"),
        rst.heading("Traceability matrix"),
        "Every clause of the specification, the proof obligations that establish it, and the "
        "conformance tests that exercise it. *Hits* counts how often the suite exercised the "
        "clause (hypercalls issued, exceptions bounced). The numbers are read from the last "
        "runs on this machine when the documentation was built; ``xenspec docs --refresh`` "
        "runs both first.",
        sources_line(status),
        rst.table(header, rows, widths="30 10 22 8 20 10"),
        branch_section(status),
    )


def gem_branch_keys() -> list[tuple[str, str, dict[str, str]]]:
    """(family, branch, reasons for branches not hit) of the grant, memory_op and event
    specs' branch checks (proofs.branchcheck_gem)."""
    from xenspec.proofs import branchcheck_gem as gem

    keys = [(f.name, b, gem.UNREACHABLE) for f in gem.FAMILIES for b in gem.branch_names(f)]
    keys += [(f.name, b, gem.UNREACHABLE) for f in gem.EVT_FAMILIES
             for b in gem.evt_branch_names(f)]
    return keys


def builder_branch_keys() -> list[tuple[str, str, dict[str, str]]]:
    """(family, branch, reasons for branches not hit) of the start-of-day spec's branch
    checks (proofs.branchcheck_builder)."""
    from xenspec.proofs import branchcheck_builder as sod

    return [(f.name, b, sod.UNREACHABLE) for f in sod.FAMILIES for b in sod.branch_names(f)]


def branch_section(status: Status) -> str:
    """Branch coverage: every named branch of every transition spec that the spec-guided
    refinement checks (proofs.branchcheck), with how often the last run took it."""
    from xenspec.proofs.branchcheck import FAMILIES, UNREACHABLE, branch_names

    last = status.branches
    rows = []
    keys = [(f.name, b, UNREACHABLE) for f in FAMILIES for b in branch_names(f)]
    keys += gem_branch_keys() + builder_branch_keys()
    for name, b, unreachable in keys:
        key = f"{name} {b}"
        r = last.get(key) if last is not None else None
        if r is None:
            cell = NOT_RUN if key not in unreachable else "not hit: " + unreachable[key]
        elif int(r.get("failed", 0)):
            cell = f"**{r['failed']} of {r['hit']} failed**"
        elif int(r.get("hit", 0)):
            cell = f"hit ({r['hit']} states)"
        else:
            cell = "not hit: " + str(r.get("reason", ""))
        rows.append([rst.literal(name), rst.literal(b), rst.escape(cell)])
    return rst.page(
        rst.heading("Branch coverage", 1),
        "Every named branch of the transition specifications (``spec.branches``) and whether "
        "the spec-guided refinement checks (``proofs.branchcheck``, run by "
        "``tests/test_branches.py``) took it on the reference model: the solver builds a "
        "small state that takes the branch, the model runs the handler from it, and its "
        "outcome must be that branch's. A branch no state takes says why. The grant-table, "
        "memory_op and event-channel specs are checked on machines the model builds through "
        "its own calls, the solver choosing the arguments and the grant entries "
        "(``proofs.branchcheck_gem``). The domain builder's start-of-day spec is checked the "
        "same way, each of its checks with the builder's parameters the solver chooses, the "
        "smallest and at the check's boundaries (``proofs.branchcheck_builder``).",
        rst.table(["Hypercall", "Branch", "Last run"], rows, widths="30 40 30"),
    )


def _proof_rows(names: list[str], proofs: dict[str, ProofStatus] | None) -> list[list[str]]:
    rows = []
    for n in names:
        p = proofs.get(n) if proofs is not None else None
        if p is None:
            rows.append([rst.escape(n), NOT_RUN if proofs is None else "not proved yet",
                         "", "", ""])
        else:
            rows.append([rst.escape(n), p.status if p.status == "proved" else f"**{p.status}**",
                         f"{p.seconds:.3f}", "yes" if p.cached else "no", rst.escape(p.timestamp)])
    return rows


def clause_trace(c: Clause, names: list[str], status: Status) -> str:
    """The traceability section of a clause's page."""
    blocks = [rst.heading("Traceability", 1), sources_line(status)]
    if names:
        blocks.append(rst.table(["Obligation", "Status", "Seconds", "Cached", "When"],
                                _proof_rows(names, status.proofs), widths="50 12 10 8 20"))
    else:
        blocks.append(_no_obligation_reason(c))
    blocks.append(_test_block(c, status))
    return rst.page(*blocks)


def _no_obligation_reason(c: Clause) -> str:
    if c.kind is Kind.invariant:
        return ("No proof obligation: this invariant is checked on every state the reference "
                "model reaches in the tests (``--check-invariants``), not proved.")
    return "No proof obligation: the clause has no Z3 transition specification yet."


def _test_block(c: Clause, status: Status) -> str:
    if status.conformance is None:
        return f"Conformance tests: {NOT_RUN}."
    tests, hits = _test_cells(c.id, status)
    mine = [t for t in status.conformance.tests if c.id in t.clauses]
    rows = [[rst.literal(t.nodeid), t.outcome if t.outcome != "failed" else "**failed**",
             f"{t.duration:.3f}"] for t in mine]
    head = f"Conformance tests: {tests}; the suite hit this clause {hits} times."
    if not rows:
        return head
    return rst.page(head, rst.table(["Test", "Outcome", "Seconds"], rows, widths="70 15 15"))

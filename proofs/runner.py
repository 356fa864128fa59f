"""Discharging the proof obligations: solve, cache, and explain failures.

An obligation is proved when the solver finds its negation unsatisfiable. Anything else
(a model, or "unknown" within the time limit) is a failure; the runner then searches for a
concrete counterexample in small bounded machines (2 to 4 frames, one vCPU), where quantifiers
are expanded and the solver can build models, and prints it readably.

Each obligation is solved from its SMT-LIB text in a Z3 context of its own, with the solver
parameters of ``solver_params``: the search then depends on that text alone, not on what the
process built before (term ids, and so the solver's choices, follow the order terms were made
in; in a shared context the same obligation took 1 s or 50 s depending on which obligations
the worker had built first). Results are cached by that text, the parameters and the Z3
version, which is exactly what the result depends on: an unchanged obligation is not proved
again. ``prove_all`` also records each obligation's last status, time and whether it came from
the cache in ``prove-last.json`` next to the cache (the documentation's traceability matrix
reads it).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import z3

from xenspec.proofs.counterexample import explain
from xenspec.proofs.obligations import (
    RULE_OBLIGATIONS,
    all_obligations,
    build,
    obligation_names,
)
from xenspec.sharedfiles import read_json_dict, update_json_dict
from xenspec.spec import symbolic

DEFAULT_TIMEOUT_S = 600
BOUNDED_FRAMES = (2, 3, 4)
# The solver's parameters for the proof obligations, set here and nowhere else.
SOLVER_PARAMS: dict[str, bool | int] = {
    # Relevancy filtering off: with it, E-matching and case splits over the MMU obligations'
    # nested array lambdas took 20 s to 400 s (or gave up) on several of them
    # (NEW_BASEPTR and PIN_L2_TABLE against INV-NOWRPT and INV-L2REF); without it, 1 to 5 s
    # each on an idle machine.
    "smt.relevancy": 0,
}
# Obligations (by name prefix) with parameters of their own. set_gdt's search is bit-vector
# case splitting rather than quantifier instantiation (16 listed frames, and the descriptor
# rule in its validity condition): it needs relevancy filtering, without which INV-PRIV took
# 40 s or more. The others: below.
SOLVER_PARAMS_FOR: dict[str, dict[str, bool | int]] = {
    "set_gdt ": {"smt.relevancy": 2},
    "mmuext_op/PIN_L2_TABLE ": {"rewriter.expand_select_ite": True},
    "mmuext_op/NEW_BASEPTR ": {"rewriter.expand_select_ite": True},
    "memory_op/decrease_reservation ": {"rewriter.expand_select_ite": True},
    "compat-pae: mmuext_op/NEW_BASEPTR preserves INV-NOWRPT": {"rewriter.expand_select_ite": True},
    "compat-pae: mmuext_op/NEW_BASEPTR preserves INV-L2REF": {"rewriter.expand_select_ite": True},
    "mmu_update/NORMAL_PT_UPDATE preserves INV-L2REF": {"smt.pull_nested_quantifiers": True},
    "set_gdt preserves INV-PRIV (selectors)": {"smt.pull_nested_quantifiers": True},
}
# Native PIN_L2_TABLE, NEW_BASEPTR and decrease_reservation leave a state chosen field by field
# (mm_spec.pick: ``If(already, old.type, validated.type)``, an array), and read it at frames
# the quantifiers name. Solved as such, each read of the If is an array case split with the
# lambda behind it; expanding a read of an If into an If of reads (then reduced through the
# lambda) before the search leaves plain terms. Measured on their 85 obligations (Z3 5.4.1,
# random seeds 1 to 4, a loaded 2-core machine): 438 s in all, 272M rlimit, slowest 123 s
# (unknown within 120 s: NEW_BASEPTR preserves INV-BASE [retry], seed 4); with the expansion
# 65 s, 52M rlimit, slowest 3.3 s. PIN_L2_TABLE preserves INV-L2REF (directories): 14 s to
# 70 s over seeds 0 to 4 (8.6M rlimit at seed 0), 0.1 s with it (0.12M). Not for every
# obligation: at seed 0 mmu_update/NORMAL_PT_UPDATE preserves INV-L2REF (directories) took
# 45M rlimit instead of 19M, and compat-pae NEW_BASEPTR preserves INV-OWN (L3 entries) was
# unknown within 120 s instead of 10 s. Of the compat-pae NEW_BASEPTR obligations, those
# against INV-NOWRPT and INV-L2REF gain (rlimit over seeds 0 to 4: INV-NOWRPT 9.6-14.4M, 8 s
# at seed 0, to 1.2-1.3M; INV-L2REF (directories) 3.1-8.3M to 1.6-1.8M; INV-L2REF (L3s)
# 2.0-17.3M to 1.2-4.0M; their [refused, L3 cleared] branches the same either way) and the
# others not (INV-OWN (L3 entries) above; INV-OWN (directory entries) 1.3M to 2.9M).
# A quantifier over several kinds (symbolic.forall) is a ForAll nested in a ForAll; the
# solver instantiates the outer one and takes each instance's inner ForAll as a quantifier of
# its own. mm_spec.drop_references' choice over (frame, frame, index) in mmu_update's L2 path
# was instantiated 46K times (smt.qi.profile, seed 0). Pulling nested quantifiers out into
# one ForAll over all the variables (the same formula) before the search: mmu_update preserves
# INV-L2REF (directories) 19.2, 2.4, 59.0, 20.6, 5.7M rlimit over seeds 0 to 4 (21 s at seed
# 0, unknown within 60 s at seed 2) to 1.3, 2.2, 1.1, 1.6, 4.0M; set_gdt preserves INV-PRIV
# (selectors) 18.3, 25.4, 24.5, 58.0, 10.3M (15 s to 50 s) to 1.5, 2.6, 1.9, 1.4, 5.0M (its
# [refused] branch, which the prefix takes too: 16.2, 2.5, 2.0, 0.7, 0.2M to 0.3, 11.2, 2.5,
# 1.6, 7.1M). Not for every obligation: over all of them (seed 0) 365M rlimit went to 300M,
# but NEW_BASEPTR preserves INV-BASE went from 0.1 s to over 60 s, update_va_mapping preserves
# INV-GNT-RO gained nothing clear over the seeds (45.9M to 34.0M, slowest 17.8M instead of
# 15.5M).


# The bounded counterexample search (quantifiers expanded over 2 to 4 frames) runs with Z3's
# defaults but for these obligations (by name prefix). update_descriptor's intact INV-PRIV
# search, the descriptor rule over each word of every frame, took 54 s with relevancy
# filtering and 17 s without (proofs/test_sensitivity.py, same loaded machine); without it the
# compat-pae mutants' searches took 3 to 4 times longer, so it is not the default here.
BOUNDED_PARAMS_FOR: dict[str, dict[str, bool | int]] = {
    "update_descriptor ": {"smt.relevancy": 0},
}


def _by_prefix(table: dict[str, dict[str, bool | int]], name: str) -> dict[str, bool | int]:
    """The parameters ``table`` gives obligation ``name`` (by name prefix, in table order)."""
    out: dict[str, bool | int] = {}
    for prefix, params in table.items():
        if name.startswith(prefix):
            out.update(params)
    return out


def solver_params(name: str) -> dict[str, bool | int]:
    """The parameters obligation ``name`` is solved with."""
    return {**SOLVER_PARAMS, **_by_prefix(SOLVER_PARAMS_FOR, name)}


@dataclass
class Result:
    name: str
    status: str  # "proved", "FAILED" (counterexample found) or "unknown"
    seconds: float
    cached: bool = False
    counterexample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "proved"


def cache_dir() -> Path:
    return Path(os.environ.get("XENSPEC_CACHE_DIR", ".xenspec-cache"))


def cache_path() -> Path:
    return cache_dir() / "proofs.json"


def last_run_path() -> Path:
    """The status of each obligation at its last ``prove_all`` (read by the documentation)."""
    return cache_dir() / "prove-last.json"


def load_cache() -> dict[str, dict[str, float | str]]:
    return read_json_dict(cache_path())


def cache_proved(key: str, title: str, seconds: float) -> None:
    """Add one proved obligation to the cache (under its lock: the processes of a parallel
    test run or of ``prove_all`` add theirs at the same time)."""
    entry = {"name": title, "status": "proved", "seconds": round(seconds, 3)}
    update_json_dict(cache_path(), lambda cache: cache.__setitem__(key, entry))


def record_last_run(results: list[Result]) -> None:
    """Merge ``results`` into prove-last.json: name -> status, seconds, cached, timestamp."""
    now = datetime.now(UTC).isoformat(timespec="seconds")

    def merge(data: dict[str, object]) -> None:
        for r in results:
            data[r.name] = {"status": r.status, "seconds": round(r.seconds, 3),
                            "cached": r.cached, "timestamp": now}

    update_json_dict(last_run_path(), merge)


def obligation_key(text: str, params: dict[str, bool | int]) -> str:
    """The cache key of an obligation: its SMT-LIB text (``solver.sexpr()``), the solver's
    parameters and Z3's version."""
    settings = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return hashlib.sha256((text + settings + z3.get_version_string()).encode()).hexdigest()


def isolated(text: str, params: dict[str, bool | int], timeout_s: int) -> z3.Solver:
    """The obligation of SMT-LIB ``text`` read into a context of its own, with ``params`` and
    the time limit set."""
    fresh = z3.Solver(ctx=z3.Context())
    fresh.from_string(text)
    for name, value in params.items():
        fresh.set(name, value)
    fresh.set("timeout", timeout_s * 1000)
    return fresh


def prove_one(index: int, use_cache: bool = True, timeout_s: int = DEFAULT_TIMEOUT_S) -> Result:
    """Discharge obligation number ``index`` (see ``obligation_names``)."""
    hypercall_obligations = all_obligations()
    symbolic.set_scope(symbolic.Scope())
    if index < len(hypercall_obligations):
        name, builder, inv, branch = hypercall_obligations[index]
        ob = build(name, builder, inv, branch)
        title, solver = ob.name, ob.solver
    else:
        title, make = RULE_OBLIGATIONS[index - len(hypercall_obligations)]
        solver = make()
    params = solver_params(title)
    text = solver.sexpr()  # printed once: about a third of an easy obligation's time
    key = obligation_key(text, params)
    cache = load_cache() if use_cache else {}
    hit = cache.get(key)
    if hit is not None and hit.get("status") == "proved":
        return Result(title, "proved", float(hit.get("seconds", 0.0)), cached=True)
    solver = isolated(text, params, timeout_s)
    start = time.perf_counter()
    answer = solver.check()
    seconds = time.perf_counter() - start
    if answer == z3.unsat:
        if use_cache:
            cache_proved(key, title, seconds)
        return Result(title, "proved", seconds)
    if index >= len(hypercall_obligations):
        lines = ([f"{d.name()} = {solver.model()[d]}" for d in solver.model().decls()]
                 or ["false for every value: the negated obligation has no free symbols"]
                 ) if answer == z3.sat else []
        searched = ""
    else:
        lines, answers = bounded_search(index)
        searched = _searched(answers)
    return Result(title, "FAILED" if lines else "unknown", time.perf_counter() - start,
                  counterexample=lines or [f"solver answered {answer}; {searched}".rstrip("; ")])


def find_counterexample(index: int, timeout_s: int = 60) -> list[str]:
    """Search small machines for a state and arguments that break the obligation."""
    return bounded_search(index, timeout_s)[0]


def bounded_search(index: int, timeout_s: int = 60) -> tuple[list[str], dict[int, str]]:
    """``find_counterexample``, and what the solver answered for each machine size searched
    ("sat", "unsat", or "unknown" when it gave up within ``timeout_s``): an empty
    counterexample is evidence only for the sizes answered "unsat"."""
    name, builder, inv, branch = all_obligations()[index]
    answers: dict[int, str] = {}
    try:
        for frames in BOUNDED_FRAMES:
            symbolic.set_scope(symbolic.Scope(frames=frames, vcpus=1))
            ob = build(name, builder, inv, branch)
            ob.solver.set("timeout", timeout_s * 1000, **_by_prefix(BOUNDED_PARAMS_FOR, ob.name))
            answer = ob.solver.check()
            answers[frames] = str(answer)
            if answer == z3.sat:
                head = (f"counterexample in a machine of {frames} frames, violating "
                        f"{inv.id}: {inv.statement}")
                return [head, *explain(ob.solver.model(), ob.old, ob.new, ob.witnesses)], answers
    finally:
        symbolic.set_scope(symbolic.Scope())
    return [], answers


def _searched(answers: dict[int, str]) -> str:
    """What a bounded search that found nothing covered, in words."""
    done = [f for f, a in answers.items() if a == "unsat"]
    open_ = [f for f, a in answers.items() if a != "unsat"]
    parts = [f"no counterexample in machines of {', '.join(map(str, done))} frames"] if done else []
    if open_:
        parts.append(f"the search undecided for {', '.join(map(str, open_))} frames")
    return "; ".join(parts)


def prove_all(
    selected: list[int] | None = None,
    use_cache: bool = True,
    jobs: int = 1,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Discharge the selected obligations (all by default), ``jobs`` at a time."""
    indices = selected if selected is not None else list(range(len(obligation_names())))
    results: dict[int, Result] = {}
    report = on_result
    if jobs <= 1:
        for i in indices:
            results[i] = prove_one(i, use_cache)
            if report:
                report(results[i])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(prove_one, i, use_cache): i for i in indices}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if report:
                    report(results[i])
    ordered = [results[i] for i in indices]
    record_last_run(ordered)
    return ordered


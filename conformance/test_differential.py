"""Differential, hypercall level: the implementation and the reference model side by side.

Hypothesis draws sequences of MMU hypercalls, valid and hostile, and issues each to both
machines (``xenspec.conformance.replay``): the start-of-day states are compared first (a builder
difference is reported as such, before any call), then after every call the return value,
``*done`` and the resulting state must agree, over what the specification defines and up to a
renaming of machine frames through each machine's P2M (the replay module says exactly what is
compared and what is not).

A mismatch is not shrunk by Hypothesis, which would replay hundreds of sequences: the failing
sequence is cut after the diverging call and shrunk by dropping steps while it still diverges
at a call of the same clause, within ``SHRINK_S`` seconds. The failure message starts with that
clause and the difference, lists the calls, and gives them as JSON with the command that
replays them (``python -m xenspec.conformance.replay --implementation=... '<json>'``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.checks import assert_invariants
from xenspec.conformance.replay import (
    BuilderDifference,
    Divergence,
    Side,
    Step,
    check_step,
    clause,
    counterexample,
    make_sides,
    shrink,
)
from xenspec.spec import abi

# XENSPEC_PROFILE: ci (the default), long, or quick (fewer examples and no shrinking beyond
# cutting the sequence after the diverging call: enough to tell whether an implementation
# disagrees, as xenspec kill-rate needs).
RUN_ORDER = 2  # after the directed tests, whose failures name the rule more precisely
PROFILE = os.environ.get("XENSPEC_PROFILE", "ci")
EXAMPLES, STEPS = {"long": (300, 50), "quick": (15, 25)}.get(PROFILE, (30, 30))
SHRINK_S = {"long": 300.0, "quick": 0.0}.get(PROFILE, 60.0)
# The EXAMPLES sequences are drawn in PARTS tests (sizes differing by at most one), each with
# its own draws, so that parallel workers share them: as one test they were the suite's
# longest (17 of its 27 s on two workers).
PARTS = 2


def part_examples(part: int) -> int:
    """How many of the EXAMPLES sequences part ``part`` (0-based) draws."""
    return EXAMPLES // PARTS + (part < EXAMPLES % PARTS)

FLAGS = [abi._PAGE_PRESENT, abi._PAGE_PRESENT | abi._PAGE_RW,
         abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_USER | abi._PAGE_ACCESSED,
         abi._PAGE_PRESENT | abi._PAGE_GLOBAL, abi._PAGE_PRESENT | abi._PAGE_PSE,
         abi._PAGE_PRESENT | abi._PAGE_PAT, abi._PAGE_RW, 0]

refs = st.one_of(
    st.tuples(st.just("dom"), st.integers(0, 1), st.integers(0, 95)),
    st.tuples(st.just("dom"), st.integers(0, 1), st.integers(40, 63)),  # unmapped frames
    st.tuples(st.just("table"), st.integers(0, 1), st.integers(0, 1)),
    st.tuples(st.sampled_from(["xen", "beyond"]), st.just(0), st.just(0)),
).map(list)
# Entry indices: mostly the guest slots a test can use, sometimes Xen's slots or any.
indices = st.one_of(st.integers(0, 767), st.sampled_from([768, 1007, 1008, 1023]),
                    st.integers(0, 1023))
entries = st.tuples(refs, st.sampled_from(FLAGS)).map(list)
doms = st.integers(0, 1)
foreign = st.sampled_from(["self", "self", "self", "other", "io", "bogus"])


class Recorder:
    """The steps of the example being run (the last one, when Hypothesis reports a failure)."""

    steps: list[Step] = []  # noqa: RUF012 - one run at a time


def make_machine(factory: Callable[[], HypercallLevel]) -> type[RuleBasedStateMachine]:
    class Differential(RuleBasedStateMachine):
        @initialize()
        def boot(self) -> None:
            Recorder.steps = []
            self.sides: list[Side] = make_sides(factory)

        def step(self, step: Step) -> None:
            Recorder.steps.append(step)
            found = check_step(self.sides, step)
            self.diverged = found is not None
            assert found is None, found

        @rule(dom=doms, table=refs, index=indices, value=entries, fd=foreign)
        def mmu_update(self, dom: int, table: list[Any], index: int, value: list[Any],
                       fd: str) -> None:
            self.step({"call": "mmu_update", "dom": dom, "table": table, "index": index,
                       "value": value, "fd": fd})

        @rule(dom=doms, frame=refs, gpfn=st.integers(0, 2**32 - 1), fd=foreign)
        def machphys_update(self, dom: int, frame: list[Any], gpfn: int, fd: str) -> None:
            self.step({"call": "machphys_update", "dom": dom, "frame": frame, "gpfn": gpfn,
                       "fd": fd})

        @rule(dom=doms, cmd=st.sampled_from([
            abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_UNPIN_TABLE,
            abi.MMUEXT_NEW_BASEPTR]), frame=refs, fd=foreign)
        def mmuext_op(self, dom: int, cmd: int, frame: list[Any], fd: str) -> None:
            self.step({"call": "mmuext_op", "dom": dom, "cmd": cmd, "frame": frame, "fd": fd})

        @rule(dom=doms, page=st.integers(0, 1100), value=entries,
              flags=st.sampled_from([abi.UVMF_NONE, abi.UVMF_INVLPG, abi.UVMF_TLB_FLUSH]))
        def update_va_mapping(self, dom: int, page: int, value: list[Any], flags: int) -> None:
            self.step({"call": "update_va_mapping", "dom": dom, "page": page, "value": value,
                       "flags": flags})

        def teardown(self) -> None:
            if hasattr(self, "sides") and not getattr(self, "diverged", False):
                s = self.sides[0]
                assert_invariants(s.impl, s.guests)

    return Differential


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "update_va_mapping", "mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE",
                     "mmuext_op/UNPIN_TABLE", "mmuext_op/NEW_BASEPTR")
@pytest.mark.fix("XSA-182", "uva-l1-only")  # the reference model follows both
@pytest.mark.parametrize("part", range(PARTS), ids=[f"{i + 1} of {PARTS}" for i in range(PARTS)])
def test_agrees_with_the_reference_model(hv_factory: Callable[[], HypercallLevel],
                                         request: pytest.FixtureRequest, part: int) -> None:
    implementation = str(request.config.getoption("--implementation"))
    try:
        make_sides(hv_factory)
    except BuilderDifference as exc:
        pytest.fail(f"{exc}\n\nreplay it with:\n  python -m xenspec.conformance.replay "
                    f"--implementation={implementation} '[]'", pytrace=False)
    try:
        run_state_machine_as_test(
            make_machine(hv_factory),
            settings=settings(max_examples=part_examples(part), stateful_step_count=STEPS,
                              deadline=None,
                              suppress_health_check=list(HealthCheck), database=None,
                              phases=[p for p in Phase if p is not Phase.shrink],
                              report_multiple_bugs=False))
    except AssertionError as exc:
        steps = list(Recorder.steps)
        if not steps:
            raise
        if str(exc).startswith("invariant"):  # the two sides agreed, and both are wrong
            found = Divergence(len(steps) - 1, "invariants", str(exc))
            pytest.fail(counterexample(implementation, steps, found), pytrace=False)
        first = Divergence(len(steps) - 1, clause(steps[-1]), str(exc))
        steps, found = shrink(hv_factory, steps, first, SHRINK_S)
        pytest.fail(counterexample(implementation, steps, found), pytrace=False)

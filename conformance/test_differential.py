"""Differential, hypercall level: the implementation and the reference model side by side.

Hypothesis draws sequences of MMU hypercalls, valid and hostile, and issues each to both
machines; after every call the return value, ``*done`` and the resulting state must agree.
Frames are named by (domain, pfn), never by machine frame number, since the two heaps place
domains differently: a frame reference in an argument is translated through each machine's own
P2M, and states are compared after translating machine frame numbers back. Xen's own frames
compare as "xen", the hypervisor slots of page directories are not compared (their contents are
each hypervisor's own business), and counts only when the implementation counts like Xen.

A failure message starts with the clause of the call that diverged. A mismatch shrinks
to a minimal sequence, which Hypothesis prints as the Python steps that replay it
(``state = Differential(); state.mmu_update(...)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.checks import assert_invariants
from xenspec.conformance.coverage import mmuext_clause
from xenspec.conformance.driver import ARG_PAGES, Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT, pte_get_pfn, pte_present

# XENSPEC_PROFILE: ci (the default), long, or quick (few examples and no shrinking: enough to
# tell whether an implementation disagrees, as xenspec kill-rate needs).
RUN_ORDER = 2  # after the directed tests, whose failures name the rule more precisely
PROFILE = os.environ.get("XENSPEC_PROFILE", "ci")
EXAMPLES, STEPS = {"long": (300, 50), "quick": (25, 25)}.get(PROFILE, (40, 30))
PHASES = [p for p in Phase if not (PROFILE == "quick" and p is Phase.shrink)]

SIZES = [(96, 40, False), (64, 32, True)]  # (pages, mapped, privileged) of the two domains
FLAGS = [abi._PAGE_PRESENT, abi._PAGE_PRESENT | abi._PAGE_RW,
         abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_USER | abi._PAGE_ACCESSED,
         abi._PAGE_PRESENT | abi._PAGE_GLOBAL, abi._PAGE_PRESENT | abi._PAGE_PSE,
         abi._PAGE_PRESENT | abi._PAGE_PAT, abi._PAGE_RW, 0]


@dataclass(frozen=True)
class Ref:
    """A frame named independently of the machine: a domain's pfn, Xen's, or past RAM."""

    kind: str  # "dom", "table" (the i-th start-of-day table of dom), "xen", "beyond"
    dom: int = 0
    index: int = 0

    def __repr__(self) -> str:
        return f"Ref({self.kind!r}, {self.dom}, {self.index})"


refs = st.one_of(
    st.builds(Ref, st.just("dom"), st.integers(0, 1), st.integers(0, 95)),
    st.builds(Ref, st.just("dom"), st.integers(0, 1), st.integers(40, 63)),  # unmapped frames
    st.builds(Ref, st.just("table"), st.integers(0, 1), st.integers(0, 1)),
    st.builds(Ref, st.sampled_from(["xen", "beyond"])),
)
# Entry indices: mostly the guest slots a test can use, sometimes Xen's slots or any.
indices = st.one_of(st.integers(0, 767), st.sampled_from([768, 1007, 1008, 1023]),
                    st.integers(0, 1023))
entries = st.tuples(refs, st.sampled_from(FLAGS))
doms = st.integers(0, 1)
foreign = st.sampled_from(["self", "self", "self", "other", "bogus"])


class Side:
    """One machine of the pair, with its two domains."""

    def __init__(self, impl: HypercallLevel) -> None:
        self.impl = impl
        self.guests = [Guest(impl, n, m, p) for n, m, p in SIZES]

    def mfn(self, r: Ref) -> int:
        if r.kind == "xen":
            g = self.guests[0]
            return int(pte_get_pfn(self.impl.xen_l2_slots(g.domid, g.l2_mfn)[0]))
        if r.kind == "beyond":
            return self.impl.nr_frames() + 7
        g = self.guests[r.dom]
        if r.kind == "table":
            return g.mfn((g.info.pt_base_pfn, *g.info.l1_pfns)[r.index % 2])
        return g.mfn(r.index % len(g.info.p2m))

    def pte(self, e: tuple[Ref, int]) -> int:
        return (self.mfn(e[0]) << abi.PAGE_SHIFT | e[1]) & 0xFFFFFFFF

    def domid(self, caller: int, how: str) -> int:
        if how == "other":
            return self.guests[1 - caller].domid
        return 0x7FF0 if how == "bogus" else abi.DOMID_SELF

    # --- translating a state back into machine-independent terms ------------------------------
    def names(self) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        for k, g in enumerate(self.guests):
            out.update({mfn: ("dom", k, pfn) for pfn, mfn in enumerate(g.info.p2m)})
        return out

    def entry_name(self, e: int, names: dict[int, tuple[Any, ...]]) -> Any:
        if not pte_present(e):
            return e
        return (names.get(pte_get_pfn(e), ("other",)), e & 0xFFF)

    def state(self) -> dict[str, Any]:
        names, counts = self.names(), self.impl.counts_like_xen
        frames: dict[Any, Any] = {}
        for k, g in enumerate(self.guests):
            frames[("running", k)] = g.running
            for pfn, mfn in enumerate(g.info.p2m):
                f = self.impl.frame(mfn)
                key = ("dom", k, pfn)
                frames[key] = (PGT(f.type).name, f.validated, f.pinned, f.allocated,
                               (f.type_count, f.count) if counts else None,
                               self.impl.machphys(mfn))
                if pfn >= ARG_PAGES:  # the argument area holds each machine's own numbers
                    frames[(*key, "contents")] = self.contents(f.type, mfn, names)
        frames["bases"] = [names.get(b, b) for _, b in self.impl.vcpu_bases()]
        return frames

    def contents(self, type: int, mfn: int, names: dict[int, tuple[Any, ...]]) -> list[Any]:
        """The non-zero words of a frame, frame numbers translated; Xen's slots left out."""
        words = self.impl.entries(mfn)
        if type == PGT.l2_page_table:
            words = words[: abi.L2_PAGETABLE_FIRST_XEN_SLOT]
        return [(i, self.entry_name(w, names)) for i, w in enumerate(words) if w]


def only_in(a: list[Any], b: list[Any]) -> list[Any]:
    return sorted(set(a) - set(b), key=repr)[:3]


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys on which two translated states differ, with both values (first few)."""
    out = []
    for key in sorted(set(a) | set(b), key=repr):
        va, vb = a.get(key), b.get(key)
        if va != vb:
            if isinstance(va, list) and isinstance(vb, list):
                va, vb = only_in(va, vb), only_in(vb, va)
            out.append(f"{key}: implementation {va}, reference {vb}")
    return out[:8]


def make_machine(factory: Callable[[], HypercallLevel]) -> type[RuleBasedStateMachine]:
    class Differential(RuleBasedStateMachine):
        @initialize()
        def boot(self) -> None:
            self.sides = [Side(factory()), Side(ReferenceImplementation())]

        def both(self, what: str, call: Callable[[Side], Any]) -> None:
            impl, ref = (call(s) for s in self.sides)
            assert impl == ref, (
                f"{what}: the implementation returned {impl}, the reference model {ref}")
            found = diff(self.sides[0].state(), self.sides[1].state())
            assert not found, f"{what}: the states differ afterwards:\n  " + "\n  ".join(found)

        def running(self, dom: int) -> bool:
            return all(s.guests[dom].running for s in self.sides)

        @rule(dom=doms, table=refs, index=indices, value=entries, fd=foreign)
        def mmu_update(self, dom: int, table: Ref, index: int, value: tuple[Ref, int],
                       fd: str) -> None:
            if self.running(dom):
                self.both(
                    f"mmu_update/NORMAL_PT_UPDATE dom{dom} {table}[{index}] = {value} fd={fd}",
                    lambda s: s.guests[dom].mmu_update(
                        [(Guest.entry_maddr(s.mfn(table), index), s.pte(value))],
                        s.domid(dom, fd)))

        @rule(dom=doms, frame=refs, gpfn=st.integers(0, 2**32 - 1), fd=foreign)
        def machphys_update(self, dom: int, frame: Ref, gpfn: int, fd: str) -> None:
            if self.running(dom):
                self.both(
                    f"mmu_update/MACHPHYS_UPDATE dom{dom} {frame} = {gpfn:#x} fd={fd}",
                    lambda s: s.guests[dom].mmu_update(
                        [(s.mfn(frame) << abi.PAGE_SHIFT | abi.MMU_MACHPHYS_UPDATE, gpfn)],
                        s.domid(dom, fd)))

        @rule(dom=doms, cmd=st.sampled_from([
            abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_UNPIN_TABLE,
            abi.MMUEXT_NEW_BASEPTR]), frame=refs, fd=foreign)
        def mmuext_op(self, dom: int, cmd: int, frame: Ref, fd: str) -> None:
            if self.running(dom):
                self.both(
                    f"{mmuext_clause(cmd)} dom{dom} {frame} fd={fd}",
                    lambda s: s.guests[dom].mmuext_op([(cmd, s.mfn(frame), 0)],
                                                      s.domid(dom, fd)))

        @rule(dom=doms, page=st.integers(0, 1100), value=entries,
              flags=st.sampled_from([abi.UVMF_NONE, abi.UVMF_INVLPG, abi.UVMF_TLB_FLUSH]))
        def update_va_mapping(self, dom: int, page: int, value: tuple[Ref, int],
                              flags: int) -> None:
            if self.running(dom):
                self.both(
                    f"update_va_mapping dom{dom} page {page} = {value} flags {flags}",
                    lambda s: s.guests[dom].update_va_mapping(
                        s.guests[dom].va(page) & 0xFFFFFFFF, s.pte(value), flags))

        def teardown(self) -> None:
            if hasattr(self, "sides"):
                s = self.sides[0]
                assert_invariants(s.impl, [g for g in s.guests])

    return Differential


@pytest.mark.clauses("mmu_update/NORMAL_PT_UPDATE", "mmu_update/MACHPHYS_UPDATE",
                     "update_va_mapping", "mmuext_op/PIN_L1_TABLE", "mmuext_op/PIN_L2_TABLE",
                     "mmuext_op/UNPIN_TABLE", "mmuext_op/NEW_BASEPTR")
def test_agrees_with_the_reference_model(hv_factory: Callable[[], HypercallLevel]) -> None:
    run_state_machine_as_test(
        make_machine(hv_factory),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True,
                          phases=PHASES,
                          database=None))

"""Refinement: the reference model's MMU handlers agree with their specs.

A concrete model state is encoded as a ``SymState`` of Z3 constants. The model runs one
hypercall; the spec of that hypercall is then asked whether, for some choice of its free
symbols (which tables a call validates or de-validates, which frames it retypes), it produces
exactly the model's outcome: the same return value and the same owner, type, validated and
pinned bits of every frame, the same entries and the same base pointers. Because the states
are concrete and small, every quantifier is expanded over the machine's frames, vCPUs and the
entry indices in use, and the question is a plain satisfiability check.

Counters are not compared: the spec abstracts them, and INV-COUNT checks the model's counters
against the references that exist after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import z3

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGT_pinned, PGT_validated
from xenspec.spec import abi, mm_spec, symbolic
from xenspec.spec.mm_spec import Transition
from xenspec.spec.symbolic import SymState, bv

W = z3.BitVecSort(32)


@dataclass(frozen=True)
class Snapshot:
    """What the spec sees of a model state."""

    nr_frames: int
    owner: tuple[int, ...]
    type: tuple[int, ...]
    validated: tuple[bool, ...]
    pinned: tuple[bool, ...]
    entries: dict[tuple[int, int], int]  # nonzero words of every frame but Xen's M2P table
    bases: tuple[int, ...]
    vcpu_domains: tuple[int, ...]
    privileged: frozenset[int]
    xen_slots: dict[tuple[int, int], int]  # (domid, index) -> Xen's entry

    @staticmethod
    def take(hv: Hypervisor, skip: frozenset[int] = frozenset()) -> Snapshot:
        """The spec's view of ``hv``; the words of frames in ``skip`` (and of Xen's M2P table)
        are left out: data the spec does not describe, such as hypercall argument pages."""
        f = hv.frames
        n = hv.memory.nr_frames
        m2p = set(range(hv.m2p_start, hv.m2p_l1))
        entries = {}
        for mfn in range(n):
            if mfn in m2p or mfn in skip:
                continue
            words = hv.memory.frame_words(mfn)
            for i in range(1024):
                if words[i]:
                    entries[(mfn, i)] = int(words[i])
        vcpus = [v for d in hv.domains.values() for v in d.vcpus]
        xen_slots = {}
        for d in hv.domains.values():
            for k, e in enumerate(hv.xen_l2_slots(d)):
                if e:
                    xen_slots[(d.domain_id, abi.L2_PAGETABLE_FIRST_XEN_SLOT + k)] = e
        return Snapshot(
            nr_frames=n,
            owner=tuple(int(x) & 0xFFFFFFFF for x in f.owner),
            type=tuple(int(x) for x in f.type),
            validated=tuple(bool(x & PGT_validated) for x in f.flags),
            pinned=tuple(bool(x & PGT_pinned) for x in f.flags),
            entries=entries,
            bases=tuple(v.guest_table for v in vcpus),
            vcpu_domains=tuple(v.domain.domain_id for v in vcpus),
            privileged=frozenset(d.domain_id for d in hv.domains.values() if d.is_privileged),
            xen_slots=xen_slots,
        )

    def indices(self) -> set[int]:
        return {i for _, i in self.entries} | {i for _, i in self.xen_slots}

    def encode(self) -> SymState:
        def array(values: tuple[int, ...] | tuple[bool, ...], sort: z3.SortRef) -> z3.ArrayRef:
            default = z3.BoolVal(False) if sort == z3.BoolSort() else bv(0)
            arr = z3.K(W, default)
            for i, x in enumerate(values):
                arr = z3.Store(arr, bv(i), z3.BoolVal(x) if isinstance(x, bool) else bv(x))
            return arr

        flat = z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], bv(0))
        for (mfn, i), e in sorted(self.entries.items()):
            flat = z3.Store(flat, bv(mfn), bv(i), bv(e))
        slots = dict(self.xen_slots)

        def xen_l2e(domid: z3.BitVecRef, index: z3.BitVecRef) -> z3.BitVecRef:
            out = bv(0)
            for (d, k), e in sorted(slots.items()):
                out = z3.If(z3.And(domid == d, index == k), bv(e), out)
            return out

        privileged = z3.K(W, z3.BoolVal(False))
        for d in self.privileged:
            privileged = z3.Store(privileged, bv(d), z3.BoolVal(True))
        return SymState(
            owner=array(self.owner, W), type=array(self.type, W),
            validated=array(self.validated, z3.BoolSort()),
            pinned=array(self.pinned, z3.BoolSort()), mem=flat,
            base=array(self.bases, W), nr_frames=bv(self.nr_frames),
            vcpu_domain=array(self.vcpu_domains, W), privileged=privileged, xen_l2e=xen_l2e,
        )


def same_state(s: SymState, after: Snapshot, indices: list[int]) -> z3.BoolRef:
    """``s`` agrees with the concrete ``after`` on every frame, entry in use and base."""
    terms = []
    for f in range(after.nr_frames):
        terms += [
            s.owner[bv(f)] == after.owner[f], s.type[bv(f)] == after.type[f],
            s.validated[bv(f)] == after.validated[f], s.pinned[bv(f)] == after.pinned[f],
        ]
        for i in indices:
            terms.append(z3.Select(s.mem, bv(f), bv(i)) == after.entries.get((f, i), 0))
    terms += [s.base[bv(v)] == b for v, b in enumerate(after.bases)]
    return z3.And(*terms)


def observed_choices(before: Snapshot, after: Snapshot) -> Callable[[str], z3.ExprRef]:
    """The spec's choices as the model made them: which tables lost their validation, which
    became newly validated L1 tables, which frames took the writable type."""
    n = before.nr_frames
    gone = [f for f in range(n) if before.validated[f] and not after.validated[f]]
    new_l1 = [f for f in range(n) if not (before.validated[f] and before.type[f] == 1)
              and after.validated[f] and after.type[f] == 1]
    retyped = [f for f in range(n) if before.type[f] != 7 and after.type[f] == 7]
    kept = [f for f in range(n) if before.type[f] in (1, 2) and after.type[f] == before.type[f]]
    sets = {"devalidated": gone, "new_l1": new_l1, "retyped": retyped, "kept_table": kept}

    def choose(name: str) -> z3.ExprRef:
        if name == "validate_target":
            return z3.BoolVal(bool(new_l1))
        arr = z3.K(W, z3.BoolVal(False))
        for f in sets[name]:
            arr = z3.Store(arr, bv(f), z3.BoolVal(True))
        return arr

    return choose


def check_refinement(
    before: Snapshot, after: Snapshot, rc: int, spec: Callable[[SymState], Transition],
    extra_indices: tuple[int, ...] = (),
) -> str | None:
    """None if the spec allows the model's outcome, else a description of the mismatch."""
    indices = sorted(before.indices() | after.indices() | set(extra_indices))
    symbolic.reset_fresh()
    old = before.encode()
    if rc != 0:
        # A failing call: no choice at all may let the spec succeed.
        t = spec(old)
        if _sat(z3.And(t.ok, t.choice), timeout_s=5) == z3.sat:
            return f"the model failed with {rc} where the spec can succeed"
    mm_spec.CHOOSE = observed_choices(before, after)
    try:
        t = spec(old)
        if rc == 0:
            outcomes = [z3.And(t.ok, t.choice, same_state(t.new, after, indices))]
        else:
            untouched = z3.And(z3.Not(t.ok), *[z3.Not(b.cond) for b in t.others],
                               same_state(old, after, indices))
            outcomes = [untouched] if z3.is_true(z3.simplify(t.err == rc)) else []
        # ... or the call ended another way the spec names (NEW_BASEPTR's retry and crash).
        outcomes += [z3.And(z3.Not(t.ok), b.cond, b.choice, same_state(b.new, after, indices))
                     for b in t.others if z3.is_true(z3.simplify(b.rc == rc))]
        answer = _sat(z3.Or(*outcomes) if outcomes else z3.BoolVal(False))
    finally:
        mm_spec.CHOOSE = None
    if answer == z3.sat:
        return None
    return f"the spec does not allow the model's outcome (rc {rc}; solver: {answer})"


def _sat(formula: z3.BoolRef, timeout_s: int = 60) -> z3.CheckSatResult:
    solver = z3.Solver()
    solver.set("timeout", timeout_s * 1000)
    solver.add(formula)
    return solver.check()

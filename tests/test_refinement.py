"""The reference model refines the spec: on Hypothesis-generated states and calls, every MMU
hypercall the model handles ends in an outcome its spec allows (``proofs.refinement``)."""

from __future__ import annotations

import os

import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenspec.proofs.refinement import Snapshot, check_refinement
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.pvguest import ARG_PAGES, PVGuest
from xenspec.spec import abi, mm_spec
from xenspec.spec.symbolic import bv

EXAMPLES = 300 if os.environ.get("XENSPEC_PROFILE") == "long" else 40

V0 = bv(0)  # the calling vCPU: the only one
FLAGS = st.sampled_from([0, 1, 3, 7, 0x23, 0x67, 0x101, 0x81, 0xE03, 2])
frame_pick = st.integers(0, 63)
index_pick = st.one_of(st.integers(0, 24), st.sampled_from([768, 1007, 1008, 1019, 1023]))
OPS = st.one_of(
    st.tuples(st.just("mmu_update"), frame_pick, index_pick, frame_pick, FLAGS),
    st.tuples(st.just("update_va_mapping"), st.integers(0, 24), st.just(0), frame_pick, FLAGS),
    st.tuples(st.sampled_from(["pin1", "pin2", "unpin", "new_baseptr", "machphys"]),
              frame_pick, st.just(0), st.just(0), st.just(0)),
)


def frames_of(g: PVGuest, hv: Hypervisor) -> list[int]:
    """Candidate frames: the guest's own (not its argument pages), then Xen's and free ones."""
    args = {g.mfn(p) for p in range(ARG_PAGES)}
    own = [m for m in g.domain.page_list if m not in args]
    others = [m for m in range(hv.memory.nr_frames) if m not in own and m not in args]
    return own + others


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(OPS, min_size=1, max_size=6))
def test_model_refines_spec(ops: list[tuple[str, int, int, int, int]]) -> None:
    hv = Hypervisor(48)
    g = PVGuest(hv, 30, nr_mapped=21)
    skip = frozenset(g.mfn(p) for p in range(ARG_PAGES))
    cands = frames_of(g, hv)
    for op, a, index, b, flags in ops:
        if not g.domain.is_running:
            break
        frame, target = cands[a % len(cands)], cands[b % len(cands)]
        if frame == g.first_l1_mfn and index < ARG_PAGES:
            index += ARG_PAGES  # keep the argument pages mapped: a guest that unmaps them
            # only gets -EFAULT, which the MMU spec does not describe
        val = g.pte(target, flags)
        before = Snapshot.take(hv, skip)
        extra: tuple[int, ...] = (index,)
        if op == "mmu_update":
            ptr = g.entry_maddr(frame, index)
            rc, _ = g.mmu_update([(ptr, val)])
            spec = lambda s, p=ptr, x=val: mm_spec.spec_mmu_update(  # noqa: E731
                s, V0, z3.BitVecVal(p, 64), bv(x), s.vcpu_domain[V0])
        elif op == "machphys":
            ptr = frame << 12 | abi.MMU_MACHPHYS_UPDATE
            rc, _ = g.mmu_update([(ptr, 7)])
            spec = lambda s, p=ptr: mm_spec.spec_machphys_update(  # noqa: E731
                s, V0, z3.BitVecVal(p, 64), bv(7), s.vcpu_domain[V0])
        elif op == "update_va_mapping":
            va = g.va(ARG_PAGES + a % (21 - ARG_PAGES))
            extra = ((va >> 12) & 0x3FF, va >> 22)
            rc = g.update_va_mapping(va, val)
            spec = lambda s, x=va, y=val: mm_spec.spec_update_va_mapping(  # noqa: E731
                s, V0, bv(x), bv(y))
        elif op in ("pin1", "pin2"):
            level = 1 if op == "pin1" else 2
            rc = g.pin(frame, level)
            spec = lambda s, f=frame, lv=level: mm_spec.spec_pin_table(  # noqa: E731
                s, bv(f), lv, s.vcpu_domain[V0])
        elif op == "unpin":
            rc = g.unpin(frame)
            spec = lambda s, f=frame: mm_spec.spec_unpin_table(  # noqa: E731
                s, s.vcpu_domain[V0], bv(f))
        else:
            rc = g.new_baseptr(frame)
            spec = lambda s, f=frame: mm_spec.spec_new_baseptr(s, V0, bv(f))  # noqa: E731
        after = Snapshot.take(hv, skip)
        if rc == -abi.EFAULT:
            # The guest's page tables no longer map its argument pages (say, a new base
            # pointer to an empty directory): the call could not read its arguments, which
            # the MMU specs do not describe; it must leave the state alone.
            assert before == after
            break
        problem = check_refinement(before, after, rc, spec, extra)
        assert problem is None, f"{op}(frame {frame:#x}, index {index}, val {val:#x}): {problem}"

"""Bounded exhaustive refinement of the MMU hypercalls: every sequence of up to three calls
over a machine of four frames, model against spec and the invariants after every step.

The machine. One unprivileged domain of 24 pages on a 30-frame machine: the 20 pages its
builder maps (the 16 argument pages the calls read their arguments from, the page directory
``L2``, pinned and loaded as the base pointer, its one L1 table ``L1``, two data pages) and
*the four frames* ``S0``..``S3``: pages the domain owns that nothing maps, with no type and
no contents at the start. Xen owns five frames (its M2P table among them) and one is free.

The argument classes (refmodel/mm.py, after xen/arch/x86/mm.c of Xen 3.0.4):

* frames: each of the four, the live directory, its L1 table, a frame of Xen's (``XEN``: the
  M2P table's L1, owned by DOMID_XEN, get_page refuses it) and the first frame beyond RAM
  (``IO``: mfn_valid refuses it);
* entries: the zero entry, and each frame present read-only or read-write (a PTE's type and
  rights are what get_page_from_l1e / get_page_from_l2e / get_linear_pagetable judge);
* slots (``mmu_update``'s index): the first guest slot 0, the last guest slot
  (L2_PAGETABLE_FIRST_XEN_SLOT - 1), the first Xen slot (L2_PAGETABLE_FIRST_XEN_SLOT, the
  M2P table) and the linear slot (LINEAR_PT_VIRT_START's), in the four frames (whatever their
  type then) and in the live directory; in an L1 table the same indices are plain entries;
* ``update_va_mapping`` addresses: the first and the last page of slot 0, the last page below
  HYPERVISOR_VIRT_START, HYPERVISOR_VIRT_START itself (refused), and a data page of the
  bootstrap region (mapped by ``L1``);
* ``MMUEXT_PIN_L1_TABLE``, ``MMUEXT_PIN_L2_TABLE``, ``MMUEXT_UNPIN_TABLE`` and
  ``MMUEXT_NEW_BASEPTR`` of each frame.

The entries of ``L1`` that map the argument pages are left alone (a guest that unmaps them
only gets -EFAULT, which the MMU specs do not describe; a call that gets it must leave the
state alone, and the sequence ends there), and so is the directory's slot of the bootstrap
region.

The enumeration is breadth first over the sequences in itertools order. States are deduped:
the model is deterministic, so two sequences that reach the same state (all of memory but
the argument pages, the frame table, the base pointers, whether the domain runs) continue
alike, and each state is extended once, from the shortest sequence that reaches it. The
counts printed are the checks run (a state and a call), the sequences they stand for, and
the distinct states.

The default profile runs a slice (``SLICE``, up to two calls from a vocabulary of five, among
them the sequence that reaches a directory through a read-only linear slot and then asks
update_va_mapping to write through it); ``XENSPEC_PROFILE=long`` runs everything, breadth
first, for an hour at most (``XENSPEC_EXHAUSTIVE_SECONDS``): the 457 calls make 140,756
checks of up to two calls (44,326 distinct states) and about 20 million of up to three, at
about a second each.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import z3
from mm_mutants import UVA_ANY_TABLE, mutated

from xenspec.proofs.refinement import Snapshot, check_refinement
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.mm import MM
from xenspec.refmodel.pvguest import ARG_PAGES, PTE_RO, PTE_RW, PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi, mm_spec
from xenspec.spec.mm_spec import Transition
from xenspec.spec.symbolic import SymState, bv

LONG = os.environ.get("XENSPEC_PROFILE") == "long"
DEPTH = 3
# The whole enumeration is about 20 million checks (see docs/guide/mutation.rst): the long
# profile stops after this many seconds unless XENSPEC_EXHAUSTIVE_SECONDS says otherwise
# (0: no limit), and prints how far it got.
LONG_BUDGET = 3600.0
V0 = bv(0)  # the domain's one vCPU

NR_FRAMES, NR_PAGES, NR_MAPPED = 30, 24, 20
FOUR = ("S0", "S1", "S2", "S3")
FRAMES = (*FOUR, "L2", "L1", "XEN", "IO")
ENTRIES: tuple[tuple[str, int] | None, ...] = (
    None, *((f, p) for f in FRAMES for p in (PTE_RO, PTE_RW)))
LAST_GUEST_SLOT = abi.L2_PAGETABLE_FIRST_XEN_SLOT - 1
SLOTS = (0, LAST_GUEST_SLOT, abi.L2_PAGETABLE_FIRST_XEN_SLOT, abi.LINEAR_PT_SLOT)
_4M = 1 << abi.L2_PAGETABLE_SHIFT
VAS = ("0", "slot0-last", "below-xen", "xen", "bootstrap")
VA_OF = {"0": 0, "slot0-last": _4M - abi.PAGE_SIZE,
         "below-xen": abi.HYPERVISOR_VIRT_START - abi.PAGE_SIZE, "xen": abi.HYPERVISOR_VIRT_START}

def vocabulary() -> list[tuple[object, ...]]:
    """Every call of the enumeration, in a fixed order."""
    ops: list[tuple[object, ...]] = []
    for table, slot, e in itertools.product((*FOUR, "L2"), SLOTS, ENTRIES):
        ops.append(("mmu_update", table, slot, e))
    for va, e in itertools.product(VAS, ENTRIES):
        ops.append(("update_va_mapping", va, e))
    for cmd, f in itertools.product(("pin1", "pin2", "unpin", "new_baseptr"), FRAMES):
        ops.append((cmd, f))
    return ops


# The default profile's slice: a read-only linear map of the live directory in slot 0, an
# attempt to hook S0 there read-write (refused: S0 is no L1 table), pinning S0 as an L1 table,
# and update_va_mapping in slot 0 (refused unless an L1 table is hooked there).
SLICE: list[tuple[object, ...]] = [
    ("mmu_update", "L2", 0, ("L2", PTE_RO)),
    ("mmu_update", "L2", 0, ("S0", PTE_RW)),
    ("pin1", "S0"),
    ("update_va_mapping", "0", ("S1", PTE_RW)),
    ("update_va_mapping", "slot0-last", None),
]
SLICE_DEPTH = 2


@dataclass
class Machine:
    """A fresh machine of the module docstring, and its names for the argument classes."""

    hv: Hypervisor = field(default_factory=lambda: Hypervisor(NR_FRAMES))
    g: PVGuest = field(init=False)
    names: dict[str, int] = field(init=False)
    skip: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.g = PVGuest(self.hv, NR_PAGES, nr_mapped=NR_MAPPED)
        g = self.g
        free = list(g.free_pfns())
        assert len(free) == len(FOUR)
        self.names = {**{n: g.mfn(p) for n, p in zip(FOUR, free, strict=True)},
                      "L2": g.l2_mfn, "L1": g.first_l1_mfn, "XEN": self.hv.m2p_l1,
                      "IO": self.hv.memory.nr_frames}
        self.skip = frozenset(g.mfn(p) for p in range(ARG_PAGES))

    def value(self, e: tuple[str, int] | None) -> int:
        return 0 if e is None else self.g.pte(self.names[e[0]], e[1])

    def va(self, name: str) -> int:
        if name == "bootstrap":
            return self.g.va(ARG_PAGES)  # the first data page after the argument pages
        return VA_OF[name]

    def key(self) -> bytes:
        """The whole model state but the argument pages (rewritten by every call)."""
        h = hashlib.blake2b(digest_size=16)
        mem = self.hv.memory
        for mfn in range(mem.nr_frames):
            if mfn not in self.skip:
                h.update(bytes(mem.frame_words(mfn)))
        f = self.hv.frames
        for arr in (f.owner, f.count, f.type, f.type_count, f.flags):
            h.update(arr.tobytes())
        d = self.g.domain
        h.update(repr((self.g.vcpu.guest_table, d.is_running, d.tot_pages)).encode())
        return h.digest()

    def issue(self, op: Sequence[object]) -> tuple[int, Callable[[SymState], Transition],
                                                   tuple[int, ...]]:
        """Issue one call; its return value, its spec and the entry indices it names."""
        g, name = self.g, op[0]
        if name == "mmu_update":
            _, table, slot, e = op
            assert isinstance(table, str) and isinstance(slot, int)
            ptr, val = g.entry_maddr(self.names[table], slot), self.value(e)  # type: ignore[arg-type]
            rc, _ = g.mmu_update([(ptr, val)])
            return rc, lambda s: mm_spec.spec_mmu_update(
                s, V0, z3.BitVecVal(ptr, 64), bv(val), s.vcpu_domain[V0]), (slot,)
        if name == "update_va_mapping":
            _, where, e = op
            assert isinstance(where, str)
            va, val = self.va(where), self.value(e)  # type: ignore[arg-type]
            rc = g.update_va_mapping(va, val)
            return rc, lambda s: mm_spec.spec_update_va_mapping(s, V0, bv(va), bv(val)), (
                (va >> abi.L1_PAGETABLE_SHIFT) & 0x3FF, va >> abi.L2_PAGETABLE_SHIFT)
        assert isinstance(op[1], str)
        mfn = self.names[op[1]]
        if name in ("pin1", "pin2"):
            level = 1 if name == "pin1" else 2
            return g.pin(mfn, level), lambda s: mm_spec.spec_pin_table(
                s, bv(mfn), level, s.vcpu_domain[V0]), ()
        if name == "unpin":
            return g.unpin(mfn), lambda s: mm_spec.spec_unpin_table(
                s, s.vcpu_domain[V0], bv(mfn)), ()
        assert name == "new_baseptr"
        return g.new_baseptr(mfn), lambda s: mm_spec.spec_new_baseptr(s, V0, bv(mfn)), ()


def replay(prefix: Sequence[Sequence[object]]) -> Machine:
    m = Machine()
    for op in prefix:
        m.issue(op)
    return m


def check_step(m: Machine, op: Sequence[object]) -> tuple[bool, str | None]:
    """Issue ``op`` on ``m`` and check it: (whether the sequence may go on, the problem)."""
    before = Snapshot.take(m.hv, m.skip)
    rc, spec, indices = m.issue(op)
    after = Snapshot.take(m.hv, m.skip)
    if rc == -abi.EFAULT:  # the arguments became unreadable: nothing may have changed
        return False, None if before == after else f"{op}: -EFAULT with a changed state"
    problem = check_refinement(before, after, rc, spec, indices)
    if problem is not None:
        return False, f"{op}: {problem}"
    broken = check_invariants(m.hv)
    if broken:
        return False, f"{op}: invariants {broken}"
    return m.g.domain.is_running, None


@dataclass
class Result:
    checks: int = 0  # (state, call) pairs checked
    states: int = 1  # distinct states reached, the initial one included
    problems: list[str] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)  # states to extend, per depth
    complete: bool = False


def enumerate_sequences(ops: list[tuple[object, ...]], depth: int,
                        progress: Callable[[str], None] | None = None,
                        deadline: float | None = None, first_problem: bool = False) -> Result:
    """Breadth-first: every sequence of up to ``depth`` calls from ``ops``, states deduped;
    ``first_problem`` stops at the first sequence that fails a check."""
    res = Result()
    seen = {Machine().key()}
    level: list[tuple[tuple[object, ...], ...]] = [()]  # the shortest prefix of each state
    started = time.monotonic()
    for d in range(depth):
        following: list[tuple[tuple[object, ...], ...]] = []
        for prefix in level:
            for op in ops:
                if deadline is not None and time.monotonic() > deadline:
                    res.levels.append(len(following))
                    res.states = len(seen)
                    return res
                m = replay(prefix)
                go_on, problem = check_step(m, op)
                res.checks += 1
                if problem is not None:
                    res.problems.append(" ; ".join(map(str, (*prefix, problem))))
                    if first_problem:
                        return res
                    continue
                k = m.key()
                if go_on and k not in seen:
                    seen.add(k)
                    if d + 1 < depth:
                        following.append((*prefix, op))
                if progress is not None and res.checks % 200 == 0:
                    progress(f"depth {d + 1}: {res.checks} checks, {len(seen)} states, "
                             f"{time.monotonic() - started:.0f} s")
        res.levels.append(len(following))
        res.states = len(seen)
        level = following
    res.complete = True
    return res


def nr_sequences(ops: int, depth: int) -> int:
    return sum(ops ** k for k in range(1, depth + 1))


def test_bounded_exhaustive_mmu(capsys: pytest.CaptureFixture[str]) -> None:
    ops, depth = (vocabulary(), DEPTH) if LONG else (SLICE, SLICE_DEPTH)
    budget = float(os.environ.get("XENSPEC_EXHAUSTIVE_SECONDS", LONG_BUDGET if LONG else 0))
    deadline = time.monotonic() + budget if budget > 0 else None

    def progress(line: str) -> None:
        with capsys.disabled():
            print(line, file=sys.stderr, flush=True)

    start = time.monotonic()
    res = enumerate_sequences(ops, depth, progress if LONG else None, deadline)
    with capsys.disabled():
        print(f"\nexhaustive MMU: {len(ops)} calls, up to {depth} in a row "
              f"({nr_sequences(len(ops), depth)} sequences): {res.checks} checks of a state "
              f"and a call, {res.states} distinct states, new per depth {res.levels}, "
              f"{'complete' if res.complete else 'STOPPED at the time budget'}, "
              f"{time.monotonic() - start:.1f} s", file=sys.stderr)
    assert res.problems == [], "\n".join(res.problems[:10])


def test_slice_catches_update_va_mapping_through_any_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default slice has teeth: with update_va_mapping writing through any page-table
    frame, the linear map of the live directory in slot 0 followed by update_va_mapping in that
    slot succeeds in the model where the spec refuses it."""
    monkeypatch.setattr(MM, "guest_map_l1e", mutated(*UVA_ANY_TABLE))
    res = enumerate_sequences(SLICE, SLICE_DEPTH, first_problem=True)
    assert res.problems, "the weakened update_va_mapping went unnoticed"
    assert res.problems[0].startswith(str(SLICE[0])), res.problems[0]
    assert "update_va_mapping" in res.problems[0]

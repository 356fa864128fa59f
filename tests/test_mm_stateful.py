"""A Hypothesis state machine whose rules are the MMU hypercalls, valid and hostile.

Two domains (one privileged, so FOREIGNDOM is exercised) issue mmu_update, mmuext_op and
update_va_mapping with arguments drawn mostly from their own frames and tables, sometimes from
the other domain's, Xen's or beyond machine memory, and sometimes plain garbage. After every
step: the result is 0 or one of Xen's negative errno values, no exception escaped, and every
invariant of ``xenspec.spec.invariants`` holds on the model's state, INV-COUNT included. The
invariants are checked after each step by ``IncrementalChecker``, which re-evaluates an
invariant only where what it read has changed (held to the full check by
tests/test_incremental_check.py: the default profile takes a fifth of the CPU time a full check
after each step took), and by a full check (``check_invariants``) at the end of each run.

Profiles: ``XENSPEC_PROFILE=ci`` (default, about 2,500 hypercalls) and ``long`` (10,000+).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.pvguest import PVGuest
from xenspec.refmodel.uaccess import translate
from xenspec.refmodel.view import IncrementalChecker, check_invariants
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

settings.register_profile(
    "ci", max_examples=50, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=250, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("XENSPEC_PROFILE", "ci")

ERRNOS = {0} | {-getattr(abi, n) for n in ("EPERM", "ESRCH", "EFAULT", "EINVAL", "ENOSYS")}
HYPERCALLS = {"count": 0}

FLAG_CHOICES = [
    abi._PAGE_PRESENT,
    abi._PAGE_PRESENT | abi._PAGE_RW,
    abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_USER | abi._PAGE_ACCESSED | abi._PAGE_DIRTY,
    abi._PAGE_PRESENT | abi._PAGE_USER,
    abi._PAGE_PRESENT | abi._PAGE_RW | abi._PAGE_GLOBAL,
    abi._PAGE_PRESENT | abi._PAGE_PAT,
    abi._PAGE_PRESENT | abi._PAGE_AVAIL,
    abi._PAGE_PRESENT | abi._PAGE_PCD | abi._PAGE_PWT,
    0,
    abi._PAGE_RW,
]

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
pfn_index = st.integers(0, 95)
# Guest L2 slots, steering clear most of the time of slot 768, which maps the argument area.
l2_slot = st.one_of(st.integers(0, 767), st.sampled_from([768, 769, 1007, 1008, 1016, 1023]))
entry_index = st.one_of(l2_slot, st.integers(0, 1023))
target_kind = st.sampled_from(["own", "own", "own", "table", "other", "xen", "invalid"])


class MMUMachine(RuleBasedStateMachine):
    @initialize()
    def boot(self) -> None:
        self.hv = Hypervisor(512, seed=1)
        self.guests = [
            PVGuest(self.hv, 96, nr_mapped=40),
            PVGuest(self.hv, 64, nr_mapped=32, privileged=True),
        ]
        self.checker = IncrementalChecker(self.hv)

    # --- choosing arguments --------------------------------------------------------------------
    def running(self, who: int) -> PVGuest | None:
        g = self.guests[who % len(self.guests)]
        return g if g.domain.is_running else None

    def frame(self, g: PVGuest, kind: str, pfn: int) -> int:
        other = self.guests[1] if g is self.guests[0] else self.guests[0]
        if kind == "table":
            tables = [m for m in g.domain.page_list
                      if self.hv.frames.type[m] in (PGT.l1_page_table, PGT.l2_page_table)]
            return tables[pfn % len(tables)] if tables else g.mfn(pfn % g.domain.tot_pages)
        if kind == "other":
            return other.mfn(pfn % other.domain.tot_pages)
        if kind == "xen":
            return pfn % (self.hv.m2p_l1 + 1)
        if kind == "invalid":
            return self.hv.memory.nr_frames + pfn
        return g.mfn(pfn % g.domain.tot_pages)

    def call(self, rc: int) -> None:
        HYPERCALLS["count"] += 1
        assert rc in ERRNOS, f"unexpected return value {rc}"

    # --- rules ---------------------------------------------------------------------------------
    @rule(who=st.integers(0, 1), table=pfn_index, tkind=target_kind, index=entry_index,
          tgt=pfn_index, kind=target_kind, flags=st.sampled_from(FLAG_CHOICES))
    def set_entry(self, who: int, table: int, tkind: str, index: int, tgt: int, kind: str,
                  flags: int) -> None:
        g = self.running(who)
        if g is None:
            return
        mfn = self.frame(g, tkind, table)
        self.call(g.set_entry(mfn, index, g.pte(self.frame(g, kind, tgt), flags)))

    @rule(who=st.integers(0, 1), batch=st.lists(
        st.tuples(pfn_index, target_kind, entry_index, pfn_index, target_kind,
                  st.sampled_from(FLAG_CHOICES), st.sampled_from([0, 0, 0, 1, 2, 3])),
        min_size=1, max_size=8))
    def mmu_update_batch(self, who: int, batch: list[tuple[int, str, int, int, str, int, int]]
                         ) -> None:
        g = self.running(who)
        if g is None:
            return
        reqs = []
        for table, tkind, index, tgt, kind, flags, cmd in batch:
            mfn = self.frame(g, tkind, table)
            if cmd == abi.MMU_MACHPHYS_UPDATE:
                reqs.append((mfn << abi.PAGE_SHIFT | cmd, tgt))
            else:
                reqs.append((g.entry_maddr(mfn, index) | cmd,
                             g.pte(self.frame(g, kind, tgt), flags)))
        rc, done = g.mmu_update(reqs)
        self.call(rc)
        # The count is stored through the guest's tables after the batch, and a failed store is
        # ignored (mm.c, do_mmu_update: copy_to_guest(pdone) at "out"): a batch that unmapped
        # its own argument page, or left it read-only, succeeds with no count stored.
        if translate(self.hv.memory, g.vcpu.guest_table, g.done_va, True) is not None:
            assert (rc == 0) == (done == len(reqs)), (rc, done)

    @rule(who=st.integers(0, 1), cmd=st.sampled_from(
        [abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE, abi.MMUEXT_UNPIN_TABLE,
         abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_UNPIN_TABLE, abi.MMUEXT_PIN_L3_TABLE]),
        pfn=pfn_index, kind=target_kind)
    def pin_unpin(self, who: int, cmd: int, pfn: int, kind: str) -> None:
        g = self.running(who)
        if g is None:
            return
        self.call(g.mmuext_op([(cmd, self.frame(g, kind, pfn), 0)])[0])

    @rule(who=st.integers(0, 1), slot=l2_slot, pick=pfn_index, flags=st.sampled_from(FLAG_CHOICES))
    def linear_map(self, who: int, slot: int, pick: int, flags: int) -> None:
        """Point a page-directory slot at a page directory: Xen's linear page tables."""
        g = self.running(who)
        if g is None:
            return
        l2s = [m for m in g.domain.page_list if self.hv.frames.type[m] == PGT.l2_page_table]
        l2 = l2s[pick % len(l2s)] if l2s else g.l2_mfn
        target = l2s[(pick // 3) % len(l2s)] if l2s and pick % 2 else l2
        self.call(g.set_entry(l2, slot, g.pte(target, flags)))

    @rule(who=st.integers(0, 1), pfn=pfn_index, kind=target_kind)
    def new_baseptr(self, who: int, pfn: int, kind: str) -> None:
        g = self.running(who)
        if g is None:
            return
        l2s = [m for m in g.domain.page_list
               if self.hv.frames.type[m] == PGT.l2_page_table and self.hv.frames.is_validated(m)]
        # Mostly switch between validated directories; sometimes try anything (3.0.4 then
        # crashes the domain, which the machine must survive).
        mfn = l2s[pfn % len(l2s)] if l2s and pfn % 8 else self.frame(g, kind, pfn)
        self.call(g.new_baseptr(mfn))

    @rule(who=st.integers(0, 1), slot=l2_slot, index=st.integers(0, 1023), tgt=pfn_index,
          kind=target_kind, flags=st.sampled_from(FLAG_CHOICES),
          uvmf=st.sampled_from([0, 1, 2, 4 | 1, 4 | 2, 0xC0000000 | 1, 3]))
    def update_va_mapping(self, who: int, slot: int, index: int, tgt: int, kind: str,
                          flags: int, uvmf: int) -> None:
        g = self.running(who)
        if g is None:
            return
        va = slot << abi.L2_PAGETABLE_SHIFT | index << abi.PAGE_SHIFT
        self.call(g.update_va_mapping(va, g.pte(self.frame(g, kind, tgt), flags), uvmf))

    @rule(who=st.integers(0, 1), op=st.tuples(st.integers(0, 20), u32, u32))
    def mmuext_other(self, who: int, op: tuple[int, int, int]) -> None:
        g = self.running(who)
        if g is None:
            return
        self.call(g.mmuext_op([op])[0])

    @rule(who=st.integers(0, 1), nr=st.sampled_from([1, 14, 26, 11, 63, 64, 0x7FFFFFFF]),
          args=st.tuples(u32, u32, u32, u32, u32))
    def garbage_hypercall(self, who: int, nr: int, args: tuple[int, ...]) -> None:
        g = self.running(who)
        if g is None:
            return
        self.call(self.hv.hypercall(g.vcpu, nr, *args))

    @rule(who=st.integers(0, 1), reqs=st.lists(st.tuples(u64, u64), min_size=1, max_size=4),
          foreigndom=st.sampled_from([abi.DOMID_SELF, 0, 1, 2, abi.DOMID_IO, abi.DOMID_XEN]))
    def garbage_mmu_update(self, who: int, reqs: list[tuple[int, int]], foreigndom: int) -> None:
        g = self.running(who)
        if g is None:
            return
        self.call(g.mmu_update(reqs, foreigndom)[0])

    # --- after every step ----------------------------------------------------------------------
    @invariant()
    def invariants_hold(self) -> None:
        if hasattr(self, "hv"):
            violations = self.checker.check()
            assert not violations, "\n".join(violations)

    def teardown(self) -> None:
        if hasattr(self, "hv"):  # the full check, on the state the run ended in
            violations = check_invariants(self.hv)
            assert not violations, "\n".join(violations)

    @precondition(lambda self: hasattr(self, "hv"))
    @invariant()
    def hypervisor_alive(self) -> None:
        assert self.hv.domains, "the hypervisor lost its domains"


MMUMachine.TestCase.settings = settings.get_profile(PROFILE)
TestMMUStateMachine = MMUMachine.TestCase


def teardown_module() -> None:
    print(f"\nMMU state machine: {HYPERCALLS['count']} hypercalls checked")

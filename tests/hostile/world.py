"""A machine attacked through the hypercall interface by unprivileged Python-driven guests.

``World`` is one machine of the reference model (``Machine``: the platform, memory_op and the
control interface) with a victim domain (slot 0) and ``N_ATTACKERS`` unprivileged attacker
domains (slots 1..N), each with the start-of-day page tables of ``build_initial_tables`` and
its argument area in its first ``ARG_PAGES`` pages, as the Python guests of refmodel/pvguest.py.
A run is a list of *calls*, plain tuples, so that a failing run prints as a list a test can
pass to ``replay``:

* ``("hc", slot, nr, (a1, .., a5), mem)``: the attacker in ``slot`` first stores ``mem`` into
  its own memory (``(offset, struct format, fields)`` items at that offset of its argument
  area; a store its page tables do not allow is skipped, as the guest's store would fault),
  then issues hypercall ``nr`` (any number, 0..63 and beyond) with those registers. For
  ``iret`` (23), which takes its frame from the guest stack, ``a1`` is the stack pointer.
* ``("grant", slot, ref, flags, domid, frame)``: the attacker writes entry ``ref`` of its
  grant table (a Xen page shared with it, which a guest writes directly).
* ``("destroy", slot)`` and ``("create", slot, reuse_id)``: the tools destroy an attacker,
  or create a new one in that slot (destroying first one that has shut down; reusing the
  old domain id once it is free, if asked). ``slot`` counts attackers from 0.

Arguments and fields are *values*, resolved when the call runs against the machine as it is
then, so that a shrunk run means the same thing: an int is itself; ``("va", pfn, off)`` is an
address in the caller's bootstrap region (pfns past the mapped ones are unmapped);
``("hole", k)`` an address in or next to the hypervisor hole; ``("frame", who, kind, k)`` a
machine frame (``who``: ``self``, ``peer``, ``victim`` or ``xen``); ``("pte", frame, flags)``,
``("ma", frame, offset)`` an entry and a machine address built on one; ``("domid", who)`` a
domain id; ``("q", lo, hi)`` a 64-bit value.

After every call ``World.check`` asks: no exception escaped the hypervisor (``HypervisorBug``),
every invariant holds (refmodel/view.py, including the event invariants; ``IncrementalChecker``
returns exactly what the full check would, re-evaluating only what changed), the victim's frames,
frame-table entries, page tables and vCPU state are exactly as before and it still gets its
hypercalls answered, no other domain was shut down by the caller's request, ``iret`` never
resumes ring 0 or IOPL above 0, the call did at most ``CALL_BOUND`` function calls and
``ACCESS_BOUND`` guest-memory accesses and entered at most ``FRAME_BOUND`` Python frames
(tests/hostile/meters.py; on one call in ``SAMPLE``, chosen by its position and text so that
a replay samples it again, at most ``CALL_BOUND`` function calls in all), it held at most
``STEP_PEAK_BOUND`` more at its peak and left at most ``STEP_RETAINED_BOUND`` and
``STEP_RETAINED_BLOCKS`` Python objects allocated, and the process's resident set grew by at
most ``RSS_BOUND`` in the run.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.builder import DEFAULT_VIRT_BASE, InitialLayout, build_initial_tables
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.domctl import DomctlError
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS as NR
from xenspec.refmodel.hypervisor import Hypervisor, HypervisorBug, OutOfMemory
from xenspec.refmodel.platform import STUB_VIRT, PVPlatform
from xenspec.refmodel.view import IncrementalChecker
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

from .meters import SAMPLE, MemoryMeter, WorkBoundExceeded, WorkMeter

Val = Any  # int | tuple: see the module docstring
Call = tuple[Any, ...]

M32 = 0xFFFFFFFF
PAGE = abi.PAGE_SIZE
MACHINE_MB = 1  # 256 machine frames: the invariant checks after each call loop over them
N_ATTACKERS = 3
VICTIM, ATTACKERS = 0, tuple(range(1, N_ATTACKERS + 1))
ARG_PAGES = 16  # the argument area: pfns [0, 16) of every domain (refmodel/pvguest.py)
# Pfns [0, 16) hold arguments; the page directory and the L1 are the last mapped pfns.
ATTACKER_PAGES, ATTACKER_MAPPED = 28, 21
VICTIM_PAGES, VICTIM_MAPPED = 24, 20
VICTIM_DATA_PFN = VICTIM_MAPPED + 2  # unmapped: the victim's probe writes it via mmu_update

# Work bounds of one hypercall (tests/hostile/meters.py). Xen preempts a long batch and
# continues it later (hypercall_preempt_check, hypercall_create_continuation), so no single
# call does unbounded work. Measured on the model: an mmu_update request is about 15 function
# calls and one guest read (a full argument area, 4,096 requests, about 62,000 calls); the
# largest bounded call is set_gdt: of 7 frames (3,584 descriptors) it makes about 842,000
# calls, 534,000 of them Python frames entered, so about twice that for a full GDT of 14
# frames (FIRST_RESERVED_GDT_PAGE, xen/include/asm-x86/desc.h).
CALL_BOUND = 2_000_000  # function calls, built-in ones included (sampled calls)
FRAME_BOUND = 1_250_000  # Python frames entered (every call)
ACCESS_BOUND = 20_000  # guest records read or written: five full argument areas
# Memory: the peak of one hypercall, what one hypercall may leave allocated (a guest may make
# the hypervisor keep bounded state only: Xen's console ring is 16 KB, its tables have fixed
# sizes), in bytes and in Python objects, and the process's resident-set growth over a run.
STEP_PEAK_BOUND = 16 << 20
STEP_RETAINED_BOUND = 4 << 20
STEP_RETAINED_BLOCKS = 50_000
RSS_BOUND = 96 << 20

# Addresses in and around the hypervisor hole (xen/include/asm-x86/config.h, x86_32 non-PAE).
HOLE = (
    abi.HYPERVISOR_VIRT_START, abi.HYPERVISOR_VIRT_START - 4, abi.HYPERVISOR_VIRT_START - 1,
    abi.HYPERVISOR_VIRT_START - 16, abi.MACH2PHYS_VIRT_END - 4, abi.MACH2PHYS_VIRT_END,
    abi.PERDOMAIN_VIRT_START, STUB_VIRT, 0xFFFFF000, 0xFFFFFFFC, M32,
    abi.HYPERVISOR_VIRT_START - abi.PAGE_SIZE,
)


# Where a Python-driven guest's hypercall "is": just after an ``int $0x82`` at CALL_EIP - 2.
CALL_EIP = DEFAULT_VIRT_BASE + 0x1002
# A preempted hypercall leaves its continuation in the registers and EIP on the ``int $0x82``
# again (xen/arch/x86/domain.c, hypercall_create_continuation), so the guest re-issues it;
# the harness follows at most this many continuations of one call.
MAX_CONTINUATIONS = 64


class GuestRegs:
    """The registers of a Python-driven vCPU at its hypercall: for ``iret`` (which pops its
    frame from the guest stack) and a continuation; ring 1 on the flat selectors, as a guest
    kernel runs."""

    def __init__(self) -> None:
        self.regs = self.fresh(0)

    @staticmethod
    def fresh(esp: int) -> CpuUserRegs:
        return CpuUserRegs(cs=abi.FLAT_KERNEL_CS, ss=abi.FLAT_KERNEL_SS, ds=abi.FLAT_KERNEL_DS,
                           es=abi.FLAT_KERNEL_DS, esp=esp, eip=CALL_EIP,
                           eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)

    def user_regs(self) -> CpuUserRegs:
        return self.regs


@dataclass
class Slot:
    domain: Domain
    layout: InitialLayout
    regs: GuestRegs


@dataclass
class Stats:
    hypercalls: int = 0
    calls: int = 0
    skipped: int = 0  # calls of a domain that is shut down or destroyed


class HostileFailure(AssertionError):
    """A check failed after a call; ``index`` is the call's position in the run."""

    def __init__(self, index: int, calls: list[Call], problem: str) -> None:
        self.index = index
        self.problem = problem
        self.calls = calls[: index + 1]
        super().__init__(f"after call {index} {calls[index]!r}: {problem}\n"
                         f"replay (tests/hostile/world.py):\n"
                         f"    replay({self.calls!r})")


class World:
    """One machine: a victim, attackers, and the checks made after each call."""

    def __init__(self, check_memory: bool = True,
                 setup: Callable[[Hypervisor, PVPlatform], None] | None = None) -> None:
        self.m = Machine(memory_mb=MACHINE_MB, setup=setup)
        self.hv, self.pv = self.m.hv, self.m.pv
        self.stats = Stats()
        self.rcs: list[int | None] = []  # what each call returned (None: not a hypercall)
        self.slots: list[Slot | None] = []
        self.last: list[Slot] = []  # the last domain of each slot, destroyed or not
        self.dead_ids: list[int] = []
        for i in range(1 + N_ATTACKERS):
            pages, mapped = (VICTIM_PAGES, VICTIM_MAPPED) if i == VICTIM else \
                (ATTACKER_PAGES, ATTACKER_MAPPED)
            slot = self._create(pages, mapped)
            self.slots.append(slot)
            self.last.append(slot)
        self.victim = self.slots[VICTIM]
        assert self.victim is not None
        self.victim_version = self._victim_call(NR["xen_version"],
                                                abi.XENVER_version, 0)
        self.probe_count = 0
        self.victim_state = self.victim_snapshot()
        self.checker = IncrementalChecker(self.hv)  # check_invariants, step after step
        self.work = WorkMeter(CALL_BOUND, ACCESS_BOUND, FRAME_BOUND)
        self.work.instrument(self.hv)
        self.memory = MemoryMeter() if check_memory else None

    # --- domains ------------------------------------------------------------------------------
    def _create(self, pages: int, mapped: int, domid: int | None = None) -> Slot:
        d = self.hv.create_domain(pages, domid=domid)
        self.pv.setup_domain(d)
        layout = build_initial_tables(self.hv, d, mapped, DEFAULT_VIRT_BASE)
        regs = GuestRegs()
        self.pv.arch(d.vcpus[0]).cpu = regs
        return Slot(d, layout, regs)

    def slot(self, i: int) -> Slot | None:
        return self.slots[i % len(self.slots)]

    def peer(self, caller: int, k: int = 1) -> int:
        """Another attacker's slot (the victim for a lone attacker)."""
        return ATTACKERS[(caller - 1 + k) % len(ATTACKERS)]

    def who(self, caller: int, who: str) -> Slot:
        i = {"self": caller, "peer": self.peer(caller), "peer2": self.peer(caller, 2),
             "victim": VICTIM, "s1": 1, "s2": 2, "s3": 3}.get(who, caller)
        return self.last[i]

    # --- values -------------------------------------------------------------------------------
    def resolve(self, val: Val, caller: int) -> int:
        if isinstance(val, int):
            return val
        tag = val[0]
        if tag == "va":
            return int(DEFAULT_VIRT_BASE + val[1] * abi.PAGE_SIZE + val[2]) & M32
        if tag == "hole":
            return HOLE[val[1] % len(HOLE)]
        if tag == "frame":
            return self.frame(caller, val[1], val[2], val[3])
        if tag == "pte":
            return (self.resolve(val[1], caller) << abi.PAGE_SHIFT | int(val[2])) & M32
        if tag == "ma":
            return (self.resolve(val[1], caller) << abi.PAGE_SHIFT) + int(val[2])
        if tag == "domid":
            if val[1] == "dead":
                return self.dead_ids[-1] if self.dead_ids else abi.DOMID_FIRST_RESERVED - 1
            return self.who(caller, val[1]).domain.domain_id
        if tag == "q":
            return self.resolve(val[1], caller) | int(val[2]) << 32
        raise ValueError(f"unknown value {val!r}")

    def frame(self, caller: int, who: str, kind: str, k: int) -> int:
        hv = self.hv
        if who == "xen":
            free = hv.free_list
            return {
                "zero": 0,
                "m2p": hv.m2p_start + k % max(1, hv.m2p_l1 - hv.m2p_start),
                "m2p_l1": hv.m2p_l1,
                "rgdt": self.pv.reserved_gdt_mfn,
                "free": free[k % len(free)] if free else 0,
                "beyond": hv.memory.nr_frames + k,
                "top": 0xFFFFF - k,
            }.get(kind, k)
        s = self.who(caller, who)
        d = s.domain
        a = self.pv.darch(d)
        if kind == "table":
            pfn = s.layout.pt_pfns[k % len(s.layout.pt_pfns)]
            return d.page_list[pfn] if pfn < d.tot_pages else pfn
        if kind == "si":
            return a.shared_info_mfn
        if kind == "stub":
            return a.stub_mfn
        if kind == "perdomain":
            return d.perdomain_pt[k % len(d.perdomain_pt)] if d.perdomain_pt else 0
        if kind == "gnt":
            t = self.pv.grants.tables.get(d.domain_id)
            return t.shared[k % len(t.shared)] if t is not None and t.shared \
                else a.shared_info_mfn
        return d.page_list[k % d.tot_pages] if d.tot_pages else k

    # --- the victim -----------------------------------------------------------------------------
    def _victim_call(self, nr: int, *args: int) -> int:
        assert self.victim is not None
        return self.hv.hypercall(self.victim.domain.vcpus[0], nr, *args)

    def victim_snapshot(self) -> tuple[Any, ...]:
        """Everything of the victim another domain must not change: its frames (contents,
        frame-table entries and machine-to-physical entries), Xen's per-domain tables of it,
        its vCPU's base pointer and LDT, trap table and callbacks, its size and its run state.
        shared_info is left out: the hypervisor itself writes the time there."""
        assert self.victim is not None
        d, hv = self.victim.domain, self.hv
        f = hv.frames
        frames = [*d.page_list, *d.perdomain_pt]
        v = d.vcpus[0]
        a = self.pv.arch(v)
        return (
            tuple(d.page_list), d.max_pages, d.shutdown_reason,
            tuple((int(f.owner[m]), int(f.type[m]), int(f.type_count[m]), int(f.count[m]),
                   int(f.flags[m]), int(hv.m2p[m]),
                   hv.memory.read(m << abi.PAGE_SHIFT, abi.PAGE_SIZE))
                  for m in frames),
            v.guest_table, v.ldt_base, v.ldt_ents,
            tuple((t.cs, t.address, t.flags) for t in a.trap_ctxt),
            a.event_callback_cs, a.event_callback_eip, a.failsafe_callback_cs,
            a.kernel_ss, a.kernel_sp, tuple(a.gdt_frames),
        )

    def victim_probe(self) -> str | None:
        """The victim keeps running: its hypercalls are answered as before, and an
        mmu_update of its own writes the word it asks for."""
        assert self.victim is not None
        d = self.victim.domain
        if not d.is_running:
            return f"the victim was shut down: {d.crash_reason or d.shutdown_reason}"
        rc = self._victim_call(NR["xen_version"], abi.XENVER_version, 0)
        if rc != self.victim_version:
            return f"the victim's xen_version returned {rc}, not {self.victim_version}"
        self.probe_count += 1
        mfn = d.page_list[VICTIM_DATA_PFN]
        req = abi.MMU_UPDATE_T.pack(mfn << abi.PAGE_SHIFT | abi.MMU_NORMAL_PT_UPDATE,
                                    self.probe_count)
        arg = d.page_list[0] << abi.PAGE_SHIFT
        self.hv.memory.write(arg, req)
        rc = self._victim_call(NR["mmu_update"], DEFAULT_VIRT_BASE, 1, 0,
                               abi.DOMID_SELF)
        if rc != 0 or self.hv.memory.read_entry(mfn, 0) != self.probe_count:
            return f"the victim's own mmu_update failed ({rc})"
        return None

    # --- calls ------------------------------------------------------------------------------------
    def store(self, caller: Slot, caller_i: int, mem: Any) -> None:
        """The guest's own stores: ``(offset, format, fields[, n, steps])`` writes ``n``
        records (field f of record k is field f plus k * steps[f]) at ``offset`` of its
        bootstrap region; a store its page tables do not allow is skipped (it would fault)."""
        v = caller.domain.vcpus[0]
        for item in mem:
            offset, fmt, fields = item[:3]
            n, steps = (item[3], item[4]) if len(item) > 3 else (1, (0,) * len(fields))
            layout = struct.Struct(fmt)
            masks = [(1 << (struct.calcsize("<" + code) * 8)) - 1 for code in _field_codes(fmt)]
            base = [self.resolve(f, caller_i) for f in fields]
            data = b"".join(
                layout.pack(*[(b + k * s) & m for b, s, m in zip(base, steps, masks, strict=True)])
                for k in range(n))
            self.hv.copy_to_guest(v, DEFAULT_VIRT_BASE + offset, data)

    def perform(self, call: Call, index: int = 0) -> int | None:
        """Run one call, the ``index``-th of its run; the hypercall's return value, or None
        for a tools' action."""
        kind = call[0]
        if kind == "hc":
            _, i, nr, args, mem = call
            s = self.slot(i)
            if i == VICTIM or s is None or not s.domain.is_running:
                self.stats.skipped += 1
                return None
            self.store(s, i, mem)
            regs = [self.resolve(a, i) & M32 for a in args]
            s.regs.regs = GuestRegs.fresh(regs[0])
            v = s.domain.vcpus[0]
            self.stats.hypercalls += 1
            sample = sampled(call, index)
            rc = self.measured(lambda: self.hv.hypercall(v, nr, *regs), sample)
            for _ in range(MAX_CONTINUATIONS if nr != NR["iret"] else 0):
                r = s.regs.regs
                if r.eip != CALL_EIP - 2 or not s.domain.is_running:
                    break
                r.eip = CALL_EIP
                nr2, more = r.eax, (r.ebx, r.ecx, r.edx, r.esi, r.edi)
                self.stats.hypercalls += 1
                rc = self.measured(functools.partial(self.hv.hypercall, v, nr2, *more), sample)
            return rc
        if kind == "grant":
            _, i, ref, flags, dom, frame = call
            s = self.slot(i)
            if i == VICTIM or s is None or not s.domain.is_running:
                self.stats.skipped += 1
                return None
            t = self.pv.grants.table(s.domain)
            per = abi.PAGE_SIZE // abi.GRANT_ENTRY_T.size
            ref %= len(t.shared) * per
            mfn = t.shared[ref // per]
            if (self.hv.frames.owner[mfn] != s.domain.domain_id
                    or self.hv.frames.type[mfn] not in (PGT.none, PGT.writable_page)):
                return None  # a guest can map its grant frame writable only while it is data
            maddr = (mfn << abi.PAGE_SHIFT) + ref % per * abi.GRANT_ENTRY_T.size
            self.hv.memory.write(maddr, abi.GRANT_ENTRY_T.pack(
                flags & 0xFFFF, self.resolve(dom, i) & 0xFFFF, self.resolve(frame, i) & M32))
            return None
        if kind == "destroy":
            i = ATTACKERS[call[1] % len(ATTACKERS)]
            s = self.slots[i]
            if s is not None:
                domid = s.domain.domain_id
                self.work.measure(lambda: self.m.domctl.destroy(domid))
                self.slots[i] = None
                self.dead_ids.append(domid)
            return None
        if kind == "create":
            i = ATTACKERS[call[1] % len(ATTACKERS)]
            s = self.slots[i]
            if s is not None and s.domain.is_running:
                return None
            if s is not None:  # shut down or crashed: the tools destroy it first
                self.perform(("destroy", call[1]))
            old = self.last[i].domain.domain_id
            # The tools may give a free id to a new domain (DOM0_CREATEDOMAIN).
            reuse = call[2] and old not in self.hv.domains
            try:
                s = self._create(ATTACKER_PAGES, ATTACKER_MAPPED, old if reuse else None)
            except OutOfMemory:
                return None
            self.slots[i] = self.last[i] = s
            return None
        raise ValueError(f"unknown call {call!r}")

    def check(self, call: Call, running_before: dict[int, bool]) -> str | None:
        """The checks after one call (the first problem found, or None)."""
        try:
            violations = self.checker.check()
        except Exception as exc:
            return f"the invariant checker raised {type(exc).__name__}: {exc}"
        if violations:
            return "invariant violated: " + "; ".join(violations[:4])
        if self.victim_snapshot() != self.victim_state:
            return "the victim's state changed: " + self._victim_diff()
        caller = call[1] if call[0] in ("hc", "grant") else None
        for i, was in running_before.items():
            s = self.slots[i]
            if i != caller and was and s is not None and not s.domain.is_running:
                return (f"domain {s.domain.domain_id} (slot {i}) was shut down by another's "
                        f"call: {s.domain.crash_reason or s.domain.shutdown_reason}")
        if call[0] == "hc" and call[2] == NR["iret"]:
            s = self.slots[call[1] % len(self.slots)]
            if s is not None and s.domain.is_running:
                r = s.regs.regs
                if r.cs & 3 == 0 or r.eflags & abi.X86_EFLAGS_IOPL:
                    return f"iret resumes the guest at cs {r.cs:#x} eflags {r.eflags:#x}"
        problem = self.victim_probe()
        if problem is not None:
            return problem
        self.victim_state = self.victim_snapshot()
        if self.memory is not None and call[0] == "hc":
            mem = self.memory
            if mem.last_peak > STEP_PEAK_BOUND:
                return (f"the call's allocations peaked at {mem.last_peak >> 20} MB "
                        f"(bound {STEP_PEAK_BOUND >> 20} MB)")
            if mem.last_retained > STEP_RETAINED_BOUND:
                return (f"the call left {mem.last_retained >> 20} MB allocated "
                        f"(bound {STEP_RETAINED_BOUND >> 20} MB)")
            if mem.last_blocks > STEP_RETAINED_BLOCKS:
                return (f"the call left {mem.last_blocks} more objects allocated "
                        f"(bound {STEP_RETAINED_BLOCKS}; grew)")
            if mem.rss_growth() > RSS_BOUND:
                return (f"the process grew by {mem.rss_growth() >> 20} MB during the run "
                        f"(bound {RSS_BOUND >> 20} MB)")
        return None

    def measured(self, fn: Callable[[], int], sample: bool) -> int:
        """``fn()`` under the work meter and the memory meter, fully counted and traced if
        ``sample``."""
        memory = self.memory
        if memory is None:
            return self.work.measure(fn, sample)
        return memory.measure(lambda: self.work.measure(fn, sample), traced=sample)

    def _victim_diff(self) -> str:
        names = ("page_list", "max_pages", "shutdown", "frames", "guest_table", "ldt_base",
                 "ldt_ents", "trap_ctxt", "event_cs", "event_eip", "failsafe_cs", "kernel_ss",
                 "kernel_sp", "gdt_frames")
        now = self.victim_snapshot()
        return ", ".join(n for n, a, b in zip(names, self.victim_state, now, strict=True)
                         if a != b)

    def run(self, calls: list[Call]) -> None:
        """Run ``calls`` with the checks after each; raise HostileFailure at the first
        problem."""
        for index, call in enumerate(calls):
            running = {i: s.domain.is_running for i, s in enumerate(self.slots)
                       if s is not None}
            self.stats.calls += 1
            try:
                self.rcs.append(self.perform(call, index))
            except HypervisorBug as exc:
                raise HostileFailure(index, calls, f"HypervisorBug: {exc}") from exc
            except WorkBoundExceeded as exc:
                raise HostileFailure(index, calls, f"the call did unbounded work: {exc}") \
                    from None
            except DomctlError as exc:
                raise HostileFailure(index, calls, f"the tools' request failed: {exc}") \
                    from exc
            except Exception as exc:
                raise HostileFailure(index, calls,
                                     f"{type(exc).__name__} escaped: {exc}") from exc
            problem = self.check(call, running)
            if problem is not None:
                raise HostileFailure(index, calls, problem)
            # The CPU substrate trims the vCPU's record of single-address flushes after each
            # trap (refmodel/cpu.py); a Python-driven vCPU has no substrate, so do it here.
            for s in self.slots:
                if s is not None and len(s.domain.vcpus[0].tlb_invlpgs) > 4096:
                    del s.domain.vcpus[0].tlb_invlpgs[:]


def sampled(call: Call, index: int) -> bool:
    """Whether ``call``, the ``index``-th of its run, is one of the calls fully counted and
    traced (one in ``SAMPLE``): by a checksum of its position and text, so that a replay of
    the run samples the same calls, and a call a run repeats is sampled at some of its
    places."""
    return zlib.crc32(f"{index}:{call!r}".encode()) % SAMPLE == 0


def _field_codes(fmt: str) -> list[str]:
    """The one-letter codes of a struct format's fields (padding left out)."""
    codes, count = [], ""
    for ch in fmt.lstrip("<>=!@"):
        if ch.isdigit():
            count += ch
            continue
        if ch != "x":
            codes += [ch] * int(count or 1)
        count = ""
    return codes


def replay(calls: list[Call], check_memory: bool = True) -> World:
    """Run ``calls`` on a fresh machine with every check; raise HostileFailure at the first
    problem. The failing runs of tests/test_hostile.py print as such a call."""
    w = World(check_memory=check_memory)
    w.run(calls)
    return w

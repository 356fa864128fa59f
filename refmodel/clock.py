"""The machine's clock: Xen system time and each domain's run time, both deterministic.

Xen's system time (xen/arch/x86/time.c, NOW()) is nanoseconds since boot. The model has no
wall clock: time advances by a fixed ``ns_per_instruction`` for every guest instruction the
CPU substrate executes and a fixed ``ns_per_trap`` for every entry into the hypervisor (a
hypercall, a fault, an emulated instruction: about what one cost on the paper's hardware), plus
a fixed ``ns_per_work_unit`` for every unit of work a long hypercall does (a batch entry, a
trap-table entry, a frame of an extent: refmodel/hypervisor.py, HYPERCALL_BUDGET), and
jumps forward when every vCPU is idle, to the next timer deadline
(xen/arch/x86/domain.c, idle_loop: the CPU halts until the next timer interrupt). The same run
therefore always sees the same times. A domain's run time is the time its vCPUs spent on the
CPU: the "real time" the paper's borrowed virtual time is computed from (SOSP'03 s3.3.1, the
BVT scheduler) and what Xen reports as a vCPU's cpu_time (xen/common/schedule.c,
vcpu_runstate_change); the hypervisor's work on a domain's behalf is charged to it, as Xen
charges the running vCPU.

While a time slice is under way the clock reads the substrate's instruction and trap counts,
so a hypercall handler sees the time at its own instruction, not the start of its slice.
"""

from __future__ import annotations

from collections.abc import Callable

from xenspec.refmodel.domain import Domain

# A 1 GHz processor retiring one instruction per cycle; a trap into the hypervisor and back
# costs 500 ns (the paper's null-hypercall order of magnitude).
DEFAULT_NS_PER_INSTRUCTION = 1
DEFAULT_NS_PER_TRAP = 500
# One unit of a long hypercall's work (one checked page-table update, one extent's frame):
# a fifth of a trap, an order of magnitude like the trap's, not a measurement. Charged so that
# a domain issuing huge batches uses up its slice and the others get the CPU between pieces.
DEFAULT_NS_PER_WORK_UNIT = 100

Progress = Callable[[], tuple[int, int]]  # (instructions, traps) so far in the slice


class Clock:
    """System time in ns since boot, and run time per domain."""

    def __init__(self, ns_per_instruction: int = DEFAULT_NS_PER_INSTRUCTION,
                 ns_per_trap: int = DEFAULT_NS_PER_TRAP,
                 ns_per_work_unit: int = DEFAULT_NS_PER_WORK_UNIT) -> None:
        if ns_per_instruction <= 0 or ns_per_trap < 0 or ns_per_work_unit < 0:
            raise ValueError("an instruction must take some time, a trap or work no negative "
                             "time")
        self.ns_per_instruction = ns_per_instruction
        self.ns_per_trap = ns_per_trap
        self.ns_per_work_unit = ns_per_work_unit
        self._now = 0
        self._run: dict[int, int] = {}
        self.idle_ns = 0
        # The slice under way: the domain running and a reader of its instructions so far.
        self._live_domid: int | None = None
        self._live: Progress | None = None
        self._live_work_ns = 0  # hypercall work charged in the slice under way

    # --- what the rest of the hypervisor reads -------------------------------------------------
    def now_ns(self) -> int:
        """Xen's NOW(): system time in ns since boot."""
        live = self._live
        if live is None:
            return self._now
        # self.cost(*live()), written out: asked after every trap.
        instructions, traps = live()
        return (self._now + instructions * self.ns_per_instruction + traps * self.ns_per_trap
                + self._live_work_ns)

    def domain_run_ns(self, d: Domain | int) -> int:
        """The time ``d``'s vCPUs have spent running (its cpu_time)."""
        domid = d if isinstance(d, int) else d.domain_id
        live = self._live_ns() if domid == self._live_domid else 0
        return self._run.get(domid, 0) + live

    # --- what the scheduler does -----------------------------------------------------------------
    def slice_started(self, d: Domain, progress: Progress) -> None:
        """``d`` runs; ``progress()`` gives the instructions and traps so far in the slice."""
        self._live_domid = d.domain_id
        self._live = progress
        self._live_work_ns = 0

    def slice_ended(self, d: Domain, instructions: int, traps: int = 0) -> int:
        """``d`` ran ``instructions`` and trapped ``traps`` times: advance the clock and its
        run time; return the ns."""
        self._live_domid = self._live = None
        ns = self.cost(instructions, traps) + self._live_work_ns
        self._live_work_ns = 0
        self._now += ns
        self._run[d.domain_id] = self._run.get(d.domain_id, 0) + ns
        return ns

    def charge_work(self, units: int) -> None:
        """A hypercall of the running vCPU did ``units`` of work: its slice used their time
        (outside a slice, a Python-driven guest's, there is no CPU time to charge)."""
        if self._live is not None:
            self._live_work_ns += units * self.ns_per_work_unit

    def idle_until(self, t_ns: int) -> None:
        """Nothing runs until ``t_ns`` (no-op if that is not in the future)."""
        if t_ns > self._now:
            self.idle_ns += t_ns - self._now
            self._now = t_ns

    def instructions_for(self, ns: int) -> int:
        """The instructions that fill ``ns`` (at least one)."""
        return max(1, ns // self.ns_per_instruction)

    def cost(self, instructions: int, traps: int) -> int:
        return instructions * self.ns_per_instruction + traps * self.ns_per_trap

    def _live_ns(self) -> int:
        if self._live is None:
            return 0
        return self.cost(*self._live()) + self._live_work_ns

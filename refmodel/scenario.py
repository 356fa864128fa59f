"""The built-in scenario: two paravirtual domains put the MMU through its paces.

A guest kernel written in Python (``PVGuest``) builds a process address space the way a Xen
3.0 guest does (fill an L1 through batched ``mmu_update``, pin it, hook it into the page
directory, remap with ``update_va_mapping``, switch base pointers) and then tries what the
paper says the hypervisor must refuse: mapping the hypervisor hole, writable mappings of page
tables, another domain's frames, Xen's own frames. Each step states the result Xen 3.0.4
gives; the scenario reports every step and fails if the model returns anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.pvguest import PTE_RO, PTE_RW, PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

EINVAL = -abi.EINVAL


@dataclass
class StepResult:
    title: str
    expected: int
    got: int

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def errno_name(rc: int) -> str:
    if rc == 0:
        return "0"
    names = [n for n in ("EPERM", "ESRCH", "EFAULT", "EINVAL", "ENOSYS") if getattr(abi, n) == -rc]
    return f"-{names[0]}" if names else str(rc)


class MMUTour:
    """Runs the scenario on a fresh machine; ``say`` receives each line of the report."""

    def __init__(
        self,
        memory_mb: int = 256,
        domain_mb: int = 64,
        say: Callable[[str], None] = print,
        check_each_step: bool = False,
    ) -> None:
        self.hv = Hypervisor(memory_mb * 256)
        self.say = say
        self.check_each_step = check_each_step
        self.results: list[StepResult] = []
        self.invariant_checks = 0
        self.violations: list[str] = []
        self.dom = PVGuest(self.hv, domain_mb * 256, nr_mapped=min(domain_mb * 256, 4096))
        self.other = PVGuest(self.hv, 1024, nr_mapped=64)

    def step(self, title: str, expected: int, rc: int) -> int:
        result = StepResult(title, expected, rc)
        self.results.append(result)
        mark = "ok " if result.ok else "BAD"
        want = "" if result.ok else f"  (Xen returns {errno_name(expected)})"
        self.say(f"  [{mark}] {title:<72} -> {errno_name(rc)}{want}")
        if self.check_each_step:
            self.check()
        return rc

    def check(self) -> None:
        self.invariant_checks += 1
        self.violations += check_invariants(self.hv)

    def run(self) -> bool:
        g, hv = self.dom, self.hv
        self.say(
            f"machine: {hv.memory.nr_frames} frames ({hv.memory.nr_frames // 256} MB); "
            f"Xen {abi.HYPERVISOR_VIRT_START:#x}-0xffffffff is the hypervisor hole"
        )
        for d in (g, self.other):
            self.say(
                f"domain {d.domid}: {d.domain.tot_pages} pages, {d.layout.nr_mapped} mapped at "
                f"{d.layout.virt_base:#x}, page directory mfn {d.l2_mfn:#x} (pinned, loaded)"
            )
        free = list(g.free_pfns())
        l1, pages = g.mfn(free[0]), [g.mfn(p) for p in free[1:9]]
        user_va = 0x08048000
        slot = user_va >> abi.L2_PAGETABLE_SHIFT
        index0 = (user_va >> abi.PAGE_SHIFT) & 0x3FF

        self.say("a process address space, built as a guest kernel builds it:")
        rc, done = g.mmu_update(
            [(g.entry_maddr(l1, index0 + k), g.pte(m, PTE_RW | abi._PAGE_USER))
             for k, m in enumerate(pages)]
        )
        self.step(f"mmu_update: fill a new L1 with 8 user pages (done={done})", 0, rc)
        self.step("mmuext_op PIN_L1_TABLE: validate and pin it", 0, g.pin(l1, 1))
        self.step(f"mmu_update: hook it into page-directory slot {slot}",
                  0, g.set_entry(g.l2_mfn, slot, g.pte(l1, PTE_RW | abi._PAGE_USER)))
        self.step("update_va_mapping: make the first page read-only, INVLPG",
                  0, g.update_va_mapping(user_va, g.pte(pages[0], PTE_RO), abi.UVMF_INVLPG))
        self.step("mmu_update: read-only self-map of the page directory (linear PT)",
                  0, g.set_entry(g.l2_mfn, 1000, g.pte(g.l2_mfn, PTE_RO)))

        self.say("what the hypervisor must refuse:")
        self.step("write page-directory slot 1008 (the hypervisor's top 64 MB)",
                  EINVAL, g.set_entry(g.l2_mfn, abi.L2_PAGETABLE_FIRST_XEN_SLOT, 0))
        self.step("writable mapping of the page directory",
                  EINVAL, g.set_entry(l1, 0, g.pte(g.l2_mfn, PTE_RW)))
        self.step("writable mapping of the pinned L1",
                  EINVAL, g.update_va_mapping(user_va, g.pte(l1, PTE_RW)))
        self.step("writable linear page-table entry",
                  EINVAL, g.set_entry(g.l2_mfn, 1001, g.pte(g.l2_mfn, PTE_RW)))
        self.step("flip the read-only linear map writable (XSA-182)",
                  EINVAL, g.set_entry(g.l2_mfn, 1000, g.pte(g.l2_mfn, PTE_RW)))
        self.step("map a frame of another domain",
                  EINVAL, g.set_entry(l1, 1, g.pte(self.other.mfn(0), PTE_RO)))
        self.step("map Xen's own frame (the M2P table)",
                  EINVAL, g.set_entry(l1, 1, g.pte(hv.m2p_start, PTE_RO)))
        self.step("map with the GLOBAL bit",
                  EINVAL, g.set_entry(l1, 1, g.pte(pages[1], PTE_RO | abi._PAGE_GLOBAL)))
        self.step("pin a page that is mapped writable",
                  EINVAL, g.pin(pages[2], 1))
        self.step("update_va_mapping of an address in the hole",
                  EINVAL, g.update_va_mapping(abi.HYPERVISOR_VIRT_START, 0))
        self.step("mmu_update with an argument array in the hole",
                  -abi.EFAULT, g.hypercall("mmu_update", abi.HYPERVISOR_VIRT_START, 1, 0,
                                           abi.DOMID_SELF))
        self.step("mmu_update naming another domain, unprivileged",
                  -abi.ESRCH, g.mmu_update([(0, 0)], foreigndom=self.other.domid)[0])

        self.say("tearing down:")
        self.step("unhook the L1 from the page directory", 0, g.set_entry(g.l2_mfn, slot, 0))
        self.step("mmuext_op UNPIN_TABLE: the L1 loses its type", 0, g.unpin(l1))
        self.step("the former L1 is plain memory again: map it writable",
                  0, g.update_va_mapping(g.va(100), g.pte(l1, PTE_RW), abi.UVMF_INVLPG))
        bogus = pages[3]
        self.step("plain write of a foreign frame's entry into an ordinary page",
                  0, g.set_entry(bogus, 0, g.pte(self.other.mfn(0), PTE_RW)))
        self.step("NEW_BASEPTR to that page: it does not validate (3.0.4 crashes the domain)",
                  EINVAL, g.new_baseptr(bogus))
        state = g.domain.shutdown_reason.name if g.domain.shutdown_reason else "running"
        self.say(f"domain {g.domid}: {state} ({g.domain.crash_reason})")
        o = self.other
        self.step(f"domain {o.domid} is unaffected: update_va_mapping",
                  0, o.update_va_mapping(o.va(20), o.pte(o.mfn(20), PTE_RO)))
        self.check()
        passed = sum(r.ok for r in self.results)
        self.say(
            f"{passed}/{len(self.results)} steps gave Xen's result; invariants checked "
            f"{self.invariant_checks} times: "
            + ("all hold" if not self.violations else f"{len(self.violations)} violations")
        )
        for v in self.violations:
            self.say(f"  violated: {v}")
        return passed == len(self.results) and not self.violations

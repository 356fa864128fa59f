"""Domains and virtual CPUs: the state Xen keeps in ``struct domain`` and ``struct vcpu``.

Only what the subsystems built so far read is modelled: identity and privilege, the frames a
domain owns and its reservation, each vCPU's page-table base (``arch.guest_table``), its LDT
registration (``arch.guest_context.ldt_base/ldt_ents``), and the domain's shutdown state.
Sources: xen/include/xen/sched.h and xen/include/asm-x86/domain.h (3.0.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xenspec.refmodel.hypervisor import Continuation


# Single-address invalidations a vCPU keeps before the next one becomes a full flush. Xen
# 3.0.4 executes each INVLPG at once and keeps nothing; the model records them for its CPU
# substrate and must keep that record bounded. Real flush logic makes the same trade: Linux's
# x86 flush_tlb_mm_range flushes the whole TLB past tlb_single_page_flush_ceiling (33) pages.
INVLPG_MAX = 32


class ShutdownReason(Enum):
    """sched.h SHUTDOWN_* codes, plus the model's own record of why a domain was crashed."""

    poweroff = 0
    reboot = 1
    suspend = 2
    crash = 3


@dataclass
class Vcpu:
    """A virtual CPU. ``guest_table`` is the mfn of its page directory, 0 for none."""

    vcpu_id: int
    domain: Domain
    guest_table: int = 0
    ldt_base: int = 0
    ldt_ents: int = 0
    # What the TLB has been told: full flushes, and the single-address invalidations since the
    # last one (at most INVLPG_MAX). The CPU substrate acts on them (any change of the pair
    # (tlb_flushes, len(tlb_invlpgs)) is news to it: the list only empties with a new full
    # flush); the MMU model counts them so that tests can see them happen.
    tlb_flushes: int = 0
    tlb_invlpgs: list[int] = field(default_factory=list)
    # Set when a descriptor this vCPU may hold in a segment register changed (update_descriptor,
    # set_gdt, set_ldt, a shadow LDT page unmapped): Xen reloads DS/ES/FS/GS on every return to
    # the guest (x86_32/entry.S, restore_all_guest); the CPU substrate re-checks them then.
    reload_segments: bool = False
    # The hypercall this vCPU's last one was preempted into (hypercall_create_continuation),
    # until it is re-issued; only a vCPU without a CPU keeps it (refmodel/hypervisor.py).
    continuation: Continuation | None = None

    def flush_tlb(self) -> None:
        self.tlb_flushes += 1
        self.tlb_invlpgs.clear()

    def flush_tlb_one(self, va: int) -> None:
        """Invalidate one address; past INVLPG_MAX of them the TLB is flushed whole instead,
        so a batch of any length keeps a bounded record."""
        if len(self.tlb_invlpgs) >= INVLPG_MAX:
            self.flush_tlb()
            return
        self.tlb_invlpgs.append(va)


@dataclass
class Domain:
    """A guest. ``page_list`` holds the machine frames it owns, in pseudo-physical order;
    ``xenpage_list`` the hypervisor's pages it was given."""

    domain_id: int
    is_privileged: bool
    max_pages: int
    page_list: list[int] = field(default_factory=list)
    # Xen heap pages shared with the domain (shared_info, the grant-table frames): owned by it
    # but not counted in tot_pages (sched.h, xenpage_list; mm.c, share_xen_page_with_guest).
    xenpage_list: list[int] = field(default_factory=list)
    vcpus: list[Vcpu] = field(default_factory=list)
    perdomain_pt: list[int] = field(default_factory=list)  # Xen-owned L1s of the per-domain area
    shutdown_reason: ShutdownReason | None = None
    crash_reason: str | None = None
    # domain_kill has run (3.0.4 sched.h, _DOMF_dying): the domain is being torn down, its
    # vCPUs never run again and no state is created for it any more (refmodel/domctl.py); the
    # record goes with its last frame (Hypervisor.domain_destroy).
    is_dying: bool = False

    @property
    def tot_pages(self) -> int:
        return len(self.page_list)

    @property
    def is_running(self) -> bool:
        return self.shutdown_reason is None

    def crash(self, why: str) -> None:
        """domain_crash(): the domain stops; the hypervisor and other domains go on."""
        if self.shutdown_reason is None:
            self.shutdown_reason = ShutdownReason.crash
            self.crash_reason = why

"""Domain control: the paper's control interface (SOSP'03 s2.3: domains are created, paused,
destroyed and given memory by control software in a privileged domain), as a Python API.

Rules from Xen 3.0.4 xen/common/dom0_ops.c (DOM0_CREATEDOMAIN, DOM0_PAUSEDOMAIN,
DOM0_UNPAUSEDOMAIN, DOM0_DESTROYDOMAIN, DOM0_SETDOMAINMAXMEM, DOM0_GETDOMAININFO),
xen/common/domain.c (domain_kill, domain_pause_by_systemcontroller) and
xen/arch/x86/domain.c (domain_relinquish_resources, relinquish_memory):

* a new domain is built from a kernel image (refmodel/elfbuild.py) and left paused until it
  is unpaused, as the tools do; an unknown domain is -ESRCH;
* pause stops every vCPU of the domain until unpause; a paused domain keeps its state;
* destroy kills the domain once: its vCPUs never run again, its event channels close, the
  back ends unmap its console and store rings and disconnect its block devices, each vCPU's
  GDT and base pointer are dropped, and every frame it owns, the Xen heap pages shared with it
  (shared_info, the grant frames) first, loses its pin, its allocation reference and, for a
  page directory, its validation (which drops the references its entries hold, breaking
  circular linear-page-table references). A frame is freed when its last reference goes (the
  MMU's rule, refmodel/mm.py): one another domain still maps stays allocated, and owned by the
  dead domain, until that mapping goes; a shared Xen heap page keeps its permanent type
  reference until then, so even a dead domain's shared_info never becomes a page table;
* the memory limit (max_memkb, in KB) may not go below the pages the domain has (-EINVAL);
* a dying domain (``Domain.is_dying``, from the first step of destroy) is -ESRCH to every
  operation; once it has left the hypervisor its id may name a new domain, which inherits
  nothing of it (the platform, the scheduler and the grant tables drop what they kept under
  the id).

Errors are ``DomctlError`` with Xen's errno. The hypercall form (``dom0_op`` from a privileged
guest) is not modelled: the control software is Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xenspec.refmodel.arch import ArchDomain
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.elfbuild import GuestImage
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.boot import Machine


class DomctlError(Exception):
    """A refused control operation, with Xen's errno."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(f"{message} (errno {errno})")
        self.errno = errno


@dataclass(frozen=True)
class DomainInfo:
    """DOM0_GETDOMAININFO, the fields the model has."""

    domid: int
    tot_pages: int
    max_pages: int
    paused: bool
    blocked: bool
    dying: bool
    shutdown: str | None
    cpu_time_ns: int


class DomCtl:
    """The control interface of one ``Machine``."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.hv = machine.hv
        self.pv = machine.pv

    @property
    def dying(self) -> set[int]:
        """The ids of the destroyed domains the hypervisor still knows (another domain maps
        one of their frames); an id leaves with its domain and may then name a new one."""
        return {domid for domid, d in self.hv.domains.items() if d.is_dying}

    def _find(self, domid: int) -> Domain:
        d = self.hv.domains.get(domid)
        if d is None or d.is_dying:
            raise DomctlError(abi.ESRCH, f"no domain {domid}")
        return d

    # --- creation and the run state -----------------------------------------------------------
    def create(self, image: GuestImage | str, memory_mb: int = 16, cmdline: str = "",
               privileged: bool = False) -> int:
        """Build a domain from ``image`` (BuildError for a bad image or too little memory);
        it starts paused. Returns its domain id."""
        return self.m.add_guest(image, memory_mb, cmdline, privileged, paused=True).domain_id

    def pause(self, domid: int) -> None:
        self.pv.sched.pause(self._find(domid))

    def unpause(self, domid: int) -> None:
        self.pv.sched.unpause(self._find(domid))

    def set_max_mem(self, domid: int, max_kb: int) -> None:
        """DOM0_SETDOMAINMAXMEM: the reservation limit, never below the current size."""
        d = self._find(domid)
        new_max = max_kb >> (abi.PAGE_SHIFT - 10)
        if max_kb < 0 or new_max < d.tot_pages:
            raise DomctlError(abi.EINVAL, f"domain {domid} has {d.tot_pages} pages, more "
                                          f"than {new_max}")
        d.max_pages = new_max

    def info(self, domid: int) -> DomainInfo:
        d = self.hv.domains.get(domid)
        if d is None:
            raise DomctlError(abi.ESRCH, f"no domain {domid}")
        sched = self.pv.sched
        return DomainInfo(
            domid=domid, tot_pages=d.tot_pages, max_pages=d.max_pages,
            paused=domid in sched.domains and sched.is_paused(d),
            blocked=all(sched.is_blocked(v) for v in d.vcpus),
            dying=d.is_dying,
            shutdown=d.shutdown_reason.name if d.shutdown_reason is not None else None,
            cpu_time_ns=self.pv.clock.domain_run_ns(d),
        )

    # --- destruction ------------------------------------------------------------------------
    def destroy(self, domid: int) -> None:
        """domain_kill: the domain stops for good and gives up its resources, in Xen's order
        (common/domain.c domain_kill: gnttab_release_mappings, then x86 domain.c
        domain_relinquish_resources: every vCPU's base pointer, every vCPU's GDT, then
        relinquish_memory of the Xen-heap pages shared with the domain, then of its own)."""
        d = self._find(domid)
        # Its state, read before its last frame may take the domain (and the state) with it.
        a = self.pv.darch(d)
        d.is_dying = True  # domain_kill: _DOMF_dying, then domain_pause (vcpu_sleep_sync)
        self.pv.sched.pause(d)
        self.pv.sched.detach(d)
        events: Any = getattr(self.pv, "events", None)
        if events is not None and hasattr(events, "destroy_domain"):
            events.destroy_domain(d)
        self.pv.grants.destroy_domain(d)  # gnttab_release_mappings, before the memory
        self._release_backends(d)
        for v in d.vcpus:
            self._release_vcpu(v.domain, v.vcpu_id)
        self.hv.relinquish_memory(d, d.xenpage_list)  # x86 domain.c, domain_relinquish_resources
        self.hv.relinquish_memory(d, d.page_list)
        self._free_xen_pages(d, a)
        self.m.cpus.pop(domid, None)
        a.console = bytearray()  # the console log goes with the domain
        a.shared_info_mfn = 0  # released: nothing writes it for the dead domain
        if self.hv.domains.get(domid) is d and not d.page_list and not d.xenpage_list:
            self.hv.domain_destroy(d)  # else it goes with its last frame

    def _release_backends(self, d: Domain) -> None:
        """The dom0 daemons and blkback let go of a dying domain: xenconsoled and xenstored
        unmap its ring frames (tools/console/daemon/io.c, cleanup_domain; xenstored_domain.c,
        domain_cleanup on @releaseDomain), blkback disconnects (blkif_disconnect)."""
        self.pv.consrings.release(d)
        self.pv.xenstore.release(d)
        for dev in self.m.disks:
            if dev.domid == d.domain_id:
                dev.disconnect()

    def _release_vcpu(self, d: Domain, vcpu_id: int) -> None:
        v = d.vcpus[vcpu_id]
        self.pv.desc.destroy_gdt(v)
        self.pv.desc.invalidate_shadow_ldt(v)
        if v.guest_table:
            old, v.guest_table = v.guest_table, 0
            self.hv.mm.put_page_and_type(old)
        self.pv.arch(v).cpu = None

    def _free_xen_pages(self, d: Domain, a: ArchDomain) -> None:
        """The Xen-private per-domain frames (arch_domain_destroy: free_xenheap_pages of the
        per-domain page tables; and the model's stub page), which no guest can reference."""
        hv = self.hv
        for mfn in [*d.perdomain_pt, a.stub_mfn]:
            if mfn:
                hv.free_xenheap_page(mfn)
        d.perdomain_pt = []
        a.stub_mfn = 0

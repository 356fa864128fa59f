"""The paravirtual x86 platform around the MMU: per-vCPU and per-domain CPU state, the
hypervisor's pages in the per-domain area, and the registration of the CPU-interface
hypercalls in ``Hypervisor.hypercall_table``.

Xen 3.0.4 maps into every guest's page directory a per-domain area
(xen/include/asm-x86/config.h, PERDOMAIN_VIRT_START) holding each vCPU's GDT (Xen's reserved
entries in page FIRST_RESERVED_GDT_PAGE: its ring-0 and the guest's flat selectors) and LDT.
The model does the same with read-only supervisor mappings, plus one page of its own (the
ring-entry stub of the CPU substrate); these frames are Xen-private (alloc_xenheap_page: no
guest can take a reference to them). shared_info is a Xen heap page given to the domain
(xen/arch/x86/domain.c, arch_domain_create: share_xen_page_with_guest), which it may map but
never turn into a page table.
"""

from __future__ import annotations

from collections.abc import Callable

from xenspec.refmodel.arch import CONSOLE_LOG_SIZE, ArchDomain, ArchVcpu
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.spec import abi
from xenspec.spec.pagetable import __PAGE_HYPERVISOR_RO

# The model's stub page: the last page of the per-domain area.
STUB_VIRT: int = abi.PERDOMAIN_VIRT_START + (abi.PERDOMAIN_MBYTES << 20) - abi.PAGE_SIZE
_XEN_RO: int = __PAGE_HYPERVISOR_RO


def gdt_virt_start(v: Vcpu) -> int:
    """config.h, GDT_VIRT_START(v): the vCPU's GDT in the per-domain area."""
    return abi.PERDOMAIN_VIRT_START + (v.vcpu_id << abi.GDT_LDT_VCPU_VA_SHIFT)


def ldt_virt_start(v: Vcpu) -> int:
    """config.h, LDT_VIRT_START(v): the vCPU's shadow LDT, 64 KB above its GDT."""
    return gdt_virt_start(v) + abi.LDT_VIRT_OFFSET


class PVPlatform:
    """The CPU interface of one ``Hypervisor``: install once, then set up each domain."""

    def __init__(self, hv: Hypervisor) -> None:
        from xenspec.refmodel import (
            console,
            desc,
            emulate,
            event,
            grant,
            kernel,
            physdev,
            sched,
            traps,
            vcpuop,
            vtime,
        )
        from xenspec.refmodel.clock import Clock

        self.hv = hv
        # System time and run times (refmodel/clock.py); the scheduler advances it.
        self.clock = Clock()
        hv.charge_work = self.clock.charge_work  # long hypercalls' work uses the slice
        self.arch_v: dict[tuple[int, int], ArchVcpu] = {}
        self.arch_d: dict[int, ArchDomain] = {}
        # The domain each id's entries of arch_v and arch_d belong to.
        self._owner: dict[int, Domain] = {}
        self.console_out: Callable[[int, bytes], None] | None = None
        self.ring_out: Callable[[int, bytes], None] | None = None  # console rings' output
        # One machine-wide frame with Xen's reserved GDT entries, mapped read-only everywhere.
        from xenspec.refmodel.cpu import reserved_gdt_page

        self.reserved_gdt_mfn = hv.alloc_xenheap_page()
        hv.memory.write(self.reserved_gdt_mfn << abi.PAGE_SHIFT, reserved_gdt_page())
        self.traps = traps.Traps(self)
        self.console = console.Console(self)
        self.sched = sched.Sched(self)
        self.kernel = kernel.Kernel(self)
        self.desc = desc.Desc(self)
        self.events = event.Events(self)
        self.vtime = vtime.VTime(self)
        self.grants = grant.Grants(self)
        hv.grants = self.grants
        hv.domain_destroy_hooks += [self.forget_domain,
                                    lambda d: self.grants.domain_destroyed(d.domain_id)]
        self.emulate = emulate.Emulate(self)  # privileged instructions, debug registers
        self.physdev = physdev.Physdev(self)
        self.vcpuop = vcpuop.VcpuOp(self)
        for sub in (self.traps, self.console, self.sched, self.kernel, self.desc, self.events,
                    self.vtime, self.grants, self.emulate, self.physdev, self.vcpuop):
            hv.hypercall_table.update(sub.hypercalls())
        from xenspec.refmodel.backend import Backends

        self.backends = Backends(self)  # the backend domain, created on first use
        from xenspec.refmodel.xenstore import XenStore

        self.xenstore = XenStore(self)
        from xenspec.refmodel.consring import ConsoleRings

        self.consrings = ConsoleRings(self)  # the PV console rings (xenconsoled)
        hv.arch_vcpu = self.arch

    def arch(self, v: Vcpu) -> ArchVcpu:
        """The vCPU's state, made on first use. A destroyed domain's lookups never make it
        again (a fresh one is returned and forgotten), and a domain given the id of one that
        is gone finds none of its state."""
        key = (v.domain.domain_id, v.vcpu_id)
        if not self._owns(v.domain):
            return ArchVcpu()
        a = self.arch_v.get(key)
        if a is None:
            a = self.arch_v[key] = ArchVcpu()
        return a

    def darch(self, d: Domain) -> ArchDomain:
        """The domain's state, made on first use; as ``arch`` for a destroyed domain."""
        if not self._owns(d):
            return ArchDomain()
        a = self.arch_d.get(d.domain_id)
        if a is None:
            a = self.arch_d[d.domain_id] = ArchDomain()
        return a

    def _owns(self, d: Domain) -> bool:
        """The state kept under ``d``'s id is ``d``'s: True once it is, or once it can be (the
        id is free, or held by a domain that is gone); False for a dying domain without it."""
        owner = self._owner.get(d.domain_id)
        if owner is d:
            return True
        if d.is_dying:
            return False
        if owner is not None:
            self.forget_domain(owner)
        self._owner[d.domain_id] = d
        return True

    def forget_domain(self, d: Domain) -> None:
        """The destroyed domain ``d`` has left the hypervisor: drop its state, so that its id
        names nothing until a new domain is given it."""
        if self._owner.get(d.domain_id) is not d:
            return
        del self._owner[d.domain_id]
        self.arch_d.pop(d.domain_id, None)
        for key in [k for k in self.arch_v if k[0] == d.domain_id]:
            del self.arch_v[key]

    # --- per-domain pages ---------------------------------------------------------------------
    def perdomain_set(self, d: Domain, va: int, mfn: int | None) -> None:
        """Map (or unmap) one read-only supervisor page of the per-domain area."""
        off = va - abi.PERDOMAIN_VIRT_START
        assert 0 <= off < abi.PERDOMAIN_MBYTES << 20, f"{va:#x} is outside the per-domain area"
        entry = 0 if mfn is None else (mfn << abi.PAGE_SHIFT | _XEN_RO)
        page = off >> abi.PAGE_SHIFT
        if self.hv.profile.paging_levels == 3:  # 512 eight-byte entries an L1
            self.hv.memory.write_entry64(d.perdomain_pt[page >> 9], page & 511, entry)
        else:
            l1 = d.perdomain_pt[off >> abi.L2_PAGETABLE_SHIFT]
            self.hv.memory.write_entry(l1, page & (abi.L1_PAGETABLE_ENTRIES - 1), entry)
        for v in d.vcpus:
            v.flush_tlb()

    def setup_domain(self, d: Domain) -> ArchDomain:
        """Give a new domain its shared_info page, its stub page and each vCPU's GDT page."""
        hv = self.hv
        a = self.darch(d)
        # x86 domain.c, arch_domain_create: a Xen heap page, shared writable with the guest.
        a.shared_info_mfn = hv.alloc_xenheap_page()
        hv.share_xen_page_with_guest(a.shared_info_mfn, d, readonly=False)
        a.stub_mfn = hv.alloc_xenheap_page()
        from xenspec.refmodel.cpu import stub_page

        hv.memory.write(a.stub_mfn << abi.PAGE_SHIFT, stub_page())
        self.perdomain_set(d, STUB_VIRT, a.stub_mfn)
        for v in d.vcpus:
            reserved = gdt_virt_start(v) + abi.FIRST_RESERVED_GDT_PAGE * abi.PAGE_SIZE
            self.perdomain_set(d, reserved, self.reserved_gdt_mfn)
            # Events start masked (xen/common/domain.c, alloc_vcpu).
            self.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 1)
        self.vtime.setup_domain(d)  # time info and wallclock valid from the start of day
        return a

    # --- shared_info ----------------------------------------------------------------------------
    @staticmethod
    def _vcpu_info_in(shared_info_mfn: int, v: Vcpu) -> int:
        return ((shared_info_mfn << abi.PAGE_SHIFT) + abi.SHARED_INFO_vcpu_info
                + v.vcpu_id * abi.SIZEOF_VCPU_INFO)

    def vcpu_info_maddr(self, v: Vcpu) -> int:
        return self._vcpu_info_in(self.darch(v.domain).shared_info_mfn, v)

    def vcpu_info_read8(self, v: Vcpu, off: int) -> int:
        return self.hv.memory.read(self.vcpu_info_maddr(v) + off, 1)[0]

    def vcpu_info_if_shared(self, v: Vcpu) -> int | None:
        """``vcpu_info_maddr``, or None once a dying domain has released its shared_info
        (nothing is written for it then); one lookup of the domain's state."""
        si = self.darch(v.domain).shared_info_mfn
        return self._vcpu_info_in(si, v) if si else None

    def vcpu_info_write8(self, v: Vcpu, off: int, value: int) -> None:
        at = self.vcpu_info_if_shared(v)
        if at is not None:
            self.hv.memory.write(at + off, bytes([value & 0xFF]))

    def vcpu_info_write32(self, v: Vcpu, off: int, value: int) -> None:
        at = self.vcpu_info_if_shared(v)
        if at is not None:
            self.hv.memory.write(at + off, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def write_console(self, d: Domain, data: bytes, ring: bool = False) -> None:
        """Output of ``d``: through console_io (Xen's console, ``console_out``) or, with
        ``ring``, its console ring (the domain's console as xenconsoled serves it,
        ``ring_out``, or ``console_out`` without one). The domain's log keeps the last
        CONSOLE_LOG_SIZE bytes of both, as they come (refmodel/arch.py)."""
        log = self.darch(d).console
        log += data
        if len(log) > CONSOLE_LOG_SIZE:
            del log[: len(log) - CONSOLE_LOG_SIZE]
        out = self.ring_out if ring and self.ring_out is not None else self.console_out
        if out is not None:
            out(d.domain_id, data)

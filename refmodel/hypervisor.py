"""The reference hypervisor: machine memory, the domain heap, domains and hypercall dispatch.

One ``Hypervisor`` is one machine. It owns the machine frames and their frame table, hands
frames to domains from a free list in a scattered order (a domain's machine frames are not
contiguous, as the paper stresses), keeps the machine-to-physical table in Xen-owned frames
(the guest can read it at MACH2PHYS_VIRT_START), and dispatches hypercalls by number to the
subsystem that implements them, returning Xen's negative errno values. A Python exception that
escapes a subsystem is a bug in the model and is raised as ``HypervisorBug``.
Sources: xen/common/page_alloc.c, xen/arch/x86/x86_32/entry.S (hypercall_table), xen/arch/x86/mm.c.

The hypervisor's own frames come from the same free list as the domains' (Xen 3.0.4 has a
separate Xen heap; the model has one heap and tells the two kinds apart by the frame table):

* a Xen-private frame (``alloc_xenheap_page``: the per-domain page tables, the model's stub
  page, the reserved GDT page) is owned by Xen with no reference at all, so no guest, not even
  a privileged one naming DOMID_XEN as FOREIGNDOM, can take one (mm.c get_page needs a
  non-zero count; 3.0.4's Xen heap pages have no owner);
* a frame the hypervisor writes into on a guest's behalf (shared_info, the grant-table
  frames) is a Xen heap page given to the guest by ``share_xen_page_with_guest`` (mm.c): it
  carries PGC_xen_heap, one allocation reference and a type reference of its own that is never
  dropped while the frame is shared, so it can be mapped (writable, unless shared read-only)
  but never becomes a page table, GDT or LDT frame; it is on the domain's ``xenpage_list``, not
  counted in tot_pages. It leaves the guest only when the domain is destroyed, and returns to
  the heap once nothing references it (page_alloc.c free_domheap_pages, the Xen-heap branch;
  the Xen heap page itself is freed by arch_domain_destroy or grant_table_destroy, which Xen
  reaches only after the domain's last shared page lost its last reference: xenheap_pages
  holds a reference to the domain). The type reference goes with it.

The M2P table starts filled with 0x55555555 (x86_32/mm.c paging_init, "an obvious debug
pattern"): that is what a guest reads at MACH2PHYS_VIRT_START for every frame no domain has
been given; an allocation writes the frame's pfn (set_gpfn_from_mfn), sharing a Xen heap page
writes INVALID_M2P_ENTRY (mm.c share_xen_page_with_guest). Where the model departs: a frame
returned to the heap gets INVALID_M2P_ENTRY, where Xen 3.0.4 leaves the last owner's pfn
(neither page_alloc.c free_domheap_pages nor memory.c guest_remove_page touches the M2P), so
that no entry names a pfn for a frame its domain no longer has.

Long hypercalls are preempted and continued as Xen does it (xen/arch/x86/domain.c,
hypercall_create_continuation, x86_32): the handler rewrites the guest's argument registers
with what is left to do (EBX, ECX, EDX, ESI, EDI, EBP in order), puts the hypercall number in
EAX and moves EIP back by 2, so that the guest executes the same ``int $0x82`` again once it
is resumed; between the pieces it may take events and the scheduler may run other domains.
Xen preempts when ``hypercall_preempt_check()`` sees a softirq or an event pending, which
depends on timing; the model preempts deterministically, once an invocation has done
``HYPERCALL_BUDGET`` units of work (see ``hypercall_preempt_check``). A vCPU without a CPU (a
Python-driven guest, refmodel/pvguest.py) gets the continuation in ``Vcpu.continuation`` and
issues it again itself, as a guest's re-executed instruction would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xenspec.refmodel import uaccess
from xenspec.refmodel.arch import ArchVcpu
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.memory import (
    DOMID_NONE,
    FrameTable,
    MachineMemory,
    PGC_allocated,
    PGC_xen_heap,
    PGT_validated,
)
from xenspec.refmodel.mm import MM, MMCore, xen_l2_entries
from xenspec.refmodel.mm_pae import MMPae
from xenspec.refmodel.multicall import Multicall
from xenspec.spec import abi, pagetable_pae
from xenspec.spec.abi_profiles import (
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    DEFAULT_PROFILE,
    PAE_L2_PAGETABLE_ENTRIES,
    AbiProfile,
)
from xenspec.spec.pagetable import __PAGE_HYPERVISOR_RO, PGT, pte_get_pfn

# The flags of Xen's read-only mappings (a module name: Python mangles __names in a class).
_XEN_RO_FLAGS = __PAGE_HYPERVISOR_RO

if TYPE_CHECKING:
    from xenspec.refmodel.grant import Grants

DEFAULT_MACHINE_FRAMES = 1 << 16  # 256 MB of machine memory

# The units of work (batch entries, trap-table entries, extents' frames, 127-byte console
# chunks) one hypercall invocation does before it is continued. Xen checks for preemption
# before each unit and preempts when a softirq or an event is pending; where a check is not
# free, later Xen checks every 256 units (xen/arch/x86/mm/p2m.c, relinquish_shared_pages and
# p2m_finish_type_change: ``!(++count & 0xff) && hypercall_preempt_check()``). The model takes
# that granularity as its fixed budget: one invocation of the model takes about a millisecond
# (an mmu_update entry takes 2-3 us to check, an INVLPG about 4 us; a decrease_reservation
# piece of a 64 MB domain, whose page list is searched per frame, about 20 ms), so no guest
# keeps the machine for longer than that between two scheduling points.
HYPERCALL_BUDGET = 256


@dataclass(frozen=True)
class Continuation:
    """A preempted hypercall: the number and the argument registers it is re-executed with."""

    nr: int
    args: tuple[int, ...]


# hypercall_create_continuation (x86_32): argument i goes into these registers.
CONTINUATION_REGISTERS = ("ebx", "ecx", "edx", "esi", "edi", "ebp")


class HypervisorBug(RuntimeError):
    """An exception escaped the model while it handled a guest request."""


class OutOfMemory(Exception):
    """The heap cannot satisfy a domain-creation request (a host-side error, not a guest one)."""


@dataclass(frozen=True)
class HypercallRecord:
    """One handled hypercall, for ``--trace`` output."""

    domid: int
    nr: int
    args: tuple[int, ...]
    rc: int
    continued: bool = False  # preempted: the guest executes it again with new arguments

    def __str__(self) -> str:
        name = HYPERCALL_NAMES.get(self.nr, f"hypercall_{self.nr}")
        args = ", ".join(f"{a:#x}" for a in self.args)
        if self.continued:
            return f"d{self.domid} {name}({args}) preempted, continues"
        return f"d{self.domid} {name}({args}) = {self.rc}"


# Xen's names are __HYPERVISOR_*, which Python would mangle inside a class body.
HYPERCALL_NUMBERS: dict[str, int] = {
    n.removeprefix("__HYPERVISOR_"): getattr(abi, n)
    for n in dir(abi)
    if n.startswith("__HYPERVISOR_") and getattr(abi, n) < abi.NR_hypercalls
}
HYPERCALL_NAMES = {nr: name for name, nr in HYPERCALL_NUMBERS.items()}


# x86_32/mm.c paging_init: every M2P entry before any allocation.
M2P_UNUSED_ENTRY = 0x55555555


class Hypervisor:
    """A machine running the reference hypervisor."""

    def __init__(self, nr_frames: int = DEFAULT_MACHINE_FRAMES, seed: int = 0,
                 profile: AbiProfile = DEFAULT_PROFILE) -> None:
        if nr_frames < 16:
            raise ValueError("the machine needs at least 16 frames")
        if nr_frames > abi.MACH2PHYS_NR_ENTRIES:
            raise ValueError("the M2P table covers at most 4 GB of machine memory")
        self.memory = MachineMemory(nr_frames)
        self.frames = FrameTable(nr_frames)
        # The ABI profile (spec/abi_profiles.py): the paging mode, the page-table walk of
        # copy_from_guest and the start of the hole.
        self.profile = profile
        pae = profile.paging_levels == 3
        self.hole = profile.hypervisor_virt_start
        self.walk: uaccess.Translate = uaccess.translate_pae if pae else uaccess.translate
        self.leaf: uaccess.Leaf = uaccess.leaf_pae if pae else uaccess.leaf
        self.pte_pfn: Callable[[int], int] = pagetable_pae.pte_get_pfn if pae else pte_get_pfn
        # The per-domain area's L1s: one per L2 slot it spans (4 MB, or 2 MB with PAE).
        self.perdomain_slots = (abi.PERDOMAIN_MBYTES << 20) >> (21 if pae else 22)
        self.domains: dict[int, Domain] = {}
        # Xen's pseudo-domains: dom_io owns I/O memory, dom_xen Xen's own shareable frames.
        # They own no RAM in this model, so naming them as FOREIGNDOM maps nothing.
        self.dom_io = Domain(abi.DOMID_IO, is_privileged=False, max_pages=0)
        self.dom_xen = Domain(abi.DOMID_XEN, is_privileged=False, max_pages=0)
        self.special_domains = {abi.DOMID_IO: self.dom_io, abi.DOMID_XEN: self.dom_xen}
        self.next_domid = 0
        # --trace: the records of handled hypercalls (a machine keeps a bounded log of them,
        # refmodel/boot.py, HypercallLog).
        self.trace: MutableSequence[HypercallRecord] | None = None
        self._arity: dict[Callable[..., int], int] = {}
        # The GDT frames a vCPU has installed (each holds a general and a type reference); the
        # descriptor subsystem provides them, for INV-COUNT.
        self.descriptor_table_frames: Callable[[Vcpu], list[int]] = lambda v: []
        # A vCPU's CPU-interface state (trap table, callbacks, stack, GDT), once the platform
        # (refmodel.platform) is installed; None: the state Xen starts a vCPU with.
        self.arch_vcpu: Callable[[Vcpu], ArchVcpu | None] = lambda v: None
        # The grant-table subsystem (refmodel.grant) once the platform is installed: it answers
        # which handle a grant-mapped PTE belongs to, and holds device mappings' references.
        self.grants: Grants | None = None
        # Frames the model's back ends (xenconsoled, xenstored, blkback) hold a writable
        # mapping of, as the real ones do through foreign mappings, with how many they hold.
        self.backend_maps: dict[int, int] = {}
        # What subsystems drop when a domain goes for good (domain_destroy).
        self.domain_destroy_hooks: list[Callable[[Domain], None]] = []
        # Charged with the units of work a hypercall did (the platform adds their time to the
        # running vCPU's slice, refmodel/clock.py); nothing without a platform.
        self.charge_work: Callable[[int], None] = lambda units: None
        # Frame 0 is never a guest's: a base pointer of 0 means "no page table", as in Xen.
        reserved = self._reserve_xen_frames(nr_frames)
        free = [mfn for mfn in range(nr_frames) if mfn not in reserved]
        random.Random(seed).shuffle(free)
        self.free_list = free
        self.mm: MMCore = MMPae(self) if pae else MM(self)
        self.hypercall_table: dict[int, Callable[..., int]] = {
            HYPERCALL_NUMBERS["mmu_update"]: self.mm.do_mmu_update,
            HYPERCALL_NUMBERS["update_va_mapping"]: self.mm.do_update_va_mapping,
            HYPERCALL_NUMBERS["mmuext_op"]: self.mm.do_mmuext_op,
        }
        self.multicall = Multicall(self)  # xen/common/multicall.c
        self.hypercall_table.update(self.multicall.hypercalls())

    # ----------------------------------------------------------------------------------------
    # Xen's own frames: the M2P table and the L1 that maps it read-only into every guest.
    # ----------------------------------------------------------------------------------------
    def _reserve_xen_frames(self, nr_frames: int) -> set[int]:
        m2p_frames = -(-nr_frames * 4 // abi.PAGE_SIZE)
        self.m2p_start = 1
        self.m2p_l1 = 1 + m2p_frames
        # The compat-pae profile maps the M2P with PAE L1s of its own (512 entries each).
        pae = self.profile.paging_levels == 3
        self.m2p_pae_l1 = [self.m2p_l1 + 1 + k for k in range(-(-m2p_frames // 512))] \
            if pae else []
        reserved = set(range(0, (self.m2p_pae_l1 or [self.m2p_l1])[-1] + 1))
        for mfn in reserved:
            self.frames.owner[mfn] = abi.DOMID_XEN
        self.m2p = self.memory.words[
            self.m2p_start * 1024 : self.m2p_start * 1024 + nr_frames
        ]
        # paging_init's debug pattern, in every entry of the table's frames.
        self.memory.write(self.m2p_start << abi.PAGE_SHIFT, M2P_UNUSED_ENTRY.to_bytes(4, "little")
                          * (m2p_frames * abi.L1_PAGETABLE_ENTRIES))
        for k in range(m2p_frames):
            maddr = (self.m2p_start + k) << abi.PAGE_SHIFT
            if pae:
                self.memory.write_entry64(self.m2p_pae_l1[k // 512], k % 512,
                                          maddr | _XEN_RO_FLAGS)
            else:
                self.memory.write_entry(self.m2p_l1, k, maddr | abi._PAGE_PRESENT)
        return reserved

    def hypervisor_writes(self, mfn: int) -> bool:
        """The hypervisor (or a back end of the model) writes into frame ``mfn`` on a guest's
        behalf: a Xen heap page shared with a guest, a frame a back end holds mapped, or a
        frame a writable grant device mapping names (blkback writes through those)."""
        return (bool(self.frames.flags[mfn] & PGC_xen_heap) or mfn in self.backend_maps
                or (self.grants is not None and self.grants.device_writable(mfn)))

    def set_gpfn_from_mfn(self, mfn: int, gpfn: int) -> None:
        self.m2p[mfn] = gpfn & 0xFFFFFFFF

    def xen_l2_slots(self, d: Domain, l2mfn: int) -> list[int]:
        """Xen's entries in slots L2_PAGETABLE_FIRST_XEN_SLOT..1023 of ``d``'s page directory
        ``l2mfn`` (mm.c, alloc_l2_table): the domain's, and the directory's map of itself."""
        return xen_l2_entries([self.m2p_l1], d.perdomain_pt, l2mfn)

    def xen_pae_l2_slots(self, d: Domain) -> list[int]:
        """The compat-pae profile's Xen slots of ``d``'s L2 that L3 slot 3 names, from
        COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT (mm.c init_xen_pae_l2_slots, copied from
        compat_idle_pg_table_l2): the compat M2P, read-only, from 0xF5800000 (x86_64/mm.c
        paging_init maps it with 2 MB pages; the model with L1s, as the guest sees the same
        words either way).

        One departure: the model keeps the per-domain area (each vCPU's GDT and LDT, the
        stub page) where Xen 3.0.4 has it, at PERDOMAIN_VIRT_START = 0xFE800000, inside the
        compat M2P's range but past any M2P entry of a machine the model runs (that would
        take 37.7 million frames). A 64-bit Xen maps it in its own address space, outside a
        compat guest's 4 GB; the emulated CPU needs it mapped where the guest's page tables
        reach. The guest cannot write those slots either way."""
        first = COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT
        slots = [0] * (PAE_L2_PAGETABLE_ENTRIES - first)
        for k, l1 in enumerate(self.m2p_pae_l1):
            slots[k] = l1 << abi.PAGE_SHIFT | _XEN_RO_FLAGS
        perdomain = (abi.PERDOMAIN_VIRT_START >> 21) % PAE_L2_PAGETABLE_ENTRIES - first
        for k, l1 in enumerate(d.perdomain_pt):
            slots[perdomain + k] = l1 << abi.PAGE_SHIFT | _XEN_RO_FLAGS
        return slots

    # ----------------------------------------------------------------------------------------
    # The domain heap (xen/common/page_alloc.c).
    # ----------------------------------------------------------------------------------------
    def alloc_domheap_page(self, d: Domain) -> int:
        """A frame for ``d``'s memory: its allocation reference, untyped, on its page_list."""
        if not self.free_list:
            raise OutOfMemory("no free machine frames left")
        mfn = self.free_list.pop()
        self.frames.owner[mfn] = d.domain_id
        self.frames.count[mfn] = 1
        self.frames.flags[mfn] = PGC_allocated
        self.frames.type[mfn] = PGT.none
        self.frames.type_count[mfn] = 0
        self.m2p[mfn] = len(d.page_list)
        d.page_list.append(mfn)
        return mfn

    def free_domheap_page(self, mfn: int) -> None:
        """The last reference went: the frame returns to the heap, scrubbed. A Xen heap page
        shared with a guest leaves its xenpage_list (page_alloc.c free_domheap_pages) and, its
        domain being dead (nothing else drops its allocation reference), is freed with it;
        its permanent type reference goes with it."""
        d = self.domains.get(self.frames.owner[mfn])
        if d is not None:
            if self.frames.flags[mfn] & PGC_xen_heap:
                d.xenpage_list.remove(mfn)
            elif mfn in d.page_list:
                d.page_list.remove(mfn)
            if d.is_dying and not d.page_list and not d.xenpage_list:
                # Its last page drops the dying domain's reference (free_domheap_pages:
                # drop_dom_ref), and with it the domain goes (domain.c, put_domain ->
                # domain_destroy): no hypercall finds it any more.
                self.domain_destroy(d)
        self._release_frame(mfn)

    def domain_destroy(self, d: Domain) -> None:
        """domain.c domain_destroy: the last reference to a dying domain went. It leaves the
        domain list, and every subsystem drops what it kept under its id
        (``domain_destroy_hooks``: the platform's per-domain state, the grant table), so that
        a new domain given the id inherits nothing of it."""
        if self.domains.get(d.domain_id) is d:
            del self.domains[d.domain_id]
        for hook in self.domain_destroy_hooks:
            hook(d)

    def relinquish_memory(self, d: Domain, pages: list[int]) -> None:
        """x86 domain.c, relinquish_memory, for a dying domain over its xenpage_list or its
        page_list: each frame loses its pin, its allocation reference and, for a page
        directory, its validation (breaking circular linear-page-table references); it is
        freed when its last reference goes, which another domain's mapping may delay. A shared
        Xen heap page keeps its permanent type reference until it is freed."""
        mm, frames = self.mm, self.frames
        for top in mm.RELINQUISH_TYPES:  # 4.x: one pass per level, the highest first
            for mfn in list(pages):
                if not mm.get_page(mfn, d):
                    continue
                mm.put_pin_and_allocation(mfn)
                if frames.type[mfn] == top and frames.flags[mfn] & PGT_validated:
                    frames.flags[mfn] &= ~PGT_validated
                    mm.free_page_type(mfn, top)
                mm.put_page(mfn)

    def alloc_xenheap_page(self) -> int:
        """page_alloc.c alloc_xenheap_pages: a frame for the hypervisor itself. Xen owns it and
        it holds no reference, so get_page (which needs a non-zero count) fails on it for
        every domain."""
        if not self.free_list:
            raise OutOfMemory("no free machine frames left")
        mfn = self.free_list.pop()
        self.frames.owner[mfn] = abi.DOMID_XEN
        self.frames.count[mfn] = 0
        self.frames.flags[mfn] = 0
        self.frames.type[mfn] = PGT.none
        self.frames.type_count[mfn] = 0
        return mfn

    def free_xenheap_page(self, mfn: int) -> None:
        """page_alloc.c free_xenheap_pages: a Xen-private frame returns to the heap."""
        f = self.frames
        assert f.owner[mfn] == abi.DOMID_XEN and not f.count[mfn] and not f.type_count[mfn], (
            f"freeing {f.describe(mfn)} as a Xen-private frame")
        self._release_frame(mfn)

    def share_xen_page_with_guest(self, mfn: int, d: Domain, readonly: bool) -> None:
        """mm.c, share_xen_page_with_guest: give the Xen heap page ``mfn`` to ``d``. Its type
        count of 1 (a writable page, or no type when ``readonly``) is never dropped while it is
        shared, so it can never take another type (get_page_type changes a type only at type
        count 0); PGC_allocated holds its one general reference; it goes on d's xenpage_list
        and its M2P entry is invalid."""
        f = self.frames
        if f.owner[mfn] == d.domain_id:
            return
        assert f.owner[mfn] == abi.DOMID_XEN and f.count[mfn] == 0, (
            f"sharing {f.describe(mfn)}, which is not a Xen heap page")
        self.m2p[mfn] = abi.INVALID_M2P_ENTRY
        f.type[mfn] = PGT.none if readonly else PGT.writable_page
        f.type_count[mfn] = 1
        f.owner[mfn] = d.domain_id
        f.count[mfn] = 1
        f.flags[mfn] = PGT_validated | PGC_allocated | PGC_xen_heap
        d.xenpage_list.append(mfn)

    def _release_frame(self, mfn: int) -> None:
        """The frame returns to the heap. A guest may still hold a translation of it in its
        TLB (an L1 update does not flush; flushing is the guest's business), so every vCPU's
        TLB is flushed before the frame can be handed to anyone else. Xen does it when the
        frame is allocated again, for the CPUs whose last flush is older than the frame's
        free (page_alloc.c, tlbflush_filter and tlbflush_timestamp); the model flushes
        at once, which is never later than Xen."""
        for d in self.domains.values():
            for v in d.vcpus:
                v.flush_tlb()
        self.frames.owner[mfn] = DOMID_NONE
        self.frames.flags[mfn] = 0
        self.frames.type[mfn] = PGT.none
        self.frames.type_count[mfn] = 0
        self.m2p[mfn] = abi.INVALID_M2P_ENTRY
        self.memory.scrub_frame(mfn)
        self.free_list.append(mfn)

    def create_domain(self, nr_pages: int, privileged: bool = False, nr_vcpus: int = 1,
                      domid: int | None = None) -> Domain:
        """Allocate a domain and ``nr_pages`` frames for it (plus Xen's per-domain tables). The
        id is the next free one unless ``domid`` names one (below DOMID_FIRST_RESERVED, unused;
        ValueError otherwise), as DOM0_CREATEDOMAIN lets the tools ask for an id."""
        if nr_pages <= 0:
            raise ValueError("a domain needs at least one page")
        if domid is not None and not (0 <= domid < abi.DOMID_FIRST_RESERVED
                                      and domid not in self.domains):
            raise ValueError(f"domain id {domid:#x} is reserved or in use")
        if nr_pages + 2 > len(self.free_list):
            raise OutOfMemory(
                f"{nr_pages} pages asked, {len(self.free_list)} machine frames free"
            )
        if domid is None:  # domctl.c, XEN_DOMCTL_createdomain: the next id not in use
            while self.next_domid in self.domains:
                self.next_domid += 1
            domid = self.next_domid
            self.next_domid += 1
        d = Domain(domid, privileged, max_pages=nr_pages)
        self.domains[d.domain_id] = d
        d.perdomain_pt = [self.alloc_xenheap_page() for _ in range(self.perdomain_slots)]
        for _ in range(nr_pages):
            self.alloc_domheap_page(d)
        d.vcpus = [Vcpu(i, d) for i in range(nr_vcpus)]
        return d

    # ----------------------------------------------------------------------------------------
    # Guest memory, through the calling vCPU's page tables.
    # ----------------------------------------------------------------------------------------
    def copy_from_guest(self, v: Vcpu, va: int, length: int) -> bytes | None:
        return uaccess.copy_from_guest(self.memory, v.guest_table, va, length, self.walk)

    def copy_to_guest(self, v: Vcpu, va: int, data: bytes) -> bool:
        return uaccess.copy_to_guest(self.memory, v.guest_table, va, data, self.walk)

    def guest_reader(self, v: Vcpu, va: int) -> uaccess.GuestReader:
        return uaccess.GuestReader(self.memory, v.guest_table, va, self.walk)

    def array_access_ok(self, ptr: int, count: int, size: int) -> bool:
        return uaccess.array_access_ok(ptr, count, size, self.hole)

    # ----------------------------------------------------------------------------------------
    # Hypercall dispatch (x86_32/entry.S, hypercall_table and hypercall_args_table).
    # ----------------------------------------------------------------------------------------
    def hypercall(self, v: Vcpu, nr: int, *args: int) -> int:
        """Handle ``int $0x82`` from ``v``: EAX = nr, EBX.. = args; returns the new EAX as a
        signed value (a negative errno on failure)."""
        if v.domain.shutdown_reason is not None:
            raise RuntimeError(f"domain {v.domain.domain_id} is not running")
        v.continuation = None
        handler = self.hypercall_table.get(nr)
        if handler is None:
            rc = -abi.ENOSYS
        else:
            # hypercall_args_table: how many argument registers the handler reads.
            nargs = self._arity.get(handler)
            if nargs is None:
                nargs = self._arity[handler] = handler.__code__.co_argcount - 2
            if len(args) < nargs:
                args += (0,) * (nargs - len(args))
            padded = [a & 0xFFFFFFFF for a in args[:nargs]]
            try:
                rc = handler(v, *padded)
            except Exception as exc:  # a bug in the model, never the guest's doing
                raise HypervisorBug(
                    f"{HYPERCALL_NAMES.get(nr, nr)}{tuple(padded)} from domain "
                    f"{v.domain.domain_id} raised {type(exc).__name__}: {exc}"
                ) from exc
        continued = v.continuation is not None
        if continued:
            self._continue_in_guest(v)
        if self.trace is not None:
            record_args = tuple(a & 0xFFFFFFFF for a in args)
            self.trace.append(
                HypercallRecord(v.domain.domain_id, nr, record_args, rc, continued))
        return rc

    # ----------------------------------------------------------------------------------------
    # Preemption (xen/include/xen/sched.h, hypercall_preempt_check; x86 domain.c,
    # hypercall_create_continuation).
    # ----------------------------------------------------------------------------------------
    @staticmethod
    def hypercall_preempt_check(units_done: int) -> bool:
        """Asked before each unit of work: True once this invocation has done its budget."""
        return units_done >= HYPERCALL_BUDGET

    @staticmethod
    def hypercall_budget_left(units_done: int) -> int:
        """How many more units ``hypercall_preempt_check`` lets through after ``units_done``
        (the same budget, counted ahead: for a loop that does a run of units at once)."""
        return max(0, HYPERCALL_BUDGET - units_done)

    def hypercall_create_continuation(self, v: Vcpu, nr: int, *args: int) -> int:
        """The hypercall ``nr`` stops here and is executed again with ``args`` (the guest's
        argument registers in order); returns what the handler returns, ``nr``, which goes
        into EAX as Xen's does."""
        v.continuation = Continuation(nr, tuple(a & 0xFFFFFFFF for a in args))
        return nr

    def _continue_in_guest(self, v: Vcpu) -> None:
        """Rewrite the registers of a vCPU that runs on a CPU: EIP back over ``int $0x82``
        (2 bytes), the arguments in their registers, the number in EAX. A vCPU without one
        keeps the continuation for its Python driver."""
        arch = self.arch_vcpu(v)
        cpu = arch.cpu if arch is not None else None
        c = v.continuation
        if cpu is None or c is None:
            return
        regs = cpu.user_regs()
        regs.eip = (regs.eip - 2) & 0xFFFFFFFF
        regs.eax = c.nr
        for name, value in zip(CONTINUATION_REGISTERS, c.args, strict=False):
            setattr(regs, name, value)
        v.continuation = None

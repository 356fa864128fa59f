"""``memory_op`` (12): the balloon, a domain giving machine frames back and asking for more.

Rules from Xen 3.0.4 xen/common/memory.c (do_memory_op, increase_reservation,
decrease_reservation, populate_physmap, guest_remove_page) and xen/include/public/memory.h
(struct xen_memory_reservation: extent_start, nr_extents, extent_order, address_bits, domid):

* the command's low 4 bits are the operation, the rest (START_EXTENT_SHIFT) the extent to
  resume from. A reservation operation answers every refusal of its arguments with that start
  extent, never an errno (do_memory_op: ``return start_extent``): the reservation must be
  readable, nr_extents at most ULONG_MAX >> START_EXTENT_SHIFT and the start no later than
  nr_extents; a non-zero address_bits below the machine's width asks for DMA memory, refused
  below dma_bitsize (30: CONFIG_DMA_BITSIZE, xen/include/asm-x86/config.h, page_alloc.c) and
  otherwise accepted (MEMF_dma; the model's machine lies below 2^30, so every frame
  qualifies); another domain than DOMID_SELF needs privilege and must exist;
* increase_reservation allocates extents of 2^extent_order frames and writes each one's
  machine frame number to extent_start (which may be NULL); decrease_reservation reads machine
  frame numbers (a paravirtual guest names its frames by mfn) and removes each; populate_physmap
  reads pseudo-physical numbers, allocates, records the M2P entry and writes the mfn back; each
  returns the number of extents done (plus the start), stopping at the first failure: an
  unreadable or unwritable list entry, a full reservation (alloc_domheap_pages: tot_pages may
  not exceed max_pages), an empty heap, a frame that is not the domain's;
* an extent order above 0 needs a privileged caller (multipage_allocation_permitted: I/O
  memory capabilities), else nothing is done; an order above MAX_ORDER (20, xen/mm.h) is never
  satisfied (page_alloc.c, alloc_heap_pages) and, following XSA-31 (a later fix: 3.0.4 loops
  on ``1 << extent_order`` whatever the order), gives nothing back either: the order is
  checked before anything is computed from it;
* each operation is preempted as memory.c preempts it: the check comes before each extent,
  and once an invocation has handled HYPERCALL_BUDGET frames (refmodel/hypervisor.py) the
  call is continued with the extents done so far in the command's high bits
  (``op | done << START_EXTENT_SHIFT``); the guest's registers are rewritten so that it
  resumes there;
* guest_remove_page takes a reference (get_page: the frame must be the domain's and in use),
  drops the pin (with its type reference) and the allocation reference, and drops its own. A
  frame that is still mapped, typed or otherwise referenced is therefore not freed at once: it
  stays the domain's (and counts in tot_pages) until its last reference goes, and only then
  returns to the heap, scrubbed. A frame is never handed to another domain while referenced
  (the invariant INV-FREE, spec/invariants.py). None of the three ever names a Xen heap page:
  the new frames come from the free list, and a shared page is refused (below).
* maximum_ram_page is max_page; current_reservation and maximum_reservation read a domid_t and
  return tot_pages and max_pages, and these two do answer with errnos: -EFAULT for an
  unreadable domid, -EPERM for another domain without privilege, -ESRCH for none.

Departure from 3.0.4, deliberate: decrease_reservation refuses a Xen heap page shared with the
domain (shared_info, a grant-table frame; refmodel/hypervisor.py share_xen_page_with_guest):
guest_remove_page fails on it, so the call stops there and returns the extents done before
it, as for a frame that is not the domain's; the frame stays the domain's, shared and written
by the hypervisor. 3.0.4's guest_remove_page drops its allocation reference like any other
frame's, and so does later Xen's (xen/common/memory.c); but Xen never returns such a page to the
domain heap (page_alloc.c free_domheap_pages: a Xen heap page only leaves the domain's
xenpage_list; later Xen's put_page_alloc_ref, xen/include/xen/mm.h, relies on put_page never
freeing one), and the hypervisor keeps writing it (shared_info's vcpu_info, say). The
model has a single heap, where freeing it would hand a frame the hypervisor still writes to
the next domain (as a page table, say), so it keeps the frame with its domain instead.

Not modelled: the other operations (machphys_mfn_list, add_to_physmap, translate_gpfn_list,
the memory maps, exchange of later versions): -ENOSYS.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.memory import DOMID_NONE, PGC_allocated, PGC_xen_heap
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_OP_MASK = (1 << abi.XENMEM_START_EXTENT_SHIFT) - 1
_MAX_EXTENTS = 0xFFFFFFFF >> abi.XENMEM_START_EXTENT_SHIFT
DMA_BITSIZE = 30  # CONFIG_DMA_BITSIZE, xen/include/asm-x86/config.h (page_alloc.c dma_bitsize)
_NR_MEMORY_OP: int = abi.__HYPERVISOR_memory_op
# xen/include/xen/mm.h (3.0.4): the largest extent the heap hands out is 2^MAX_ORDER pages.
MAX_ORDER = 20
_FREE_OWNER = array("i", [DOMID_NONE]).tobytes()
# Frames of an extent taken off the free list one by one (each a scan of the list); a larger
# extent is taken in one pass over it.
_REMOVE_ONE_BY_ONE = 64


class _Work:
    """The preemption budget of one invocation, counted in frames: the check comes before
    each extent, as Xen's does, so an extent is never split."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.units = 0

    def preempt(self) -> bool:
        return self.hv.hypercall_preempt_check(self.units)

    def add(self, units: int) -> None:
        self.units += units

    def done(self, nr_done: int, preempted: bool = False) -> tuple[int, bool]:
        self.hv.charge_work(self.units)
        return nr_done, preempted


class MemOp:
    """The memory_op hypercall of one platform."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["memory_op"]: self.do_memory_op}

    # ----------------------------------------------------------------------------------------
    # do_memory_op.
    # ----------------------------------------------------------------------------------------
    def do_memory_op(self, v: Vcpu, cmd: int, arg: int) -> int:
        op = cmd & _OP_MASK
        if op in (abi.XENMEM_increase_reservation, abi.XENMEM_decrease_reservation,
                  abi.XENMEM_populate_physmap):
            return self._reservation_op(v, op, cmd >> abi.XENMEM_START_EXTENT_SHIFT, arg)
        if op == abi.XENMEM_maximum_ram_page:
            return self.hv.memory.nr_frames
        if op in (abi.XENMEM_current_reservation, abi.XENMEM_maximum_reservation):
            return self._reservation_size(v, op, arg)
        return -abi.ENOSYS

    def _target(self, v: Vcpu, domid: int) -> Domain | int:
        """The domain a call acts on, or a negative errno."""
        if domid == abi.DOMID_SELF:
            return v.domain
        if not v.domain.is_privileged:
            return -abi.EPERM
        d = self.hv.domains.get(domid)
        return d if d is not None else -abi.ESRCH

    def _reservation_size(self, v: Vcpu, op: int, arg: int) -> int:
        raw = self.hv.copy_from_guest(v, arg, 2)
        if raw is None:
            return -abi.EFAULT
        d = self._target(v, int.from_bytes(raw, "little"))
        if isinstance(d, int):
            return d
        return d.tot_pages if op == abi.XENMEM_current_reservation else d.max_pages

    def _reservation_op(self, v: Vcpu, op: int, start: int, arg: int) -> int:
        """do_memory_op's reservation case: every refusal of the arguments answers ``start``."""
        raw = self.hv.copy_from_guest(v, arg, abi.XEN_MEMORY_RESERVATION_T.size)
        if raw is None:
            return start
        extents, nr, order, address_bits, domid = abi.XEN_MEMORY_RESERVATION_T.unpack(raw)
        if nr > _MAX_EXTENTS or start > nr:
            return start
        if address_bits and address_bits < self._machine_bits() and address_bits < DMA_BITSIZE:
            return start
        d = self._target(v, domid)
        if isinstance(d, int):
            return start
        if op == abi.XENMEM_increase_reservation:
            done, preempted = self.increase_reservation(v, d, extents, start, nr, order)
        elif op == abi.XENMEM_decrease_reservation:
            done, preempted = self.decrease_reservation(v, d, extents, start, nr, order)
        else:
            done, preempted = self.populate_physmap(v, d, extents, start, nr, order)
        if preempted:
            return self.hv.hypercall_create_continuation(
                v, _NR_MEMORY_OP, op | done << abi.XENMEM_START_EXTENT_SHIFT, arg)
        return done

    def _machine_bits(self) -> int:
        """get_order_from_pages(max_page) + PAGE_SHIFT."""
        return (self.hv.memory.nr_frames - 1).bit_length() + abi.PAGE_SHIFT

    # ----------------------------------------------------------------------------------------
    # The three reservation operations.
    # ----------------------------------------------------------------------------------------
    def increase_reservation(self, v: Vcpu, d: Domain, extents: int, start: int, nr: int,
                             order: int) -> tuple[int, bool]:
        """Extents [start, nr); returns (extents done, preempted)."""
        if extents and not self.hv.array_access_ok(extents, nr, 4):
            return start, False
        if order and not v.domain.is_privileged:
            return start, False
        self._gained_frames(d)
        work = _Work(self.hv)
        for i in range(start, nr):
            if work.preempt():
                return work.done(i, True)
            mfn = self.alloc_extent(d, order)
            if mfn is None:
                return work.done(i)
            work.add(1 << order)
            if extents and not self._put_word(v, extents + 4 * i, mfn):
                return work.done(i)
        return work.done(nr)

    def populate_physmap(self, v: Vcpu, d: Domain, extents: int, start: int, nr: int,
                         order: int) -> tuple[int, bool]:
        if not self.hv.array_access_ok(extents, nr, 4):
            return start, False
        if order and not v.domain.is_privileged:
            return start, False
        self._gained_frames(d)
        work = _Work(self.hv)
        for i in range(start, nr):
            if work.preempt():
                return work.done(i, True)
            gpfn = self._get_word(v, extents + 4 * i)
            if gpfn is None:
                return work.done(i)
            mfn = self.alloc_extent(d, order)
            if mfn is None:
                return work.done(i)
            work.add(1 << order)
            for j in range(1 << order):
                self.hv.set_gpfn_from_mfn(mfn + j, gpfn + j)
            if not self._put_word(v, extents + 4 * i, mfn):
                return work.done(i)
        return work.done(nr)

    def decrease_reservation(self, v: Vcpu, d: Domain, extents: int, start: int, nr: int,
                             order: int) -> tuple[int, bool]:
        """Any domain may give back extents of any order up to MAX_ORDER (XSA-31: a larger
        order does nothing; 3.0.4 looped on 1 << order)."""
        if not self.hv.array_access_ok(extents, nr, 4) or order > MAX_ORDER:
            return start, False
        work = _Work(self.hv)
        for i in range(start, nr):
            if work.preempt():
                return work.done(i, True)
            gmfn = self._get_word(v, extents + 4 * i)
            if gmfn is None:
                return work.done(i)
            for j in range(1 << order):
                work.add(1)
                if not self.guest_remove_page(d, gmfn + j):
                    return work.done(i)
        return work.done(nr)

    # ----------------------------------------------------------------------------------------
    # Frames.
    # ----------------------------------------------------------------------------------------
    def guest_remove_page(self, d: Domain, mfn: int) -> bool:
        """memory.c, guest_remove_page: drop the pin and the allocation reference; the frame
        is freed when its last reference goes (mm.put_page), not before. A Xen heap page
        shared with the domain is refused (see the module's departures)."""
        mm, frames = self.hv.mm, self.hv.frames
        if not self.hv.memory.mfn_valid(mfn) or not mm.get_page(mfn, d):
            return False
        if frames.flags[mfn] & PGC_xen_heap:
            mm.put_page(mfn)  # shared_info or a grant frame: the domain keeps it
            return False
        mm.put_pin_and_allocation(mfn)
        mm.put_page(mfn)
        return True

    def alloc_extent(self, d: Domain, order: int) -> int | None:
        """alloc_domheap_pages + assign_pages: 2^order free machine frames (aligned, for an
        order above 0) for ``d`` within its max_pages; the first mfn, or None. An order above
        MAX_ORDER is refused before anything is computed (page_alloc.c, alloc_heap_pages)."""
        if order > MAX_ORDER:
            return None
        n = 1 << order
        if d.tot_pages + n > d.max_pages or n > len(self.hv.free_list):
            return None
        if order == 0:
            return self.hv.alloc_domheap_page(d)
        base = self._aligned_free_run(n)
        if base is None:
            return None
        free = self.hv.free_list
        if n <= _REMOVE_ONE_BY_ONE:
            for mfn in range(base, base + n):
                free.remove(mfn)
        else:  # one pass over the free list, whatever the extent's size
            free[:] = [f for f in free if not base <= f < base + n]
        for mfn in range(base, base + n):
            self._take_frame(d, mfn)
        return base

    def _aligned_free_run(self, n: int) -> int | None:
        """The first n-aligned run of n free frames (owner DOMID_NONE: the free list's frames,
        INV-FREE), found by a byte search over the frame table's owner column."""
        owners = self.hv.frames.owner.tobytes()
        run = _FREE_OWNER * n
        width = len(_FREE_OWNER) * n
        at = owners.find(run)
        while at >= 0:
            if at % width == 0:
                return at // len(_FREE_OWNER)
            at = owners.find(run, (at // width + 1) * width)
        return None

    def _take_frame(self, d: Domain, mfn: int) -> None:
        """hypervisor.alloc_domheap_page for one given frame, already off the free list."""
        hv = self.hv
        hv.frames.owner[mfn] = d.domain_id
        hv.frames.count[mfn] = 1
        hv.frames.flags[mfn] = PGC_allocated
        hv.frames.type[mfn] = PGT.none
        hv.frames.type_count[mfn] = 0
        hv.m2p[mfn] = len(d.page_list)
        d.page_list.append(mfn)

    def _gained_frames(self, d: Domain) -> None:
        """A frame this domain held before may come back rewritten: drop cached code (the
        substrate does it before the vCPU's next slice)."""
        for v in d.vcpus:
            flush = getattr(self.pv.arch(v).cpu, "flush_code_cache", None)
            if flush is not None:
                flush()

    def _get_word(self, v: Vcpu, va: int) -> int | None:
        raw = self.hv.copy_from_guest(v, va, 4)
        return None if raw is None else int.from_bytes(raw, "little")

    def _put_word(self, v: Vcpu, va: int, value: int) -> bool:
        return self.hv.copy_to_guest(v, va, (value & 0xFFFFFFFF).to_bytes(4, "little"))

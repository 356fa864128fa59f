"""``memory_op`` (12): the balloon, a domain giving machine frames back and asking for more.

Rules from Xen 3.0.4 xen/common/memory.c (do_memory_op, increase_reservation,
decrease_reservation, populate_physmap, guest_remove_page) and xen/include/public/memory.h
(struct xen_memory_reservation: extent_start, nr_extents, extent_order, address_bits, domid):

* the command's low 4 bits are the operation, the rest (START_EXTENT_SHIFT) the extent to
  resume from; the reservation must be readable (-EFAULT), nr_extents below 2^28 and the start
  no later than nr_extents (-EINVAL); address_bits below 31 and below the machine's width is
  -ENOMEM (a wider DMA restriction is accepted and ignored: the model has no DMA zone); another
  domain than DOMID_SELF needs privilege (-EPERM) and must exist (-ESRCH);
* increase_reservation allocates extents of 2^extent_order frames and writes each one's
  machine frame number to extent_start (which may be NULL); decrease_reservation reads machine
  frame numbers (a paravirtual guest names its frames by mfn) and removes each; populate_physmap
  reads pseudo-physical numbers, allocates, records the M2P entry and writes the mfn back; each
  returns the number of extents done (plus the start), stopping at the first failure: an
  unreadable or unwritable list entry, a full reservation (alloc_domheap_pages: tot_pages may
  not exceed max_pages), an empty heap, a frame that is not the domain's;
* an extent order above 0 needs a privileged caller (multipage_allocation_permitted: I/O
  memory capabilities), else nothing is done;
* guest_remove_page takes a reference (get_page: the frame must be the domain's and in use),
  drops the pin (with its type reference) and the allocation reference, and drops its own. A
  frame that is still mapped, typed or otherwise referenced is therefore not freed at once: it
  stays the domain's (and counts in tot_pages) until its last reference goes, and only then
  returns to the heap, scrubbed. A frame is never handed to another domain while referenced
  (the invariant INV-FREE, spec/invariants.py). None of the three ever names a Xen heap page:
  the new frames come from the free list, and a shared page is refused (below).
* maximum_ram_page is max_page; current_reservation and maximum_reservation read a domid_t and
  return tot_pages and max_pages.

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

Not modelled: preemption and the continuation (every extent is done in one call), the other
operations (machphys_mfn_list, add_to_physmap, translate_gpfn_list, the memory maps, exchange
of later versions): -ENOSYS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.refmodel.memory import PGC_allocated, PGC_xen_heap, PGT_pinned
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_OP_MASK = (1 << abi.XENMEM_START_EXTENT_SHIFT) - 1
_MAX_EXTENTS = 0xFFFFFFFF >> abi.XENMEM_START_EXTENT_SHIFT


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
        raw = self.hv.copy_from_guest(v, arg, abi.XEN_MEMORY_RESERVATION_T.size)
        if raw is None:
            return -abi.EFAULT
        extents, nr, order, address_bits, domid = abi.XEN_MEMORY_RESERVATION_T.unpack(raw)
        if nr > _MAX_EXTENTS or start > nr:
            return -abi.EINVAL
        if extents:
            extents += 4 * start
        nr -= start
        if address_bits and address_bits < self._machine_bits() and address_bits < 31:
            return -abi.ENOMEM
        d = self._target(v, domid)
        if isinstance(d, int):
            return d
        if op == abi.XENMEM_increase_reservation:
            done = self.increase_reservation(v, d, extents, nr, order)
        elif op == abi.XENMEM_decrease_reservation:
            done = self.decrease_reservation(v, d, extents, nr, order)
        else:
            done = self.populate_physmap(v, d, extents, nr, order)
        return done + start

    def _machine_bits(self) -> int:
        """get_order_from_pages(max_page) + PAGE_SHIFT."""
        return (self.hv.memory.nr_frames - 1).bit_length() + abi.PAGE_SHIFT

    # ----------------------------------------------------------------------------------------
    # The three reservation operations.
    # ----------------------------------------------------------------------------------------
    def increase_reservation(self, v: Vcpu, d: Domain, extents: int, nr: int,
                             order: int) -> int:
        if extents and not self.hv.array_access_ok(extents, nr, 4):
            return 0
        if order and not v.domain.is_privileged:
            return 0
        self._gained_frames(d)
        for i in range(nr):
            mfn = self.alloc_extent(d, order)
            if mfn is None:
                return i
            if extents and not self._put_word(v, extents + 4 * i, mfn):
                return i
        return nr

    def populate_physmap(self, v: Vcpu, d: Domain, extents: int, nr: int, order: int) -> int:
        if not self.hv.array_access_ok(extents, nr, 4):
            return 0
        if order and not v.domain.is_privileged:
            return 0
        self._gained_frames(d)
        for i in range(nr):
            gpfn = self._get_word(v, extents + 4 * i)
            if gpfn is None:
                return i
            mfn = self.alloc_extent(d, order)
            if mfn is None:
                return i
            for j in range(1 << order):
                self.hv.set_gpfn_from_mfn(mfn + j, gpfn + j)
            if not self._put_word(v, extents + 4 * i, mfn):
                return i
        return nr

    def decrease_reservation(self, v: Vcpu, d: Domain, extents: int, nr: int,
                             order: int) -> int:
        if not self.hv.array_access_ok(extents, nr, 4):
            return 0
        for i in range(nr):
            gmfn = self._get_word(v, extents + 4 * i)
            if gmfn is None:
                return i
            for j in range(1 << order):
                if not self.guest_remove_page(d, gmfn + j):
                    return i
        return nr

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
        if frames.flags[mfn] & PGT_pinned:
            frames.flags[mfn] &= ~PGT_pinned
            mm.put_page_and_type(mfn)
        if frames.flags[mfn] & PGC_allocated:
            frames.flags[mfn] &= ~PGC_allocated
            mm.put_page(mfn)
        mm.put_page(mfn)
        return True

    def alloc_extent(self, d: Domain, order: int) -> int | None:
        """alloc_domheap_pages + assign_pages: 2^order free machine frames (aligned, for an
        order above 0) for ``d`` within its max_pages; the first mfn, or None."""
        n = 1 << order
        if d.tot_pages + n > d.max_pages or n > len(self.hv.free_list):
            return None
        if order == 0:
            mfn = self.hv.alloc_domheap_page(d)
        else:
            found = self._aligned_free_run(n)
            if found is None:
                return None
            mfn = found
            for j in range(n):
                self._take_frame(d, mfn + j)
        return mfn

    def _aligned_free_run(self, n: int) -> int | None:
        free = set(self.hv.free_list)
        for base in range(0, self.hv.memory.nr_frames - n + 1, n):
            if all(base + j in free for j in range(n)):
                return base
        return None

    def _take_frame(self, d: Domain, mfn: int) -> None:
        """hypervisor.alloc_domheap_page for one given free frame."""
        hv = self.hv
        hv.free_list.remove(mfn)
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

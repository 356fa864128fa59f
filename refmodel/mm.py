"""The paravirtual MMU: page types, reference counts and validated page-table updates.

``MMCore`` is what every paging mode shares (references, the foreign domain, the batch loops,
the flushes); ``MM`` below is the native-3.0.4 profile's 2-level MMU, and
refmodel/mm_pae.py the compat-pae profile's.

This models xen/arch/x86/mm.c of Xen 3.0.4 for x86_32 without PAE (2-level paging): the
get/put rules for general and type references, the validation of L1 and L2 tables on their
first type reference, and the three hypercalls that change page tables: ``mmu_update``,
``mmuext_op`` and ``update_va_mapping``. Function names are Xen's; each returns what Xen's
does (1/0 for the internal helpers, a negative errno for the hypercalls).

Deliberate departures from 3.0.4, each following a later Xen security fix:

* XSA-182: 3.0.4's fast path in ``mod_l1_entry``/``mod_l2_entry`` skipped reference handling
  whenever the frame and the PRESENT (and for L1, RW) bits were unchanged, which let a guest
  turn a read-only linear page-table entry writable. Here the fast path is taken only when the
  frame is unchanged and no bit outside FASTPATH_FLAG_WHITELIST changes.
* ``update_va_mapping`` only modifies an L1 entry when the L2 slot names a frame of type L1
  (later Xen's ``guest_map_l1e`` checks; in 3.0.4 a linear-mapped L2 could be reached).

One departure forced by the emulator, not by a later Xen: the linear page table each page
directory maps at LINEAR_PT_VIRT_START (alloc_l2_table) is read-only in the model, where Xen's
is read-write (``LINEAR_PT_FLAGS``, ``xen_l2_entries``).

A batch is preempted as do_mmu_update and do_mmuext_op preempt it: before each entry the
preemption check (``Hypervisor.hypercall_preempt_check``, a fixed budget of entries per
invocation) may end the invocation with a continuation of the same hypercall for the entries
left, its count carrying MMU_UPDATE_PREEMPTED, and the entries done so far are added to
``*pdone`` (read back from it when the continuation starts). The validation of one table (a
pin, a base pointer, a first L2 entry naming an L1) is one entry and is not preempted, as in
3.0.4 (later Xen made it preemptible, XSA-45): it is bounded by the tables' size.

A batch entry takes one of two paths. ``mmu_update_one`` and the functions it calls are the
rules, written as mm.c writes them. ``MM.mmu_update_common`` does the common case (an entry of
a validated L1 the caller owns, mapped to a frame whose references can be taken and dropped
without a free or a validation; a first writable map retypes a frame with no type reference,
as get_page_type does) in one function, about 2.5 times faster an entry; every other
request, and every request while any of the rules it stands for is replaced (a seeded defect,
a profile, a mutant), goes through the rules. tests/test_mm_fused.py holds the two to the
same result, frame table and memory. ``mmu_update_common`` has a C twin
(refmodel/mmfast.c, loaded by refmodel/mm_native.py, built with gcc on first use) that does
a run of records lying in one page of the request array at once and leaves the first record
it does not complete, and every first writable map that retypes a frame, to the Python;
tests/test_mm_native.py holds it to ``mmu_update_common`` the same way. Measured with
benchmarks/bench_mmu.py: read-write maps 230k to 780k entries a second, read-only maps 340k
to 2.1M.

Not modelled yet: I/O memory mappings (no domain has iomem permission, so a frame number beyond
machine RAM is refused), shadow and translated paging modes, and TLB flush filtering (every
type change is counted as a flush).
"""

from __future__ import annotations

import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from xenspec.refmodel import mm_native
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.memory import (
    PGC_allocated,
    PGC_count_mask,
    PGT_count_mask,
    PGT_pinned,
    PGT_validated,
)
from xenspec.spec import abi
from xenspec.spec.pagetable import (
    __PAGE_HYPERVISOR_RO,
    FASTPATH_COMPARE,
    PAGE_TABLE_TYPES,
    PGT,
    PGT_root_page_table,
    entry_has_changed,
    is_guest_l2_slot,
    l1e_disallowed,
    l2e_disallowed,
    l2e_from_pfn,
    pte_get_pfn,
    pte_present,
)

if TYPE_CHECKING:
    from xenspec.refmodel.hypervisor import Hypervisor

# _run_batch's answer for a batch the preemption check stopped (never a hypercall's result).
_PREEMPTED = 1 << 32
# Hypercall numbers (xen.h), outside the class: Python would mangle __HYPERVISOR_* inside it.
_NR_MMU_UPDATE: int = abi.__HYPERVISOR_mmu_update
_NR_MMUEXT_OP: int = abi.__HYPERVISOR_mmuext_op
# The frame types by their value (the frame table stores the value): PGT(t) is _PGT[t].
_PGT: tuple[PGT, ...] = tuple(sorted(PGT))
# MM.mmu_update_common's bounds: below them every get_page and get_page_type of a request
# succeeds. A request takes up to two general references on one frame (a table that maps
# itself), and at most one type reference.
_COUNT_MAX = PGC_count_mask - 1
_TYPE_COUNT_MAX = PGT_count_mask
_L1, _WRITABLE = int(PGT.l1_page_table), int(PGT.writable_page)
_PRESENT, _RW = abi._PAGE_PRESENT, abi._PAGE_RW
_MMU_UPDATE_UNPACK = abi.MMU_UPDATE_T.unpack


class MMCore(ABC):
    """What the MMU of every paging mode shares: general and type references, the foreign
    domain of a batch, the batch loops of mmu_update and mmuext_op, and the mmuext_op
    commands that do not depend on the page-table format (flushes, SET_LDT, UNPIN_TABLE)."""

    # The table types relinquish_memory devalidates by force to break circular linear
    # references, highest level first (x86 domain.c domain_relinquish_resources).
    RELINQUISH_TYPES: ClassVar[tuple[PGT, ...]] = (PGT.l2_page_table,)

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.memory = hv.memory
        self.frames = hv.frames
        # percpu_info.foreign: the domain a batch acts for, set by set_foreigndom().
        self.foreign: Domain | None = None
        # mm.c, alloc_segdesc_page: validates a GDT/LDT frame's descriptors. The descriptor
        # subsystem (refmodel.desc) provides it; without one, no frame takes those types.
        self.alloc_segdesc_page: Callable[[int], bool] | None = None
        # mm.c, invalidate_shadow_ldt: drop a vCPU's lazily mapped LDT pages (refmodel.desc
        # provides it; without one nothing is ever mapped there).
        self.invalidate_shadow_ldt: Callable[[Vcpu], None] = lambda v: None
        self.deferred_flush = False

    # ----------------------------------------------------------------------------------------
    # General references: get_page / put_page (mm.h, mm.c).
    # ----------------------------------------------------------------------------------------
    def get_page(self, mfn: int, d: Domain) -> bool:
        """Take a general reference on a frame ``d`` owns that is in use (count non-zero)."""
        frames = self.frames
        count = frames.count[mfn]
        if count == 0 or count >= PGC_count_mask or frames.owner[mfn] != d.domain_id:
            return False
        frames.count[mfn] = count + 1
        return True

    def get_page_from_pagenr(self, mfn: int, d: Domain) -> bool:
        return self.memory.mfn_valid(mfn) and self.get_page(mfn, d)

    def put_page(self, mfn: int) -> None:
        frames = self.frames
        count = frames.count[mfn] - 1
        assert count >= 0, f"reference count underflow on {frames.describe(mfn)}"
        frames.count[mfn] = count
        if count == 0:
            self.hv.free_domheap_page(mfn)

    # ----------------------------------------------------------------------------------------
    # Type references: put_page_type (mm.c); get_page_type is each paging mode's.
    # ----------------------------------------------------------------------------------------
    def put_page_type(self, mfn: int) -> None:
        frames = self.frames
        tc = frames.type_count[mfn] - 1
        assert tc >= 0, f"type count underflow on {frames.describe(mfn)}"
        frames.type_count[mfn] = tc
        if (
            tc == 0
            and frames.type[mfn] <= PGT.l4_page_table
            and frames.flags[mfn] & PGT_validated
        ):
            # Page-table frames lose their validation when unused: their entries' references
            # are dropped, and must be checked afresh on the next use.
            frames.flags[mfn] &= ~PGT_validated
            self.free_page_type(mfn, PGT(frames.type[mfn]))

    def get_page_and_type(self, mfn: int, d: Domain, type: PGT) -> bool:
        if not self.get_page(mfn, d):
            return False
        if not self.get_page_type(mfn, type):
            self.put_page(mfn)
            return False
        return True

    def get_page_and_type_from_pagenr(self, mfn: int, type: PGT, d: Domain) -> bool:
        return self.memory.mfn_valid(mfn) and self.get_page_and_type(mfn, d, type)

    def put_page_and_type(self, mfn: int) -> None:
        self.put_page_type(mfn)
        self.put_page(mfn)

    def put_pin_and_allocation(self, mfn: int) -> None:
        """What relinquish_memory (x86 domain.c) and guest_remove_page (memory.c) both drop:
        the pin, with the type and general reference it holds, and the allocation
        reference (test_and_clear_bit of _PGT_pinned and _PGC_allocated)."""
        frames = self.frames
        if frames.flags[mfn] & PGT_pinned:
            frames.flags[mfn] &= ~PGT_pinned
            self.put_page_and_type(mfn)
        if frames.flags[mfn] & PGC_allocated:
            frames.flags[mfn] &= ~PGC_allocated
            self.put_page(mfn)

    def put_l1e_reference(self, mfn: int, writable: bool) -> None:
        """put_page_from_l1e's references, whatever the entry format: a writable mapping's
        type and general reference, or a read-only mapping's general one."""
        if not self.memory.mfn_valid(mfn):
            return
        if writable:
            self.put_page_and_type(mfn)
            return
        frames = self.frames
        if frames.type[mfn] == PGT.ldt_page and frames.type_count[mfn]:
            # mm.c: a read-only mapping of an LDT frame in use goes away: Xen blows the
            # shadow LDT of its domain's vCPUs (Xen only when the L1's domain owns it).
            owner = self.hv.domains.get(frames.owner[mfn])
            for w in owner.vcpus if owner is not None else ():
                self.invalidate_shadow_ldt(w)
        self.put_page(mfn)

    def type_change_flush(self, mfn: int) -> None:
        """A frame changing type: flush the TLBs of its owner's vCPUs (mm.c, tlbflush_filter)."""
        owner = self.hv.domains.get(self.frames.owner[mfn])
        if owner is not None:
            for v in owner.vcpus:
                v.flush_tlb()

    # ----------------------------------------------------------------------------------------
    # The foreign domain of a batch (mm.c, set_foreigndom; FOREIGNDOM).
    # ----------------------------------------------------------------------------------------
    def set_foreigndom(self, d: Domain, domid: int) -> bool:
        self.foreign = None
        if domid == abi.DOMID_SELF:
            return True
        if domid == d.domain_id:
            return False  # a domain may not name itself as foreign
        if not d.is_privileged:
            # Any domain may name DOMID_IO, for mappings of I/O memory.
            if domid != abi.DOMID_IO:
                return False
            self.foreign = self.hv.dom_io
            return True
        e = self.hv.domains.get(domid) or self.hv.special_domains.get(domid)
        if e is None:
            return False
        self.foreign = e
        return True

    def foreigndom(self, d: Domain) -> Domain:
        return self.foreign if self.foreign is not None else d

    # ----------------------------------------------------------------------------------------
    # Hypercalls.
    # ----------------------------------------------------------------------------------------
    def do_mmu_update(
        self, v: Vcpu, ureqs: int, count: int, pdone: int, foreigndom: int
    ) -> int:
        """Hypercall 1: a batch of checked page-table writes and M2P updates."""
        d = v.domain
        done = 0
        if count & abi.MMU_UPDATE_PREEMPTED:
            count &= ~abi.MMU_UPDATE_PREEMPTED
            done = self._read_done(v, pdone)
        handler = self.mmu_update_handler()
        i, rc = self._run_batch(
            v, d, foreigndom, ureqs, count, abi.MMU_UPDATE_T.size,
            functools.partial(handler, d), self.mmu_update_bulk(d, handler),
        )
        if rc == _PREEMPTED:
            rc = self.hv.hypercall_create_continuation(
                v, _NR_MMU_UPDATE, ureqs + i * abi.MMU_UPDATE_T.size,
                (count - i) | abi.MMU_UPDATE_PREEMPTED, pdone, foreigndom)
        return self._finish_batch(v, pdone, done + i, rc)

    def do_mmuext_op(
        self, v: Vcpu, uops: int, count: int, pdone: int, foreigndom: int
    ) -> int:
        """Hypercall 26: pin and unpin tables, switch base pointer, flush, set the LDT."""
        done = 0
        if count & abi.MMU_UPDATE_PREEMPTED:
            count &= ~abi.MMU_UPDATE_PREEMPTED
            done = self._read_done(v, pdone)
        i, rc = self._run_batch(
            v, v.domain, foreigndom, uops, count, abi.MMUEXT_OP_T.size,
            lambda buf: self.mmuext_op_one(v, *abi.MMUEXT_OP_T.unpack(buf)),
        )
        if rc == _PREEMPTED:
            rc = self.hv.hypercall_create_continuation(
                v, _NR_MMUEXT_OP, uops + i * abi.MMUEXT_OP_T.size,
                (count - i) | abi.MMU_UPDATE_PREEMPTED, pdone, foreigndom)
        if self.deferred_flush:
            v.flush_tlb()
        self.deferred_flush = False
        return self._finish_batch(v, pdone, done + i, rc)

    def mmuext_unpin_table(self, v: Vcpu, mfn: int, _arg2: int) -> bool:
        if not self.get_page_from_pagenr(mfn, v.domain):
            return False
        if not self.frames.flags[mfn] & PGT_pinned:
            self.put_page(mfn)  # "not pinned"
            return False
        self.frames.flags[mfn] &= ~PGT_pinned
        self.put_page_and_type(mfn)
        self.put_page(mfn)
        return True

    def mmuext_tlb_flush_local(self, _v: Vcpu, _arg1: int, _arg2: int) -> bool:
        self.deferred_flush = True
        return True

    def mmuext_invlpg_local(self, v: Vcpu, va: int, _arg2: int) -> bool:
        v.flush_tlb_one(va)
        return True

    def mmuext_flush_multi(self, v: Vcpu, _arg1: int, vcpumask: int) -> bool:
        """TLB_FLUSH_MULTI: arg2 points to a bitmap of vCPUs; a bad pointer is -EINVAL."""
        targets = self.vcpus_in_mask(v, vcpumask)
        for w in targets or ():
            w.flush_tlb()
        return targets is not None

    def mmuext_invlpg_multi(self, v: Vcpu, va: int, vcpumask: int) -> bool:
        targets = self.vcpus_in_mask(v, vcpumask)
        for w in targets or ():
            w.flush_tlb_one(va)
        return targets is not None

    def vcpus_in_mask(self, v: Vcpu, vcpumask: int) -> list[Vcpu] | None:
        """The vCPUs of ``v``'s domain named by the guest bitmap at ``vcpumask``, or None."""
        mask = self.hv.copy_from_guest(v, vcpumask, 4)
        if mask is None:
            return None
        bits = int.from_bytes(mask, "little")
        return [w for w in v.domain.vcpus if bits >> w.vcpu_id & 1]

    def mmuext_tlb_flush_all(self, v: Vcpu, _arg1: int, _arg2: int) -> bool:
        for w in v.domain.vcpus:
            w.flush_tlb()
        return True

    def mmuext_invlpg_all(self, v: Vcpu, va: int, _arg2: int) -> bool:
        for w in v.domain.vcpus:
            w.flush_tlb_one(va)
        return True

    def mmuext_flush_cache(self, v: Vcpu, _arg1: int, _arg2: int) -> bool:
        """wbinvd needs physical-device privilege (cache_flush_permitted): none here."""
        return False

    def mmuext_set_ldt(self, v: Vcpu, ptr: int, ents: int) -> bool:
        if ptr & (abi.PAGE_SIZE - 1) or ents > abi.MAX_LDT_ENTRIES:
            return False
        if not self.hv.array_access_ok(ptr, ents, abi.LDT_ENTRY_SIZE):
            return False
        if (v.ldt_base, v.ldt_ents) != (ptr, ents):
            # Only a new base or size drops the pages mapped so far (mm.c, MMUEXT_SET_LDT).
            self.invalidate_shadow_ldt(v)
            v.ldt_base, v.ldt_ents = ptr, ents
            v.reload_segments = True  # load_LDT: the LDTR changes under the loaded selectors
        return True

    def _uvmf_targets(self, v: Vcpu, bmap_ptr: int) -> list[Vcpu] | None:
        if bmap_ptr == abi.UVMF_LOCAL:
            return [v]
        if bmap_ptr == abi.UVMF_ALL:
            return list(v.domain.vcpus)
        return self.vcpus_in_mask(v, bmap_ptr)

    # ----------------------------------------------------------------------------------------
    # The batch loop shared by mmu_update and mmuext_op.
    # ----------------------------------------------------------------------------------------
    def mmu_update_handler(self) -> Callable[[Domain, bytes], int]:
        """What handles each request of an mmu_update batch: ``mmu_update_one`` (a paging
        mode may put a fused common case in front of it, ``MM.mmu_update_common``)."""
        return self.mmu_update_one

    def mmu_update_bulk(self, d: Domain, handler: Callable[[Domain, bytes], int]
                        ) -> Callable[[int, int], int] | None:
        """A run of ``d``'s batch records done at once (``_run_batch``'s ``bulk``) beside
        ``handler`` (``mmu_update_handler``'s), or None: by default every record goes to the
        handler."""
        return None

    def _run_batch(
        self,
        v: Vcpu,
        d: Domain,
        foreigndom: int,
        uptr: int,
        count: int,
        size: int,
        one: Callable[[bytes], int],
        bulk: Callable[[int, int], int] | None = None,
    ) -> tuple[int, int]:
        """Process ``count`` records of ``size`` bytes at guest address ``uptr`` until the
        first failure or the preemption check; return (records completed, rc), rc being
        ``_PREEMPTED`` when the caller is to create the continuation. ``bulk`` (speed only:
        ``MM.mmu_update_bulk``) may do a run of records that lie in one page and are within
        the budget, given where they are and how many; it says how many it did, and the
        record it stopped at goes to ``one``."""
        if not self.set_foreigndom(d, foreigndom):
            return 0, -abi.ESRCH
        if not self.hv.array_access_ok(uptr, count, size):
            return 0, -abi.EFAULT
        reader = self.hv.guest_reader(v, uptr)
        read = reader.read
        i, rc = 0, 0
        preempt = self.hv.hypercall_preempt_check
        while i < count:
            if preempt(i):
                rc = _PREEMPTED
                break
            if bulk is not None:
                span = reader.span(size, min(count - i, self.hv.hypercall_budget_left(i)))
                if span is not None:
                    done = bulk(*span)
                    reader.skip(done * size)
                    i += done
                    if done == span[1]:
                        continue  # the next run, after the preemption check
            buf = read(size)
            if buf is None:
                rc = -abi.EFAULT
                break
            rc = one(buf)
            if rc:
                break
            i += 1
        self.hv.charge_work(i)
        return i, rc

    def _read_done(self, v: Vcpu, pdone: int) -> int:
        if not pdone:
            return 0
        raw = self.hv.copy_from_guest(v, pdone, 4)
        return int.from_bytes(raw, "little") if raw is not None else 0

    def _finish_batch(self, v: Vcpu, pdone: int, done: int, rc: int) -> int:
        self.foreign = None
        if pdone:
            self.hv.copy_to_guest(v, pdone, (done & 0xFFFFFFFF).to_bytes(4, "little"))
        return rc

    # ----------------------------------------------------------------------------------------
    # What each paging mode defines (refmodel/mm.py for 2-level, refmodel/mm_pae.py for PAE).
    # ----------------------------------------------------------------------------------------
    @abstractmethod
    def get_page_type(self, mfn: int, type: PGT) -> bool:
        """Take a type reference (mm.c get_page_type); the first one on a page-table type
        validates the frame."""
        ...

    @abstractmethod
    def free_page_type(self, mfn: int, type: PGT) -> None:
        """A page-table frame lost its last type reference: drop its entries' references."""
        ...

    @abstractmethod
    def mmu_update_one(self, d: Domain, buf: bytes) -> int:
        """One ``struct mmu_update``: 0 or the negative errno that stops the batch."""
        ...

    @abstractmethod
    def mmuext_op_one(self, v: Vcpu, cmd: int, arg1: int, arg2: int) -> int:
        """One ``struct mmuext_op``: 0 or the negative errno that stops the batch."""
        ...

    @abstractmethod
    def put_page_from_l1e(self, l1e: int) -> None:
        """Drop the references a present L1 entry holds."""
        ...

    @abstractmethod
    def pin_page(self, v: Vcpu, mfn: int, type: PGT) -> bool:
        """Pin ``mfn`` as a table of ``type`` (the domain builder's and MMUEXT_PIN_*'s)."""
        ...

    @abstractmethod
    def new_guest_cr3(self, v: Vcpu, mfn: int) -> bool:
        """Make ``mfn`` the base of ``v``'s page tables (MMUEXT_NEW_BASEPTR)."""
        ...

    @abstractmethod
    def guest_map_l1e(self, v: Vcpu, va: int) -> int | None:
        """The L1 frame the current page tables name for ``va``, if any."""
        ...

    @abstractmethod
    def do_update_va_mapping(self, v: Vcpu, va: int, val: int, val_hi: int, flags: int) -> int:
        """Hypercall 14."""
        ...


class MM(MMCore):
    """The 2-level MMU of Xen 3.0.4 x86_32 (the native-3.0.4 profile); one per hypervisor."""

    _twin: mm_native.CommonTwin | None = None  # mmu_update_common's C twin, once built

    # ----------------------------------------------------------------------------------------
    # Type references: get_page_type (mm.c).
    # ----------------------------------------------------------------------------------------
    def get_page_type(self, mfn: int, type: PGT) -> bool:
        """Take a type reference; the first one on a page-table type validates the frame."""
        frames = self.frames
        tc = frames.type_count[mfn]
        if tc >= PGT_count_mask:
            return False  # type-count overflow
        if tc == 0:
            if frames.type[mfn] != type:
                # A type change is safe only at type count 0; stale TLB entries must go.
                self.type_change_flush(mfn)
                frames.type[mfn] = type
                frames.flags[mfn] &= ~PGT_validated
                if type == PGT.writable_page:
                    frames.flags[mfn] |= PGT_validated
        elif frames.type[mfn] != type:
            return False
        frames.type_count[mfn] = tc + 1
        if not frames.flags[mfn] & PGT_validated:
            if not self.alloc_page_type(mfn, type):
                frames.type[mfn] = PGT.none
                frames.type_count[mfn] = 0
                return False
            frames.flags[mfn] |= PGT_validated
        return True

    # ----------------------------------------------------------------------------------------
    # Validation of entries and whole tables (mm.c, get_page_from_l?e, alloc_l?_table).
    # ----------------------------------------------------------------------------------------
    def get_page_from_l1e(self, l1e: int, d: Domain) -> bool:
        """A present L1 entry references a frame of ``d``; RW takes a writable type ref."""
        if not pte_present(l1e):
            return True
        if l1e_disallowed(l1e):
            return False
        mfn = pte_get_pfn(l1e)
        if not self.memory.mfn_valid(mfn):
            return False  # I/O memory: no domain has iomem permission in this model
        if l1e & abi._PAGE_RW:
            return self.get_page_and_type(mfn, d, PGT.writable_page)
        return self.get_page(mfn, d)

    def put_page_from_l1e(self, l1e: int) -> None:
        if pte_present(l1e):
            self.put_l1e_reference(pte_get_pfn(l1e), bool(l1e & abi._PAGE_RW))

    def get_page_from_l2e(self, l2e: int, pfn: int, d: Domain) -> bool:
        """A present L2 entry references an L1 table, or is a read-only linear map."""
        if not pte_present(l2e):
            return True
        if l2e_disallowed(l2e):
            return False
        mfn = pte_get_pfn(l2e)
        if self.get_page_and_type_from_pagenr(mfn, PGT.l1_page_table, d):
            return True
        return self.get_linear_pagetable(l2e, pfn, d)

    def get_linear_pagetable(self, l2e: int, pfn: int, d: Domain) -> bool:
        """mm.c, get_linear_pagetable: a read-only map of this or another validated L2."""
        if l2e & abi._PAGE_RW:
            return False
        mfn = pte_get_pfn(l2e)
        if mfn == pfn:
            return True  # a self-map holds no reference
        if not self.get_page_from_pagenr(mfn, d):
            return False
        frames = self.frames
        if (
            frames.type_count[mfn] >= PGT_count_mask
            or frames.type[mfn] != PGT.l2_page_table
            or not frames.flags[mfn] & PGT_validated
        ):
            self.put_page(mfn)
            return False
        frames.type_count[mfn] += 1
        return True

    def put_page_from_l2e(self, l2e: int, pfn: int) -> None:
        if pte_present(l2e) and pte_get_pfn(l2e) != pfn:
            self.put_page_and_type(pte_get_pfn(l2e))

    def alloc_page_type(self, mfn: int, type: PGT) -> bool:
        d = self.hv.domains.get(self.frames.owner[mfn])
        if d is None:
            return False
        if type == PGT.l1_page_table:
            return self.alloc_l1_table(mfn, d)
        if type == PGT.l2_page_table:
            return self.alloc_l2_table(mfn, d)
        if type in (PGT.gdt_page, PGT.ldt_page) and self.alloc_segdesc_page is not None:
            return self.alloc_segdesc_page(mfn)
        return False

    def alloc_l1_table(self, mfn: int, d: Domain) -> bool:
        words = self.memory.frame_words(mfn)
        for i in range(abi.L1_PAGETABLE_ENTRIES):
            e = words[i]
            if e and not self.get_page_from_l1e(e, d):
                for j in range(i):
                    self.put_page_from_l1e(words[j])
                return False
        return True

    def alloc_l2_table(self, mfn: int, d: Domain) -> bool:
        words = self.memory.frame_words(mfn)
        first_xen = abi.L2_PAGETABLE_FIRST_XEN_SLOT
        for i in range(first_xen):
            e = words[i]
            if e and not self.get_page_from_l2e(e, mfn, d):
                for j in range(i):
                    self.put_page_from_l2e(words[j], mfn)
                return False
        # Xen's private mappings, this directory's own map of itself among them.
        for k, e in enumerate(self.hv.xen_l2_slots(d, mfn)):
            words[first_xen + k] = e
        return True

    def free_page_type(self, mfn: int, type: PGT) -> None:
        words = self.memory.frame_words(mfn)
        if type == PGT.l1_page_table:
            for e in words:
                if e:
                    self.put_page_from_l1e(e)
        elif type == PGT.l2_page_table:
            for i in range(abi.L2_PAGETABLE_FIRST_XEN_SLOT):
                if words[i]:
                    self.put_page_from_l2e(words[i], mfn)
        # A de-validated table's stale translations must go: flush the owner's TLBs.
        self.type_change_flush(mfn)

    # ----------------------------------------------------------------------------------------
    # Single-entry updates (mm.c, mod_l1_entry / mod_l2_entry).
    # ----------------------------------------------------------------------------------------
    def fast_path(self, old: int, new: int, level: int) -> bool:
        """mod_l1_entry / mod_l2_entry: the update keeps the entry's references (only bits of
        the XSA-182 whitelist change), so it is written without reference handling."""
        return not entry_has_changed(old, new)

    def mod_l1_entry(self, l1mfn: int, index: int, nl1e: int, d: Domain) -> bool:
        """Replace entry ``index`` of L1 table ``l1mfn``; new references are taken in ``d``."""
        ol1e = self.memory.read_entry(l1mfn, index)
        if pte_present(nl1e):
            if l1e_disallowed(nl1e):
                return False
            if self.fast_path(ol1e, nl1e, 1):
                self.memory.write_entry(l1mfn, index, nl1e)
                return True
            if not self.get_page_from_l1e(nl1e, d):
                return False
        self.memory.write_entry(l1mfn, index, nl1e)
        self.put_page_from_l1e(ol1e)
        return True

    def mod_l2_entry(self, l2mfn: int, index: int, nl2e: int, d: Domain) -> bool:
        if not is_guest_l2_slot(index):
            return False  # "Illegal L2 update attempt in Xen-private area"
        ol2e = self.memory.read_entry(l2mfn, index)
        if pte_present(nl2e):
            if l2e_disallowed(nl2e):
                return False
            if self.fast_path(ol2e, nl2e, 2):
                self.memory.write_entry(l2mfn, index, nl2e)
                return True
            if not self.get_page_from_l2e(nl2e, l2mfn, d):
                return False
        self.memory.write_entry(l2mfn, index, nl2e)
        self.put_page_from_l2e(ol2e, l2mfn)
        return True

    def mmu_update_one(self, d: Domain, buf: bytes) -> int:
        """One ``struct mmu_update``: 0 on success or the negative errno that stops the batch."""
        ptr, val = abi.MMU_UPDATE_T.unpack(buf)
        cmd = ptr & abi.MMU_UPDATE_CMD_MASK
        # x86_32 Xen keeps the frame number and the value in unsigned longs: bits of ptr above
        # 43, and of val above 31, are dropped.
        mfn = (ptr >> abi.PAGE_SHIFT) & 0xFFFFFFFF
        val &= 0xFFFFFFFF
        if cmd == abi.MMU_NORMAL_PT_UPDATE:
            ok = self.normal_pt_update(d, mfn, (ptr & (abi.PAGE_SIZE - 1)) >> 2, val)
        elif cmd == abi.MMU_MACHPHYS_UPDATE:
            ok = self.machphys_update(mfn, val, d)
        else:
            return -abi.ENOSYS
        return 0 if ok else -abi.EINVAL

    # ----------------------------------------------------------------------------------------
    # The common case of a batch entry, fused (speed only: the rules are the functions above).
    # ----------------------------------------------------------------------------------------
    def mmu_update_handler(self) -> Callable[[Domain, bytes], int]:
        """``mmu_update_common`` while every function it stands for is this module's own;
        ``mmu_update_one`` once any of them is replaced (a seeded defect, the 3.0.4 profile's
        fast path, a mutant), so that the replacement is what runs."""
        if (self.__dict__.keys().isdisjoint(_FUSED_REFERENCE)
                and _fused_functions(type(self)) == _FUSED_FUNCTIONS):
            return self.mmu_update_common
        return self.mmu_update_one

    def mmu_update_common(self, d: Domain, buf: bytes) -> int:
        """``mmu_update_one`` for its common case in one function: MMU_NORMAL_PT_UPDATE of an
        entry of a validated L1 table ``d`` owns and uses, to a value that is not present, or
        that keeps the entry's references (``fast_path``), or that maps a frame of FOREIGNDOM
        in use (read-only; writable, a writable page or a frame with no type reference, which
        takes the writable type as get_page_type gives it, its owner's TLBs flushed), replacing
        an entry whose references can go without freeing or retyping its frame. Everything
        else, and every case that would fail, goes to ``mmu_update_one``. The references
        taken and dropped are those of normal_pt_update -> mod_l1_entry ->
        get_page_from_l1e / put_page_from_l1e, in the same order: the bracketing references
        on the table itself cancel, and the counts are checked against bounds below which no
        overflow check of the reference can fail. No validation can be due: a page-table frame with
        a type reference is validated (INV-VALID), and a writable page always is (its type
        is given with PGT_validated). tests/test_mm_fused.py holds the two to the same
        result, state and memory."""
        ptr, val = _MMU_UPDATE_UNPACK(buf)
        mfn = (ptr >> abi.PAGE_SHIFT) & 0xFFFFFFFF
        frames = self.frames
        if (ptr & abi.MMU_UPDATE_CMD_MASK != abi.MMU_NORMAL_PT_UPDATE
                or mfn >= self.memory.nr_frames or frames.type[mfn] != _L1
                or frames.owner[mfn] != d.domain_id
                or not 0 < frames.count[mfn] < _COUNT_MAX
                or not 0 < frames.type_count[mfn] < _TYPE_COUNT_MAX):
            return self.mmu_update_one(d, buf)
        val &= 0xFFFFFFFF
        at = mfn * abi.L1_PAGETABLE_ENTRIES + ((ptr & (abi.PAGE_SIZE - 1)) >> 2)
        words = self.memory.words
        old = words[at]
        if val & _PRESENT:
            if val & abi.L1_DISALLOW_MASK:
                return self.mmu_update_one(d, buf)
            if not (old ^ val) & FASTPATH_COMPARE:  # entry_has_changed, written out
                words[at] = val
                return 0
            new = val >> abi.PAGE_SHIFT
            fd = self.foreign if self.foreign is not None else d
            if (new >= self.memory.nr_frames or frames.owner[new] != fd.domain_id
                    or not 0 < frames.count[new] < _COUNT_MAX
                    or (val & _RW and (frames.type_count[new] >= _TYPE_COUNT_MAX
                                       or (frames.type[new] != _WRITABLE
                                           and frames.type_count[new])))):
                return self.mmu_update_one(d, buf)
        if old & _PRESENT and not self._drops_plainly(old):
            return self.mmu_update_one(d, buf)
        # Checked: from here on every step succeeds, and none frees a frame or retypes one
        # but a frame with no type reference that a writable map makes a writable page.
        if val & _PRESENT:
            new = val >> abi.PAGE_SHIFT
            frames.count[new] += 1
            if val & _RW:
                if frames.type[new] != _WRITABLE:  # get_page_type's type change
                    self.type_change_flush(new)
                    frames.type[new] = _WRITABLE
                    frames.flags[new] |= PGT_validated
                frames.type_count[new] += 1
        words[at] = val
        if old & _PRESENT:
            gone = old >> abi.PAGE_SHIFT
            if gone < self.memory.nr_frames:
                if old & _RW:
                    frames.type_count[gone] -= 1
                frames.count[gone] -= 1
        return 0

    def mmu_update_bulk(self, d: Domain, handler: Callable[[Domain, bytes], int]
                        ) -> Callable[[int, int], int] | None:
        """``mmu_update_common``'s C twin (refmodel/mm_native.py) for ``d``'s batch: while
        the fused common case is the ``handler``, and where the twin could be built."""
        if handler != self.mmu_update_common or not _twin_is_current(self):
            return None
        twin = self._twin
        if twin is None:
            lib = mm_native.library()
            if lib is None:
                return None
            twin = self._twin = mm_native.CommonTwin(lib, self.memory, self.frames,
                                                     _COUNT_MAX, _TYPE_COUNT_MAX)

        def run(maddr: int, n: int) -> int:
            fd = self.foreign if self.foreign is not None else d
            return twin(d.domain_id, fd.domain_id, maddr, n)
        return run

    def _drops_plainly(self, l1e: int) -> bool:
        """put_page_from_l1e of the present ``l1e`` only lowers counts: its frame keeps a
        general reference, a writable map's type reference is there to drop (the frame is
        a writable page: no page-table frame is mapped writable, INV-NOWRPT, so no table
        loses its validation), and a read-only map is not of an LDT frame in use."""
        frames = self.frames
        mfn = l1e >> abi.PAGE_SHIFT
        if mfn >= self.memory.nr_frames:
            return True  # put_l1e_reference: not RAM, no reference was taken
        if frames.count[mfn] < 2:
            return False
        if l1e & _RW:
            return frames.type_count[mfn] >= 1
        return not (frames.type[mfn] == PGT.ldt_page and frames.type_count[mfn])

    def normal_pt_update(self, d: Domain, mfn: int, index: int, val: int) -> bool:
        """MMU_NORMAL_PT_UPDATE: write ``val`` into word ``index`` of a frame ``d`` owns."""
        if not self.get_page_from_pagenr(mfn, d):
            return False
        ok = False
        type = _PGT[self.frames.type[mfn]]
        if type in PAGE_TABLE_TYPES and self.get_page_type(mfn, type):
            if type == PGT.l1_page_table:
                ok = self.mod_l1_entry(mfn, index, val, self.foreigndom(d))
            else:
                ok = self.mod_l2_entry(mfn, index, val, d)
            self.put_page_type(mfn)
        elif self.get_page_type(mfn, PGT.writable_page):
            # "not_a_pt": any other frame, or a table that no longer validates, is plain data.
            self.memory.write_entry(mfn, index, val)
            ok = True
            self.put_page_type(mfn)
        self.put_page(mfn)
        return ok

    def machphys_update(self, mfn: int, gpfn: int, d: Domain) -> bool:
        """MMU_MACHPHYS_UPDATE: M2P[mfn] = gpfn, for a frame the foreign domain owns."""
        if not self.get_page_from_pagenr(mfn, self.foreigndom(d)):
            return False
        self.hv.set_gpfn_from_mfn(mfn, gpfn)
        self.put_page(mfn)
        return True

    def mmuext_op_one(self, v: Vcpu, cmd: int, arg1: int, arg2: int) -> int:
        handler = self._mmuext_handlers.get(cmd)
        if handler is None:
            return -abi.ENOSYS
        return 0 if handler(self, v, arg1, arg2) else -abi.EINVAL

    def pin_page(self, v: Vcpu, mfn: int, type: PGT) -> bool:
        fd = self.foreigndom(v.domain)
        if not self.get_page_and_type_from_pagenr(mfn, type, fd):
            return False
        if self.frames.flags[mfn] & PGT_pinned:
            self.put_page_and_type(mfn)  # "already pinned"
            return False
        self.frames.flags[mfn] |= PGT_pinned
        return True

    def mmuext_pin_l1_table(self, v: Vcpu, mfn: int, _arg2: int) -> bool:
        return self.pin_page(v, mfn, PGT.l1_page_table)

    def mmuext_pin_l2_table(self, v: Vcpu, mfn: int, _arg2: int) -> bool:
        return self.pin_page(v, mfn, PGT_root_page_table)

    def mmuext_pin_subdirectory(self, _v: Vcpu, _mfn: int, _arg2: int) -> bool:
        """PIN_L3/L4 on non-PAE: "Ignore pinning of subdirectories" (3.0.2-3.0.4)."""
        return True

    def mmuext_new_baseptr(self, v: Vcpu, mfn: int, _arg2: int) -> bool:
        ok = self.new_guest_cr3(v, mfn)
        self.deferred_flush = False  # loading the base pointer flushed the TLB
        return ok

    def new_guest_cr3(self, v: Vcpu, mfn: int) -> bool:
        """mm.c, new_guest_cr3 (3.0.4): a failed switch retries without the old base, and a
        second failure crashes the domain, which is left with no page table."""
        d = v.domain
        if not self.get_page_and_type_from_pagenr(mfn, PGT_root_page_table, d):
            old = v.guest_table
            v.guest_table = 0
            if old:
                self.put_page_and_type(old)
            if not self.get_page_and_type_from_pagenr(mfn, PGT_root_page_table, d):
                d.crash(f"NEW_BASEPTR to mfn {mfn:#x}, which does not validate as a page directory")
                return False
        self.invalidate_shadow_ldt(v)
        old = v.guest_table
        v.guest_table = mfn
        v.flush_tlb()
        if old:
            self.put_page_and_type(old)
        return True

    _mmuext_handlers: ClassVar[dict[int, Callable[[MM, Vcpu, int, int], bool]]] = {
        abi.MMUEXT_PIN_L1_TABLE: mmuext_pin_l1_table,
        abi.MMUEXT_PIN_L2_TABLE: mmuext_pin_l2_table,
        abi.MMUEXT_PIN_L3_TABLE: mmuext_pin_subdirectory,
        abi.MMUEXT_PIN_L4_TABLE: mmuext_pin_subdirectory,
        abi.MMUEXT_UNPIN_TABLE: MMCore.mmuext_unpin_table,
        abi.MMUEXT_NEW_BASEPTR: mmuext_new_baseptr,
        abi.MMUEXT_TLB_FLUSH_LOCAL: MMCore.mmuext_tlb_flush_local,
        abi.MMUEXT_INVLPG_LOCAL: MMCore.mmuext_invlpg_local,
        abi.MMUEXT_TLB_FLUSH_MULTI: MMCore.mmuext_flush_multi,
        abi.MMUEXT_INVLPG_MULTI: MMCore.mmuext_invlpg_multi,
        abi.MMUEXT_TLB_FLUSH_ALL: MMCore.mmuext_tlb_flush_all,
        abi.MMUEXT_INVLPG_ALL: MMCore.mmuext_invlpg_all,
        abi.MMUEXT_FLUSH_CACHE: MMCore.mmuext_flush_cache,
        abi.MMUEXT_SET_LDT: MMCore.mmuext_set_ldt,
    }

    def do_update_va_mapping(self, v: Vcpu, va: int, val: int, val_hi: int, flags: int) -> int:
        """Hypercall 14: set the L1 entry that maps ``va`` in the current page table, then
        flush as ``flags`` asks (3.0.4 flushes even when the update failed). The entry comes
        in two registers, low word first; a non-PAE entry is the low word alone."""
        rc = 0
        if va >= abi.HYPERVISOR_VIRT_START:
            return -abi.EINVAL
        l1mfn = self.guest_map_l1e(v, va)
        index = (va >> abi.L1_PAGETABLE_SHIFT) & (abi.L1_PAGETABLE_ENTRIES - 1)
        if l1mfn is None or not self.mod_l1_entry(l1mfn, index, val, v.domain):
            rc = -abi.EINVAL
        flush = flags & abi.UVMF_FLUSHTYPE_MASK
        if flush in (abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG):
            targets = self._uvmf_targets(v, flags & ~abi.UVMF_FLUSHTYPE_MASK)
            if targets is None:
                rc = -abi.EFAULT
            else:
                for w in targets:
                    if flush == abi.UVMF_TLB_FLUSH:
                        w.flush_tlb()
                    else:
                        w.flush_tlb_one(va)
        return rc

    def guest_map_l1e(self, v: Vcpu, va: int) -> int | None:
        """The L1 table mapping ``va`` in ``v``'s page table, if the L2 slot names one."""
        if not v.guest_table:
            return None
        l2e = self.memory.read_entry(v.guest_table, va >> abi.L2_PAGETABLE_SHIFT)
        if not pte_present(l2e):
            return None
        l1mfn = pte_get_pfn(l2e)
        if not self.memory.mfn_valid(l1mfn) or self.frames.type[l1mfn] != PGT.l1_page_table:
            return None
        return int(l1mfn)

# The flags of each page directory's map of itself at LINEAR_PT_VIRT_START. Xen's are
# __PAGE_HYPERVISOR (asm-x86/page.h: PRESENT | RW | DIRTY | ACCESSED): its linear page table is
# writable by Xen, and the guest cannot reach it because the guest's flat segments end at
# GUEST_SEGMENT_MAX_ADDR (asm-x86/config.h), below it. The emulator checks no segment limits
# (refmodel/cpu.py), so there the RW bit would let ring 1 write its own page tables through
# the linear map, past every validation; the model's hypervisor runs in Python and never
# writes through the map, so the model gives it the read-only form, and only RW differs.
LINEAR_PT_FLAGS = __PAGE_HYPERVISOR_RO


def xen_l2_entries(m2p_l1: list[int], perdomain_pt: list[int], l2mfn: int) -> list[int]:
    """What the hypervisor writes into slots 1008..1023 of page directory ``l2mfn`` when it
    validates it (mm.c, alloc_l2_table, 2-level paging): the entries of the domain (the
    machine-to-physical table at MACH2PHYS_VIRT_START, which Xen copies from idle_pg_table,
    and the domain's per-domain tables at PERDOMAIN_VIRT_START), then the directory's map of
    itself at LINEAR_PT_VIRT_START, ``l2e_from_pfn(pfn, __PAGE_HYPERVISOR)``, for which no
    reference is taken (it is not a guest slot: get_page_from_l2e never sees it, nor does
    free_l2_table's put_page_from_l2e). So two directories of one domain differ in that slot.

    Departures: the self-map is read-only (``LINEAR_PT_FLAGS`` says why), and so is the
    per-domain area (Xen's __PAGE_HYPERVISOR is RW there too: the model's hypervisor writes the
    per-domain tables directly, never through this mapping). Xen's other slots (its heap, the
    frame table, the writable M2P, the map cache, ioremap) stay empty: the model's hypervisor
    runs in Python and needs none of them, and under an emulator that enforces no segment
    limits they would expose Xen's memory to ring 1.
    """
    slots = [0] * abi.L2_PAGETABLE_XEN_SLOTS
    first = abi.L2_PAGETABLE_FIRST_XEN_SLOT
    m2p_slot = abi.MACH2PHYS_VIRT_START >> abi.L2_PAGETABLE_SHIFT
    for k, l1 in enumerate(m2p_l1):
        slots[m2p_slot - first + k] = l2e_from_pfn(l1, __PAGE_HYPERVISOR_RO)
    slots[abi.LINEAR_PT_SLOT - first] = l2e_from_pfn(l2mfn, LINEAR_PT_FLAGS)
    for k, l1 in enumerate(perdomain_pt):
        slots[abi.PERDOMAIN_SLOT - first + k] = l2e_from_pfn(l1, __PAGE_HYPERVISOR_RO)
    return slots


# The functions MM.mmu_update_common stands for, as this module defines them: replacing any of
# them (on the class or on one machine) sends every request through mmu_update_one.
_FUSED_REFERENCE: dict[str, object] = {
    name: getattr(MM, name) for name in (
        "mmu_update_one", "normal_pt_update", "get_page_from_pagenr", "get_page",
        "put_page", "get_page_type", "put_page_type", "foreigndom", "mod_l1_entry",
        "fast_path", "get_page_from_l1e", "get_page_and_type", "put_page_from_l1e",
        "put_l1e_reference", "put_page_and_type", "type_change_flush", "alloc_page_type",
        "free_page_type")
}
# The same functions as a class has them now, in one C call: asked at every mmu_update.
_fused_functions = operator.attrgetter(*_FUSED_REFERENCE)
_FUSED_FUNCTIONS = tuple(_FUSED_REFERENCE.values())
# The functions refmodel/mmfast.c is the twin of: replacing either (on the class or on one
# machine) keeps every record in the Python.
_TWIN_REFERENCE: dict[str, object] = {
    name: getattr(MM, name) for name in ("mmu_update_common", "_drops_plainly")}


def _twin_is_current(mm: MM) -> bool:
    return mm.__dict__.keys().isdisjoint(_TWIN_REFERENCE) and all(
        getattr(type(mm), name) is f for name, f in _TWIN_REFERENCE.items())

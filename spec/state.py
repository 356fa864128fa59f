"""The state-access interface every invariant is written against.

An invariant is defined once, as a function of a ``StateView``. The reference model provides a
concrete view (its frame table and machine memory: quantifiers are loops over real frames and
present entries, formulas are Python booleans); the proofs provide a symbolic view (Z3 terms:
quantifiers are ``ForAll``, formulas are Z3 expressions). The interface is the vocabulary of
Xen's ``page_info`` (xen/include/asm-x86/mm.h) plus page-table contents, vCPU base pointers and
the CPU state Xen keeps per vCPU in ``arch_vcpu.guest_context`` (xen/include/public/arch-x86_32.h,
struct vcpu_guest_context: trap_ctxt, kernel_ss, event and failsafe callback selectors,
gdt_frames).

Connectives take their second operand as a thunk so that the concrete view can short-circuit:
an implication whose premise is false never evaluates its conclusion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from xenspec.spec.paging import Paging

Word = Any  # int (concrete) or z3.BitVecRef (symbolic)
Bool = Any  # bool (concrete) or z3.BoolRef (symbolic)


class StateView(Protocol):
    """What an invariant may ask of a hypervisor state."""

    # The paging structure of the state's profile (spec.paging: NATIVE or COMPAT_PAE).
    paging: Paging

    # --- frames (page_info) -----------------------------------------------------------------
    def owner(self, mfn: Word) -> Word: ...
    def type(self, mfn: Word) -> Word: ...
    def type_count(self, mfn: Word) -> Word: ...
    def count(self, mfn: Word) -> Word: ...
    def validated(self, mfn: Word) -> Bool: ...
    def pinned(self, mfn: Word) -> Bool: ...
    def allocated(self, mfn: Word) -> Bool: ...
    def mfn_valid(self, mfn: Word) -> Bool: ...
    def is_privileged(self, domid: Word) -> Bool: ...
    def pae_xen_l2(self, mfn: Word) -> Bool:
        """The frame has the type flag PGT_pae_xen_l2 (compat PAE: the L2 that L3 slot 3
        names, holding Xen's slots; never set on a native state)."""
        ...

    def hypervisor_writes(self, mfn: Word) -> Bool:
        """The hypervisor writes into the frame on a guest's behalf: a Xen heap page shared
        with a guest (shared_info, grant-table frames: domain.c/mm.c share_xen_page_with_guest)
        or a frame a back end holds mapped (console ring, xenstore page)."""
        ...

    # --- memory ------------------------------------------------------------------------------
    def entry(self, mfn: Word, index: Word) -> Word: ...
    def xen_l2e(self, l2mfn: Word, index: Word) -> Word:
        """The entry Xen itself keeps in hypervisor slot ``index`` of page directory ``l2mfn``:
        its domain's entry, except that the linear page-table slot maps the directory itself
        (the rule is ``spec.pagetable.xen_l2_slot``)."""
        ...

    # --- vCPUs -------------------------------------------------------------------------------
    def base(self, vcpu: Word) -> Word: ...
    def vcpu_domain(self, vcpu: Word) -> Word: ...

    # --- vCPU CPU state (vcpu_guest_context) -------------------------------------------------
    def trap_cs(self, vcpu: Word, vector: Word) -> Word:
        """The code selector of the vCPU's virtual IDT entry ``vector`` (0: no handler)."""
        ...

    def event_cs(self, vcpu: Word) -> Word: ...
    def failsafe_cs(self, vcpu: Word) -> Word: ...
    def kernel_ss(self, vcpu: Word) -> Word:
        """The ring-1 stack selector of stack_switch (0: none yet)."""
        ...

    def gdt_frame(self, vcpu: Word, k: Word) -> Word:
        """Frame ``k`` (0..15) of the vCPU's GDT as set_gdt installed it (0: none)."""
        ...

    def gdt_referenced(self, mfn: Word) -> Bool:
        """Some vCPU's GDT holds a type reference on the frame (mm.c, set_gdt)."""
        ...

    # --- grant tables (grant_table.c: the grantee's maptrack) --------------------------------
    def gnt_slot(self, mfn: Word, index: Word) -> Word:
        """The handle of the table owner's that the grant-mapped PTE (mfn, index) belongs to
        (meaningful only for such a PTE)."""
        ...

    def mt_flags(self, domid: Word, handle: Word) -> Word:
        """GNTMAP_* flags of the domain's grant handle (0: free)."""
        ...

    def mt_dom(self, domid: Word, handle: Word) -> Word:
        """The granting domain of the domain's grant handle."""
        ...

    def mt_frame(self, domid: Word, handle: Word) -> Word: ...
    def mt_pte(self, domid: Word, handle: Word) -> tuple[Word, Word]:
        """(L1 frame, index) of the PTE the handle's host mapping wrote."""
        ...

    # --- quantifiers -------------------------------------------------------------------------
    def forall_frames(self, body: Callable[[Word], Bool]) -> Bool: ...
    def forall_vcpus(self, body: Callable[[Word], Bool]) -> Bool: ...
    def forall_present_entries(
        self, mfn: Word, lo: int, hi: int, body: Callable[[Word, Word], Bool]
    ) -> Bool:
        """For every index i in [lo, hi) whose entry e is present: body(i, e)."""
        ...

    def forall_indices(self, lo: int, hi: int, body: Callable[[Word], Bool]) -> Bool: ...
    def forall_descriptors(self, mfn: Word, body: Callable[[Word, Word], Bool]) -> Bool:
        """For each of the 512 descriptors of frame ``mfn`` (words 2i, 2i+1): body(lo, hi)."""
        ...

    # --- connectives -------------------------------------------------------------------------
    def and_(self, *terms: Bool) -> Bool: ...
    def or_(self, *terms: Bool) -> Bool: ...
    def not_(self, a: Bool) -> Bool: ...
    def implies(self, premise: Bool, conclusion: Callable[[], Bool]) -> Bool: ...

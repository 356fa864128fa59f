"""Deliberately broken implementations: the reference model with one rule removed or altered.

They show that the conformance suite has teeth: ``pytest conformance/`` must fail on each, and
a failing test must name a clause the breakage is in (``Broken.breaks``). Each is a factory
usable as ``--implementation=xenspec.conformance.broken:<name>``; ``xenspec kill-rate`` runs
the suite against all of them and reports which were caught.

A breakage is applied to one machine only (its ``MM``, ``Traps`` or ``Desc`` instance), never
to the classes, so the reference model running beside it in the differential suite is intact.
The rules broken are those of xen/arch/x86/mm.c, traps.c and x86_32/traps.c named in each
docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import Any

from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.domain import Domain, Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_BUDGET, HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.mm import MM
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT, is_guest_l2_slot, pte_get_pfn, pte_present


@dataclass(frozen=True)
class Broken:
    name: str
    breaks: tuple[str, ...]  # the clauses whose rule is broken: the hypercall, the invariant
    what: str
    setup: Callable[[Hypervisor, PVPlatform], None]

    def __call__(self) -> ReferenceImplementation:
        impl = ReferenceImplementation(self.setup)
        impl.name = f"broken:{self.name}"
        return impl


def _patch(obj: object, name: str, fn: Callable[..., Any]) -> None:
    setattr(obj, name, MethodType(fn, obj))


def _replace_hypercall(
    hv: Hypervisor, owner: object, name: str, fn: Callable[..., int]
) -> None:
    """Install ``fn(self, v, ...)`` as the handler, bound as the original is (the dispatcher
    reads a handler's argument count from its code)."""
    hv.hypercall_table[HYPERCALL_NUMBERS[name]] = MethodType(fn, owner)


# --- the MMU (mm.c) ------------------------------------------------------------------------------
def _native_mm(hv: Hypervisor) -> MM:
    """The 2-level MMU these broken implementations change (native-3.0.4 profile)."""
    assert isinstance(hv.mm, MM), "broken implementations are of the native-3.0.4 profile"
    return hv.mm


def _xen_slots_writable(hv: Hypervisor, pv: PVPlatform) -> None:
    """mod_l2_entry without is_guest_l2_slot: the hypervisor's slots take guest entries."""
    original = _native_mm(hv).mod_l2_entry

    def mod_l2_entry(self: MM, l2mfn: int, index: int, nl2e: int, d: Domain) -> bool:
        if not is_guest_l2_slot(index):
            self.memory.write_entry(l2mfn, index, nl2e)
            return True
        return original(l2mfn, index, nl2e, d)

    _patch(hv.mm, "mod_l2_entry", mod_l2_entry)


def _linear_slot_shared(hv: Hypervisor, pv: PVPlatform) -> None:
    """alloc_l2_table writes one linear page-table entry into all of a domain's directories
    (vCPU 0's page directory once it has one) instead of each directory's map of itself; the
    implementation's own account of Xen's slots (``xen_l2_slots``) says the same, so only
    INV-HOLE's self-map clause can tell."""
    original = hv.xen_l2_slots

    def xen_l2_slots(self: Hypervisor, d: Domain, l2mfn: int) -> list[int]:
        base = d.vcpus[0].guest_table if d.vcpus else 0
        return original(d, base or l2mfn)

    _patch(hv, "xen_l2_slots", xen_l2_slots)


def _rw_map_takes_no_type(hv: Hypervisor, pv: PVPlatform) -> None:
    """get_page_from_l1e: a writable entry takes a general reference only, so a page table
    can be mapped writable."""
    def get_page_from_l1e(self: MM, l1e: int, d: Domain) -> bool:
        if not pte_present(l1e):
            return True
        mfn = pte_get_pfn(l1e)
        return self.memory.mfn_valid(mfn) and self.get_page(mfn, d)

    _patch(hv.mm, "get_page_from_l1e", get_page_from_l1e)


def _linear_map_writable(hv: Hypervisor, pv: PVPlatform) -> None:
    """get_linear_pagetable accepts a writable linear map of a page directory."""
    def get_linear_pagetable(self: MM, l2e: int, pfn: int, d: Domain) -> bool:
        return bool(pte_get_pfn(l2e) == pfn)

    _patch(hv.mm, "get_linear_pagetable", get_linear_pagetable)


def _owner_unchecked(hv: Hypervisor, pv: PVPlatform) -> None:
    """get_page does not check the owner: any allocated frame can be referenced."""
    def get_page(self: MM, mfn: int, d: Domain) -> bool:
        if self.frames.count[mfn] == 0:
            return False
        self.frames.count[mfn] += 1
        return True

    _patch(hv.mm, "get_page", get_page)


def _type_count_leak(hv: Hypervisor, pv: PVPlatform) -> None:
    """put_page_from_l1e forgets the type-count decrement of a writable entry."""
    def put_page_from_l1e(self: MM, l1e: int) -> None:
        if pte_present(l1e) and self.memory.mfn_valid(pte_get_pfn(l1e)):
            self.put_page(pte_get_pfn(l1e))

    _patch(hv.mm, "put_page_from_l1e", put_page_from_l1e)


def _stays_validated(hv: Hypervisor, pv: PVPlatform) -> None:
    """put_page_type never de-validates: a table whose last type reference goes keeps its
    type and its references."""
    def put_page_type(self: MM, mfn: int) -> None:
        self.frames.type_count[mfn] -= 1

    _patch(hv.mm, "put_page_type", put_page_type)


def _unpin_unchecked(hv: Hypervisor, pv: PVPlatform) -> None:
    """MMUEXT_UNPIN_TABLE does not check that the frame is pinned."""
    def unpin(self: MM, v: Vcpu, mfn: int, _arg2: int) -> bool:
        if not self.get_page_from_pagenr(mfn, v.domain):
            return False
        self.put_page_and_type(mfn)
        self.put_page(mfn)
        return True

    mm = _native_mm(hv)
    handlers = dict(mm._mmuext_handlers)
    handlers[abi.MMUEXT_UNPIN_TABLE] = unpin
    mm._mmuext_handlers = handlers  # type: ignore[misc]


def _baseptr_unvalidated(hv: Hypervisor, pv: PVPlatform) -> None:
    """MMUEXT_NEW_BASEPTR takes any frame the domain owns as its page directory, with a
    general and a type reference but no validation (mm.c new_guest_cr3 takes a
    PGT_root_page_table type reference, which validates). The domain builder is unchanged."""
    def new_baseptr(self: MM, v: Vcpu, mfn: int, _arg2: int) -> bool:
        if not self.get_page_from_pagenr(mfn, v.domain):
            return False
        self.frames.type_count[mfn] += 1
        old, v.guest_table = v.guest_table, mfn
        v.flush_tlb()
        if old:
            self.put_page_and_type(old)
        return True

    mm = _native_mm(hv)
    handlers = dict(mm._mmuext_handlers)
    handlers[abi.MMUEXT_NEW_BASEPTR] = new_baseptr
    mm._mmuext_handlers = handlers  # type: ignore[misc]


def _machphys_unchecked(hv: Hypervisor, pv: PVPlatform) -> None:
    """MMU_MACHPHYS_UPDATE does not check that the (foreign) domain owns the frame."""
    def machphys_update(self: MM, mfn: int, gpfn: int, d: Domain) -> bool:
        if not self.memory.mfn_valid(mfn):
            return False
        self.hv.set_gpfn_from_mfn(mfn, gpfn)
        return True

    _patch(hv.mm, "machphys_update", machphys_update)


def _efault_as_einval(hv: Hypervisor, pv: PVPlatform) -> None:
    """mmu_update reports an unreadable request array as -EINVAL instead of -EFAULT."""
    original = hv.mm.do_mmu_update

    def do_mmu_update(
        self: MM, v: Vcpu, ureqs: int, count: int, pdone: int, foreigndom: int
    ) -> int:
        rc = original(v, ureqs, count, pdone, foreigndom)
        return -abi.EINVAL if rc == -abi.EFAULT else rc

    _replace_hypercall(hv, hv.mm, "mmu_update", do_mmu_update)


def _writable_gdt_frame(hv: Hypervisor, pv: PVPlatform) -> None:
    """set_gdt takes the frames without a GDT type: a frame mapped writable becomes a GDT."""
    original = hv.mm.get_page_and_type_from_pagenr

    def get_page_and_type_from_pagenr(mfn: int, type: PGT, d: Domain) -> bool:
        return original(mfn, PGT.writable_page if type == PGT.gdt_page else type, d)

    hv.mm.get_page_and_type_from_pagenr = get_page_and_type_from_pagenr  # type: ignore[method-assign]


# --- the CPU (x86_32/traps.c, mm.c descriptors) --------------------------------------------------
def _dpl0_descriptor(hv: Hypervisor, pv: PVPlatform) -> None:
    """update_descriptor stores the descriptor as given: a DPL-0 segment is not raised to
    DPL 1 (mm.c check_descriptor)."""
    original = pv.desc.do_update_descriptor

    def do_update_descriptor(
        self: object, v: Vcpu, pa_lo: int, pa_hi: int, lo: int, hi: int
    ) -> int:
        rc = original(v, pa_lo, pa_hi, lo, hi)
        if rc == 0:
            data = lo.to_bytes(4, "little") + hi.to_bytes(4, "little")
            hv.memory.write(pa_lo | pa_hi << 32, data)
        return rc

    _replace_hypercall(hv, pv.desc, "update_descriptor", do_update_descriptor)


def _handler_selector_unfixed(hv: Hypervisor, pv: PVPlatform) -> None:
    """set_trap_table keeps a handler's RPL-0 selector: the handler would run in ring 0
    (x86_32/traps.c fixup_guest_code_selector)."""
    original = pv.traps.do_set_trap_table

    def do_set_trap_table(self: object, v: Vcpu, traps: int) -> int:
        rc = original(v, traps)  # 0 also when continued (set_trap_table's number is 0)
        size, va = abi.TRAP_INFO_T.size, traps
        # The entries this invocation loaded: up to a terminator or the budget of one piece.
        for _ in range(HYPERCALL_BUDGET if rc == 0 and traps else 0):
            raw = hv.copy_from_guest(v, va, size)
            if raw is None:
                break
            vector, flags, cs, address = abi.TRAP_INFO_T.unpack(raw)
            if address == 0:
                break
            ti = pv.arch(v).trap_ctxt[vector]
            pv.arch(v).trap_ctxt[vector] = type(ti)(flags, cs, address)
            va += size
        return rc

    _replace_hypercall(hv, pv.traps, "set_trap_table", do_set_trap_table)


def _pf_frame_without_error_code(hv: Hypervisor, pv: PVPlatform) -> None:
    """A page fault is bounced without its error code: the guest's frame is one word short
    (x86_32/traps.c create_bounce_frame, TBF_EXCEPTION_ERRCODE)."""
    original = pv.traps.bounce

    def bounce(self: Any, v: Vcpu, vector: int, error_code: int | None, regs: Any) -> None:
        original(v, vector, None if vector == abi.TRAP_page_fault else error_code, regs)

    _patch(pv.traps, "bounce", bounce)


def _cr2_not_reported(hv: Hypervisor, pv: PVPlatform) -> None:
    """A page fault is bounced without the faulting address in vcpu_info.arch.cr2."""
    original = pv.vcpu_info_write32

    def vcpu_info_write32(self: Any, v: Vcpu, off: int, value: int) -> None:
        if off != abi.VCPU_INFO_arch_cr2:
            original(v, off, value)

    _patch(pv, "vcpu_info_write32", vcpu_info_write32)


def _softint_ignores_dpl(hv: Hypervisor, pv: PVPlatform) -> None:
    """INT n is delivered whatever DPL the guest registered the vector with (traps.c,
    permit_softint): ring 3 can raise any of its kernel's exceptions."""
    def software_interrupt(self: Any, v: Vcpu, vector: int, regs: Any) -> None:
        if vector != abi.HYPERCALL_VECTOR:
            self.bounce(v, vector, None, regs)

    _patch(pv.traps, "software_interrupt", software_interrupt)


def _io_ignores_ring(hv: Hypervisor, pv: PVPlatform) -> None:
    """guest_io_okay compares the virtual IOPL with the kernel's level whatever the ring
    (traps.c, KERNEL_MODE ? 1 : 3): ring 3 gets the kernel's I/O privilege."""
    original = pv.emulate.guest_io_okay

    def guest_io_okay(self: Any, v: Vcpu, regs: CpuUserRegs, port: int, size: int) -> bool:
        as_kernel = CpuUserRegs(**vars(regs))
        as_kernel.cs = (regs.cs & ~3) | 1
        return original(v, as_kernel, port, size)

    _patch(pv.emulate, "guest_io_okay", guest_io_okay)


def _user_mode_emulated_as_kernel(hv: Hypervisor, pv: PVPlatform) -> None:
    """emulate_privileged_op without its "only from the guest kernel" test: ring 3 may read
    and write control registers and MSRs."""
    original = pv.emulate.emulate_privileged_op

    def emulate_privileged_op(self: Any, v: Vcpu, regs: CpuUserRegs) -> bool:
        ring = regs.cs & 3
        regs.cs = (regs.cs & ~3) | 1
        try:
            return bool(original(v, regs))
        finally:
            regs.cs = (regs.cs & ~3) | ring

    _patch(pv.emulate, "emulate_privileged_op", emulate_privileged_op)


# Each is a module attribute, for --implementation=xenspec.conformance.broken:<name>.
xen_slots_writable = Broken(
    "xen_slots_writable", ("mmu_update/NORMAL_PT_UPDATE", "INV-HOLE"),
    "a guest may write the hypervisor's page-directory slots", _xen_slots_writable)
linear_slot_shared = Broken(
    "linear_slot_shared", ("mmuext_op/PIN_L2_TABLE", "INV-HOLE"),
    "every page directory of a domain gets the same linear page-table entry, not its own",
    _linear_slot_shared)
pagetable_mapped_writable = Broken(
    "pagetable_mapped_writable", ("mmu_update/NORMAL_PT_UPDATE", "INV-NOWRPT"),
    "a writable mapping takes no writable type: page tables can be mapped writable",
    _rw_map_takes_no_type)
linear_map_writable = Broken(
    "linear_map_writable", ("mmu_update/NORMAL_PT_UPDATE", "INV-NOWRPT"),
    "a linear page-directory map may be writable", _linear_map_writable)
owner_unchecked = Broken(
    "owner_unchecked", ("INV-OWN", "INV-ISO"),
    "get_page does not check the owner", _owner_unchecked)
type_count_leak = Broken(
    "type_count_leak", ("INV-COUNT",),
    "dropping a writable mapping forgets the type-count decrement", _type_count_leak)
stays_validated = Broken(
    "stays_validated", ("INV-VALID",),
    "a table whose last type reference goes stays validated", _stays_validated)
unpin_unchecked = Broken(
    "unpin_unchecked", ("mmuext_op/UNPIN_TABLE",),
    "UNPIN_TABLE of a frame that is not pinned succeeds", _unpin_unchecked)
baseptr_unvalidated = Broken(
    "baseptr_unvalidated", ("mmuext_op/NEW_BASEPTR", "INV-BASE"),
    "NEW_BASEPTR accepts a frame that is not a validated page directory", _baseptr_unvalidated)
machphys_unchecked = Broken(
    "machphys_unchecked", ("mmu_update/MACHPHYS_UPDATE", "INV-ISO"),
    "MACHPHYS_UPDATE of another domain's frame succeeds", _machphys_unchecked)
efault_as_einval = Broken(
    "efault_as_einval", ("mmu_update/NORMAL_PT_UPDATE",),
    "an unreadable request array gives -EINVAL, not -EFAULT", _efault_as_einval)
writable_gdt_frame = Broken(
    "writable_gdt_frame", ("set_gdt", "INV-NOWRPT"),
    "set_gdt accepts frames without giving them the GDT type", _writable_gdt_frame)
dpl0_descriptor = Broken(
    "dpl0_descriptor", ("update_descriptor", "INV-PRIV"),
    "update_descriptor stores a DPL-0 descriptor as given", _dpl0_descriptor)
handler_selector_unfixed = Broken(
    "handler_selector_unfixed", ("set_trap_table", "INV-PRIV"),
    "set_trap_table keeps an RPL-0 handler selector", _handler_selector_unfixed)
pf_frame_without_error_code = Broken(
    "pf_frame_without_error_code", ("bounce/page_fault",),
    "a page fault is bounced without its error code", _pf_frame_without_error_code)
cr2_not_reported = Broken(
    "cr2_not_reported", ("bounce/page_fault",),
    "a page fault is bounced without the faulting address in CR2", _cr2_not_reported)
softint_ignores_dpl = Broken(
    "softint_ignores_dpl", ("syscall/fast_path",),
    "INT n reaches the guest kernel whatever the vector's DPL", _softint_ignores_dpl)
io_ignores_ring = Broken(
    "io_ignores_ring", ("privileged/emulation",),
    "ring 3 gets the kernel's I/O privilege (virtual IOPL 1 suffices)", _io_ignores_ring)
user_mode_emulated_as_kernel = Broken(
    "user_mode_emulated_as_kernel", ("privileged/emulation", "privileged/instruction"),
    "ring 3's CLTS, MOV CR, MSR instructions are emulated as the kernel's",
    _user_mode_emulated_as_kernel)

BROKEN: tuple[Broken, ...] = (
    xen_slots_writable,
    linear_slot_shared,
    pagetable_mapped_writable,
    linear_map_writable,
    owner_unchecked,
    type_count_leak,
    stays_validated,
    unpin_unchecked,
    baseptr_unvalidated,
    machphys_unchecked,
    efault_as_einval,
    writable_gdt_frame,
    dpl0_descriptor,
    handler_selector_unfixed,
    pf_frame_without_error_code,
    cr2_not_reported,
    softint_ignores_dpl,
    io_ignores_ring,
    user_mode_emulated_as_kernel,
)

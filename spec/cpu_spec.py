"""Transition specifications of the CPU-interface hypercalls, in the style of ``spec.mm_spec``.

Each ``spec_<hypercall>`` takes a symbolic state and symbolic arguments and returns a
``Transition`` (success condition, new state, return value). The rules are Xen 3.0.4's:

- set_trap_table (xen/arch/x86/traps.c, do_set_trap_table): trap_info entries are read until
  one whose address is 0; each is stored in the vCPU's virtual IDT at its vector with its code
  selector fixed up; a NULL table clears all NR_VECTORS entries. Specified one entry at a time
  (a call is their sequence), as the MMU batches are.
- set_callbacks (xen/arch/x86/x86_32/traps.c, do_set_callbacks and register_guest_callback):
  both callback selectors are fixed up and stored; the call returns 0.
- stack_switch (xen/arch/x86/x86_32/mm.c, do_stack_switch): the ring-1 stack selector is fixed
  up (fixup_guest_stack_selector) and stored with the stack pointer; the call returns 0. Xen
  3.0.0 and 3.0.1 refused an SS whose RPL was not 1 (-EPERM); 3.0.2 and later fix it up.
- iret (xen/arch/x86/x86_32/traps.c, do_iret): pops EAX, EIP, CS, EFLAGS [, ESP, SS] from the
  guest stack; the domain is crashed (domain_crash) when the 40-byte worst-case frame is not
  below HYPERVISOR_VIRT_START (access_ok), a word cannot be read, or CS is ring 0. EFLAGS is
  returned with IOPL 0 and IF set; the frame's IF becomes the event mask.
- set_gdt (xen/arch/x86/mm.c, do_set_gdt and set_gdt): at most FIRST_RESERVED_GDT_ENTRY entries
  (-EINVAL); each listed frame takes a GDT type reference (get_page_and_type), whose first use
  validates the frame (alloc_segdesc_page: every descriptor passes ``spec.desc`` and is stored
  fixed up); then the old GDT's references are dropped and the frames installed.
- update_descriptor (xen/arch/x86/mm.c, do_update_descriptor): an 8-aligned machine address in a
  frame of the caller, a descriptor that passes the rule; a GDT or LDT frame keeps its type,
  any other frame must take the writable type; the fixed-up descriptor is written.

Selector fix-up: xen/include/asm-x86/desc.h, __fixup_guest_selector (3.0.2 and later) raises an
RPL below GUEST_KERNEL_RPL (1 on x86_32) to it; selectors are kept as the 16 bits the CPU loads.

A crash is not state the specification holds (it has no run state): a failing iret leaves the
spec's state as it was and the refinement check compares the crash itself. Reading arguments
from guest memory (-EFAULT) is outside these specs, as for the MMU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import z3

from xenspec.spec import abi, symbolic
from xenspec.spec.branches import PASS, Check, all_of, cases, require
from xenspec.spec.desc import descriptor_check, descriptor_rule
from xenspec.spec.mm_spec import (
    GDT_FRAMES,
    Branch,
    Transition,
    can_take_type,
    fresh_set,
    in_use,
    mfn_valid,
    retype_writable,
)
from xenspec.spec.pagetable import PGT
from xenspec.spec.symbolic import SymState, SymView, W, bv, descriptor_pair, forall, fresh_name

Word = Any
Bool = Any
GUEST_KERNEL_RPL = 1  # asm-x86/desc.h (x86_32)
# do_set_gdt: the frame list holds at most this many frames (14: FIRST_RESERVED_GDT_ENTRY / 512).
MAX_GDT_LIST = abi.MAX_GUEST_GDT_ENTRIES // 512


def fixup_guest_selector(sel: Word) -> Word:
    """__fixup_guest_selector: RPL 0 becomes GUEST_KERNEL_RPL; the CPU's 16 bits are kept."""
    sel16 = sel & 0xFFFF
    return z3.If((sel16 & 3) == 0, (sel16 & 0xFFFC) | GUEST_KERNEL_RPL, sel16)


def _store_row(arr: z3.ArrayRef, v: Word, row: Any) -> z3.ArrayRef:
    """Replace row ``v`` of a (vcpu, k) array by ``row(k)``."""
    x, k = z3.BitVec("x", 32), z3.BitVec("k", 32)
    return z3.Lambda([x, k], z3.If(x == v, row(k), z3.Select(arr, x, k)))


def selector_fixup(name: str, sel: Word) -> Check:
    """__fixup_guest_selector's two ways: an RPL-0 selector is raised to GUEST_KERNEL_RPL
    (``<name>_rpl0``), any other is kept (``<name>_rpl``). Neither fails (Xen 3.0.2 and later)."""
    return cases((f"{name}_rpl0", (sel & 3) == 0, PASS), (f"{name}_rpl", None, PASS))


def _always(new: SymState, check: Check = PASS) -> Transition:
    """A call that cannot fail (reading its arguments aside); ``check`` names its ways."""
    return Transition(check.holds, new, bv(0), bv(-abi.EFAULT), check=check)


# ----------------------------------------------------------------------------------------------
# Trap table, callbacks, kernel stack.
# ----------------------------------------------------------------------------------------------
def spec_set_trap_table_entry(
    s: SymState, v: Word, vector: Word, flags: Word, cs: Word, address: Word
) -> Transition:
    """One trap_info entry (vector and flags are bytes, cs 16 bits): address 0 ends the table
    and stores nothing; any other entry replaces trap_ctxt[vector], its selector fixed up."""
    n = vector & 0xFF
    end = address == 0

    def put(arr: z3.ArrayRef, value: Word) -> z3.ArrayRef:
        return z3.Store(arr, v, n, z3.If(end, z3.Select(arr, v, n), value))

    new = s.evolve(
        trap_cs=put(s.trap_cs, fixup_guest_selector(cs)),
        trap_addr=put(s.trap_addr, address),
        trap_flags=put(s.trap_flags, flags & 0xFF),
    )
    return _always(new, cases(("end", end, PASS), ("store", None, selector_fixup("cs", cs))))


def spec_set_trap_table_null(s: SymState, v: Word) -> Transition:
    """A NULL table: every entry of the vCPU's virtual IDT is cleared."""
    def zero(k: Word) -> Word:
        return bv(0)

    return _always(s.evolve(
        trap_cs=_store_row(s.trap_cs, v, zero), trap_addr=_store_row(s.trap_addr, v, zero),
        trap_flags=_store_row(s.trap_flags, v, zero),
    ))


def spec_set_callbacks(
    s: SymState, v: Word, event_cs: Word, event_eip: Word, failsafe_cs: Word, failsafe_eip: Word
) -> Transition:
    """Both callbacks are registered, their selectors fixed up; the call returns 0."""
    return _always(s.evolve(
        event_cs=z3.Store(s.event_cs, v, fixup_guest_selector(event_cs)),
        event_eip=z3.Store(s.event_eip, v, event_eip),
        failsafe_cs=z3.Store(s.failsafe_cs, v, fixup_guest_selector(failsafe_cs)),
        failsafe_eip=z3.Store(s.failsafe_eip, v, failsafe_eip),
    ), all_of(selector_fixup("event_cs", event_cs), selector_fixup("failsafe_cs", failsafe_cs)))


def spec_stack_switch(s: SymState, v: Word, ss: Word, esp: Word) -> Transition:
    """The ring-1 stack for bounces from ring 3: SS fixed up; the call returns 0."""
    return _always(s.evolve(
        kernel_ss=z3.Store(s.kernel_ss, v, fixup_guest_selector(ss)),
        kernel_sp=z3.Store(s.kernel_sp, v, esp),
    ), selector_fixup("ss", ss))


# ----------------------------------------------------------------------------------------------
# iret.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IretFrame:
    """What do_iret reads at the guest's ESP: the words, and whether they could be read."""

    eax: Word
    eip: Word
    cs: Word
    eflags: Word
    outer_esp: Word  # popped only on a return to ring 2 or 3
    outer_ss: Word
    readable: Bool  # the first four words
    outer_readable: Bool


@dataclass(frozen=True)
class IretResult:
    ok: Bool  # False: the domain is crashed
    eip: Word
    cs: Word
    eflags: Word
    esp: Word
    ss: Word
    upcall_mask: Word  # vcpu_info.evtchn_upcall_mask afterwards


def iret_check(esp: Word, f: IretFrame) -> Check:
    """do_iret's checks in its order: the 40-byte worst-case frame below
    HYPERVISOR_VIRT_START (access_ok), EAX, EIP, CS and EFLAGS readable, CS not ring 0, and
    for a return to ring 2 or 3 the outer ESP and SS readable. A failure crashes the domain."""
    ring = f.cs & 3
    return all_of(
        require("fits", z3.ULE(esp, bv(abi.HYPERVISOR_VIRT_START - 40))),
        require("readable", f.readable), require("ring0", ring != 0),
        cases(("ring1", ring == 1, PASS),
              ("outer", None, require("outer_readable", f.outer_readable))),
    )


def iret_result(esp: Word, ss: Word, f: IretFrame) -> IretResult:
    """do_iret on a frame at ``esp`` (the guest's SS ``ss``)."""
    cs = f.cs & 0xFFFF
    ring = cs & 3
    outer = ring != 1
    ok = iret_check(esp, f).holds
    # Xen clears IOPL only; VM86 returns are not modelled, so VM is cleared as well.
    eflags = (f.eflags & ~(abi.X86_EFLAGS_IOPL | abi.X86_EFLAGS_VM)) | abi.X86_EFLAGS_IF
    return IretResult(
        ok=ok, eip=f.eip, cs=cs, eflags=eflags,
        esp=z3.If(outer, f.outer_esp, esp + 16), ss=z3.If(outer, f.outer_ss & 0xFFFF, ss),
        upcall_mask=z3.If((f.eflags & abi.X86_EFLAGS_IF) != 0, bv(0), bv(1)),
    )


def spec_iret(s: SymState, v: Word, esp: Word, ss: Word, f: IretFrame) -> Transition:
    """iret changes the guest's registers, none of the spec's state; on success it returns
    the popped EAX; otherwise the domain is crashed (the call returns 0)."""
    check = iret_check(esp, f)
    return Transition(check.holds, s, f.eax, bv(0), check=check)


# ----------------------------------------------------------------------------------------------
# Descriptor tables.
# ----------------------------------------------------------------------------------------------
def descriptors_pass(s: SymState, x: Word) -> Bool:
    """alloc_segdesc_page: every descriptor of frame ``x`` passes the rule."""
    return SymView(s).forall_descriptors(x, lambda lo, hi: descriptor_rule(lo, hi)[0])


def take_gdt_type(s: SymState, typed: Any, failed: Any) -> tuple[SymState, Bool]:
    """Frames in ``typed`` (a predicate) take the GDT type, validated and fixed up where they
    were no GDT frame in use; frames in ``failed`` lose their type (get_page_type resets the
    type of a frame whose validation failed). Returns the state and the constraints that
    define its memory (a fresh array: the fixed-up words are stated per descriptor, so that
    the solver meets the descriptor rule only where a goal looks at a descriptor)."""
    h = z3.BitVec("h", 32)

    def fresh(x: Word) -> Bool:
        return z3.And(typed(x), z3.Not(in_use(s, x, PGT.gdt_page)))

    concrete = symbolic.CONCRETE
    mem = fixed_up_words(s, fresh) if concrete else z3.Array(fresh_name("gdt_mem"), W, W, W)
    new = s.evolve(
        type=z3.Lambda([h], z3.If(typed(h), bv(PGT.gdt_page),
                                  z3.If(failed(h), bv(PGT.none), s.type[h]))),
        validated=z3.Lambda([h], z3.And(z3.Or(typed(h), s.validated[h]), z3.Not(failed(h)))),
        mem=mem,
    )
    return new, z3.BoolVal(True) if concrete else fixed_up_memory(s, mem, fresh)


def fixed_up_words(s: SymState, fresh: Any) -> z3.ArrayRef:
    """The array that ``fixed_up_memory`` defines, as a function of ``s`` (for concrete
    states, ``symbolic.CONCRETE``): a word of a frame in ``fresh`` below entry 1024 is its
    descriptor's fixed-up word, any other word is the old one."""
    h, j = z3.BitVec("h", 32), z3.BitVec("j", 32)
    even = j & ~1
    _, fixed_lo, fixed_hi = descriptor_rule(z3.Select(s.mem, h, even),
                                            z3.Select(s.mem, h, even + 1))
    return z3.Lambda([h, j], z3.If(
        z3.And(fresh(h), z3.ULT(j, bv(abi.L1_PAGETABLE_ENTRIES))),
        z3.If((j & 1) == 0, fixed_lo, fixed_hi), z3.Select(s.mem, h, j)))


def fixed_up_memory(s: SymState, mem: z3.ArrayRef, fresh: Any) -> Bool:
    """``mem`` is ``s.mem`` with every descriptor of the frames in ``fresh`` as
    alloc_segdesc_page stores it (fixed up by the rule)."""
    h, j, j2 = (z3.BitVec(fresh_name("gdt"), 32) for _ in range(3))
    word = z3.Select(mem, h, j)
    same = z3.ForAll([h, j], z3.Implies(z3.Not(fresh(h)), word == z3.Select(s.mem, h, j)),
                     patterns=[word])
    lo, hi = z3.Select(mem, h, j), z3.Select(mem, h, j2)
    _, fixed_lo, fixed_hi = descriptor_rule(z3.Select(s.mem, h, j), z3.Select(s.mem, h, j2))
    fixed = z3.ForAll([h, j, j2], z3.Implies(
        z3.And(fresh(h), descriptor_pair(j, j2)), z3.And(lo == fixed_lo, hi == fixed_hi),
    ), patterns=[z3.MultiPattern(lo, hi)])
    return z3.And(same, fixed)


def gdt_frame_ok(s: SymState, d: Word, x: Word) -> Bool:
    """get_page_and_type(x, d, PGT_gdt_page): a frame of ``d`` that is a GDT frame already or
    has no type references and validates."""
    return z3.And(
        mfn_valid(s, x), s.owner[x] == d, can_take_type(s, x, PGT.gdt_page),
        z3.Or(in_use(s, x, PGT.gdt_page), descriptors_pass(s, x)),
    )


def spec_set_gdt(s: SymState, v: Word, frames: list[Word], entries: Word) -> Transition:
    """set_gdt with the frame list ``frames`` (MAX_GDT_LIST words; the first
    ceil(entries / 512) are read). On failure, frames listed before the failing one have taken
    the GDT type (Xen drops their references, not their type): the branch "refused", whose
    chosen sets say which frames kept the GDT type and which lost their type."""
    d = s.vcpu_domain[v]
    n = z3.UDiv(entries + 511, bv(512))
    listed = [(bv(k), x) for k, x in enumerate(frames)]

    def is_listed(h: Word) -> Bool:
        return z3.Or(*[z3.And(z3.ULT(k, n), h == x) for k, x in listed])

    fits = z3.ULE(entries, bv(abi.MAX_GUEST_GDT_ENTRIES))
    def row(k: Word) -> Word:
        out = bv(0)
        for kk, x in reversed(listed):
            out = z3.If(z3.And(k == kk, z3.ULT(kk, n)), x, out)
        return out

    # Every listed frame is a machine frame, and passes get_page_and_type (one quantifier over
    # the frames rather than one check per slot).
    valid = [z3.Implies(z3.ULT(k, n), mfn_valid(s, x)) for k, x in listed]
    ok = z3.And(fits, *valid, forall(("frame",), lambda h: z3.Implies(
        is_listed(h), gdt_frame_ok(s, d, h))))

    new_rows = _store_row(s.gdt_frame, v, row)
    released = fresh_set("gdt_released")
    h = z3.BitVec("h", 32)
    typed, memory = take_gdt_type(s, is_listed, lambda h: z3.BoolVal(False))
    installed = typed.evolve(
        gdt_frame=new_rows, gdt_ents=z3.Store(s.gdt_ents, v, entries),
        gdt_ref=z3.Lambda([h], z3.Or(is_listed(h), z3.And(s.gdt_ref[h], z3.Not(released[h])))),
    )
    # destroy_gdt drops the old GDT's references: a frame no vCPU's GDT names any more may lose
    # its last one (the set ``released``; Xen's count decides which do).
    release_ok = forall(("frame", "vcpu"), lambda g, w: z3.Implies(released[g], z3.And(*[
        z3.Select(new_rows, w, bv(k)) != g for k in range(GDT_FRAMES)
    ])))
    kept, lost = fresh_set("gdt_typed"), fresh_set("gdt_failed")
    choice = forall(("frame",), lambda h: z3.And(
        z3.Implies(kept[h], z3.And(is_listed(h), gdt_frame_ok(s, d, h), z3.Not(lost[h]))),
        z3.Implies(lost[h], z3.And(is_listed(h), mfn_valid(s, h), s.owner[h] == d,
                                   z3.Not(in_use(s, h, PGT.gdt_page)),
                                   can_take_type(s, h, PGT.gdt_page))),
    ))
    partial, partial_memory = take_gdt_type(s, lambda h: kept[h], lambda h: lost[h])
    # Why a list within the limit is refused, named by the first of set_gdt's checks that
    # some listed frame fails (the frame Xen stops at fails that check or an earlier one of
    # its own): not a machine frame (mfn_valid), not the caller's (get_page), held with
    # another type (get_page_type), or a descriptor the rule refuses (alloc_segdesc_page).
    def each_listed(cond: Any) -> Bool:
        return forall(("frame",), lambda h: z3.Implies(is_listed(h), cond(h)))

    # (Named aside: the proofs use only ``ok``, and their obligations keep their names.)
    with symbolic.aside():
        why = all_of(
            require("mfn_valid", z3.And(*valid)),
            require("owner", each_listed(lambda h: s.owner[h] == d)),
            require("type", each_listed(lambda h: can_take_type(s, h, PGT.gdt_page))),
            require("descriptors", each_listed(lambda h: z3.Or(in_use(s, h, PGT.gdt_page),
                                                                descriptors_pass(s, h)))),
        )
    refused = Branch("refused", z3.And(fits, z3.Not(ok)), partial, bv(-abi.EINVAL),
                     z3.And(choice, partial_memory), reasons=why.fails)
    # Beyond FIRST_RESERVED_GDT_ENTRY entries the call fails before it reads a frame.
    check = Check(ok, (("", ok),), (("entries", z3.Not(fits)),))
    return Transition(ok, installed, bv(0), bv(-abi.EINVAL), z3.And(release_ok, memory),
                      others=(refused,), check=check)


def spec_update_descriptor(s: SymState, v: Word, pa: Word, lo: Word, hi: Word) -> Transition:
    """Write the fixed-up descriptor (lo, hi) at machine address ``pa`` (64 bits; x86_32 Xen
    keeps the frame number in an unsigned long, so bits 12..43 name the frame). The checks in
    do_update_descriptor's order: 8-aligned, a machine frame, the descriptor rule, a frame of
    the caller (get_page), then the frame's type: a GDT or LDT frame keeps it (its type count
    is taken, which cannot fail: such a frame is validated, INV-PRIV), any other frame must
    take the writable type (get_page_type)."""
    d = s.vcpu_domain[v]
    f = z3.Extract(43, 12, pa)
    i = z3.ZeroExt(22, z3.Extract(11, 2, pa))
    _, new_lo, new_hi = descriptor_rule(lo, hi)
    is_desc = z3.Or(s.type[f] == int(PGT.gdt_page), s.type[f] == int(PGT.ldt_page))
    check = all_of(
        require("align", z3.Extract(2, 0, pa) == 0), require("mfn_valid", mfn_valid(s, f)),
        descriptor_check(lo, hi), require("owner", s.owner[f] == d),
        cases(("gdt", s.type[f] == int(PGT.gdt_page), PASS),
              ("ldt", s.type[f] == int(PGT.ldt_page), PASS),
              ("writable", s.type[f] == int(PGT.writable_page), PASS),
              ("retype", None, require("writable_type",
                                        can_take_type(s, f, PGT.writable_page)))),
    )
    h = z3.BitVec("h", 32)
    r = z3.Lambda([h], z3.And(h == f, z3.Not(is_desc), s.type[f] != int(PGT.writable_page)))
    written = z3.Store(z3.Store(s.mem, f, i, new_lo), f, i + 1, new_hi)
    new = retype_writable(s, r).evolve(mem=written)
    return Transition(check.holds, new, bv(0), bv(-abi.EINVAL), check=check)


def spec_callback_op_register(
    s: SymState, v: Word, vcpu_id: Word, type_: Word, cs: Word, eip: Word
) -> Transition:
    """callback_op(CALLBACKOP_register) (x86_32/traps.c, do_callback_op and
    register_guest_callback, 3.0.4) from vCPU ``v``, number ``vcpu_id`` of its domain: an
    event or failsafe callback is stored as set_callbacks stores it, the other callback kept;
    the call returns 0. The NMI callback (common/kernel.c, register_guest_nmi_callback) is
    taken from vCPU 0 of domain 0 only, and refused (-EINVAL) from any other; its address is
    outside the spec's state. Every other type (sysenter needs
    CONFIG_X86_SUPERVISOR_MODE_KERNEL, syscall is x86_64's) is -ENOSYS."""
    kind = type_ & 0xFFFF
    event, failsafe = kind == abi.CALLBACKTYPE_event, kind == abi.CALLBACKTYPE_failsafe
    nmi = kind == abi.CALLBACKTYPE_nmi
    check = all_of(require("type", z3.Or(event, failsafe, nmi)), cases(
        ("event", event, selector_fixup("cs", cs)),
        ("failsafe", failsafe, selector_fixup("cs", cs)),
        ("nmi", None, require("dom0_vcpu0", z3.And(s.vcpu_domain[v] == 0, vcpu_id == 0))),
    ))
    both = spec_set_callbacks(s, v, cs, eip, cs, eip).new
    return Transition(check.holds, s.evolve(
        event_cs=z3.If(event, both.event_cs, s.event_cs),
        event_eip=z3.If(event, both.event_eip, s.event_eip),
        failsafe_cs=z3.If(failsafe, both.failsafe_cs, s.failsafe_cs),
        failsafe_eip=z3.If(failsafe, both.failsafe_eip, s.failsafe_eip),
    ), bv(0), z3.If(nmi, bv(-abi.EINVAL), bv(-abi.ENOSYS)), check=check)

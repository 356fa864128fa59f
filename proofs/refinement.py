"""Refinement: the reference model's MMU and CPU-interface handlers agree with their specs.

A concrete model state is encoded as a ``SymState`` of Z3 constants. The model runs one
hypercall; the spec of that hypercall is then asked whether, for some choice of its free
symbols (which tables a call validates or de-validates, which frames it retypes), it produces
exactly the model's outcome: the same return value and the same owner, type, validated and
pinned bits of every frame, the same entries and the same base pointers, and the same CPU state
of every vCPU (virtual IDT, callbacks, kernel stack, GDT frames and the GDT references).
Because the states are concrete and small, the solver decides the question over the machine's
frames, vCPUs and the entry indices in use: a plain satisfiability check.

A compat-pae machine is taken the same way (64-bit entries, Xen's PAE slots, the
PGT_pae_xen_l2 flags) and checked against spec/mm_spec_pae.py (tests/test_mm_pae.py).

Counters are not compared: the spec abstracts them, and INV-COUNT checks the model's counters
against the references that exist after every step. The frames the hypervisor writes into on
a guest's behalf are a fixed part of the spec's state: a hypercall that changed them does not
refine its spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import z3

from xenspec.refmodel.arch import ArchVcpu
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import PGT_pae_xen_l2, PGT_pinned, PGT_validated
from xenspec.refmodel.mm import LINEAR_PT_FLAGS
from xenspec.spec import abi, mm_spec, symbolic
from xenspec.spec.abi_profiles import COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT
from xenspec.spec.invariants import FREE_FRAME_OWNER
from xenspec.spec.mm_spec import GDT_FRAMES, Transition
from xenspec.spec.pagetable import PGT
from xenspec.spec.symbolic import SymState, bv, cell_equations, cells_equal, stores

W = z3.BitVecSort(32)


@dataclass(frozen=True)
class CpuSnapshot:
    """One vCPU's CPU-interface state (vcpu_guest_context)."""

    traps: tuple[tuple[int, int, int], ...]  # (cs, address, flags) per vector
    event: tuple[int, int]  # (cs, eip)
    failsafe: tuple[int, int]
    kernel_stack: tuple[int, int]  # (ss, esp)
    gdt_frames: tuple[int, ...]  # GDT_FRAMES slots, 0: none
    gdt_ents: int

    @staticmethod
    def take(a: ArchVcpu) -> CpuSnapshot:
        return CpuSnapshot(
            traps=tuple((ti.cs, ti.address, ti.flags) for ti in a.trap_ctxt),
            event=(a.event_callback_cs, a.event_callback_eip),
            failsafe=(a.failsafe_callback_cs, a.failsafe_callback_eip),
            kernel_stack=(a.kernel_ss, a.kernel_sp),
            gdt_frames=tuple(a.gdt_frames) + (0,) * (GDT_FRAMES - len(a.gdt_frames)),
            gdt_ents=a.gdt_ents,
        )


def _rows(rows: list[tuple[int, ...]], default: int = 0) -> z3.ArrayRef:
    """A (vcpu, k) array from one tuple of values per vCPU (0 elsewhere)."""
    arr = z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], bv(default))
    for v, row in enumerate(rows):
        for k, x in enumerate(row):
            if x != default:
                arr = z3.Store(arr, bv(v), bv(k), bv(x))
    return arr


@dataclass(frozen=True)
class Snapshot:
    """What the spec sees of a model state."""

    nr_frames: int
    owner: tuple[int, ...]
    type: tuple[int, ...]
    validated: tuple[bool, ...]
    pinned: tuple[bool, ...]
    entries: dict[tuple[int, int], int]  # nonzero words of every frame but Xen's M2P table
    bases: tuple[int, ...]
    vcpu_domains: tuple[int, ...]
    privileged: frozenset[int]
    xen_slots: dict[tuple[int, int], int]  # (domid, index) -> Xen's entry (not the linear slot)
    cpus: tuple[CpuSnapshot, ...]
    gdt_ref: tuple[bool, ...]  # a GDT frame with type references
    no_type_refs: tuple[bool, ...]  # the frame's type count is 0
    xen_written: tuple[bool, ...]  # the hypervisor writes into the frame for a guest
    # Grant tables: the handles in use, (domid, handle) -> (flags, granter, frame, PTE frame,
    # PTE index); the handles that wrote each grant PTE (Grants.slot_writers: the first is the
    # one the ghost gnt_slot names in the encoded state, and any of them may be the one the
    # spec's ghost names after a call); each domain's shared grant frames.
    handles: dict[tuple[int, int], tuple[int, int, int, int, int]] = field(default_factory=dict)
    gnt_slots: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    gnt_tables: dict[tuple[int, int], int] = field(default_factory=dict)
    # The compat-pae profile: 64-bit entries, and the PGT_pae_xen_l2 flag of each frame.
    entry_bits: int = 32
    pae_xen_l2: tuple[bool, ...] = ()

    @staticmethod
    def take(hv: Hypervisor, skip: frozenset[int] = frozenset()) -> Snapshot:
        """The spec's view of ``hv``; the words of frames in ``skip`` (and of Xen's M2P table)
        are left out, as are the words of Xen's per-domain page tables: data the spec does not
        describe, such as hypercall argument pages."""
        f = hv.frames
        n = hv.memory.nr_frames
        pae = hv.profile.paging_levels == 3
        m2p = set(range(hv.m2p_start, hv.m2p_l1)) | set(hv.m2p_pae_l1)
        # Xen's per-domain page tables (the GDT mappings set_gdt makes) are Xen's own data.
        m2p |= {m for d in hv.domains.values() for m in d.perdomain_pt}
        entries = {}
        for mfn in range(n):
            if mfn in m2p or mfn in skip:
                continue
            words = hv.memory.frame_qwords(mfn) if pae else hv.memory.frame_words(mfn)
            for i, w in enumerate(words):
                if w:
                    entries[(mfn, i)] = int(w)
        vcpus = [v for d in hv.domains.values() for v in d.vcpus]
        pae_fields: dict[str, Any] = {} if not pae else {
            "entry_bits": 64, "pae_xen_l2": tuple(bool(x & PGT_pae_xen_l2) for x in f.flags)}
        return Snapshot(
            nr_frames=n,
            owner=tuple(int(x) & 0xFFFFFFFF for x in f.owner),
            type=tuple(int(x) for x in f.type),
            validated=tuple(bool(x & PGT_validated) for x in f.flags),
            pinned=tuple(bool(x & PGT_pinned) for x in f.flags),
            entries=entries,
            bases=tuple(v.guest_table for v in vcpus),
            vcpu_domains=tuple(v.domain.domain_id for v in vcpus),
            privileged=frozenset(d.domain_id for d in hv.domains.values() if d.is_privileged),
            xen_slots=_pae_xen_slots(hv) if pae else _xen_slots(hv),
            cpus=tuple(CpuSnapshot.take(hv.arch_vcpu(v) or ArchVcpu()) for v in vcpus),
            gdt_ref=tuple(int(f.type[m]) == PGT.gdt_page and int(f.type_count[m]) > 0
                          for m in range(n)),
            no_type_refs=tuple(int(f.type_count[m]) == 0 for m in range(n)),
            xen_written=tuple(hv.hypervisor_writes(m) for m in range(n)),
            **Snapshot.take_grants(hv, entries), **pae_fields,
        )

    @staticmethod
    def take_grants(hv: Hypervisor, entries: dict[tuple[int, int], int]) -> dict[str, Any]:
        grants = hv.grants
        if grants is None:
            return {}
        handles = {(domid, h): (mt.flags, mt.domid, mt.frame, *mt.pte)
                   for domid, t in grants.tables.items()
                   for h, mt in enumerate(t.maptrack)}
        slots = {}
        for (mfn, i), e in entries.items():
            hs = grants.slot_writers(int(hv.frames.owner[mfn]), mfn, i, e >> abi.PAGE_SHIFT)
            if hs:
                slots[(mfn, i)] = tuple(hs)
        tables = {(domid, k): mfn for domid, t in grants.tables.items()
                  for k, mfn in enumerate(t.shared)}
        return {"handles": handles, "gnt_slots": slots, "gnt_tables": tables}

    def indices(self) -> set[int]:
        return {i for _, i in self.entries} | {i for _, i in self.xen_slots}

    def encode(self) -> SymState:
        true, false = z3.BoolVal(True), z3.BoolVal(False)

        def array(values: tuple[int, ...] | tuple[bool, ...], sort: z3.SortRef) -> z3.ArrayRef:
            default = false if sort == z3.BoolSort() else bv(0)
            return stores(z3.K(W, default), [
                ((bv(i),), (true if x else false) if isinstance(x, bool) else bv(x))
                for i, x in enumerate(values)])

        def word(x: int) -> z3.BitVecRef:
            return bv(x) if self.entry_bits == 32 else z3.BitVecVal(x, 64)

        flat = stores(z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], word(0)),
                      [((bv(mfn), bv(i)), word(e))
                       for (mfn, i), e in sorted(self.entries.items())])
        slots = dict(self.xen_slots)

        def xen_l2e(domid: z3.BitVecRef, index: z3.BitVecRef) -> z3.BitVecRef:
            out = word(0)
            for (d, k), e in sorted(slots.items()):
                out = z3.If(z3.And(domid == d, index == k), word(e), out)
            return out

        privileged = z3.K(W, z3.BoolVal(False))
        for d in self.privileged:
            privileged = z3.Store(privileged, bv(d), z3.BoolVal(True))
        return SymState(
            owner=array(self.owner, W), type=array(self.type, W),
            validated=array(self.validated, z3.BoolSort()),
            pinned=array(self.pinned, z3.BoolSort()), mem=flat,
            base=array(self.bases, W), nr_frames=bv(self.nr_frames),
            vcpu_domain=array(self.vcpu_domains, W), privileged=privileged, xen_l2e=xen_l2e,
            linear_pt_flags=bv(LINEAR_PT_FLAGS),
            xen_written=array(self.xen_written, z3.BoolSort()),
            **self.encode_cpus(array), **self.encode_grants(),
            **({"pae_xen_l2": array(self.pae_xen_l2, z3.BoolSort())} if self.pae_xen_l2
               else {}),
        )

    def encode_grants(self) -> dict[str, z3.ArrayRef]:
        def table(values: dict[tuple[int, int], int]) -> z3.ArrayRef:
            return stores(z3.Lambda([z3.BitVec("x", 32), z3.BitVec("k", 32)], bv(0)),
                          [((bv(a), bv(b)), bv(x)) for (a, b), x in sorted(values.items())])

        fields = ("mt_flags", "mt_dom", "mt_frame", "mt_l1", "mt_idx")
        out = {name: table({k: v[j] for k, v in self.handles.items()})
               for j, name in enumerate(fields)}
        return {**out, "gnt_slot": table(self.ghost_slots()),
                "gnt_table": table(self.gnt_tables)}

    def ghost_slots(self) -> dict[tuple[int, int], int]:
        """The handle the encoded state's ghost gnt_slot names for each grant PTE: the first
        of its writers (Grants.slot_handle's choice)."""
        return {k: hs[0] for k, hs in self.gnt_slots.items()}

    def encode_cpus(self, array: Any) -> dict[str, z3.ArrayRef]:
        c = self.cpus

        def per_vcpu(get: Callable[[CpuSnapshot], int]) -> z3.ArrayRef:
            return array(tuple(get(x) for x in c), W)

        return dict(
            trap_cs=_rows([tuple(t[0] for t in x.traps) for x in c]),
            trap_addr=_rows([tuple(t[1] for t in x.traps) for x in c]),
            trap_flags=_rows([tuple(t[2] for t in x.traps) for x in c]),
            event_cs=per_vcpu(lambda x: x.event[0]), event_eip=per_vcpu(lambda x: x.event[1]),
            failsafe_cs=per_vcpu(lambda x: x.failsafe[0]),
            failsafe_eip=per_vcpu(lambda x: x.failsafe[1]),
            kernel_ss=per_vcpu(lambda x: x.kernel_stack[0]),
            kernel_sp=per_vcpu(lambda x: x.kernel_stack[1]),
            gdt_frame=_rows([x.gdt_frames for x in c]),
            gdt_ents=per_vcpu(lambda x: x.gdt_ents),
            gdt_ref=array(self.gdt_ref, z3.BoolSort()),
        )


def _xen_slots(hv: Hypervisor) -> dict[tuple[int, int], int]:
    """Xen's entries of each domain, the same in all its directories but for the linear
    page-table slot, where each maps itself (spec.pagetable.xen_l2_slot); any frame stands
    for the directory here, and that slot is left out."""
    xen_slots = {}
    for d in hv.domains.values():
        for k, e in enumerate(hv.xen_l2_slots(d, 0)):
            i = abi.L2_PAGETABLE_FIRST_XEN_SLOT + k
            if e and i != abi.LINEAR_PT_SLOT:
                xen_slots[(d.domain_id, i)] = e
    return xen_slots


def _pae_xen_slots(hv: Hypervisor) -> dict[tuple[int, int], int]:
    """compat-pae: Xen's slots of each domain's L2 with PGT_pae_xen_l2."""
    return {(d.domain_id, COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT + k): e
            for d in hv.domains.values() for k, e in enumerate(hv.xen_pae_l2_slots(d)) if e}


def same_state(s: SymState, after: Snapshot, indices: list[int],
               old: tuple[SymState, Snapshot] | None = None) -> z3.BoolRef:
    """``s`` agrees with the concrete ``after`` on every frame (its type as ``same_type``
    says), entry in use and base. The words of grant-table frames are not compared: Xen keeps
    GTF_reading and GTF_writing there by pin counts, which the spec abstracts away. Given
    ``old`` (the encoded state before the call and its snapshot), the vCPUs' CPU state is not
    compared where the spec left it as it was (the very same terms) and the model did too:
    they agree by construction."""
    if old is not None and old[1].cpus == after.cpus and all(
            getattr(s, f).eq(getattr(old[0], f)) for f in CPU_FIELDS):
        after = replace(after, cpus=())
    grant_frames = set(after.gnt_tables.values())
    frames = range(after.nr_frames)
    # Frame by frame (the order of the conjuncts matters to the solver's time): its owner,
    # pin, type (same_type) and GDT reference, and a PAE directory's pae_xen_l2 flag.
    owner, pinned, validated, type_, gdt_ref = (
        cell_equations(array, [((f,), x[f]) for f in frames])
        for array, x in ((s.owner, after.owner), (s.pinned, after.pinned),
                         (s.validated, after.validated), (s.type, after.type),
                         (s.gdt_ref, after.gdt_ref)))
    terms = []
    for f in frames:
        kind = (same_type(s, after, f) if left_over(after, f)
                else z3.And(validated[f], type_[f]))
        terms += [owner[f], pinned[f], kind, gdt_ref[f]]
        if after.pae_xen_l2 and after.validated[f] and after.type[f] == PGT.l2_page_table:
            terms.append(s.pae_xen_l2[bv(f)] == after.pae_xen_l2[f])
    # The entries: s.mem[f][i] == the model's, for every frame but the grant tables' and
    # every index of ``indices``.
    terms.append(cells_equal(s.mem, [((f, i), after.entries.get((f, i), 0))
                                     for f in frames if f not in grant_frames
                                     for i in indices]))
    terms += [s.base[bv(v)] == b for v, b in enumerate(after.bases)]
    terms += same_grants(s, after)
    for v, c in enumerate(after.cpus):
        terms += same_cpu(s, bv(v), c)
    return z3.And(*terms)


def same_type(s: SymState, after: Snapshot, f: int) -> z3.BoolRef:
    """``s`` agrees with ``after`` on frame ``f``'s type and validation, up to what no call
    can observe. A frame with no type references takes any type at its next get_page_type
    (x86 mm.c: a type count of 0 lets the type change, and an unvalidated type is validated
    again), so its type_info is left over: Xen keeps a table's type without PGT_validated
    when the last reference goes (put_page_type), keeps the writable type validated, and
    clears the whole type_info when a validation fails (get_page_type: ``type_info = 0``).
    The spec does not track which of these Xen left: for such a frame, any unvalidated type
    and the validated writable type are one state."""
    t, valid = s.type[bv(f)], s.validated[bv(f)]
    if left_over(after, f):
        return z3.Or(z3.Not(valid), z3.And(valid, t == int(PGT.writable_page)))
    return z3.And(valid == after.validated[f], t == after.type[f])


def left_over(after: Snapshot, f: int) -> bool:
    """Frame ``f``'s type_info is left over (``same_type``): no type references, and not
    validated or of the writable type."""
    return bool(after.no_type_refs[f]) and (
        not after.validated[f] or after.type[f] == int(PGT.writable_page))


CPU_FIELDS = ("trap_cs", "trap_addr", "trap_flags", "event_cs", "event_eip", "failsafe_cs",
              "failsafe_eip", "kernel_ss", "kernel_sp", "gdt_frame", "gdt_ents")


def same_grants(s: SymState, after: Snapshot) -> list[z3.BoolRef]:
    """``s`` agrees with the model's grant handles (every one in use, and a freed one reads
    flags 0), and the ghost names, for every grant PTE, a handle that wrote it. The ghost is
    the spec's alone: it names the last handle to write a PTE, and the model does not order
    its handles' writes (a second map of the same PTE with the same value leaves the memory
    as it was)."""
    terms = []
    for (domid, h), values in after.handles.items():
        for name, x in zip(("mt_flags", "mt_dom", "mt_frame", "mt_l1", "mt_idx"), values,
                           strict=True):
            terms.append(z3.Select(getattr(s, name), bv(domid), bv(h)) == x)
    terms += [z3.Or(*[z3.Select(s.gnt_slot, bv(m), bv(i)) == h for h in hs])
              for (m, i), hs in after.gnt_slots.items()]
    return terms


def same_cpu(s: SymState, v: z3.BitVecRef, c: CpuSnapshot) -> list[z3.BoolRef]:
    """``s`` agrees with one vCPU's concrete CPU state."""
    terms = [s.event_cs[v] == c.event[0], s.event_eip[v] == c.event[1],
             s.failsafe_cs[v] == c.failsafe[0], s.failsafe_eip[v] == c.failsafe[1],
             s.kernel_ss[v] == c.kernel_stack[0], s.kernel_sp[v] == c.kernel_stack[1],
             s.gdt_ents[v] == c.gdt_ents]
    vcpu = v.as_long()
    cs, addr, flags = (cell_equations(table, [((vcpu, n), trap[k])  # 256 vectors each
                                              for n, trap in enumerate(c.traps)])
                       for k, table in enumerate((s.trap_cs, s.trap_addr, s.trap_flags)))
    for n in range(len(c.traps)):
        terms += [cs[n], addr[n], flags[n]]
    terms += cell_equations(s.gdt_frame, [((vcpu, k), x) for k, x in enumerate(c.gdt_frames)])
    return terms


def observed_choices(before: Snapshot, after: Snapshot) -> Callable[[str], z3.ExprRef]:
    """The spec's choices as the model made them: which tables lost their validation, which
    became newly validated L1 tables, which frames took the writable type."""
    n = before.nr_frames
    # Tables that lost their validation, including one validated again as another type in the
    # same call (NEW_BASEPTR's retry: an L1 of the old directory becomes the new one). A frame
    # of another type that lost it is a left-over type_info a failed validation cleared
    # (same_type).
    gone = [f for f in range(n) if before.validated[f]
            and before.type[f] in (PGT.l1_page_table, PGT.l2_page_table, PGT.l3_page_table)
            and (not after.validated[f] or after.type[f] != before.type[f])]
    new_l1 = [f for f in range(n) if not (before.validated[f] and before.type[f] == 1)
              and after.validated[f] and after.type[f] == 1]
    # compat-pae: the L2s a validation made, without and with PGT_pae_xen_l2.
    new_l2 = [f for f in range(n) if not (before.validated[f] and before.type[f] == 2)
              and after.validated[f] and after.type[f] == 2]
    xen_l2 = set(f for f in new_l2 if after.pae_xen_l2 and after.pae_xen_l2[f])
    # The frames of the writable type after the call: the spec's retyped sets must hold
    # every RW target of a newly validated table, including one that had the type already
    # (retyping it changes nothing).
    retyped = [f for f in range(n) if after.type[f] == 7]
    kept = [f for f in range(n) if before.type[f] in (1, 2) and after.type[f] == before.type[f]]
    gdt = int(PGT.gdt_page)
    gdt_typed = [f for f in range(n) if after.type[f] == gdt
                 and not (before.type[f] == gdt and before.validated[f])]
    gdt_failed = [f for f in range(n) if after.type[f] == 0 and not after.validated[f]
                  and (before.type[f] != 0 or before.validated[f])]
    released = [f for f in range(n) if before.gdt_ref[f] and not after.gdt_ref[f]]
    sets = {"devalidated": gone, "new_l1": new_l1, "retyped": retyped, "kept_table": kept,
            "gdt_typed": gdt_typed, "gdt_failed": gdt_failed, "gdt_released": released,
            "new_l2": [f for f in new_l2 if f not in xen_l2], "new_xen_l2": sorted(xen_l2)}

    freed = [f for f in range(n) if before.owner[f] != after.owner[f]
             and after.owner[f] == FREE_FRAME_OWNER & 0xFFFFFFFF]

    def choose(name: str) -> z3.ExprRef:
        if name == "validate_target":
            return z3.BoolVal(bool(new_l1))
        if name == "freed":  # memory_op: the frame went back to the heap
            return z3.BoolVal(bool(freed))
        arr = z3.K(W, z3.BoolVal(False))
        for f in sets[name]:
            arr = z3.Store(arr, bv(f), z3.BoolVal(True))
        return arr

    return choose


def check_refinement(
    before: Snapshot, after: Snapshot, rc: int, spec: Callable[[SymState], Transition],
    extra_indices: tuple[int, ...] = (), success_rc: int = 0,
) -> str | None:
    """None if the spec allows the model's outcome, else a description of the mismatch.
    ``success_rc`` is what the call returns when it succeeds (memory_op: the extents done)."""
    if before.xen_written != after.xen_written:  # a fixed field of the spec's state
        changed = [f for f, (a, b) in enumerate(zip(before.xen_written, after.xen_written,
                                                    strict=True)) if a != b]
        return f"the frames the hypervisor writes into changed: {changed[:8]}"
    indices = sorted(before.indices() | after.indices() | set(extra_indices))
    symbolic.reset_fresh()
    symbolic.set_concrete(True)
    try:
        return _check_outcome(before, after, rc, spec, indices, success_rc)
    finally:
        symbolic.set_concrete(False)


def _check_outcome(before: Snapshot, after: Snapshot, rc: int,
                   spec: Callable[[SymState], Transition], indices: list[int],
                   success_rc: int) -> str | None:
    old = before.encode()
    if rc != success_rc and _may_succeed(old, spec):
        # A failing call: no choice at all may let the spec succeed.
        return f"the model failed with {rc} where the spec can succeed"
    mm_spec.CHOOSE = observed_choices(before, after)
    try:
        t = spec(old)
        if rc == success_rc:
            outcomes = [z3.And(t.ok, t.choice, same_state(t.new, after, indices))]
        else:
            untouched = z3.And(z3.Not(t.ok), *[z3.Not(b.cond) for b in t.others],
                               same_state(old, after, indices))
            outcomes = [untouched] if z3.is_true(z3.simplify(t.err == rc)) else []
        # ... or the call ended another way the spec names (NEW_BASEPTR's retry and crash).
        outcomes += [z3.And(z3.Not(t.ok), b.cond, b.choice, same_state(b.new, after, indices))
                     for b in t.others if z3.is_true(z3.simplify(b.rc == rc))]
        answer = _sat(z3.Or(*outcomes) if outcomes else z3.BoolVal(False))
    finally:
        mm_spec.CHOOSE = None
    if answer == z3.sat:
        return None
    return f"the spec does not allow the model's outcome (rc {rc}; solver: {answer})"


def possible_outcomes(before: Snapshot, spec: Callable[[SymState], Transition]) -> list[str]:
    """The outcomes the spec allows on the concrete state ``before`` for some choice of its
    own (the sets it leaves to Xen's iteration), in the spec's order: "ok" for a success,
    then the names of its other outcomes (NEW_BASEPTR's "retry" and "crash"). None of them
    means the call fails leaving the state alone."""
    symbolic.reset_fresh()
    symbolic.set_concrete(True)
    try:
        old = before.encode()
        t = spec(old)
        # An answer the solver could not give in time counts as possible: the caller sets
        # aside states where an outcome might be possible.
        out = ["ok"] if _sat(z3.And(t.ok, t.choice), timeout_s=30) != z3.unsat else []
        return out + [b.name for b in t.others if _sat(
            z3.And(z3.Not(t.ok), b.cond, b.choice), timeout_s=30) != z3.unsat]
    finally:
        symbolic.set_concrete(False)


def _may_succeed(old: SymState, spec: Callable[[SymState], Transition]) -> bool:
    t = spec(old)
    return bool(_sat(z3.And(t.ok, t.choice), timeout_s=5) == z3.sat)


def _sat(formula: z3.BoolRef, timeout_s: int = 60) -> z3.CheckSatResult:
    """Whether ``formula`` is satisfiable. Over a concrete state, with the spec's choices
    fixed (``observed_choices``), it is most often closed: Z3's simplifier then reduces it to
    true or false, and only the rest goes to a solver, simplified. On the refinement tests
    the simplifier decided 262 of 288 (PAE) and 468 of 499 such formulas; the PAE test took
    45 and 59 s of CPU instead of 83 and 97 s, the others 58 s instead of 76 s (old and new
    code run alternately): a solver spent most of its time taking in the machine's tens of
    thousands of cell equations."""
    simple = z3.simplify(formula)
    if z3.is_true(simple):
        return z3.sat
    if z3.is_false(simple):
        return z3.unsat
    solver = z3.Solver()
    solver.set("timeout", timeout_s * 1000)
    solver.add(simple)
    return solver.check()

"""Refinement of the domain builder: the state the model's builder makes is the state
``spec.builder_spec`` describes for the same parameters.

The parameters are read off the model: the domain's page list is the p2m, the model's M2P
table is the m2p, its frame owners are the owners of the frames the domain does not own, its
Xen directory slots are ``xen_l2e``, the frames it writes into on a guest's behalf are
``xen_written``; the region's size and base and the page directory's pfn are what the builder
was asked for.
The check is then that (1) these parameters meet the spec's constraints (the model builds only what
the spec allows), and (2) the spec's state for them equals the model's on every frame's owner,
type, validated and pinned bits and GDT reference, on every entry of every page table either
side has in use, on every vCPU's base pointer and on every vCPU's CPU state. Memory that is no
page table (kernel, start_info, Xen's data) is the spec's free ``junk`` and is not compared.
Where the model refuses a layout (BuildError), the spec's ``layout`` must be false. The ELF
builder's own arithmetic (the region's size, start_info, the page tables, their number and the
boot stack) is checked against ``elf_layout`` in the same way, and a new domain's event
channels against ``initial_events``.
"""

from __future__ import annotations

import z3

from xenspec.proofs.refinement import Snapshot, same_cpu
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.elfbuild import BuiltDomain
from xenspec.refmodel.event import ConcreteEvtView, Events
from xenspec.refmodel.hypervisor import M2P_UNUSED_ENTRY, Hypervisor
from xenspec.spec import abi
from xenspec.spec.builder_spec import (
    BuildParams,
    allocation,
    elf_accepts,
    elf_layout,
    initial_events,
    initial_state,
    layout,
    machine,
    xen_pages,
)
from xenspec.spec.event_spec import SymEvtView
from xenspec.spec.pagetable import PGT
from xenspec.spec.symbolic import SymState, W, bv


def _array(values: dict[int, int], default: int) -> z3.ArrayRef:
    arr = z3.K(W, bv(default))
    for k, x in sorted(values.items()):
        if x != default:
            arr = z3.Store(arr, bv(k), bv(x))
    return arr


def model_params(hv: Hypervisor, d: Domain, nr_mapped: int, virt_base: int, pt_base: int,
                 shared_info: int = 0) -> BuildParams:
    """The spec's parameters for the model's domain ``d`` and the layout it was asked for."""
    snap = Snapshot.take(hv)
    enc = snap.encode()
    vcpus = [v for dom in hv.domains.values() for v in dom.vcpus]
    n = hv.memory.nr_frames
    m2p = {m: int(hv.m2p[m]) for m in range(n)}
    return BuildParams(
        nr_frames=bv(n), domid=bv(d.domain_id), vcpu=bv(vcpus.index(d.vcpus[0])),
        nr_pages=bv(len(d.page_list)), nr_mapped=bv(nr_mapped), virt_base=bv(virt_base),
        pt_base=bv(pt_base), tools_ctxt=z3.BoolVal(False), kernel_sp=bv(0),
        p2m=_array(dict(enumerate(d.page_list)), 0), m2p=_array(m2p, M2P_UNUSED_ENTRY),
        shared_info=bv(shared_info), xen_written=enc.xen_written,
        other_owner=_array({m: snap.owner[m] for m in range(n)}, abi.DOMID_XEN),
        junk=z3.Array("junk", W, W, W), vcpu_domain=enc.vcpu_domain,
        privileged=enc.privileged, xen_l2e=enc.xen_l2e, linear_pt_flags=enc.linear_pt_flags,
    )


def _holds(formula: z3.BoolRef) -> bool:
    solver = z3.Solver()
    solver.set("timeout", 60_000)
    solver.add(z3.Not(formula))
    return bool(solver.check() == z3.unsat)


def _value(term: z3.ExprRef) -> int | bool | None:
    t = z3.simplify(term)
    if z3.is_bv_value(t):
        return int(t.as_long())
    if z3.is_true(t) or z3.is_false(t):
        return bool(z3.is_true(t))
    return None


def table_frames(snap: Snapshot) -> list[int]:
    """The model's page tables in use."""
    tables = (int(PGT.l1_page_table), int(PGT.l2_page_table))
    return [f for f in range(snap.nr_frames) if snap.type[f] in tables and snap.validated[f]]


def state_mismatches(s: SymState, snap: Snapshot, limit: int = 10) -> list[str]:
    """Where the spec's state ``s`` (concrete parameters) differs from the model's. The
    comparisons are simplified a batch at a time (one simplifier pass shares the work of
    reading the parameters' arrays), each batch item by item only if it does not hold."""
    out: list[str] = []
    batch: list[tuple[str, z3.ExprRef, int | bool]] = []

    def flush() -> None:
        same = [term == (bv(x) if not isinstance(x, bool) else z3.BoolVal(x))
                for _, term, x in batch]
        if not z3.is_true(z3.simplify(z3.And(*same))):
            for what, term, expected in batch:
                got = _value(term)
                if got != expected and len(out) < limit:
                    out.append(f"{what}: spec {got!r}, model {expected!r}")
        batch.clear()

    def compare(what: str, term: z3.ExprRef, expected: int | bool) -> None:
        batch.append((what, term, expected))
        if len(batch) >= 512:
            flush()

    for f in range(snap.nr_frames):
        compare(f"owner of frame {f:#x}", s.owner[bv(f)], snap.owner[f])
        compare(f"type of frame {f:#x}", s.type[bv(f)], snap.type[f])
        compare(f"validated bit of frame {f:#x}", s.validated[bv(f)], snap.validated[f])
        compare(f"pinned bit of frame {f:#x}", s.pinned[bv(f)], snap.pinned[f])
        compare(f"GDT reference of frame {f:#x}", s.gdt_ref[bv(f)], snap.gdt_ref[f])
    flush()
    # The spec's tables: the model's, unless the types already disagree.
    spec_tables = [f for f in range(snap.nr_frames) if out
                   and _value(s.type[bv(f)]) in (PGT.l1_page_table, PGT.l2_page_table)]
    for f in sorted(set(table_frames(snap)) | set(spec_tables)):
        for i in range(abi.L1_PAGETABLE_ENTRIES):
            compare(f"entry {i} of table {f:#x}", z3.Select(s.mem, bv(f), bv(i)),
                    snap.entries.get((f, i), 0))
    for v, b in enumerate(snap.bases):
        compare(f"base pointer of vCPU {v}", s.base[bv(v)], b)
    flush()
    for v, c in enumerate(snap.cpus):
        if not _holds(z3.And(*same_cpu(s, bv(v), c))):
            out.append(f"CPU state of vCPU {v} differs")
    return out


def check_build(hv: Hypervisor, p: BuildParams) -> list[str]:
    """The model built the domain: the parameters meet the spec's constraints and the spec's
    state is the model's. Returns what disagrees (empty: the builder refines the spec)."""
    nr_pages = _value(p.nr_pages)
    assert isinstance(nr_pages, int)
    nr_frames = _value(p.nr_frames)
    assert isinstance(nr_pages, int) and isinstance(nr_frames, int)
    # builder_spec.constraints, over the machine's pfns and frames: concrete, so simplified.
    # xen_page holds of a frame the hypervisor does not write into (``p.xen_written`` is the
    # model's: model_params): only the others are stated.
    snap = Snapshot.take(hv)
    written = [f for f in range(nr_frames) if snap.xen_written[f]]
    parts = {"machine": machine(p), "allocation": allocation(p, list(range(nr_pages))),
             "layout": layout(p), "xen_pages": xen_pages(p, written)}
    broken = [name for name, c in parts.items()
              if not (z3.is_true(z3.simplify(c)) or _holds(c))]
    if broken:
        return [f"the model built a domain outside the spec's constraints: {', '.join(broken)}"]
    return state_mismatches(initial_state(p), snap)


def check_refusal(p: BuildParams) -> list[str]:
    """The model refused the layout: so must the spec."""
    if _holds(z3.Not(layout(p))):
        return []
    return ["the model refused a layout the spec's constraints allow"]


def check_elf_layout(image_base: int, kernel_end: int, nr_pages: int, tools: bool,
                     built: tuple[int, int, int, int, int] | None) -> list[str]:
    """build_domain's layout is ``elf_layout``'s (``tools``: the store and console pages are
    in it): ``built`` is (nr_mapped, start_info VA, pt_base, nr_pt_frames, initial ESP) of the
    domain it built, or None if it refused the image and size, which the spec's
    ``elf_accepts`` must then refuse too."""
    lay = elf_layout(bv(image_base), bv(kernel_end), bv(nr_pages), z3.BoolVal(tools))
    accepts = _value(elf_accepts(bv(image_base), bv(kernel_end), bv(nr_pages), lay))
    if built is None:
        return [] if accepts is False else ["the model refused an image the spec accepts"]
    if accepts is not True:
        return ["the model built from an image the spec refuses"]
    expected = (_value(lay.nr_mapped),
                image_base + (_int(lay.start_info_pfn) << abi.PAGE_SHIFT),
                image_base + (_int(lay.pt_pfn) << abi.PAGE_SHIFT), _value(lay.nr_pt),
                image_base + (_int(lay.stack_pfn) + 1 << abi.PAGE_SHIFT))
    names = ("nr_mapped", "start_info address", "pt_base", "nr_pt_frames", "boot stack top")
    return [f"{n}: spec {e}, model {b}" for n, e, b in zip(names, expected, built, strict=True)
            if e != b]


def start_info_word(hv: Hypervisor, built: BuiltDomain, offset: int) -> int:
    """The word at ``offset`` of the start_info page build_domain wrote."""
    d = built.domain
    pfn = (built.start_info_va - built.image.virt_base) >> abi.PAGE_SHIFT
    raw = hv.memory.read((d.page_list[pfn] << abi.PAGE_SHIFT) + offset, 4)
    return int.from_bytes(raw, "little")


def pt_base_pfn(hv: Hypervisor, built: BuiltDomain) -> int:
    """The page directory's pfn, from the domain's start_info."""
    return (start_info_word(hv, built, abi.START_INFO_pt_base) - built.image.virt_base) \
        >> abi.PAGE_SHIFT


def elf_outcome(hv: Hypervisor, built: BuiltDomain) -> tuple[int, int, int, int, int]:
    """What ``check_elf_layout`` compares of a built domain: (nr_mapped, start_info VA,
    pt_base, nr_pt_frames, initial ESP), the last three as the domain finds them."""
    return (built.nr_mapped, built.start_info_va,
            start_info_word(hv, built, abi.START_INFO_pt_base),
            start_info_word(hv, built, abi.START_INFO_nr_pt_frames), built.regs.esp)


def _int(term: z3.ExprRef) -> int:
    value = _value(term)
    assert isinstance(value, int) and not isinstance(value, bool)
    return value


def event_mismatches(events: Events, p: BuildParams, nvcpus: int) -> list[str]:
    """The model's event state of the domain ``p`` describes (alone on its machine) is
    ``initial_events``: the same valid ports, port states, peers, notified vCPUs, VIRQs and
    virq_to_evtchn tables."""
    view = ConcreteEvtView(events)
    spec = SymEvtView(initial_events(p, bv(nvcpus)))
    domid = _int(p.domid)
    out = []
    domains = [d for d in range(abi.DOMID_FIRST_RESERVED) if view.exists(d)]
    if domains != [domid]:
        out.append(f"domains {domains}, the spec's [{domid}]")
    if view.nports(domid) != _value(spec.nports(bv(domid))):
        out.append(f"{view.nports(domid)} valid ports, the spec's {_value(spec.nports(bv(domid)))}")
    for port in range(view.nports(domid)):
        for field in ("state", "rdom", "rport", "notify", "virq"):
            got = getattr(view, field)(domid, port)
            want = _value(getattr(spec, field)(bv(domid), bv(port)))
            if got != want:
                out.append(f"port {port} {field}: model {got}, spec {want}")
    for v in range(nvcpus):
        for q in range(abi.NR_VIRQS):
            if view.virq_port(domid, v, q) != _value(spec.virq_port(bv(domid), bv(v), bv(q))):
                out.append(f"virq_to_evtchn[{v}][{q}] differs")
    return out

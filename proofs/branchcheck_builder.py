"""Spec-guided refinement of the start-of-day spec: every named branch of the domain builder's
checks (spec.builder_spec), taken on the reference model's builder.

Two families, each a function of the builder's parameters rather than of a machine state:

* ``start_of_day/build_initial_tables``: refmodel/builder.py build_initial_tables (setup_pg_tables
  of tools/libxc/xc_linux_build.c) for a domain of ``nr_pages``, a region of ``nr_mapped``
  pages at ``virt_base`` and the page directory at pfn ``pt_base``; its branches are
  ``layout_check``'s: ``ok`` and a failure for each check, in the model's order;
* ``start_of_day/build_domain``: refmodel/elfbuild.py parse_image and build_domain for a
  kernel image [VIRT_BASE, ``kernel_end``) (its entry point at its start; an image ending at
  or below VIRT_BASE starts just below it) and a domain of ``nr_pages``; its branches are
  ``elf_check``'s: ``ok/tools`` (xc_linux_build.c setup_guest: the store and console pages,
  an unprivileged domain), ``ok/dom0`` (domain_build.c construct_dom0: none, the initial
  domain) and a failure for each of ``elf_requirements``' checks.

For each branch the solver is asked for parameters that take exactly that branch (its
condition: the checks before it hold, it fails), the smallest first (few pages; larger only
where the branch needs them: a region of 4 MB for a built ELF domain), then at the boundaries
of its condition (``Family.edges``: a base one page off 4 MB alignment, a region that ends at
the hole and one page past it, a region of exactly the domain's pages and one more, tables
that leave exactly the boot stack's page, ...). The model's builder runs with them on a fresh
machine just big enough. A failure branch must be refused with a ``BuildError`` saying that
reason (``REASONS``: one message of the model can stand for several checks) and leave the
machine as it was; a success branch must build, and the state it built must be the spec's
(proofs.builder_refinement: ``check_build``, the ELF layout ``check_elf_layout``, the event
channels ``event_mismatches``).

Where each check comes from in Xen 3.0.4 (setup_guest, construct_dom0, parseelfimage), and
where the model's builder is stricter than Xen, is said at ``layout_check`` and
``elf_requirements`` in spec.builder_spec.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import z3

from xenspec.proofs import branchcheck
from xenspec.proofs.branchcheck import Case
from xenspec.proofs.builder_refinement import (
    check_build,
    check_elf_layout,
    elf_outcome,
    event_mismatches,
    model_params,
    pt_base_pfn,
)
from xenspec.proofs.refinement import Snapshot
from xenspec.refmodel import builder, elfbuild
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi
from xenspec.spec import branches as spec_branches
from xenspec.spec.branches import Check, NamedBranch, check_branches
from xenspec.spec.builder_spec import (
    BuildParams,
    elf_check,
    elf_layout,
    layout_check,
    nr_l1,
    symbolic_params,
)

Args = dict[str, z3.ExprRef]

_4MB = 1 << abi.L2_PAGETABLE_SHIFT
HOLE = abi.HYPERVISOR_VIRT_START
# The sizes asked for (the domain's pages at most), smallest first: a few pages; enough for
# one 4 MB region and a page more (a region that ends at the hole, or one page past it); for
# two (an ELF region past the hole); then any (a region wrapping past 4 GB, which the model
# refuses before it allocates anything).
SMALL, LARGE, LARGER = 16, 1100, 2100
# Machine frames beyond the domain's: Xen's, the domain's shared_info and per-domain tables.
SLACK = 16


@dataclass(frozen=True)
class Family:
    """One builder entry point: its parameters, its spec's named checks over them, the sizes
    tried, the boundary queries by branch, and how the model runs with given values."""

    name: str
    args: tuple[str, ...]
    check: Callable[[Args], Check]
    tiers: tuple[Callable[[Args], list[z3.BoolRef]], ...]
    edges: Callable[[Args], dict[str, list[list[z3.BoolRef]]]]
    run: Callable[[str, dict[str, int]], str | None]  # (branch, values) -> problem or None


def _vars(family: Family) -> Args:
    return {n: z3.Bool(n) if n == "tools" else z3.BitVec(n, 32) for n in family.args}


# ----------------------------------------------------------------------------------------------
# How the model's refusals are told apart: its message for each check (the model says the
# same thing for the directory, the tables and the domain's size, and for the base and the
# region's end).
# ----------------------------------------------------------------------------------------------
REASONS: dict[str, dict[str, str]] = {
    "start_of_day/build_initial_tables": {
        "aligned": "must be 4 MB aligned",
        "pt_base": "cannot map", "tables_fit": "cannot map", "pages": "cannot map",
        "below_hole": "mapping would reach the hypervisor hole",
        "room": "mapping would reach the hypervisor hole",
    },
    "start_of_day/build_domain": {
        "aligned": "is not 4 MB aligned",
        "image_above_base": r"lies outside \[VIRT_BASE",
        "image_below_hole": r"lies outside \[VIRT_BASE",
        "pages": "requires too much space|the image spans .* more than the domain's",
        "room": "bootstrap region would reach the hypervisor hole|wraps past 4 GB",
    },
}


def refusal(family: str, branch: str, exc: BuildError | None, unchanged: bool) -> str | None:
    """A failure branch: refused, for that branch's reason, with nothing left behind."""
    check = branch.removeprefix("fail/")
    if exc is None:
        return f"the model built where the spec refuses ({check})"
    if not re.search(REASONS[family][check], str(exc)):
        return f"refused for another reason than {check}: {exc}"
    return None if unchanged else f"refused ({check}) but the machine changed"


def _raised(exc: Exception) -> str:
    return f"the model's builder raised {type(exc).__name__}: {exc}"


def _built_where_refused(branch: str, exc: BuildError) -> str:
    return f"the model refused where the spec builds ({branch}): {exc}"


# ----------------------------------------------------------------------------------------------
# build_initial_tables.
# ----------------------------------------------------------------------------------------------
def _tables_check(a: Args) -> Check:
    return layout_check(_tables_params(a))


def _tables_params(a: Args) -> BuildParams:
    return symbolic_params().evolve(nr_pages=a["nr_pages"], nr_mapped=a["nr_mapped"],
                                    virt_base=a["virt_base"], pt_base=a["pt_base"])


def _tables_tier(limit: int) -> Callable[[Args], list[z3.BoolRef]]:
    def tier(a: Args) -> list[z3.BoolRef]:
        return [z3.ULT(0, a["nr_pages"]), z3.ULE(a["nr_pages"], limit),
                z3.ULE(a["nr_mapped"], limit + 2), z3.ULE(a["pt_base"], limit + 2)]
    return tier


def _tables_edges(a: Args) -> dict[str, list[list[z3.BoolRef]]]:
    p = _tables_params(a)
    room = z3.LShR(HOLE - a["virt_base"], abi.PAGE_SHIFT)
    below = a["nr_mapped"] - a["pt_base"]
    return {
        "ok": [[a["nr_mapped"] == room],  # the region ends at the hole
               [below == nr_l1(p) + 2, a["nr_mapped"] == a["nr_pages"]]],  # everything tight
        "fail/aligned": [[a["virt_base"] & (_4MB - 1) == abi.PAGE_SIZE],
                         [a["virt_base"] & (_4MB - 1) == _4MB - abi.PAGE_SIZE]],
        "fail/pt_base": [[a["pt_base"] == a["nr_mapped"]]],
        "fail/tables_fit": [[below == nr_l1(p) + 1]],  # no page left for the boot stack
        "fail/pages": [[a["nr_mapped"] == a["nr_pages"] + 1]],
        "fail/below_hole": [[a["virt_base"] == HOLE + _4MB]],
        "fail/room": [[a["nr_mapped"] == room + 1]],  # one page past the hole
    }


def run_tables(branch: str, v: dict[str, int]) -> str | None:
    """build_initial_tables with the values on a fresh machine: the domain's frames and few
    more."""
    hv = Hypervisor(v["nr_pages"] + SLACK)
    d = hv.create_domain(v["nr_pages"])
    before = Snapshot.take(hv)
    family = "start_of_day/build_initial_tables"
    try:
        builder.build_initial_tables(hv, d, v["nr_mapped"], v["virt_base"],
                                     pt_base_pfn=v["pt_base"])
    except BuildError as exc:
        if branch.startswith("ok"):
            return _built_where_refused(branch, exc)
        return refusal(family, branch, exc, Snapshot.take(hv) == before)
    except Exception as exc:  # a builder that breaks on parameters it should refuse
        return _raised(exc)
    if branch.startswith("fail/"):
        return refusal(family, branch, None, False)
    problems = check_build(hv, model_params(hv, d, v["nr_mapped"], v["virt_base"], v["pt_base"]))
    return "; ".join(problems) or None


# ----------------------------------------------------------------------------------------------
# build_domain: a kernel image made for the values, parsed and built by the model.
# ----------------------------------------------------------------------------------------------
_NOTE_NAME = b"Xen\0"


def xen_note(ntype: int, desc: bytes) -> bytes:
    """One Xen ELF note (name "Xen", type ``ntype``), padded to four bytes."""
    pad = b"\0" * (-len(desc) % 4)
    return struct.pack("<III", len(_NOTE_NAME), len(desc), ntype) + _NOTE_NAME + desc + pad


def xen_notes(virt_base: int, entry: int) -> bytes:
    """The notes of a xen-3.0 kernel: XEN_VERSION, VIRT_BASE and ELF_PADDR_OFFSET
    ``virt_base`` (so a segment loads at its p_paddr), ENTRY ``entry``."""
    return b"".join([
        xen_note(abi.XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
        xen_note(abi.XEN_ELFNOTE_VIRT_BASE, struct.pack("<I", virt_base)),
        xen_note(abi.XEN_ELFNOTE_PADDR_OFFSET, struct.pack("<I", virt_base)),
        xen_note(abi.XEN_ELFNOTE_ENTRY, struct.pack("<I", entry)),
    ])


def kernel_image(virt_base: int, start: int, end: int) -> bytes:
    """A 32-bit x86 ELF kernel with one loadable segment [start, end) (one byte of it in the
    file), its entry point at ``start``, and Xen ELF notes: xen-3.0, VIRT_BASE and
    ELF_PADDR_OFFSET ``virt_base`` (so a segment loads at its p_paddr), ENTRY."""
    notes = xen_notes(virt_base, start)
    ehsize, phentsize = 52, 32
    notes_at = ehsize + 2 * phentsize
    data_at = notes_at + len(notes)
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)  # ELFCLASS32, little-endian, version 1
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 3, 1, start, ehsize, 0, 0, ehsize,
                       phentsize, 2, 40, 0, 0)  # ET_EXEC, EM_386, no section headers
    load = struct.pack("<8I", 1, data_at, start, start, 1, end - start, 7, abi.PAGE_SIZE)
    note = struct.pack("<8I", 4, notes_at, 0, 0, len(notes), 0, 4, 4)  # PT_NOTE
    return ehdr + load + note + notes + b"\x90"


def _wide(x: z3.ExprRef) -> z3.ExprRef:
    return z3.ZeroExt(32, x)  # elf_layout's terms are 64-bit


def _elf_check(a: Args) -> Check:
    return elf_check(a["virt_base"], a["kernel_end"], a["nr_pages"], a["tools"])


def _elf_tier(limit: int | None) -> Callable[[Args], list[z3.BoolRef]]:
    """Domains of at most ``limit`` pages (None: any) and images no larger than the domain
    could hold (or ending at or below VIRT_BASE)."""
    def tier(a: Args) -> list[z3.BoolRef]:
        base, end = a["virt_base"], a["kernel_end"]
        bound = [] if limit is None else [
            z3.ULE(a["nr_pages"], limit),
            z3.Or(z3.ULE(end, base), z3.ULE(end - base, max(limit, 1024) << abi.PAGE_SHIFT))]
        return [z3.ULT(0, a["nr_pages"]), z3.ULT(0, end), *bound]
    return tier


def _elf_edges(a: Args) -> dict[str, list[list[z3.BoolRef]]]:
    lay = elf_layout(a["virt_base"], a["kernel_end"], a["nr_pages"], a["tools"])
    top = _wide(a["virt_base"]) + (lay.nr_mapped << abi.PAGE_SHIFT)
    fits = [lay.nr_mapped == _wide(a["nr_pages"]), top == HOLE]  # the domain, to the hole
    return {
        "ok/tools": [fits],
        "ok/dom0": [fits],
        "fail/aligned": [[a["virt_base"] & (_4MB - 1) == abi.PAGE_SIZE],
                         [a["virt_base"] & (_4MB - 1) == _4MB - abi.PAGE_SIZE]],
        "fail/image_above_base": [[a["kernel_end"] == a["virt_base"]]],
        "fail/image_below_hole": [[a["kernel_end"] == HOLE + 1]],
        "fail/pages": [[lay.nr_mapped == _wide(a["nr_pages"]) + 1],
                       [z3.ULT(_wide(a["nr_pages"]), lay.kernel_pages)]],  # the image alone
        "fail/room": [[top == HOLE + _4MB], [z3.UGE(top, 1 << 32)]],  # past the hole; wraps
    }


def run_elf(branch: str, v: dict[str, int]) -> str | None:
    """parse_image and build_domain with the values: ``tools`` an unprivileged domain
    (setup_guest's layout), else the initial domain (construct_dom0's), without devices."""
    base, end, nr_pages, tools = v["virt_base"], v["kernel_end"], v["nr_pages"], v["tools"]
    start = base if base < end else end - 1
    hv = Hypervisor(min(nr_pages, LARGER) + SLACK)
    pv = PVPlatform(hv)
    before = (sorted(hv.domains), len(hv.free_list))
    family = "start_of_day/build_domain"
    try:
        image = elfbuild.parse_image(io.BytesIO(kernel_image(base, start, end)),
                                     max_bytes=nr_pages << abi.PAGE_SHIFT)
        built = elfbuild.build_domain(hv, pv, image, nr_pages, privileged=not tools)
    except BuildError as exc:
        if branch.startswith("ok"):
            return _built_where_refused(branch, exc)
        return refusal(family, branch, exc, (sorted(hv.domains), len(hv.free_list)) == before)
    except Exception as exc:  # a builder that breaks on parameters it should refuse
        return _raised(exc)
    if branch.startswith("fail/"):
        return refusal(family, branch, None, False)
    problems = check_elf_layout(base, end, nr_pages, bool(tools), elf_outcome(hv, built))
    d = built.domain
    p = model_params(hv, d, built.nr_mapped, base, pt_base_pfn(hv, built),
                     pv.darch(d).shared_info_mfn)
    problems += check_build(hv, p) + event_mismatches(pv.events, p, len(d.vcpus))
    return "; ".join(problems) or None


FAMILIES: tuple[Family, ...] = (
    Family("start_of_day/build_initial_tables", ("nr_pages", "nr_mapped", "virt_base", "pt_base"),
           _tables_check, (_tables_tier(SMALL), _tables_tier(LARGE)), _tables_edges,
           run_tables),
    Family("start_of_day/build_domain", ("nr_pages", "virt_base", "kernel_end", "tools"),
           _elf_check, (*[_elf_tier(n) for n in (SMALL, LARGE, LARGER)], _elf_tier(None)),
           _elf_edges, run_elf),
)
# Branches no parameters take, with the reason (none: every check can fail first).
UNREACHABLE: dict[str, str] = {}


# ----------------------------------------------------------------------------------------------
# The checks.
# ----------------------------------------------------------------------------------------------
def family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def named_branches(f: Family) -> list[NamedBranch]:
    return check_branches(f.check(_vars(f)))


def branch_names(f: Family) -> list[str]:
    return [b.name for b in named_branches(f)]


def _values(f: Family, a: Args, model: z3.ModelRef) -> dict[str, int]:
    out = {}
    for n, x in a.items():
        value = model.eval(x, model_completion=True)
        out[n] = int(z3.is_true(value)) if n == "tools" else value.as_long()
    return out


def sole_failure(f: Family, a: Args, branch: str) -> list[z3.BoolRef]:
    """For a failure branch, the condition that its check fails and every other check holds
    (spec.branches.FLIP): parameters refused for that reason alone, so that a model that
    drops the check is not refused by a later one with the same message (``REASONS``)."""
    if not branch.startswith("fail/"):
        return []
    with spec_branches.flipped(branch.removeprefix("fail/")):
        return [f.check(a).holds]


def _solve(f: Family, a: Args, b: NamedBranch, extra: list[z3.BoolRef]) -> z3.ModelRef | None:
    """The smallest tier's model of the branch with ``extra``, for the check's failure alone
    where there is one, else with any later check failing too."""
    sole = sole_failure(f, a, b.name)
    for alone in ([sole, []] if sole else [[]]):
        for tier in f.tiers:
            model = branchcheck.solve_branch(tier(a), b, [*extra, *alone], z3.BoolVal(True))
            if model is not None:
                return model
    return None


def parameters_for(f: Family, branch: str) -> list[dict[str, int]]:
    """The parameters tried for ``branch``: the smallest that take it, then one set at each
    of its boundaries that can be taken (each the smallest the tiers allow, and for a
    failure, refused for that check alone where it can be: ``sole_failure``), without
    repeats."""
    a = _vars(f)
    b = next(x for x in named_branches(f) if x.name == branch)
    found: list[dict[str, int]] = []
    for edge in [[], *f.edges(a).get(branch, [])]:
        model = _solve(f, a, b, edge)
        if model is not None:
            values = _values(f, a, model)
            if values not in found:
                found.append(values)
    return found


def check_one(f: Family, branch: str) -> list[Case]:
    """Every parameter set of ``branch``, run on the model and judged."""
    return [Case(f.name, branch, v, f.run(branch, v)) for v in parameters_for(f, branch)]

"""Generate the specification's reference documentation as reST pages and SVG pictures.

``generate(outdir, cache_dir)`` writes a page per clause of ``spec.clauses`` (hypercalls,
behaviours, invariants), the ABI constant tables, the address-space layout, the frame types,
the paths of a hypercall and of an exception, and the traceability matrix, all read from the
specification, the proof obligations, the reference model's source and the last proof and
conformance runs in ``cache_dir``. The Sphinx configuration in ``docs/conf.py`` calls it
before every build; files whose text is unchanged are left alone.
"""

from __future__ import annotations

from pathlib import Path

from xenspec.docgen import abitables, clausepages, contract, figures, matrix, rst, status
from xenspec.docgen.clausepages import hypercall_number
from xenspec.docgen.matrix import slug, target
from xenspec.spec import abi
from xenspec.spec.clauses import CLAUSES, Clause, Kind

KIND_PAGES = {
    Kind.hypercall: ("hypercalls", "Hypercalls"),
    Kind.behaviour: ("behaviours", "Behaviours of the virtual machine"),
    Kind.invariant: ("invariants", "Invariants"),
}


def generate(outdir: Path, cache_dir: Path) -> list[Path]:
    """Write every generated page under ``outdir``; returns the files written or kept."""
    st = status.load(cache_dir)
    obligations = status.obligations_by_clause()
    out = [rst.write_if_changed(outdir / "clauses" / f"{slug(c.id)}.rst",
                                clausepages.clause_page(c, obligations.get(c.id, []), st))
           for c in CLAUSES]
    pages = {
        "index.rst": index_page(),
        "hypercalls.rst": hypercalls_page(),
        "behaviours.rst": kind_page(Kind.behaviour),
        "invariants.rst": kind_page(Kind.invariant),
        "abi.rst": abitables.abi_page(),
        "layout.rst": figures.layout_page(),
        "page-types.rst": figures.page_types_page(),
        "paths.rst": figures.paths_page(),
        "matrix.rst": matrix.matrix_page(obligations, st),
    }
    out += [rst.write_if_changed(outdir / name, text) for name, text in pages.items()]
    # Included by the guide's contract page (not pages of their own: .inc is not a source).
    out += [rst.write_if_changed(outdir / "contract-modules.inc", contract.contract_include()),
            rst.write_if_changed(outdir / "contract-fixes.inc", contract.fixes_include())]
    out += [rst.write_if_changed(outdir / "images" / name, draw())
            for name, draw in figures.FIGURES.items()]
    return out


def index_page() -> str:
    return rst.page(
        rst.heading("The specification"),
        "Generated from the specification's source at every build: the clause registry "
        "(``spec.clauses``), the ABI (``spec.abi``), the invariants (``spec.invariants``), the "
        "transition specifications (``spec.mm_spec``, ``spec.desc``), the proof obligations "
        "(``proofs.obligations``) and the reference model's handlers.",
        ".. toctree::\n   :maxdepth: 1\n\n   hypercalls\n   behaviours\n   invariants\n"
        "   matrix\n   abi\n   layout\n   page-types\n   paths\n",
    )


def _clause_rows(clauses: list[Clause]) -> list[list[str]]:
    return [[rst.ref(target(c.id), c.id), rst.escape(c.title),
             rst.literal(c.spec.split(":")[-1]) if c.spec else "none yet"] for c in clauses]


def _toctree(clauses: list[Clause]) -> str:
    entries = "".join(f"   clauses/{slug(c.id)}\n" for c in clauses)
    return f".. toctree::\n   :hidden:\n\n{entries}"


def kind_page(kind: Kind) -> str:
    name, title = KIND_PAGES[kind]
    clauses = [c for c in CLAUSES if c.kind is kind]
    return rst.page(rst.label(name), rst.heading(title), _toctree(clauses),
                    rst.table(["Clause", "Title", "Specification"], _clause_rows(clauses),
                              widths="30 50 20"))


def hypercalls_page() -> str:
    clauses = [c for c in CLAUSES if c.kind is Kind.hypercall]
    numbers = sorted((v, n.removeprefix("__HYPERVISOR_")) for n, v in vars(abi).items()
                     if n.startswith("__HYPERVISOR_") and isinstance(v, int))
    rows = []
    for nr, name in numbers:
        mine = [c for c in clauses if c.hypercall == name]
        links = ", ".join(rst.ref(target(c.id), c.id) for c in mine)
        rows.append([str(nr), rst.literal(name), links or "not modelled"])
    assert all(hypercall_number(c.hypercall) is not None for c in clauses)
    return rst.page(
        rst.label("hypercalls"), rst.heading("Hypercalls"), _toctree(clauses),
        "The clauses, one per hypercall or per command of a multiplexed hypercall:",
        rst.table(["Clause", "Title", "Specification"], _clause_rows(clauses), widths="30 50 20"),
        rst.heading("Every hypercall number", 1),
        "The hypercall numbers of Xen 3.0.4 (``spec.abi``, from xen.h) and their clauses:",
        rst.table(["Number", "Hypercall", "Clauses"], rows, widths="10 35 55"),
    )

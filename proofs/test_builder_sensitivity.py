"""The builder obligations have teeth: a builder spec that lays the domain out wrongly makes the
matching obligation fail, and the runner prints a counterexample naming the parameters and the
frame and entry involved (spec.builder_spec).

Each test patches one piece of ``spec.builder_spec`` for its duration and proves the obligation
afresh (no cache); the control proves it with the intact spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import z3

from xenspec.proofs.obligations import obligation_names
from xenspec.proofs.runner import prove_one
from xenspec.spec import abi, builder_spec
from xenspec.spec.builder_spec import BuildParams
from xenspec.spec.pagetable import xen_l2_slot

NAMES = obligation_names()
SATISFIABLE = ("the invariants together are satisfiable (not vacuous): a start_of_day machine "
               "meets them all")


PLACED = ("start_of_day: the ELF builder puts the kernel, p2m list, start_info, store and "
          "console pages below the page tables and the boot stack after them, with 512 KB of "
          "the region after it")
CLOSED = ("start_of_day: the ELF builder puts its page directory below the hole's first pfn "
          "and counts its table frames by the search's closed form")
PADDING = ("start_of_day: the ELF builder's region leaves 512 KB after the boot stack for any "
           "tables below the hole's first pfn")


def _initial(label: str) -> str:
    return f"start_of_day: the domain builder's initial state satisfies {label}"


def tables_writable(mp: pytest.MonkeyPatch) -> None:
    """The page directory and L1s are mapped read-write like the rest of the region."""
    mp.setattr(builder_spec, "l1e", lambda p, pfn: (p.p2m[pfn] << abi.PAGE_SHIFT)
               | builder_spec.L1_PROT)


def machine_contiguous(mp: pytest.MonkeyPatch) -> None:
    """The builder takes the domain's memory to be machine-contiguous from its first frame:
    pfn maps to p2m[0] + pfn, which may be another domain's frame."""
    l1e = builder_spec.l1e

    def contiguous(p: BuildParams, pfn: Any) -> Any:
        return l1e(p.evolve(p2m=z3.Lambda([x := z3.BitVec("x", 32)], p.p2m[0] + x)), pfn)

    mp.setattr(builder_spec, "l1e", contiguous)


def frame_given_twice(mp: pytest.MonkeyPatch) -> None:
    """The allocator may give the domain the same frame for two pfns (no M2P inverse)."""
    mp.setattr(builder_spec, "page_allocated", lambda p, pfn: z3.And(
        z3.ULT(0, p.p2m[pfn]), z3.ULT(p.p2m[pfn], p.nr_frames)))


def base_is_first_l1(mp: pytest.MonkeyPatch) -> None:
    """vCPU 0's base pointer names the first L1 instead of the page directory."""
    def base(p: BuildParams) -> Any:
        v = z3.BitVec("bv", 32)
        first_l1 = p.p2m[builder_spec.pt_base(p) + 1]
        return z3.Lambda([v], z3.If(v == p.vcpu, first_l1, 0))

    mp.setattr(builder_spec, "base", base)


def shared_page_untyped(mp: pytest.MonkeyPatch) -> None:
    """The builder leaves the pages Xen shares (shared_info) untyped, as if it never took
    Xen's writable type reference (share_xen_page_with_guest)."""
    mp.setattr(builder_spec, "frame_type", lambda p: builder_spec._frame_map(lambda f: z3.If(
        builder_spec.in_p2m(p, f), builder_spec.pfn_type(p, p.m2p[f]), z3.BitVecVal(0, 32))))


def linear_slot_names_next_frame(mp: pytest.MonkeyPatch) -> None:
    """The boot directory's linear page-table slot names the machine frame after the
    directory's, not the directory (mm.c alloc_l2_table maps the directory itself there)."""
    mp.setattr(builder_spec, "xen_l2_slot",
               lambda shared, l2, index, flags: xen_l2_slot(shared, l2 + 1, index, flags))


def broken_witness(mp: pytest.MonkeyPatch) -> None:
    """The witness machine gives its domain frame 7 twice: it is no machine the builder makes."""
    mp.setitem(builder_spec.WITNESS, "p2m", [9, 4, 7, 7, 11, 6])


def no_padding_rule(mp: pytest.MonkeyPatch) -> None:
    """The region is the boot stack's end rounded up to 4 MB, without the extra 4 MB that
    keeps 512 KB after the stack."""
    def region(pt_pfn: Any, nr_pt: Any) -> Any:
        return builder_spec._round_4mb(pt_pfn + nr_pt + 1)

    mp.setattr(builder_spec, "region_pages", region)


def no_room_for_store_and_console(mp: pytest.MonkeyPatch) -> None:
    """The tools' layout forgets the store and console pages: the page directory follows
    start_info, as construct_dom0's does."""
    layout = builder_spec.elf_layout

    def elf_layout(virt_base: Any, kernel_end: Any, nr_pages: Any, tools: Any) -> Any:
        return layout(virt_base, kernel_end, nr_pages, z3.BoolVal(False))

    mp.setattr(builder_spec, "elf_layout", elf_layout)


def one_search_step(mp: pytest.MonkeyPatch) -> None:
    """The number of table frames is what two frames would need, without looking again at
    the region that number gives (a table frame can push it past a 4 MB boundary)."""
    layout = builder_spec.elf_layout

    def elf_layout(virt_base: Any, kernel_end: Any, nr_pages: Any, tools: Any) -> Any:
        lay = layout(virt_base, kernel_end, nr_pages, tools)
        nr_pt = builder_spec.tables_needed(lay.pt_pfn, z3.BitVecVal(2, 64))
        return replace(lay, nr_pt=nr_pt, stack_pfn=lay.pt_pfn + nr_pt,
                       nr_mapped=builder_spec.region_pages(lay.pt_pfn, nr_pt))

    mp.setattr(builder_spec, "elf_layout", elf_layout)


def port0_free(mp: pytest.MonkeyPatch) -> None:
    """evtchn_init forgets to reserve port 0."""
    initial = builder_spec.initial_events

    def events(p: BuildParams, nvcpus: Any) -> Any:
        d, port = z3.BitVecs("d port", 32)
        return initial(p, nvcpus).evolve(state=z3.Lambda([d, port], z3.BitVecVal(0, 32)))

    mp.setattr(builder_spec, "initial_events", events)


MUTANTS: list[tuple[str, str, Callable[[pytest.MonkeyPatch], None]]] = [
    ("page tables mapped writable", _initial("INV-NOWRPT"), tables_writable),
    ("machine-contiguous memory assumed: another domain's frame mapped",
     _initial("INV-OWN (L1 entries)"), machine_contiguous),
    ("the same frame given for two pfns", _initial("INV-NOWRPT"), frame_given_twice),
    ("base pointer names an L1", _initial("INV-BASE"), base_is_first_l1),
    ("the boot directory's linear slot names another frame", _initial("INV-HOLE"),
     linear_slot_names_next_frame),
    ("a page Xen shares left untyped", _initial("INV-XENPAGE"), shared_page_untyped),
    ("the witness is no builder's machine", SATISFIABLE, broken_witness),
    ("the 512 KB rule dropped", PADDING, no_padding_rule),
    ("no store and console pages", PLACED, no_room_for_store_and_console),
    ("one step of the table-frame search", CLOSED, one_search_step),
    ("port 0 not reserved", "start_of_day: a new domain's event channels satisfy INV-EVT-PORT",
     port0_free),
]


@pytest.mark.parametrize("what,obligation,patch", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_builder_mutant_breaks_the_proof(
    monkeypatch: pytest.MonkeyPatch, what: str, obligation: str,
    patch: Callable[[pytest.MonkeyPatch], None],
) -> None:
    index = NAMES.index(obligation)
    assert prove_one(index, use_cache=False).status == "proved", "control: the intact spec"
    patch(monkeypatch)
    result = prove_one(index, use_cache=False, timeout_s=120)
    assert result.status == "FAILED", f"{what}: {result.status}"
    names = {line.split(" = ")[0] for line in result.counterexample}
    if obligation.startswith(_initial("")):  # the parameters and the witness frame or vCPU
        assert {"nr_mapped", "virt_base", "nr_pages"} <= names, result.counterexample
        assert any(n.startswith(("frame!", "vcpu!")) for n in names), result.counterexample
    elif "event channels" in obligation:  # the witness domain and port
        assert any(n.startswith("w_port") for n in names), names
    elif obligation == PADDING:  # the tables
        assert {"pt_pfn", "nr_pt"} <= names, names
    elif obligation != SATISFIABLE:  # the image and the layout
        assert {"kernel_end", "nr_pages", "elf pt_pfn", "elf nr_mapped"} <= names, names

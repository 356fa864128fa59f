"""Every named branch of every MMU and CPU-interface transition spec, checked on the reference
model (``proofs.branchcheck``): the solver builds a small state that takes the branch, the model is
put in it and runs the handler, and the outcome must be that branch's. The test ids list the
branches by name (``pytest tests/test_branches.py -v``); a branch no state takes is skipped
with the reason from ``branchcheck.UNREACHABLE`` (any other fails: dead in the spec). The run
is recorded for the documentation's traceability matrix (``branches-last.json``).

The checks must catch a model that takes another branch: single-line mutants of
refmodel/mm.py (``MUTANTS``) and of refmodel/traps.py and desc.py (``CPU_MUTANTS``), each
applied in turn, must fail some branch check.

The grant-table, memory_op and event-channel specs are checked the same way in their own
section below (``proofs.branchcheck_gem``), on machines the model builds through its own
calls, with mutants of refmodel/grant.py, memop.py and event.py (``GEM_MUTANTS``); and the
domain builder's start-of-day spec in the last section (``proofs.branchcheck_builder``), with
mutants of refmodel/builder.py and elfbuild.py (``SOD_MUTANTS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mm_mutants import UVA_ANY_TABLE, mutated, recompiled

from xenspec.proofs import branchcheck
from xenspec.proofs import branchcheck_builder as sod
from xenspec.proofs import branchcheck_gem as gem
from xenspec.proofs.branchcheck import (
    FAMILIES,
    UNREACHABLE,
    branch_names,
    cases_for,
    check_one,
    family,
)
from xenspec.refmodel import builder as builder_model
from xenspec.refmodel import desc, traps
from xenspec.refmodel import elfbuild as elfbuild_model
from xenspec.refmodel import event as event_model
from xenspec.refmodel import grant as grant_model
from xenspec.refmodel import memop as memop_model
from xenspec.refmodel.event import Events
from xenspec.refmodel.grant import Grants
from xenspec.refmodel.memop import MemOp
from xenspec.refmodel.mm import MM
from xenspec.spec import abi

PER_BRANCH = 3

# Branch checks that do not pass yet, each an open question, not an accepted result: on a state
# the solver built for the branch, the model and the spec disagree, and it is not yet known
# whether the spec, the model or the state's construction (proofs.branchcheck) is at fault.
# They run and are reported as expected failures until each is explained and fixed.
OPEN: dict[str, str] = {}


def _param(name: str, branch: str) -> Any:
    key = f"{name} {branch}"
    marks = [pytest.mark.xfail(reason=OPEN[key], strict=False)] if key in OPEN else []
    return pytest.param(name, branch, id=key, marks=marks)


BRANCHES = [_param(f.name, b) for f in FAMILIES for b in branch_names(f)]


def test_open_list_names_real_branches() -> None:
    """Every open item names a branch the specs have (a renamed branch is not left behind)."""
    known = {f"{f.name} {b}" for f in FAMILIES for b in branch_names(f)}
    assert set(OPEN) <= known, sorted(set(OPEN) - known)


def judge(key: str, cases: list[Any], unreachable: dict[str, str]) -> None:
    """A branch's verdict: hit, every check passed; or not hit, with the reason given."""
    if not cases:
        assert key in unreachable, (
            f"{key}: no state of the machine takes this branch; it is dead in the spec "
            "(remove it) or out of the machine's reach (explain it in UNREACHABLE)")
        pytest.skip(f"not hit: {unreachable[key]}")
    assert key not in unreachable, f"{key} is hit: remove it from UNREACHABLE"
    problems = [f"{c.args}: {c.problem}" for c in cases if c.problem is not None]
    assert not problems, f"{key}:\n" + "\n".join(problems)


@pytest.mark.parametrize(("name", "branch"), BRANCHES)
def test_branch_refines(name: str, branch: str) -> None:
    key = f"{name} {branch}"
    cases = check_one(family(name), branch, PER_BRANCH)
    branchcheck.record(key, cases)
    judge(key, cases, UNREACHABLE)


# ----------------------------------------------------------------------------------------------
# Mutants: one line of the model changed, each a rule the spec has.
# ----------------------------------------------------------------------------------------------
# (method of MM, the line as the model has it, the mutated line, the family and branch whose
# check must catch it)
MUTANTS: list[tuple[str, str, str, str, str]] = [
    # update_va_mapping writes through any page-table frame the L2 slot names.
    (*UVA_ANY_TABLE, "update_va_mapping", "fail/l1_type"),
    # mod_l2_entry lets the guest write Xen's slots of a page directory.
    ("mod_l2_entry",
     "if not is_guest_l2_slot(index):",
     "if index > 1023:",
     "mmu_update/NORMAL_PT_UPDATE", "fail/l2/guest_slot"),
    # get_linear_pagetable accepts a writable linear map.
    ("get_linear_pagetable",
     "if l2e & abi._PAGE_RW:",
     "if False:",
     "mmu_update/NORMAL_PT_UPDATE", "fail/l2/present/linear/l2e_linear_ro"),
    # pin_page pins a table that is pinned already.
    ("pin_page",
     "if self.frames.flags[mfn] & PGT_pinned:",
     "if False:",
     "mmuext_op/PIN_L1_TABLE", "fail/not_pinned"),
    # SET_LDT refuses every page-aligned base but 4095 (a mutant cosmic-ray made: the
    # branch checks let it through while SET_LDT had no spec of its own).
    ("mmuext_set_ldt",
     "if ptr & (abi.PAGE_SIZE - 1) or ents > abi.MAX_LDT_ENTRIES:",
     "if ptr - (abi.PAGE_SIZE - 1) or ents > abi.MAX_LDT_ENTRIES:",
     "mmuext_op/SET_LDT", "ok"),
    # SET_LDT accepts 8193 entries.
    ("mmuext_set_ldt",
     "if ptr & (abi.PAGE_SIZE - 1) or ents > abi.MAX_LDT_ENTRIES:",
     "if ptr & (abi.PAGE_SIZE - 1) or ents > abi.MAX_LDT_ENTRIES + 1:",
     "mmuext_op/SET_LDT", "fail/ents"),
]


def _mutant_param(m: tuple[str, str, str, str, str]) -> Any:
    key = f"{m[3]} {m[4]}"
    marks = [pytest.mark.xfail(reason=f"its branch is open: {OPEN[key]}", strict=False)
             ] if key in OPEN else []
    return pytest.param(m, id=m[0], marks=marks)


@pytest.mark.parametrize("mutant", [_mutant_param(m) for m in MUTANTS])
def test_mutant_is_caught(mutant: tuple[str, str, str, str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    method, line, replacement, name, branch = mutant
    runs = cases_for(family(name), branch, PER_BRANCH)
    cases = [run() for run in runs]
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    new = mutated(method, line, replacement)
    for cmd, handler in MM._mmuext_handlers.items():  # mmuext_op's dispatch table
        if handler is getattr(MM, method):
            monkeypatch.setitem(MM._mmuext_handlers, cmd, new)
    monkeypatch.setattr(MM, method, new)
    cases = [run() for run in runs]  # the same states, on the mutant
    assert any(c.problem is not None for c in cases), (
        f"mutant of MM.{method} ({replacement}) survives the checks of {name} {branch}")


# ----------------------------------------------------------------------------------------------
# CPU-interface mutants: one line of refmodel/traps.py or desc.py changed.
# ----------------------------------------------------------------------------------------------
# (module, class or None for a module function, function, the line, the mutated line, the family
# and branch whose check must catch it)
CPU_MUTANTS: list[tuple[Any, str | None, str, str, str, str, str]] = [
    # A code selector's RPL 0 is kept (no fix-up): the trap table gains a ring-0 handler.
    (traps, None, "fixup_guest_code_selector",
     "return sel | 1 if sel & 3 == 0 else sel", "return sel",
     "set_trap_table", "ok/store/cs_rpl0"),
    # The NMI callback is taken from any vCPU of domain 0.
    (traps, "Traps", "register_guest_callback",
     "if v.domain.domain_id != 0 or v.vcpu_id != 0:", "if v.domain.domain_id != 0:",
     "callback_op/register", "fail/nmi/dom0_vcpu0"),
    # iret to ring 0 is let through.
    (traps, "Traps", "do_iret", "if cs & 3 == 0:", "if False:", "iret", "fail/ring0"),
    # A GDT frame must take the writable type to be updated.
    (desc, "Desc", "do_update_descriptor",
     "want = t if t in (PGT.gdt_page, PGT.ldt_page) else PGT.writable_page",
     "want = PGT.writable_page", "update_descriptor", "ok/absent/gdt"),
    # set_gdt types its frames writable, not GDT (a guest could then map its GDT writable).
    (desc, "Desc", "do_set_gdt",
     "if not mm.get_page_and_type_from_pagenr(mfn, PGT.gdt_page, v.domain):",
     "if not mm.get_page_and_type_from_pagenr(mfn, PGT.writable_page, v.domain):",
     "set_gdt", "ok"),
]


@pytest.mark.parametrize("mutant", [pytest.param(m, id=f"{m[1] or m[0].__name__}.{m[2]}")
                                    for m in CPU_MUTANTS])
def test_cpu_mutant_is_caught(mutant: tuple[Any, str | None, str, str, str, str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    module, owner, name, line, replacement, fam, branch = mutant
    runs = cases_for(family(fam), branch, PER_BRANCH)
    cases = [run() for run in runs]
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    holder = getattr(module, owner) if owner else module
    monkeypatch.setattr(holder, name, recompiled(module, holder, name, line, replacement))
    cases = [run() for run in runs]  # the same states, on the mutant
    assert any(c.problem is not None for c in cases), (
        f"mutant of {name} ({replacement}) survives the checks of {fam} {branch}")


def test_descriptor_check_is_the_rule() -> None:
    """The descriptor rule's named conditions (spec.desc.descriptor_check, the branches of
    update_descriptor) hold exactly where the rule accepts a descriptor."""
    import z3

    from xenspec.spec.desc import descriptor_check, descriptor_rule

    lo, hi = z3.BitVecs("lo hi", 32)
    solver = z3.Solver()
    solver.add(descriptor_rule(lo, hi)[0] != descriptor_check(lo, hi).holds)
    assert solver.check() == z3.unsat


# ----------------------------------------------------------------------------------------------
# Grant tables, memory_op and event channels (proofs.branchcheck_gem): every named branch of
# spec.grant_spec, spec.memop_spec and spec.event_spec, on machines the model builds through
# its own hypercalls, with the arguments and the guest-written words the solver chooses.
# ----------------------------------------------------------------------------------------------
# Branch checks that do not pass yet (open questions, as OPEN above).
GEM_OPEN: dict[str, str] = {}


def _gem_param(name: str, branch: str) -> Any:
    key = f"{name} {branch}"
    marks = [pytest.mark.xfail(reason=GEM_OPEN[key], strict=False)] if key in GEM_OPEN else []
    return pytest.param(name, branch, id=key, marks=marks)


GEM_BRANCHES = [_gem_param(f.name, b) for f in gem.FAMILIES for b in gem.branch_names(f)]


def test_gem_lists_name_real_branches() -> None:
    """Every open or unreachable item names a branch the specs have."""
    known = {f"{f.name} {b}" for f in gem.FAMILIES for b in gem.branch_names(f)}
    known |= {f"{f.name} {b}" for f in gem.EVT_FAMILIES for b in gem.evt_branch_names(f)}
    assert set(GEM_OPEN) <= known, sorted(set(GEM_OPEN) - known)
    assert set(gem.UNREACHABLE) <= known, sorted(set(gem.UNREACHABLE) - known)


@pytest.mark.parametrize(("name", "branch"), GEM_BRANCHES)
def test_gem_branch_refines(name: str, branch: str) -> None:
    key = f"{name} {branch}"
    cases = gem.check_one(gem.family(name), branch)
    gem.record(key, cases)
    judge(key, cases, gem.UNREACHABLE)


EVT_BRANCHES = [pytest.param(f.name, b, id=f"{f.name} {b}")
                for f in gem.EVT_FAMILIES for b in gem.evt_branch_names(f)]


@pytest.mark.parametrize(("name", "branch"), EVT_BRANCHES)
def test_gem_event_branch_refines(name: str, branch: str) -> None:
    key = f"{name} {branch}"
    cases = gem.evt_check_one(gem.evt_family(name), branch)
    gem.record(key, cases)
    judge(key, cases, gem.UNREACHABLE)


# Single-line mutants of the grant, memory_op and event models, each a rule the specs have:
# (module, class, method, the line as the model has it, the mutated line, family, branch).
GEM_MUTANTS: list[tuple[Any, type, str, str, str, str, str]] = [
    # A first writable pin ignores GTF_readonly.
    (grant_model, Grants, "_pin",
     "if not act.pinned and not permits(sflags, sdomid, ld.domain_id, readonly):",
     "if not act.pinned and not permits(sflags, sdomid, ld.domain_id, True):",
     "grant_table_op/map_grant_ref", "fail/readonly"),
    # An unmap does not check the PTE's writability against the handle's.
    (grant_model, Grants, "destroy_grant_host_mapping",
     "or bool(old & abi._PAGE_RW) != writable):",
     "):",
     "grant_table_op/unmap_grant_ref", "fail/host/pte_rw"),
    # decrease_reservation gives back a Xen heap page shared with the domain.
    (memop_model, MemOp, "guest_remove_page",
     "if frames.flags[mfn] & PGC_xen_heap:",
     "if False:",
     "memory_op/decrease_reservation", "fail/xen_page"),
    # An IPI raises the port after its own.
    (event_model, Events, "send",
     "self.set_pending(d.vcpus[chn.notify_vcpu], port)",
     "self.set_pending(d.vcpus[chn.notify_vcpu], port + 1)",
     "event_channel_op/send", "ok/ipi"),
    # Closing a VIRQ port leaves it in the VIRQ table.
    (event_model, Events, "close",
     "table[chn.virq] = 0",
     "pass",
     "event_channel_op/close", "ok/virq"),
]


def _gem_runs(name: str, branch: str) -> list[Callable[[], Any]]:
    if name.startswith("event_channel_op"):
        return gem.evt_cases_for(gem.evt_family(name), branch)
    return gem.cases_for(gem.family(name), branch)


@pytest.mark.parametrize("mutant", GEM_MUTANTS,
                         ids=[f"{m[1].__name__}.{m[2]}" for m in GEM_MUTANTS])
def test_gem_mutant_is_caught(mutant: tuple[Any, type, str, str, str, str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    module, cls, method, line, replacement, name, branch = mutant
    runs = _gem_runs(name, branch)
    cases = [run() for run in runs]
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    monkeypatch.setattr(cls, method, recompiled(module, cls, method, line, replacement))
    cases = [run() for run in runs]  # the same states, on the mutant
    assert any(c.problem is not None for c in cases), (
        f"mutant of {cls.__name__}.{method} ({replacement}) survives {name} {branch}")


def test_gem_copy_from_own_grant_by_domid_self() -> None:
    """A copy from the caller's own grant, its domain named DOMID_SELF, succeeds: __gnttab_copy
    (grant_table.c) resolves DOMID_SELF to the caller for a grant reference too. The spec
    must take its success branch on it."""
    w = gem.build_grant_world()
    values = {"v": 1, "src": gem.SELF_REF, "src_dom": abi.DOMID_SELF,
              "dst": w.frames["b_data"], "dst_dom": abi.DOMID_SELF}
    case = gem.run_case(gem.family("grant_table_op/copy"), "ok", values, {})
    assert case.problem is None, case.problem


@pytest.mark.xfail(strict=True, reason=(
    "open: the spec reads the granter's entry on every map, Xen 3.0.4 only for a first pin or "
    "a first writable pin (__gnttab_map_grant_ref), and then maps the frame pinned first: "
    "a second read-only map of an entry the granter rewrote meanwhile succeeds in Xen and the "
    "model, and the spec refuses it. The spec's state has no active grant entries (which "
    "domain pinned a reference, its frame, its pin counts) to state Xen's rule"))
def test_gem_map_of_a_pinned_entry_the_granter_rewrote() -> None:
    w = gem.build_grant_world()
    frame, word = w.entry_words(w.a, gem.RO_REF)
    flags = abi.GNTMAP_host_map | abi.GNTMAP_readonly
    values = {"v": 1, "host_addr": w.b.va(gem.ARG_PAGES + 2), "flags": flags,
              "ref": gem.RO_REF, "dom": w.a.domid, "handle": w.next_handle}
    # A revokes the entry (flags 0) while B's read-only pin of it stands.
    case = gem.run_case(gem.family("grant_table_op/map_grant_ref"), "fail/permit", values,
                        {(frame, word): 0, (frame, word + 1): 0})
    assert case.problem is None, case.problem


def test_gem_map_of_a_grant_pte_a_handle_already_wrote() -> None:
    """B maps ref 1 writable again, with GNTMAP_contains_pte, at the very PTE its handle 0
    already wrote with the same frame and flags: the memory is unchanged, the spec's ghost
    names the new handle, and the model's snapshot must admit it (Grants.slot_writers).
    Found by the full run on a state the solver chose; it failed while the snapshot named
    only the first writer."""
    w = gem.build_grant_world()
    values = {"v": 1, "host_addr": (w.b.first_l1_mfn << abi.PAGE_SHIFT) + 4 * gem.ARG_PAGES,
              "flags": abi.GNTMAP_host_map | abi.GNTMAP_contains_pte, "ref": gem.RW_REF,
              "dom": w.a.domid, "handle": w.next_handle}
    case = gem.run_case(gem.family("grant_table_op/map_grant_ref/contains_pte"), "ok",
                        values, {})
    assert case.problem is None, case.problem


# ----------------------------------------------------------------------------------------------
# The start-of-day spec (proofs.branchcheck_builder): every named check of spec.builder_spec's
# layout_check (build_initial_tables) and elf_check (parse_image and build_domain), with the
# parameters the solver chooses, the smallest and at each check's boundaries.
# ----------------------------------------------------------------------------------------------
SOD_BRANCHES = [pytest.param(f.name, b, id=f"{f.name} {b}")
                for f in sod.FAMILIES for b in sod.branch_names(f)]


def test_sod_lists_name_real_branches() -> None:
    """Every reason and unreachable item names a check the builder's spec has."""
    known = {f"{f.name} {b}" for f in sod.FAMILIES for b in sod.branch_names(f)}
    assert set(sod.UNREACHABLE) <= known, sorted(set(sod.UNREACHABLE) - known)
    for f in sod.FAMILIES:
        fails = {b.removeprefix("fail/") for b in sod.branch_names(f) if b.startswith("fail/")}
        assert set(sod.REASONS[f.name]) == fails, f.name


# The unmodified model's cases by branch, kept for the mutant tests in the same process (a
# built domain of 4 MB takes seconds to compare).
_SOD_CLEAN: dict[tuple[str, str], list[Any]] = {}


def _sod_clean(name: str, branch: str) -> list[Any]:
    if (name, branch) not in _SOD_CLEAN:
        _SOD_CLEAN[name, branch] = sod.check_one(sod.family(name), branch)
    return _SOD_CLEAN[name, branch]


@pytest.mark.parametrize(("name", "branch"), SOD_BRANCHES)
def test_start_of_day_branch_refines(name: str, branch: str) -> None:
    key = f"{name} {branch}"
    _SOD_CLEAN.pop((name, branch), None)
    cases = _sod_clean(name, branch)
    branchcheck.record(key, cases, sod.UNREACHABLE)
    judge(key, cases, sod.UNREACHABLE)


# Single-line mutants of the builders, each a check the spec names: (module, function, the line
# as the model has it, the mutated line, family, branch whose check must catch it). The function
# is replaced wherever the model calls it by name (elfbuild imports bootstrap_layout).
_TABLES, _ELF = "start_of_day/build_initial_tables", "start_of_day/build_domain"
SOD_MUTANTS: list[tuple[Any, str, str, str, str, str]] = [
    # A base aligned to a page only, as setup_guest asks.
    (builder_model, "build_initial_tables", "if virt_base & (_4MB - 1):",
     "if virt_base & (abi.PAGE_SIZE - 1):", _TABLES, "fail/aligned"),
    # No page left for the boot stack after the tables.
    (builder_model, "build_initial_tables", "pt_base_pfn + nr_pt + 1 > nr_mapped",
     "pt_base_pfn + nr_pt > nr_mapped", _TABLES, "fail/tables_fit"),
    # A region one page larger than the domain.
    (builder_model, "build_initial_tables", "nr_mapped > d.tot_pages:",
     "nr_mapped > d.tot_pages + 1:", _TABLES, "fail/pages"),
    # A region that ends exactly at the hole refused (the limit test made strict).
    (builder_model, "build_initial_tables",
     "if virt_base + (nr_mapped << abi.PAGE_SHIFT) > abi.HYPERVISOR_VIRT_START:",
     "if virt_base + (nr_mapped << abi.PAGE_SHIFT) >= abi.HYPERVISOR_VIRT_START:",
     _TABLES, "ok"),
    # VIRT_BASE aligned to a page only.
    (elfbuild_model, "_identify", "if virt_base & ((1 << abi.L2_PAGETABLE_SHIFT) - 1):",
     "if virt_base & (abi.PAGE_SIZE - 1):", _ELF, "fail/aligned"),
    # An image reaching into the hole accepted.
    (elfbuild_model, "_identify",
     "if image.kernel_start < virt_base or image.kernel_end > profile.hypervisor_virt_start:",
     "if image.kernel_start < virt_base:", _ELF, "fail/image_below_hole"),
    # A region of exactly the domain's pages refused.
    (builder_model, "bootstrap_layout", "if lay.nr_mapped > nr_pages:",
     "if lay.nr_mapped >= nr_pages:", _ELF, "ok/tools"),
    # The region's end not checked against the hole.
    (elfbuild_model, "build_domain", "if lay.v_end > hv.hole:", "if False:",
     _ELF, "fail/room"),
]


@pytest.mark.parametrize("mutant", SOD_MUTANTS,
                         ids=[f"{m[1]}: {m[3]}" for m in SOD_MUTANTS])
def test_sod_mutant_is_caught(mutant: tuple[Any, str, str, str, str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    module, name, line, replacement, fam, branch = mutant
    cases = _sod_clean(fam, branch)
    assert cases and all(c.problem is None for c in cases), "the unmutated model passes"
    original = getattr(module, name)
    patched = recompiled(module, module, name, line, replacement)
    for m in (builder_model, elfbuild_model):
        if getattr(m, name, None) is original:
            monkeypatch.setattr(m, name, patched)
    cases = sod.check_one(sod.family(fam), branch)
    assert any(c.problem is not None for c in cases), (
        f"mutant of {name} ({replacement}) survives {fam} {branch}")

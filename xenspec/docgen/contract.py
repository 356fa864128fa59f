"""The conformance suite's contract, per test module, read from the suite itself.

For each module of ``conformance/``: the level it runs at and what it needs offered (its
fixtures and ``needs`` marks), the hypercalls and sub-operations its tests name
(``@pytest.mark.clauses``, grouped by ``Clause.hypercall``) with the way the suite passes their
arguments, the behaviours and invariants it checks, and the tests whose expected outcome
depends on a later Xen fix (``@pytest.mark.fix``, ``xenspec.conformance.profiles``). The guide's
contract page includes the result (``contract-modules.inc``), so the table follows the markers.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from xenspec.conformance.profiles import FIXES, PROFILES
from xenspec.docgen import rst
from xenspec.docgen.clausepages import hypercall_number
from xenspec.docgen.matrix import target
from xenspec.spec import abi
from xenspec.spec.clauses import BY_ID, Kind

MODULES = ("test_mmu", "test_cpu", "test_events", "test_grants", "test_memory",
           "test_differential", "test_guests")

# How the hypercall-level suite (conformance/driver.py) passes each hypercall's arguments. A
# "buffer" is written with write_pfn into the argument area (the first 16 consecutive pfns the
# builder mapped writable) and passed by its guest-virtual address.
ARGUMENTS: dict[str, str] = {
    "mmu_update": "(req, count, pdone, foreigndom): req is an array of ``mmu_update_t`` "
                  "{ptr, val} (8 bytes each) at the start of the argument area; pdone is the "
                  "last word of the area, preset to 0xFFFFFFFF and read back with read_pfn "
                  "after the call; foreigndom DOMID_SELF unless the test names another",
    "mmuext_op": "(ops, count, pdone, foreigndom): an array of ``mmuext_op_t`` {cmd, arg1, "
                 "arg2} (12 bytes each), pdone and foreigndom as for mmu_update",
    "update_va_mapping": "(va, val, 0, flags): registers only; the entry is the low word, the "
                         "third argument (the high word) is 0; flags may carry a vCPU bitmap "
                         "pointer (UVMF_MULTI)",
    "set_gdt": "(frame_list, entries): the list of machine frame numbers (4 bytes each) in the "
               "argument area",
    "update_descriptor": "(maddr low, maddr high, desc low, desc high): registers only",
    "set_trap_table": "(table): ``trap_info_t`` entries in the argument area, ended by an "
                      "all-zero entry; also NULL and unreadable addresses",
    "set_callbacks": "(event cs, event eip, failsafe cs, failsafe eip): registers only",
    "stack_switch": "(ss, esp): registers only",
    "fpu_taskswitch": "(set): registers only",
    "event_channel_op": "(cmd, arg): the ``evtchn_*_t`` structure of the command at the start "
                        "of the argument area; OUT fields are read back with read_pfn",
    "event_channel_op_compat": "(op): an ``evtchn_op_t`` {cmd, union} in the argument area; "
                               "OUT fields read back from the union",
    "set_timer_op": "(timeout low, timeout high): registers only, a 64-bit system time in ns",
    "grant_table_op": "(cmd, uop, count): an array of the command's ``gnttab_*`` structures "
                      "at the start of the argument area (setup_table's frame list further "
                      "in); OUT fields (status, handle, dev_bus_addr, the frame list) are read "
                      "back with read_pfn. A granting domain writes its entries with "
                      "mmu_update into the frames setup_table gives; the suite reads their "
                      "flags back with entries",
    "memory_op": "(cmd, arg): for the reservation operations cmd is the operation with the "
                 "start extent in its high bits and arg a ``xen_memory_reservation`` at the "
                 "start of the argument area, its extent list further in (or NULL, or a "
                 "hand-made address); for the size queries arg points at a domid_t; "
                 "maximum_ram_page takes none",
}
GUEST_ARGUMENTS = "issued by the guest kernel itself, as xen.h defines (not through the adapter)"


@dataclass
class ModuleContract:
    name: str
    summary: str
    needs: list[str]
    clauses: list[str] = field(default_factory=list)
    fixes: dict[str, list[str]] = field(default_factory=dict)  # fix -> tests marked with it
    # Hypercalls the module's source issues that no marker names (set-up: pins, mappings).
    setup: list[str] = field(default_factory=list)

    @property
    def hypercalls(self) -> dict[str, list[str]]:
        """Hypercall name -> the sub-operations (or the hypercall itself) its tests name."""
        out: dict[str, list[str]] = {}
        for cid in self.clauses:
            c = BY_ID[cid]
            if c.kind is Kind.hypercall:
                out.setdefault(c.hypercall, []).append(cid)
        return dict(sorted(out.items(), key=lambda kv: hypercall_number(kv[0]) or 0))

    def of_kind(self, kind: Kind) -> list[str]:
        return [c for c in self.clauses if BY_ID[c].kind is kind]


HYPERCALLS = [n.removeprefix("__HYPERVISOR_") for n, v in vars(abi).items()
              if n.startswith("__HYPERVISOR_") and isinstance(v, int)]
# The driver's wrappers (conformance/driver.py, spec/guestcalls.py MMUCalls) and the hypercall
# each issues.
WRAPPERS = {"set_entry": "mmu_update", "pin": "mmuext_op", "unpin": "mmuext_op",
            "new_baseptr": "mmuext_op"}


def issued_in(source: str) -> list[str]:
    """The hypercalls a test module's source issues: by name in a string, through the
    driver's method of that name, or through a wrapper."""
    out = [h for h in HYPERCALLS if re.search(rf'"{h}"|\.{h}\(', source)]
    out += [h for w, h in WRAPPERS.items() if re.search(rf"\.{w}\(", source)]
    return sorted(set(out), key=HYPERCALLS.index)


def kernels_issue() -> list[str]:
    """The hypercalls the guest test kernels' C and assembly sources issue."""
    from xenspec.conformance.guests import build

    root = Path(build.__file__).resolve().parent
    text = "".join(p.read_text() for p in sorted(root.rglob("*"))
                   if p.suffix in (".c", ".h", ".S"))
    return [h for h in HYPERCALLS if re.search(rf"HYPERVISOR_{h}\b", text)]


def _marks(obj: object) -> list[Any]:
    marks = getattr(obj, "pytestmark", [])
    return list(marks) if isinstance(marks, list) else [marks]


def _test_marks(fn: object) -> Iterable[tuple[str, Any]]:
    """(test id, mark) for each mark of a test function and of its parameter sets."""
    name = getattr(fn, "__name__", "")
    for mark in _marks(fn):
        yield name, mark
        if mark.name == "parametrize" and len(mark.args) > 1:
            for param in mark.args[1]:
                for inner in getattr(param, "marks", ()):
                    ident = getattr(param, "id", None)
                    yield f"{name}[{ident}]" if ident else name, inner


FIXTURE_LEVEL = {"guest_impl": "guest", "hv_impl": "hypercall", "hv_factory": "hypercall"}


def module_contract(name: str) -> ModuleContract:
    module: ModuleType = importlib.import_module(f"xenspec.conformance.{name}")
    source = inspect.getsource(module)
    needs = [level for fixture, level in FIXTURE_LEVEL.items() if fixture in source]
    for mark in _marks(module):
        if mark.name == "needs":
            needs += mark.args
    doc = inspect.cleandoc(module.__doc__ or "").split("\n\n")[0]
    out = ModuleContract(name, " ".join(doc.split()), list(dict.fromkeys(needs)))
    for attr, fn in vars(module).items():
        if not attr.startswith("test_") or not callable(fn):
            continue
        for test, mark in _test_marks(fn):
            for need in mark.args if mark.name == "needs" else ():
                if need not in out.needs:
                    out.needs.append(need)
            if mark.name == "clauses":
                out.clauses += [c for c in mark.args if c not in out.clauses]
            elif mark.name == "fix":
                for fix in mark.args:
                    out.fixes.setdefault(fix, []).append(test)
    out.clauses.sort(key=lambda c: (list(Kind).index(BY_ID[c].kind), c))
    issued = kernels_issue() if needs == ["guest"] or "guest_impl" in source else \
        issued_in(source)
    out.setup = [h for h in issued if h not in out.hypercalls]
    return out


def contracts() -> list[ModuleContract]:
    return [module_contract(m) for m in MODULES]


def _links(cids: list[str]) -> str:
    return ", ".join(rst.ref(target(c), c) for c in cids) or "none"


def module_section(m: ModuleContract) -> str:
    guest = "guest" in m.needs and "hypercall" not in m.needs
    rows = [[rst.literal(h), str(hypercall_number(h)), _links(cids),
             rst.escape(GUEST_ARGUMENTS if guest else ARGUMENTS.get(h, "not documented"))]
            for h, cids in m.hypercalls.items()]
    rows += [[rst.literal(h), str(hypercall_number(h)),
              "none named: " + ("issued by the kernels" if guest else "set-up only"),
              rst.escape(GUEST_ARGUMENTS if guest else ARGUMENTS.get(h, "not documented"))]
             for h in m.setup]
    fixes = rst.bullets(f"{rst.literal(fix)}: " + ", ".join(rst.literal(t) for t in tests)
                        for fix, tests in sorted(m.fixes.items()))
    return rst.page(
        rst.heading(f"{m.name}.py", 1),
        rst.escape(m.summary),
        "Needs offered: " + ", ".join(rst.literal(n) for n in m.needs) + ".",
        rst.table(["Hypercall", "Number", "Sub-operations named", "Arguments"], rows,
                  widths="18 8 30 44"),
        "Behaviours checked: " + _links(m.of_kind(Kind.behaviour)) + ".",
        "Invariants checked: " + _links(m.of_kind(Kind.invariant)) + ".",
        ("Tests depending on a later fix (not applicable under ``--xen-profile=3.0.4``):\n\n"
         + fixes) if m.fixes else "No test of this module depends on a later fix.",
    )


def contract_include() -> str:
    """The per-module sections the guide's contract page includes."""
    return rst.page(*(module_section(m) for m in contracts()))


def fixes_include() -> str:
    """The later fixes the profiles differ by, with Xen's code before and after."""
    tests: dict[str, list[str]] = {}
    for m in contracts():
        for fix, names in m.fixes.items():
            tests.setdefault(fix, []).extend(f"{m.name}.py::{n}" for n in names)
    rows = [[rst.literal(f.id), rst.escape(f.title), rst.escape(f.xen_304), rst.escape(f.fixed),
             rst.escape(f.model),
             ", ".join(rst.literal(t) for t in tests.get(f.id, [])) or "none"]
            for f in FIXES.values()]
    profiles = rst.bullets(f"{rst.literal(p)}: " + (", ".join(sorted(fixes)) or "no later fix")
                           for p, fixes in PROFILES.items())
    return rst.page(profiles, rst.table(
        ["Fix", "What", "Xen 3.0.4", "The fix", "Model", "Tests marked"], rows,
        widths="8 12 25 25 15 15"))

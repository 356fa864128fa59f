"""One page per clause of ``spec.clauses``: for a hypercall its number, arguments and their
layout, validity condition, effects, error returns and spec source; for an invariant its words,
its formula (Python source, and SMT-LIB on a fresh symbolic state) and where the rule comes
from; for every clause the traceability rows. Everything is read from the spec, the proofs'
obligations and the reference model's source."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import z3

from xenspec.docgen import rst, source
from xenspec.docgen.matrix import clause_trace, target
from xenspec.docgen.status import Status, builders_by_clause
from xenspec.spec import abi, symbolic
from xenspec.spec.clauses import Clause, Kind
from xenspec.spec.event_spec import EvtState, EvtView, SymEvtView
from xenspec.spec.invariants import COUNTER_INVARIANTS, INVARIANTS, Invariant
from xenspec.spec.state import StateView
from xenspec.spec.symbolic import SymState, SymView

_ABI_NAME = re.compile(r"\b([A-Z_][A-Z0-9_]*[A-Z0-9])(_\*)?")


def clause_page(c: Clause, obligations: list[str], status: Status) -> str:
    body = {Kind.hypercall: hypercall_body, Kind.invariant: invariant_body,
            Kind.behaviour: behaviour_body}[c.kind](c)
    return rst.page(rst.label(target(c.id)), rst.heading(f"{c.id}: {c.title}"), summary(c),
                    body, clause_trace(c, obligations, status))


def summary(c: Clause) -> str:
    fields = [("Kind", c.kind.value)]
    if c.kind is Kind.hypercall:
        nr = hypercall_number(c.hypercall)
        fields.append(("Hypercall", f"{rst.literal(c.hypercall)} = {nr}" if nr is not None
                       else rst.literal(c.hypercall)))
    fields.append(("Specification", rst.literal(c.spec) if c.spec else "none yet"))
    inv, how = invariant_of(c.id)
    if c.kind is Kind.invariant:
        fields.append(("Statement", rst.escape(inv.statement if inv else c.title)))
        fields.append(("Established", how or "not established by the specification yet"))
    sources = [s.strip() for s in c.source.split(";")]
    if inv is not None:
        sources += [s.strip() for s in inv.source.split(";") if s.strip() not in sources]
    return rst.page(rst.field_list(fields), rst.heading("Where the rule comes from", 1),
                    rst.bullets(rst.escape(s) for s in sources))


def hypercall_number(name: str) -> int | None:
    value = getattr(abi, f"__HYPERVISOR_{name}", None)
    return value if isinstance(value, int) else None


# ----------------------------------------------------------------------------------------------
# Hypercalls.
# ----------------------------------------------------------------------------------------------
def hypercall_body(c: Clause) -> str:
    spec = source.resolve(c.spec) if c.spec else None
    handler = source.handler(c.hypercall)
    return rst.page(
        arguments(c, handler),
        validity(spec),
        effects(spec),
        errors(c, handler),
        spec_source(spec),
        model_source(c, handler),
    )


def arguments(c: Clause, handler: source.ModelFunction | None) -> str:
    nr = hypercall_number(c.hypercall)
    rows = [["EAX", rst.literal(f"__HYPERVISOR_{c.hypercall}"), f"{nr}" if nr is not None else ""]]
    params = handler.arguments if handler else []
    rows += [[reg, rst.literal(p), ""] for reg, p in zip(source.ARGUMENT_REGISTERS, params,
                                                        strict=False)]
    blocks = [rst.heading("Arguments", 1),
              "The guest loads the registers and enters Xen with ``int $0x82``; the result "
              "comes back in EAX (arch-x86_32.h). Argument names are the reference model's "
              f"({rst.literal(handler.qualname) if handler else 'no handler'}).",
              rst.table(["Register", "Argument", "Value"], rows, widths="15 60 25")]
    blocks += [struct_layout(name) for name in (source.structs_read(handler) if handler else [])]
    blocks.append(constants_named(c))
    return rst.page(*blocks)


def struct_layout(name: str) -> str:
    decl, fields = source.layout(name)
    rows = [[str(f.offset), str(f.size), rst.literal(f.name), rst.literal(f.code)] for f in fields]
    size = sum(f.size for f in fields)
    return rst.page(
        rst.heading(f"Layout of {name} ({size} bytes, little-endian)", 2),
        f"Read from guest memory, one per request: {rst.literal(decl)}",
        rst.table(["Offset", "Size", "Field", "Format"], rows, widths="15 15 45 25"),
    )


def constants_named(c: Clause) -> str:
    """The ABI constants the clause's source names (exactly, or a ``PREFIX_*`` family)."""
    names: list[str] = []
    for name, star in _ABI_NAME.findall(c.source):
        if star:
            names += [n for n in vars(abi) if n.startswith(name + "_") and n not in names]
        elif hasattr(abi, name) and name not in names:
            names.append(name)
    names = [n for n in names if not n.startswith("__HYPERVISOR_")]
    if not names:
        return ""
    rows = [[rst.literal(n), rst.literal(show_value(getattr(abi, n)))] for n in names]
    return rst.page(rst.heading("Commands and flags", 2),
                    rst.table(["Name", "Value"], rows, widths="60 40"))


def show_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return repr(value)
    return f"{value} ({value:#x})" if value > 9 else str(value)


def validity(spec: Callable[..., Any] | None) -> str:
    head = rst.heading("Validity condition", 1)
    if spec is None:
        return rst.page(head, "No Z3 specification yet: the rule is the reference model's "
                        "handler below.")
    ok = source.returned_field(spec, 0, "ok")
    code = source.condition(spec, ok) if ok else []
    used = rst.bullets(f"{rst.literal(n)}: {rst.escape(d)}" for n, d in source.helpers(spec))
    return rst.page(
        head, rst.prose(spec.__doc__),
        f"The call succeeds when ``{ok}`` holds:" if code else "",
        rst.code_block("\n".join(code)) if code else "",
        "Built from:" if used else "", used,
    )


def effects(spec: Callable[..., Any] | None) -> str:
    if spec is None:
        return ""
    new = source.returned_field(spec, 1, "new")
    code = source.assignments(spec, new) if new else []
    return rst.page(
        rst.heading("Effects", 1),
        f"On success the state becomes ``{new}``:" if code else
        "On success the state is the one the specification returns (source below).",
        rst.code_block("\n".join(code)) if code else "",
    )


def errors(c: Clause, handler: source.ModelFunction | None) -> str:
    rows = spec_error_rows(c)
    if handler is not None:
        for name, where in source.errno_sources(handler).items():
            rows.append([rst.literal(f"-{name}") + f" ({-getattr(abi, name)})",
                         "reference model: returned by "
                         + ", ".join(rst.literal(w) for w in where)])
    if not rows:
        return rst.page(rst.heading("Error returns", 1), "None: the call always returns 0.")
    return rst.page(
        rst.heading("Error returns", 1),
        "From the specification's failure value and other outcomes, and from the reference "
        "model's handler and the methods it calls (argument decoding: -EFAULT, -ESRCH, "
        "-ENOSYS lie outside the transition specs).",
        rst.table(["EAX", "When"], rows, widths="25 75"),
    )


def spec_error_rows(c: Clause) -> list[list[str]]:
    rows = []
    for label, builder in builders_by_clause().get(c.id, []):
        symbolic.reset_fresh()
        t = builder(SymState.fresh("s"))
        for err in _values(t.err):
            rows.append([rst.literal(source.errno_name(err)), f"specification "
                         f"({rst.escape(label)}): the validity condition is false; the MMU "
                         "state is unchanged"])
        for b in t.others:
            for rc in _values(b.rc):
                rows.append([rst.literal(source.errno_name(rc)), f"specification: outcome "
                             f"``{b.name}``, which changes the state (see the spec source)"])
    return rows


def _values(term: z3.ExprRef) -> list[int]:
    """The values a return code can take: a constant, or each arm of an If-chain (callback_op
    answers -EINVAL for an NMI callback and -ENOSYS for other types)."""
    term = z3.simplify(term)
    if z3.is_bv_value(term):
        return [term.as_signed_long()]
    if z3.is_app_of(term, z3.Z3_OP_ITE):
        return [v for arm in term.children()[1:] for v in _values(arm)]
    raise ValueError(f"a return code that is neither a constant nor an If-chain: {term}")


def spec_source(spec: Callable[..., Any] | None) -> str:
    if spec is None:
        return ""
    where = f"{spec.__module__}:{spec.__qualname__}"
    return rst.page(rst.heading("Specification source", 1),
                    f"{rst.literal(where)}, as the proofs use it:",
                    rst.code_block(source.source_of(spec)))


def model_source(c: Clause, handler: source.ModelFunction | None) -> str:
    command = source.command_handler(c.id)
    shown = [f for f in (command, handler) if f is not None]
    if not shown:
        return ""
    blocks = [rst.heading("Reference model", 1),
              "The reference hypervisor's code for this call, checked against the "
              "specification on generated runs where a specification exists."]
    for f in shown:
        blocks += [f"{rst.literal(f.module)}, {rst.literal(f.qualname)}:",
                   rst.code_block(f.source)]
    return rst.page(*blocks)


# ----------------------------------------------------------------------------------------------
# Invariants and behaviours.
# ----------------------------------------------------------------------------------------------
def invariant_of(cid: str) -> tuple[Invariant | None, str]:
    """The registered invariant with this id and how it is established."""
    for inv in INVARIANTS:
        if inv.id == cid:
            return inv, "proved: every MMU hypercall specification preserves it"
    for inv in COUNTER_INVARIANTS:
        if inv.id == cid:
            return inv, "checked on every concrete state the reference model reaches"
    return None, ""


def invariant_body(c: Clause) -> str:
    inv, _ = invariant_of(c.id)
    spec = source.resolve(c.spec) if c.spec else None
    functions = list(dict.fromkeys(f for f in (spec, inv.check if inv else None) if f))
    if not functions:
        return "Not formalised yet: no function of the specification states this invariant."
    blocks = [rst.heading("In words", 1)]
    blocks += [rst.prose(f.__doc__) for f in functions]
    for f in functions:
        blocks += [rst.heading(f"Formula: {f.__name__}", 1), formula_intro(f),
                   rst.code_block(source.source_of(f)), smt_section(f)]
    return rst.page(*blocks)


def _view_of(f: Callable[..., Any]) -> str:
    """The state interface ``f`` is written against: 'StateView', 'EvtView' or ''."""
    params = list(inspect.signature(f).parameters.values())
    ann = params[0].annotation if params else None
    if ann in ("StateView", StateView):
        return "StateView"
    return "EvtView" if ann in ("EvtView", EvtView) else ""


def formula_intro(f: Callable[..., Any]) -> str:
    where = rst.literal(f"{f.__module__}:{f.__name__}")
    view = _view_of(f)
    if view == "StateView":
        return (f"{where}, written once against the state-access interface "
                "(``spec.state.StateView``): the same function checks a running model and "
                "yields the solver's formula.")
    if view == "EvtView":
        two = len(inspect.signature(f).parameters) > 1
        return (f"{where}, written once against the event-channel state interface "
                "(``spec.event_spec.EvtView``): the same function checks a running model "
                "and yields the solver's formula" + (
                    "; it relates the state before and after one transition made by domain "
                    "``c``." if two else "."))
    return f"{where}, one definition for Python ints and Z3 bit-vectors:"


def smt_section(spec: Callable[..., Any]) -> str:
    head = rst.heading("SMT-LIB", 2)
    try:
        text = smt_text(spec)
    except NotImplementedError as exc:
        return rst.page(head, f"No symbolic form: {rst.escape(str(exc))}. The invariant is "
                        "evaluated on concrete states only.")
    over = {"StateView": "a fresh symbolic state (``spec.symbolic``; quantifiers range over "
                         "all 32-bit values)",
            "EvtView": "fresh symbolic event-channel states (``spec.event_spec.EvtState``)",
            }.get(_view_of(spec), "symbolic 32-bit words")
    return rst.page(head, f"The formula Z3 receives, built on {over}:",
                    rst.code_block(text, "text"))


def smt_text(spec: Callable[..., Any]) -> str:
    """The invariant as SMT-LIB: on fresh symbolic states (a ``SymView`` for a
    ``StateView``, a ``SymEvtView`` for an ``EvtView``; a two-state invariant gets an old and a
    new one), other parameters being 32-bit words named after them (the descriptor rule's
    ``lo, hi``, the calling domain ``c``)."""
    symbolic.reset_fresh()
    params = inspect.signature(spec).parameters.values()
    args = [_symbolic_argument(p.name, p.annotation) for p in params]
    solver = z3.Solver()
    solver.add(spec(*args))
    return str(solver.sexpr())


def _symbolic_argument(name: str, annotation: Any) -> Any:
    if annotation in ("StateView", StateView):
        return SymView(SymState.fresh(name))
    if annotation in ("EvtView", EvtView):
        return SymEvtView(EvtState.fresh(name))
    if annotation in ("Word", "int", inspect.Parameter.empty):
        return z3.BitVec(name, 32)
    raise NotImplementedError(f"it reads a {annotation}, which enumerates what a concrete "
                              "state holds")


def _prose_with_lists(doc: str | None) -> str:
    """Like ``rst.prose``, but a paragraph of ``* `` items becomes a bullet list."""
    out = []
    for para in inspect.cleandoc(doc or "").split("\n\n"):
        if para.startswith("* "):
            items = re.split(r"\n(?=\* )", para)
            out.append("\n".join(f"- {rst.prose(item[2:])}" for item in items))
        else:
            out.append(rst.prose(para))
    return "\n\n".join(out)


def behaviour_body(c: Clause) -> str:
    spec = source.resolve(c.spec) if c.spec else None
    doc = getattr(inspect.getmodule(spec), "__doc__", "")
    blocks = [rst.heading("Specification", 1), _prose_with_lists(doc),
              rst.code_block(source.source_of(spec))] if spec else []
    return rst.page(rst.heading("Behaviour", 1),
                    "A behaviour of the virtual CPU or the domain builder rather than one "
                    "hypercall: the conformance tests below exercise it on a running guest; "
                    "the reference model implements it (see the pictures in "
                    f"{rst.ref('paths', 'Paths through the hypervisor')}).", *blocks)

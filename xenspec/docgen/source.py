"""Reading the specification and the reference model as source: resolving a clause's
``module:function``, the statements that assign a name in a spec function, the helpers a
condition is built from, the reference model's handler of a hypercall and the error numbers
it (and the methods it calls) can return, and the layout of the ABI's structures."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import struct
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenspec.spec import abi

# arch-x86_32.h (3.0.4), "Hypercall interface": EAX = hypercall number, arguments in
# EBX, ECX, EDX, ESI, EDI; the result comes back in EAX.
ARGUMENT_REGISTERS = ("EBX", "ECX", "EDX", "ESI", "EDI")
_ERRNO = re.compile(r"-\s*abi\.(E[A-Z0-9]+)\b")
_SELF_CALL = re.compile(r"\bself(?:\.\w+)*\.(\w+)\b")
_STRUCT = re.compile(r"\babi\.([A-Z][A-Z0-9_]*_T)\b")


def resolve(target: str) -> Callable[..., Any] | None:
    """The function named by ``module:function`` (a clause's ``spec``), or None."""
    if ":" not in target:
        return None
    module, name = target.split(":", 1)
    fn = getattr(importlib.import_module(module), name, None)
    return fn if callable(fn) else None


def source_of(fn: Callable[..., Any]) -> str:
    return textwrap.dedent(getsource(fn))


@functools.cache
def getsource(fn: Callable[..., Any]) -> str:
    """inspect.getsource, read once per function: the docs' generation asks for the same
    functions thousands of times (which spec each builder calls)."""
    return inspect.getsource(fn)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def source_lines(text: str) -> list[str]:
    """``text`` split after each line end (\\n, \\r or \\r\\n, the line ends the parser
    counts), the ends kept: what ``segment`` reads."""
    return list(_LINE.findall(text))


def segment(lines: list[str], node: ast.AST, padded: bool = False) -> str:
    """The source of ``node`` from its file's ``source_lines``, as ast.get_source_segment
    gives it ('' where the node has no position), without splitting the whole file again for
    each node (the ABI page asks for hundreds). The parser's columns count UTF-8 bytes;
    ``padded`` keeps the first line's indentation, every character but tab and form feed
    as a space. tests/test_docs.py holds it to ast.get_source_segment."""
    where = [getattr(node, a, None) for a in ("lineno", "end_lineno", "col_offset",
                                              "end_col_offset")]
    if None in where:
        return ""
    first, last, start, end = (int(n) for n in where)  # type: ignore[arg-type]
    head = lines[first - 1].encode()
    if first == last:
        return head[start:end].decode()
    pad = "".join(c if c in "\t\f" else " " for c in head[:start].decode()) if padded else ""
    return "".join([pad + head[start:].decode(), *lines[first:last - 1],
                    lines[last - 1].encode()[:end].decode()])


def first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ") if doc else ""


def _function_node(fn: Callable[..., Any]) -> ast.FunctionDef:
    node = ast.parse(source_of(fn)).body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def assignments(fn: Callable[..., Any], name: str) -> list[str]:
    """The source of every statement in ``fn`` that assigns ``name`` (alone or in a tuple)."""
    src = source_lines(source_of(fn))
    out = []
    for node in ast.walk(_function_node(fn)):
        if isinstance(node, ast.Assign) and any(name in _names(t) for t in node.targets):
            out.append(segment(src, node))
    return [s for s in out if s]


def condition(fn: Callable[..., Any], name: str) -> list[str]:
    """The statements that assign ``name`` and, transitively, the local names it is built
    from, in source order: the part of a spec function that defines its ``name``."""
    src = source_lines(source_of(fn))
    stmts = [n for n in _function_node(fn).body if isinstance(n, ast.Assign)]
    wanted, picked = {name}, set()
    for node in reversed(stmts):
        if any(wanted & _names(t) for t in node.targets):
            picked.add(id(node))
            wanted |= _names(node.value)
    return [segment(src, n) for n in stmts if id(n) in picked]


def returned_field(fn: Callable[..., Any], position: int, keyword: str) -> str:
    """The local name ``fn`` passes as argument ``position`` (or ``keyword``) of the
    ``Transition`` it returns; '' when it passes an expression."""
    for node in ast.walk(_function_node(fn)):
        call = node.value if isinstance(node, ast.Return) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == "Transition"):
            continue
        args = {k.arg: k.value for k in call.keywords}
        arg = call.args[position] if len(call.args) > position else args.get(keyword)
        return arg.id if isinstance(arg, ast.Name) else ""
    return ""


def _names(target: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def helpers(fn: Callable[..., Any]) -> list[tuple[str, str]]:
    """(name, first docstring line) of each documented function of ``fn``'s module it calls."""
    module = inspect.getmodule(fn)
    seen: list[tuple[str, str]] = []
    for node in ast.walk(_function_node(fn)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee = getattr(module, node.func.id, None)
            doc = first_line(callee.__doc__) if inspect.isfunction(callee) else ""
            if doc and node.func.id not in [n for n, _ in seen] and callee is not fn:
                seen.append((node.func.id, doc))
    return seen


# ----------------------------------------------------------------------------------------------
# The reference model, read as source (nothing is instantiated).
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFunction:
    module: str  # e.g. "refmodel/mm.py"
    qualname: str
    source: str
    node: ast.FunctionDef

    @property
    def doc(self) -> str:
        return ast.get_docstring(self.node) or ""

    @property
    def arguments(self) -> list[str]:
        """The guest's arguments of a hypercall handler: parameters after (self, v)."""
        return [a.arg for a in self.node.args.args[2:]]


# Modules of the reference model that play a guest or drive a scenario, not the hypervisor.
GUEST_SIDE = ("pvguest.py", "scenario.py")


@functools.cache
def model_functions() -> dict[str, list[ModelFunction]]:
    """Every function and method of the reference model, by name."""
    from xenspec import refmodel

    out: dict[str, list[ModelFunction]] = {}
    for path in sorted(Path(refmodel.__path__[0]).glob("*.py")):
        if path.name in GUEST_SIDE:
            continue
        text = path.read_text()
        lines = source_lines(text)
        for qualname, node in _functions(ast.parse(text)):
            src = textwrap.dedent(segment(lines, node, padded=True))
            fn = ModelFunction(f"refmodel/{path.name}", qualname, src, node)
            out.setdefault(node.name, []).append(fn)
    return out


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for top in tree.body:
        if isinstance(top, ast.FunctionDef):
            found.append((top.name, top))
        elif isinstance(top, ast.ClassDef):
            found += [(f"{top.name}.{m.name}", m) for m in top.body
                      if isinstance(m, ast.FunctionDef)]
    return found


def model_function(name: str) -> ModelFunction | None:
    found = model_functions().get(name, [])
    return found[0] if len(found) == 1 else None


def handler(hypercall: str) -> ModelFunction | None:
    """The reference model's ``do_<hypercall>``."""
    return model_function(f"do_{hypercall}")


def command_handler(clause_id: str) -> ModelFunction | None:
    """The model's function for one command of a multiplexed hypercall, by Xen's naming:
    ``mmu_update/NORMAL_PT_UPDATE`` -> ``normal_pt_update``, ``mmuext_op/PIN_L1_TABLE`` ->
    ``mmuext_pin_l1_table``."""
    if "/" not in clause_id:
        return None
    hypercall, command = clause_id.split("/", 1)
    stem = hypercall.removesuffix("_op").removesuffix("_update")
    for name in (command.lower(), f"{stem}_{command.lower()}"):
        found = model_function(name)
        if found is not None:
            return found
    return None


def reachable(fn: ModelFunction, depth: int = 2) -> list[ModelFunction]:
    """``fn`` and the model methods it calls through ``self``, ``depth`` calls deep."""
    out = [fn]
    frontier = [fn]
    for _ in range(depth):
        nxt = []
        for f in frontier:
            for name in dict.fromkeys(_SELF_CALL.findall(f.source)):
                callee = model_function(name)
                if callee is not None and callee not in out:
                    out.append(callee)
                    nxt.append(callee)
        frontier = nxt
    return out


def errno_sources(fn: ModelFunction) -> dict[str, list[str]]:
    """Error name -> the model functions that return it, over ``reachable(fn)``."""
    found: dict[str, list[str]] = {}
    for f in reachable(fn):
        for name in _ERRNO.findall(f.source):
            where = found.setdefault(name, [])
            if f.qualname not in where:
                where.append(f.qualname)
    return dict(sorted(found.items(), key=lambda kv: int(getattr(abi, kv[0]))))


def structs_read(fn: ModelFunction) -> list[str]:
    """Names of the ABI structure layouts (``abi.*_T``) the handler reads."""
    names: list[str] = []
    for f in reachable(fn):
        names += _STRUCT.findall(f.source)
    return list(dict.fromkeys(names))


def errno_name(value: int) -> str:
    """``-22`` -> ``-EINVAL``; 0 -> ``0``."""
    if value >= 0:
        return str(value)
    for name in dir(abi):
        if name.startswith("E") and getattr(abi, name) == -value:
            return f"-{name}"
    return str(value)


# ----------------------------------------------------------------------------------------------
# Structure layouts: the struct format in spec/abi.py and the C declaration above it.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    code: str


_SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8, "b": 1, "h": 2, "i": 4, "q": 8}


def struct_comment(name: str) -> str:
    """The comment lines right above ``NAME: Final = struct.Struct(...)`` in spec/abi.py."""
    lines = inspect.getsource(abi).splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{name}:"):
            j = i
            while j > 0 and lines[j - 1].startswith("#") and not lines[j - 1].startswith("# -"):
                j -= 1
            return " ".join(x.lstrip("# ").rstrip() for x in lines[j:i])
    return ""


def field_names(comment: str) -> list[str]:
    """Field names of the C declaration in ``comment``: ``struct x { T a; union {..} b; }`` or
    ``struct x (...): T a, T b``. A union field shows as its name."""
    flat = re.sub(r"union\s*\{[^}]*\}\s*(\w+)", r"\1", comment)
    body = re.search(r"\{(.*)\}", flat)
    parts = body.group(1).split(";") if body else flat.split(":", 1)[-1].split(",")
    names = [re.findall(r"(\w+)\s*(?:\[\w*\])?\s*\.?$", p.strip()) for p in parts]
    return [n[0] for n in names if n]


def layout(name: str) -> tuple[str, list[Field]]:
    """(C declaration, fields with offsets) of ``abi.<name>``; names stay empty when the
    declaration does not parse into as many fields as the format has."""
    fmt: struct.Struct = getattr(abi, name)
    codes = [c for c in fmt.format if c in _SIZES]
    comment = struct_comment(name)
    names = field_names(comment)
    if len(names) != len(codes):
        names = [""] * len(codes)
    fields, offset = [], 0
    for n, c in zip(names, codes, strict=True):
        fields.append(Field(n, offset, _SIZES[c], c))
        offset += _SIZES[c]
    return comment, fields

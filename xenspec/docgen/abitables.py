"""The ABI constant tables, read from ``spec/abi.py`` itself: its section banners become
headings, each ``NAME: Final = value`` a row with its value, the expression it is computed from
and its comment (the header it comes from)."""

from __future__ import annotations

import ast
import inspect
import io
import struct
import tokenize
from dataclasses import dataclass, field

from xenspec.docgen import rst
from xenspec.docgen.source import segment, source_lines
from xenspec.spec import abi


@dataclass
class Constant:
    name: str
    expression: str
    comment: str


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)


def _comments(text: str) -> dict[int, tuple[int, str]]:
    """Line -> (column, text) of every comment in ``text``."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return {t.start[0]: (t.start[1], t.string.lstrip("#").strip())
            for t in tokens if t.type == tokenize.COMMENT}


def _is_banner(comment: str) -> bool:
    return len(comment) > 10 and set(comment) <= {"-", "="}


def sections() -> list[Section]:
    """The constants of spec/abi.py grouped under its banners, in source order."""
    text = inspect.getsource(abi)
    lines = source_lines(text)
    comments = _comments(text)
    assigns = {n.lineno: n for n in ast.parse(text).body if isinstance(n, ast.AnnAssign)}
    out = [Section("Preamble")]
    in_banner, pending = False, []
    for line in range(1, len(text.splitlines()) + 1):
        col, comment = comments.get(line, (-1, ""))
        if col == 0 and _is_banner(comment):
            if not in_banner:
                out.append(Section(""))
            in_banner = not in_banner
        elif col == 0 and in_banner:
            out[-1].title = f"{out[-1].title} {comment}".strip()
        elif col == 0:
            pending.append(comment)
        elif line in assigns:
            out[-1].constants.append(_constant(lines, assigns[line], comments, pending))
            pending = []
    return [s for s in out if s.constants]


def _constant(lines: list[str], node: ast.AnnAssign, comments: dict[int, tuple[int, str]],
              pending: list[str]) -> Constant:
    assert isinstance(node.target, ast.Name) and node.value is not None
    # A definition continued over several lines is shown on one (a table cell is one line).
    expr = " ".join(segment(lines, node.value).replace("\\\n", " ").split())
    trailing = [comments[n][1] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                if n in comments and comments[n][0] > 0]
    return Constant(node.target.id, expr, " ".join([*pending, *trailing]))


def show(value: object) -> str:
    if isinstance(value, struct.Struct):
        return f"struct {value.format!r}, {value.size} bytes"
    if isinstance(value, frozenset):
        return "{" + ", ".join(str(v) for v in sorted(value)) + "}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x} ({value})" if value > 9 else str(value)
    return repr(value)


def _row(c: Constant) -> list[str]:
    value = show(getattr(abi, c.name))
    computed = "" if c.expression.strip() in (value, repr(getattr(abi, c.name))) else c.expression
    literal_expr = computed.split("(")[0] if computed.startswith("struct.Struct") else computed
    try:
        plain = str(ast.literal_eval(literal_expr)) == str(getattr(abi, c.name))
    except (ValueError, SyntaxError):
        plain = False
    return [rst.literal(c.name), rst.literal(value),
            "" if plain else rst.literal(computed), rst.escape(c.comment)]


def abi_page() -> str:
    blocks = [rst.label("abi-constants"), rst.heading("ABI constants"),
              "Every number of the guest ABI as ``xenspec.spec.abi`` defines it, generated from "
              "that module's source: the banner of each group names the Xen header it comes "
              "from (Xen 3.0.4, ``xen/include/public/`` unless another path is given). The "
              "guests' C header and the reference model read the same values."]
    for s in sections():
        rows = [_row(c) for c in s.constants]
        blocks += [rst.heading(s.title, 1), rst.table(["Name", "Value", "Defined as", "Note"],
                                                      rows, widths="28 20 22 30")]
    return rst.page(*blocks)

"""reStructuredText building blocks for the generated pages: escaping, headings, tables,
code blocks, and writing a file only when its text changed (so Sphinx rebuilds only what
the specification changed)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

_LITERAL = re.compile(r"(``.+?``)")
_SPECIAL = re.compile(r"([\\*`|_\[\]<>])")


def escape(text: str) -> str:
    """Plain text as inline reST: markup characters are escaped, ````literals```` are kept."""
    parts = _LITERAL.split(text)
    return "".join(p if i % 2 else _SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def literal(text: str) -> str:
    """Inline literal text (``x``); empty text gives an empty cell."""
    text = text.replace("``", "` `")
    return f"``{text}``" if text.strip() else ""


def prose(doc: str | None) -> str:
    """A docstring as escaped paragraphs (blank lines kept, line breaks joined)."""
    if not doc:
        return ""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(escape(" ".join(p.split())) for p in paragraphs)


def heading(title: str, level: int = 0) -> str:
    mark = "=-~^"[level]
    text = escape(title)
    return f"{text}\n{mark * len(text)}\n"


def label(name: str) -> str:
    return f".. _{name}:\n"


def ref(target: str, text: str) -> str:
    return f":ref:`{escape(text)} <{target}>`"


def code_block(code: str, language: str = "python") -> str:
    body = "\n".join(f"   {line}" if line.strip() else "" for line in code.rstrip().splitlines())
    return f".. code-block:: {language}\n\n{body}\n"


def bullets(items: Iterable[str]) -> str:
    lines = [f"- {item}" for item in items]
    return "\n".join(lines) + "\n" if lines else ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]], widths: str = "auto") -> str:
    """A list-table; cells are reST already (escape them before)."""
    out = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [list(header), *map(list, rows)]:
        for j, cell in enumerate(row):
            lead = "   * - " if j == 0 else "     - "
            out.append(lead + (cell or r"\ "))
    return "\n".join(out) + "\n"


def field_list(fields: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f":{escape(k)}: {v}" for k, v in fields) + "\n"


def page(*blocks: str) -> str:
    return "\n".join(b.rstrip("\n") + "\n" for b in blocks if b)


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` unless it holds that text already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

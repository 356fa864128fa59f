"""Single-line mutants of the reference model for the tests that must catch them: a function
or method recompiled from its own source with one line replaced, so that a mutant is stated as
the line it changes rather than as a copy of the function."""

from __future__ import annotations

import inspect
import textwrap
from types import ModuleType
from typing import Any

from xenspec.refmodel import mm
from xenspec.refmodel.mm import MM


def recompiled(module: ModuleType, holder: Any, name: str, line: str, replacement: str) -> Any:
    """``holder.name`` (a function of ``module``, or a method of a class of it) with ``line``
    replaced, compiled in ``module``'s namespace."""
    source = textwrap.dedent(inspect.getsource(getattr(holder, name)))
    assert source.count(line) == 1, f"{name}: {line!r} not found once"
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(line, replacement), str(module.__file__), "exec"),
         vars(module), namespace)
    return namespace[name]


def mutated(method: str, line: str, replacement: str) -> Any:
    """MM.``method`` with ``line`` replaced (compiled in mm's namespace)."""
    return recompiled(mm, MM, method, line, replacement)


# update_va_mapping writes through any page-table frame its L2 slot names: a directory reached
# through its read-only linear slot gets an unvalidated entry (the class of bug later Xen's
# guest_map_l1e check closes).
UVA_ANY_TABLE = ("guest_map_l1e",
                 "self.frames.type[l1mfn] != PGT.l1_page_table",
                 "self.frames.type[l1mfn] not in (PGT.l1_page_table, PGT.l2_page_table)")

"""Single-line mutants of the reference MMU (refmodel/mm.py) for the tests that must catch
them: a method of ``MM`` recompiled from its own source with one line replaced, so that a
mutant is stated as the line it changes rather than as a copy of the method."""

from __future__ import annotations

import inspect
import textwrap

from xenspec.refmodel import mm
from xenspec.refmodel.mm import MM


def mutated(method: str, line: str, replacement: str) -> object:
    """MM.``method`` with ``line`` replaced (compiled in mm's namespace)."""
    source = textwrap.dedent(inspect.getsource(getattr(MM, method)))
    assert source.count(line) == 1, f"{method}: {line!r} not found once"
    namespace: dict[str, object] = {}
    exec(compile(source.replace(line, replacement), mm.__file__, "exec"),
         vars(mm), namespace)
    return namespace[method]


# update_va_mapping writes through any page-table frame its L2 slot names: a directory reached
# through its read-only linear slot gets an unvalidated entry (the class of bug later Xen's
# guest_map_l1e check closes).
UVA_ANY_TABLE = ("guest_map_l1e",
                 "self.frames.type[l1mfn] != PGT.l1_page_table",
                 "self.frames.type[l1mfn] not in (PGT.l1_page_table, PGT.l2_page_table)")

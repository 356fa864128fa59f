"""Conformance profiles: strict Xen 3.0.4, or Xen 3.0.4 with the later fixes the model follows.

The reference model and the specification follow a few later Xen security fixes where Xen
3.0.4's own behaviour lets a guest break an invariant (refmodel/mm.py, refmodel/memop.py,
refmodel/grant.py and refmodel/xenstore.py say so in their docstrings). A conformance test
whose expected outcome differs between the two carries ``@pytest.mark.fix(ID)`` naming the
fix; ``--xen-profile`` says which one the implementation under test is:

``3.0.4+fixes`` (the default)
    Xen 3.0.4 with every fix of ``FIXES``: the behaviour the reference model implements.
``3.0.4``
    Xen 3.0.4 as released. A test marked with a fix is reported as *not applicable under
    profile 3.0.4 (ID)*, never as passed: each such behaviour of 3.0.4 is the hole the fix
    closes (a writable page-table mapping, an unvalidated page-directory entry), which the
    suite's invariant checks rightly refuse, so there is no safe 3.0.4 outcome to check.

Each fix names the advisory (where there is one), Xen 3.0.4's code and the later code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    id: str  # the advisory (XSA-n), or a short name where the change had none
    title: str
    xen_304: str  # what Xen 3.0.4 does, and where
    fixed: str  # what the fix does, and where
    model: str  # where the reference model and the specification follow it


FIXES: dict[str, Fix] = {f.id: f for f in (
    Fix("XSA-182", "page-table update fast path",
        "xen/arch/x86/mm.c, mod_l2_entry (and mod_l1_entry): an update that keeps the frame "
        "and _PAGE_PRESENT (for an L1 entry also _PAGE_RW) is written without reference "
        "handling, so a read-only linear page-directory entry can be made writable in place",
        "XSA-182 (CVE-2016-6258), xen/arch/x86/mm.c, mod_l*_entry: the fast path is taken "
        "only when no bit outside FASTPATH_FLAG_WHITELIST changes",
        "spec/pagetable.py FASTPATH_FLAG_WHITELIST, refmodel/mm.py mod_l1_entry, "
        "mod_l2_entry"),
    Fix("uva-l1-only", "update_va_mapping acts on an L1 table only",
        "xen/arch/x86/mm.c, do_update_va_mapping and guest_map_l1e: the entry is reached "
        "through the linear page table whatever the directory slot names, so through a "
        "linear slot a page-directory entry is written under the L1 rules",
        "later Xen's do_update_va_mapping (xen/arch/x86/mm.c; pv/mm.c since 4.11) refuses "
        "(-EINVAL) unless the frame guest_map_l1e returns has type PGT_l1_page_table; no "
        "advisory number is known to this project for it",
        "refmodel/mm.py guest_map_l1e"),
    Fix("XSA-31", "memory_op extent order",
        "xen/common/memory.c, increase_reservation / decrease_reservation / "
        "populate_physmap: nothing bounds extent_order before 1 << extent_order is used",
        "XSA-31 (CVE-2012-5515), xen/common/memory.c, do_memory_op: an extent_order above "
        "MAX_ORDER is refused before anything is computed from it",
        "refmodel/memop.py"),
    Fix("XSA-224", "grant map with a device mapping",
        "xen/common/grant_table.c, __gnttab_map_grant_ref: the device mapping's references "
        "are taken after the PTE is written and the result ignored ((void)get_page)",
        "XSA-224 (CVE-2017-10920..10922), xen/common/grant_table.c, map_grant_ref: the "
        "references are taken first and a map that cannot have them fails",
        "refmodel/grant.py"),
    Fix("XSA-227", "grant PTE addresses aligned",
        "xen/arch/x86/mm.c, create_grant_pte_mapping and destroy_grant_pte_mapping: the PTE "
        "address of a GNTMAP_contains_pte map is used as given, so a misaligned one writes "
        "a grant PTE across two entries of the L1 table",
        "XSA-227 (CVE-2017-12137), xen/arch/x86/mm.c: a PTE address that is not aligned to "
        "an entry is refused (GNTST_general_error)",
        "refmodel/grant.py _grant_pte_slot"),
    Fix("XSA-326", "xenstored watch events bounded",
        "tools/xenstore/xenstored_watch.c, add_event: events are queued without bound",
        "XSA-326 (CVE-2022-42311 to CVE-2022-42318), tools/xenstore: the events held for a "
        "connection are bounded, later ones dropped",
        "refmodel/xenstore.py MAX_PENDING_EVENTS_BYTES"),
)}

DEFAULT = "3.0.4+fixes"
# Each profile: the fixes an implementation of it has.
PROFILES: dict[str, frozenset[str]] = {"3.0.4": frozenset(), DEFAULT: frozenset(FIXES)}


def not_applicable(profile: str, fixes: tuple[str, ...]) -> str:
    """Why a test marked with ``fixes`` does not apply under ``profile`` ('' if it does)."""
    absent = [f for f in fixes if f not in PROFILES[profile]]
    return f"not applicable under profile {profile} ({', '.join(absent)})" if absent else ""

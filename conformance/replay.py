"""Differential runs: an implementation and the reference model side by side on one sequence of
MMU hypercalls, compared over what the specification defines, up to a renaming of machine
frames; and the command that replays a sequence::

    python -m xenspec.conformance.replay --implementation=IMPL STEPS.json   (or the JSON itself)

**Steps** are JSON objects naming frames independently of the machine (``Ref``): a domain's pfn
``["dom", k, pfn]``, its i-th start-of-day table ``["table", k, i]`` (0 the directory, then the
L1s), a frame of Xen's ``["xen", 0, 0]``, a frame past RAM ``["beyond", 0, 0]``. Each side turns
them into its own machine frame numbers through its own P2M.

**Start of day.** Both sides get the same two domains (``SIZES``). Where the builder puts its
page tables, the virtual base and its entry flags are the implementation's choice (the adapter's
``DomainInfo`` says where they are), so the reference side is not built by the model's own
builder: it is given the implementation's start-of-day page tables, translated pfn for pfn, and
pins and loads them as Xen's builder does. The model thereby checks that they validate, and the
two start-of-day states must then agree (types, counts, pins, validation, base pointers): a
difference there is reported as a builder difference, before any hypercall.

**The renaming.** Pfn ``p`` of domain ``k`` is machine frame ``p2m_k[p]`` on each side, which
renames one machine's frames into the other's. Everything the comparison looks at is written in
those names: a frame's page_info (type, validation, pin, allocation, its owner being the domain,
type and general counts when the implementation counts like Xen), its M2P entry, the base
pointers, and the words of every frame of the domains, each word read as a page-table entry
would be read (its frame field renamed, its 12 flag bits as they are) and zero words left out.
A frame outside both domains' P2Ms is compared as a class only: ``xen`` (owned by DOMID_XEN),
``beyond-RAM``, ``dom k, not in its p2m`` (such as shared_info) or ``other``: which one of Xen's
frames an entry names, and Xen's frames themselves, are each hypervisor's own business (no
domain can map or type them: the invariants, checked on the implementation after every run,
say so), and the two machines need not have the same size. Not compared: the argument area
(each machine's own numbers), Xen's slots of page directories (slots from
L2_PAGETABLE_FIRST_XEN_SLOT of a frame that is not an L1 table: alloc_l2_table's copy of the
hypervisor's own mappings, which stays in the frame after it stops being a directory).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Any

from xenspec.conformance.adapter import HypercallLevel
from xenspec.conformance.coverage import mmuext_clause
from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.view import frame_table
from xenspec.spec import abi
from xenspec.spec.pagetable import PGT

Step = dict[str, Any]
Factory = Callable[[], HypercallLevel]

SIZES = [(96, 40, False), (64, 32, True)]  # (pages, mapped, privileged) of the two domains
# A FOREIGNDOM no domain has: below DOMID_FIRST_RESERVED (0x7FF0, which is DOMID_SELF: xen.h)
# and never created (each side creates two domains).
BOGUS_DOMID = 0x7FE0
XEN_SLOT = abi.L2_PAGETABLE_FIRST_XEN_SLOT
PAGE_MASK = (1 << abi.PAGE_SHIFT) - 1
NAMED_CACHE = 4096  # frames' named words a side keeps (Side.state)


class BuilderDifference(Exception):
    """The two start-of-day states differ, or the model refuses the implementation's tables."""


@dataclass(frozen=True)
class Divergence:
    """Where a sequence first made the two sides disagree: step ``index`` (-1: start of day),
    ``clause`` (the call's clause, or "start of day"), and what differed."""

    index: int
    clause: str
    message: str


# --- naming ----------------------------------------------------------------------------------
def describe_ref(ref: Sequence[Any]) -> str:
    kind, dom, index = ref
    if kind == "dom":
        return f"dom{dom}:pfn{index}"
    if kind == "table":
        return f"dom{dom}:{'directory' if index % 2 == 0 else 'L1 table'}"
    return str(kind)


def clause(step: Step) -> str:
    call = step["call"]
    if call == "mmu_update":
        return "mmu_update/NORMAL_PT_UPDATE"
    if call == "machphys_update":
        return "mmu_update/MACHPHYS_UPDATE"
    if call == "mmuext_op":
        return mmuext_clause(step["cmd"])
    return str(call)


def describe(step: Step) -> str:
    """One line saying what a step does, starting with its clause."""
    dom, fd = step["dom"], step.get("fd", "self")
    call = step["call"]
    if call == "mmu_update":
        (ref, flags) = step["value"]
        return (f"{clause(step)} dom{dom} {describe_ref(step['table'])}[{step['index']}] = "
                f"{describe_ref(ref)}|{flags:#x} foreigndom={fd}")
    if call == "machphys_update":
        return (f"{clause(step)} dom{dom} M2P[{describe_ref(step['frame'])}] = "
                f"{step['gpfn']:#x} foreigndom={fd}")
    if call == "mmuext_op":
        return f"{clause(step)} dom{dom} {describe_ref(step['frame'])} foreigndom={fd}"
    (ref, flags) = step["value"]
    return (f"{clause(step)} dom{dom} page {step['page']} = {describe_ref(ref)}|{flags:#x} "
            f"flags {step['flags']}")


def name_str(name: tuple[Any, ...]) -> str:
    return f"dom{name[1]}:pfn{name[2]}" if name[0] == "dom" else " ".join(map(str, name))


# --- one machine of the pair -----------------------------------------------------------------
class Side:
    """One machine of the pair, with its two domains."""

    def __init__(self, impl: HypercallLevel, guests: list[Guest]) -> None:
        self.impl = impl
        self.guests = guests
        self._xen: int | None = None
        # A frame's named words by its words, where every word names a frame of a domain's
        # P2M (names that never change): most frames are the same from one step to the next.
        self._named: dict[tuple[int, ...], tuple[tuple[int, Any], ...]] = {}

    def xen_frame(self) -> int:
        if self._xen is None:
            # Not frame 0: a word naming it with no flags is 0, as no entry at all.
            found = [m for m, f in enumerate(frame_table(self.impl))
                     if m and f.owner == abi.DOMID_XEN]
            self._xen = found[0] if found else self.impl.nr_frames() + 3
        return self._xen

    def mfn(self, ref: Sequence[Any]) -> int:
        kind, dom, index = str(ref[0]), int(ref[1]), int(ref[2])
        if kind == "xen":
            return self.xen_frame()
        if kind == "beyond":
            return self.impl.nr_frames() + 7
        g = self.guests[dom]
        if kind == "table":
            tables = (g.info.pt_base_pfn, *g.info.l1_pfns)
            return g.mfn(tables[index % len(tables)])
        return g.mfn(index % len(g.info.p2m))

    def pte(self, value: Sequence[Any]) -> int:
        return (self.mfn(value[0]) << abi.PAGE_SHIFT | int(value[1])) & 0xFFFFFFFF

    def domid(self, caller: int, how: str) -> int:
        return {"self": abi.DOMID_SELF, "other": self.guests[1 - caller].domid,
                "io": abi.DOMID_IO}.get(how, BOGUS_DOMID)

    def run(self, step: Step) -> tuple[int, ...]:
        """Issue ``step``; its result (rc and *done, or rc)."""
        k, fd = step["dom"], step.get("fd", "self")
        g = self.guests[k]
        call = step["call"]
        if call == "mmu_update":
            return g.mmu_update([(g.entry_maddr(self.mfn(step["table"]), step["index"]),
                                  self.pte(step["value"]))], self.domid(k, fd))
        if call == "machphys_update":
            return g.mmu_update([(self.mfn(step["frame"]) << abi.PAGE_SHIFT
                                  | abi.MMU_MACHPHYS_UPDATE, step["gpfn"])], self.domid(k, fd))
        if call == "mmuext_op":
            return g.mmuext_op([(step["cmd"], self.mfn(step["frame"]), 0)], self.domid(k, fd))
        if call == "update_va_mapping":
            va = g.va(step["page"]) & 0xFFFFFFFF
            return (g.update_va_mapping(va, self.pte(step["value"]), step["flags"]),)
        raise ValueError(f"unknown step {call!r}")

    # --- the abstract state ------------------------------------------------------------------
    def names(self) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        for k, g in enumerate(self.guests):
            out.update({mfn: ("dom", k, pfn) for pfn, mfn in enumerate(g.info.p2m)})
        return out

    def namer(self) -> Callable[[int], tuple[Any, ...]]:
        names, owners = self.names(), {g.domid: k for k, g in enumerate(self.guests)}
        nr = self.impl.nr_frames()

        def name(mfn: int) -> tuple[Any, ...]:
            found = names.get(mfn)
            if found is not None:
                return found
            if mfn >= nr:
                return ("beyond-RAM",)
            owner = self.impl.frame(mfn).owner
            if owner == abi.DOMID_XEN:
                return ("xen",)
            if owner in owners:
                return (f"dom{owners[owner]}", "not in its p2m")
            return ("other",)

        return name

    def state(self) -> dict[tuple[Any, ...], Any]:
        """What the comparison looks at, in machine-independent names."""
        impl, name = self.impl, self.namer()
        if len(self._named) > NAMED_CACHE:
            self._named = {}
        cache: dict[int, tuple[Any, ...]] = {}

        def word(w: int) -> tuple[Any, ...]:
            frame = w >> abi.PAGE_SHIFT
            n = cache.get(frame)
            if n is None:
                n = cache[frame] = name(frame)
            return (n, w & PAGE_MASK)

        out: dict[tuple[Any, ...], Any] = {}
        for k, g in enumerate(self.guests):
            out[("running", k)] = g.running
            bases = [b for d, b in impl.vcpu_bases() if d == g.domid]
            out[("base pointers", k)] = tuple(name(b) if b else 0 for b in bases)
            for pfn, mfn in enumerate(g.info.p2m):
                f = impl.frame(mfn)
                counts = (f.type_count, f.count) if impl.counts_like_xen else None
                out[("frame", k, pfn)] = (
                    _type_name(f.type), f.validated, f.pinned, f.allocated, counts,
                    f.owner == g.domid, impl.machphys(mfn))
                if pfn in g.arg_pfns:
                    continue
                words = impl.entries(mfn)
                if f.type != PGT.l1_page_table:
                    words = words[:XEN_SLOT]
                out[("words", k, pfn)] = self.named_words(words, word)
        return out

    def named_words(self, words: Sequence[int], word: Callable[[int], tuple[Any, ...]]
                    ) -> tuple[tuple[int, Any], ...]:
        """``named_words``, kept by the words where every word names a frame of a P2M."""
        key = tuple(words)
        named = self._named.get(key)
        if named is None:
            named = named_words(words, word)
            if all(n[0] == "dom" for _, (n, _) in named):
                self._named[key] = named
        return named


def named_words(words: Sequence[int], word: Callable[[int], tuple[Any, ...]]
                ) -> tuple[tuple[int, Any], ...]:
    """A frame's non-zero words (found by a C loop), each with its index and named by
    ``word``."""
    return tuple((i, word(w)) for i, w in compress(enumerate(words), words))


def _type_name(t: int) -> str:
    try:
        return PGT(t).name
    except ValueError:
        return f"type {t}"


def _show(key: tuple[Any, ...], value: Any) -> str:
    if key[0] == "frame" and isinstance(value, tuple):
        t, valid, pinned, alloc, counts, own, m2p = value
        flags = "".join([" validated" if valid else "", " pinned" if pinned else "",
                         " allocated" if alloc else "", "" if own else " NOT OWNED",
                         f" type_count={counts[0]} count={counts[1]}" if counts else ""])
        return f"{t}{flags} m2p={m2p:#x}"
    if key[0] == "base pointers":
        return "[" + ", ".join(name_str(b) if b else "0" for b in value) + "]"
    return str(value)


def diff(impl: dict[tuple[Any, ...], Any], ref: dict[tuple[Any, ...], Any]) -> list[str]:
    """How two states differ, key by key (the first few), in readable terms."""
    out = []
    for key in sorted(set(impl) | set(ref), key=repr):
        a, b = impl.get(key), ref.get(key)
        if a == b:
            continue
        if key[0] == "words":
            wa, wb = dict(a or ()), dict(b or ())
            for i in sorted(set(wa) | set(wb)):
                if wa.get(i) != wb.get(i):
                    out.append(f"dom{key[1]}:pfn{key[2]} word {i}: implementation "
                               f"{_word(wa.get(i))}, reference {_word(wb.get(i))}")
            continue
        where = {"frame": f"dom{key[1]}:pfn{key[2]}", "running": f"dom{key[1]} running",
                 "base pointers": f"dom{key[1]} base pointers"}.get(key[0], str(key))
        out.append(f"{where}: implementation {_show(key, a)}, reference {_show(key, b)}")
    return out[:8]


def _word(w: tuple[Any, ...] | None) -> str:
    return "0" if w is None else f"{name_str(w[0])}|{w[1]:#05x}"


# --- the pair --------------------------------------------------------------------------------
def start_tables(g: Guest) -> dict[int, dict[int, tuple[int | None, int]]]:
    """The start-of-day page tables of ``g``, each word with its frame as a pfn of the domain."""
    pfn_of = {mfn: pfn for pfn, mfn in enumerate(g.info.p2m)}
    out: dict[int, dict[int, tuple[int | None, int]]] = {}
    for pfn in (g.info.pt_base_pfn, *g.info.l1_pfns):
        words = list(g.impl.entries(g.mfn(pfn)))
        if pfn == g.info.pt_base_pfn:
            words = words[:XEN_SLOT]
        table: dict[int, tuple[int | None, int]] = {}
        for i, w in enumerate(words):
            if not w:
                continue
            target = pfn_of.get(w >> abi.PAGE_SHIFT)
            if target is None and w & abi._PAGE_PRESENT:
                raise BuilderDifference(
                    f"start of day: word {i} of dom{g.domid}'s table pfn {pfn} ({w:#x}) names "
                    f"machine frame {w >> abi.PAGE_SHIFT:#x}, which is not in the domain's p2m")
            table[i] = (target, w & PAGE_MASK) if target is not None else (None, w)
        out[pfn] = table
    return out


def make_sides(factory: Factory) -> list[Side]:
    """The implementation's two domains and the reference's, given the implementation's
    start-of-day page tables; BuilderDifference if the start-of-day states differ."""
    impl = factory()
    guests = [Guest(impl, n, m, p) for n, m, p in SIZES]
    ref = ReferenceImplementation()
    mirrored = []
    for g, (n, m, p) in zip(guests, SIZES, strict=True):
        try:
            info = ref.create_domain_with_tables(n, p, g.info, start_tables(g))
        except ValueError as exc:
            raise BuilderDifference(
                f"start of day: the reference model refuses dom{g.domid}'s start-of-day page "
                f"tables: {exc}") from None
        mirrored.append(Guest(ref, n, m, p, info=info))
    sides = [Side(impl, guests), Side(ref, mirrored)]
    found = diff(sides[0].state(), sides[1].state())
    if found:
        raise BuilderDifference("start of day: the builders' states differ (the reference was "
                                "given the implementation's page tables):\n  "
                                + "\n  ".join(found))
    return sides


def check_step(sides: list[Side], step: Step) -> str | None:
    """Issue ``step`` on both sides (when its domain runs on both); what differed, if
    anything."""
    if not all(s.guests[step["dom"]].running for s in sides):
        return None
    what = describe(step)
    impl, ref = (s.run(step) for s in sides)
    if impl != ref:
        return f"{what}: the implementation returned {impl}, the reference model {ref}"
    found = diff(sides[0].state(), sides[1].state())
    if found:
        return f"{what}: the states differ afterwards:\n  " + "\n  ".join(found)
    return None


def run_sequence(factory: Factory, steps: Sequence[Step]) -> Divergence | None:
    """Run ``steps`` on fresh sides; the first divergence, or None if they agree."""
    try:
        sides = make_sides(factory)
    except BuilderDifference as exc:
        return Divergence(-1, "start of day", str(exc))
    for i, step in enumerate(steps):
        msg = check_step(sides, step)
        if msg is not None:
            return Divergence(i, clause(step), msg)
    return None


def shrink(factory: Factory, steps: list[Step], first: Divergence,
           budget_s: float = 60.0) -> tuple[list[Step], Divergence]:
    """A shorter sequence that still diverges at a call of the same clause: drop the steps
    after the divergence, then chunks of steps, halving the chunk size, within ``budget_s``."""
    steps, best = steps[: first.index + 1], first
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        while i < len(steps) and time.monotonic() < deadline:
            candidate = steps[:i] + steps[i + chunk:]
            found = run_sequence(factory, candidate)
            if found is not None and found.clause == best.clause:
                steps, best = candidate[: found.index + 1], found
            else:
                i += chunk
        chunk //= 2
    return steps, best


def replay_command(implementation: str, steps: Sequence[Step]) -> str:
    text = json.dumps(list(steps), separators=(",", ":"))
    return (f"python -m xenspec.conformance.replay --implementation={shlex.quote(implementation)}"
            f" {shlex.quote(text)}")


def counterexample(implementation: str, steps: Sequence[Step], found: Divergence) -> str:
    """The failure report: what diverged, the calls as Python-readable JSON, the command."""
    lines = [found.message, "", f"the {len(steps)} call(s) (the last one diverges):"]
    lines += [f"  {describe(s)}" for s in steps]
    lines += ["", "as JSON:", "  " + json.dumps(list(steps)), "", "replay it with:",
              "  " + replay_command(implementation, steps)]
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from xenspec.conformance.loader import ImplementationError, load

    parser = argparse.ArgumentParser(
        prog="python -m xenspec.conformance.replay",
        description="Replay a sequence of MMU hypercalls on an implementation and on the "
                    "reference model, and report where they first disagree.")
    parser.add_argument("--implementation", default="reference",
                        help="module:factory or a registered name, as for the suite")
    parser.add_argument("steps", help="the steps as JSON, or @FILE holding them")
    args = parser.parse_args(argv)
    text = Path(args.steps[1:]).read_text() if args.steps.startswith("@") else args.steps
    steps = json.loads(text)
    if isinstance(steps, dict):
        steps = steps["steps"]
    try:
        factory = load(args.implementation)
    except ImplementationError as exc:
        parser.error(str(exc))
    try:
        sides = make_sides(factory)  # type: ignore[arg-type]
    except BuilderDifference as exc:
        print(f"DIVERGES {exc}")
        return 1
    print("start of day: the states agree")
    for i, step in enumerate(steps):
        running = all(s.guests[step["dom"]].running for s in sides)
        msg = check_step(sides, step)
        if msg is not None:
            print(f"DIVERGES at step {i}: {msg}")
            return 1
        print(f"step {i}: {describe(step)}: {'agree' if running else 'domain not running'}")
    print("the implementation and the reference model agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())

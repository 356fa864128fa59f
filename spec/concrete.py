"""The part of a concrete ``StateView`` that does not depend on where the state comes from.

Quantifiers are loops over what exists (frames, vCPUs, the present entries of a table) and
connectives are Python's. The reference model's view (``xenspec.refmodel.view``) and the
conformance suite's view of any implementation (``xenspec.conformance.view``) both derive from
it and provide the data: ``frames``, ``vcpus`` and ``present_entries``.

A quantifier that fails records its witness, the binding it failed on (a frame, an entry with
its value, a vCPU, an index, a descriptor), innermost first, in ``witness``; a binding under
which the body held is dropped again, so after a failed check ``witness_text`` names the
frame, slot or vCPU at fault and the values there, in hex.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from xenspec.spec import abi
from xenspec.spec.pagetable import PGT
from xenspec.spec.paging import NATIVE, Paging

Binding = tuple[str, tuple[int, ...]]


class ConcreteLogic:
    """Quantifiers and connectives of a ``StateView`` over a concrete state."""

    paging: Paging = NATIVE  # a view of a compat-pae machine says COMPAT_PAE

    def pae_xen_l2(self, mfn: int) -> bool:
        return False  # no frame has the flag on a native state

    def frames(self) -> Iterable[int]:
        raise NotImplementedError

    def vcpus(self) -> Iterable[int]:
        raise NotImplementedError

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def entry(self, mfn: int, index: int) -> int:
        raise NotImplementedError

    def word(self, mfn: int, j: int) -> int:
        """32-bit word ``j`` of a frame (descriptors are pairs of words): its entry, where
        entries are 4 bytes."""
        return self.entry(mfn, j)

    # vCPU CPU state: by default the state Xen starts a vCPU with (no trap handlers, no
    # callbacks, no stack_switch stack, no GDT); a view that knows more overrides these.
    def trap_cs(self, vcpu: int, vector: int) -> int:
        return 0

    def event_cs(self, vcpu: int) -> int:
        return 0

    def failsafe_cs(self, vcpu: int) -> int:
        return 0

    def kernel_ss(self, vcpu: int) -> int:
        return 0

    def gdt_frame(self, vcpu: int, k: int) -> int:
        return 0

    def gdt_referenced(self, mfn: int) -> bool:
        return False

    # quantifiers
    @property
    def witness(self) -> list[Binding]:
        """The bindings the last failed quantifiers failed on, innermost first."""
        found: list[Binding] | None = self.__dict__.get("_witness")
        if found is None:
            found = self.__dict__["_witness"] = []
        return found

    def _forall(self, kind: str, items: Iterable[tuple[int, ...]],
                body: Callable[..., bool]) -> bool:
        found = self.witness
        mark = len(found)
        for binding in items:
            if not body(*binding):
                found.append((kind, binding))
                return False
            del found[mark:]  # what a holding body's inner quantifiers left
        return True

    def forall_frames(self, body: Callable[[int], bool]) -> bool:
        return self._forall("frame", ((f,) for f in self.frames()), body)

    def forall_vcpus(self, body: Callable[[int], bool]) -> bool:
        return self._forall("vcpu", ((v,) for v in self.vcpus()), body)

    def forall_present_entries(
        self, mfn: int, lo: int, hi: int, body: Callable[[int, int], bool]
    ) -> bool:
        return self._forall("entry", self.present_entries(mfn, lo, hi), body)

    def forall_indices(self, lo: int, hi: int, body: Callable[[int], bool]) -> bool:
        return self._forall("index", ((i,) for i in range(lo, hi)), body)

    def forall_descriptors(self, mfn: int, body: Callable[[int, int], bool]) -> bool:
        return self._forall(
            "descriptor",
            ((j, self.word(mfn, j), self.word(mfn, j + 1))
             for j in range(0, abi.L1_PAGETABLE_ENTRIES, 2)),
            lambda j, lo, hi: body(lo, hi))

    # the witness, in words
    def frame_text(self, mfn: int) -> str:
        """A frame's owner, type, counts and flags, in hex."""
        v: Any = self
        try:
            try:
                kind = PGT(v.type(mfn)).name
            except ValueError:
                kind = f"type {v.type(mfn):#x}"
            flags = "".join([", validated" if v.validated(mfn) else "",
                             ", pinned" if v.pinned(mfn) else ""])
            return (f"owner {v.owner(mfn):#x}, {kind}, type_count {v.type_count(mfn):#x}, "
                    f"count {v.count(mfn):#x}{flags}")
        except Exception as exc:  # the witness never hides the violation it explains
            return f"unreadable: {exc}"

    def witness_text(self) -> str:
        """The recorded witness, outermost binding first, with the values at it in hex."""
        parts: list[str] = []
        frame: int | None = None
        for kind, b in reversed(self.witness):
            if kind == "frame":
                frame = b[0]
                parts.append(f"mfn {frame:#x} ({self.frame_text(frame)})")
            elif kind == "entry":
                index, e = b
                target = e >> abi.PAGE_SHIFT
                parts.append(f"entry {index:#x} = {e:#010x} -> mfn {target:#x} "
                             f"({self.frame_text(target)})")
            elif kind == "vcpu":
                parts.append(self._vcpu_text(b[0]))
            elif kind == "index" and frame is not None:
                parts.append(self._slot_text(frame, b[0]))
            elif kind == "index":
                parts.append(f"index {b[0]:#x}")
            elif kind == "descriptor":
                j, lo, hi = b
                parts.append(f"descriptor {j // 2:#x} = {hi:#010x}{lo:08x}")
        return "; ".join(parts)

    def _vcpu_text(self, vcpu: int) -> str:
        v: Any = self
        try:
            return (f"vcpu {vcpu:#x} of domain {v.vcpu_domain(vcpu):#x}, base pointer "
                    f"{v.base(vcpu):#x}")
        except Exception:
            return f"vcpu {vcpu:#x}"

    def _slot_text(self, frame: int, index: int) -> str:
        v: Any = self
        try:
            text = f"slot {index:#x} = {self.entry(frame, index):#010x}"
            if (v.type(frame) == PGT.l2_page_table
                    and abi.L2_PAGETABLE_FIRST_XEN_SLOT <= index < abi.L2_PAGETABLE_ENTRIES):
                text += f", the hypervisor's {v.xen_l2e(frame, index):#010x}"
            return text
        except Exception:
            return f"index {index:#x}"

    # connectives
    def and_(self, *terms: bool) -> bool:
        return all(terms)

    def or_(self, *terms: bool) -> bool:
        return any(terms)

    def not_(self, a: bool) -> bool:
        return not a

    def implies(self, premise: bool, conclusion: Callable[[], bool]) -> bool:
        return not premise or conclusion()

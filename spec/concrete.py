"""The part of a concrete ``StateView`` that does not depend on where the state comes from.

Quantifiers are loops over what exists (frames, vCPUs, the present entries of a table) and
connectives are Python's. The reference model's view (``xenspec.refmodel.view``) and the
conformance suite's view of any implementation (``xenspec.conformance.view``) both derive from
it and provide the data: ``frames``, ``vcpus`` and ``present_entries``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class ConcreteLogic:
    """Quantifiers and connectives of a ``StateView`` over a concrete state."""

    def frames(self) -> Iterable[int]:
        raise NotImplementedError

    def vcpus(self) -> Iterable[int]:
        raise NotImplementedError

    def present_entries(self, mfn: int, lo: int, hi: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def entry(self, mfn: int, index: int) -> int:
        raise NotImplementedError

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
    def forall_frames(self, body: Callable[[int], bool]) -> bool:
        return all(body(f) for f in self.frames())

    def forall_vcpus(self, body: Callable[[int], bool]) -> bool:
        return all(body(v) for v in self.vcpus())

    def forall_present_entries(
        self, mfn: int, lo: int, hi: int, body: Callable[[int, int], bool]
    ) -> bool:
        return all(body(i, e) for i, e in self.present_entries(mfn, lo, hi))

    def forall_indices(self, lo: int, hi: int, body: Callable[[int], bool]) -> bool:
        return all(body(i) for i in range(lo, hi))

    def forall_descriptors(self, mfn: int, body: Callable[[int, int], bool]) -> bool:
        return all(body(self.entry(mfn, j), self.entry(mfn, j + 1)) for j in range(0, 1024, 2))

    # connectives
    def and_(self, *terms: bool) -> bool:
        return all(terms)

    def or_(self, *terms: bool) -> bool:
        return any(terms)

    def not_(self, a: bool) -> bool:
        return not a

    def implies(self, premise: bool, conclusion: Callable[[], bool]) -> bool:
        return not premise or conclusion()

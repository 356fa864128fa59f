"""The invariant checkers are total: on any state a hostile domain may leave behind they report
violations and never raise (``--check-invariants`` must name what broke, not crash).

Each state is made directly, as a hostile domain or a defect elsewhere could leave it: a PTE
naming a frame beyond machine RAM in a table in use, a base pointer or GDT frame out of
range, a page directory or an event channel naming a domain that no longer exists, and (for
the conformance suite's checker) a privileged domain's mapping of I/O memory beyond RAM,
which Xen allows.
"""

from __future__ import annotations

from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.view import violations
from xenspec.refmodel.event import check_event_invariants
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi


def pair() -> tuple[ReferenceImplementation, Guest, Guest]:
    impl = ReferenceImplementation()
    return impl, Guest(impl, 48, 32), Guest(impl, 48, 32)


def ids(found: list[str]) -> set[str]:
    return {f.split(":", 1)[0] for f in found}


def test_pte_beyond_ram_is_reported() -> None:
    impl, a, _ = pair()
    beyond = impl.hv.memory.nr_frames + 7
    for flags in (abi._PAGE_PRESENT, abi._PAGE_PRESENT | abi._PAGE_RW):
        impl.hv.memory.write_entry(a.l1_mfns[0], 40, beyond << abi.PAGE_SHIFT | flags)
        found = check_invariants(impl.hv)
        assert "INV-OWN" in ids(found), found
    impl.hv.memory.write_entry(a.l1_mfns[0], 40, 0xFFFFF000 | abi._PAGE_PRESENT)
    assert "INV-OWN" in ids(check_invariants(impl.hv))


def test_base_pointer_and_gdt_frame_out_of_range_are_reported() -> None:
    impl, a, _ = pair()
    v = impl.hv.domains[a.domid].vcpus[0]
    v.guest_table = impl.hv.memory.nr_frames + 1
    assert {"INV-BASE", "INV-ISO"} <= ids(check_invariants(impl.hv))
    v.guest_table = a.l2_mfn
    impl.pv.arch(v).gdt_frames = [impl.hv.memory.nr_frames]
    assert {"INV-PRIV", "INV-ISO"} <= ids(check_invariants(impl.hv))


def test_state_of_a_vanished_domain_is_reported() -> None:
    """A page directory in use whose owner is no longer a domain, and an interdomain event
    channel whose peer is gone."""
    impl, a, b = pair()
    ev = impl.pv.events
    port = ev.alloc_unbound(impl.hv.domains[a.domid].vcpus[0], abi.DOMID_SELF, b.domid)
    ev.bind_interdomain(impl.hv.domains[b.domid].vcpus[0], a.domid, port)
    del impl.hv.domains[a.domid]  # its frames and its channel stay behind
    found = check_invariants(impl.hv)
    assert "INV-HOLE" in ids(found), found
    assert "INV-EVT-BIND" in ids(check_event_invariants(impl.hv))


def test_event_checker_creates_no_state() -> None:
    impl, a, _ = pair()
    assert check_event_invariants(impl.hv) == []
    assert a.domid not in impl.pv.events.doms  # reading it did not run evtchn_init


def test_conformance_checker_reads_io_frames() -> None:
    """A privileged domain's L1 entry naming a frame beyond RAM (Xen maps I/O memory so for a
    domain with iomem permission): the checker answers instead of raising IndexError."""
    impl = ReferenceImplementation()
    dom0 = Guest(impl, 48, 32, privileged=True)
    io = impl.nr_frames() + 0x10
    impl.hv.memory.write_entry(dom0.l1_mfns[0], 40, io << abi.PAGE_SHIFT | abi._PAGE_PRESENT
                               | abi._PAGE_RW)
    found = violations(impl, frozenset({dom0.domid}))
    assert isinstance(found, list)
    impl.hv.domains[dom0.domid].vcpus[0].guest_table = io
    assert "INV-BASE" in ids(violations(impl, frozenset({dom0.domid})))

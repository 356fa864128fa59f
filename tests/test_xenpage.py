"""INV-XENPAGE on concrete states: a frame the hypervisor writes into on a guest's behalf
(shared_info, grant frames, the rings a back end maps) is a validated writable frame of a
domain holding a type reference, never a page-table, GDT or LDT frame (x86 mm.c,
share_xen_page_with_guest).

States are made by hand through the frame table, as share_xen_page_with_guest leaves a page
(PGC_xen_heap, PGT_writable_page | PGT_validated, type count 1), and then broken one way at a
time: the concrete check must name INV-XENPAGE. Other tests ask the model itself to share
shared_info and the back ends' rings that way.
"""

from __future__ import annotations

import struct

import pytest

from xenspec.conformance.adapter import XenWrittenFrames
from xenspec.conformance.checks import assert_invariants, invariants_checked
from xenspec.conformance.coverage import NOT_EVALUATED
from xenspec.conformance.guests.build import build_guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.conformance.view import ImplementationView, NotEvaluated, not_evaluated, violations
from xenspec.proofs.refinement import Snapshot, check_refinement
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.elfbuild import build_domain, load_image_file
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.memory import DOMID_NONE, PGC_xen_heap, PGT_validated
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import ConcreteView, check_invariants
from xenspec.spec import abi, mm_spec
from xenspec.spec.invariants import inv_xenpage, inv_xenpage_ref
from xenspec.spec.pagetable import PGT


def share(hv: Hypervisor, mfn: int) -> None:
    """What share_xen_page_with_guest leaves in the frame table (XENSHARE_writable)."""
    hv.frames.flags[mfn] |= PGC_xen_heap | PGT_validated
    hv.frames.type[mfn] = PGT.writable_page
    hv.frames.type_count[mfn] = 1


def xenpage_failures(hv: Hypervisor) -> list[str]:
    return [f for f in check_invariants(hv) if f.startswith("INV-XENPAGE")]


@pytest.fixture
def machine() -> tuple[Hypervisor, Domain, int]:
    """A domain of 8 pages, its first page shared as Xen shares shared_info."""
    hv = Hypervisor(64)
    d = hv.create_domain(8)
    mfn = d.page_list[0]
    share(hv, mfn)
    return hv, d, mfn


def test_a_shared_writable_page_satisfies_it(machine: tuple[Hypervisor, Domain, int]) -> None:
    hv, _, mfn = machine
    assert hv.hypervisor_writes(mfn)
    view = ConcreteView(hv)
    assert inv_xenpage(view) and inv_xenpage_ref(view)
    assert xenpage_failures(hv) == []


@pytest.mark.parametrize("type", [PGT.l1_page_table, PGT.l2_page_table, PGT.gdt_page,
                                  PGT.ldt_page, PGT.none])
def test_a_written_frame_of_another_type_is_a_violation(
    machine: tuple[Hypervisor, Domain, int], type: PGT,
) -> None:
    """The shared_info hole: the frame Xen writes cr2 and vcpu_info into became a table (or
    any type but writable), so Xen's writes would plant unchecked entries."""
    hv, _, mfn = machine
    hv.frames.type[mfn] = type
    assert not inv_xenpage(ConcreteView(hv))
    assert xenpage_failures(hv) == [
        "INV-XENPAGE: A frame Xen writes into for a guest is never a table, GDT or LDT frame. "
        f"At mfn {mfn:#x} (owner 0x0, {type.name}, type_count 0x1, count 0x1, validated)."]


def test_an_unvalidated_or_freed_written_frame_is_a_violation(
    machine: tuple[Hypervisor, Domain, int],
) -> None:
    hv, _, mfn = machine
    hv.frames.flags[mfn] &= ~PGT_validated
    assert not inv_xenpage(ConcreteView(hv))
    hv.frames.flags[mfn] |= PGT_validated
    hv.frames.owner[mfn] = DOMID_NONE  # on the heap's free list
    assert not inv_xenpage(ConcreteView(hv))


def test_a_written_frame_without_xen_type_reference_is_a_violation(
    machine: tuple[Hypervisor, Domain, int],
) -> None:
    """The counter part: with no type reference, nothing stops get_page_type retyping it."""
    hv, _, mfn = machine
    hv.frames.type_count[mfn] = 0
    view = ConcreteView(hv)
    assert inv_xenpage(view) and not inv_xenpage_ref(view)
    assert xenpage_failures(hv) == [
        "INV-XENPAGE: A frame Xen writes into for a guest holds a type reference. "
        f"At mfn {mfn:#x} (owner 0x0, writable_page, type_count 0x0, count 0x1, validated)."]


def test_a_frame_a_back_end_maps_counts_as_written() -> None:
    hv = Hypervisor(64)
    d = hv.create_domain(8)
    ring = d.page_list[1]
    assert not hv.hypervisor_writes(ring) and inv_xenpage(ConcreteView(hv))
    hv.backend_maps[ring] = 1
    hv.frames.type[ring] = PGT.l1_page_table  # the guest made its console ring a table
    assert hv.hypervisor_writes(ring)
    assert not inv_xenpage(ConcreteView(hv))


def test_the_model_refuses_to_pin_a_shared_page(
    machine: tuple[Hypervisor, Domain, int],
) -> None:
    """The model's get_page_type already refuses a type change while Xen's type reference is
    held: pinning the shared page as an L1 fails and the invariant keeps holding."""
    hv, _, mfn = machine
    assert not hv.mm.get_page_type(mfn, PGT.l1_page_table)
    assert hv.frames.type[mfn] == PGT.writable_page
    assert xenpage_failures(hv) == []


# --- the model shares its frames (needs the model's sharing: PGC_xen_heap, backend_maps) ---
def _booted(devices: bool) -> tuple[Hypervisor, PVPlatform, Domain, list[int]]:
    """The hello guest built as the tools build it; the words of its start_info."""
    hv = Hypervisor(1024 + 100)
    pv = PVPlatform(hv)
    image = load_image_file(str(build_guest("hello")))
    built = build_domain(hv, pv, image, 1024, devices=devices)  # one 4 MB region
    d = built.domain
    pfn = (built.start_info_va - image.virt_base) >> abi.PAGE_SHIFT
    raw = hv.memory.read(d.page_list[pfn] << abi.PAGE_SHIFT, abi.PAGE_SIZE)
    return hv, pv, d, list(struct.unpack("<1024I", raw))


def test_a_built_domains_shared_info_is_a_xen_page() -> None:
    hv, pv, d, _ = _booted(devices=False)
    si = pv.darch(d).shared_info_mfn
    assert hv.hypervisor_writes(si)
    assert hv.frames.type[si] == PGT.writable_page
    assert check_invariants(hv) == []


def test_the_rings_the_back_ends_map_are_written_by_them() -> None:
    hv, _, _, start_info = _booted(devices=True)
    for offset in (abi.START_INFO_console_mfn, abi.START_INFO_store_mfn):
        assert hv.hypervisor_writes(start_info[offset // 4]), offset
    assert check_invariants(hv) == []


# --- third-party implementations: an adapter that cannot say is not evaluated ------------------
class Silent:
    """An adapter offering the hypercall level (by delegation) but not
    ``xen_written_frames``."""

    def __init__(self, impl: ReferenceImplementation) -> None:
        self._impl = impl

    def __getattr__(self, name: str) -> object:
        if name == "xen_written_frames":
            raise AttributeError(name)
        return getattr(self._impl, name)


def _broken_reference() -> ReferenceImplementation:
    """The reference model with a domain whose shared page has become an L1."""
    impl = ReferenceImplementation(machine_frames=256)
    info = impl.create_domain(16, 8, False)
    mfn = info.p2m[0]
    share(impl.hv, mfn)
    impl.hv.frames.type[mfn] = PGT.l1_page_table
    return impl


def test_the_suite_evaluates_it_where_the_adapter_says() -> None:
    impl = _broken_reference()
    assert isinstance(impl, XenWrittenFrames)
    assert "INV-XENPAGE" in invariants_checked(impl)
    assert any(v.startswith("INV-XENPAGE") for v in violations(impl))


def test_an_adapter_that_cannot_say_leaves_it_not_evaluated() -> None:
    """Never a vacuous pass: the view refuses to answer, the suite leaves the invariant out
    of what it evaluates and records why."""
    silent = Silent(_broken_reference())
    assert not isinstance(silent, XenWrittenFrames)
    assert "INV-XENPAGE" in not_evaluated(silent)
    assert "INV-XENPAGE" not in invariants_checked(silent)
    with pytest.raises(NotEvaluated):
        ImplementationView(silent).hypervisor_writes(0)
    assert not any(v.startswith("INV-XENPAGE") for v in violations(silent))
    clean = ReferenceImplementation(machine_frames=256)
    clean.create_domain(16, 8, False)
    NOT_EVALUATED.clear()
    assert_invariants(Silent(clean))  # the other invariants are evaluated, and hold
    assert "INV-XENPAGE" in NOT_EVALUATED
    NOT_EVALUATED.clear()


# --- refinement: the set is fixed for the life of a state ---------------------------------------
def test_a_hypercall_that_changes_the_written_frames_does_not_refine() -> None:
    hv = Hypervisor(64)
    d = hv.create_domain(8)
    before = Snapshot.take(hv)
    share(hv, d.page_list[0])
    after = Snapshot.take(hv)
    mismatch = check_refinement(before, after, 0, mm_spec.spec_mmuext_no_state)
    assert mismatch is not None and "writes into changed" in mismatch

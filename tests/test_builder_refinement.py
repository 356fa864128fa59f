"""The domain builder refines its spec (proofs.builder_refinement): for Hypothesis-generated
parameters the model's start-of-day state is the state spec.builder_spec describes, and the
layouts the model refuses are the ones the spec's constraints exclude; the ELF builder's
domains (kernel, start_info, shared_info, the store and console frames) too."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xenspec.conformance.guests.build import build_guest
from xenspec.proofs.builder_refinement import (
    check_build,
    check_elf_layout,
    check_refusal,
    elf_outcome,
    event_mismatches,
    model_params,
    pt_base_pfn,
)
from xenspec.refmodel.builder import BuildError, build_initial_tables
from xenspec.refmodel.elfbuild import GuestImage, build_domain, load_image_file
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi

EXAMPLES = 200 if os.environ.get("XENSPEC_PROFILE") == "long" else 30
_4MB = 1 << abi.L2_PAGETABLE_SHIFT
BASES = st.sampled_from([0, _4MB, 0xC0000000, abi.HYPERVISOR_VIRT_START - _4MB,
                         abi.HYPERVISOR_VIRT_START, 0xC0001000, 0x00200000])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nr_pages=st.integers(1, 40), nr_mapped=st.integers(0, 44), virt_base=BASES,
       pt_base=st.one_of(st.none(), st.integers(0, 44)), seed=st.integers(0, 3),
       privileged=st.booleans(), nr_vcpus=st.integers(1, 3))
@example(nr_pages=1100, nr_mapped=1030, virt_base=abi.HYPERVISOR_VIRT_START - 2 * _4MB,
         pt_base=None, seed=0, privileged=False, nr_vcpus=1)  # two L1 tables
@example(nr_pages=3, nr_mapped=3, virt_base=abi.HYPERVISOR_VIRT_START - _4MB, pt_base=None,
         seed=1, privileged=True, nr_vcpus=2)  # the smallest region, below the hole
@example(nr_pages=12, nr_mapped=10, virt_base=0xC0000000, pt_base=3, seed=2,
         privileged=False, nr_vcpus=1)  # the tables in the middle, ordinary pages after
@example(nr_pages=12, nr_mapped=10, virt_base=0xC0000000, pt_base=8, seed=2,
         privileged=False, nr_vcpus=1)  # the tables last: no room for the boot stack
def test_builder_refines_spec(nr_pages: int, nr_mapped: int, virt_base: int,
                              pt_base: int | None, seed: int, privileged: bool,
                              nr_vcpus: int) -> None:
    hv = Hypervisor(nr_pages + 24, seed=seed)
    d = hv.create_domain(nr_pages, privileged=privileged, nr_vcpus=nr_vcpus)
    where = nr_mapped - 2 - -(-nr_mapped // abi.L1_PAGETABLE_ENTRIES) if pt_base is None \
        else pt_base
    try:
        layout = build_initial_tables(hv, d, nr_mapped, virt_base, pt_base_pfn=pt_base)
    except BuildError:
        assert check_refusal(model_params(hv, d, nr_mapped, virt_base, where)) == []
        return
    assert layout.pt_base_pfn == where
    assert check_build(hv, model_params(hv, d, nr_mapped, virt_base, where)) == []


@pytest.mark.parametrize("guest,nr_pages,devices", [("hello", 1024, False),
                                                    ("demo", 1100, True)])
def test_elf_builder_refines_spec(guest: str, nr_pages: int, devices: bool) -> None:
    """The ELF builder's domain: kernel, p2m list, start_info (and with devices the store and
    console frames, and the backend domain's frames) on a machine just big enough."""
    hv = Hypervisor(nr_pages + 100)
    pv = PVPlatform(hv)
    image = load_image_file(str(build_guest(guest)))
    built = build_domain(hv, pv, image, nr_pages, devices=devices)
    d = built.domain
    p = model_params(hv, d, built.nr_mapped, image.virt_base, pt_base_pfn(hv, built),
                     pv.darch(d).shared_info_mfn)
    assert check_build(hv, p) == []
    if not devices:  # with devices the backend domain holds the other ends of two channels
        assert event_mismatches(pv.events, p, len(d.vcpus)) == []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_bytes=st.integers(1, 40 * abi.PAGE_SIZE), nr_pages=st.integers(900, 2200),
       devices=st.booleans(), privileged=st.booleans(),
       virt_base=st.sampled_from([0xC0000000, 0, _4MB, abi.HYPERVISOR_VIRT_START - _4MB]))
@example(kernel_bytes=abi.PAGE_SIZE, nr_pages=4000, devices=False, privileged=False,
         virt_base=0xC0000000)
@example(kernel_bytes=890 * abi.PAGE_SIZE, nr_pages=3100, devices=True, privileged=False,
         virt_base=0xC0000000)  # less than 512 KB after the stack: 4 MB more
@example(kernel_bytes=889 * abi.PAGE_SIZE, nr_pages=1024, devices=False, privileged=False,
         virt_base=0xC0000000)  # 4 MB with exactly 512 KB after the stack
@example(kernel_bytes=1911 * abi.PAGE_SIZE, nr_pages=3072, devices=False, privileged=False,
         virt_base=0xC0000000)  # a third table frame pushes the region to 12 MB: four
@example(kernel_bytes=abi.PAGE_SIZE, nr_pages=1023, devices=False, privileged=True,
         virt_base=0xC0000000)  # requires too much space
def test_elf_layout_refines_spec(kernel_bytes: int, nr_pages: int, devices: bool,
                                 privileged: bool, virt_base: int) -> None:
    """build_domain on a synthetic image of ``kernel_bytes``: its region, start_info, page
    tables and boot stack are elf_layout's, its refusals elf_accepts's, and the domain it
    builds is the spec's initial state (compared for domains of one region of 4 MB: the
    comparison walks every frame)."""
    image = GuestImage([(virt_base, b"\x90", kernel_bytes)], virt_base, virt_base, None)
    kernel_end = virt_base + kernel_bytes
    hv = Hypervisor(nr_pages + 100)
    pv = PVPlatform(hv)
    tools = devices or not privileged
    try:
        built = build_domain(hv, pv, image, nr_pages, devices=devices, privileged=privileged)
    except BuildError:
        assert check_elf_layout(virt_base, kernel_end, nr_pages, tools, None) == []
        return
    assert check_elf_layout(virt_base, kernel_end, nr_pages, tools, elf_outcome(hv, built)) == []
    d = built.domain
    if nr_pages <= 1100:
        p = model_params(hv, d, built.nr_mapped, virt_base, pt_base_pfn(hv, built),
                         pv.darch(d).shared_info_mfn)
        assert check_build(hv, p) == []
        if not devices:
            assert event_mismatches(pv.events, p, len(d.vcpus)) == []

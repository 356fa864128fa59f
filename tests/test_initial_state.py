"""The initial states the domain builders make satisfy every invariant (INV-COUNT included).

The invariants of the specification are proved for every initial state the builder can make
(spec/builder_spec.py, the ``start_of_day`` obligations; tests/test_builder_refinement.py checks
that the model builds those states). These tests evaluate every invariant, including the
counter and event-channel invariants the proofs leave out, on concrete builds: the
start-of-day page tables of ``refmodel.builder`` and the ELF builder's whole domain (kernel,
start_info, boot stack, hypercall page) for the guest kernels of the conformance suite.
"""

from __future__ import annotations

import pytest

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.builder import build_initial_tables
from xenspec.refmodel.elfbuild import build_domain, load_image_file
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants


@pytest.mark.parametrize("nr_pages,nr_mapped", [(8, 3), (64, 64), (1025, 1025), (5000, 3000)])
def test_start_of_day_tables_satisfy_invariants(nr_pages: int, nr_mapped: int) -> None:
    hv = Hypervisor(8192)
    d = hv.create_domain(nr_pages)
    build_initial_tables(hv, d, nr_mapped)
    assert check_invariants(hv) == []
    assert d.vcpus[0].guest_table != 0


@pytest.mark.parametrize("guest", ["hello", "demo"])
@pytest.mark.parametrize("domain_mb", [4, 16])
def test_elf_builder_domain_satisfies_invariants(guest: str, domain_mb: int) -> None:
    hv = Hypervisor(64 * 256)
    pv = PVPlatform(hv)
    build_domain(hv, pv, load_image_file(str(build_guest(guest))), domain_mb * 256)
    assert check_invariants(hv) == []

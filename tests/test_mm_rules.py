"""The MMU rules whose effect only the reference model's internals show (xen/arch/x86/mm.c,
Xen 3.0.4, x86_32 non-PAE): TLB flushes, the vCPU's LDT, hypercall numbers.

Every other rule of the paravirtual MMU is tested at the hypercall level, against any
implementation, in conformance/test_mmu.py; the tests here check only what the conformance
adapter does not expose (``Vcpu.tlb_flushes``, ``tlb_invlpgs``, ``ldt_base``/``ldt_ents``,
hypercalls by number), each next to the return code that test_mmu.py also checks.
"""

from __future__ import annotations

import pytest

from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.pvguest import PVGuest
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

EINVAL, ENOSYS = -abi.EINVAL, -abi.ENOSYS


@pytest.fixture
def hv() -> Hypervisor:
    return Hypervisor(1024)


@pytest.fixture
def g(hv: Hypervisor) -> PVGuest:
    return PVGuest(hv, 128)


# --- TLB flushes -------------------------------------------------------------------------------
def test_tlb_flush_and_invlpg(hv, g):
    """MMUEXT_TLB_FLUSH_LOCAL/ALL, MMUEXT_INVLPG_LOCAL/ALL: flush this domain's vCPUs."""
    v, n = g.vcpu, g.vcpu.tlb_flushes
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)]) == (0, 1)
    assert v.tlb_flushes == n + 1
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_ALL, 0, 0)]) == (0, 1)
    assert v.tlb_flushes == n + 2
    ops = [(abi.MMUEXT_INVLPG_LOCAL, 0xC0005000, 0), (abi.MMUEXT_INVLPG_ALL, 0xC0006000, 0)]
    assert g.mmuext_op(ops) == (0, 2)
    assert v.tlb_invlpgs == [0xC0005000, 0xC0006000]
    assert v.tlb_flushes == n + 2
    assert check_invariants(hv) == []


def test_tlb_flush_multi(hv, g):
    """MMUEXT_TLB_FLUSH_MULTI/INVLPG_MULTI: nothing is flushed when the vCPU mask cannot be
    read; vCPU 0 is flushed when the mask names it."""
    v, n = g.vcpu, g.vcpu.tlb_flushes
    for cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
        assert g.mmuext_op([(cmd, 0xC0005000, 0x1000)]) == (EINVAL, 0)
    assert (v.tlb_flushes, v.tlb_invlpgs) == (n, [])
    mask = g.write_args((1).to_bytes(4, "little"), 0x2000)  # vCPU 0
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_MULTI, 0, mask),
                        (abi.MMUEXT_INVLPG_MULTI, 0xC0005000, mask)]) == (0, 2)
    assert (v.tlb_flushes, v.tlb_invlpgs) == (n + 1, [0xC0005000])


def test_foreigndom_domid_io_flushes(hv, g):
    """set_foreigndom: with DOMID_IO named by a domU the batch still runs (the flush happens)."""
    n = g.vcpu.tlb_flushes
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_LOCAL, 0, 0)], foreigndom=abi.DOMID_IO) == (0, 1)
    assert g.vcpu.tlb_flushes == n + 1


def test_unknown_mmuext_command_stops_batch(hv, g):
    """do_mmuext_op default: the batch stops at the unknown command; ops after it do not run."""
    n = g.vcpu.tlb_flushes
    assert g.mmuext_op([(abi.MMUEXT_TLB_FLUSH_ALL, 0, 0), (99, 0, 0),
                        (abi.MMUEXT_TLB_FLUSH_ALL, 0, 0)]) == (ENOSYS, 1)
    assert g.vcpu.tlb_flushes == n + 1


def test_uvm_invlpg_flushes_va(hv, g):
    """do_update_va_mapping, UVMF_INVLPG|UVMF_LOCAL: invalidate va on this vCPU."""
    va = g.va(20)
    assert g.update_va_mapping(va, g.pte(g.mfn(20), abi._PAGE_PRESENT), abi.UVMF_INVLPG) == 0
    assert g.vcpu.tlb_invlpgs == [va]


def test_uvm_failed_update_still_flushes(hv, g):
    """do_update_va_mapping (3.0.4): the flush runs even when the update failed."""
    n = g.vcpu.tlb_flushes
    assert g.update_va_mapping(0x00400000, 0, abi.UVMF_TLB_FLUSH) == EINVAL
    assert g.vcpu.tlb_flushes == n + 1


# --- the LDT -----------------------------------------------------------------------------------
def test_set_ldt_state(hv, g):
    """MMUEXT_SET_LDT: a refused LDT leaves the vCPU's LDT as it was; an accepted one is
    installed with its base and entry count."""
    v = g.vcpu
    for base, ents in ((0xC0000800, 1), (0x10000000, 8193), (0xFBFFF000, 513)):
        assert g.mmuext_op([(abi.MMUEXT_SET_LDT, base, ents)]) == (EINVAL, 0)
        assert (v.ldt_base, v.ldt_ents) == (0, 0)
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0x10000000, 8192)]) == (0, 1)
    assert (v.ldt_base, v.ldt_ents) == (0x10000000, 8192)
    assert g.mmuext_op([(abi.MMUEXT_SET_LDT, 0xFBFFF000, 512)]) == (0, 1)  # ends at the hole
    assert (v.ldt_base, v.ldt_ents) == (0xFBFFF000, 512)


# --- hypercall numbers -------------------------------------------------------------------------
@pytest.mark.parametrize("nr", [11, 63, 64, 1000])
def test_unknown_hypercall_numbers(hv, g, nr):
    """entry.S hypercall_table / NR_hypercalls: unimplemented numbers return -ENOSYS."""
    assert hv.hypercall(g.vcpu, nr, 1, 2, 3, 4, 5) == ENOSYS
    assert check_invariants(hv) == []

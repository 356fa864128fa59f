"""multicall (xen/common/multicall.c, do_multicall; refmodel/multicall.py): each entry's result
in guest memory, -EFAULT for a list Xen cannot read, nested multicalls refused, preemption
between entries and of a call inside the batch, and the batch ending at an iret (XSA-213)."""

from __future__ import annotations

import pytest

from xenspec.refmodel.hypervisor import HYPERCALL_BUDGET, HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.pvguest import PVGuest
from xenspec.spec import abi

NR = HYPERCALL_NUMBERS
ENTRY = abi.MULTICALL_ENTRY_T
LIST_OFFSET = 8 * abi.PAGE_SIZE  # the entries, in the argument area above any batch
UNWRITTEN = 0x12345678  # what each entry's result holds before the call


@pytest.fixture
def hv() -> Hypervisor:
    return Hypervisor(1 << 12)


@pytest.fixture
def g(hv: Hypervisor) -> PVGuest:
    return PVGuest(hv, 256)


def write_list(g: PVGuest, calls: list[tuple[int, ...]]) -> int:
    """The entries (op, args...) in the guest's memory; their guest-virtual address."""
    raw = b"".join(ENTRY.pack(op, UNWRITTEN, *args, *(0,) * (6 - len(args)))
                   for op, *args in calls)
    return g.write_args(raw, LIST_OFFSET)


def entries(g: PVGuest, n: int) -> list[tuple[int, ...]]:
    raw = g.hv.copy_from_guest(g.vcpu, g.arg_va + LIST_OFFSET, n * ENTRY.size)
    assert raw is not None
    return [ENTRY.unpack_from(raw, k * ENTRY.size) for k in range(n)]


def results(g: PVGuest, n: int) -> list[int]:
    return [e[1] - (1 << 32) if e[1] >> 31 else e[1] for e in entries(g, n)]


def test_each_result_is_written_to_its_entry(g):
    """Each entry is called in order and its return value written to its ``result``; an op
    beyond NR_hypercalls or without a handler gets -ENOSYS; the multicall returns 0."""
    free = g.va(g.layout.nr_mapped - 1)
    calls = [
        (NR["update_va_mapping"], free, 0, 0, abi.UVMF_NONE),  # unmap a page of its own: 0
        (NR["update_va_mapping"], abi.HYPERVISOR_VIRT_START, 0, 0, 0),  # in the hole
        (abi.NR_hypercalls, 0),
        (NR["update_va_mapping"] + 1000, 0),
    ]
    ptr = write_list(g, calls)
    assert g.hypercall("multicall", ptr, len(calls)) == 0
    assert results(g, 4) == [0, -abi.EINVAL, -abi.ENOSYS, -abi.ENOSYS]


def test_an_unreadable_list_is_efault(g):
    """guest_handle_okay over the whole list (-EFAULT before any call); an entry that cannot
    be read ends the batch with -EFAULT, the entries before it done."""
    assert g.hypercall("multicall", abi.HYPERVISOR_VIRT_START - ENTRY.size, 2) == -abi.EFAULT
    last = g.va(g.layout.nr_mapped) - ENTRY.size  # the last entry of the mapped region
    free = g.va(g.layout.nr_mapped - 2)
    raw = ENTRY.pack(NR["update_va_mapping"], UNWRITTEN, free, 0, 0, 0, 0, 0)
    g.hv.copy_to_guest(g.vcpu, last, raw)
    assert g.hypercall("multicall", last, 2) == -abi.EFAULT
    done = g.hv.copy_from_guest(g.vcpu, last, ENTRY.size)
    assert done is not None and ENTRY.unpack(done)[1] == 0


def test_a_nested_multicall_is_refused_and_the_batch_goes_on(g):
    """_MCSF_in_multicall: the inner multicall answers -EINVAL into its entry and the outer
    batch continues with the next entry."""
    inner = g.arg_va + LIST_OFFSET  # the list itself, never run
    free = g.va(g.layout.nr_mapped - 1)
    calls = [(NR["multicall"], inner, 1), (NR["update_va_mapping"], free, 0, 0, 0)]
    ptr = write_list(g, calls)
    assert g.hypercall("multicall", ptr, 2) == 0
    assert results(g, 2) == [-abi.EINVAL, 0]


def test_a_long_batch_is_continued_between_entries(hv, g):
    """The preemption check before each entry: after HYPERCALL_BUDGET entries the multicall is
    continued with call_list advanced and the entries left; every result is written."""
    n = 2 * HYPERCALL_BUDGET + 5
    free = g.va(g.layout.nr_mapped - 1)
    ptr = write_list(g, [(NR["update_va_mapping"], free, 0, 0, 0)] * n)
    hv.trace = []
    assert g.hypercall("multicall", ptr, n) == 0
    pieces = [r for r in hv.trace if r.nr == NR["multicall"]]
    assert [r.args for r in pieces] == [
        (ptr + k * HYPERCALL_BUDGET * ENTRY.size, n - k * HYPERCALL_BUDGET) for k in range(3)]
    assert [r.continued for r in pieces] == [True, True, False]
    assert results(g, n) == [0] * n


def test_a_call_preempted_inside_the_batch_is_recorded_in_its_entry(hv, g):
    """hypercall_create_continuation under _MCSF_in_multicall: the sub-call's continuation
    arguments go into its entry (result: the hypercall number), and the multicall continues
    from that entry; the guest's registers see only the multicall's continuation."""
    m = HYPERCALL_BUDGET + 10
    frame = g.mfn(g.layout.nr_mapped + 1)
    reqs = abi.MMU_UPDATE_T.pack(frame << abi.PAGE_SHIFT | abi.MMU_MACHPHYS_UPDATE, 7) * m
    batch = g.write_args(reqs)
    g.write_args(b"\0" * 4, g.done_va - g.arg_va)
    free = g.va(g.layout.nr_mapped - 1)
    calls = [(NR["mmu_update"], batch, m, g.done_va, abi.DOMID_SELF),
             (NR["update_va_mapping"], free, 0, 0, 0)]
    ptr = write_list(g, calls)
    rc = hv.hypercall(g.vcpu, NR["multicall"], ptr, 2)
    assert rc == NR["multicall"] and g.vcpu.continuation is not None
    assert g.vcpu.continuation.args[:2] == (ptr, 2)
    first = entries(g, 1)[0]
    size = abi.MMU_UPDATE_T.size
    assert first[:6] == (NR["mmu_update"], NR["mmu_update"],
                         batch + HYPERCALL_BUDGET * size, 10 | abi.MMU_UPDATE_PREEMPTED,
                         g.done_va, abi.DOMID_SELF)
    c = g.vcpu.continuation
    assert hv.hypercall(g.vcpu, c.nr, *c.args) == 0
    assert results(g, 2) == [0, 0]
    assert g.read_done() == m and hv.m2p[frame] == 7


def test_the_batch_ends_at_an_iret(g):
    """XSA-213 (Xen 4.9): an iret ends the batch; its result is the multicall's and the
    entries after it are not called (a vCPU without a CPU has no frame: -ENOSYS)."""
    free = g.va(g.layout.nr_mapped - 1)
    calls = [(NR["iret"],), (NR["update_va_mapping"], free, 0, 0, 0)]
    ptr = write_list(g, calls)
    assert g.hypercall("multicall", ptr, 2) == -abi.ENOSYS
    assert results(g, 2) == [-abi.ENOSYS, UNWRITTEN]

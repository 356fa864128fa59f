"""callback_op (x86_32/traps.c do_callback_op, register_guest_callback), vcpu_op (common/domain.c
do_vcpu_op) and the DEBUGCTL MSR (traps.c emulate_privileged_op), Xen 3.0.4, from Python
guests of the reference implementation."""

from __future__ import annotations

import pytest

from xenspec.conformance.driver import Guest
from xenspec.conformance.reference import ReferenceImplementation
from xenspec.refmodel import emulate
from xenspec.refmodel.arch import ArchVcpu, CpuUserRegs
from xenspec.spec import abi

REG = abi.CALLBACK_REGISTER_T
ARG = 0x100  # offset of the argument in the guest's argument area


@pytest.fixture
def impl() -> ReferenceImplementation:
    return ReferenceImplementation()


@pytest.fixture
def g(impl: ReferenceImplementation) -> Guest:
    return Guest(impl, 48, 32)


def arch(impl: ReferenceImplementation, g: Guest) -> ArchVcpu:
    return impl.pv.arch(impl.hv.domains[g.domid].vcpus[0])


def register(g: Guest, type_: int, cs: int, eip: int, flags: int = 0) -> int:
    return g.hypercall("callback_op", abi.CALLBACKOP_register,
                       g.write_args(REG.pack(type_, flags, cs, eip), ARG))


def unregister(g: Guest, type_: int) -> int:
    return g.hypercall("callback_op", abi.CALLBACKOP_unregister,
                       g.write_args(abi.CALLBACK_UNREGISTER_T.pack(type_, 0), ARG))


# --- callback_op ----------------------------------------------------------------------------------
def test_register_event_and_failsafe_as_set_callbacks_does(impl, g):
    """Each type stores its own callback, the code selector fixed up (RPL 0 -> 1) as
    set_callbacks does; the failsafe callback keeps CALLBACKF_mask_events."""
    a = arch(impl, g)
    assert register(g, abi.CALLBACKTYPE_event, abi.FLAT_RING1_CS & ~3, 0xC0001000) == 0
    assert (a.event_callback_cs, a.event_callback_eip) == (abi.FLAT_RING1_CS, 0xC0001000)
    assert (a.failsafe_callback_cs, a.failsafe_callback_eip) == (0, 0)
    assert register(g, abi.CALLBACKTYPE_failsafe, abi.FLAT_RING1_CS, 0xC0002000,
                    abi.CALLBACKF_mask_events) == 0
    assert (a.failsafe_callback_cs, a.failsafe_callback_eip) == (abi.FLAT_RING1_CS, 0xC0002000)
    assert a.failsafe_disables_events and a.event_callback_eip == 0xC0001000
    # set_callbacks registers both with no flags: the failsafe callback no longer masks.
    assert g.hypercall("set_callbacks", abi.FLAT_RING1_CS, 1, abi.FLAT_RING1_CS, 2) == 0
    assert not a.failsafe_disables_events


def test_other_types_commands_and_bad_arguments(impl, g):
    """sysenter (no supervisor_mode_kernel), syscall (x86_64 only) and unknown types are
    -ENOSYS; event and failsafe cannot be unregistered (-EINVAL); an unknown command is
    -ENOSYS; an unreadable argument -EFAULT."""
    before = (arch(impl, g).event_callback_eip, arch(impl, g).failsafe_callback_eip)
    for t in (abi.CALLBACKTYPE_syscall, abi.CALLBACKTYPE_sysenter, 7, 0xFFFF):
        assert register(g, t, abi.FLAT_RING1_CS, 0xC0003000) == -abi.ENOSYS
        assert unregister(g, t) == -abi.ENOSYS
    assert unregister(g, abi.CALLBACKTYPE_event) == -abi.EINVAL
    assert unregister(g, abi.CALLBACKTYPE_failsafe) == -abi.EINVAL
    assert g.hypercall("callback_op", 2, g.write_args(b"\0" * 12, ARG)) == -abi.ENOSYS
    for cmd in (abi.CALLBACKOP_register, abi.CALLBACKOP_unregister):
        assert g.hypercall("callback_op", cmd, abi.HYPERVISOR_VIRT_START) == -abi.EFAULT
    assert (arch(impl, g).event_callback_eip, arch(impl, g).failsafe_callback_eip) == before


def test_nmi_callback_only_for_vcpu0_of_domain0(impl, g):
    """register_guest_nmi_callback: -EINVAL unless domain 0's vCPU 0; unregister succeeds."""
    other = Guest(impl, 48, 32)
    assert g.domid == 0 and other.domid != 0
    assert register(other, abi.CALLBACKTYPE_nmi, abi.FLAT_RING1_CS, 0xC0004000) == -abi.EINVAL
    assert register(g, abi.CALLBACKTYPE_nmi, abi.FLAT_RING1_CS, 0xC0004000) == 0
    assert arch(impl, g).nmi_addr == 0xC0004000
    assert unregister(g, abi.CALLBACKTYPE_nmi) == 0 and arch(impl, g).nmi_addr == 0
    assert unregister(other, abi.CALLBACKTYPE_nmi) == 0


@pytest.mark.parametrize("flags", [0, abi.CALLBACKF_mask_events])
def test_failsafe_bounce_masks_events_only_when_asked(impl, g, flags):
    """entry.S failsafe_callback: TBF_INTERRUPT (events masked) iff the callback was
    registered with CALLBACKF_mask_events."""
    v = impl.hv.domains[g.domid].vcpus[0]
    assert register(g, abi.CALLBACKTYPE_failsafe, abi.FLAT_RING1_CS, 0xC0005000, flags) == 0
    impl.pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)
    regs = CpuUserRegs(eip=0xC0000100, cs=abi.FLAT_RING1_CS, ss=abi.FLAT_RING1_DS,
                       esp=g.va(8) + abi.PAGE_SIZE, eflags=abi.X86_EFLAGS_IF,
                       ds=0x1234, es=0, fs=0, gs=0)
    impl.pv.traps.failsafe_callback(v, regs, "a data segment")
    assert g.running and regs.eip == 0xC0005000 and regs.ds == 0
    mask = impl.pv.vcpu_info_read8(v, abi.VCPU_INFO_evtchn_upcall_mask)
    assert mask == (1 if flags else 0)


# --- vcpu_op --------------------------------------------------------------------------------------
def test_vcpu_op_on_a_vcpu_the_domain_has_not(g):
    """do_vcpu_op checks the id before the command: <0 or >= MAX_VIRT_CPUS -EINVAL, a vCPU
    the domain does not have -ENOENT."""
    arg = g.write_args(b"\0" * abi.SIZEOF_VCPU_GUEST_CONTEXT, 0)
    for cmd in (abi.VCPUOP_initialise, abi.VCPUOP_up, abi.VCPUOP_down, abi.VCPUOP_is_up, 99):
        assert g.hypercall("vcpu_op", cmd, 1, arg) == -abi.ENOENT
        assert g.hypercall("vcpu_op", cmd, abi.MAX_VIRT_CPUS - 1, arg) == -abi.ENOENT
        assert g.hypercall("vcpu_op", cmd, abi.MAX_VIRT_CPUS, arg) == -abi.EINVAL
        assert g.hypercall("vcpu_op", cmd, 0xFFFFFFFF, arg) == -abi.EINVAL


def test_vcpu_op_on_its_own_vcpu(impl, g):
    """vCPU 0 is initialised and up: initialise -EEXIST (-EFAULT for an unreadable context),
    up 0, is_up 1; get_runstate_info writes RUNSTATE_running and the times; down and other
    commands are not modelled (-ENOSYS)."""
    arg = g.write_args(b"\0" * abi.SIZEOF_VCPU_GUEST_CONTEXT, 0)
    assert g.hypercall("vcpu_op", abi.VCPUOP_initialise, 0, arg) == -abi.EEXIST
    assert g.hypercall("vcpu_op", abi.VCPUOP_initialise, 0,
                       abi.HYPERVISOR_VIRT_START - 8) == -abi.EFAULT
    assert g.hypercall("vcpu_op", abi.VCPUOP_up, 0, 0) == 0
    assert g.hypercall("vcpu_op", abi.VCPUOP_is_up, 0, 0) == 1
    size = abi.VCPU_RUNSTATE_INFO_T.size
    info = g.write_args(b"\xff" * size, 0x200)
    assert g.hypercall("vcpu_op", abi.VCPUOP_get_runstate_info, 0, info) == 0
    state, entry, *times = abi.VCPU_RUNSTATE_INFO_T.unpack(g.read_args(0x200, size))
    assert state == abi.RUNSTATE_running and times[2:] == [0, 0]
    assert sum(times) == entry == impl.pv.clock.now_ns()
    assert times[0] == impl.pv.clock.domain_run_ns(g.domid)
    assert g.hypercall("vcpu_op", abi.VCPUOP_get_runstate_info, 0,
                       abi.HYPERVISOR_VIRT_START) == -abi.EFAULT
    for cmd in (abi.VCPUOP_down, abi.VCPUOP_register_runstate_memory_area, 6):
        assert g.hypercall("vcpu_op", cmd, 0, info) == -abi.ENOSYS
    assert g.hypercall("vcpu_op", abi.VCPUOP_is_up, 0, 0) == 1


# --- MSR_DEBUGCTL ---------------------------------------------------------------------------------
def test_rdmsr_of_debugctl_reads_zero(impl, g):
    """3.0.4 emulate_privileged_op reads an MSR it does not know with rdmsr_safe: DEBUGCTL
    exists on the processor and holds its reset value, 0; WRMSR from domain U is ignored."""
    code = g.va(4)
    impl.write_pfn(g.domid, 4, 0, b"\x0f\x32")
    v = impl.hv.domains[g.domid].vcpus[0]
    r = CpuUserRegs(eip=code, cs=abi.FLAT_RING1_CS, ecx=emulate.MSR_IA32_DEBUGCTLMSR,
                    eax=0xAAAA, edx=0xBBBB, eflags=abi.X86_EFLAGS_IF)
    assert impl.pv.emulate.emulate_privileged_op(v, r)
    assert (r.eax, r.edx, r.eip) == (0, 0, code + 2)

"""Guest level: the guest test kernels of conformance/guests, booted by the implementation.

Each kernel prints its result in XTF's words. SUCCESS passes; SKIP is a skipped test; FAILURE
and ERROR fail with the kernel's own lines; no result line at all is CRASH, a failure. The
hostile kernels must instead be crashed by the hypervisor (and only they). Building the kernels
needs ``gcc -m32`` and ``ld``; without them these tests are skipped.

Under ``--abi compat-pae`` every kernel is built for that profile (``build_guest(name,
pae=True)``) and the kernels that are native-only (``NATIVE_ONLY``: they build 2-level page
tables themselves, check an answer only 3.0.4 gives, or were not tried on that profile) are
skipped, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xenspec.conformance import coverage
from xenspec.conformance.adapter import DiskGuestLevel, GuestLevel, GuestRun
from xenspec.conformance.guests.build import build_guest, toolchain_available

RUN_ORDER = 1  # after the hypercall-level tests, before the differential suite
pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")

# A guard against a hung guest, not a timing assertion: each kernel takes well under a second
# on the reference model.
HANG_GUARD_S = 60.0

# The kernels that stay native-only, and why (the guide's PAE page).
_OWN_TABLES = "builds 2-level page tables itself"
NATIVE_ONLY = {
    "demo": _OWN_TABLES, "hostile_mm": _OWN_TABLES, "preempt": _OWN_TABLES,
    "privop": _OWN_TABLES, "ldt": _OWN_TABLES, "bootlayout": _OWN_TABLES,
    "grants": _OWN_TABLES, "xen_version": "checks feature bits Xen 3.0.4 gives and 4.x does not",
    "block": "not tried on compat-pae yet", "pingpong": "not tried on compat-pae yet",
    "hostile_code": "not tried on compat-pae yet",
    "xen_guest_section": "its __xen_guest string declares PAE=no",
    # Modes of a kernel that runs on both profiles otherwise.
    "crash iret-frame-at-hole": "maps a page below the hole through a 2-level table",
    "crash bad-cr3": "expects Xen 3.0.4's crash; the model's compat-pae profile does not "
                     "crash the domain",
}
_ABI = {"pae": False}  # set from --abi for each test (_abi_of_the_run)


@pytest.fixture(autouse=True)
def _abi_of_the_run(request: pytest.FixtureRequest) -> None:
    _ABI["pae"] = request.config.getoption("--abi", "native-3.0.4") == "compat-pae"


def guest_image(name: str, cmdline: str = "") -> Path:
    """The kernel built for the run's ABI profile; a native-only one (or mode) is skipped on
    compat-pae."""
    for what in (name, f"{name} {cmdline}"):
        if _ABI["pae"] and what in NATIVE_ONLY:
            pytest.skip(f"{what} is native-only ({NATIVE_ONLY[what]}); not run under --abi "
                        "compat-pae")
    return build_guest(name, pae=_ABI["pae"])


def boot(impl: GuestLevel, name: str, cmdline: str = "") -> GuestRun:
    run = impl.boot_guest(guest_image(name, cmdline), cmdline, HANG_GUARD_S)
    for call, times in run.hypercalls.items():
        coverage.called(call, times)
    return run


def verdict(run: GuestRun, what: str) -> None:
    """Turn an XTF result into a pytest outcome, quoting the kernel's own failure lines."""
    if run.result == "SUCCESS":
        assert run.shutdown == "poweroff", f"{what}: SUCCESS but shutdown {run.shutdown}"
        return
    if run.result == "SKIP":
        pytest.skip(f"{what}: the kernel skipped itself")
    lines = [ln for ln in run.console.splitlines() if "FAIL" in ln or "ERROR" in ln]
    tail = "\n".join(lines[-15:] or run.console.splitlines()[-15:])
    pytest.fail(f"{what}: {run.result} (shutdown {run.shutdown}; {run.detail})\n{tail}",
                pytrace=False)


GUESTS = [
    ("hello", ["start_of_day", "console_io", "sched_op"]),
    ("bootlayout", ["start_of_day", "mmu_update/NORMAL_PT_UPDATE"]),
    ("xen_version", ["xen_version", "vm_assist"]),
    ("console_sched", ["console_io", "sched_op", "sched_op_compat"]),
    ("traps", ["set_trap_table", "bounce/exception", "bounce/page_fault", "iret",
               "fpu_taskswitch", "privileged/instruction", "syscall/fast_path"]),
    ("ring3", ["stack_switch", "iret", "syscall/fast_path", "bounce/page_fault",
               "privileged/instruction"]),
    ("desc", ["set_gdt", "update_descriptor", "INV-PRIV"]),
    ("privop", ["privileged/emulation", "privileged/instruction", "physdev_op",
                "physdev_op_compat", "set_debugreg", "get_debugreg", "fpu_taskswitch",
                "bounce/page_fault", "stack_switch"]),
    ("ldt", ["mmuext_op/SET_LDT", "ldt/lazy_mapping", "bounce/page_fault", "update_va_mapping"]),
    ("failsafe", ["bounce/failsafe", "set_callbacks", "update_descriptor", "mmuext_op/SET_LDT",
                  "iret"]),
    ("hostile_mm", ["mmu_update/NORMAL_PT_UPDATE", "update_va_mapping", "INV-HOLE",
                    "INV-NOWRPT", "INV-OWN"]),
    ("demo", ["mmu_update/NORMAL_PT_UPDATE", "mmuext_op/PIN_L1_TABLE", "mmuext_op/UNPIN_TABLE",
              "mmuext_op/TLB_FLUSH", "update_va_mapping", "bounce/page_fault",
              "syscall/fast_path", "stack_switch"]),
    ("xen_guest_section", ["start_of_day"]),
    ("balloon", ["memory_op", "memory_op/decrease_reservation",
                 "memory_op/increase_reservation", "mmu_update/MACHPHYS_UPDATE",
                 "INV-FREE-REF"]),
    ("events", ["event_channel_op/bind_ipi", "event_channel_op/send", "event_channel_op/unmask",
                "event_channel_op/alloc_unbound", "event_channel_op/bind_interdomain",
                "event_channel_op/close", "event_channel_op/status",
                "event_channel_op/bind_virq", "event_channel_op/bind_pirq",
                "event_channel_op_compat", "event/delivery", "event/upcall", "set_callbacks",
                "iret", "INV-EVT-BIND"]),
    ("timer", ["set_timer_op", "event_channel_op/bind_virq", "event/delivery", "event/upcall",
               "time/vcpu_time_info"]),
    ("time", ["time/vcpu_time_info", "time/wallclock"]),
    ("grants", ["grant_table_op/setup_table", "grant_table_op/query_size",
                "grant_table_op/map_grant_ref", "grant_table_op/unmap_grant_ref",
                "grant_table_op/copy", "INV-GNT-RO", "INV-OWN"]),
    ("ring", ["io/ring", "event_channel_op/send", "event/upcall"]),
    ("xenstore", ["io/xenstore", "start_of_day", "event_channel_op/send", "sched_op"]),
    ("consring", ["io/console_ring", "start_of_day", "event_channel_op/send"]),
    ("bounce_edges", ["bounce/exception", "event/upcall", "set_trap_table", "syscall/fast_path",
                      "set_gdt", "update_descriptor", "mmuext_op/SET_LDT", "ldt/lazy_mapping"]),
    ("tlb", ["mmuext_op/TLB_FLUSH", "update_va_mapping", "mmu_update/NORMAL_PT_UPDATE",
             "mmuext_op/PIN_L1_TABLE", "mmuext_op/SET_LDT", "ldt/lazy_mapping", "INV-NOWRPT"]),
    ("preempt", ["mmu_update/MACHPHYS_UPDATE", "mmuext_op/TLB_FLUSH", "mmuext_op/PIN_L1_TABLE",
                 "set_trap_table"]),
    ("multicall", ["multicall", "callback_op/register", "callback_op/unregister", "vcpu_op",
                   "event/upcall", "update_va_mapping", "mmu_update/MACHPHYS_UPDATE",
                   "privileged/emulation"]),
]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.clauses(*c), id=n) for n, c in GUESTS])
def test_guest_kernel(guest_impl: GuestLevel, name: str) -> None:
    verdict(boot(guest_impl, name), name)


@pytest.mark.clauses("time/periodic_tick", "set_timer_op", "event_channel_op/bind_virq",
                     "sched_op")
@pytest.mark.parametrize("cmdline", ["periodic", "sleep"])
def test_periodic_tick(guest_impl: GuestLevel, cmdline: str) -> None:
    """schedule.c t_timer_fn: the running vCPU gets VIRQ_TIMER every 10 ms (periodic); a vCPU
    blocked with a one-shot timer set is woken by that timer and no tick before it (sleep)."""
    verdict(boot(guest_impl, "tick", cmdline), f"tick {cmdline}")


# An iret whose frame names a code (and stack) selector, as the kernel's command line gives it
# (conformance/guests/iret_selectors.c), and what Xen 3.0.4 does (x86_32/traps.c do_iret,
# entry.S restore_all_guest's fixup to the failsafe callback, create_bounce_frame): the guest
# runs there, gets a failsafe callback, or is crashed. A kernel that ever finds itself at CPL
# 0 proves it by writing a hypervisor slot and fails.
IRET_CASES = [
    ("e019", "ran cs=e019"), ("5", "ran cs=5"), ("e021", "failsafe cs=e021"),
    ("e009", "failsafe cs=e009"), ("1", "failsafe cs=1"), ("e008", "crash"), ("10", "crash"),
    ("e02b:e033", "ran cs=e02b"), ("e02b:e021", "failsafe cs=e02b ss=e021"),
    ("e02b:e010", "failsafe cs=e02b ss=e010"), ("e02a:e033", "failsafe cs=e02a ss=e033"),
    ("stack:e021", "trap"), ("stack:0", "crash"), ("handler:e008", "failsafe cs=e009"),
]


@pytest.mark.clauses("iret", "bounce/failsafe", "set_callbacks", "INV-PRIV")
@pytest.mark.parametrize(("cmdline", "expected"), IRET_CASES, ids=[c for c, _ in IRET_CASES])
def test_iret_selectors(guest_impl: GuestLevel, cmdline: str, expected: str) -> None:
    run = boot(guest_impl, "iret_selectors", cmdline)
    assert "CPL 0" not in run.console, f"INV-PRIV: iret {cmdline} left the guest in ring 0"
    if expected == "crash":
        assert run.shutdown == "crash", \
            f"iret: an iret to {cmdline} must crash the domain, not {run.shutdown}"
        return
    # A console may prefix its lines (xenspec run writes "(d1) "): the line ends so.
    assert any(ln.endswith(f"outcome: {expected}") for ln in run.console.splitlines()), \
        f"iret: to {cmdline} Xen gives 'outcome: {expected}'; the console:\n{run.console[-600:]}"
    verdict(run, f"iret_selectors {cmdline}")


@pytest.mark.clauses("sched_op", "sched_op_compat")
@pytest.mark.parametrize(
    ("cmdline", "reason"),
    [("0", "poweroff"), ("1", "reboot"), ("2", "suspend"), ("3", "crash"),
     ("1c", "reboot"), ("3c", "crash")])
def test_shutdown_reason(guest_impl: GuestLevel, cmdline: str, reason: str) -> None:
    """sched.h SHUTDOWN_*: the reason a kernel gives is the reason the domain stops with."""
    run = boot(guest_impl, "shutdown_reasons", cmdline)
    assert run.shutdown == reason, f"sched_op shutdown {cmdline}: got {run.shutdown}"


# The block-device front end, given a disk by implementations that can (DiskGuestLevel): the
# default mode writes and reads back a pattern; the others send requests the back end must
# refuse, and the image must come back unchanged.
DISK_MODES = [
    ("", ["io/blkif", "io/ring", "io/xenstore", "event_channel_op/alloc_unbound"]),
    ("hostile", ["io/blkif/errors", "io/blkif"]),
    ("overflow", ["io/blkif/errors", "io/ring"]),
]


@pytest.mark.parametrize(
    "mode", [pytest.param(m, marks=pytest.mark.clauses(*c), id=m or "write-read")
             for m, c in DISK_MODES])
@pytest.mark.needs("guest-disk")
def test_block_device_kernel(guest_impl: GuestLevel, tmp_path: Path, mode: str) -> None:
    assert isinstance(guest_impl, DiskGuestLevel)  # it offers guest-disk (the needs mark)
    image = tmp_path / "disk.img"
    original = bytes((i * 31 + (i >> 9)) & 0xFF for i in range(256 * 512))
    image.write_bytes(original)
    run = guest_impl.boot_guest_with_disk(guest_image("blkfront"), mode, HANG_GUARD_S,
                                         image)
    for call, times in run.hypercalls.items():
        coverage.called(call, times)
    verdict(run, f"blkfront {mode or 'write-read'}")
    if mode:
        assert image.read_bytes() == original, f"blkfront {mode}: the image changed"


# Each hostile kernel breaks one rule of the interface; the hypervisor must crash it.
HOSTILE = [
    ("unhandled", ["bounce/exception"]),
    ("no-kernel-stack", ["stack_switch", "bounce/exception"]),
    ("bad-kernel-stack", ["stack_switch", "bounce/exception"]),
    ("iret-ring0", ["iret", "INV-PRIV"]),
    ("stack-in-hole", ["stack_switch", "INV-HOLE"]),
    ("bad-handler-cs", ["set_trap_table", "INV-PRIV"]),
    ("guest-crash", ["sched_op_compat"]),
    ("unknown-reason", ["sched_op_compat"]),
    ("bad-cr3", ["privileged/emulation", "mmuext_op/NEW_BASEPTR"]),
    ("null-event-callback", ["event/upcall", "set_callbacks"]),
    ("iret-frame-at-hole", ["iret", "INV-HOLE"]),
]


@pytest.mark.parametrize(
    "mode", [pytest.param(m, marks=pytest.mark.clauses(*c), id=m) for m, c in HOSTILE])
def test_hostile_kernel_is_crashed(guest_impl: GuestLevel, mode: str) -> None:
    run = boot(guest_impl, "crash", mode)
    assert run.shutdown == "crash", (
        f"crash mode {mode}: the domain should have been crashed, got {run.shutdown} "
        f"({run.result})\n{run.console[-800:]}")
    assert run.result == "CRASH", f"crash mode {mode}: the kernel ran on to {run.result}"
    assert "PANIC" not in run.console, \
        f"crash mode {mode}: the kernel crashed itself (panic) before the hypervisor could:\n" \
        f"{run.console[-800:]}"

"""Boot the guest test kernels of conformance/guests on the reference hypervisor.

Each kernel reports in XTF's words; the hostile ones must crash their own domain with a
reason, never the model. Needs the machine's gcc -m32 and ld (skipped without them).
"""

from __future__ import annotations

import re
import struct

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.boot import BootResult, Machine, boot
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.domain import ShutdownReason, Vcpu
from xenspec.refmodel.elfbuild import load_image_file
from xenspec.refmodel.event import EventError
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.refmodel.view_pae import check_invariants_pae
from xenspec.spec import abi
from xenspec.spec.abi_profiles import COMPAT_PAE, EOPNOTSUPP, EVTCHN_INIT_CONTROL_T
from xenspec.spec.pagetable import PGT

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

# A guard against a hung guest, not a timing assertion: every guest here finishes in well
# under a second.
HANG_GUARD_S = 60.0


def run(name: str, cmdline: str = "", **kw: object) -> BootResult:
    return boot(str(build_guest(name)), cmdline=cmdline, timeout_s=HANG_GUARD_S, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["hello", "xen_version", "console_sched", "traps", "ring3", "desc", "demo", "hostile_mm",
     "xen_guest_section", "ldt", "failsafe", "segbase", "bootlayout", "stale_tlb", "nt_trap"],
)
def test_guest_succeeds(name: str) -> None:
    r = run(name)
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff
    assert r.exit_status == 0
    assert r.hv is not None
    assert check_invariants(r.hv) == []


@pytest.mark.parametrize("domain_mb", [4, 12])
@pytest.mark.parametrize("devices", [False, True])
@pytest.mark.parametrize("privileged", [False, True])
def test_start_of_day_contract_from_inside(domain_mb: int, devices: bool,
                                           privileged: bool) -> None:
    """The bootlayout kernel checks the bootstrap region as the guest sees it (xen.h's
    start-of-day layout): with and without the store and console pages, for the initial
    domain's layout (privileged, no devices) and in a domain of exactly one 4 MB region."""
    m = Machine(memory_mb=32)
    d = m.add_guest(str(build_guest("bootlayout")), domain_mb, privileged=privileged,
                    devices=devices)
    m.run(timeout_s=HANG_GUARD_S)
    r = m.result(d)
    assert r.test_result == "SUCCESS", r.console
    assert check_invariants(m.hv) == []


@pytest.mark.parametrize(
    ("cmdline", "reason", "status"),
    [("0", ShutdownReason.poweroff, 0), ("1", ShutdownReason.reboot, 2),
     ("2", ShutdownReason.suspend, 3), ("3", ShutdownReason.crash, 1),
     ("1c", ShutdownReason.reboot, 2), ("3c", ShutdownReason.crash, 1)],
)
def test_shutdown_reasons(cmdline: str, reason: ShutdownReason, status: int) -> None:
    r = run("shutdown_reasons", cmdline)
    assert r.reason is reason
    assert r.exit_status == status


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("unhandled", "unhandled trap 14"),
        ("no-kernel-stack", "no kernel stack"),
        ("bad-kernel-stack", "cannot write the bounce frame"),
        ("iret-ring0", "iret to ring 0"),
        ("stack-in-hole", "cannot write the bounce frame"),
        ("bad-handler-cs", "unhandled trap 14"),
        ("guest-crash", "SHUTDOWN_crash"),
        ("unknown-reason", "unknown reason 77"),
    ],
)
def test_hostile_guest_crashes_only_itself(mode: str, why: str) -> None:
    r = run("crash", mode)
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and why in r.crash_reason
    assert r.test_result == "CRASH"
    assert r.hv is not None
    assert check_invariants(r.hv) == []


def test_failed_segment_reload_without_failsafe_callback_crashes_the_domain() -> None:
    """entry.S: create_bounce_frame with no failsafe address is domain_crash_synchronous."""
    r = run("failsafe", "nocallback")
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and "no failsafe callback" in r.crash_reason
    assert "%fs with 0x9" in r.crash_reason
    assert r.hv is not None
    assert check_invariants(r.hv) == []


def test_code_segment_descriptor_cleared_under_the_guest_crashes_it() -> None:
    """entry.S restore_all_guest: the return's iret reloads CS; a not-present descriptor faults
    there (FLT5, FIX5) and, with no failsafe callback, the domain is crashed."""
    r = run("cs_reload")
    assert r.reason is ShutdownReason.crash, r.console
    assert r.crash_reason is not None and "no failsafe callback" in r.crash_reason
    assert "still running" not in r.console


def test_invariants_hold_after_every_hypercall_with_lazy_ldt_pages() -> None:
    """INV-COUNT counts the shadow LDT's references (map_ldt_shadow_page)."""
    r = run("ldt", check_invariants=True)
    assert r.test_result == "SUCCESS", r.console
    assert r.violations == []


def test_spinning_guest_is_stopped_by_the_guard() -> None:
    r = boot(str(build_guest("crash")), cmdline="spin", timeout_s=0.5)
    assert r.reason is None and r.timed_out


def test_trace_records_hypercalls() -> None:
    r = run("hello", trace=True)
    names = [str(t).split()[1].split("(")[0] for t in r.trace]
    # The runtime gives ring 3 the image (mmu_update), maps shared_info, sets its traps.
    assert names[:3] == ["mmu_update", "update_va_mapping", "set_trap_table"]
    assert names[-1] == "sched_op"


def test_pae_only_kernel_is_refused() -> None:
    with pytest.raises(BuildError, match="PAE-only"):
        boot(str(build_guest("pae_only")))


# The guests that build for the compat-pae profile from their one source and pass there (the
# others build their own 2-level page tables or check 3.0.4-only answers: see the docs'
# "ABI profiles" page).
PAE_GUESTS = ["hello", "stale_tlb", "nt_trap", "events", "traps", "ring3", "desc", "failsafe",
              "segbase", "consring", "xenstore", "time", "tlb", "multicall", "balloon",
              "int80_events", "eflags_modes", "bounce_edges", "console_sched"]


@pytest.mark.parametrize("name", PAE_GUESTS)
def test_guest_succeeds_on_compat_pae(name: str) -> None:
    """The same kernel, built for the compat-pae profile, passes on a compat-pae machine,
    whose checks (refmodel/view_pae.py) hold when it is done; the native machine refuses it."""
    image = str(build_guest(name, pae=True))
    r = boot(image, timeout_s=HANG_GUARD_S, devices=True, profile=COMPAT_PAE)
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff
    assert r.hv is not None and check_invariants_pae(r.hv) == []
    with pytest.raises(BuildError, match="PAE-only"):
        boot(image)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "not a valid ELF"), (b"\x7fELF" + b"\x01" * 60, "ELF"),
     (b"hello world" * 10, "not a valid ELF")],
)
def test_malformed_images_are_one_error(tmp_path: object, data: bytes, message: str) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "bad.elf"
    p.write_bytes(data)
    with pytest.raises(BuildError, match=message):
        boot(str(p))


def test_elf_without_xen_identification(tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "a.s").write_text(".globl _start\n_start: jmp _start\n")
    subprocess.run(["gcc", "-m32", "-c", str(d / "a.s"), "-o", str(d / "a.o")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0xC0000000", str(d / "a.o"), "-o",
                    str(d / "a.elf")], check=True)
    with pytest.raises(BuildError, match="not a Xen guest kernel"):
        boot(str(d / "a.elf"))


def test_invariants_hold_after_every_hypercall_of_a_guest() -> None:
    r = run("ring3", memory_mb=32, domain_mb=8, check_invariants=True)
    assert r.test_result == "SUCCESS", r.console
    assert r.violations == []


def test_invariants_hold_with_a_live_gdt() -> None:
    r = run("desc", "keep")
    assert r.test_result == "SUCCESS", r.console
    assert r.hv is not None
    assert check_invariants(r.hv) == []


@pytest.mark.parametrize("masks", [False, True])
def test_compat_sysenter_enters_the_callback(masks: bool) -> None:
    """compat-pae (x86_64/entry.S sysenter_entry, compat/entry.S compat_sysenter, 4.19), the
    rule of Traps.fast_system_call (the CPU does not deliver SYSENTER to it yet): a
    SYSENTER from ring 3 bounces to the sysenter callback with the frame EIP 0, CS 3 (the
    saved event mask in bits 16-23), EFLAGS with IF, ESP 0, SS FLAT_COMPAT_USER_SS on the
    kernel stack, masking events if the callback asked; with no callback it is #GP(0)."""
    m = Machine(profile=COMPAT_PAE)
    d = m.add_guest(str(build_guest("hello", pae=True)), paused=True)
    v, pv = d.vcpus[0], m.pv
    arch = pv.arch(v)
    stack = arch.cpu.user_regs().esp if arch.cpu is not None else 0
    arch.kernel_ss, arch.kernel_sp = abi.FLAT_KERNEL_SS, stack
    user = CpuUserRegs(eip=0x1000, cs=abi.FLAT_USER_CS, eflags=abi.X86_EFLAGS_MBS | 0x4000,
                       esp=0x2000, ss=abi.FLAT_USER_SS)
    pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)
    bounces = pv.traps.bounces
    pv.traps.fast_system_call(v, "sysenter", user)  # no callback yet: #GP(0)
    assert pv.traps.bounces == bounces and d.shutdown_reason is ShutdownReason.crash
    assert d.crash_reason is not None and "unhandled trap 13" in d.crash_reason
    m = Machine(profile=COMPAT_PAE)
    d = m.add_guest(str(build_guest("hello", pae=True)), paused=True)
    v, pv = d.vcpus[0], m.pv
    arch = pv.arch(v)
    arch.kernel_ss, arch.kernel_sp = abi.FLAT_KERNEL_SS, stack
    flags = abi.CALLBACKF_mask_events if masks else 0
    assert pv.traps.register_guest_callback(v, 5, flags, abi.FLAT_KERNEL_CS, 0xC0001234) == 0
    pv.vcpu_info_write8(v, abi.VCPU_INFO_evtchn_upcall_mask, 0)
    pv.traps.fast_system_call(v, "sysenter", user)
    assert (user.cs, user.eip, user.esp) == (abi.FLAT_KERNEL_CS, 0xC0001234, stack - 20)
    frame = m.hv.copy_from_guest(v, stack - 20, 20)
    assert frame is not None
    eip, cs, eflags, esp, ss = struct.unpack("<5I", frame)
    assert (eip, cs, esp, ss) == (0, 3, 0, 0xE033)
    assert eflags & abi.X86_EFLAGS_IF and eflags & 0x4000  # IF set; the guest's NT kept
    assert pv.vcpu_info_read8(v, abi.VCPU_INFO_evtchn_upcall_mask) == int(masks)


def test_compat_fifo_setup_answers_as_xen_4_19() -> None:
    """compat-pae: EVTCHNOP_init_control's checks (event_fifo.c evtchn_fifo_init_control and
    map_guest_page, 4.19), each with its errno; a request passing them all is -ENOSYS (FIFO
    is not modelled); expand_array -EOPNOTSUPP. The native profile has neither (-ENOSYS)."""
    m = Machine(profile=COMPAT_PAE)
    d = m.add_guest(str(build_guest("hello", pae=True)), paused=True)
    v, ev = d.vcpus[0], m.pv.events
    table = m.hv.frames.type
    pt, plain = (next(f for f in d.page_list if table[f] == t)
                 for t in (PGT.l1_page_table, PGT.none))

    def init_control(gfn: int, offset: int, vcpu: int) -> int:
        try:
            ev._op_init_control(v, EVTCHN_INIT_CONTROL_T.pack(gfn, offset, vcpu, 0))
        except EventError as e:
            return -e.errno
        return 0

    assert init_control(plain, 0, 1) == -abi.ENOENT
    assert init_control(plain, abi.PAGE_SIZE - 64, 0) == -abi.EINVAL  # crosses the page
    assert init_control(plain, 4, 0) == -abi.EINVAL  # misaligned
    assert init_control((1 << 64) - 2, 0, 0) == -abi.EINVAL  # XSA-188's test
    assert init_control(pt, 0, 0) == -abi.EINVAL  # not writable: a page table
    assert init_control(plain, abi.PAGE_SIZE - 72, 0) == -abi.ENOSYS
    assert m.hv.frames.type_count[plain] == 0  # the frame's reference was given back
    with pytest.raises(EventError) as e:
        ev._op_expand_array(v, bytes(8))
    assert e.value.errno == EOPNOTSUPP
    native = Machine()
    dn = native.add_guest(str(build_guest("hello")), paused=True)
    assert native.pv.events.do_event_channel_op(dn.vcpus[0], 11, 0) == -abi.ENOSYS


def test_compat_architectural_iopl() -> None:
    """compat-pae: vm_assist accepts VMASST_TYPE_architectural_iopl (4.19
    PV32_VM_ASSIST_MASK; native 3.0.4 refuses it, -EINVAL). With it the kernel's I/O
    privilege is ring 0's (iopl_ok), an iret frame's IOPL becomes the virtual IOPL
    (pv/iret.c) and bounce frames show it (compat/entry.S)."""
    native = Machine()
    dn = native.add_guest(str(build_guest("hello")), paused=True)
    assert native.pv.kernel.do_vm_assist(dn.vcpus[0], abi.VMASST_CMD_enable, 4) == -abi.EINVAL
    m = Machine(profile=COMPAT_PAE)
    d = m.add_guest(str(build_guest("hello", pae=True)), paused=True)
    v, pv = d.vcpus[0], m.pv
    arch = pv.arch(v)
    assert arch.cpu is not None
    kernel = CpuUserRegs(cs=abi.FLAT_KERNEL_CS)
    assert pv.emulate.io_cpl(v, kernel) == 1
    assert pv.kernel.do_vm_assist(v, abi.VMASST_CMD_enable, 4) == 0
    assert pv.emulate.io_cpl(v, kernel) == 0
    assert pv.emulate.io_cpl(v, CpuUserRegs(cs=abi.FLAT_USER_CS)) == 3
    regs = arch.cpu.user_regs()
    frame = struct.pack("<4I", 0, regs.eip, abi.FLAT_KERNEL_CS, 0x2202)  # IOPL 2
    assert m.hv.copy_to_guest(v, regs.esp - 16, frame)
    regs.esp -= 16
    pv.traps.do_iret(v)
    assert arch.iopl == 2 and d.shutdown_reason is None
    assert pv.traps.return_words(v, regs)[2] >> 12 & 3 == 2


def test_bsd_symtab_block_is_libelfs() -> None:
    """compat-pae: a kernel with the BSD_SYMTAB note gets its symbols after its image in
    Xen 4.19 libelf's layout (refmodel/bsdsyms.py): size word, the ELF header with 3 section
    headers at e_shoff 64 and the 12 bytes before them zero (XSA-194), the symbol table at
    +260 whose header names the string table; the kernel's end is libelf's reserved end."""
    from elftools.elf.elffile import ELFFile

    path = build_guest("bsd_symtab")
    image = load_image_file(str(path), profile=COMPAT_PAE)
    assert image.symtab is not None
    va, block, reserved = image.symtab
    assert va % 4 == 0 and image.kernel_end == va + reserved
    assert reserved == (len(block) - 68 + 3) // 4 * 4  # libelf counts 68 bytes fewer
    size, = struct.unpack_from("<I", block, 0)
    assert size == len(block) - 4
    assert block[5:8] == b"ELF" and block[4 + 52 : 4 + 64] == bytes(12)
    e_shoff, = struct.unpack_from("<I", block, 4 + 32)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<3H", block, 4 + 46)
    assert (e_shoff, e_shentsize, e_shnum, e_shstrndx) == (64, 40, 3, 0)
    sym = struct.unpack_from("<10I", block, 4 + 64 + 40)
    strs = struct.unpack_from("<10I", block, 4 + 64 + 80)
    assert (sym[1], sym[4], sym[6]) == (2, 256, 2)  # SHT_SYMTAB at +260, linked to section 2
    assert strs[1] == 3 and strs[4] == (256 + sym[5] + 3) // 4 * 4
    with open(path, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab").data()
    assert block[260 : 260 + sym[5]] == table
    r = boot(str(path), timeout_s=HANG_GUARD_S, profile=COMPAT_PAE)
    assert r.test_result == "SUCCESS", r.console


@pytest.mark.parametrize(("name", "cmdline"), [
    ("iret_selectors", "e021"), ("iret_selectors", "e008"), ("iret_selectors", "e02b:e033"),
    ("crash", "unhandled"), ("crash", "no-kernel-stack"), ("crash", "iret-ring0"),
    ("tick", "periodic"), ("cs_reload", "")])
def test_guest_ends_alike_on_both_profiles(name: str, cmdline: str) -> None:
    """A kernel whose result is a crash or depends on its command line ends the same way
    built for either profile and run on it: the same shutdown, result and crash reason
    (addresses aside: the images differ)."""
    native = run(name, cmdline)
    pae = boot(str(build_guest(name, pae=True)), cmdline=cmdline, timeout_s=HANG_GUARD_S,
               profile=COMPAT_PAE)

    def reason(r: BootResult) -> str:
        return re.sub(r"0x[0-9a-f]+", "", r.crash_reason or "")

    assert (pae.reason, pae.test_result, reason(pae)) == (
        native.reason, native.test_result, reason(native)), pae.console


def test_check_invariants_names_a_state_broken_mid_run_and_crashes_the_guest() -> None:
    """With ``check_invariants`` every hypercall is followed by the incremental check: a frame
    table entry broken in the guest's third hypercall (its page directory given to another
    domain) is reported after that hypercall, by invariant, and the guest is crashed."""
    calls: list[int] = []

    def setup(hv: Hypervisor, pv: PVPlatform) -> None:
        plain = pv.traps.hypercall

        def breaking(v: Vcpu, nr: int, *args: int) -> int:
            rc = plain(v, nr, *args)
            calls.append(nr)
            if len(calls) == 3:
                hv.frames.owner[v.guest_table] = 0x7FF0
            return rc

        pv.traps.hypercall = breaking

    r = run("hello", check_invariants=True, setup=setup)
    assert len(calls) >= 3 and r.violations, r.console
    assert r.violations[0].startswith("after "), r.violations
    assert "INV-OWN" in " ".join(r.violations), r.violations
    assert r.crash_reason is not None and "invariant violated" in r.crash_reason

"""ABI profiles (spec/abi_profiles.py) and the builder's choice of profile from the image.

Images are written here, a few hundred bytes each (one loadable page, a note section or a
``__xen_guest`` section), so that every PAE mode Xen's loaders tell apart can be tried: the
PAE_MODE note "yes", "bimodal", "no", none; ``__xen_guest`` ``PAE=yes``,
``PAE=yes[extended-cr3]``, ``PAE=bimodal``, ``PAE=no``. The rule is Xen's tools'
(tools/libxc/xc_linux_build.c compat_check, 3.0.4; tools/libs/guest/xg_dom_elfloader.c
xc_dom_guest_type, 4.x).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenspec.cli import main
from xenspec.proofs.branchcheck_builder import xen_note, xen_notes
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.elfbuild import parse_image
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    COMPAT_HYPERVISOR_VIRT_START,
    COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT,
    COMPAT_L3_XEN_SLOT,
    COMPAT_MACH2PHYS_VIRT_END,
    COMPAT_PAE,
    GUEST_TYPE_X86_32,
    GUEST_TYPE_X86_32P,
    NATIVE_3_0_4,
    PAE_L2_PAGETABLE_SHIFT,
    PAE_L3_PAGETABLE_SHIFT,
    PROFILES,
    PaeMode,
)

BASE = 0xC0000000
PAGE = 0x1000


def make_image(pae_note: str | None = None, xen_guest: str | None = None) -> bytes:
    """A 32-bit x86 ELF kernel image loading one page at BASE (its entry), identified by Xen
    ELF notes (with ``pae_note`` as XEN_ELFNOTE_PAE_MODE if given) or, with ``xen_guest``,
    by a ``__xen_guest`` section holding that string."""
    if xen_guest is not None:
        info_name, info_type = b"__xen_guest", 1  # SHT_PROGBITS
        info = xen_guest.encode() + b"\0"
    else:
        info_name, info_type = b".note", 7  # SHT_NOTE
        info = xen_notes(BASE, BASE)
        if pae_note is not None:
            info += xen_note(abi.XEN_ELFNOTE_PAE_MODE, pae_note.encode() + b"\0")
    shstrtab = b"\0.text\0" + info_name + b"\0.shstrtab\0"
    text = b"\xeb\xfe".ljust(PAGE, b"\0")  # jmp .
    info_off = 2 * PAGE
    shstr_off = info_off + len(info)
    sh_off = (shstr_off + len(shstrtab) + 3) & ~3
    name_text, name_info = 1, 7
    name_shstr = name_info + len(info_name) + 1
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01".ljust(16, b"\0"),
                       2, 3, 1, BASE, 52, sh_off, 0, 52, 32, 1, 40, 4, 3)
    phdr = struct.pack("<IIIIIIII", 1, PAGE, BASE, BASE, PAGE, PAGE, 7, PAGE)
    shdrs = b"".join([
        bytes(40),
        struct.pack("<IIIIIIIIII", name_text, 1, 6, BASE, PAGE, PAGE, 0, 0, 16, 0),
        struct.pack("<IIIIIIIIII", name_info, info_type, 2, 0, info_off, len(info), 0, 0,
                    4, 0),
        struct.pack("<IIIIIIIIII", name_shstr, 3, 0, 0, shstr_off, len(shstrtab), 0, 0,
                    1, 0),
    ])
    head = (ehdr + phdr).ljust(PAGE, b"\0")
    body = (head + text + info + shstrtab).ljust(sh_off, b"\0")
    return body + shdrs


def parse(data: bytes, profile: str) -> PaeMode:
    return parse_image(io.BytesIO(data), "kernel", profile=PROFILES[profile]).pae


# ------------------------------------------------------------------------------------------
# Which images each profile takes.
# ------------------------------------------------------------------------------------------
NOTE_CASES = [  # (PAE_MODE note, PAE mode, native takes it, compat takes it)
    (None, PaeMode.no, True, False),
    ("no", PaeMode.no, True, False),
    ("yes", PaeMode.extended_cr3, False, True),
    ("bimodal", PaeMode.bimodal, True, True),
]
XEN_GUEST_CASES = [  # (PAE= value, PAE mode, native takes it, compat takes it)
    ("no", PaeMode.no, True, False),
    ("yes", PaeMode.yes, False, True),
    ("yes[extended-cr3]", PaeMode.extended_cr3, False, True),
    ("bimodal", PaeMode.no, True, False),  # the legacy string has no bimodal form
]


def _expect(data: bytes, mode: PaeMode, native: bool, compat: bool) -> None:
    if native:
        assert parse(data, "native-3.0.4") is mode
    else:
        with pytest.raises(BuildError, match=r"a PAE-only kernel .*guest type "
                                             r"xen-3\.0-x86_32p.* native-3\.0\.4 profile"):
            parse(data, "native-3.0.4")
    if compat:  # the right image for the profile
        assert parse(data, "compat-pae") is mode
    else:
        with pytest.raises(BuildError, match=r"a non-PAE kernel .*guest type "
                                             r"xen-3\.0-x86_32\).* compat-pae profile"):
            parse(data, "compat-pae")


@pytest.mark.parametrize(("note", "mode", "native", "compat"), NOTE_CASES)
def test_pae_mode_note_chooses_the_profile(note: str | None, mode: PaeMode, native: bool,
                                           compat: bool) -> None:
    _expect(make_image(pae_note=note), mode, native, compat)


@pytest.mark.parametrize(("value", "mode", "native", "compat"), XEN_GUEST_CASES)
def test_xen_guest_pae_chooses_the_profile(value: str, mode: PaeMode, native: bool,
                                           compat: bool) -> None:
    text = f"GUEST_OS=test,XEN_VER=xen-3.0,VIRT_BASE={BASE:#x},PAE={value}"
    _expect(make_image(xen_guest=text), mode, native, compat)


def test_bimodal_kernel_takes_the_type_the_hypervisor_offers() -> None:
    assert NATIVE_3_0_4.image_guest_type(PaeMode.bimodal) == GUEST_TYPE_X86_32
    assert COMPAT_PAE.image_guest_type(PaeMode.bimodal) == GUEST_TYPE_X86_32P
    # The start_info magic of the native profile is abi.py's.
    assert NATIVE_3_0_4.guest_type.encode() == abi.XEN_START_INFO_MAGIC


def test_default_profile_is_native() -> None:
    data = make_image(pae_note="yes")
    with pytest.raises(BuildError, match="PAE-only"):
        parse_image(io.BytesIO(data), "kernel")


# ------------------------------------------------------------------------------------------
# The compat profile's numbers fit together.
# ------------------------------------------------------------------------------------------
def test_compat_hole_is_the_top_of_l3_slot_3() -> None:
    """The hypervisor's L2 slots (from COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT to the last, in the
    L2 of L3 slot 3) map exactly [HYPERVISOR_COMPAT_VIRT_START, 4 GB), and the M2P starts
    at the hole and ends inside it."""
    first = ((COMPAT_L3_XEN_SLOT << PAE_L3_PAGETABLE_SHIFT)
             | (COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT << PAE_L2_PAGETABLE_SHIFT))
    assert first == COMPAT_HYPERVISOR_VIRT_START == COMPAT_PAE.hypervisor_virt_start
    end = (COMPAT_L3_XEN_SLOT << PAE_L3_PAGETABLE_SHIFT) + (
        COMPAT_PAE.entries[1] << PAE_L2_PAGETABLE_SHIFT)
    assert end == 1 << 32
    assert COMPAT_PAE.mach2phys_virt_start == COMPAT_PAE.hypervisor_virt_start
    assert COMPAT_PAE.mach2phys_virt_start < COMPAT_MACH2PHYS_VIRT_END <= end
    # Each profile's entries span the 4 GB address space.
    for p in PROFILES.values():
        span = abi.PAGE_SIZE
        for n in p.entries:
            span *= n
        assert span == 1 << 32, p.name
        assert len(p.entries) == p.paging_levels


# ------------------------------------------------------------------------------------------
# xenspec run --abi: one line and exit 2, never a traceback.
# ------------------------------------------------------------------------------------------
def _run(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["run", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_run_pae_image_on_native_profile(tmp_path: Path) -> None:
    img = tmp_path / "pae.elf"
    img.write_bytes(make_image(pae_note="yes"))
    for args in ([str(img)], ["--abi", "native-3.0.4", str(img)]):
        code, out = _run(args)
        assert code == 2
        assert "Traceback" not in out
        assert len(out.strip().splitlines()) == 1
        assert "PAE-only kernel" in out and "native-3.0.4" in out


def test_run_mmu_scenario_is_the_native_profiles(tmp_path: Path) -> None:
    """The built-in MMU scenario builds 2-level tables: one line refuses it on compat-pae."""
    code, out = _run(["--abi", "compat-pae", "--scenario", "mmu"])
    assert code == 2
    assert len(out.strip().splitlines()) == 1
    assert "native-3.0.4" in out


def test_run_non_pae_image_on_compat_profile(tmp_path: Path) -> None:
    img = tmp_path / "nopae.elf"
    img.write_bytes(make_image(pae_note="no"))
    code, out = _run(["--abi", "compat-pae", str(img)])
    assert code == 2
    assert len(out.strip().splitlines()) == 1
    assert "non-PAE kernel" in out and "compat-pae" in out


def test_run_help_names_the_profiles() -> None:
    r = CliRunner().invoke(main, ["run", "--help"])
    assert "--abi" in r.output
    for name in PROFILES:
        assert name in r.output

"""The CPU substrate's start-up self-test and the generated C header."""

from __future__ import annotations

import pytest

from xenspec.refmodel import cpu
from xenspec.spec import abi, cheader


def test_selftest_passes_on_the_pinned_unicorn() -> None:
    cpu._run_selftest()


def test_wrong_unicorn_version_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.unicorn, "__version__", "2.0.0")
    with pytest.raises(cpu.SubstrateError, match=r"needs unicorn 2\.1\.4"):
        cpu._Engine()


def test_wrong_blob_offset_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "_OFF_ERROR_CODE", cpu._OFF_ERROR_CODE + 8)
    with pytest.raises(cpu.SubstrateError, match="offsets"):
        cpu._run_selftest()


def test_reserved_gdt_page_holds_the_flat_selectors() -> None:
    page = cpu.reserved_gdt_page()
    for sel, ring in ((abi.FLAT_RING1_CS, 1), (abi.FLAT_RING1_DS, 1), (abi.FLAT_RING3_CS, 3),
                      (abi.FLAT_RING3_DS, 3)):
        off = (sel >> 3) * 8 - abi.FIRST_RESERVED_GDT_BYTE
        hi = int.from_bytes(page[off + 4 : off + 8], "little")
        lo = int.from_bytes(page[off : off + 4], "little")
        assert (hi >> 13) & 3 == ring
        assert (lo & 0xFFFF) | (hi & 0xF0000) == 0xFC3FF
        assert (hi & 0xFF000000) | ((hi & 0xFF) << 16) | (lo >> 16) == 0


def test_c_header_is_generated_from_abi() -> None:
    text = cheader.render()
    assert "#define __HYPERVISOR_iret 0x17" in text
    assert "#define FLAT_RING1_CS 0xe019" in text
    assert '#define XEN_START_INFO_MAGIC_STR "xen-3.0-x86_32"' in text


def test_engine_refusing_registers_on_return_crashes_only_the_domain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The return path's safety net: if the engine refuses what the hypervisor writes back
    (UcError), the domain is crashed with the reason and the hypervisor runs on."""
    from xenspec.conformance.guests.build import build_guest
    from xenspec.refmodel.boot import boot

    real = cpu.UnicornCPU._apply_state
    calls = {"n": 0}

    def refusing(self: cpu.UnicornCPU) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise cpu.unicorn.UcError(cpu.ucc.UC_ERR_EXCEPTION)
        real(self)

    monkeypatch.setattr(cpu.UnicornCPU, "_apply_state", refusing)
    r = boot(str(build_guest("hello")), timeout_s=60)
    assert r.crash_reason is not None and "refused the guest's registers" in r.crash_reason
    assert r.stop != "bug", r.stop

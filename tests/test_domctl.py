"""Domain control (refmodel/domctl.py) and the balloon (refmodel/memop.py): create, pause,
unpause, destroy and the memory limit from Python; a destroyed domain's frames return to the
heap only when nothing references them."""

from __future__ import annotations

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.boot import Machine, boot
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.domctl import DomctlError
from xenspec.refmodel.memory import DOMID_NONE
from xenspec.refmodel.view import ConcreteView, check_invariants
from xenspec.spec import abi
from xenspec.spec.invariants import inv_free

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

HANG_GUARD_S = 60.0  # a guard against a hung run, not a timing assertion
MS = 1_000_000


def test_created_domain_starts_paused_then_runs() -> None:
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    assert m.domctl.info(domid).paused
    assert m.run(timeout_s=HANG_GUARD_S) == "idle"
    assert m.result(m.hv.domains[domid]).console == ""
    m.domctl.unpause(domid)
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"
    info = m.domctl.info(domid)
    assert info.shutdown == "poweroff" and info.cpu_time_ns > 0 and not info.paused


def test_pause_stops_a_spinning_domain() -> None:
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("spin")), memory_mb=4, cmdline="forever")
    m.domctl.unpause(domid)
    m.run(until_ns=2 * MS, timeout_s=HANG_GUARD_S)
    m.domctl.pause(domid)
    ran = m.domctl.info(domid).cpu_time_ns
    assert m.run(timeout_s=HANG_GUARD_S) == "idle"
    assert m.domctl.info(domid).cpu_time_ns == ran
    m.domctl.unpause(domid)
    m.run(until_ns=4 * MS, timeout_s=HANG_GUARD_S)
    assert m.domctl.info(domid).cpu_time_ns > ran


@pytest.mark.parametrize("mode", ["finished", "spinning"])
def test_destroy_returns_every_frame(mode: str) -> None:
    m = Machine(memory_mb=32)
    free = len(m.hv.free_list)
    domid = m.domctl.create(str(build_guest("spin" if mode == "spinning" else "demo")),
                            memory_mb=4, cmdline="forever" if mode == "spinning" else "")
    m.domctl.unpause(domid)
    m.run(until_ns=3 * MS, timeout_s=HANG_GUARD_S)
    m.domctl.destroy(domid)
    assert domid not in m.hv.domains
    assert len(m.hv.free_list) == free
    assert check_invariants(m.hv) == []
    assert inv_free(ConcreteView(m.hv))
    with pytest.raises(DomctlError) as e:
        m.domctl.destroy(domid)
    assert e.value.errno == abi.ESRCH


def test_a_referenced_frame_outlives_its_destroyed_domain() -> None:
    m = Machine(memory_mb=32)
    other = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    d = m.hv.domains[domid]
    mfn = d.page_list[-1]  # a frame outside the bootstrap region: only its allocation ref
    assert m.hv.mm.get_page(mfn, d)  # a reference someone else holds (a foreign mapping)
    m.domctl.destroy(domid)
    assert m.hv.frames.owner[mfn] == domid and mfn not in m.hv.free_list
    assert m.hv.domains[domid].page_list == [mfn]
    assert inv_free(ConcreteView(m.hv))
    m.hv.mm.put_page(mfn)
    assert m.hv.frames.owner[mfn] == DOMID_NONE and mfn in m.hv.free_list
    m.domctl.unpause(other)
    assert m.run(timeout_s=HANG_GUARD_S) == "shutdown"


def test_max_mem() -> None:
    m = Machine(memory_mb=32)
    domid = m.domctl.create(str(build_guest("hello")), memory_mb=4)
    m.domctl.set_max_mem(domid, 8 << 10)
    assert m.domctl.info(domid).max_pages == 2048
    with pytest.raises(DomctlError) as e:
        m.domctl.set_max_mem(domid, 1 << 10)
    assert e.value.errno == abi.EINVAL
    with pytest.raises(DomctlError) as e:
        m.domctl.pause(77)
    assert e.value.errno == abi.ESRCH


def test_bad_image_is_one_build_error(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.elf"
    bad.write_bytes(b"nothing")
    with pytest.raises(BuildError):
        Machine(memory_mb=32).domctl.create(str(bad))


def test_balloon_guest_and_the_frames_it_gave_back() -> None:
    r = boot(str(build_guest("balloon")), timeout_s=HANG_GUARD_S)
    assert r.test_result == "SUCCESS", r.console
    assert r.hv is not None
    assert check_invariants(r.hv) == []
    hv = r.hv
    assert inv_free(ConcreteView(hv))
    for mfn in hv.free_list:
        assert hv.frames.count[mfn] == 0 and hv.frames.owner[mfn] == DOMID_NONE


def test_inv_free_catches_a_referenced_free_frame() -> None:
    r = boot(str(build_guest("hello")), memory_mb=32, domain_mb=4)
    assert r.hv is not None
    r.hv.frames.count[r.hv.free_list[0]] = 1
    assert not inv_free(ConcreteView(r.hv))

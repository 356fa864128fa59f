"""The backend domain (refmodel/backend.py): a real privileged domain with a fixed id, never
scheduled, whose event channels are bound to guests as a dom0 daemon binds them, and whose
ports call Python listeners when the backend domain runs, after the sender."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.backend import BACKEND_DOMID
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.domain import Domain, ShutdownReason
from xenspec.refmodel.event import EventError
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi


def machine() -> tuple[Hypervisor, PVPlatform, Domain]:
    hv = Hypervisor(2048)
    pv = PVPlatform(hv)
    d = hv.create_domain(16)
    pv.setup_domain(d)
    return hv, pv, d


def test_backend_domain_is_created_once_with_its_fixed_id() -> None:
    hv, pv, d = machine()
    assert BACKEND_DOMID == abi.DOMID_FIRST_RESERVED - 1
    assert BACKEND_DOMID not in hv.domains  # created on first use
    b = pv.backends.domain()
    assert b.domain_id == BACKEND_DOMID and b.is_privileged and len(b.vcpus) == 1
    assert pv.backends.domain() is b and hv.domains[BACKEND_DOMID] is b
    # Booted guests keep their ids: the next domain is 1, not BACKEND_DOMID + 1.
    assert d.domain_id == 0 and hv.create_domain(4).domain_id == 1


@pytest.mark.parametrize("domid", [0, BACKEND_DOMID, abi.DOMID_SELF, abi.DOMID_IO, -1])
def test_create_domain_refuses_an_id_in_use_or_reserved(domid: int) -> None:
    hv, pv, _ = machine()
    pv.backends.domain()
    with pytest.raises(ValueError):
        hv.create_domain(4, domid=domid)


def test_connect_binds_a_guest_port_to_a_backend_port() -> None:
    hv, pv, d = machine()
    gport, bport = pv.backends.connect(d)
    ev = pv.events
    g = ev.channel(d, gport)
    b = ev.channel(pv.backends.domain(), bport)
    assert g is not None and b is not None
    assert (g.state, g.remote_dom, g.remote_port) == (abi.ECS_INTERDOMAIN, BACKEND_DOMID, bport)
    assert (b.state, b.remote_dom, b.remote_port) == (abi.ECS_INTERDOMAIN, 0, gport)
    assert pv.backends.remote(bport) == (0, gport)
    # The guest sees it as an interdomain port to the backend (EVTCHNOP_status).
    status, _, u = ev.status(d.vcpus[0], abi.DOMID_SELF, gport)
    assert status == abi.EVTCHNSTAT_interdomain
    assert int.from_bytes(u[0], "little") == BACKEND_DOMID
    assert check_invariants(hv) == []


def test_guest_send_marks_the_backend_port_pending_and_the_backend_runs_later() -> None:
    _, pv, d = machine()
    b = pv.backends.domain()
    gport, bport = pv.backends.connect(d)
    calls: list[int] = []
    pv.backends.listen(bport, lambda: calls.append(1))
    pv.events.send(d.vcpus[0], gport)
    pv.events.send(d.vcpus[0], gport)
    # Not inside the sender's hypercall: the port is pending in the backend domain.
    assert calls == [] and pv.backends.has_pending()
    assert pv.events.port_pending(b, bport)
    assert pv.backends.run_pending() == 1
    assert calls == [1]  # once for both events: a pending bit is one bit
    assert not pv.events.port_pending(b, bport) and not pv.backends.has_pending()
    assert pv.backends.run_pending() == 0 and calls == [1]
    assert not pv.events.port_pending(d, gport)
    assert pv.backends.notify(bport)
    assert pv.events.port_pending(d, gport)
    pv.events.send(d.vcpus[0], gport)
    pv.backends.unlisten(bport)  # an event not yet served when the back end lets go
    assert pv.backends.run_pending() == 0 and calls == [1]
    pv.events.send(d.vcpus[0], gport)
    assert pv.backends.run_pending() == 0 and calls == [1]


def test_guest_closing_its_end_leaves_the_backend_unbound() -> None:
    hv, pv, d = machine()
    gport, bport = pv.backends.connect(d)
    pv.events.close(d, gport)
    assert pv.backends.remote(bport) is None
    assert pv.backends.notify(bport)  # an unbound end drops the event
    assert not pv.events.port_pending(d, gport)
    pv.events.close(pv.backends.domain(), bport)
    assert not pv.backends.notify(bport)  # a closed port: refused, never raised
    assert check_invariants(hv) == []


def test_connect_fails_cleanly_when_the_guest_has_no_free_port() -> None:
    _, pv, d = machine()
    ev = pv.events
    with pytest.raises(EventError) as e:
        for _ in range(abi.NR_EVENT_CHANNELS + 1):
            ev.bind_ipi(d.vcpus[0], 0)
    assert e.value.errno == abi.ENOSPC
    with pytest.raises(EventError):
        pv.backends.connect(d)


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_backend_domain_is_never_scheduled() -> None:
    """A machine with the backend domain and a live channel runs its guest to the end: the
    backend's vCPU is never attached, runnable or blocked, and the run does not wait on it."""
    m = Machine(memory_mb=32)
    pv = m.pv
    b = pv.backends.domain()
    d = m.add_guest(str(build_guest("hello")), domain_mb=4)
    pv.backends.connect(d)
    assert m.run(timeout_s=60.0) == "shutdown"
    assert d.shutdown_reason is ShutdownReason.poweroff
    assert b.is_running and b.shutdown_reason is None
    assert (BACKEND_DOMID, 0) not in pv.sched.vcpus
    assert all(e.v.domain is not b for e in pv.sched.runqueue)
    assert m.domctl.info(BACKEND_DOMID).cpu_time_ns == 0
    assert check_invariants(m.hv) == []


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_a_front_end_sees_responses_only_after_it_gives_up_the_cpu(tmp_path: Path) -> None:
    """blkfront.c "defer": requests pushed get no response while the front end runs on; it
    blocks and is woken with all answered; a ring's worth pushed one at a time fills the
    ring (one notification: the back end has not run to move req_event)."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(128 * 512))
    m = Machine(64, devices=True)
    d = m.add_guest(str(build_guest("blkfront")), 16, "defer")
    m.attach_disk(d.domain_id, str(image))
    assert m.run(timeout_s=60.0) == "shutdown"
    r = m.result(d)
    assert r.test_result == "SUCCESS", r.console
    lines = r.console.splitlines()
    assert "defer: 0 of 8 answered before blocking, response producer 0" in lines
    assert "defer: ring full 1 after 32 pushes, 1 notification(s), 0 answered" in lines
    assert check_invariants(m.hv) == []

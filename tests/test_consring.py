"""The PV console ring (refmodel/consring.py): guest output through the ring reaches the
console, input reaches the guest, and hostile indexes never make the hypervisor raise."""

from __future__ import annotations

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.boot import Machine, boot
from xenspec.refmodel.domain import Domain, ShutdownReason
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")


class Guest:
    def __init__(self) -> None:
        self.hv = Hypervisor(2048)
        self.pv = PVPlatform(self.hv)
        self.d: Domain = self.hv.create_domain(16)
        self.pv.setup_domain(self.d)
        self.mfn = self.d.page_list[4]
        self.port = self.pv.consrings.attach(self.d, self.mfn)
        self.conn = self.pv.consrings.conns[0]

    def idx(self, off: int) -> int:
        return int.from_bytes(self.hv.memory.read((self.mfn << 12) + off, 4), "little")

    def set_idx(self, off: int, value: int) -> None:
        self.hv.memory.write((self.mfn << 12) + off, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def write(self, data: bytes) -> None:
        prod = self.idx(abi.XENCONS_out_prod)
        for i, b in enumerate(data):
            at = (self.mfn << 12) + abi.XENCONS_out + (prod + i) % abi.XENCONS_OUT_SIZE
            self.hv.memory.write(at, bytes([b]))
        self.set_idx(abi.XENCONS_out_prod, prod + len(data))
        self.notify()

    def notify(self) -> None:
        """Send the event, then give the backend domain its turn (the sender's slice ends)."""
        self.pv.events.send(self.d.vcpus[0], self.port)
        self.pv.backends.run_pending()

    @property
    def console(self) -> bytes:
        return bytes(self.pv.darch(self.d).console)


def test_output_is_taken_and_the_guest_notified() -> None:
    g = Guest()
    g.write(b"hello\n")
    assert g.console == b"hello\n"
    assert g.idx(abi.XENCONS_out_cons) == g.idx(abi.XENCONS_out_prod) == 6
    assert g.pv.events.port_pending(g.d, g.port)
    g.set_idx(abi.XENCONS_out_cons, 0xFFFF_FFF0)  # free-running indexes wrap at 2^32
    g.set_idx(abi.XENCONS_out_prod, 0xFFFF_FFF0)
    g.write(b"x" * 40)
    assert g.console == b"hello\n" + b"x" * 40 and g.idx(abi.XENCONS_out_cons) == 24
    assert check_invariants(g.hv) == []


def test_bad_output_indexes_are_ignored_not_raised() -> None:
    g = Guest()
    g.set_idx(abi.XENCONS_out_prod, abi.XENCONS_OUT_SIZE + 1)
    g.notify()
    assert g.console == b"" and g.conn.ignored == 1
    assert g.idx(abi.XENCONS_out_cons) == 0  # nothing consumed
    g.set_idx(abi.XENCONS_out_prod, 0)  # the guest repairs its indexes: served again
    g.write(b"ok")
    assert g.console == b"ok"


def test_input_fills_what_fits_and_respects_bad_indexes() -> None:
    g = Guest()
    cr = g.pv.consrings
    assert cr.console_input(0, b"abc") == 3
    assert g.idx(abi.XENCONS_in_prod) == 3
    assert g.hv.memory.read((g.mfn << 12) + abi.XENCONS_in, 3) == b"abc"
    assert cr.console_input(0, b"y" * 2000) == abi.XENCONS_IN_SIZE - 3  # the ring is full
    assert cr.console_input(0, b"z") == 0
    g.set_idx(abi.XENCONS_in_cons, 0x8000_0000)
    assert cr.console_input(0, b"z") == 0
    assert cr.console_input(7, b"z") == 0  # no such console


def test_a_shut_down_domain_is_served_until_it_dies() -> None:
    """xenconsoled lets a domain go only once it is dying (io.c, enum_domains): the last
    words of a crashed guest, written before the daemon ran, are read; a dying one's not."""
    g = Guest()
    g.d.crash("test")
    g.write(b"late")
    assert g.console == b"late"
    g.d.is_dying = True  # domain_kill's first step (_DOMF_dying)
    g.write(b"later")
    assert g.console == b"late"
    assert g.pv.consrings.console_input(0, b"x") == 0


@needs_gcc
def test_consring_guest_prints_through_the_ring_only() -> None:
    # The invariants are checked at the end: checked after each of the guest's hypercalls
    # (about a second each) the run would reach the 60 s guard first.
    r = boot(str(build_guest("consring")), devices=True, timeout_s=60.0, trace=True)
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff
    assert r.hv is not None and check_invariants(r.hv) == []
    lines = r.console.splitlines()
    assert "hello through the ring" in lines
    assert [ln for ln in lines if ln.startswith("ring line")] == [
        f"ring line {i:03} abcdefghijklmnopqrstuvwxyz012345678" for i in range(100)]
    assert "printk through the ring: 42" in lines
    # Only the runtime's title line used console_io; the rest came through the ring.
    assert sum(1 for t in r.trace if t.nr == HYPERCALL_NUMBERS["console_io"]) == 1


@needs_gcc
def test_consring_guest_reads_an_input_line() -> None:
    m = Machine(memory_mb=32, devices=True)
    d = m.add_guest(str(build_guest("consring")), domain_mb=4, cmdline="input")
    assert m.run(timeout_s=60.0) == "idle", "the guest should wait for input"
    assert "waiting for input" in m.result(d).console
    assert m.pv.consrings.console_input(d.domain_id, b"hello from the tty\n") == 19
    assert m.run(timeout_s=60.0) == "shutdown"
    r = m.result(d)
    assert r.test_result == "SUCCESS", r.console
    assert "got: hello from the tty" in r.console.splitlines()
    assert check_invariants(m.hv) == []


def test_console_io_of_a_release_build_is_domain_0s() -> None:
    """console.c, do_console_io without VERBOSE: -EPERM, before the command is looked at, for
    every domain whose id is not 0 (privileged or not); a verbose build lets all write."""
    hv = Hypervisor(2048)
    pv = PVPlatform(hv)
    d0, d1 = hv.create_domain(16), hv.create_domain(16, privileged=True)
    for d in (d0, d1):
        pv.setup_domain(d)
    io = pv.console.do_console_io
    pv.console.verbose = False
    assert io(d1.vcpus[0], abi.CONSOLEIO_write, 0, 0) == -abi.EPERM
    assert io(d1.vcpus[0], 99, 0, 0) == -abi.EPERM
    assert io(d0.vcpus[0], abi.CONSOLEIO_write, 0, 0) == 0
    assert io(d0.vcpus[0], 99, 0, 0) == -abi.ENOSYS
    pv.console.verbose = True
    assert io(d1.vcpus[0], abi.CONSOLEIO_write, 0, 0) == 0


@needs_gcc
def test_ring_output_can_go_apart_from_console_io() -> None:
    """A machine whose back ends are domain 0: its guests are domains 1, 2, ...; what they
    write to the ring goes to ``ring_console``, console_io's to ``console``."""
    xen: list[tuple[int, bytes]] = []
    ring: list[tuple[int, bytes]] = []
    m = Machine(64, backend_domid=0, console=lambda i, b: xen.append((i, b)),
                ring_console=lambda i, b: ring.append((i, b)))
    assert m.pv.backends.domain().domain_id == 0 and m.hv.domains[0].is_privileged
    d = m.add_guest(str(build_guest("consring")), 16, devices=True)
    assert d.domain_id == 1 and not d.is_privileged
    m.run(timeout_s=60.0)
    assert m.result(d).test_result == "SUCCESS"
    assert {i for i, _ in xen} == {i for i, _ in ring} == {1}
    assert b"ring line 099" in b"".join(b for _, b in ring)
    assert b"ring line" not in b"".join(b for _, b in xen)

"""The model's xenstore (refmodel/xenstore.py): the Python API, the ring protocol driven from
a guest's side by hand (requests in pieces, answers larger than the ring), the permission rule,
and hostile rings, which must never make the hypervisor raise."""

from __future__ import annotations

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.backend import BACKEND_DOMID
from xenspec.refmodel.boot import boot
from xenspec.refmodel.domain import Domain, ShutdownReason
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform
from xenspec.refmodel.view import check_invariants
from xenspec.refmodel.xenstore import (
    MAX_PENDING_EVENTS_BYTES,
    QUOTA_NB_WATCH_PER_DOMAIN,
    XsError,
)
from xenspec.spec import abi

HDR = abi.XSD_SOCKMSG_T
SIZE = abi.XENSTORE_RING_SIZE


class Guest:
    """A guest's side of the store ring, in Python."""

    def __init__(self) -> None:
        self.hv = Hypervisor(2048)
        self.pv = PVPlatform(self.hv)
        self.d: Domain = self.hv.create_domain(16)
        self.pv.setup_domain(self.d)
        self.mfn = self.d.page_list[3]
        self.port = self.pv.xenstore.introduce(self.d, self.mfn)
        self.conn = self.pv.xenstore.conns[self.d.domain_id]
        self.req_id = 0

    def idx(self, off: int) -> int:
        return int.from_bytes(self.hv.memory.read((self.mfn << 12) + off, 4), "little")

    def set_idx(self, off: int, value: int) -> None:
        self.hv.memory.write((self.mfn << 12) + off, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def notify(self) -> None:
        """Send the event, then give the backend domain its turn (the sender's slice ends)."""
        self.pv.events.send(self.d.vcpus[0], self.port)
        self.pv.backends.run_pending()

    def put(self, data: bytes, notify: bool = True) -> None:
        """Write into the request ring (the caller leaves room), then notify."""
        prod = self.idx(abi.XENSTORE_req_prod)
        for i, b in enumerate(data):
            at = (self.mfn << 12) + abi.XENSTORE_req + (prod + i) % SIZE
            self.hv.memory.write(at, bytes([b]))
        self.set_idx(abi.XENSTORE_req_prod, prod + len(data))
        if notify:
            self.notify()

    def take(self) -> bytes:
        """Everything in the response ring; consuming it, then notifying."""
        cons, prod = self.idx(abi.XENSTORE_rsp_cons), self.idx(abi.XENSTORE_rsp_prod)
        out = bytes(self.hv.memory.read((self.mfn << 12) + abi.XENSTORE_rsp + (cons + i) % SIZE,
                                        1)[0] for i in range((prod - cons) & 0xFFFFFFFF))
        self.set_idx(abi.XENSTORE_rsp_cons, prod)
        self.notify()
        return out

    def message(self, mtype: int, payload: bytes) -> bytes:
        self.req_id += 1
        return HDR.pack(mtype, self.req_id, 7, len(payload)) + payload

    def messages(self) -> list[tuple[int, int, int, bytes]]:
        """Every message the response ring holds: (type, req_id, tx_id, payload)."""
        raw, out = self.take(), []
        while raw:
            mtype, req_id, tx_id, length = HDR.unpack_from(raw)
            out.append((mtype, req_id, tx_id, raw[HDR.size : HDR.size + length]))
            raw = raw[HDR.size + length:]
        return out

    def send(self, mtype: int, payload: bytes) -> list[tuple[int, int, int, bytes]]:
        """One request; every message that answers it or comes with it."""
        self.put(self.message(mtype, payload))
        return self.messages()

    def ask(self, mtype: int, payload: bytes) -> tuple[int, bytes]:
        self.put(self.message(mtype, payload))
        raw = b""
        for _ in range(16):
            raw += self.take()
            if len(raw) >= HDR.size and len(raw) >= HDR.size + HDR.unpack_from(raw)[3]:
                break
        rtype, req_id, tx_id, length = HDR.unpack_from(raw)
        assert (req_id, tx_id) == (self.req_id, 7)
        assert len(raw) == HDR.size + length
        return rtype, raw[HDR.size:]


def test_introduce_writes_the_tools_keys_and_binds_a_port() -> None:
    g = Guest()
    xs = g.pv.xenstore
    assert xs.read(BACKEND_DOMID, "/local/domain/0/domid") == b"0"
    assert xs.read(0, "name") == b"Domain-0"
    assert g.pv.backends.remote(g.conn.backend_port) == (0, g.port)
    assert check_invariants(g.hv) == []


def test_read_write_directory_mkdir_rm_over_the_ring() -> None:
    g = Guest()
    assert g.ask(abi.XS_WRITE, b"data/x\0hello") == (abi.XS_WRITE, b"OK\0")
    assert g.ask(abi.XS_READ, b"data/x\0") == (abi.XS_READ, b"hello")
    assert g.ask(abi.XS_READ, b"/local/domain/0/data/x\0") == (abi.XS_READ, b"hello")
    assert g.ask(abi.XS_MKDIR, b"data/d\0") == (abi.XS_MKDIR, b"OK\0")
    assert g.ask(abi.XS_DIRECTORY, b"data\0") == (abi.XS_DIRECTORY, b"x\0d\0")
    assert g.ask(abi.XS_RM, b"data\0") == (abi.XS_RM, b"OK\0")
    assert g.ask(abi.XS_READ, b"data/x\0") == (abi.XS_ERROR, b"ENOENT\0")
    assert g.ask(abi.XS_RM, b"data\0") == (abi.XS_RM, b"OK\0")  # parent exists: fine
    assert g.ask(abi.XS_RM, b"no/such\0") == (abi.XS_ERROR, b"ENOENT\0")
    assert g.ask(abi.XS_TRANSACTION_START, b"\0") == (abi.XS_TRANSACTION_START, b"0\0")
    assert g.ask(abi.XS_TRANSACTION_END, b"T\0") == (abi.XS_TRANSACTION_END, b"OK\0")


@pytest.mark.parametrize(("mtype", "payload", "error"), [
    (abi.XS_READ, b"/local/domain/1/name\0", b"EACCES\0"),
    (abi.XS_READ, b"/local/domain\0", b"EACCES\0"),
    (abi.XS_READ, b"/tool/nothing\0", b"EACCES\0"),  # unreadable parent: not ENOENT
    (abi.XS_WRITE, b"/tool/x\0v", b"EACCES\0"),
    (abi.XS_WRITE, b"/local/domain/00\0v", b"EACCES\0"),
    (abi.XS_RM, b"/local\0", b"EACCES\0"),
    (abi.XS_MKDIR, b"/x\0", b"EACCES\0"),
    (abi.XS_DIRECTORY, b"/\0", b"EACCES\0"),
    (abi.XS_READ, b"a//b\0", b"EINVAL\0"),
    (abi.XS_READ, b"a/\0", b"EINVAL\0"),
    (abi.XS_READ, b"a b\0", b"EINVAL\0"),
    (abi.XS_READ, b"\xff\0", b"EINVAL\0"),
    (abi.XS_READ, b"name", b"EINVAL\0"),  # no terminator
    (abi.XS_READ, b"name\0x\0", b"EINVAL\0"),  # two arguments
    (abi.XS_WRITE, b"name", b"EINVAL\0"),
    (abi.XS_RM, b"/\0", b"EINVAL\0"),  # the root cannot go
    (99, b"name\0", b"EINVAL\0"),
])
def test_errors_are_answered_by_name(mtype: int, payload: bytes, error: bytes) -> None:
    g = Guest()
    g.pv.xenstore.write(BACKEND_DOMID, "/local/domain/1/name", "other")
    assert g.ask(mtype, payload) == (abi.XS_ERROR, error)


def test_privileged_tools_may_do_anything_and_grant_reads() -> None:
    g = Guest()
    xs = g.pv.xenstore
    xs.write(BACKEND_DOMID, "/local/domain/9/backend/vbd/0/state", "1")
    assert g.ask(abi.XS_READ, b"/local/domain/9/backend/vbd/0/state\0")[0] == abi.XS_ERROR
    xs.set_perms("/local/domain/9/backend/vbd/0/state", BACKEND_DOMID, {0: abi.XS_PERM_READ})
    assert g.ask(abi.XS_READ, b"/local/domain/9/backend/vbd/0/state\0") == (abi.XS_READ, b"1")
    assert g.ask(abi.XS_WRITE, b"/local/domain/9/backend/vbd/0/state\0x") == (
        abi.XS_ERROR, b"EACCES\0")
    with pytest.raises(XsError):
        xs.write(0, "/tool/y", "1")
    assert xs.read(0, "nothing") is None
    with pytest.raises(XsError):
        xs.read(0, "/local/domain/9/backend")


def test_watch_sees_guest_writes_under_its_prefix() -> None:
    g = Guest()
    seen: list[str] = []
    g.pv.xenstore.watch("/local/domain/0/device/vbd/768", seen.append)
    g.ask(abi.XS_WRITE, b"device/vbd/768/state\0" + str(abi.XenbusStateInitialised).encode())
    g.ask(abi.XS_WRITE, b"device/vbd/769/state\0" b"1")
    g.ask(abi.XS_RM, b"device\0")
    assert seen == ["/local/domain/0/device/vbd/768/state", "/local/domain/0/device"]
    assert g.pv.xenstore.read(0, "device") is None


def test_a_request_in_pieces_and_an_answer_longer_than_the_ring() -> None:
    g = Guest()
    # Nearly the largest value a domain may store (QUOTA_MAX_ENTRY_SIZE), twice the ring.
    value = bytes(ord("a") + i % 26 for i in range(2000))
    msg = g.message(abi.XS_WRITE, b"big\0" + value)
    for i in range(0, len(msg), 700):  # never more than the ring holds at once
        g.put(msg[i : i + 700])
    rsp = g.take()
    assert rsp == HDR.pack(abi.XS_WRITE, g.req_id, 7, 3) + b"OK\0"
    assert g.ask(abi.XS_READ, b"big\0") == (abi.XS_READ, value)
    assert g.conn.broken is None and not g.conn.outbuf and not g.conn.inbuf


def test_a_guest_that_never_reads_answers_is_not_read_further() -> None:
    g = Guest()
    g.pv.xenstore.write(0, "v", "x" * 900)
    for _ in range(3):
        g.put(g.message(abi.XS_READ, b"v\0"))
    # The first answer filled most of the ring; the second waits; the third is not read yet.
    assert len(g.conn.outbuf) > 0 and g.conn.broken is None
    assert len(g.conn.outbuf) < 2 * 916 and len(g.conn.inbuf) <= SIZE
    got = b""
    for _ in range(8):
        got += g.take()
    assert got.count(b"x" * 900) == 3


@pytest.mark.parametrize("hostile", ["payload too long", "request indexes", "response indexes",
                                     "frame given away"])
def test_a_hostile_ring_breaks_only_that_connection(hostile: str) -> None:
    g = Guest()
    if hostile == "payload too long":
        g.put(HDR.pack(abi.XS_READ, 1, 0, abi.XENSTORE_PAYLOAD_MAX + 1) + b"x\0")
    elif hostile == "request indexes":
        g.set_idx(abi.XENSTORE_req_prod, g.idx(abi.XENSTORE_req_cons) + SIZE + 1)
        g.notify()
    elif hostile == "response indexes":
        g.set_idx(abi.XENSTORE_rsp_cons, 0x8000_0000)
        g.put(g.message(abi.XS_READ, b"name\0"))
    else:
        g.hv.frames.owner[g.mfn] = abi.DOMID_XEN  # as if given back and reused
        g.put(g.message(abi.XS_READ, b"name\0"))
    assert g.conn.broken is not None
    before = g.idx(abi.XENSTORE_rsp_prod)
    g.put(g.message(abi.XS_READ, b"name\0"))  # ignored from now on, never raised
    assert g.idx(abi.XENSTORE_rsp_prod) == before
    assert g.pv.xenstore.read(0, "name") == b"Domain-0"  # the store itself goes on
    assert g.d.is_running


def test_a_closed_guest_port_and_a_dead_guest_are_ignored() -> None:
    g = Guest()
    g.pv.events.close(g.d, g.port)
    g.pv.xenstore.service(g.conn)  # answers nobody: no exception
    g.d.crash("test")
    g.put(g.message(abi.XS_READ, b"name\0"), notify=False)
    g.pv.xenstore.service(g.conn)
    assert g.idx(abi.XENSTORE_rsp_prod) == 0


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_xenstore_guest_kernel() -> None:
    # The invariants are checked at the end: checked after each of the guest's hypercalls
    # (about a second each) the run would reach the 60 s guard first.
    r = boot(str(build_guest("xenstore")), devices=True, timeout_s=60.0)
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff and r.violations == []
    assert r.hv is not None and check_invariants(r.hv) == []


@pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
def test_without_devices_start_info_has_no_store() -> None:
    r = boot(str(build_guest("xenstore")), timeout_s=60.0)
    assert r.test_result == "SKIP"
    assert r.hv is not None and BACKEND_DOMID not in r.hv.domains


# ----------------------------------------------------------------------------------------------
# Watches (xenstored_watch.c).
# ----------------------------------------------------------------------------------------------
def _event(path: bytes, token: bytes) -> tuple[int, int, int, bytes]:
    """An XS_WATCH_EVENT as xenstored sends it: header zeroed but type and length."""
    return (abi.XS_WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")


def _ack(g: Guest, mtype: int) -> tuple[int, int, int, bytes]:
    return (mtype, g.req_id, 7, b"OK\0")


def test_watch_answers_ok_then_fires_once_up_front() -> None:
    g = Guest()
    assert g.send(abi.XS_WATCH, b"/local/domain/0/data\0tok\0") == [
        _ack(g, abi.XS_WATCH), _event(b"/local/domain/0/data", b"tok")]
    # A relative watch: its events name paths relative to the home.
    assert g.send(abi.XS_WATCH, b"device\0t2\0") == [_ack(g, abi.XS_WATCH),
                                                     _event(b"device", b"t2")]


def test_a_change_at_or_below_the_watched_path_fires_it() -> None:
    g = Guest()
    g.send(abi.XS_WATCH, b"data\0tok\0")
    # The guest's own write: its event comes before the answer (fire_watches, then send_ack).
    assert g.send(abi.XS_WRITE, b"data/x/y\0v") == [_event(b"data/x/y", b"tok"),
                                                   _ack(g, abi.XS_WRITE)]
    assert g.send(abi.XS_WRITE, b"other\0v") == [_ack(g, abi.XS_WRITE)]  # not below
    assert g.send(abi.XS_WRITE, b"database\0v") == [_ack(g, abi.XS_WRITE)]  # a prefix only
    assert g.send(abi.XS_MKDIR, b"data/x\0") == [_ack(g, abi.XS_MKDIR)]  # exists: no change
    # The tools' write reaches the guest by itself, with a notification.
    g.pv.xenstore.write(BACKEND_DOMID, "/local/domain/0/data/z", "w")
    assert g.pv.events.port_pending(g.d, g.port)
    assert g.messages() == [_event(b"data/z", b"tok")]
    # A removal fires the watches below the removed node too, naming the watched path.
    g.send(abi.XS_WATCH, b"data/x/y\0deep\0")
    assert g.send(abi.XS_RM, b"data/x\0") == [_event(b"data/x", b"tok"),
                                             _event(b"data/x/y", b"deep"), _ack(g, abi.XS_RM)]


def test_no_event_after_unwatch() -> None:
    g = Guest()
    g.send(abi.XS_WATCH, b"data\0tok\0")
    assert g.send(abi.XS_UNWATCH, b"data\0other\0") == [(abi.XS_ERROR, g.req_id, 7,
                                                          b"ENOENT\0")]
    assert g.send(abi.XS_UNWATCH, b"/local/domain/0/data\0tok\0") == [_ack(g, abi.XS_UNWATCH)]
    assert g.send(abi.XS_WRITE, b"data\0v") == [_ack(g, abi.XS_WRITE)]
    g.pv.xenstore.write(BACKEND_DOMID, "/local/domain/0/data", "w")
    assert g.messages() == []
    assert g.send(abi.XS_UNWATCH, b"data\0tok\0") == [(abi.XS_ERROR, g.req_id, 7,
                                                        b"ENOENT\0")]


@pytest.mark.parametrize(("payload", "error"), [
    (b"data\0", b"EINVAL\0"),              # one string
    (b"data\0tok", b"EINVAL\0"),           # the token has no NUL
    (b"data\0tok\0x\0", b"EINVAL\0"),      # three strings
    (b"data//x\0tok\0", b"EINVAL\0"),       # not a node name
    (b"data\0dup\0", b"EEXIST\0"),         # the same path and token again
])
def test_watch_errors(payload: bytes, error: bytes) -> None:
    g = Guest()
    g.send(abi.XS_WATCH, b"data\0dup\0")
    assert g.send(abi.XS_WATCH, payload) == [(abi.XS_ERROR, g.req_id, 7, error)]


def test_watch_quota_is_129_as_3_0_4_counts() -> None:
    g = Guest()
    for i in range(QUOTA_NB_WATCH_PER_DOMAIN + 1):
        assert g.send(abi.XS_WATCH, b"data\0%d\0" % i)[0] == _ack(g, abi.XS_WATCH)
    assert g.send(abi.XS_WATCH, b"data\0last\0") == [(abi.XS_ERROR, g.req_id, 7, b"E2BIG\0")]


def test_events_only_for_nodes_the_watcher_may_see() -> None:
    g = Guest()
    # "/" is the tools': no first event; a change in /tool neither; one in the home does.
    assert g.send(abi.XS_WATCH, b"/\0all\0") == [_ack(g, abi.XS_WATCH)]
    g.pv.xenstore.write(BACKEND_DOMID, "/tool/secret", "x")
    assert g.messages() == []
    g.pv.xenstore.write(BACKEND_DOMID, "/local/domain/0/seen", "x")
    assert g.messages() == [_event(b"/local/domain/0/seen", b"all")]
    # A removed node the watcher could read: the event names it (ENOENT is fine).
    g.pv.xenstore.rm(BACKEND_DOMID, "/local/domain/0/seen")
    assert g.messages() == [_event(b"/local/domain/0/seen", b"all")]


def test_special_watches_fire_on_introduce_and_release() -> None:
    g = Guest()
    assert g.send(abi.XS_WATCH, b"@introduceDomain\0i\0") == [
        _ack(g, abi.XS_WATCH), _event(b"@introduceDomain", b"i")]
    assert g.send(abi.XS_WATCH, b"@releaseDomain\0r\0")[1] == _event(b"@releaseDomain", b"r")
    other = g.hv.create_domain(16)
    g.pv.setup_domain(other)
    g.pv.xenstore.introduce(other, other.page_list[3])
    assert g.messages() == [_event(b"@introduceDomain", b"i")]
    g.pv.xenstore.release(other)
    assert g.messages() == [_event(b"@releaseDomain", b"r")]
    # 3.0.4's do_unwatch makes the name relative: the watch cannot be removed.
    assert g.send(abi.XS_UNWATCH, b"@releaseDomain\0r\0") == [(abi.XS_ERROR, g.req_id, 7,
                                                                b"ENOENT\0")]


def test_a_guest_that_never_reads_its_events_holds_a_bounded_queue() -> None:
    g = Guest()
    g.send(abi.XS_WATCH, b"data\0tok\0")
    for i in range(4000):  # never consumed: the response ring fills, then the queue
        g.pv.xenstore.write(BACKEND_DOMID, "/local/domain/0/data", str(i))
    assert len(g.conn.outbuf) <= MAX_PENDING_EVENTS_BYTES + 64
    assert g.conn.dropped_events > 0
    assert check_invariants(g.hv) == []

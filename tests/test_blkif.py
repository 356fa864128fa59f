"""The virtual block device (refmodel/blkback.py, io/blkif.h): requests served from an image
file, bad requests answered with errors and never reaching the image, a malformed ring no
longer served; and the blkfront guest kernel against the model's back end, its writes landing
in the file at the right offsets and nowhere else."""

from __future__ import annotations

import gc
import hashlib
import os
from collections import deque
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenspec.cli import main
from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.blkback import (
    BlkifRequest,
    BlkifRing,
    DiskImage,
    ImageError,
    Segment,
    VbdDevice,
    unpack_response,
)
from xenspec.refmodel.boot import BootResult, Machine
from xenspec.refmodel.domain import ShutdownReason
from xenspec.refmodel.memory import MachineMemory
from xenspec.refmodel.ring import FrontRing, SharedRing
from xenspec.spec import abi

SECTOR = abi.BLKIF_SECTOR_SIZE
FRONTEND = 3
RING_MFN = 1


class FakeGrants:
    """Grant references of one front end: ref -> (mfn, readonly). Maps as GNTMAP_device_map
    does: a writable map of a read-only grant, an unknown ref or another domain fail."""

    def __init__(self) -> None:
        self.refs: dict[int, tuple[int, bool]] = {}
        self.mapped: dict[int, int] = {}
        self.next_handle = 0

    def map(self, flags: int, ref: int, dom: int) -> tuple[int, int, int]:
        assert flags & abi.GNTMAP_device_map
        if dom != FRONTEND:
            return abi.GNTST_bad_domain, 0, 0
        if ref not in self.refs:
            return abi.GNTST_bad_gntref, 0, 0
        mfn, ro = self.refs[ref]
        if ro and not flags & abi.GNTMAP_readonly:
            return abi.GNTST_general_error, 0, 0
        self.next_handle += 1
        self.mapped[self.next_handle] = mfn
        return abi.GNTST_okay, self.next_handle, mfn << abi.PAGE_SHIFT

    def unmap(self, dev_bus_addr: int, handle: int) -> int:
        assert self.mapped.pop(handle) << abi.PAGE_SHIFT == dev_bus_addr
        return abi.GNTST_okay


class Rig:
    """A front ring in Python, the back end serving it, an image of ``sectors`` sectors."""

    def __init__(self, tmp: Path, sectors: int = 64, readonly: bool = False,
                 barrier: bool = True) -> None:
        self.path = tmp / "disk.img"
        self.original = bytes((i * 7 + i // SECTOR) & 0xFF for i in range(sectors * SECTOR))
        self.path.write_bytes(self.original)
        self.mem = MachineMemory(32)
        self.grants = FakeGrants()
        self.image = DiskImage(self.path, readonly=readonly)
        sring = SharedRing(self.mem, RING_MFN << abi.PAGE_SHIFT, abi.BLKIF_REQUEST_SIZE)
        sring.init()
        self.front = FrontRing(sring)
        self.notified = 0
        self.log: list[str] = []
        self.back = BlkifRing(self.mem, RING_MFN << abi.PAGE_SHIFT, FRONTEND, self.image,
                              self.grants, self.notify, self.log.append, barrier=barrier)
        for ref in range(8):  # data frames 8..15, granted writable as refs 0..7
            self.grants.refs[ref] = (8 + ref, False)
        self.grants.refs[20] = (20, True)  # a read-only grant

    def notify(self) -> None:
        self.notified += 1

    def frame(self, ref: int) -> int:
        return self.grants.refs[ref][0] << abi.PAGE_SHIFT

    def submit(self, *reqs: BlkifRequest) -> list[tuple[int, int, int]]:
        for r in reqs:
            self.front.put_request(r.pack())
        if self.front.push_requests_and_check_notify():
            self.back.kick()
        out = []
        while self.front.has_unconsumed_responses():
            out.append(unpack_response(self.front.get_response()))
        return out

    def one(self, req: BlkifRequest) -> int:
        [(rid, op, status)] = self.submit(req)
        assert (rid, op) == (req.id, req.operation & 0xFF)
        return status

    def disk(self) -> bytes:
        return self.path.read_bytes()  # a write is in the file when the back end answers


def rw(op: int, sector: int, segs: list[tuple[int, int, int]], rid: int = 1,
       nseg: int | None = None) -> BlkifRequest:
    s = tuple(Segment(*x) for x in segs)
    return BlkifRequest(op, len(s) if nseg is None else nseg, 0, rid, sector, s)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_write_lands_at_its_sectors_across_segments(rig: Rig) -> None:
    for ref in range(3):
        rig.mem.write(rig.frame(ref), bytes([0xA0 + ref]) * abi.PAGE_SIZE)
    # seg 0: sectors 3..7 of frame 0 (5 sectors), seg 1: all of frame 1, seg 2: 0..1 of frame 2.
    st_ = rig.one(rw(abi.BLKIF_OP_WRITE, 10, [(0, 3, 7), (1, 0, 7), (2, 0, 1)]))
    assert st_ == abi.BLKIF_RSP_OKAY
    disk = rig.disk()
    want = bytes([0xA0]) * 5 * SECTOR + bytes([0xA1]) * 8 * SECTOR + bytes([0xA2]) * 2 * SECTOR
    assert disk[10 * SECTOR : 25 * SECTOR] == want
    assert disk[: 10 * SECTOR] == rig.original[: 10 * SECTOR]
    assert disk[25 * SECTOR :] == rig.original[25 * SECTOR :]
    assert not rig.grants.mapped, "every grant unmapped after the request"


def test_read_fills_only_the_segments_sectors(rig: Rig) -> None:
    rig.mem.write(rig.frame(4), b"\xee" * abi.PAGE_SIZE)
    assert rig.one(rw(abi.BLKIF_OP_READ, 5, [(4, 2, 4)])) == abi.BLKIF_RSP_OKAY
    got = rig.mem.read(rig.frame(4), abi.PAGE_SIZE)
    assert got[2 * SECTOR : 5 * SECTOR] == rig.original[5 * SECTOR : 8 * SECTOR]
    assert got[: 2 * SECTOR] == b"\xee" * 2 * SECTOR
    assert got[5 * SECTOR :] == b"\xee" * (abi.PAGE_SIZE - 5 * SECTOR)


def test_barrier_writes_and_flushes(rig: Rig) -> None:
    rig.mem.write(rig.frame(0), b"\x55" * abi.PAGE_SIZE)
    assert rig.one(rw(abi.BLKIF_OP_WRITE_BARRIER, 0, [(0, 0, 0)])) == abi.BLKIF_RSP_OKAY
    assert rig.path.read_bytes()[:SECTOR] == b"\x55" * SECTOR  # on disk without our flush


def test_barrier_without_the_feature_is_eopnotsupp(tmp_path: Path) -> None:
    rig = Rig(tmp_path, barrier=False)
    assert rig.one(rw(abi.BLKIF_OP_WRITE_BARRIER, 0, [(0, 0, 0)])) == abi.BLKIF_RSP_EOPNOTSUPP
    assert rig.disk() == rig.original


BAD = [
    ("unknown operation", rw(7, 0, [(0, 0, 7)])),
    ("no segments", rw(abi.BLKIF_OP_WRITE, 0, [])),
    ("12 segments", rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 0)] * 11, nseg=12)),
    ("255 segments", rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 0)] * 11, nseg=255)),
    ("first_sect > last_sect", rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 0), (1, 5, 4)])),
    ("last_sect 8", rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 8)])),
    ("last_sect 255", rw(abi.BLKIF_OP_READ, 0, [(0, 0, 255)])),
    ("past the end", rw(abi.BLKIF_OP_WRITE, 63, [(0, 0, 1)])),
    ("starting past the end", rw(abi.BLKIF_OP_WRITE, 64, [(0, 0, 0)])),
    ("huge sector", rw(abi.BLKIF_OP_WRITE, (1 << 64) - 1, [(0, 0, 0)])),
    ("write from an ungranted ref", rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 7), (99, 0, 7)])),
    ("read into an ungranted ref", rw(abi.BLKIF_OP_READ, 0, [(99, 0, 7)])),
    ("read into a read-only grant", rw(abi.BLKIF_OP_READ, 0, [(0, 0, 0), (20, 0, 7)])),
]


@pytest.mark.parametrize(("what", "req"), BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_an_error_and_leaves_the_image(rig: Rig, what: str,
                                                        req: BlkifRequest) -> None:
    before = rig.mem.read(rig.frame(0), abi.PAGE_SIZE)
    assert rig.one(req) == abi.BLKIF_RSP_ERROR, what
    assert rig.disk() == rig.original
    assert rig.mem.read(rig.frame(0), abi.PAGE_SIZE) == before, "no partial read"
    assert not rig.grants.mapped, "grants mapped so far are unmapped again"
    assert rig.back.broken is None


def test_write_from_a_read_only_grant_is_fine(rig: Rig) -> None:
    rig.mem.write(rig.frame(20), b"\x77" * abi.PAGE_SIZE)
    assert rig.one(rw(abi.BLKIF_OP_WRITE, 1, [(20, 0, 0)])) == abi.BLKIF_RSP_OKAY
    assert rig.disk()[SECTOR : 2 * SECTOR] == b"\x77" * SECTOR


def test_read_only_disk_refuses_writes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, readonly=True)
    assert rig.one(rw(abi.BLKIF_OP_WRITE, 0, [(0, 0, 0)])) == abi.BLKIF_RSP_ERROR
    assert rig.one(rw(abi.BLKIF_OP_READ, 0, [(0, 0, 0)])) == abi.BLKIF_RSP_OKAY
    assert rig.disk() == rig.original


def test_responses_are_held_off_while_the_front_end_is_busy(rig: Rig) -> None:
    """Four requests in one push: one event to the front end, four responses, in order."""
    reqs = [rw(abi.BLKIF_OP_READ, i, [(i, 0, 0)], rid=100 + i) for i in range(4)]
    out = rig.submit(*reqs)
    assert [r[0] for r in out] == [100, 101, 102, 103]
    assert all(r[2] == abi.BLKIF_RSP_OKAY for r in out)
    assert rig.notified == 1
    assert not rig.front.final_check_for_responses()
    out = rig.submit(rw(abi.BLKIF_OP_READ, 0, [(0, 0, 0)], rid=7))
    assert rig.notified == 2 and out[0][0] == 7


def test_malformed_ring_is_no_longer_served(rig: Rig) -> None:
    rig.front.sring.req_prod = 1000
    rig.back.kick()
    assert rig.back.broken is not None and "malformed ring" in rig.log[0]
    assert rig.back.ring.req_cons == 0
    assert rig.front.sring.rsp_prod == 0 and rig.notified == 0
    # Even a well-formed request afterwards is ignored: the ring was given up.
    rig.front.sring.req_prod = 0
    assert rig.submit(rw(abi.BLKIF_OP_READ, 0, [(0, 0, 0)])) == []
    assert rig.disk() == rig.original


def test_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot open"):
        DiskImage(tmp_path / "missing.img")
    (tmp_path / "tiny.img").write_bytes(b"x" * 100)
    with pytest.raises(ImageError, match="smaller than one sector"):
        DiskImage(tmp_path / "tiny.img")
    # A partial last sector is not part of the disk and is never written.
    (tmp_path / "odd.img").write_bytes(b"\0" * (2 * SECTOR + 100))
    assert DiskImage(tmp_path / "odd.img").sectors == 2


def test_image_descriptor_is_closed_once(tmp_path: Path) -> None:
    """The image's descriptor closes with ``close`` (a second close does nothing) or when the
    image goes; a write is in the file at once, with nothing to flush."""
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4 * SECTOR))
    image = DiskImage(path)
    image.write(1, b"\x5a" * SECTOR)
    assert path.read_bytes()[SECTOR:2 * SECTOR] == b"\x5a" * SECTOR
    fd = image.fd
    image.close()
    image.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    gone = DiskImage(path)
    fd = gone.fd
    del gone
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


SEGMENTS = st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 20, 99]), st.integers(0, 8),
                               st.integers(0, 8)), max_size=11)
REQUESTS = st.one_of(
    st.binary(min_size=abi.BLKIF_REQUEST_SIZE, max_size=abi.BLKIF_REQUEST_SIZE),
    st.builds(lambda op, sector, segs, extra: rw(op, sector, segs, nseg=len(segs) + extra).pack(),
              st.sampled_from([0, 1, 2, 3, 255]), st.integers(0, 70), SEGMENTS,
              st.sampled_from([0, 0, 0, 1, 200])))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=REQUESTS)
def test_any_request_bytes_never_crash_or_write_out_of_place(tmp_path: Path, raw: bytes) -> None:
    """Random slot contents: the back end answers each (any status), never raises, never
    grows the image, and writes the image only at the request's own sectors."""
    rig = Rig(tmp_path)
    for ref in range(4):
        rig.mem.write(rig.frame(ref), bytes([0xC0 | ref]) * abi.PAGE_SIZE)
    rig.front.put_request(raw)
    rig.front.push_requests()
    rig.back.kick()
    [(rid, _, status)] = [unpack_response(rig.front.get_response())]
    req = BlkifRequest.unpack(raw)
    assert rid == req.id
    assert status in (abi.BLKIF_RSP_OKAY, abi.BLKIF_RSP_ERROR, abi.BLKIF_RSP_EOPNOTSUPP)
    disk = rig.disk()
    assert len(disk) == len(rig.original)
    if status != abi.BLKIF_RSP_OKAY or req.operation == abi.BLKIF_OP_READ:
        assert hashlib.sha256(disk).digest() == hashlib.sha256(rig.original).digest()
    else:
        n = sum(s.nsec for s in req.segments)
        lo, hi = req.sector_number * SECTOR, (req.sector_number + n) * SECTOR
        assert disk[:lo] == rig.original[:lo] and disk[hi:] == rig.original[hi:]
        fill = {ref: bytes([0xC0 | ref]) for ref in range(4)} | {20: b"\0"}
        assert disk[lo:hi] == b"".join(fill[s.gref] * s.nsec * SECTOR for s in req.segments)
    assert not rig.grants.mapped


# --- the blkfront guest kernel against the model's back end ----------------------------------
needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")
DISK_SECTORS = 256
# blkfront.c's three requests: (first disk sector, sectors).
WRITTEN = [(2, 15), (40, 11), (60, 6)]


def guest_pattern(sector: int, o: int) -> int:
    """blkfront.c, pattern(): byte o of disk sector s."""
    return ((sector * 13 + o * 7 + (o >> 8)) ^ 0x5A) & 0xFF


def run_blkfront(tmp: Path, cmdline: str = "", readonly: bool = False
                 ) -> tuple[BootResult, bytes, bytes, VbdDevice]:
    image = tmp / "disk.img"
    original = bytes((i * 31 + (i >> 9)) & 0xFF for i in range(DISK_SECTORS * SECTOR))
    image.write_bytes(original)
    m = Machine(64, devices=True)
    d = m.add_guest(str(build_guest("blkfront")), 16, cmdline)
    dev = m.attach_disk(d.domain_id, str(image), readonly=readonly)
    m.run(timeout_s=120)
    return m.result(d), image.read_bytes(), original, dev


@needs_gcc
def test_guest_writes_land_at_their_offsets(tmp_path: Path) -> None:
    r, disk, original, dev = run_blkfront(tmp_path)
    assert r.test_result == "SUCCESS", r.console
    assert len(disk) == len(original), "the image keeps its size"
    expect = bytearray(original)
    for first, n in WRITTEN:
        for s in range(first, first + n):
            expect[s * SECTOR : (s + 1) * SECTOR] = bytes(
                guest_pattern(s, o) for o in range(SECTOR))
    for s in range(DISK_SECTORS):
        assert disk[s * SECTOR : (s + 1) * SECTOR] == expect[s * SECTOR : (s + 1) * SECTOR], (
            f"sector {s}")
    assert dev.ring is not None and dev.ring.broken is None
    assert dev.store.read(dev.backend, f"{dev.be}/state") == b"4"
    assert not dev.messages


@needs_gcc
def test_guest_hostile_requests_get_errors_and_leave_the_image(tmp_path: Path) -> None:
    r, disk, original, dev = run_blkfront(tmp_path, "hostile")
    assert r.test_result == "SUCCESS", r.console
    assert r.reason is ShutdownReason.poweroff
    assert disk == original
    assert dev.ring is not None and dev.ring.stats.errors == dev.ring.stats.requests == 10


@needs_gcc
def test_guest_malformed_ring_is_given_up(tmp_path: Path) -> None:
    r, disk, original, dev = run_blkfront(tmp_path, "overflow")
    assert r.test_result == "SUCCESS", r.console
    assert disk == original
    assert dev.ring is not None and dev.ring.broken is not None
    assert any("malformed ring" in m for m in dev.messages)


@needs_gcc
def test_guest_on_a_read_only_disk(tmp_path: Path) -> None:
    """The writes of the pattern fail on a read-only disk: the guest reports FAILURE and the
    image is intact."""
    r, disk, original, dev = run_blkfront(tmp_path, readonly=True)
    assert dev.store.read(dev.backend, f"{dev.be}/info") == str(abi.VDISK_READONLY).encode()
    assert r.test_result == "FAILURE" and "writes: -1 -1" in r.console
    assert disk == original


def test_attach_needs_a_store(tmp_path: Path) -> None:
    (tmp_path / "d.img").write_bytes(bytes(SECTOR))
    m = Machine(32)
    with pytest.raises(ValueError):
        m.attach_disk(0, str(tmp_path / "d.img"))


@needs_gcc
@pytest.mark.parametrize("which", ["missing", "directory"])
def test_cli_disk_errors_are_one_line(tmp_path: Path, which: str) -> None:
    path = tmp_path / "missing.img" if which == "missing" else tmp_path
    res = CliRunner().invoke(main, ["run", "--disk", str(path), str(build_guest("hello"))])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot open disk image" in lines[0], res.output


@needs_gcc
def test_cli_runs_the_guest_with_a_disk(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(DISK_SECTORS * SECTOR))
    res = CliRunner().invoke(main, ["run", "--disk", str(image), str(build_guest("blkfront"))])
    assert res.exit_code == 0, res.output
    assert "Test result: SUCCESS" in res.output
    assert image.read_bytes()[2 * SECTOR : 3 * SECTOR] == bytes(
        guest_pattern(2, o) for o in range(SECTOR))


# --- the handshake (xend's keys, blkback's frontend_changed), driven from Python ---------------
class Handshake:
    """A domain with a store, a disk attached as the tools do, and its front end's moves
    written from Python: a granted ring frame and an unbound port for the back end."""

    def __init__(self, tmp: Path, readonly: bool = False) -> None:
        from xenspec.refmodel.hypervisor import Hypervisor
        from xenspec.refmodel.platform import PVPlatform

        self.hv = Hypervisor(2048)
        self.pv = pv = PVPlatform(self.hv)
        self.d = self.hv.create_domain(16)
        pv.setup_domain(self.d)
        pv.xenstore.introduce(self.d, self.d.page_list[3])
        image = tmp / "disk.img"
        image.write_bytes(bytes(SECTOR * 32))
        self.dev = VbdDevice(pv, self.d.domain_id, DiskImage(image, readonly))
        self.dev.attach()
        self.xs = pv.xenstore

    def be(self, key: str) -> bytes | None:
        return self.xs.read(self.d.domain_id, f"{self.dev.be}/{key}")

    def fe_write(self, key: str, value: str) -> None:
        self.xs.write(self.d.domain_id, f"{self.dev.fe}/{key}", value)

    def offer_ring(self) -> None:
        """blkfront's part before its state moves: ring-ref and event-channel."""
        backend = self.dev.backend
        ring_mfn = self.d.page_list[5]
        t = self.pv.grants.table(self.d)
        self.hv.memory.write(t.shared[0] << abi.PAGE_SHIFT,
                             abi.GRANT_ENTRY_T.pack(abi.GTF_permit_access, backend, ring_mfn))
        port = self.pv.events.alloc_unbound(self.d.vcpus[0], abi.DOMID_SELF, backend)
        self.fe_write("ring-ref", "0")
        self.fe_write("event-channel", str(port))


def test_tools_write_what_xend_writes(tmp_path: Path) -> None:
    h = Handshake(tmp_path)
    assert {k: h.be(k) for k in ("frontend", "frontend-id", "online", "dev", "type",
                                 "params", "mode", "domain")} == {
        "frontend": h.dev.fe.encode(), "frontend-id": b"0", "online": b"1", "dev": b"hda",
        "type": b"file", "params": str(tmp_path / "disk.img").encode(), "mode": b"w",
        "domain": b"Domain-0"}
    fe = {k: h.xs.read(0, f"{h.dev.fe}/{k}") for k in ("backend", "backend-id", "state",
                                                       "virtual-device", "device-type")}
    assert fe == {"backend": h.dev.be.encode(), "backend-id": str(h.dev.backend).encode(),
                  "state": b"1", "virtual-device": b"768", "device-type": b"disk"}
    assert h.be("state") == str(abi.XenbusStateInitWait).encode()  # blkback_probe
    assert h.be("sectors") is None  # written at connect
    assert Handshake(tmp_path, readonly=True).be("mode") == b"r"


def test_back_end_waits_for_the_front_end(tmp_path: Path) -> None:
    h = Handshake(tmp_path)
    h.offer_ring()  # ring-ref and event-channel written, the state still Initialising
    h.fe_write("state", str(abi.XenbusStateInitialising))
    assert h.dev.ring is None and h.be("state") == str(abi.XenbusStateInitWait).encode()
    h.fe_write("state", str(abi.XenbusStateInitialised))
    assert h.dev.ring is not None and h.be("state") == str(abi.XenbusStateConnected).encode()
    assert h.be("sectors") == b"32" and h.be("sector-size") == b"512" and h.be("info") == b"0"


def test_a_front_end_straight_to_connected_gets_connected(tmp_path: Path) -> None:
    """Mini-OS's blkfront writes ring-ref, event-channel and state = Connected, then waits
    for the back end's Connected."""
    h = Handshake(tmp_path)
    h.offer_ring()
    h.fe_write("state", str(abi.XenbusStateConnected))
    assert h.dev.ring is not None and h.be("state") == str(abi.XenbusStateConnected).encode()
    ring = h.dev.ring
    h.fe_write("state", str(abi.XenbusStateConnected))  # a second event: no second connect
    assert h.dev.ring is ring and h.dev.messages == deque()


def test_a_closed_front_end_can_come_back(tmp_path: Path) -> None:
    h = Handshake(tmp_path)
    h.offer_ring()
    h.fe_write("state", str(abi.XenbusStateInitialised))
    h.fe_write("state", str(abi.XenbusStateClosing))
    assert h.dev.ring is None and h.be("state") == str(abi.XenbusStateClosed).encode()
    h.fe_write("state", str(abi.XenbusStateInitialising))
    assert h.be("state") == str(abi.XenbusStateInitWait).encode()  # prepare for reconnect

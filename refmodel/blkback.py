"""The virtual block device's back end (blkif, Xen 3.0.4 io/blkif.h), served by the model as the
backend domain from an image file on the host.

The protocol: the front end puts ``struct blkif_request`` entries (operation, nr_segments,
handle, id, sector_number, up to BLKIF_MAX_SEGMENTS_PER_REQUEST segments of {grant ref,
first_sect, last_sect} within a 4 KB frame) on a shared ring of BLKIF_REQUEST_SIZE entries
(refmodel/ring.py), and the back end answers each with ``struct blkif_response`` {id,
operation, status} over the same slot. Segment i covers the disk sectors that follow those of
segments 0..i-1, starting at ``sector_number``. The back end maps each segment's grant from
the front end's domain (GNTMAP_device_map, with GNTMAP_readonly when it only reads the frame:
a write's data) and copies between the frame and the image.

Checks, in the order of Linux's blkback (drivers/xen/blkback/blkback.c of Xen 3.0.4's kernel,
dispatch_rw_block_io and vbd_translate), every one answered with an error response before
any I/O, so that a refused request never touches the image: an unknown operation is
BLKIF_RSP_ERROR; a barrier writes and flushes the image, or is BLKIF_RSP_EOPNOTSUPP on a disk
set up without ``feature-barrier``; nr_segments 0 or above 11,
first_sect > last_sect or last_sect past the frame's 8 sectors, a write to a read-only disk,
and a sector range past the end of the disk are BLKIF_RSP_ERROR; a grant that does not map
(not granted to the backend domain, or read-only for a read, whose data the back end writes
into the frame) is BLKIF_RSP_ERROR, with the segments mapped so far unmapped. A ring whose
producer index is more than the ring's worth ahead (ring.RingOverflow) is malformed: the back
end stops serving it and records why (``BlkifRing.broken``); the hypervisor and other devices
go on.

The handshake through xenstore is Linux's blkfront/blkback (xenbus) one in its smallest form;
see ``VbdDevice`` below.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from xenspec.refmodel.ring import BackRing, RingMemory, RingOverflow, SharedRing
from xenspec.spec import abi

MAX_MESSAGES = 64

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

SECTORS_PER_FRAME = abi.PAGE_SIZE // abi.BLKIF_SECTOR_SIZE
_SEG = abi.BLKIF_REQUEST_SEGMENT_T
_HDR = abi.BLKIF_REQUEST_HEADER_T


class GrantMapper(Protocol):
    """The grant-table entry points a back end uses (refmodel/grant.py, ``pv.grants``), with
    the backend domain's vCPU bound: map returns (GNTST_* status, handle, dev_bus_addr)."""

    def map(self, flags: int, ref: int, dom: int) -> tuple[int, int, int]: ...

    def unmap(self, dev_bus_addr: int, handle: int) -> int: ...


class ImageError(Exception):
    """The disk image cannot be used (missing, unreadable, too small)."""


class DiskImage:
    """An image file on the host: whole 512-byte sectors; nothing is written past them. Read
    and written at an offset in one system call each (no buffering in between: a write is in
    the file when ``write`` returns, as the next read sees it)."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        try:
            self.fd = os.open(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        except OSError as exc:
            raise ImageError(f"cannot open disk image {self.path}: {exc.strerror}") from exc
        size = os.fstat(self.fd).st_size
        self.sectors = size // abi.BLKIF_SECTOR_SIZE
        if self.sectors == 0:
            os.close(self.fd)
            raise ImageError(f"disk image {self.path} is smaller than one sector")
        self._closer = weakref.finalize(self, os.close, self.fd)  # when the image goes

    def read(self, sector: int, nbytes: int) -> bytes:
        self._check(sector, nbytes)
        data = os.pread(self.fd, nbytes, sector * abi.BLKIF_SECTOR_SIZE)
        return data + bytes(nbytes - len(data))

    def write(self, sector: int, data: bytes) -> None:
        if self.readonly:
            raise ImageError("write to a read-only image")
        self._check(sector, len(data))
        view, at = memoryview(data), sector * abi.BLKIF_SECTOR_SIZE
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self.fd)

    def _check(self, sector: int, nbytes: int) -> None:
        end = sector * abi.BLKIF_SECTOR_SIZE + nbytes
        if sector < 0 or end > self.sectors * abi.BLKIF_SECTOR_SIZE:
            raise ImageError(f"access to sectors past the image's {self.sectors}")

    def close(self) -> None:
        self._closer()  # closes the descriptor once


class Segment(NamedTuple):
    gref: int
    first_sect: int
    last_sect: int

    @property
    def nsec(self) -> int:
        return self.last_sect - self.first_sect + 1


class BlkifRequest(NamedTuple):
    """A request as the back end decoded it from its copy of a ring slot (immutable)."""

    operation: int
    nr_segments: int
    handle: int
    id: int
    sector_number: int
    segments: tuple[Segment, ...]

    @staticmethod
    def unpack(raw: bytes) -> BlkifRequest:
        """Decode a copy of a ring slot; segments past the 11 a request holds are not read."""
        op, nseg, handle, rid, sector = _HDR.unpack_from(raw, 0)
        segs = tuple(
            Segment(*_SEG.unpack_from(raw, _HDR.size + i * _SEG.size))
            for i in range(min(nseg, abi.BLKIF_MAX_SEGMENTS_PER_REQUEST)))
        return BlkifRequest(op, nseg, handle, rid, sector, segs)

    def pack(self) -> bytes:
        out = bytearray(abi.BLKIF_REQUEST_SIZE)
        _HDR.pack_into(out, 0, self.operation, self.nr_segments, self.handle, self.id,
                       self.sector_number)
        for i, s in enumerate(self.segments[:abi.BLKIF_MAX_SEGMENTS_PER_REQUEST]):
            _SEG.pack_into(out, _HDR.size + i * _SEG.size, s.gref, s.first_sect, s.last_sect)
        return bytes(out)


def pack_response(rid: int, operation: int, status: int) -> bytes:
    return abi.BLKIF_RESPONSE_T.pack(rid, operation & 0xFF, status)


def unpack_response(raw: bytes) -> tuple[int, int, int]:
    rid, op, status = abi.BLKIF_RESPONSE_T.unpack_from(raw, 0)
    return int(rid), int(op), int(status)


@dataclass
class BlkifStats:
    requests: int = 0
    errors: int = 0
    sectors_read: int = 0
    sectors_written: int = 0
    notifications: int = 0


class BlkifRing:
    """One connected ring: requests from ``frontend`` served against ``image``.

    ``memory`` holds the ring page (at ``ring_maddr``) and the granted frames (at the
    dev_bus_addr the mapper returns); ``notify`` sends the front end its event."""

    def __init__(self, memory: RingMemory, ring_maddr: int, frontend: int, image: DiskImage,
                 grants: GrantMapper, notify: Callable[[], object],
                 log: Callable[[str], None] | None = None, barrier: bool = True) -> None:
        self.memory = memory
        self.barrier = barrier  # feature-barrier: without it a barrier is BLKIF_RSP_EOPNOTSUPP
        self.ring = BackRing(SharedRing(memory, ring_maddr, abi.BLKIF_REQUEST_SIZE))
        self.frontend = frontend
        self.image = image
        self.grants = grants
        self.notify = notify
        self.log = log
        self.broken: str | None = None
        self.stats = BlkifStats()

    # --- the ring loop (blkback.c, do_block_io_op and its final check) ----------------------
    def kick(self) -> None:
        """The front end notified us: serve every request, then sleep (req_event)."""
        if self.broken is not None:
            return
        try:
            while True:
                while self.ring.unconsumed_requests():
                    req = BlkifRequest.unpack(self.ring.get_request())
                    status = self.dispatch(req)
                    self.stats.requests += 1
                    self.stats.errors += status != abi.BLKIF_RSP_OKAY
                    self.ring.put_response(pack_response(req.id, req.operation, status))
                    if self.ring.push_responses_and_check_notify():
                        self.stats.notifications += 1
                        self.notify()
                if not self.ring.final_check_for_requests():
                    return
        except RingOverflow as exc:
            self.broken = str(exc)
            if self.log is not None:
                self.log(f"blkback: domain {self.frontend}: malformed ring, no longer served: "
                         f"{exc}")

    # --- one request (dispatch_rw_block_io) --------------------------------------------------
    def dispatch(self, req: BlkifRequest) -> int:
        op = req.operation
        if op not in (abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE, abi.BLKIF_OP_WRITE_BARRIER):
            return abi.BLKIF_RSP_ERROR
        if op == abi.BLKIF_OP_WRITE_BARRIER and not self.barrier:
            return abi.BLKIF_RSP_EOPNOTSUPP
        if not 1 <= req.nr_segments <= abi.BLKIF_MAX_SEGMENTS_PER_REQUEST:
            return abi.BLKIF_RSP_ERROR
        nsec = 0
        for s in req.segments:
            if s.first_sect > s.last_sect or s.last_sect >= SECTORS_PER_FRAME:
                return abi.BLKIF_RSP_ERROR
            nsec += s.nsec
        writing = op != abi.BLKIF_OP_READ
        if writing and self.image.readonly:
            return abi.BLKIF_RSP_ERROR
        if req.sector_number + nsec > self.image.sectors:  # vbd_translate
            return abi.BLKIF_RSP_ERROR
        flags = abi.GNTMAP_device_map | (abi.GNTMAP_readonly if writing else 0)
        mapped: list[tuple[int, int]] = []
        try:
            for s in req.segments:
                status, handle, bus = self.grants.map(flags, s.gref, self.frontend)
                if status != abi.GNTST_okay:
                    return abi.BLKIF_RSP_ERROR
                mapped.append((handle, bus))
            return self._io(req, writing, [bus for _, bus in mapped])
        finally:
            for handle, bus in mapped:
                self.grants.unmap(bus, handle)

    def _io(self, req: BlkifRequest, writing: bool, frames: list[int]) -> int:
        sector = req.sector_number
        try:
            for s, bus in zip(req.segments, frames, strict=True):
                at = (bus & ~(abi.PAGE_SIZE - 1)) + s.first_sect * abi.BLKIF_SECTOR_SIZE
                nbytes = s.nsec * abi.BLKIF_SECTOR_SIZE
                if writing:
                    self.image.write(sector, self.memory.read(at, nbytes))
                    self.stats.sectors_written += s.nsec
                else:
                    self.memory.write(at, self.image.read(sector, nbytes))
                    self.stats.sectors_read += s.nsec
                sector += s.nsec
            if req.operation == abi.BLKIF_OP_WRITE_BARRIER:
                self.image.flush()
        except (OSError, ImageError) as exc:
            if self.log is not None:
                self.log(f"blkback: domain {self.frontend}: I/O error: {exc}")
            return abi.BLKIF_RSP_ERROR
        return abi.BLKIF_RSP_OKAY


# ------------------------------------------------------------------------------------------------
# The device and its handshake (xenbus, as Linux's blkfront and blkback do it, smallest form).
# ------------------------------------------------------------------------------------------------
def frontend_path(domid: int, vdev: int = abi.BLKIF_VDEV_HDA) -> str:
    return f"/local/domain/{domid}/device/vbd/{vdev}"


def backend_path(backend: int, domid: int, vdev: int = abi.BLKIF_VDEV_HDA) -> str:
    return f"/local/domain/{backend}/backend/vbd/{domid}/{vdev}"


class _BackendGrants:
    """GrantMapper over ``pv.grants`` with the backend domain's vCPU (host_addr 0: a device
    mapping only)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.grants = pv.grants
        self.v = pv.backends.vcpu()

    def map(self, flags: int, ref: int, dom: int) -> tuple[int, int, int]:
        return self.grants.map_grant_ref(self.v, 0, flags, ref, dom)

    def unmap(self, dev_bus_addr: int, handle: int) -> int:
        return self.grants.unmap_grant_ref(self.v, 0, dev_bus_addr, handle)


class VbdDevice:
    """Virtual block device ``vdev`` of domain ``domid``, backed by ``image``.

    The tools' part (``attach``), as xend writes it (tools/python/xen/xend/server/blkif.py,
    getDeviceDetails, and DevController.py, addStoreEntries, at 3.0.4): the front end's
    directory ``device/vbd/<vdev>`` with ``backend``, ``backend-id``, ``state`` =
    Initialising, ``virtual-device`` and ``device-type`` ("disk"), owned by the guest and
    readable by the back end; the back end's ``backend/vbd/<domid>/<vdev>`` with ``domain``,
    ``frontend``, ``frontend-id``, ``online`` ("1"), ``state`` = Initialising, ``dev`` (the
    guest's name for the disk), ``type`` ("file"), ``params`` (the image's path) and ``mode``
    ("w", or "r" for a read-only image), readable by the front end.

    The back end's part, as Linux's blkback (linux-2.6-xen-sparse/drivers/xen/blkback/xenbus.c
    at 3.0.4): the probe sets ``state`` = InitWait (blkback_probe) and watches the front end's
    ``state`` (frontend_changed). When that becomes Initialised or Connected (a front end such
    as Mini-OS's writes its ring-ref and event-channel and goes straight to Connected), unless
    the back end is Connected already, it reads ``ring-ref`` and ``event-channel`` (untrusted
    text), maps the ring's grant, binds the event channel and listens on it (connect_ring),
    then writes ``feature-barrier``, ``sectors``, ``info`` (VDISK_READONLY) and
    ``sector-size`` and sets ``state`` = Connected (connect). A front end that closes (Closing,
    Closed) is disconnected; one that is Initialising again after that finds the back end in
    InitWait ("prepare for reconnect"). A failure along the way is logged, the back end's
    ``state`` becomes Closing (Linux's xenbus_dev_fatal) and nothing is connected. The
    model's back end needs no hotplug script (``physical-device``): the image is open."""

    def __init__(self, pv: PVPlatform, domid: int, image: DiskImage,
                 vdev: int = abi.BLKIF_VDEV_HDA, barrier: bool = True,
                 log: Callable[[str], None] | None = None, dev: str = "hda") -> None:
        self.pv = pv
        self.store = pv.xenstore
        self.domid = domid
        self.image = image
        self.vdev = vdev
        self.dev = dev
        self.barrier = barrier
        # The back end's log lines (a front end can cause one per handshake it drives): the
        # last MAX_MESSAGES, each also handed to ``log`` as it comes.
        self.messages: deque[str] = deque(maxlen=MAX_MESSAGES)
        self._log = log
        self.backend = pv.backends.domid
        self.fe = frontend_path(domid, vdev)
        self.be = backend_path(self.backend, domid, vdev)
        self.ring: BlkifRing | None = None
        self.port = 0
        self._ring_map: tuple[int, int] | None = None  # (handle, dev_bus_addr)

    def log(self, text: str) -> None:
        self.messages.append(text)
        if self._log is not None:
            self._log(text)

    # --- the tools and the back end's probe ----------------------------------------------------
    def attach(self) -> None:
        s, be, fe, me = self.store, self.be, self.fe, self.backend
        initialising = str(abi.XenbusStateInitialising)
        s.mkdir(me, be)
        s.set_perms(be, me, {self.domid: abi.XS_PERM_READ})
        for key, value in (("domain", f"Domain-{self.domid}"), ("frontend", fe),
                           ("frontend-id", str(self.domid)), ("online", "1"),
                           ("state", initialising), ("dev", self.dev), ("type", "file"),
                           ("params", self.image.path),
                           ("mode", "r" if self.image.readonly else "w")):
            s.write(me, f"{be}/{key}", value)
        s.mkdir(me, fe)
        s.set_perms(fe, self.domid, {me: abi.XS_PERM_READ})
        for key, value in (("backend", be), ("backend-id", str(me)), ("state", initialising),
                           ("virtual-device", str(self.vdev)), ("device-type", "disk")):
            s.write(me, f"{fe}/{key}", value)
        self._set_state(abi.XenbusStateInitWait)  # blkback_probe
        s.watch(f"{fe}/state", self._frontend_changed)

    def _read_int(self, path: str) -> int | None:
        raw = self.store.read(self.backend, path)
        try:
            value = int(raw.decode("ascii")) if raw is not None and len(raw) <= 12 else None
        except (UnicodeDecodeError, ValueError):
            value = None
        return value if value is not None and 0 <= value <= 0xFFFFFFFF else None

    def _set_state(self, state: int) -> None:
        self.store.write(self.backend, f"{self.be}/state", str(state))

    def _frontend_changed(self, _path: str) -> None:
        """frontend_changed: connect on Initialised or Connected (once: a back end that is
        Connected stays so, as two watch events may show one state), close on Closing or
        Closed, InitWait again for a front end Initialising after a close."""
        state = self._read_int(f"{self.fe}/state")
        if state in (abi.XenbusStateInitialised, abi.XenbusStateConnected):
            if self.ring is None and self._state() != abi.XenbusStateConnected:
                self.connect()
        elif state in (abi.XenbusStateClosing, abi.XenbusStateClosed) and self.ring is not None:
            self.disconnect()
            self._set_state(abi.XenbusStateClosed)
        elif state == abi.XenbusStateInitialising and self._state() == abi.XenbusStateClosed:
            self._set_state(abi.XenbusStateInitWait)

    def _state(self) -> int | None:
        return self._read_int(f"{self.be}/state")

    def _fatal(self, why: str) -> None:
        self.log(f"blkback: vbd {self.vdev} of domain {self.domid}: {why}")
        self._set_state(abi.XenbusStateClosing)

    # --- connect (blkback's connect_ring and blkif_map) ---------------------------------------
    def connect(self) -> None:
        from xenspec.refmodel.event import EventError

        ring_ref = self._read_int(f"{self.fe}/ring-ref")
        evtchn = self._read_int(f"{self.fe}/event-channel")
        if ring_ref is None or evtchn is None:
            self._fatal("reading ring-ref and event-channel from the front end failed")
            return
        grants = _BackendGrants(self.pv)
        status, handle, bus = grants.map(abi.GNTMAP_device_map, ring_ref, self.domid)
        if status != abi.GNTST_okay:
            self._fatal(f"mapping ring-ref {ring_ref} failed: GNTST {status}")
            return
        try:
            port = self.pv.events.bind_interdomain(self.pv.backends.vcpu(), self.domid, evtchn)
        except EventError as exc:
            grants.unmap(bus, handle)
            self._fatal(f"binding event channel {evtchn} failed: -{exc.errno}")
            return
        self._ring_map, self.port = (handle, bus), port
        self.ring = BlkifRing(self.pv.hv.memory, bus, self.domid, self.image, grants,
                              lambda: self.pv.backends.notify(port), self.log,
                              barrier=self.barrier)
        self.pv.backends.listen(port, self.ring.kick)
        # connect: what the front end needs to know of the disk, then Connected.
        st, be = self.store, self.be
        st.write(self.backend, f"{be}/feature-barrier", "1" if self.barrier else "0")
        st.write(self.backend, f"{be}/sectors", str(self.image.sectors))
        st.write(self.backend, f"{be}/info",
                 str(abi.VDISK_READONLY if self.image.readonly else 0))
        st.write(self.backend, f"{be}/sector-size", str(abi.BLKIF_SECTOR_SIZE))
        self._set_state(abi.XenbusStateConnected)

    def disconnect(self) -> None:
        if self.ring is None:
            return
        from xenspec.refmodel.event import EventError

        self.pv.backends.unlisten(self.port)
        with contextlib.suppress(EventError):  # the front end may have closed its end
            self.pv.events.close(self.pv.backends.domain(), self.port)
        if self._ring_map is not None:
            handle, bus = self._ring_map
            _BackendGrants(self.pv).unmap(bus, handle)
        self.ring, self._ring_map, self.port = None, None, 0

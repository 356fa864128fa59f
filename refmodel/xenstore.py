"""A small xenstore: the store daemon of the backend domain and its ring in each guest.

What Xen does (3.0.4): the tools give each domain a store frame and an event channel
(tools/libxc/xc_linux_build.c, setup_guest: the frame after start_info in the bootstrap region,
cleared, its mfn in start_info.store_mfn; xend's alloc_unbound for store_evtchn) and introduce
the domain to xenstored, which binds the port (tools/xenstore/xenstored_domain.c, do_introduce,
new_domain). The frame holds ``struct xenstore_domain_interface`` (io/xs_wire.h): a request
and a response ring of XENSTORE_RING_SIZE bytes with free-running indexes, carrying messages
``struct xsd_sockmsg {type, req_id, tx_id, len}`` and ``len`` bytes of payload. The daemon
answers each request with the request's type, req_id and tx_id, or XS_ERROR with the errno's
name ("ENOENT\\0") (xenstored_core.c, send_reply, send_error, send_ack: "OK\\0").

The model (``pv.xenstore``) keeps the tree in Python and serves when the backend domain runs
after the guest notified (refmodel/backend.py): XS_READ (the value, no terminator), XS_WRITE
("path\\0value", creating missing parents), XS_MKDIR, XS_RM (a missing node whose parent exists
is OK, as do_rm), XS_DIRECTORY (each child's name and a NUL, in creation order). Transactions
are not isolated: XS_TRANSACTION_START answers the id "0\\0" and XS_TRANSACTION_END "OK\\0" (so
watches fire at each write, not at the transaction's end). XS_WATCH and XS_UNWATCH are below.
Any other type is EINVAL, as is a request without the NUL-terminated arguments it needs or a
malformed path (xenstored_core.c, is_valid_nodename: "/"-separated names of [A-Za-z0-9-/_@], no
"//", no trailing "/"). A path not starting with "/" is relative to the domain's home
``/local/domain/<domid>`` (canonicalize).

Permissions are xenstored's rule (xenstored_core.c, perm_for_conn and get_node) in its
simplest form: every node has an owner; the owner and privileged domains may read and write it;
another domain only what the node's ACL grants it (XS_PERM_READ, XS_PERM_WRITE). A new node
inherits its parent's permissions and is owned by the unprivileged domain that creates it
(new_node); creating, like writing, needs write access to the nearest existing ancestor. The
tools give a domain its home, so a guest reads and writes only under ``/local/domain/<domid>``
and gets EACCES elsewhere; for a missing node the error is EACCES when the nearest existing
ancestor is unreadable, else ENOENT (errno_from_parents).

Quotas are xenstored's (xenstored_core.c, 3.0.4 defaults): an unprivileged domain owns at most
1000 nodes (construct_node: the nodes it creates are its own; the tools' nodes in its home
count too, as domain_entry_inc charges the owner) and writes no node record of 2048 bytes or
more (write_node: value, permissions and children's names); past either, ENOSPC and nothing is
changed. So the store a domain can fill is bounded.

The ring is untrusted. The model never raises on what a guest writes there: indexes further
apart than the ring (``prod - cons > XENSTORE_RING_SIZE``, xenstored_domain.c check_indexes)
or a message longer than XENSTORE_PAYLOAD_MAX break the connection, as xenstored drops it: the
model ignores that domain's store from then on (``Connection.broken`` says why). A message may
arrive in pieces across notifications; a response longer than the free space waits for the
guest to consume and notify.

The daemon holds its foreign mapping of the ring (``Backends.map_foreign``: a general and a
writable type reference) from ``introduce`` until ``release`` (domain destruction:
xenstored_domain.c, domain_cleanup), and reads and writes the frame only while it holds it:
the guest can neither make the ring a page table, GDT or LDT frame nor hand it back to the
heap while it is served (given back with memory_op, it stays the guest's until the daemon
lets go).

Watches are xenstored's (xenstored_watch.c, do_watch, do_unwatch, add_event, fire_watches):
XS_WATCH takes exactly two strings, "path\\0token\\0" (else EINVAL); a path not starting
with "/" is relative to the home and its events name paths relative to it; a path starting with
"@" names a special event (@introduceDomain, @releaseDomain: fired when the tools introduce a
domain and when its store is released) and is not checked; any other malformed path is
EINVAL. The same path and token twice is EEXIST; an unprivileged domain with more than
QUOTA_NB_WATCH_PER_DOMAIN watches is E2BIG (the 3.0.4 test, ``nbwatch > 128`` before adding,
lets it have 129). The answer is "OK\\0", followed at once by a first event for the watched
path ("We fire once up front"). After every change (XS_WRITE, a creating XS_MKDIR, an XS_RM that
removes, the tools' writes and permission changes) each watch whose path is the changed node or
an ancestor of it (is_child; a watch on "/" sees every change, "@" names included) gets an
event naming the changed node; an XS_RM also fires the watches below the removed node, naming
the watched path. An event is the message XS_WATCH_EVENT with req_id and tx_id 0 (send_reply
zeroes the header) and the payload "path\\0token\\0"; it is queued behind what the
connection has pending, so a guest's own write's events come before its answer. A watcher
that can neither read the node nor see that it does not exist (EACCES) gets no event
(add_event). XS_UNWATCH takes the same two strings and removes that watch ("OK\\0"), or is
ENOENT (3.0.4's do_unwatch makes an "@" name relative to the home like any other, so a domain
cannot remove its watch on one: ENOENT; later xenstored fixed that).

Departure: xenstored 3.0.4 queues events without bound; the model drops an event while a
connection already has MAX_PENDING_EVENTS_BYTES of answers and events waiting for the guest to
read them (``Connection.dropped_events`` counts them), as later xenstored bounds the events it
holds for a connection (XSA-326), so a guest that never reads its ring cannot make the store
grow.

Python side: ``read``, ``write``, ``mkdir``, ``rm``, ``directory`` act as a domain (the
backend domain's id for the privileged tools), and ``watch(prefix, fn)`` calls ``fn(path)``
after every change at or under the absolute path ``prefix`` (or above it, by a removal),
whoever made it: this is how a backend notices a frontend's ``state`` key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xenspec.refmodel.backend import BACKEND_DOMID
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.event import EventError
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

_HDR = abi.XSD_SOCKMSG_T
_RING_MASK = abi.XENSTORE_RING_SIZE - 1
_IDX_MASK = 0xFFFFFFFF
_VALID_PATH = re.compile(r"/|(/[A-Za-z0-9\-_@]+)+")
# xenstored_core.c (3.0.4), the quotas of an unprivileged domain: the nodes it may own and the
# size of a node's record (write_node: 3 words, 8 bytes per permission, value, children's
# names). Past either the request is ENOSPC (3.0.4 sets that errno for the size; for the
# count it leaves errno as it was, and later xenstored sets ENOSPC, which the model follows).
QUOTA_NB_ENTRY_PER_DOMAIN = 1000
QUOTA_MAX_ENTRY_SIZE = 2048
QUOTA_NB_WATCH_PER_DOMAIN = 128  # xenstored_core.c, quota_nb_watch_per_domain
# The model's bound on what waits in a connection for the guest to read (module docstring).
MAX_PENDING_EVENTS_BYTES = 16 * abi.XENSTORE_RING_SIZE

_ERRNO_NAMES = {abi.EINVAL: "EINVAL", abi.EACCES: "EACCES", abi.ENOENT: "ENOENT",
                abi.ENOSYS: "ENOSYS", abi.EEXIST: "EEXIST", abi.E2BIG: "E2BIG",
                abi.ENOSPC: "ENOSPC", abi.EIO: "EIO"}


class XsError(Exception):
    """A refused store operation, with the errno xenstored would answer."""

    def __init__(self, errno: int) -> None:
        super().__init__(_ERRNO_NAMES.get(errno, str(errno)))
        self.errno = errno


@dataclass
class Node:
    """A node: its value and permissions (xenstored's struct node, perms[0] the owner)."""

    value: bytes = b""
    owner: int = BACKEND_DOMID
    acl: dict[int, int] = field(default_factory=dict)  # other domains' XS_PERM_* bits
    childlen: int = 0  # the bytes of its children's names, each with a NUL (node->childlen)

    def size(self, value_len: int | None = None, more_children: int = 0) -> int:
        """write_node's record size: 3 words, the permissions, the value, the children."""
        value = len(self.value) if value_len is None else value_len
        return 12 + 8 * (1 + len(self.acl)) + value + self.childlen + more_children


@dataclass
class Connection:
    """A domain's store ring, as xenstored_domain.c's struct domain sees it."""

    domid: int
    mfn: int
    guest_port: int
    backend_port: int
    inbuf: bytearray = field(default_factory=bytearray)  # a request arriving in pieces
    outbuf: bytearray = field(default_factory=bytearray)  # responses waiting for room
    broken: str | None = None  # why the daemon stopped serving it
    watches: list[Watch] = field(default_factory=list)  # in registration order
    dropped_events: int = 0  # watch events not queued (MAX_PENDING_EVENTS_BYTES)


@dataclass(frozen=True)
class Watch:
    """A guest's watch (xenstored_watch.c's struct watch): the canonical path or "@" name,
    the token, and the home its events are named relative to (None for an absolute one)."""

    node: str
    token: bytes
    relative_path: str | None


def home(domid: int) -> str:
    return f"/local/domain/{domid}"


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def is_child(child: str, parent_path: str) -> bool:
    """xenstored_core.c, is_child: ``child`` is ``parent_path`` or below it; everything is
    below "/"."""
    if parent_path == "/":
        return True
    return child.startswith(parent_path) and child[len(parent_path):len(parent_path) + 1] in (
        "/", "")


def strings(payload: bytes) -> list[bytes]:
    """xenstored_core.c, get_strings: the NUL-terminated strings of a payload (bytes after
    the last NUL are not one)."""
    return payload.split(b"\0")[:-1]


class XenStore:
    """The model's xenstored (``pv.xenstore``)."""

    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.nodes: dict[str, Node] = {}
        self.entries: dict[int, int] = {}  # nodes owned, by domain (struct domain, nbentry)
        for path in ("/", "/local", "/local/domain", "/tool"):
            self._add(path, Node())
        self.conns: dict[int, Connection] = {}
        self.watches: list[tuple[str, Callable[[str], None]]] = []
        self._serving: Connection | None = None  # the connection whose requests are served

    # ----------------------------------------------------------------------------------------
    # Domains: introduction by the tools (the domain builder calls this).
    # ----------------------------------------------------------------------------------------
    def introduce(self, d: Domain, mfn: int) -> int:
        """Serve ``d``'s store ring in frame ``mfn`` (mapped, then cleared here) over a new
        event channel; write the keys the tools write into its home. Returns the guest's port.
        ForeignMapError if the frame cannot be mapped writable, EventError if ``d`` has no
        free port."""
        backends = self.pv.backends
        self.release(d)  # a store introduced before is let go of first
        backends.map_foreign(d, mfn)
        self.hv.memory.write(mfn << abi.PAGE_SHIFT, bytes(abi.PAGE_SIZE))
        try:
            gport, bport = backends.connect(d)
        except EventError:
            backends.unmap_foreign(mfn)
            raise
        conn = Connection(d.domain_id, mfn, gport, bport)
        self.conns[d.domain_id] = conn
        self.pv.backends.listen(bport, lambda: self.service(conn))
        h = home(d.domain_id)
        if h not in self.nodes:
            self._add(h, Node(owner=d.domain_id))
        tools = self.pv.backends.domid
        self.write(tools, f"{h}/domid", str(d.domain_id))
        self.write(tools, f"{h}/name", f"Domain-{d.domain_id}")
        self._fire("@introduceDomain")  # xenstored_domain.c, do_introduce
        return gport

    # ----------------------------------------------------------------------------------------
    # The tree and its permissions.
    # ----------------------------------------------------------------------------------------
    def _privileged(self, domid: int) -> bool:
        d = self.hv.domains.get(domid)
        return domid == self.pv.backends.domid or (d is not None and d.is_privileged)

    def _perm(self, domid: int, node: Node) -> int:
        """perm_for_conn: owners and privileged domains get everything."""
        if node.owner == domid or self._privileged(domid):
            return abi.XS_PERM_READ | abi.XS_PERM_WRITE
        return node.acl.get(domid, abi.XS_PERM_NONE)

    def canonical(self, domid: int, path: str) -> str:
        """canonicalize and is_valid_nodename; XsError(EINVAL) for a malformed path."""
        if not path.startswith("/"):
            path = f"{home(domid)}/{path}"
        if _VALID_PATH.fullmatch(path) is None:
            raise XsError(abi.EINVAL)
        return path

    def _ancestor(self, path: str) -> Node:
        while path not in self.nodes:
            path = parent(path)
        return self.nodes[path]

    def _get(self, domid: int, path: str, perm: int) -> Node:
        """get_node: the node if ``domid`` has ``perm`` on it; EACCES or ENOENT otherwise."""
        node = self.nodes.get(path)
        if node is not None:
            if self._perm(domid, node) & perm != perm:
                raise XsError(abi.EACCES)
            return node
        if not self._perm(domid, self._ancestor(path)) & abi.XS_PERM_READ:
            raise XsError(abi.EACCES)
        raise XsError(abi.ENOENT)

    def _create(self, domid: int, path: str, value_len: int = 0) -> Node:
        """Create ``path`` and its missing parents (construct_node, create_node), all or
        none: an unprivileged domain may own at most QUOTA_NB_ENTRY_PER_DOMAIN nodes, and no
        record it writes (the new nodes, the existing parent given a child) may reach
        QUOTA_MAX_ENTRY_SIZE bytes (ENOSPC)."""
        anc = self._ancestor(path)
        if not self._perm(domid, anc) & abi.XS_PERM_WRITE:
            raise XsError(abi.EACCES)
        missing = []
        p = path
        while p not in self.nodes:
            missing.append(p)
            p = parent(p)
        privileged = self._privileged(domid)
        owner = anc.owner if privileged else domid
        if not privileged:
            if self.entries.get(domid, 0) + len(missing) > QUOTA_NB_ENTRY_PER_DOMAIN:
                raise XsError(abi.ENOSPC)
            new = Node(owner=owner, acl=dict(anc.acl))
            sizes = [anc.size(more_children=len(basename(missing[-1])) + 1),
                     new.size(value_len=value_len)]
            sizes += [new.size(more_children=len(basename(c)) + 1) for c in missing[:-1]]
            if max(sizes) >= QUOTA_MAX_ENTRY_SIZE:
                raise XsError(abi.ENOSPC)
        for p in reversed(missing):
            self._add(p, Node(owner=owner, acl=dict(anc.acl)))
        return self.nodes[path]

    def _add(self, path: str, node: Node) -> None:
        """A new node: its parent's children and its owner's count grow."""
        self.nodes[path] = node
        if path != "/":
            self.nodes[parent(path)].childlen += len(basename(path)) + 1
        self.entries[node.owner] = self.entries.get(node.owner, 0) + 1

    def _remove(self, path: str) -> None:
        """Remove ``path`` and everything under it."""
        below = path + "/"
        for p in [p for p in self.nodes if p == path or p.startswith(below)]:
            owner = self.nodes.pop(p).owner
            self.entries[owner] -= 1
            if not self.entries[owner]:
                del self.entries[owner]
        self.nodes[parent(path)].childlen -= len(basename(path)) + 1

    def _changed(self, path: str, recurse: bool = False) -> None:
        self._fire(path, recurse)
        for prefix, fn in list(self.watches):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/") or \
                    prefix.startswith(path.rstrip("/") + "/"):
                fn(path)

    # ----------------------------------------------------------------------------------------
    # The operations, as a domain ``domid`` (Python API and the ring both use these).
    # ----------------------------------------------------------------------------------------
    def read(self, domid: int, path: str) -> bytes | None:
        """The value, or None if there is no such node; XsError for EACCES or EINVAL."""
        try:
            return self._get(domid, self.canonical(domid, path), abi.XS_PERM_READ).value
        except XsError as e:
            if e.errno == abi.ENOENT:
                return None
            raise

    def write(self, domid: int, path: str, value: bytes | str) -> None:
        path = self.canonical(domid, path)
        data = value.encode() if isinstance(value, str) else bytes(value)
        node = self.nodes.get(path)
        if node is None:
            node = self._create(domid, path, len(data))
        elif not self._perm(domid, node) & abi.XS_PERM_WRITE:
            raise XsError(abi.EACCES)
        elif not self._privileged(domid) and node.size(len(data)) >= QUOTA_MAX_ENTRY_SIZE:
            raise XsError(abi.ENOSPC)  # write_node
        node.value = data
        self._changed(path)

    def mkdir(self, domid: int, path: str) -> None:
        path = self.canonical(domid, path)
        if path in self.nodes:
            self._get(domid, path, abi.XS_PERM_WRITE)
            return
        self._create(domid, path)
        self._changed(path)

    def rm(self, domid: int, path: str) -> None:
        """do_rm: remove the node and everything under it; a missing node whose parent
        exists is fine; the root is EINVAL."""
        path = self.canonical(domid, path)
        if path == "/":
            raise XsError(abi.EINVAL)
        try:
            self._get(domid, path, abi.XS_PERM_WRITE)
        except XsError as e:
            if e.errno == abi.ENOENT and parent(path) in self.nodes:
                return
            raise
        self._remove(path)
        self._changed(path, recurse=True)

    def directory(self, domid: int, path: str) -> list[str]:
        path = self.canonical(domid, path)
        self._get(domid, path, abi.XS_PERM_READ)
        below = "/" if path == "/" else path + "/"
        return [p[len(below):] for p in self.nodes
                if p.startswith(below) and p != "/" and "/" not in p[len(below):]]

    def set_perms(self, path: str, owner: int, acl: dict[int, int] | None = None) -> None:
        """The tools' xs_set_permissions on an existing absolute path."""
        path = self.canonical(self.pv.backends.domid, path)
        node = self.nodes[path]
        self.entries[node.owner] -= 1
        if not self.entries[node.owner]:
            del self.entries[node.owner]
        self.entries[owner] = self.entries.get(owner, 0) + 1
        node.owner, node.acl = owner, dict(acl or {})
        self._fire(path)  # do_set_perms fires the node's watches

    def watch(self, prefix: str, fn: Callable[[str], None]) -> None:
        """Call ``fn(path)`` after each change at, under or above the absolute ``prefix``."""
        self.watches.append((prefix, fn))

    # ----------------------------------------------------------------------------------------
    # Guests' watches (xenstored_watch.c).
    # ----------------------------------------------------------------------------------------
    def add_watch(self, conn: Connection, path: str, token: bytes) -> None:
        """do_watch, up to its answer (XsError for EINVAL, EEXIST, E2BIG); the ring's side
        (``_one_request``) sends the answer, then the first event."""
        relative_path = None
        if not path.startswith("@"):
            if not path.startswith("/"):
                relative_path = home(conn.domid)
            path = self.canonical(conn.domid, path)
        if any(w.node == path and w.token == token for w in conn.watches):
            raise XsError(abi.EEXIST)
        if not self._privileged(conn.domid) and len(conn.watches) > QUOTA_NB_WATCH_PER_DOMAIN:
            raise XsError(abi.E2BIG)
        conn.watches.append(Watch(path, token, relative_path))

    def remove_watch(self, conn: Connection, path: str, token: bytes) -> None:
        """do_unwatch: the watch on the canonical ``path`` with ``token`` goes (ENOENT if
        there is none). The path is not checked further; as in 3.0.4 (canonicalize), an "@"
        name is made relative to the home too, so a domain cannot unwatch one (ENOENT)."""
        if not path.startswith("/"):
            path = f"{home(conn.domid)}/{path}"
        for w in conn.watches:
            if w.node == path and w.token == token:
                conn.watches.remove(w)
                return
        raise XsError(abi.ENOENT)

    def _event(self, conn: Connection, watch: Watch, name: str) -> None:
        """add_event: queue "name\\0token\\0" for ``conn``, if it may see the node."""
        if not name.startswith("@"):
            try:
                self._get(conn.domid, name, abi.XS_PERM_READ)
            except XsError as e:
                if e.errno != abi.ENOENT:
                    return
        if watch.relative_path is not None:
            name = name[len(watch.relative_path):]
            name = name[1:] if name.startswith("/") else name
        payload = name.encode() + b"\0" + watch.token + b"\0"
        if len(conn.outbuf) >= MAX_PENDING_EVENTS_BYTES:
            conn.dropped_events += 1
            return
        conn.outbuf += _HDR.pack(abi.XS_WATCH_EVENT, 0, 0, len(payload)) + payload

    def _fire(self, name: str, recurse: bool = False) -> None:
        """fire_watches: an event for each guest watch at or above ``name`` (and, with
        ``recurse``, below it); a connection not being served right now gets what fits at
        once, with a notification."""
        for conn in list(self.conns.values()):
            if not conn.watches or not self._usable(conn):
                continue
            queued = len(conn.outbuf)
            for w in list(conn.watches):
                if is_child(name, w.node):
                    self._event(conn, w, name)
                elif recurse and is_child(w.node, name):
                    self._event(conn, w, w.node)
            if len(conn.outbuf) != queued and conn is not self._serving and self._flush(conn):
                self.pv.backends.notify(conn.backend_port)

    # ----------------------------------------------------------------------------------------
    # The ring (xenstored_domain.c readchn/writechn, xenstored_core.c handle_input).
    # ----------------------------------------------------------------------------------------
    def _idx(self, conn: Connection, off: int) -> int:
        raw = self.hv.memory.read((conn.mfn << abi.PAGE_SHIFT) + off, 4)
        return int.from_bytes(raw, "little")

    def _set_idx(self, conn: Connection, off: int, value: int) -> None:
        data = (value & _IDX_MASK).to_bytes(4, "little")
        self.hv.memory.write((conn.mfn << abi.PAGE_SHIFT) + off, data)

    def release(self, d: Domain) -> None:
        """domain_cleanup: stop serving ``d``, close the channel and unmap the ring."""
        conn = self.conns.pop(d.domain_id, None)
        if conn is not None:
            self.pv.backends.disconnect(conn.backend_port)
            self.pv.backends.unmap_foreign(conn.mfn)
            self._fire("@releaseDomain")  # domain_cleanup; the domain's watches went with it

    def _usable(self, conn: Connection) -> bool:
        """The connection is served: not broken, its domain running, its mapping held."""
        d = self.hv.domains.get(conn.domid)
        if conn.broken is not None or d is None or not d.is_running:
            return False
        if self.conns.get(conn.domid) is not conn or conn.mfn not in self.hv.backend_maps:
            return False
        if self.hv.frames.owner[conn.mfn] != conn.domid:  # cannot happen while mapped
            conn.broken = "the store frame is no longer the domain's"
            return False
        return True

    def service(self, conn: Connection) -> None:
        """The guest notified. As xenstored, one request at a time: write what fits of the
        pending answer; while none is pending, answer the next complete request, reading the
        request ring when more bytes are needed; notify if anything moved. (So a guest that
        never reads its answers stops being read: the buffers stay bounded.)"""
        if not self._usable(conn):
            return
        outer, self._serving = self._serving, conn
        try:
            moved = self._flush(conn)
            while not conn.outbuf and conn.broken is None:
                if self._one_request(conn):
                    moved = self._flush(conn) or moved
                elif self._read_requests(conn):
                    moved = True
                else:
                    break
        finally:
            self._serving = outer
        if moved:
            self.pv.backends.notify(conn.backend_port)

    def _read_requests(self, conn: Connection) -> bool:
        """Move what the request ring holds into ``inbuf``; True if anything was taken."""
        cons = self._idx(conn, abi.XENSTORE_req_cons)
        prod = self._idx(conn, abi.XENSTORE_req_prod)
        avail = (prod - cons) & _IDX_MASK
        if avail > abi.XENSTORE_RING_SIZE:
            conn.broken = f"request indexes cons {cons:#x} prod {prod:#x} are too far apart"
            return False
        if not avail:
            return False
        base = (conn.mfn << abi.PAGE_SHIFT) + abi.XENSTORE_req
        while avail:
            start = cons & _RING_MASK
            n = min(avail, abi.XENSTORE_RING_SIZE - start)
            conn.inbuf += self.hv.memory.read(base + start, n)
            cons = (cons + n) & _IDX_MASK
            avail -= n
        self._set_idx(conn, abi.XENSTORE_req_cons, cons)
        return True

    def _one_request(self, conn: Connection) -> bool:
        """Answer the first request of ``inbuf`` if it is complete; True if one was."""
        if len(conn.inbuf) < _HDR.size:
            return False
        mtype, req_id, tx_id, length = _HDR.unpack_from(conn.inbuf)
        if length > abi.XENSTORE_PAYLOAD_MAX:
            conn.broken = (f"a message of {length} bytes (XENSTORE_PAYLOAD_MAX is "
                           f"{abi.XENSTORE_PAYLOAD_MAX})")
            return False
        if len(conn.inbuf) < _HDR.size + length:
            return False
        payload = bytes(conn.inbuf[_HDR.size : _HDR.size + length])
        del conn.inbuf[: _HDR.size + length]
        rtype, reply = self._request(conn, mtype, payload)
        conn.outbuf += _HDR.pack(rtype, req_id, tx_id, len(reply)) + reply
        if mtype == abi.XS_WATCH and rtype == abi.XS_WATCH:
            w = conn.watches[-1]  # do_watch fires once up front, after its answer
            self._event(conn, w, w.node)
        return True

    def _flush(self, conn: Connection) -> bool:
        """Write what fits of the pending responses; True if any was written."""
        if not conn.outbuf:
            return False
        cons, prod = self._idx(conn, abi.XENSTORE_rsp_cons), self._idx(
            conn, abi.XENSTORE_rsp_prod)
        used = (prod - cons) & _IDX_MASK
        if used > abi.XENSTORE_RING_SIZE:
            conn.broken = f"response indexes cons {cons:#x} prod {prod:#x} are too far apart"
            return False
        room = abi.XENSTORE_RING_SIZE - used
        wrote = False
        base = conn.mfn << abi.PAGE_SHIFT
        while room and conn.outbuf:
            start = prod & _RING_MASK
            n = min(room, abi.XENSTORE_RING_SIZE - start, len(conn.outbuf))
            self.hv.memory.write(base + abi.XENSTORE_rsp + start, bytes(conn.outbuf[:n]))
            del conn.outbuf[:n]
            prod = (prod + n) & _IDX_MASK
            room -= n
            wrote = True
        if wrote:
            self._set_idx(conn, abi.XENSTORE_rsp_prod, prod)
        return wrote

    def _request(self, conn: Connection, mtype: int, payload: bytes) -> tuple[int, bytes]:
        """process_message: (response type, response payload) for one request."""
        try:
            if mtype in (abi.XS_WATCH, abi.XS_UNWATCH):
                args = strings(payload)
                if len(args) != 2:
                    raise XsError(abi.EINVAL)
                path = _text(args[0])
                if mtype == abi.XS_WATCH:
                    self.add_watch(conn, path, args[1])
                else:
                    self.remove_watch(conn, path, args[1])
                return mtype, b"OK\0"
            return mtype, self._answer(conn.domid, mtype, payload)
        except XsError as e:
            return abi.XS_ERROR, _ERRNO_NAMES.get(e.errno, "EINVAL").encode() + b"\0"

    def _answer(self, domid: int, mtype: int, payload: bytes) -> bytes:
        ok = b"OK\0"
        if mtype == abi.XS_WRITE:
            raw_path, sep, value = payload.partition(b"\0")
            if not sep:
                raise XsError(abi.EINVAL)
            self.write(domid, _text(raw_path), value)
            return ok
        if mtype == abi.XS_TRANSACTION_START:
            return b"0\0"
        if mtype == abi.XS_TRANSACTION_END:
            return ok
        if mtype not in (abi.XS_READ, abi.XS_DIRECTORY, abi.XS_MKDIR, abi.XS_RM):
            raise XsError(abi.EINVAL)
        # onearg: exactly one NUL-terminated string.
        if not payload.endswith(b"\0") or b"\0" in payload[:-1]:
            raise XsError(abi.EINVAL)
        path = _text(payload[:-1])
        if mtype == abi.XS_READ:
            found = self.read(domid, path)
            if found is None:
                raise XsError(abi.ENOENT)
            return found
        if mtype == abi.XS_DIRECTORY:
            return b"".join(name.encode() + b"\0" for name in self.directory(domid, path))
        if mtype == abi.XS_MKDIR:
            self.mkdir(domid, path)
        else:
            self.rm(domid, path)
        return ok


def _text(raw: bytes) -> str:
    """A path from the ring: bytes outside ASCII make it malformed (EINVAL)."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise XsError(abi.EINVAL) from None

"""A worked example of a conformance adapter that lives outside the xenspec package.

``RemoteImplementation`` offers both levels of ``xenspec.conformance.adapter`` by forwarding
every call to another process (``server.py`` next to this file) as one JSON line, the way an
adapter for a real hypervisor forwards calls to that hypervisor's test harness. Run the suite
against it from the repository root:

    pytest conformance/ --implementation=examples.rpc_adapter.adapter:RemoteImplementation

The adapter needs nothing from xenspec but the two result types, and even those are plain data
(the interface is structural: any object with these methods and fields will do).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from xenspec.conformance.adapter import DomainInfo, FrameInfo, GuestRun

SERVER = Path(__file__).with_name("server.py")


class RemoteError(RuntimeError):
    pass


class RemoteImplementation:
    """One fresh implementation: one server process."""

    name = "reference model behind a pipe (examples/rpc_adapter)"
    # What it offers (xenspec.conformance.adapter.OFFERINGS): the server does not say which
    # frames the hypervisor writes into, so INV-XENPAGE is reported as not offered.
    offers = frozenset({"guest", "hypercall", "events"})
    counts_like_xen = True

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1)

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def call(self, op: str, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": list(args)}) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RemoteError(f"{op}: the implementation's process exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RemoteError(reply["error"])
        return reply["ok"]

    # --- guest level ----------------------------------------------------------------------
    def boot_guest(self, elf: Path, cmdline: str, timeout_s: float) -> GuestRun:
        return GuestRun(**self.call("boot_guest", str(elf), cmdline, timeout_s))

    # --- hypercall level ----------------------------------------------------------------------
    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool) -> DomainInfo:
        info = self.call("create_domain", nr_pages, nr_mapped, privileged)
        return DomainInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})

    def hypercall(self, domid: int, name: str, *args: int) -> int:
        return int(self.call("hypercall", domid, name, *args))

    def is_running(self, domid: int) -> bool:
        return bool(self.call("is_running", domid))

    def write_pfn(self, domid: int, pfn: int, offset: int, data: bytes) -> None:
        self.call("write_pfn", domid, pfn, offset, data.hex())

    def read_pfn(self, domid: int, pfn: int, offset: int, length: int) -> bytes:
        return bytes.fromhex(self.call("read_pfn", domid, pfn, offset, length))

    def nr_frames(self) -> int:
        return int(self.call("nr_frames"))

    def frame(self, mfn: int) -> FrameInfo:
        return FrameInfo(**self.call("frame", mfn))

    def frames(self) -> list[FrameInfo]:  # optional (FrameTable): one round trip a check
        return [FrameInfo(**f) for f in self.call("frames")]

    def entries(self, mfn: int) -> list[int]:
        return list(self.call("entries", mfn))

    def machphys(self, mfn: int) -> int:
        return int(self.call("machphys", mfn))

    def xen_l2_slots(self, domid: int, l2_mfn: int) -> list[int]:
        return list(self.call("xen_l2_slots", domid, l2_mfn))

    def vcpu_bases(self) -> list[tuple[int, int]]:
        return [(d, b) for d, b in self.call("vcpu_bases")]

    def descriptor_frames(self, domid: int) -> list[int]:
        return list(self.call("descriptor_frames", domid))

"""The implementation side of the example: a process that answers the adapter's requests.

It reads one JSON request per line on standard input and writes one JSON reply per line on
standard output. Here the requests are served by xenspec's reference model; to test your own
hypervisor, serve them from its test harness instead (a debug hypercall channel, a management
API, a simulator's scripting interface): the messages stay the same.

Request:  {"op": "<method of the adapter interface>", "args": [...]}
Reply:    {"ok": <result>} or {"error": "<one line>"}
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from xenspec.conformance.reference import ReferenceImplementation


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def serve(impl: ReferenceImplementation) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        op, args = request["op"], request["args"]
        try:
            if op == "boot_guest":
                args[0] = Path(args[0])
            if op == "write_pfn":
                args[3] = bytes.fromhex(args[3])
            reply = {"ok": encode(getattr(impl, op)(*args))}
        except Exception as exc:  # report it to the adapter; keep serving
            reply = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve(ReferenceImplementation())

"""The emergency console: ``console_io`` (hypercall 18).

Rule from Xen 3.0.4 xen/drivers/char/console.c (do_console_io, guest_console_write):
CONSOLEIO_write copies the guest's ``count`` bytes (a signed int: none for a count of 0 or
less) in chunks of 127 bytes, each going out as it is read, and returns 0; a chunk the guest
cannot read ends the call with -EFAULT (the chunks before it are out). Before each chunk the
preemption check may end the invocation with a continuation of the write for what is left
(CONSOLEIO_write, the count left, the buffer advanced): a long write is as preemptible as a
batch, its unit the chunk (refmodel/hypervisor.py, HYPERCALL_BUDGET: 32 KB per invocation).
CONSOLEIO_read returns the number of bytes taken from the receive ring; the model's ring is
always empty, so it returns 0 and, as do_console_io copies nothing then, never looks at the
buffer (an unmapped one is not -EFAULT). Any other command is -ENOSYS.

Who may use it depends on how Xen was built (do_console_io: ``#ifndef VERBOSE``, "Only domain
0 may access the emergency console"): a release build answers -EPERM, before looking at the
command, to every domain but the one whose id is 0 (the id, not the privilege); a build with
``verbose=y`` (which ``debug=y`` implies, xen/Rules.mk) lets every domain use it. The model is
the verbose build unless ``Console.verbose`` is False (``xenspec run --xen-build release``):
the guest kernels of the conformance suite, privileged or not, print their results through
console_io, and Mini-OS writes each printk line to both console_io and its console ring
(extras/mini-os/console/console.c, USE_XEN_CONSOLE), so on either build its output is seen.

What a domain wrote is printed as it comes (``PVPlatform.console_out``) and the model keeps
only its last CONSOLE_LOG_SIZE bytes per domain (``ArchDomain.console``; Xen keeps none of a
guest's console output, and its own console ring is CONRING_SIZE bytes), freed when the domain
is destroyed. Departure: Xen prints a chunk up to its first NUL byte (sercon_puts of a
NUL-terminated buffer); the model keeps the bytes as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.arch import CONSOLE_LOG_SIZE
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

__all__ = ["CONSOLE_CHUNK", "CONSOLE_LOG_SIZE", "Console", "ConsoleLines"]

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

# guest_console_write: kbuf[128], a NUL after at most 127 bytes.
CONSOLE_CHUNK = 127
_NR_CONSOLE_IO: int = abi.__HYPERVISOR_console_io


class Console:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv
        self.verbose = True  # Xen built with verbose=y: every domain may use the console

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["console_io"]: self.do_console_io}

    def do_console_io(self, v: Vcpu, cmd: int, count: int, buffer: int) -> int:
        if not self.verbose and v.domain.domain_id != 0:
            return -abi.EPERM  # a release build: domain 0's emergency console only
        if cmd == abi.CONSOLEIO_write:
            return self.guest_console_write(v, count, buffer)
        if cmd == abi.CONSOLEIO_read:
            return 0  # the receive ring is empty: nothing is copied to ``buffer``
        return -abi.ENOSYS

    def guest_console_write(self, v: Vcpu, count: int, buffer: int) -> int:
        """console.c, guest_console_write: chunk by chunk, preemptible before each."""
        left = count - (1 << 32) if count & 0x80000000 else count  # an int
        chunks = 0
        try:
            while left > 0:
                if self.hv.hypercall_preempt_check(chunks):
                    return self.hv.hypercall_create_continuation(
                        v, _NR_CONSOLE_IO, abi.CONSOLEIO_write, left, buffer)
                n = min(left, CONSOLE_CHUNK)
                data = self.hv.copy_from_guest(v, buffer, n)
                if data is None:
                    return -abi.EFAULT
                self.pv.write_console(v.domain, data)
                buffer, left, chunks = buffer + n, left - n, chunks + 1
            return 0
        finally:
            self.hv.charge_work(chunks)


class ConsoleLines:
    """A machine's two consoles as one text, whole lines (``xenspec run`` prints it; the
    conformance suite's reference implementation reports it): what a domain writes with
    console_io (``xen``), each line prefixed "(dN) " as Xen prefixes a guest's lines on its
    serial console, and its console ring (``ring``, what the tools' console shows), as it is,
    or prefixed "[dN] " when the machine runs ``several`` guests. A line is written once it is
    complete (``flush`` writes what is left); carriage returns are dropped (Mini-OS ends its ring
    lines with "\\n\\r"). The guest kernels write each line to both consoles, so the
    prefix tells the two copies apart."""

    def __init__(self, write: Callable[[str], None], several: bool = False) -> None:
        self.write = write
        self.several = several
        self.partial: dict[tuple[str, int], str] = {}

    def xen(self, domid: int, data: bytes) -> None:
        self._add(("xen", domid), data)

    def ring(self, domid: int, data: bytes) -> None:
        self._add(("ring", domid), data)

    def _prefix(self, source: str, domid: int) -> str:
        if source == "xen":
            return f"(d{domid}) "
        return f"[d{domid}] " if self.several else ""

    def _add(self, key: tuple[str, int], data: bytes) -> None:
        text = data.decode("latin-1").replace("\r", "")
        *lines, rest = (self.partial.pop(key, "") + text).split("\n")
        prefix = self._prefix(*key)
        for line in lines:
            self.write(f"{prefix}{line}\n")
        if rest:
            self.partial[key] = rest

    def flush(self) -> None:
        for (source, domid), rest in sorted(self.partial.items()):
            self.write(f"{self._prefix(source, domid)}{rest}\n")
        self.partial.clear()

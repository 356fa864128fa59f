"""The emergency console: ``console_io`` (hypercall 18).

Rule from Xen 3.0.4 xen/drivers/char/console.c (do_console_io, guest_console_write):
CONSOLEIO_write copies ``count`` bytes from the guest and returns 0; a buffer the guest cannot
read is -EFAULT; CONSOLEIO_read returns the number of bytes taken from the receive ring (the
model's ring is always empty); any other command is -ENOSYS. Release builds refuse the console
to unprivileged domains (-EPERM); the model is the verbose (debug) build every test setup
uses, so every domain may write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.platform import PVPlatform

# Xen copies the buffer in chunks of 128 bytes; the model bounds one call at 1 MB of output.
CONSOLE_WRITE_MAX = 1 << 20


class Console:
    def __init__(self, pv: PVPlatform) -> None:
        self.pv = pv
        self.hv = pv.hv

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {HYPERCALL_NUMBERS["console_io"]: self.do_console_io}

    def do_console_io(self, v: Vcpu, cmd: int, count: int, buffer: int) -> int:
        if cmd == abi.CONSOLEIO_write:
            if count > CONSOLE_WRITE_MAX:
                return -abi.EFAULT
            data = self.hv.copy_from_guest(v, buffer, count) if count else b""
            if data is None:
                return -abi.EFAULT
            self.pv.write_console(v.domain, data)
            return 0
        if cmd == abi.CONSOLEIO_read:
            if count and not self.hv.array_access_ok(buffer, count, 1):
                return -abi.EFAULT
            return 0
        return -abi.ENOSYS

"""The substrate's in-place register access (refmodel/cpu.py, ``_ENV_HYPERCALL``) against
Unicorn's own API: at every hypercall of booted guests, the registers read in place from the
live env are the ones ``uc_reg_read_batch`` returns, and the result written in place into EAX
is the one ``uc_reg_read`` then sees. The layout of env is Unicorn 2.1.4's, found by
experiment; a different build would fail here rather than hand a hypercall wrong arguments.
"""

from __future__ import annotations

from typing import Any

import pytest

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel import cpu
from xenspec.refmodel.boot import boot

x86: Any = cpu.x86


@pytest.mark.parametrize(("guest", "cmdline"), [
    ("demo", ""),
    ("bench", "syscall-hypercall-iret 20"),
    ("multicall", ""),
    ("events", ""),
])
def test_in_place_registers_are_unicorns(monkeypatch: pytest.MonkeyPatch, guest: str,
                                         cmdline: str) -> None:
    read, write = cpu._Engine.read_hypercall_args, cpu._Engine.write_eax
    seen: list[tuple[int, ...]] = []

    def read_checked(self: cpu._Engine) -> tuple[int, ...]:
        assert self._live_regs is not None, "the substrate did not find the engine's env"
        args = read(self)
        assert args == self.read_hypercall_args_api()
        seen.append(args)
        return args

    def write_checked(self: cpu._Engine, value: int) -> None:
        write(self, value)
        assert self.read(x86.UC_X86_REG_EAX) == value & 0xFFFFFFFF

    monkeypatch.setattr(cpu._Engine, "read_hypercall_args", read_checked)
    monkeypatch.setattr(cpu._Engine, "write_eax", write_checked)
    boot(str(build_guest(guest)), cmdline=cmdline)
    hypercalls = [a for a in seen if a[0] & 3 == 1]
    assert len(hypercalls) >= 10, f"{guest} made {len(hypercalls)} hypercalls"
    assert len({a[1] for a in hypercalls}) >= 2, "one hypercall number only"

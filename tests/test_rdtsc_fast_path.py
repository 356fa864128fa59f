"""The substrate's RDTSC fast path (refmodel/cpu.py, ``UnicornCPU._rdtsc_in_place``) held
against the general path of ``_hook_intr`` it stands for.

Under the deterministic clock a guest's RDTSC faults (CR4.TSD) and the hypervisor completes it
with the clock's TSC. The fast path reads the fault and writes EDX:EAX and EIP in place; the
general path does the same through a context save and ``user_regs``. A guest run with the fast
path and one with it switched off must be indistinguishable: the same console, the same
hypercalls in the same order, the same instructions, traps and system time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel import cpu
from xenspec.refmodel.boot import Machine

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")


@dataclass
class Run:
    console: str
    calls: list[str]
    instructions: int
    traps: int
    now_ns: int
    in_place: int


def run(name: str, cmdline: str, pae: bool = False, start_ns: int = 0) -> Run:
    """``name`` booted on a machine whose clock reads ``start_ns`` first."""
    from xenspec.spec.abi_profiles import PROFILES

    profile = PROFILES["compat-pae" if pae else "native-3.0.4"]
    m = Machine(64, trace=True, profile=profile)
    m.pv.clock.idle_until(start_ns)
    d = m.add_guest(str(build_guest(name, pae=pae)), 16, cmdline)
    m.run(timeout_s=120)
    result = m.result(d)
    c = m.cpus[d.domain_id]
    return Run(result.console, [str(r) for r in result.trace], c.instructions, c.traps,
               m.pv.clock.now_ns(), c.rdtsc_in_place)


def general_path_only(monkeypatch: Any) -> None:
    monkeypatch.setattr(cpu.UnicornCPU, "_rdtsc_in_place", lambda self: False)


# The bench loop prints the sum of every TSC it read, both halves; from 3 s of system time on
# (2 ticks per ns) the upper half is not zero.
CASES = [
    ("bench", "rdtsc 300", False, 3 * 10**9),  # a loop of RDTSCs in ring 1
    ("time", "", False, 0),                   # vcpu_time_info and RDTSC read together
    ("bench", "rdtsc 300", True, 3 * 10**9),  # compat-pae: the PAE walk reads the instruction
]


@pytest.mark.parametrize("name,cmdline,pae,start_ns", CASES)
def test_fast_path_is_the_general_path(name: str, cmdline: str, pae: bool, start_ns: int,
                                       monkeypatch: Any) -> None:
    fast = run(name, cmdline, pae, start_ns)
    assert fast.in_place > 0, "the fast path was never taken"
    assert "Test result: SUCCESS" in fast.console
    general_path_only(monkeypatch)
    general = run(name, cmdline, pae, start_ns)
    assert general.in_place == 0
    assert fast.console == general.console
    assert fast.calls == general.calls
    assert (fast.instructions, fast.traps, fast.now_ns) == (
        general.instructions, general.traps, general.now_ns)


def test_every_rdtsc_of_the_loop_goes_in_place() -> None:
    r = run("bench", "rdtsc 500")
    assert r.in_place >= 500
    assert r.traps >= 500


# Seeds whose random ring-1 code reaches an RDTSC (found by trying seeds 1-59).
@pytest.mark.parametrize("cmdline", ["random 8 1 300", "random 19 1 300"])
def test_hostile_code_runs_the_same(cmdline: str, monkeypatch: Any) -> None:
    """Random ring-1 code (RDTSC among the privileged instructions it tries, random flags in
    the frames its handler returns through): the two paths agree fault for fault."""
    fast = run("hostile_code", cmdline)
    assert fast.in_place > 0, "the fast path was never taken"
    general_path_only(monkeypatch)
    general = run("hostile_code", cmdline)
    assert fast.console == general.console
    assert fast.calls == general.calls
    assert (fast.instructions, fast.traps, fast.now_ns) == (
        general.instructions, general.traps, general.now_ns)

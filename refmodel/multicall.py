"""multicall: a batch of hypercalls issued with one trap (xen/common/multicall.c, Xen 3.0.4).

``multicall(call_list, nr_calls)`` reads ``nr_calls`` entries of ``multicall_entry_t`` (xen.h,
x86_32: ``op, result, args[6]``, 32-bit words) and, for each in order, calls hypercall ``op``
with ``args[0..4]`` (x86_32 passes five: asm-x86/multicall.h, do_multicall_call), and writes
its return value into the entry's ``result``. The rules, all from do_multicall unless said:

* a multicall issued from inside a multicall is refused with -EINVAL (the per-CPU
  ``mc_state`` flag _MCSF_in_multicall, set by test_and_set_bit); that -EINVAL is the inner
  entry's result and the outer batch goes on;
* the whole list must lie below the hypervisor (guest_handle_okay: -EFAULT before any call);
  an entry that cannot be read, or a result that cannot be written back, ends the batch with
  -EFAULT, the entries before it done;
* an ``op`` at or above NR_hypercalls, or with no handler, gets -ENOSYS in ``result``
  (do_multicall_call's fixup; the table's ni_hypercall);
* the preemption check comes before each entry; when it fires the multicall is continued
  (hypercall_create_continuation(__HYPERVISOR_multicall, call_list advanced to the entry, the
  entries left));
* a call that itself is preempted inside the batch does not touch the guest's registers: its
  continuation arguments go into the entry's ``args`` (x86 domain.c,
  hypercall_create_continuation under _MCSF_in_multicall sets _MCSF_call_preempted), the
  whole entry is written back (its ``result`` is the hypercall number, what the continuation
  returns) and the multicall is continued from that entry, so the guest's next ``int $0x82``
  resumes the call where it stopped.

Where the model departs from Xen 3.0.4:

* XSA-213 (Xen 4.9, commit 22c096c99d "multicall: deal with early exit conditions",
  xen/arch/x86/pv/hypercall.c arch_do_multicall_call): an ``iret`` in a batch ends the batch;
  its result (the guest's EAX from the frame) is written to the entry as best effort and
  becomes the multicall's return value. Xen 3.0.4 went on with the next entries after the
  iret (in the context the iret had restored) and returned 0 over the restored EAX;
* the preemption check is the model's deterministic budget (``Hypervisor.
  hypercall_preempt_check``) over the entries done plus the work the calls charged, and, as
  in later Xen (``if ( i && hypercall_preempt_check() )``), never fires before the first
  entry, so every invocation makes progress;
* a debug Xen overwrites each entry with 0xAA before writing ``result`` (``#ifndef NDEBUG``);
  a release build, which the model is, does not;
* when a call crashes the caller's domain the batch stops there (Xen's domain_crash raises a
  softirq, which the next preemption check sees).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenspec.refmodel.domain import Vcpu
from xenspec.spec import abi

if TYPE_CHECKING:
    from xenspec.refmodel.hypervisor import Hypervisor

_NR_MULTICALL: int = abi.__HYPERVISOR_multicall
_NR_IRET: int = abi.__HYPERVISOR_iret
_ENTRY = abi.MULTICALL_ENTRY_T
_RESULT_OFFSET = 4  # offsetof(multicall_entry_t, result)


class Multicall:
    """do_multicall over a hypervisor's hypercall table."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        # mc_state's _MCSF_in_multicall (per CPU in Xen; one CPU runs one vCPU at a time):
        # the (domain, vCPU) ids of the vCPUs inside a multicall.
        self.in_multicall: set[tuple[int, int]] = set()

    def hypercalls(self) -> dict[int, Callable[..., int]]:
        return {_NR_MULTICALL: self.do_multicall}

    def do_multicall(self, v: Vcpu, call_list: int, nr_calls: int) -> int:
        """Hypercall 13: run ``nr_calls`` entries at ``call_list``; 0 once all are done."""
        key = (v.domain.domain_id, v.vcpu_id)
        if key in self.in_multicall:
            return -abi.EINVAL
        if not self.hv.array_access_ok(call_list, nr_calls, _ENTRY.size):
            return -abi.EFAULT
        self.in_multicall.add(key)
        outer_charge = self.hv.charge_work
        work = 0

        def charge(units: int) -> None:
            nonlocal work
            work += units
            outer_charge(units)

        self.hv.charge_work = charge
        try:
            return self._run(v, call_list, nr_calls, lambda: work)
        finally:
            self.hv.charge_work = outer_charge
            self.in_multicall.discard(key)

    def _run(self, v: Vcpu, call_list: int, nr_calls: int, work: Callable[[], int]) -> int:
        hv = self.hv
        for i in range(nr_calls):
            entry = call_list + i * _ENTRY.size
            if i and hv.hypercall_preempt_check(i + work()):
                return hv.hypercall_create_continuation(v, _NR_MULTICALL, entry, nr_calls - i)
            raw = hv.copy_from_guest(v, entry, _ENTRY.size)
            if raw is None:
                return -abi.EFAULT
            op, _, *args = _ENTRY.unpack(raw)
            result = self.call(v, op, args[: abi.MULTICALL_NR_ARGS])
            written = hv.copy_to_guest(v, entry + _RESULT_OFFSET, _word(result))
            if op == _NR_IRET:  # XSA-213: the batch ends at an iret, with its result
                return result
            if not written:
                return -abi.EFAULT
            c = v.continuation
            if c is not None:  # the call was preempted: record it in its entry, continue there
                v.continuation = None
                args[: len(c.args)] = c.args
                hv.copy_to_guest(v, entry, _ENTRY.pack(op, result & 0xFFFFFFFF, *args))
                return hv.hypercall_create_continuation(v, _NR_MULTICALL, entry, nr_calls - i)
            if not v.domain.is_running:
                return 0
        return 0

    def call(self, v: Vcpu, op: int, args: list[int]) -> int:
        """One entry: the handler of ``op`` with as many of ``args`` as it takes
        (hypercall_args_table); -ENOSYS for an op with none."""
        handler = self.hv.hypercall_table.get(op) if op < abi.NR_hypercalls else None
        if handler is None:
            return -abi.ENOSYS
        nargs = handler.__code__.co_argcount - 2
        return int(handler(v, *args[:nargs]))


def _word(value: int) -> bytes:
    return (value & 0xFFFFFFFF).to_bytes(4, "little")

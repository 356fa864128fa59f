"""How often the conformance suite exercised each clause of the specification.

The hypercall-level driver counts every hypercall (every request of a batch, by command) under
its clause id; each invariant check counts once per invariant; guest runs add the hypercall
counts an implementation reports. An invariant the implementation's adapter gives no data for
is recorded as not evaluated, with the reason. The pytest plugin reads and resets these.
"""

from __future__ import annotations

from collections import Counter

from xenspec.spec import abi
from xenspec.spec.clauses import BY_ID

HITS: Counter[str] = Counter()  # clause id -> times exercised
CALLS: Counter[str] = Counter()  # hypercall name -> times issued (either level)
NOT_EVALUATED: dict[str, str] = {}  # invariant id -> why the suite could not evaluate it
# The clause of the hypercall (or batch request) the running test issued last: a failed check
# that names no clause of its own is charged to it. The plugin clears it before each test.
LAST: str = ""

_MMU_UPDATE = {abi.MMU_NORMAL_PT_UPDATE: "NORMAL_PT_UPDATE",
               abi.MMU_MACHPHYS_UPDATE: "MACHPHYS_UPDATE"}
_MMUEXT = {abi.MMUEXT_PIN_L1_TABLE: "PIN_L1_TABLE", abi.MMUEXT_PIN_L2_TABLE: "PIN_L2_TABLE",
           abi.MMUEXT_UNPIN_TABLE: "UNPIN_TABLE", abi.MMUEXT_NEW_BASEPTR: "NEW_BASEPTR",
           abi.MMUEXT_SET_LDT: "SET_LDT"}


_EVTCHNOP = {getattr(abi, f"EVTCHNOP_{c.id.split('/')[1]}"): c.id for c in BY_ID.values()
             if c.id.startswith("event_channel_op/")}


_GNTTABOP = {getattr(abi, f"GNTTABOP_{c.id.split('/')[1]}"): c.id for c in BY_ID.values()
             if c.id.startswith("grant_table_op/")}
_XENMEM = {abi.XENMEM_increase_reservation: "memory_op/increase_reservation",
           abi.XENMEM_populate_physmap: "memory_op/increase_reservation",
           abi.XENMEM_decrease_reservation: "memory_op/decrease_reservation"}


# A batch hypercall issued whole (its requests unread by the suite): the clause its entry
# checks (copying the array, *done) belong to.
_BATCH = {"mmu_update": "mmu_update/NORMAL_PT_UPDATE", "mmuext_op": "mmuext_op/TLB_FLUSH"}


def call_clause(name: str, args: tuple[int, ...]) -> str:
    """The clause a hypercall belongs to, where its name and arguments say ('' otherwise)."""
    if name == "event_channel_op" and args:
        return _EVTCHNOP.get(args[0], "")
    if name == "grant_table_op" and args:
        return _GNTTABOP.get(args[0], "")
    if name == "memory_op" and args:
        return _XENMEM.get(args[0] & ((1 << abi.XENMEM_START_EXTENT_SHIFT) - 1), "memory_op")
    return name if name in BY_ID else _BATCH.get(name, "")


def mmu_update_clause(ptr: int) -> str:
    return "mmu_update/" + _MMU_UPDATE.get(ptr & 3, "NORMAL_PT_UPDATE")


def mmuext_clause(cmd: int) -> str:
    return "mmuext_op/" + _MMUEXT.get(cmd, "TLB_FLUSH")


def hit(clause_id: str, times: int = 1) -> None:
    HITS[clause_id] += times


def issuing(clause_id: str) -> None:
    """The test is issuing a hypercall of ``clause_id`` (``LAST``)."""
    global LAST
    if clause_id in BY_ID:
        LAST = clause_id


def called(name: str, times: int = 1) -> None:
    """A hypercall issued; credited to its clause when the name alone determines it."""
    CALLS[name] += times
    if BY_ID.get(name) is not None:
        HITS[name] += times


def not_evaluated(clause_id: str, why: str) -> None:
    NOT_EVALUATED[clause_id] = why


def reset() -> None:
    global LAST
    LAST = ""
    HITS.clear()
    CALLS.clear()
    NOT_EVALUATED.clear()

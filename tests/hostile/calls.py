"""Hypothesis strategies for the calls of tests/hostile/world.py: random and edge-case
hypercalls of unprivileged guests, with well-formed argument records so that the deep paths
are reached.

Every hypercall number 0..63 is tried with arguments drawn from edge classes (0, 1, -1,
0x7FFFFFFF, 0x80000000, the hole, the guest's own frames, another guest's, the victim's, Xen's,
frames beyond RAM, DOMID_SELF/IO/XEN and other ids, huge counts, MMU_UPDATE_PREEMPTED). The
structured strategies write the records each hypercall reads (xen/include/public/xen.h,
event_channel.h, grant_table.h, memory.h, sched.h, physdev.h) into the guest's argument area,
their fields drawn from the same classes. ``alias_attack`` builds, with legal hypercalls
only, an L1 table whose 1024 entries all map one frame and points many page-directory slots
at it, so that gigabytes of guest address space read the same records: a batch with a huge
count then finds a valid request at every step (Xen preempts such a batch).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS as NR
from xenspec.spec import abi

from .world import ARG_PAGES, ATTACKER_MAPPED, ATTACKER_PAGES, ATTACKERS, HOLE, M32, Call

SS = st.SearchStrategy
PAGE = abi.PAGE_SIZE
PRESENT, RW, USER = abi._PAGE_PRESENT, abi._PAGE_RW, abi._PAGE_USER
A_D = abi._PAGE_ACCESSED | abi._PAGE_DIRTY
ARGS = ("va", 0, 0)  # the start of the argument area
BUF2 = 8 * PAGE  # a second buffer in the argument area (frame lists, extents, ports)
DONE = ("va", ARG_PAGES - 1, PAGE - 4)  # the last word of the area: *done

EDGE_INTS = (0, 1, 2, 3, 4, 7, 8, 0xFF, 0x100, 0x1FF, 0x200, 0x201, 0x3FF, 0x400, 0xFFF, 0x1000,
             0x2000, 0xFFFF, 0x10000, abi.DOMID_SELF, abi.DOMID_IO, abi.DOMID_XEN, 0x7FFF,
             0x8000, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, M32, (1 << 28) - 1,
             1 << 28, 0x0FFFFFFF)
SELECTORS = (0, 1, 3, abi.FLAT_RING1_CS, abi.FLAT_RING1_DS, abi.FLAT_RING3_CS,
             abi.FLAT_RING3_DS, abi.FLAT_RING1_CS & ~3, abi.FLAT_RING1_DS & ~3, 0xE008, 0xE010,
             0xE011, 0x0B, 0x0F, 0x13, 0x17, 0x19, 0x1B, 0xFFFF, 0xFFFC, 0x0004, 0x0007)
PTE_FLAGS = (PRESENT, PRESENT | RW, PRESENT | RW | USER | A_D, PRESENT | USER, 0, RW,
             PRESENT | RW | abi._PAGE_GLOBAL, PRESENT | abi._PAGE_PSE, PRESENT | abi._PAGE_AVAIL,
             PRESENT | abi._PAGE_PCD | abi._PAGE_PWT, 0xFFF, PRESENT | RW | abi._PAGE_PSE)
DOMIDS = (abi.DOMID_SELF, abi.DOMID_IO, abi.DOMID_XEN, 0x7FF3, 0x7FFF, 0xFFFF, 0, 1, 2, 3, 4, 5)

def mostly(common: SS[Any], rare: SS[Any], odds: int = 4) -> SS[Any]:
    """``common`` about ``odds`` times in ``odds + 1``, else ``rare``."""
    return st.integers(0, odds).flatmap(lambda k: rare if k == 0 else common)


callers = st.sampled_from(ATTACKERS)
small = st.integers(0, 12)
who = st.sampled_from(["self", "self", "peer", "victim"])
domain_frames = st.tuples(st.just("frame"), who,
                          st.sampled_from(["pfn", "pfn", "table", "si", "gnt", "perdomain",
                                           "stub"]),
                          st.integers(0, ATTACKER_PAGES + 8))
xen_frames = st.tuples(st.just("frame"), st.just("xen"),
                       st.sampled_from(["zero", "m2p", "m2p_l1", "rgdt", "free", "beyond", "top"]),
                       st.integers(0, 8))
frames: SS[Any] = st.one_of(domain_frames, domain_frames, xen_frames)
own_frames = st.tuples(st.just("frame"), st.just("self"), st.sampled_from(["pfn", "table"]),
                       st.integers(0, ATTACKER_PAGES))
vas = st.tuples(st.just("va"), st.integers(0, ATTACKER_MAPPED + 8),
                st.sampled_from([0, 4, 8, 0x10, 0x800, PAGE - 8, PAGE - 4, PAGE - 1, 1]))
holes = st.tuples(st.just("hole"), st.integers(0, len(HOLE) - 1))
ptes = st.tuples(st.just("pte"), frames, st.sampled_from(PTE_FLAGS))
entry_offsets = st.one_of(st.integers(0, 1023).map(lambda i: 4 * i),
                          st.sampled_from([4 * 768, 4 * 1008, 4 * 1023, 1, 2, 3, 0xFFF]))
mas = st.tuples(st.just("ma"), frames, entry_offsets)
domids: SS[Any] = st.one_of(
    st.tuples(st.just("domid"), st.sampled_from(["self", "peer", "victim", "dead", "s1", "s2",
                                                  "s3"])),
    st.sampled_from(DOMIDS))
foreign = mostly(st.just(abi.DOMID_SELF), domids)
arg_ptrs = mostly(st.just(ARGS), st.one_of(vas, holes, st.sampled_from([0, 1, M32, 0x1000])))
done_ptrs = mostly(st.just(DONE), st.one_of(vas, holes, st.sampled_from([0, 1, M32])), 2)
values: SS[Any] = st.one_of(st.sampled_from(EDGE_INTS), vas, holes, frames, ptes, mas, domids,
                            st.integers(0, M32))
pointers: SS[Any] = arg_ptrs
counts: SS[Any] = st.one_of(st.integers(0, 4), st.sampled_from(
    [0x7FFFFFFF, 0x80000000, 0x80000001, 0x80000002, 0x0FFFFFFF, M32, 513, 4096, 8192]))


def hc(caller: int, name: str | int, args: tuple[Any, ...],
       mem: tuple[Any, ...] = ()) -> Call:
    nr = NR[name] if isinstance(name, str) else name
    return ("hc", caller, nr, tuple(args) + (0,) * (5 - len(args)), mem)


def records(fmt: str, fields: SS[tuple[Any, ...]], offset: int = 0,
            max_size: int = 6) -> SS[tuple[Any, ...]]:
    """Argument records of one struct format, back to back from ``offset``."""
    size = struct.calcsize(fmt)
    return st.lists(fields, min_size=1, max_size=max_size).map(
        lambda fs: tuple((offset + i * size, fmt, f) for i, f in enumerate(fs)))


def batch_count(n: int, c: Any) -> Any:
    """The count a batch call passes: mostly its length, else an edge value."""
    return n if c == "len" else c


# --- raw: any number, any registers, some words in the argument area ------------------------
raw_calls = st.builds(
    lambda c, nr, args, words: hc(c, nr, tuple(args),
                                  ((0, f"<{len(words)}I", tuple(words)),) if words else ()),
    callers, st.one_of(st.integers(0, 63), st.sampled_from([64, 127, 0x80000000, M32])),
    st.tuples(values, values, values, values, values), st.lists(values, max_size=12))

# --- the MMU ------------------------------------------------------------------------------------
mmu_ptrs = st.one_of(
    st.tuples(st.just("ma"), frames, st.builds(lambda o, c: o & ~3 | c, entry_offsets,
                                               st.sampled_from([0, 0, 0, 1, 2, 3]))),
    st.tuples(st.just("q"), mas, st.sampled_from([1, 0x1000, M32])))
mmu_vals = st.one_of(ptes, ptes, st.integers(0, 200), st.sampled_from(EDGE_INTS),
                     st.tuples(st.just("q"), ptes, st.sampled_from([1, M32])))


@st.composite
def mmu_update(draw: st.DrawFn) -> Call:
    recs = draw(records("<QQ", st.tuples(mmu_ptrs, mmu_vals), max_size=8))
    count = draw(mostly(st.just(len(recs)), counts, 2))
    return hc(draw(callers), "mmu_update", (ARGS, count, draw(done_ptrs), draw(foreign)), recs)


mmuext_cmds = mostly(st.integers(0, 15), st.sampled_from([16, 20, 0xFF, M32]))
mmuext_arg1 = st.one_of(frames, own_frames, vas, holes, st.sampled_from(EDGE_INTS))
mmuext_arg2 = st.one_of(st.sampled_from([0, 1, 2, 8191, 8192, 8193, M32]), vas, holes)


@st.composite
def mmuext_op(draw: st.DrawFn) -> Call:
    recs = draw(records("<III", st.tuples(mmuext_cmds, mmuext_arg1, mmuext_arg2),
                        max_size=6))
    count = draw(mostly(st.just(len(recs)), counts, 2))
    return hc(draw(callers), "mmuext_op", (ARGS, count, draw(done_ptrs), draw(foreign)), recs)


uvmf = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]),
                 st.tuples(st.just("va"), st.integers(0, 20), st.just(0)).map(
                     lambda p: ("q", p, 0)),
                 st.sampled_from([0xC0000001, 0xFFFFFFFE, M32]))
update_va_mapping = st.builds(
    lambda c, va, pte, hi, flags, mask: hc(c, "update_va_mapping", (va, pte, hi, flags),
                                           ((BUF2, "<I", (mask,)),)),
    callers, st.one_of(vas, holes, st.sampled_from([0, 0x1000, 0xBFFFF000])), mmu_vals,
    st.sampled_from([0, 0, 1, M32]), uvmf, st.sampled_from([0, 1, 3, M32]))

# --- descriptors, traps, callbacks ----------------------------------------------------------
desc_words = st.one_of(
    st.sampled_from([0, 0x0000FFFF, 0x00CF9A00, 0x00CFBA00, 0x00CFFA00, 0x00CF9200, 0x00CFB200,
                     0x00CF8C00, 0x00CFEC00, 0x00008500, 0x0040E500, 0xFFFFFFFF, 0x00CF1A00,
                     0xFC00FFFF, 0xFC409A00]),
    st.integers(0, M32))


@st.composite
def set_gdt(draw: st.DrawFn) -> Call:
    fl = draw(st.lists(st.one_of(own_frames, frames), max_size=16))
    entries = draw(st.sampled_from([0, 1, 8, 511, 512, 513, 1024, 7167, 7168, 7169, 8192, M32]))
    return hc(draw(callers), "set_gdt", (draw(arg_ptrs), entries),
              ((0, f"<{len(fl)}I", tuple(fl)),) if fl else ())


update_descriptor = st.builds(
    lambda c, ma, hi, lo, dhi: hc(c, "update_descriptor", (ma, hi, lo, dhi)),
    callers, st.one_of(mas, st.tuples(st.just("ma"), own_frames, st.integers(0, 511).map(
        lambda i: 8 * i))), st.sampled_from([0, 0, 1, M32]), desc_words, desc_words)
trap_info = st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 4, 7, 0xFF]),
                      st.sampled_from(SELECTORS), st.one_of(vas, holes, st.sampled_from(
                          [0, 1, 0xC0000000, M32])))


@st.composite
def set_trap_table(draw: st.DrawFn) -> Call:
    recs = draw(records("<BBHI", trap_info, max_size=6))
    end = draw(st.booleans())
    mem = recs + (((len(recs) * 8, "<BBHI", (0, 0, 0, 0)),) if end else ())
    return hc(draw(callers), "set_trap_table", (draw(arg_ptrs),), mem)


selector_values = st.one_of(st.sampled_from(SELECTORS), st.integers(0, M32))
set_callbacks = st.builds(lambda c, a, b, x, y: hc(c, "set_callbacks", (a, b, x, y)),
                          callers, selector_values, values, selector_values, values)
stack_switch = st.builds(lambda c, a, b: hc(c, "stack_switch", (a, b)),
                         callers, selector_values, values)
iret = st.builds(
    lambda c, esp, frame: hc(c, "iret", (esp,), ((PAGE, "<6I", frame),)),
    callers, st.one_of(st.just(("va", 1, 0)), vas, holes),
    st.tuples(values, values, st.sampled_from(SELECTORS), st.sampled_from(
        [0, 0x202, 0x3202, 0x20202, 0x1202, M32]), values, st.sampled_from(SELECTORS)))

# --- events ------------------------------------------------------------------------------------
ports = st.one_of(st.integers(0, 10), st.sampled_from([31, 32, 1023, 1024, 0x7FFFFFFF, M32]))
virqs = st.one_of(st.integers(0, 24), st.sampled_from([31, 32, M32]))
vcpus = st.sampled_from([0, 0, 1, 31, 32, M32])
EVTCHN = {  # cmd -> (struct format, fields)
    abi.EVTCHNOP_alloc_unbound: ("<HHI", st.tuples(domids, domids, ports)),
    abi.EVTCHNOP_bind_interdomain: ("<H2xII", st.tuples(domids, ports, ports)),
    abi.EVTCHNOP_bind_virq: ("<III", st.tuples(virqs, vcpus, ports)),
    abi.EVTCHNOP_bind_pirq: ("<III", st.tuples(st.integers(0, 300), st.integers(0, 3), ports)),
    abi.EVTCHNOP_bind_ipi: ("<II", st.tuples(vcpus, ports)),
    abi.EVTCHNOP_close: ("<I", st.tuples(ports)),
    abi.EVTCHNOP_send: ("<I", st.tuples(ports)),
    abi.EVTCHNOP_status: ("<H2xIIIII", st.tuples(domids, ports, small, small, small, small)),
    abi.EVTCHNOP_bind_vcpu: ("<II", st.tuples(ports, vcpus)),
    abi.EVTCHNOP_unmask: ("<I", st.tuples(ports)),
}


@st.composite
def event_channel_op(draw: st.DrawFn) -> Call:
    cmd = draw(mostly(st.sampled_from(sorted(EVTCHN)), st.sampled_from([10, 11, 12, M32]), 8))
    fmt, fields = EVTCHN.get(cmd, ("<6I", st.tuples(*[values] * 6)))
    body = draw(fields)
    if draw(st.integers(0, 4)) == 0:  # the compat call: struct evtchn_op {cmd; union}
        return hc(draw(callers), "event_channel_op_compat", (draw(arg_ptrs),),
                  ((0, "<I", (cmd,)), (4, fmt, body)))
    return hc(draw(callers), "event_channel_op", (cmd, draw(arg_ptrs)), ((0, fmt, body),))


# --- grant tables ----------------------------------------------------------------------------
gnt_refs = st.one_of(st.integers(0, 8), st.sampled_from([511, 512, 1023, 1024, 0xFFFF, M32]))
gnt_map_flags = st.one_of(
    st.sampled_from([abi.GNTMAP_host_map, abi.GNTMAP_host_map | abi.GNTMAP_readonly,
                     abi.GNTMAP_host_map | abi.GNTMAP_contains_pte,
                     abi.GNTMAP_host_map | abi.GNTMAP_application_map,
                     abi.GNTMAP_device_map, abi.GNTMAP_device_map | abi.GNTMAP_host_map, 0,
                     abi.GNTMAP_host_map | abi.GNTMAP_contains_pte | abi.GNTMAP_readonly]),
    st.integers(0, 0xFF))
host_addrs = st.one_of(vas, holes, mas, st.tuples(st.just("va"), st.integers(
    ATTACKER_MAPPED, ATTACKER_MAPPED + 4), st.just(0)))
handles = st.one_of(st.integers(0, 6), st.sampled_from([0xFFFF, M32]))
GNT = {  # cmd -> (struct format, fields)
    abi.GNTTABOP_map_grant_ref: ("<QIIHhIQ", st.tuples(
        host_addrs, gnt_map_flags, gnt_refs, domids, st.just(0), st.just(0), st.just(0))),
    abi.GNTTABOP_unmap_grant_ref: ("<QQIh2x", st.tuples(
        host_addrs, st.sampled_from([0, 0, 0x1000]), handles, st.just(0))),
    abi.GNTTABOP_setup_table: ("<H2xIh2xI", st.tuples(
        domids, st.sampled_from([0, 1, 2, 4, 5, M32]), st.just(0),
        st.one_of(st.just(("va", 8, 0)), pointers))),
    abi.GNTTABOP_dump_table: ("<Hh", st.tuples(domids, st.just(0))),
    abi.GNTTABOP_copy: ("<IHHIHHHHh2x", st.tuples(
        st.one_of(gnt_refs, frames), domids, st.sampled_from([0, 8, 4095, 4096, 0xFFFF]),
        st.one_of(gnt_refs, frames), domids, st.sampled_from([0, 8, 4095, 4096, 0xFFFF]),
        st.sampled_from([0, 1, 8, 4096, 4097, 0xFFFF]), st.integers(0, 3), st.just(0))),
    abi.GNTTABOP_query_size: ("<H2xIIh2x", st.tuples(domids, st.just(0), st.just(0),
                                                     st.just(0))),
}


@st.composite
def grant_table_op(draw: st.DrawFn) -> Call:
    cmd = draw(mostly(st.sampled_from(sorted(GNT)), st.sampled_from([4, 7, 8, M32]), 8))
    fmt, fields = GNT.get(cmd, ("<4I", st.tuples(*[values] * 4)))
    recs = draw(records(fmt, fields, max_size=4))
    count = draw(mostly(st.just(len(recs)), st.sampled_from([0, 1, 512, 513, M32]), 3))
    return hc(draw(callers), "grant_table_op", (cmd, draw(arg_ptrs), count), recs)


grant_entries = st.builds(
    lambda c, ref, flags, dom, frame: ("grant", c, ref, flags, dom, frame),
    callers, st.integers(0, 8),
    st.sampled_from([abi.GTF_permit_access, abi.GTF_permit_access | abi.GTF_readonly,
                     abi.GTF_accept_transfer, 0, abi.GTF_permit_access | abi.GTF_reading,
                     abi.GTF_permit_access | abi.GTF_writing, 0xFFFF]),
    st.one_of(st.tuples(st.just("domid"), st.sampled_from(["peer", "peer2", "victim", "self"])),
              domids),
    st.one_of(own_frames, frames))

# --- memory_op ------------------------------------------------------------------------------
# extent_order is the guest's to choose (memory.h sets no limit; Xen 3.0.4's loops shift an
# int by it). The model's decrease_reservation computes ``1 << extent_order`` as a Python
# integer: an order of 2^32 - 1 makes a 512 MB integer (a 2.7 GB peak and 9 s per call),
# which would make every replay of a failing run that slow while Hypothesis shrinks it. So
# the strategies stop at EXTENT_ORDER_CAP, whose 16 MB integer the memory bound already
# catches; tests/test_hostile.py tries 2^28 once on its own.
EXTENT_ORDER_CAP = 1 << 27
extent_orders = st.sampled_from([0, 0, 0, 1, 2, 9, 10, 20, 31, 32, 63, 0xFFFF, EXTENT_ORDER_CAP])


@st.composite
def memory_op(draw: st.DrawFn) -> Call:
    op = draw(mostly(st.sampled_from([0, 1, 1, 6, 3, 4, 2]), st.sampled_from([5, 7, 8, 15])))
    start = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 0x0FFFFFFF]))
    extents = draw(st.lists(st.one_of(own_frames, frames, st.integers(0, 80)), max_size=8))
    nr = draw(mostly(st.just(len(extents)), counts, 3))
    ext_ptr = draw(mostly(st.just(("va", 8, 0)), st.one_of(st.just(0), pointers), 3))
    reservation = (ext_ptr, nr, draw(extent_orders),
                   draw(st.sampled_from([0, 0, 1, 20, 31, 32, M32])),
                   draw(foreign))
    mem: tuple[Any, ...] = ((0, "<IIIIH2x", reservation),)
    if op in (abi.XENMEM_current_reservation, abi.XENMEM_maximum_reservation):
        mem = ((0, "<H", (draw(domids),)),)
    if extents:
        mem += ((BUF2, f"<{len(extents)}I", tuple(extents)),)
    return hc(draw(callers), "memory_op",
              ((op | start << abi.XENMEM_START_EXTENT_SHIFT) & M32, draw(arg_ptrs)), mem)


# --- sched_op, timers, console, version, physdev, debug registers ------------------------------
@st.composite
def sched_op(draw: st.DrawFn) -> Call:
    cmd = draw(st.one_of(st.integers(0, 5), st.sampled_from([M32])))
    compat = draw(st.integers(0, 3)) == 0
    if compat:
        return hc(draw(callers), "sched_op_compat", (cmd, draw(values)))
    if cmd == abi.SCHEDOP_poll:
        nports = draw(st.sampled_from([0, 1, 2, 128, 129, M32]))
        mem: tuple[Any, ...] = ((0, "<IIQ", (draw(mostly(st.just(("va", 8, 0)), pointers)),
                                            nports, draw(st.sampled_from([0, 1, 1 << 40])))),
                                (BUF2, "<4I", tuple(draw(st.lists(ports, min_size=4,
                                                                  max_size=4)))))
    elif cmd == abi.SCHEDOP_remote_shutdown:
        mem = ((0, "<HHI", (draw(domids), 0, draw(st.integers(0, 5)))),)
    else:  # shutdown reasons; an attacker shutting itself down stops its later calls
        mem = ((0, "<I", (draw(st.sampled_from([0, 1, 2, 3, 4, 0xFF, M32])),)),)
    return hc(draw(callers), "sched_op", (cmd, draw(arg_ptrs)), mem)


set_timer_op = st.builds(lambda c, lo, hi: hc(c, "set_timer_op", (lo, hi)), callers,
                         st.sampled_from([0, 1, 1000, M32]), st.sampled_from([0, 1, M32]))
console_io = st.builds(
    lambda c, cmd, count, buf: hc(c, "console_io", (cmd, count, buf),
                                  ((0, "<8I", (0x6C6C6568,) * 8),)),
    callers, st.sampled_from([0, 0, 1, 2, M32]),
    st.sampled_from([0, 1, 32, 4096, 65536, 1 << 20, (1 << 20) + 1, 0x7FFFFFFF, M32]),
    arg_ptrs)
xen_version = st.builds(lambda c, cmd, arg: hc(c, "xen_version", (cmd, arg)), callers,
                        st.one_of(st.integers(0, 9), st.sampled_from([M32])), pointers)
vm_assist = st.builds(lambda c, cmd, t: hc(c, "vm_assist", (cmd, t)), callers,
                      st.sampled_from([0, 1, 2, M32]), st.sampled_from([0, 1, 2, 3, 4, 32, M32]))
physdev_cmds = st.one_of(st.integers(0, 13), st.sampled_from([M32]))


@st.composite
def physdev_op(draw: st.DrawFn) -> Call:
    cmd = draw(physdev_cmds)
    body = tuple(draw(st.lists(st.one_of(st.sampled_from([0, 1, 3, 4, 0x3F8, 0xFFFF, M32]),
                                         vas), min_size=3, max_size=3)))
    if draw(st.booleans()):
        return hc(draw(callers), "physdev_op_compat", (draw(arg_ptrs),),
                  ((0, "<4I", (cmd, *body)),))
    return hc(draw(callers), "physdev_op", (cmd, draw(arg_ptrs)), ((0, "<3I", body),))


debugreg = st.builds(lambda c, nr, reg, val: hc(c, nr, (reg, val)), callers,
                     st.sampled_from([NR["set_debugreg"], NR["get_debugreg"]]),
                     st.sampled_from([0, 1, 3, 4, 5, 6, 7, 8, M32]),
                     st.one_of(vas, holes, st.sampled_from([0, 0x400, 0xFFFF0FF0, 0x00000701,
                                                            M32])))
fpu_taskswitch = st.builds(lambda c, s: hc(c, "fpu_taskswitch", (s,)), callers,
                           st.sampled_from([0, 1, M32]))

# --- the tools ------------------------------------------------------------------------------------
# Destroying an attacker, or re-creating one whose slot is empty or shut down (three times
# as often, so that attackers are seldom missing for long).
destroy = st.builds(lambda s: ("destroy", s), st.integers(0, len(ATTACKERS) - 1))
create = st.builds(lambda s, r: ("create", s, r), st.integers(0, len(ATTACKERS) - 1),
                   st.booleans())
tools = mostly(create, destroy, 3)


# --- the alias attack --------------------------------------------------------------------------
def alias_calls(c: int, table_pfn: int, data_pfn: int, nslots: int, first: int, kind: str,
                count: int | None = None) -> list[Call]:
    """Legal calls of attacker ``c`` that make ``nslots`` x 4 MB of its address space (from
    slot ``first``) read one frame (its pfn ``data_pfn``) full of valid requests, through an
    L1 table (its unmapped pfn ``table_pfn``) whose 1024 entries all map that frame; then one
    batch over it with a huge count: ``mmu_update`` whose every request writes a word of a
    data page, or sets an M2P entry (``machphys``), or ``set_trap_table``, whose table ends
    only at an entry with address 0. ``count`` defaults to all the requests the region holds
    (a count reaching into the hole is -EFAULT before any work: guest_handle_okay)."""
    table = ("frame", "self", "pfn", table_pfn)
    window = ARG_PAGES + 1  # a mapped data page, lent for writing the new table
    own = ("frame", "self", "pfn", ARG_PAGES)  # a data page every request writes
    if kind == "mmu_update":
        rec: Any = (data_pfn * PAGE, "<QQ", (("ma", own, 0), 1), PAGE // 16, (0, 0))
    elif kind == "machphys":
        rec = (data_pfn * PAGE, "<QQ", (("ma", own, abi.MMU_MACHPHYS_UPDATE), 5), PAGE // 16,
               (0, 0))
    else:
        rec = (data_pfn * PAGE, "<BBHI", (0x20, 0, abi.FLAT_RING1_CS, 0xC0001000), PAGE // 8,
               (1, 0, 0, 0))
    region = ("q", first << abi.L2_PAGETABLE_SHIFT, 0)
    if kind == "set_trap_table":
        attack = hc(c, "set_trap_table", (region,), (rec,))
    else:
        n = nslots << (abi.L2_PAGETABLE_SHIFT - 4) if count is None else count
        attack = hc(c, "mmu_update", (region, n, 0, abi.DOMID_SELF), (rec,))
    return [
        # Lend the window page's mapping to the new table, fill it, take the mapping back.
        hc(c, "update_va_mapping", (("va", window, 0), ("pte", table, PRESENT | RW | A_D), 0,
                                    abi.UVMF_INVLPG)),
        hc(c, "update_va_mapping", (("va", window, 0), ("pte", ("frame", "self", "pfn", window),
                                                         PRESENT | RW | A_D), 0, abi.UVMF_INVLPG),
           ((window * PAGE, "<I", (("pte", ("frame", "self", "pfn", data_pfn), PRESENT),),
             1024, (0,)),)),
        hc(c, "mmuext_op", (ARGS, 1, 0, abi.DOMID_SELF),
           ((0, "<III", (abi.MMUEXT_PIN_L1_TABLE, table, 0)),)),
        hc(c, "mmu_update", (ARGS, nslots, 0, abi.DOMID_SELF),
           ((0, "<QQ", (("ma", ("frame", "self", "table", 0), 4 * first),
                        ("pte", table, PRESENT | RW | A_D)), nslots, (4, 0)),)),
        attack,
    ]


@st.composite
def alias_attack(draw: st.DrawFn) -> list[Call]:
    return alias_calls(draw(callers), draw(st.integers(ATTACKER_MAPPED, ATTACKER_PAGES - 1)),
                       draw(st.integers(1, ARG_PAGES - 1)), draw(st.sampled_from([1, 8, 64, 700])),
                       draw(st.sampled_from([1, 2, 64])),
                       draw(st.sampled_from(["mmu_update", "set_trap_table", "machphys"])),
                       draw(st.sampled_from([None, None, 0x0FFFFFFF, 0x8000])))


@st.composite
def build_tables(draw: st.DrawFn) -> list[Call]:
    """A guest's own page tables, the way a kernel builds them: entries written into a free
    frame, the frame pinned as an L1, a new page directory linking it (and itself: a linear
    page table) and the bootstrap L1, pinned and loaded; then some of it undone, or the domain
    destroyed with all of it in place."""
    c = draw(callers)
    spare = list(range(ATTACKER_MAPPED, ATTACKER_PAGES))
    a, b = draw(st.permutations(spare))[:2]
    l1, l2 = ("frame", "self", "pfn", a), ("frame", "self", "pfn", b)
    boot_l1 = ("frame", "self", "table", 1)
    ents = draw(st.lists(st.tuples(st.integers(0, 1023), st.one_of(own_frames, frames),
                                   st.sampled_from(PTE_FLAGS)), min_size=1, max_size=4))
    slot = draw(st.integers(0, 767))
    linear = draw(st.sampled_from([None, PRESENT, PRESENT | RW]))
    l2_recs = [(("ma", l2, 4 * slot), ("pte", l1, PRESENT | RW | A_D)),
               (("ma", l2, 4 * 768), ("pte", boot_l1, PRESENT | RW | A_D))]
    if linear is not None:
        l2_recs.append((("ma", l2, 4 * draw(st.integers(0, 767))), ("pte", l2, linear)))
    calls = [
        hc(c, "mmu_update", (ARGS, len(ents), 0, abi.DOMID_SELF),
           tuple((16 * i, "<QQ", (("ma", l1, 4 * e), ("pte", f, fl)))
                 for i, (e, f, fl) in enumerate(ents))),
        hc(c, "mmuext_op", (ARGS, 1, 0, abi.DOMID_SELF),
           ((0, "<III", (abi.MMUEXT_PIN_L1_TABLE, l1, 0)),)),
        hc(c, "mmu_update", (ARGS, len(l2_recs), 0, abi.DOMID_SELF),
           tuple((16 * i, "<QQ", r) for i, r in enumerate(l2_recs))),
        hc(c, "mmuext_op", (ARGS, 2, 0, abi.DOMID_SELF),
           ((0, "<III", (abi.MMUEXT_PIN_L2_TABLE, l2, 0)),
            (12, "<III", (abi.MMUEXT_NEW_BASEPTR, l2, 0)))),
    ]
    ending = draw(st.sampled_from(["keep", "unpin", "back", "destroy"]))
    if ending == "unpin":
        calls.append(hc(c, "mmuext_op", (ARGS, 2, 0, abi.DOMID_SELF),
                        ((0, "<III", (abi.MMUEXT_UNPIN_TABLE, l1, 0)),
                         (12, "<III", (abi.MMUEXT_UNPIN_TABLE, l2, 0)))))
    elif ending == "back":
        calls.append(hc(c, "mmuext_op", (ARGS, 1, 0, abi.DOMID_SELF),
                        ((0, "<III", (abi.MMUEXT_NEW_BASEPTR, ("frame", "self", "table", 0),
                                      0)),)))
    elif ending == "destroy":
        calls += [("destroy", c - 1), ("create", c - 1, draw(st.booleans()))]
    return calls


@st.composite
def grant_chain(draw: st.DrawFn) -> list[Call]:
    """One attacker grants a frame to another, which maps it (by address or by PTE), copies
    through it or unmaps; then one of the two may be destroyed while the mapping exists."""
    g, m = draw(st.permutations(ATTACKERS))[:2]
    gs, ms = f"s{g}", f"s{m}"
    ref = draw(st.integers(0, 4))
    ro = draw(st.booleans())
    frame = ("frame", "self", "pfn", draw(st.sampled_from([1, 2, ARG_PAGES + 2, ATTACKER_MAPPED,
                                                           ATTACKER_MAPPED - 1])))
    by_pte = draw(st.booleans())
    pfn = ARG_PAGES + draw(st.integers(0, 1))
    host = ("ma", ("frame", "self", "table", 1), 4 * pfn) if by_pte else ("va", pfn, 0)
    flags = abi.GNTMAP_host_map | (abi.GNTMAP_contains_pte if by_pte else 0) | \
        (abi.GNTMAP_readonly if draw(st.booleans()) else 0)
    calls: list[Call] = [
        ("grant", g, ref, abi.GTF_permit_access | (abi.GTF_readonly if ro else 0),
         ("domid", ms), frame),
        hc(m, "grant_table_op", (abi.GNTTABOP_map_grant_ref, ARGS, 1),
           ((0, "<QIIHhIQ", (host, flags, ref, ("domid", gs), 0, 0, 0)),)),
    ]
    for step in draw(st.lists(st.sampled_from(["copy", "unmap", "destroy_g", "destroy_m",
                                               "revoke", "again"]), max_size=3)):
        if step == "copy":
            calls.append(hc(m, "grant_table_op", (abi.GNTTABOP_copy, ARGS, 1),
                            ((0, "<IHHIHHHHh2x", (ref, ("domid", gs), 0, ("frame", "self",
                                                                        "pfn", 3),
                                                  abi.DOMID_SELF, 0, 64, 2, 0)),)))
        elif step == "unmap":
            calls.append(hc(m, "grant_table_op", (abi.GNTTABOP_unmap_grant_ref, ARGS, 1),
                            ((0, "<QQIh2x", (host, 0, draw(st.integers(0, 2)), 0)),)))
        elif step == "revoke":
            calls.append(("grant", g, ref, 0, 0, 0))
        elif step == "again":
            calls.append(calls[1])
        else:
            calls.append(("destroy", (g if step == "destroy_g" else m) - 1))
    return calls


def xen_page_calls(c: int, kind: str, level: int, slot: int, sends: list[int],
                   peer: int) -> list[Call]:
    """A page the hypervisor writes on the guest's behalf (``kind``: shared_info ``si`` or a
    grant-table frame ``gnt``) offered as a page table: attacker ``c`` maps it writable and
    clears it (it may: the page is shared with it), pins it at ``level`` and links it into
    page-directory slot ``slot``; then the hypervisor writes it: events (a port bound and
    sent to for each of ``sends``) set the upcall and pending bits in shared_info, and
    ``peer``'s map of a grant sets the entry's flags. Xen keeps such pages out of the type
    system (design decision D8)."""
    page = ("frame", "self", kind, 0)
    window = ARG_PAGES + 1
    calls = [
        hc(c, "update_va_mapping", (("va", window, 0), ("pte", page, PRESENT | RW | A_D), 0,
                                    abi.UVMF_INVLPG)),
        hc(c, "update_va_mapping", (("va", window, 0), ("pte", ("frame", "self", "pfn", window),
                                                         PRESENT | RW | A_D), 0, abi.UVMF_INVLPG),
           ((window * PAGE, "<I", (0,), 1024, (0,)),)),
        hc(c, "mmuext_op", (ARGS, 1, 0, abi.DOMID_SELF), ((0, "<III", (level, page, 0)),)),
        hc(c, "mmu_update", (ARGS, 1, 0, abi.DOMID_SELF),
           ((0, "<QQ", (("ma", ("frame", "self", "table", 0), 4 * slot),
                        ("pte", page, PRESENT | RW | A_D))),)),
    ]
    for port in sends:
        calls += [
            hc(c, "event_channel_op", (abi.EVTCHNOP_bind_ipi, ARGS), ((0, "<II", (0, 0)),)),
            hc(c, "event_channel_op", (abi.EVTCHNOP_send, ARGS), ((0, "<I", (port,)),)),
        ]
    calls += [
        ("grant", c, 0, abi.GTF_permit_access, ("domid", f"s{peer}"), ("frame", "self", "pfn", 2)),
        hc(peer, "grant_table_op", (abi.GNTTABOP_map_grant_ref, ARGS, 1),
           ((0, "<QIIHhIQ", (("va", ARG_PAGES, 0), abi.GNTMAP_host_map, 0, ("domid", f"s{c}"),
                             0, 0, 0)),)),
    ]
    return calls


@st.composite
def xen_page_as_table(draw: st.DrawFn) -> list[Call]:
    c = draw(callers)
    return xen_page_calls(
        c, draw(st.sampled_from(["si", "si", "gnt"])),
        draw(st.sampled_from([abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L1_TABLE,
                              abi.MMUEXT_PIN_L2_TABLE])),
        draw(st.integers(0, 767)), draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)),
        draw(st.sampled_from([p for p in ATTACKERS if p != c])))


# --- focused single calls: the rules a guest most wants broken ------------------------------------
# Entries of its own page directory (mostly) and table: guest slots, the hypervisor's slots
# (HYPERVISOR_VIRT_START >> 22 = 1008 on), linear maps; the values mostly its own free frames
# (which validate as tables: they hold zeros).
own_tables = st.tuples(st.just("frame"), st.just("self"), st.just("table"),
                       st.sampled_from([0, 0, 0, 1]))
free_frames = st.tuples(st.just("frame"), st.just("self"), st.just("pfn"),
                        st.integers(ATTACKER_MAPPED, ATTACKER_PAGES - 1))
table_slots = mostly(st.integers(abi.L2_PAGETABLE_FIRST_XEN_SLOT, 1023),
                     st.one_of(st.sampled_from([0, 1, 767, 768, 769]), st.integers(0, 1023)), 1)
table_values = mostly(st.tuples(st.just("pte"), free_frames, st.sampled_from(
                          [PRESENT | RW | A_D, PRESENT, PRESENT | RW | USER | A_D])),
                      st.tuples(st.just("pte"), st.one_of(own_tables, own_frames, frames),
                                st.sampled_from(PTE_FLAGS)), 1)
table_update = st.builds(
    lambda c, recs: hc(c, "mmu_update", (ARGS, len(recs), DONE, abi.DOMID_SELF),
                       tuple((16 * i, "<QQ", r) for i, r in enumerate(recs))),
    callers, st.lists(st.tuples(st.tuples(st.just("ma"), own_tables, table_slots.map(
        lambda i: 4 * i)), table_values), min_size=1, max_size=3))
# MMU_MACHPHYS_UPDATE, mostly of the victim's and the peer's frames.
machphys = st.builds(
    lambda c, f, v: hc(c, "mmu_update", (ARGS, 1, DONE, abi.DOMID_SELF),
                       ((0, "<QQ", (("ma", f, abi.MMU_MACHPHYS_UPDATE), v)),)),
    callers, mostly(st.tuples(st.just("frame"), st.sampled_from(["victim", "peer"]),
                              st.just("pfn"), st.integers(0, 30)), frames, 2),
    st.one_of(st.integers(0, 100), st.sampled_from(EDGE_INTS)))
# Pins, unpins and base pointers, mostly of its own free frames and tables.
own_mmuext = st.builds(
    lambda c, cmd, f: hc(c, "mmuext_op", (ARGS, 1, DONE, abi.DOMID_SELF),
                         ((0, "<III", (cmd, f, 0)),)),
    callers, st.sampled_from([abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE,
                              abi.MMUEXT_UNPIN_TABLE, abi.MMUEXT_NEW_BASEPTR,
                              abi.MMUEXT_NEW_BASEPTR, abi.MMUEXT_NEW_USER_BASEPTR]),
    mostly(st.one_of(free_frames, own_tables), st.one_of(own_frames, frames), 2))


@st.composite
def gdt_descriptors(draw: st.DrawFn) -> list[Call]:
    """A GDT of one of its own free frames, then descriptors written into it."""
    c = draw(callers)
    frame = ("frame", "self", "pfn", draw(st.integers(ATTACKER_MAPPED, ATTACKER_PAGES - 1)))
    calls = [hc(c, "set_gdt", (ARGS, draw(st.sampled_from([16, 512]))), ((0, "<I", (frame,)),))]
    for i, lo, hi in draw(st.lists(st.tuples(st.integers(0, 15), desc_words, desc_words),
                                   min_size=1, max_size=3)):
        calls.append(hc(c, "update_descriptor", (("ma", frame, 8 * i), 0, lo, hi)))
    return calls


single_calls: SS[Call] = st.one_of(
    table_update, machphys, own_mmuext,
    raw_calls, raw_calls, mmu_update(), mmu_update(), mmuext_op(), mmuext_op(),
    update_va_mapping, set_gdt(), update_descriptor, set_trap_table(), set_callbacks,
    stack_switch, iret, event_channel_op(), event_channel_op(), grant_table_op(),
    grant_table_op(), grant_entries, memory_op(), memory_op(), sched_op(), set_timer_op,
    console_io, xen_version, vm_assist, physdev_op(), debugreg, fpu_taskswitch, tools, tools,
    tools)
groups: SS[list[Call]] = st.one_of(alias_attack(), build_tables(), grant_chain(),
                                   xen_page_as_table(), gdt_descriptors())


def runs(min_groups: int, max_groups: int) -> SS[list[Call]]:
    """Runs of ``min_groups`` to ``max_groups`` single calls or attack groups (a group is
    2-12 calls)."""
    return st.lists(mostly(single_calls.map(lambda c: [c]), groups, 3),
                    min_size=min_groups, max_size=max_groups).map(
                        lambda gs: [c for g in gs for c in g])

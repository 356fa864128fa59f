"""The clauses of the specification: the unit that proofs, tests and documentation refer to.

A clause is one rule a reader can hold against Xen: a hypercall (or one command of a
multiplexed hypercall), a behaviour of the virtual CPU (an exception bounce, the system-call
path), the start-of-day contract, or an invariant. Conformance tests name the clauses they
exercise (``@pytest.mark.clauses(...)``), proof obligations are grouped under them, and the
documentation gets a page per clause. Ids are stable strings: ``mmu_update/NORMAL_PT_UPDATE``,
``bounce/page_fault``, ``INV-HOLE``.

Sources: the paper is "Xen and the Art of Virtualization" (SOSP 2003), section numbers as
printed; headers are Xen 3.0's ``xen/include/public/``; ``mm.c`` is ``xen/arch/x86/mm.c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    hypercall = "hypercall"
    behaviour = "behaviour"
    invariant = "invariant"


@dataclass(frozen=True)
class Clause:
    id: str
    kind: Kind
    title: str
    source: str
    spec: str = ""  # the spec function (module:function) that states it, if there is one

    @property
    def hypercall(self) -> str:
        """The hypercall name a hypercall clause belongs to ('' for other kinds)."""
        return self.id.split("/")[0] if self.kind is Kind.hypercall else ""


_H, _B, _I = Kind.hypercall, Kind.behaviour, Kind.invariant
_MM = "xenspec.spec.mm_spec"
_CPU = "xenspec.spec.cpu_spec"
_EV = "xenspec.spec.event_spec"
_GNT = "xenspec.spec.grant_spec"

CLAUSES: tuple[Clause, ...] = (
    # --- memory (paper s2.1.1, s3.3.3) -------------------------------------------------------
    Clause("mmu_update/NORMAL_PT_UPDATE", _H, "Validated update of one page-table entry",
           "SOSP'03 s2.1.1, s3.3.3; xen.h MMU_NORMAL_PT_UPDATE; mm.c do_mmu_update",
           f"{_MM}:spec_mmu_update"),
    Clause("mmu_update/MACHPHYS_UPDATE", _H, "Update of the machine-to-physical table",
           "SOSP'03 s3.3.4; xen.h MMU_MACHPHYS_UPDATE; mm.c do_mmu_update",
           f"{_MM}:spec_machphys_update"),
    Clause("update_va_mapping", _H, "Update of the entry that maps one virtual address",
           "xen.h __HYPERVISOR_update_va_mapping, UVMF_*; mm.c do_update_va_mapping",
           f"{_MM}:spec_update_va_mapping"),
    Clause("mmuext_op/PIN_L1_TABLE", _H, "Pin a page table (validate and hold its type)",
           "SOSP'03 s3.3.3; xen.h MMUEXT_PIN_L1_TABLE; mm.c do_mmuext_op",
           f"{_MM}:spec_pin_table"),
    Clause("mmuext_op/PIN_L2_TABLE", _H, "Pin a page directory",
           "SOSP'03 s3.3.3; xen.h MMUEXT_PIN_L2_TABLE; mm.c do_mmuext_op",
           f"{_MM}:spec_pin_table"),
    Clause("mmuext_op/UNPIN_TABLE", _H, "Unpin a table",
           "xen.h MMUEXT_UNPIN_TABLE; mm.c do_mmuext_op", f"{_MM}:spec_unpin_table"),
    Clause("mmuext_op/NEW_BASEPTR", _H, "Switch the vCPU's page directory",
           "xen.h MMUEXT_NEW_BASEPTR; mm.c new_guest_cr3", f"{_MM}:spec_new_baseptr"),
    Clause("mmuext_op/TLB_FLUSH", _H, "TLB flushes and INVLPG (no state but the TLB)",
           "xen.h MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL, ...; mm.c do_mmuext_op",
           f"{_MM}:spec_mmuext_no_state"),
    Clause("mmuext_op/SET_LDT", _H, "Install a local descriptor table",
           "xen.h MMUEXT_SET_LDT; mm.c do_mmuext_op", f"{_MM}:spec_mmuext_set_ldt"),
    # --- segmentation (paper s2.1.1) ---------------------------------------------------------
    Clause("set_gdt", _H, "Install a global descriptor table from validated frames",
           "SOSP'03 s2.1.1; xen.h __HYPERVISOR_set_gdt; mm.c do_set_gdt",
           f"{_CPU}:spec_set_gdt"),
    Clause("update_descriptor", _H, "Update one validated segment descriptor",
           "SOSP'03 s2.1.1; xen.h __HYPERVISOR_update_descriptor; mm.c do_update_descriptor",
           f"{_CPU}:spec_update_descriptor"),
    # --- CPU (paper s2.1.2) ------------------------------------------------------------------
    Clause("set_trap_table", _H, "Register the guest's exception handlers",
           "SOSP'03 s2.1.2; xen.h trap_info_t; traps.c do_set_trap_table",
           f"{_CPU}:spec_set_trap_table_entry"),
    Clause("set_callbacks", _H, "Register the event and failsafe callbacks",
           "xen.h __HYPERVISOR_set_callbacks; x86_32/traps.c",
           f"{_CPU}:spec_set_callbacks"),
    Clause("callback_op/register", _H, "Register the event or failsafe callback (or NMI)",
           "callback.h CALLBACKOP_register; x86_32/traps.c do_callback_op",
           f"{_CPU}:spec_callback_op_register"),
    Clause("callback_op/unregister", _H, "Unregister a callback (only the NMI one can be)",
           "callback.h CALLBACKOP_unregister; x86_32/traps.c unregister_guest_callback"),
    Clause("multicall", _H, "Issue a batch of hypercalls, each result written back",
           "xen.h multicall_entry_t; common/multicall.c do_multicall"),
    Clause("vcpu_op", _H, "Query and control the domain's vCPUs (one vCPU here)",
           "vcpu.h VCPUOP_*; common/domain.c do_vcpu_op"),
    Clause("stack_switch", _H, "Set the guest kernel stack for ring transitions",
           "SOSP'03 s2.1.2; xen.h __HYPERVISOR_stack_switch; x86_32/mm.c do_stack_switch",
           f"{_CPU}:spec_stack_switch"),
    Clause("iret", _H, "Return from a bounced exception or event",
           "arch-x86_32.h struct iret_context; x86_32/traps.c do_iret", f"{_CPU}:spec_iret"),
    Clause("fpu_taskswitch", _H, "Set or clear the virtual CR0.TS",
           "xen.h __HYPERVISOR_fpu_taskswitch; traps.c do_fpu_taskswitch"),
    Clause("privileged/emulation", _B, "Xen emulates the guest's I/O, CLI/STI, CLTS, WBINVD, "
           "MOV CR/DR and MSR instructions it permits",
           "traps.c do_general_protection, emulate_privileged_op, guest_io_okay, admin_io_okay"),
    Clause("physdev_op", _H, "Set the vCPU's virtual IOPL or I/O bitmap",
           "physdev.h PHYSDEVOP_set_iopl, PHYSDEVOP_set_iobitmap; physdev.c do_physdev_op"),
    Clause("physdev_op_compat", _H, "The pre-3.0.2 physdev call (struct physdev_op)",
           "physdev.h struct physdev_op; compat.c do_physdev_op_compat"),
    Clause("set_debugreg", _H, "Set a debug register", "traps.c set_debugreg"),
    Clause("get_debugreg", _H, "Read a debug register", "traps.c do_get_debugreg"),
    Clause("bounce/exception", _B, "An exception is delivered to the guest's handler",
           "SOSP'03 s2.1.2; x86_32/traps.c create_bounce_frame"),
    Clause("bounce/page_fault", _B, "A page fault is delivered with its faulting address",
           "SOSP'03 s2.1.2 (faulting address in an extended frame); arch-x86_32.h cr2"),
    Clause("syscall/fast_path", _B, "System calls from ring 3 reach the guest kernel directly",
           "SOSP'03 s2.1.2 (fast exception handler); xen.h trap_info_t flags (DPL)"),
    Clause("privileged/instruction", _B, "Privileged instructions fault in the guest",
           "SOSP'03 s2.1.2 (ring 1 guest OS)"),
    Clause("bounce/failsafe", _B, "A segment reload that faults on the way back to the guest "
           "enters the failsafe callback", "x86_32/entry.S restore_all_guest, failsafe_callback, "
           "create_bounce_frame (TBF_FAILSAFE)"),
    Clause("ldt/lazy_mapping", _B, "LDT pages are mapped on first use, or the guest gets a "
           "#PF at ldt_base + offset", "mm.c map_ldt_shadow_page, invalidate_shadow_ldt; traps.c "
           "handle_gdt_ldt_mapping_fault"),
    # --- domain, time, console ---------------------------------------------------------------
    Clause("start_of_day", _B, "The domain builder's start-of-day contract",
           "xen.h struct start_info; arch-x86_32.h (ESI = start_info, bootstrap mappings)",
           "xenspec.spec.builder_spec:initial_state"),
    Clause("console_io", _H, "Write to and read from the hypervisor console",
           "xen.h __HYPERVISOR_console_io, CONSOLEIO_*"),
    Clause("xen_version", _H, "Hypervisor version and features",
           "version.h XENVER_*"),
    Clause("vm_assist", _H, "Enable or disable a VM assist",
           "xen.h VMASST_*"),
    Clause("sched_op", _H, "Yield, block and shut down",
           "sched.h SCHEDOP_*, SHUTDOWN_*"),
    Clause("sched_op_compat", _H, "The pre-3.0.2 scheduler call",
           "xen.h __HYPERVISOR_sched_op_compat"),
    Clause("memory_op", _H, "Give machine frames back and ask for more (the balloon)",
           "SOSP'03 s3.3.4; memory.h XENMEM_*; memory.c do_memory_op, guest_remove_page"),
    # --- invariants (DESIGN's table; the formulas are in xenspec.spec.invariants) -------------
    Clause("memory_op/decrease_reservation", _H, "Give a frame back to the heap",
           "memory.h XENMEM_decrease_reservation; memory.c guest_remove_page; page_alloc.c "
           "free_domheap_pages", "xenspec.spec.memop_spec:spec_decrease_reservation"),
    Clause("memory_op/increase_reservation", _H, "Receive a frame from the heap "
           "(increase_reservation, populate_physmap)",
           "memory.h XENMEM_increase_reservation, XENMEM_populate_physmap; memory.c; "
           "page_alloc.c alloc_domheap_pages", "xenspec.spec.memop_spec:spec_increase_reservation"),
    Clause("INV-HOLE", _I, "No guest-controlled mapping reaches the hypervisor's top 64 MB",
           "SOSP'03 s2.1.1; mm.c alloc_l2_table, is_guest_l2_slot",
           "xenspec.spec.invariants:inv_hole"),
    Clause("INV-NOWRPT", _I, "No page-table, GDT or LDT frame is mapped writable",
           "SOSP'03 s3.3.3; mm.c get_page_from_l1e", "xenspec.spec.invariants:inv_nowrpt"),
    Clause("INV-OWN", _I, "A domain's tables map only frames it owns, or frames granted to it",
           "mm.c get_page, get_page_from_l1e; grant_table.c __gnttab_map_grant_ref",
           "xenspec.spec.invariants:inv_own"),
    Clause("INV-GNT-RO", _I, "A frame granted read-only is never mapped writable by its grantee",
           "grant_table.h GTF_readonly, GNTMAP_readonly; grant_table.c __gnttab_map_grant_ref",
           "xenspec.spec.invariants:inv_gnt_ro"),
    Clause("INV-COUNT", _I, "Reference and type counts equal the references that exist",
           "mm.c get_page/put_page, get_page_type/put_page_type",
           "xenspec.spec.invariants:count_violations"),
    Clause("INV-VALID", _I, "A page-table frame is validated exactly while it has type refs",
           "mm.c get_page_type, put_page_type", "xenspec.spec.invariants:inv_validated"),
    Clause("INV-PIN", _I, "A pinned frame is a validated table",
           "mm.c do_mmuext_op MMUEXT_PIN_*", "xenspec.spec.invariants:inv_pin"),
    Clause("INV-BASE", _I, "Every vCPU's base pointer is a validated page directory it owns",
           "mm.c new_guest_cr3", "xenspec.spec.invariants:inv_base"),
    Clause("INV-L2REF", _I, "Page directories in use reference only tables in use",
           "mm.c get_page_from_l2e", "xenspec.spec.invariants:inv_l2ref"),
    Clause("INV-PRIV", _I, "Xen alone runs in ring 0",
           "SOSP'03 s2.1.1, s2.1.2; mm.c check_descriptor; traps.c do_set_trap_table",
           "xenspec.spec.invariants:inv_priv"),
    Clause("INV-FREE-REF", _I, "Nothing references a frame on the free list",
           "SOSP'03 s3.3.3; page_alloc.c free_domheap_pages; memory.c increase_reservation",
           "xenspec.spec.invariants:inv_free_ref"),
    Clause("INV-ISO", _I, "No domain reads or writes another's frames without a grant",
           "SOSP'03 s2; mm.c get_page (owner check)", "xenspec.spec.invariants:inv_iso"),
    Clause("INV-XENPAGE", _I, "A frame Xen writes into for a guest is never a page-table, GDT "
           "or LDT frame",
           "x86 mm.c share_xen_page_with_guest, get_page_type; domain.c arch_domain_create; "
           "grant_table.c grant_table_create", "xenspec.spec.invariants:inv_xenpage"),
    # --- grant tables (grant_table.h; grant_table.c and mm.c of Xen 3.0.4) ---------------------
    Clause("grant_table_op/map_grant_ref", _H, "Map a frame another domain granted",
           "grant_table.h GNTTABOP_map_grant_ref, GNTMAP_*, GTF_*; grant_table.c "
           "__gnttab_map_grant_ref; mm.c create_grant_host_mapping", f"{_GNT}:spec_map_grant_ref"),
    Clause("grant_table_op/unmap_grant_ref", _H, "Remove a grant mapping by its handle",
           "grant_table.h GNTTABOP_unmap_grant_ref; grant_table.c __gnttab_unmap_grant_ref; "
           "mm.c destroy_grant_host_mapping", f"{_GNT}:spec_unmap_grant_ref"),
    Clause("grant_table_op/setup_table", _H, "Learn the frames of a domain's grant table",
           "grant_table.h GNTTABOP_setup_table; grant_table.c gnttab_setup_table"),
    Clause("grant_table_op/copy", _H, "Copy between granted frames, checked by Xen",
           "grant_table.h GNTTABOP_copy, GNTCOPY_*; grant_table.c __gnttab_copy",
           f"{_GNT}:spec_copy"),
    Clause("grant_table_op/query_size", _H, "The grant table's current and maximum size",
           "grant_table.h GNTTABOP_query_size (Xen 3.1's interface)"),
    # --- events and time (paper s2.2, s2.3, s3.3.2; event_channel.h; xen.h; event_channel.c
    #     and schedule.c of Xen 3.0.4) ------------------------------------------------------
    Clause("event_channel_op/alloc_unbound", _H, "Allocate a port another domain may bind",
           "SOSP'03 s2.2; event_channel.h EVTCHNOP_alloc_unbound; evtchn_alloc_unbound",
           f"{_EV}:spec_alloc_unbound"),
    Clause("event_channel_op/bind_interdomain", _H, "Connect to a port offered by a domain",
           "event_channel.h EVTCHNOP_bind_interdomain; evtchn_bind_interdomain",
           f"{_EV}:spec_bind_interdomain"),
    Clause("event_channel_op/bind_virq", _H, "Bind a virtual IRQ to a new port",
           "event_channel.h EVTCHNOP_bind_virq; xen.h VIRQ_*; evtchn_bind_virq",
           f"{_EV}:spec_bind_virq"),
    Clause("event_channel_op/bind_ipi", _H, "A port for notifications between own vCPUs",
           "event_channel.h EVTCHNOP_bind_ipi; evtchn_bind_ipi", f"{_EV}:spec_bind_ipi"),
    Clause("event_channel_op/bind_pirq", _H, "Bind a physical IRQ (refused: none granted)",
           "event_channel.h EVTCHNOP_bind_pirq; evtchn_bind_pirq", f"{_EV}:spec_bind_pirq"),
    Clause("event_channel_op/close", _H, "Close a port (an interdomain peer becomes unbound)",
           "event_channel.h EVTCHNOP_close; __evtchn_close", f"{_EV}:spec_close"),
    Clause("event_channel_op/send", _H, "Send an event on a port",
           "SOSP'03 s2.2; event_channel.h EVTCHNOP_send; evtchn_send", f"{_EV}:spec_send"),
    Clause("event_channel_op/status", _H, "Read a port's state",
           "event_channel.h EVTCHNOP_status, EVTCHNSTAT_*; evtchn_status",
           f"{_EV}:spec_status"),
    Clause("event_channel_op/bind_vcpu", _H, "Choose the vCPU a port notifies",
           "event_channel.h EVTCHNOP_bind_vcpu; evtchn_bind_vcpu", f"{_EV}:spec_bind_vcpu"),
    Clause("event_channel_op/unmask", _H, "Unmask a port, delivering a pending event",
           "event_channel.h EVTCHNOP_unmask; evtchn_unmask", f"{_EV}:spec_unmask"),
    Clause("event_channel_op_compat", _H, "The pre-3.0.2 event-channel call (struct evtchn_op)",
           "xen.h __HYPERVISOR_event_channel_op_compat; compat.c do_event_channel_op_compat"),
    Clause("event/delivery", _B, "An event sets the pending, selector and upcall bits",
           "SOSP'03 s2.2 (asynchronous events, pending and mask bits); xen.h shared_info, "
           "vcpu_info; event_channel.c evtchn_set_pending", f"{_EV}:spec_virq_delivery"),
    Clause("event/upcall", _B, "A pending, unmasked event enters the guest's event callback",
           "SOSP'03 s2.2; x86_32/entry.S test_all_events, create_bounce_frame"),
    Clause("set_timer_op", _H, "Set or cancel the vCPU's one-shot timer (VIRQ_TIMER)",
           "SOSP'03 s2.3 (timers); xen.h __HYPERVISOR_set_timer_op; schedule.c "
           "do_set_timer_op"),
    Clause("time/periodic_tick", _B, "VIRQ_TIMER every 10 ms to the running vCPU; a blocked "
           "vCPU is woken by its one-shot timer, not by the tick",
           "SOSP'03 s2.3 (timers); schedule.c (3.0.4) t_timer_fn, schedule (the timer event "
           "on a switch-in)"),
    Clause("time/vcpu_time_info", _B, "System time from the TSC, published per vCPU",
           "SOSP'03 s2.3 (real time, virtual time); xen.h vcpu_time_info; time.c "
           "update_vcpu_system_time"),
    Clause("time/wallclock", _B, "Wall-clock time at system time 0 in shared_info",
           "SOSP'03 s2.3 (wall-clock time); xen.h wc_version, wc_sec, wc_nsec; time.c "
           "update_domain_wallclock_time"),
    # --- device I/O (paper s3.2, s3.3.1: I/O rings; io/ring.h, io/blkif.h) --------------------
    Clause("io/ring", _B, "Shared I/O rings: producer and consumer indexes, notification "
           "hold-off (req_event, rsp_event) without lost wake-ups, hostile indexes rejected",
           "SOSP'03 s3.2 (I/O rings); io/ring.h RING_PUSH_*_AND_CHECK_NOTIFY, "
           "RING_FINAL_CHECK_FOR_*, __RING_SIZE"),
    Clause("io/xenstore", _B, "The store: requests and answers over the store ring, keys "
           "under the domain's home, errors by name, the permission rule",
           "io/xs_wire.h xenstore_domain_interface, xsd_sockmsg; xc_linux_build.c setup_guest "
           "(store frame); xenstored_core.c process_message, get_node, perm_for_conn; "
           "xenstored_domain.c readchn, check_indexes"),
    Clause("io/console_ring", _B, "The PV console: output and input over the console ring, "
           "free-running indexes, hostile indexes ignored",
           "io/console.h xencons_interface, MASK_XENCONS_IDX; xc_linux_build.c setup_guest "
           "(console frame); tools/console/daemon/io.c buffer_append, handle_tty_read"),
    Clause("io/blkif", _B, "The virtual block device: the xenbus handshake, reads and writes "
           "over a ring of requests with granted data frames, served from the disk image",
           "SOSP'03 s3.3.1 (disk); io/blkif.h (3.0.4) blkif_request, blkif_response, "
           "BLKIF_OP_*; Linux blkback dispatch_rw_block_io, connect_ring; blkfront "
           "talk_to_backend"),
    Clause("io/blkif/errors", _B, "Bad block requests get error responses and never reach the "
           "image; a malformed ring is no longer served",
           "io/blkif.h BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP; Linux blkback "
           "dispatch_rw_block_io (fail_response), vbd_translate; RING_REQUEST_PROD_OVERFLOW"),
    Clause("INV-EVT-PORT", _I, "Port states are consistent with the ports and VIRQ tables",
           "event_channel.c get_free_port, evtchn_init, evtchn_bind_virq, __evtchn_close",
           f"{_EV}:inv_evt_port"),
    Clause("INV-EVT-BIND", _I, "Events cross domains only through a binding: the two ends of "
           "an interdomain channel name each other",
           "SOSP'03 s2.2; event_channel.c evtchn_bind_interdomain, __evtchn_close",
           f"{_EV}:inv_evt_bind"),
    Clause("INV-EVT-SEND", _I, "A domain sends only on its own bound ports (of every "
           "event-channel transition; proved in xenspec.spec.event_spec)",
           "event_channel.c evtchn_send, evtchn_set_pending", f"{_EV}:inv_evt_send"),
    Clause("INV-EVT-XDOM", _I, "A domain changes another's ports only through a binding to it "
           "(of every event-channel transition; proved in xenspec.spec.event_spec)",
           "event_channel.c evtchn_bind_interdomain, __evtchn_close, evtchn_alloc_unbound",
           f"{_EV}:inv_evt_xdom"),
)

BY_ID: dict[str, Clause] = {c.id: c for c in CLAUSES}


class UnknownClause(KeyError):
    pass


def clause(cid: str) -> Clause:
    """The clause with id ``cid``; UnknownClause names the id if there is none."""
    try:
        return BY_ID[cid]
    except KeyError:
        raise UnknownClause(f"no clause {cid!r} in xenspec.spec.clauses") from None


def of_kind(kind: Kind) -> list[Clause]:
    return [c for c in CLAUSES if c.kind is kind]

/* Event channels from the guest's side (event_channel.c and x86_32/entry.S, Xen 3.0.4):
 * ports, delivery into shared_info, the upcall to the event callback, masking at the port
 * and at the vCPU, a loopback interdomain channel, close, status and the error codes. */
#include "xenrt.h"

const char test_title[] = "event channels: delivery, upcall, masking, loopback, errors";

static u32 count(u32 port) { return event_stats.count[port]; }

static void ipi_delivery(void)
{
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi: %d", (int)p);
    u32 before = event_stats.upcalls;
    check(evtchn_send(p) == 0, "send on the IPI port");
    /* The upcall runs on the return from the send hypercall. */
    check(count(p) == 1, "IPI port %d: %u events", (int)p, count(p));
    check(event_stats.upcalls == before + 1, "one upcall");
    check(event_stats.last_sel == 1u << (p / 32), "selector %x", event_stats.last_sel);
    check((event_stats.last_cs & 3) == 1, "upcall from ring 1: cs %x", event_stats.last_cs);
    check((event_stats.last_cs >> 16 & 0xff) == 0, "saved upcall mask 0 in CS bits 16-23");
    check(event_stats.last_eflags & X86_EFLAGS_IF, "saved EFLAGS.IF set (events were on)");
    check(!evtchn_pending(p), "the handler cleared the pending bit");
    check(vcpu0_info()[VCPU_INFO_evtchn_upcall_mask] == 0, "iret unmasked events again");

    /* Masked port: pending is set, no upcall; EVTCHNOP_unmask delivers it. */
    evtchn_mask(p);
    check(evtchn_send(p) == 0, "send to a masked port");
    check(count(p) == 1 && evtchn_pending(p), "masked: pending, not delivered");
    check(evtchn_unmask(p) == 0, "unmask");
    check(count(p) == 2 && !evtchn_pending(p), "unmask redelivers: %u", count(p));

    /* Upcalls masked at the vCPU: upcall_pending is set; unmasking delivers. */
    events_mask_upcalls(1);
    check(evtchn_send(p) == 0, "send with upcalls masked");
    check(count(p) == 2, "no upcall while evtchn_upcall_mask is set");
    check(vcpu0_info()[VCPU_INFO_evtchn_upcall_pending] == 1, "upcall_pending set");
    events_mask_upcalls(0);
    check(count(p) == 3, "delivered once the vCPU unmasks: %u", count(p));

    /* Two sends before delivery are one event (a pending bit, not a counter). */
    events_mask_upcalls(1);
    evtchn_send(p);
    evtchn_send(p);
    events_mask_upcalls(0);
    check(count(p) == 4, "two sends, one event: %u", count(p));
    check(evtchn_close(p) == 0, "close the IPI port");
    check(evtchn_send(p) == -EINVAL, "send on a closed port");
}

static void loopback(void)
{
    struct evtchn_status st;
    for (u32 i = 0; i < NR_EVENT_CHANNELS; i++)  /* closed ports are reused: count afresh */
        event_stats.count[i] = 0;
    long a = evtchn_alloc_unbound(DOMID_SELF);
    check(a > 0, "alloc_unbound: %d", (int)a);
    check(evtchn_status(DOMID_SELF, a, &st) == 0 && st.status == EVTCHNSTAT_unbound,
          "status unbound: %u", st.status);
    check(evtchn_send(a) == 0 && count(a) == 0, "send on an unbound port is dropped");
    long b = evtchn_bind_interdomain(DOMID_SELF, a);
    check(b > 0 && b != a, "bind_interdomain to ourselves: %d", (int)b);
    check(count(b) == 1, "bind_interdomain raises the new local port: %u", count(b));
    check(evtchn_status(DOMID_SELF, b, &st) == 0 && st.status == EVTCHNSTAT_interdomain
          && st.u.interdomain.port == (u32)a, "b's peer is a");
    check(evtchn_send(a) == 0 && count(b) == 2 && count(a) == 0, "a -> b");
    check(evtchn_send(b) == 0 && count(a) == 1 && count(b) == 2, "b -> a");
    check(evtchn_close(a) == 0, "close a");
    check(evtchn_status(DOMID_SELF, b, &st) == 0 && st.status == EVTCHNSTAT_unbound,
          "closing a leaves b unbound: %u", st.status);
    check(evtchn_send(b) == 0 && count(a) == 1, "b now drops its events");
    check(evtchn_close(b) == 0, "close b");
}

static void errors(void)
{
    struct evtchn_status st;
    check(evtchn_send(0) == -EINVAL, "send on the reserved port 0");
    check(evtchn_close(0) == -EINVAL, "close port 0");
    check(evtchn_status(DOMID_SELF, 0, &st) == 0 && st.status == EVTCHNSTAT_closed,
          "port 0 reads closed");
    check(evtchn_send(NR_EVENT_CHANNELS) == -EINVAL, "port past the last");
    check(evtchn_close(EVTCHNS_PER_BUCKET) == -EINVAL, "port in no bucket");
    check(evtchn_status(1, 1, &st) == -EPERM, "status of another domain, unprivileged");
    check(evtchn_bind_virq(NR_VIRQS, 0) == -EINVAL, "VIRQ out of range");
    check(evtchn_bind_virq(VIRQ_CONSOLE, 1) == -EINVAL, "global VIRQ on vCPU 1");
    check(evtchn_bind_virq(VIRQ_TIMER, 1) == -ENOENT, "no vCPU 1");
    long t = evtchn_bind_virq(VIRQ_DEBUG, 0);
    check(t > 0, "bind VIRQ_DEBUG: %d", (int)t);
    check(evtchn_bind_virq(VIRQ_DEBUG, 0) == -EEXIST, "VIRQ bound twice");
    check(evtchn_status(DOMID_SELF, t, &st) == 0 && st.status == EVTCHNSTAT_virq
          && st.u.virq == VIRQ_DEBUG, "status virq");
    check(evtchn_close(t) == 0, "close the VIRQ port");
    check(evtchn_bind_ipi(1) == -ENOENT, "IPI to a vCPU we do not have");
    check(evtchn_bind_interdomain(DOMID_SELF, 0) == -EINVAL, "bind to port 0");
    struct { u32 pirq, flags, port; } pirq = { 1, 0, 0 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &pirq) == -EPERM, "bind_pirq");
    check(HYPERVISOR_event_channel_op(99, &pirq) == -ENOSYS, "unknown command");
    check(HYPERVISOR_event_channel_op(EVTCHNOP_send, (void *)0x1000) == -EFAULT,
          "unreadable argument");
    /* The compat call: struct evtchn_op { cmd; union }. */
    struct { u32 cmd; u32 vcpu, port; u32 pad[4]; } op = { EVTCHNOP_bind_ipi, 0, 0, { 0 } };
    check(HYPERVISOR_event_channel_op_compat(&op) == 0 && op.port > 0, "compat bind_ipi");
    u32 before = count(op.port);
    struct { u32 cmd, port; u32 pad[5]; } send = { EVTCHNOP_send, op.port, { 0 } };
    check(HYPERVISOR_event_channel_op_compat(&send) == 0 && count(op.port) == before + 1,
          "compat send delivers");
}

/* evtchn_unmask marks the vCPU only for a port it did unmask (event_channel.c: the mask bit
 * test_and_clear_bit'ed, then the pending bit): unmasking a port that was not masked marks
 * nothing, though the port is pending and its neighbour in the same byte of the mask is
 * masked. A port past the first byte has its own pending bit (xen.h: arrays of unsigned
 * longs, bit n of the bitmap). */
static void unmask_rules(void)
{
    volatile u8 *vi = vcpu0_info();
    volatile u32 *sel = (volatile u32 *)(vi + VCPU_INFO_evtchn_pending_sel);
    long ports[16];
    int n = 0;
    long p;
    events_mask_upcalls(1);
    do {
        p = ports[n++] = evtchn_bind_ipi(0);
    } while (p > 0 && n < 16 && (p < 9 || p % 8 == 7));
    check(p >= 9 && p % 8 != 7, "bind_ipi up to a port past the first byte: %d", (int)p);
    evtchn_mask(p + 1);
    check(evtchn_send(p) == 0, "send on port %d", (int)p);
    check(evtchn_pending(p), "port %d is pending after the send", (int)p);
    check(vi[VCPU_INFO_evtchn_upcall_pending] == 1 && (*sel & (1u << (p / 32))),
          "the send marked the vCPU: upcall_pending %u, selector %x",
          vi[VCPU_INFO_evtchn_upcall_pending], *sel);
    vi[VCPU_INFO_evtchn_upcall_pending] = 0;    /* as an upcall handler would, port left */
    *sel = 0;
    check(evtchn_unmask(p) == 0, "unmask of a port that is not masked");
    check(vi[VCPU_INFO_evtchn_upcall_pending] == 0 && *sel == 0,
          "unmasking a port that was not masked marked the vCPU: %u, %x",
          vi[VCPU_INFO_evtchn_upcall_pending], *sel);
    check(evtchn_unmask(p + 1) == 0, "unmask the neighbour");
    evtchn_clear(p);
    for (int i = 0; i < n; i++)
        if (ports[i] > 0)
            evtchn_close(ports[i]);
    events_mask_upcalls(0);
}

void test_main(void)
{
    events_enable();
    ipi_delivery();
    loopback();
    errors();
    unmask_rules();
}

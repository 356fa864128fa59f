/* The shared-ring protocol of io/ring.h from C (runtime/ring.h): a front end and a back end in
 * one guest over one page, joined by a loopback interdomain event channel. The back end runs
 * in the upcall of its port, the front end's response handler in the upcall of the other:
 * notification hold-off (req_event, rsp_event), indexes wrapping at 2^32, a full ring, and
 * hostile producer indexes reported as RING_OVERFLOW. */
#include "xenrt.h"
#include "ring.h"

const char test_title[] = "I/O ring: hold-off, wrap-around, full ring, hostile indexes";

struct entry { u32 id, value; u32 pad[14]; };      /* 64 bytes: 63 fit, so 32 entries */

static struct front_ring front;
static struct back_ring back;
static u32 front_port, back_port;
static u32 back_notified, front_notified, back_overflows;
static u32 answered, next_id, bad_answers;

/* The back end: answer every request (value * 3), notifying as the rule says, then sleep. */
static void back_end(u32 port, struct trap_frame *f)
{
    (void)port; (void)f;
    back_notified++;
    for (;;) {
        u32 n = ring_final_check_for_requests(&back);
        if (n == RING_OVERFLOW) {
            back_overflows++;
            return;
        }
        if (!n)
            return;
        while (n--) {
            struct entry req, *rsp;
            ring_take_request(&back, &req);
            rsp = ring_next_response(&back);
            rsp->id = req.id;
            rsp->value = req.value * 3;
            ring_response_done(&back);
        }
        if (ring_push_responses_and_check_notify(&back))
            evtchn_send(back_port);
    }
}

/* The front end's response handler. */
static void front_end(u32 port, struct trap_frame *f)
{
    (void)port; (void)f;
    front_notified++;
    for (;;) {
        u32 n = ring_final_check_for_responses(&front);
        if (n == RING_OVERFLOW) {
            xtf_failure("front end: response producer overflow");
            return;
        }
        if (!n)
            return;
        while (n--) {
            struct entry rsp;
            ring_take_response(&front, &rsp);
            if (rsp.value != rsp.id * 7 * 3)
                bad_answers++;
            answered++;
        }
    }
}

/* Queue n requests and push them; returns whether the push notified. */
static int submit(u32 n)
{
    for (u32 i = 0; i < n; i++) {
        struct entry *req = ring_next_request(&front);
        req->id = next_id;
        req->value = next_id * 7;
        next_id++;
        ring_request_done(&front);
    }
    int notify = ring_push_requests_and_check_notify(&front);
    if (notify)
        evtchn_send(front_port);
    return notify;
}

static void setup(void *page, u32 start)
{
    shared_ring_init(page, start);
    front_ring_init(&front, page, sizeof(struct entry), start);
    back_ring_init(&back, page, sizeof(struct entry), start);
    answered = next_id = 0;
}

static void geometry(void)
{
    check(ring_nr_ents(sizeof(struct entry)) == 32, "64-byte entries: 32 slots");
    check(ring_nr_ents(BLKIF_REQUEST_SIZE) == BLKIF_RING_SIZE, "blkif: %u slots",
          ring_nr_ents(BLKIF_REQUEST_SIZE));
    check(ring_nr_ents(1) == 2048, "1-byte entries: %u", ring_nr_ents(1));
    check(ring_need_notify(0xffffffffu, 1, 0), "event 0 in (2^32-1, 1]");
    check(!ring_need_notify(5, 5, 5), "nothing pushed: no notify");
    check(!ring_need_notify(0xfffffffeu, 0, 1), "event past new: no notify");
}

static void holdoff(void *page)
{
    setup(page, 0);
    u32 b0 = back_notified;
    check(submit(1), "first push notifies the sleeping back end");
    check(back_notified == b0 + 1 && answered == 1, "answered in the upcall: %u", answered);
    check(bad_answers == 0, "answer values");

    /* The back end is busy (upcalls masked: it has not run its final check): every further
     * push is held off. */
    events_mask_upcalls(1);
    u32 notifies = 0;
    notifies += submit(2);
    for (int i = 0; i < 6; i++)
        notifies += submit(3);
    check(notifies == 1, "one notification for 7 pushes to a busy back end: %u", notifies);
    check(answered == 1, "nothing answered while masked");
    events_mask_upcalls(0);
    check(back_notified == b0 + 2, "one back-end upcall: %u", back_notified - b0);
    check(answered == 21, "all 21 answered: %u", answered);
    check(front.sring->req_event == back.req_cons + 1, "the back end slept: req_event %u",
          front.sring->req_event);
    check(submit(1), "a push after the back end slept notifies again");
    check(answered == 22 && bad_answers == 0, "answered %u, bad %u", answered, bad_answers);
}

static void wrap(void *page)
{
    setup(page, 0xffffffd0u);
    for (int round = 0; round < 40; round++)
        submit(1 + round % 5);
    check(answered == next_id && next_id == 120, "wrap: answered %u of %u", answered, next_id);
    check(front.req_prod_pvt == 0xffffffd0u + 120, "indexes wrapped: %x", front.req_prod_pvt);
    check(front.sring->rsp_prod == front.req_prod_pvt, "every response pushed");
    check(bad_answers == 0, "bad answers after the wrap: %u", bad_answers);
}

static void full(void *page)
{
    setup(page, 0xfffffff0u);
    events_mask_upcalls(1);
    submit(20);
    submit(12);
    check(ring_full(&front) && ring_free_requests(&front) == 0, "32 in flight: full");
    events_mask_upcalls(0);
    check(answered == 32 && ring_free_requests(&front) == 32, "drained: %u answered, %u free",
          answered, ring_free_requests(&front));
}

static void hostile(void *page)
{
    struct back_ring b;
    struct front_ring fr;
    shared_ring_init(page, 0);
    back_ring_init(&b, page, sizeof(struct entry), 0);
    front_ring_init(&fr, page, sizeof(struct entry), 0);
    struct sring_hdr *s = page;
    s->req_prod = 33;
    check(ring_unconsumed_requests(&b) == RING_OVERFLOW, "req_prod 33 ahead of 0");
    s->req_prod = 32;
    check(ring_unconsumed_requests(&b) == 32, "a full ring's worth is fine");
    b.req_cons = b.rsp_prod_pvt = 10;
    s->req_prod = 5;
    check(ring_unconsumed_requests(&b) == RING_OVERFLOW, "req_prod behind the consumer");
    s->rsp_prod = 1;
    check(ring_unconsumed_responses(&fr) == RING_OVERFLOW, "a response to no request");
    /* Through the running back end: it reports the overflow and stops. */
    setup(page, 0);
    front.sring->req_prod = 1000;
    u32 before = back_overflows;
    evtchn_send(front_port);
    check(back_overflows == before + 1, "the back end saw the overflow");
    check(back.req_cons == 0, "and consumed nothing");
}

void test_main(void)
{
    void *page = alloc_scratch_page();
    long a = evtchn_alloc_unbound(DOMID_SELF);
    long b = evtchn_bind_interdomain(DOMID_SELF, a);
    if (a <= 0 || b <= 0)
        panic("loopback channel: %d %d", (int)a, (int)b);
    back_port = a;              /* the back end listens on a, the front end on b */
    front_port = b;
    evtchn_clear(b);            /* bind_interdomain raised b */
    set_event_handler(a, back_end);
    set_event_handler(b, front_end);
    shared_ring_init(page, 0);
    front_ring_init(&front, page, sizeof(struct entry), 0);
    back_ring_init(&back, page, sizeof(struct entry), 0);
    events_enable();
    front_notified = 0;
    geometry();
    holdoff(page);
    wrap(page);
    full(page);
    hostile(page);
    check(bad_answers == 0, "bad answers: %u", bad_answers);
}

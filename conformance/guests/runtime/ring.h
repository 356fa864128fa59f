/* Shared-memory I/O rings, the guest's side: the protocol of Xen's io/ring.h (3.0.4) as small
 * inline functions over an entry size, for any entry type.
 *
 * The shared page: req_prod, req_event, rsp_prod, rsp_event (free-running 32-bit indexes),
 * 48 bytes of padding, then nr_ents entries (the largest power of two that fits, __RING_SIZE);
 * a response is written over its request's slot. The notification rule of both directions is
 * ring_need_notify(old, new, event): (new - event) < (new - old), unsigned. A producer
 * publishes its index, then (full barrier) reads the event index; a consumer about to sleep
 * writes event = cons + 1, then (full barrier) looks for work once more (RING_FINAL_CHECK_*).
 * The peer's producer index is untrusted: ring_*_unconsumed return RING_OVERFLOW for an index
 * that is more than the ring's worth ahead (or behind) and slot addresses wrap inside the ring.
 * refmodel/ring.py is the same protocol in Python. */
#ifndef XENRT_RING_H
#define XENRT_RING_H
#include "xenrt.h"

#define RING_OVERFLOW 0xffffffffu

struct sring_hdr {
    volatile u32 req_prod, req_event, rsp_prod, rsp_event;
    u8 pad[SRING_HEADER_SIZE - 16];
};

struct front_ring {
    struct sring_hdr *sring;
    u32 req_prod_pvt, rsp_cons, nr_ents, entry_size;
};

struct back_ring {
    struct sring_hdr *sring;
    u32 rsp_prod_pvt, req_cons, nr_ents, entry_size;
};

#define ring_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define ring_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#define ring_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)

static inline int ring_need_notify(u32 old, u32 new, u32 event)
{ return (u32)(new - event) < (u32)(new - old); }

/* __RING_SIZE: the largest power of two of entries that fits after the header. */
static inline u32 ring_nr_ents(u32 entry_size)
{
    u32 room = (PAGE_SIZE - SRING_HEADER_SIZE) / entry_size, n = 1;
    while (n * 2 <= room)
        n *= 2;
    return room ? n : 0;
}

/* SHARED_RING_INIT, from index ``start`` (0 in Xen; tests start near 2^32). */
static inline void shared_ring_init(void *page, u32 start)
{
    struct sring_hdr *s = page;
    memset(s, 0, sizeof(*s));
    s->req_prod = s->rsp_prod = start;
    s->req_event = s->rsp_event = start + 1;
}

static inline void front_ring_init(struct front_ring *r, void *page, u32 entry_size, u32 start)
{
    r->sring = page;
    r->req_prod_pvt = r->rsp_cons = start;
    r->entry_size = entry_size;
    r->nr_ents = ring_nr_ents(entry_size);
}

static inline void back_ring_init(struct back_ring *r, void *page, u32 entry_size, u32 start)
{
    r->sring = page;
    r->rsp_prod_pvt = r->req_cons = start;
    r->entry_size = entry_size;
    r->nr_ents = ring_nr_ents(entry_size);
}

/* The slot of index idx (RING_GET_REQUEST / RING_GET_RESPONSE): always inside the page. */
static inline void *ring_slot(struct sring_hdr *s, u32 nr_ents, u32 entry_size, u32 idx)
{ return (u8 *)s + SRING_HEADER_SIZE + (idx & (nr_ents - 1)) * entry_size; }

/* ---- front end ------------------------------------------------------------------------ */
static inline u32 ring_free_requests(const struct front_ring *r)
{ return r->nr_ents - (r->req_prod_pvt - r->rsp_cons); }
static inline int ring_full(const struct front_ring *r) { return ring_free_requests(r) == 0; }

/* The slot of the next request; ring_request_done makes it part of the next push. */
static inline void *ring_next_request(struct front_ring *r)
{ return ring_slot(r->sring, r->nr_ents, r->entry_size, r->req_prod_pvt); }
static inline void ring_request_done(struct front_ring *r) { r->req_prod_pvt++; }

/* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: 1 if the back end must be notified. */
static inline int ring_push_requests_and_check_notify(struct front_ring *r)
{
    u32 old = r->sring->req_prod, new = r->req_prod_pvt;
    ring_wmb();                 /* the requests before the index that publishes them */
    r->sring->req_prod = new;
    ring_mb();                  /* the index before reading req_event */
    return ring_need_notify(old, new, r->sring->req_event);
}

/* RING_HAS_UNCONSUMED_RESPONSES: how many, or RING_OVERFLOW for a response producer past
 * the requests we made. */
static inline u32 ring_unconsumed_responses(const struct front_ring *r)
{
    u32 n = r->sring->rsp_prod - r->rsp_cons;
    ring_rmb();                 /* the index before the responses it covers */
    return n > r->req_prod_pvt - r->rsp_cons ? RING_OVERFLOW : n;
}

/* Copy the response at rsp_cons into out (entry_size bytes) and advance; call only when
 * one is unconsumed. */
static inline void ring_take_response(struct front_ring *r, void *out)
{
    memcpy(out, ring_slot(r->sring, r->nr_ents, r->entry_size, r->rsp_cons), r->entry_size);
    r->rsp_cons++;
}

/* RING_FINAL_CHECK_FOR_RESPONSES: nonzero (a count or RING_OVERFLOW) if there is work. */
static inline u32 ring_final_check_for_responses(struct front_ring *r)
{
    u32 n = ring_unconsumed_responses(r);
    if (n)
        return n;
    r->sring->rsp_event = r->rsp_cons + 1;
    ring_mb();
    return ring_unconsumed_responses(r);
}

/* ---- back end ------------------------------------------------------------------------- */
/* RING_HAS_UNCONSUMED_REQUESTS: how many may be taken, or RING_OVERFLOW. */
static inline u32 ring_unconsumed_requests(const struct back_ring *r)
{
    u32 prod = r->sring->req_prod;
    ring_rmb();
    u32 ahead = prod - r->rsp_prod_pvt;
    if (ahead > r->nr_ents || ahead < r->req_cons - r->rsp_prod_pvt)
        return RING_OVERFLOW;
    u32 req = prod - r->req_cons, rsp = r->nr_ents - (r->req_cons - r->rsp_prod_pvt);
    return req < rsp ? req : rsp;
}

/* Copy the request at req_cons into out (entry_size bytes) and advance: the back end acts on
 * its copy, never on the shared slot again. */
static inline void ring_take_request(struct back_ring *r, void *out)
{
    memcpy(out, ring_slot(r->sring, r->nr_ents, r->entry_size, r->req_cons), r->entry_size);
    r->req_cons++;
}

static inline void *ring_next_response(struct back_ring *r)
{ return ring_slot(r->sring, r->nr_ents, r->entry_size, r->rsp_prod_pvt); }
static inline void ring_response_done(struct back_ring *r) { r->rsp_prod_pvt++; }

static inline int ring_push_responses_and_check_notify(struct back_ring *r)
{
    u32 old = r->sring->rsp_prod, new = r->rsp_prod_pvt;
    ring_wmb();
    r->sring->rsp_prod = new;
    ring_mb();
    return ring_need_notify(old, new, r->sring->rsp_event);
}

static inline u32 ring_final_check_for_requests(struct back_ring *r)
{
    u32 n = ring_unconsumed_requests(r);
    if (n)
        return n;
    r->sring->req_event = r->req_cons + 1;
    ring_mb();
    return ring_unconsumed_requests(r);
}
#endif

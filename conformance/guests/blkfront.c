/* A block-device front end (io/blkif.h, Xen 3.0.4) against the hypervisor's back end: the
 * xenbus handshake through xenstore (device/vbd/768: backend-id, backend; the back end's
 * sectors, sector-size, state; our ring-ref, event-channel, state = Initialised), a shared
 * ring of requests granted to the back end, data pages granted per segment.
 *   (no command line)  write a pattern over several segments and requests in flight, read it
 *                      back, reads past the end of the disk fail; responses are held off
 *                      (one event for a batch)
 *   hostile            requests the back end must refuse, each with BLKIF_RSP_ERROR
 *   overflow           a request producer index far ahead: the back end stops serving
 *   defer              the back end is another domain: no response before we give up the
 *                      CPU, all of them once we block; the ring fills while it has not run
 * The Python test (tests/test_blkif.py) checks the image file afterwards. */
#include "xenrt.h"
#include "ring.h"

const char test_title[] = "blkfront: virtual block device over a granted ring";

struct blkif_segment { u32 gref; u8 first_sect, last_sect; u16 pad; };
struct blkif_request {
    u8 operation, nr_segments;
    u16 handle;
    u64 id, sector_number;        /* 4-byte aligned on x86_32 */
    struct blkif_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct blkif_response { u64 id; u8 operation, pad; s16 status; };
_Static_assert(sizeof(struct blkif_request) == BLKIF_REQUEST_SIZE, "blkif_request layout");
_Static_assert(sizeof(struct blkif_response) == BLKIF_RESPONSE_SIZE, "blkif_response layout");

#define NPAGES BLKIF_MAX_SEGMENTS_PER_REQUEST
#define REF_RING 8                /* Linux keeps refs 0-7 for the tools */
#define REF_DATA 9                /* REF_DATA + i grants data[i] */
#define REF_RO 30                 /* ro_page, granted read-only */
#define REF_NONE 31               /* never granted */
#define MAX_ID 64
#define NO_ANSWER 0x7fff

static u8 data[NPAGES][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static u8 ro_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static struct front_ring ring;
static u32 port, be_id, sectors, rsp_events, pushes, notifies;
static char be[128];
static volatile s16 status_of[MAX_ID];

static u32 parse(const char *s)
{ u32 n = 0; while (*s >= '0' && *s <= '9') n = n * 10 + (u32)(*s++ - '0'); return n; }

static int read_key(const char *dir, const char *key, char *buf, u32 len)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", dir, key);
    return xenstore_read(path, buf, len);
}

static u32 read_u32(const char *dir, const char *key)
{
    char buf[32];
    if (read_key(dir, key, buf, sizeof(buf)) < 0)
        panic("cannot read %s/%s", dir, key);
    return parse(buf);
}

/* ---- responses ------------------------------------------------------------------------- */
static void take_responses(void)
{
    for (;;) {
        u32 n = ring_final_check_for_responses(&ring);
        if (n == RING_OVERFLOW) {
            xtf_failure("the back end's response producer is past our requests");
            return;
        }
        if (!n)
            return;
        while (n--) {
            union { struct blkif_response r; u8 slot[BLKIF_REQUEST_SIZE]; } u;
            ring_take_response(&ring, u.slot);
            if (u.r.id < MAX_ID)
                status_of[u.r.id] = u.r.status;
            else
                xtf_failure("a response with id %u", (u32)u.r.id);
        }
    }
}

static void blk_interrupt(u32 p, struct trap_frame *f)
{
    (void)p; (void)f;
    rsp_events++;
    take_responses();
}

/* ---- requests -------------------------------------------------------------------------- */
static struct blkif_request *queue(u8 op, u32 id, u64 sector, u32 nseg)
{
    if (ring_full(&ring))
        panic("ring full");
    struct blkif_request *r = ring_next_request(&ring);
    memset(r, 0, sizeof(*r));
    r->operation = op;
    r->nr_segments = nseg;
    r->handle = BLKIF_VDEV_HDA;
    r->id = id;
    r->sector_number = sector;
    status_of[id] = NO_ANSWER;
    ring_request_done(&ring);
    return r;
}

static void seg(struct blkif_request *r, u32 i, u32 gref, u8 first, u8 last)
{ r->seg[i].gref = gref; r->seg[i].first_sect = first; r->seg[i].last_sect = last; }

static void push(void)
{
    pushes++;
    if (ring_push_requests_and_check_notify(&ring)) {
        notifies++;
        evtchn_send(port);
    }
}

static int answered(u32 id) { return status_of[id] != NO_ANSWER; }

static void wait_for(u32 id)
{
    for (int i = 0; i < 100 && !answered(id); i++) {
        take_responses();
        if (!answered(id))
            HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    }
    check(answered(id), "no response to request %u", id);
}

/* ---- the handshake --------------------------------------------------------------------- */
static void connect(void)
{
    char buf[32];
    if (xenstore_read("device/vbd/768/backend-id", buf, sizeof(buf)) < 0)
        xtf_skip("no virtual block device 768");
    be_id = parse(buf);
    if (xenstore_read("device/vbd/768/backend", be, sizeof(be)) < 0)
        panic("no device/vbd/768/backend");
    check(read_u32(be, "state") == XenbusStateInitWait, "back end in InitWait");
    /* What xend writes (blkif.py, DevController.py); the disk's size comes at connect. */
    char key[80];
    snprintf(key, sizeof(key), "%s/mode", be);
    check(xenstore_read(key, buf, sizeof(buf)) == 1 && buf[0] == 'w', "mode w");
    snprintf(key, sizeof(key), "%s/online", be);
    check(xenstore_read(key, buf, sizeof(buf)) == 1 && buf[0] == '1', "online 1");
    snprintf(key, sizeof(key), "%s/sectors", be);
    check(xenstore_read(key, buf, sizeof(buf)) == -ENOENT, "no sectors before connect");
    check(xenstore_read("device/vbd/768/device-type", buf, sizeof(buf)) == 4
          && !strcmp(buf, "disk"), "device-type disk");

    gnttab_init();
    void *page = alloc_scratch_page();
    shared_ring_init(page, 0);
    front_ring_init(&ring, page, BLKIF_REQUEST_SIZE, 0);
    check(ring.nr_ents == BLKIF_RING_SIZE, "ring of %u", ring.nr_ents);
    gnttab_grant_access(REF_RING, be_id, virt_to_mfn(page), 0);
    for (u32 i = 0; i < NPAGES; i++)
        gnttab_grant_access(REF_DATA + i, be_id, virt_to_mfn(data[i]), 0);
    gnttab_grant_access(REF_RO, be_id, virt_to_mfn(ro_page), 1);
    long p = evtchn_alloc_unbound(be_id);
    if (p <= 0)
        panic("alloc_unbound for the back end: %d", (int)p);
    port = p;
    set_event_handler(port, blk_interrupt);
    events_enable();

    snprintf(buf, sizeof(buf), "%u", REF_RING);
    check(xenstore_write("device/vbd/768/ring-ref", buf) == 0, "write ring-ref");
    snprintf(buf, sizeof(buf), "%u", port);
    check(xenstore_write("device/vbd/768/event-channel", buf) == 0, "write event-channel");
    snprintf(buf, sizeof(buf), "%u", XenbusStateInitialised);
    check(xenstore_write("device/vbd/768/state", buf) == 0, "write state");
    u32 state = 0;
    for (int i = 0; i < 100 && state != XenbusStateConnected; i++) {
        state = read_u32(be, "state");
        if (state != XenbusStateConnected)
            HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    }
    if (state != XenbusStateConnected)
        panic("the back end did not connect: state %u", state);
    sectors = read_u32(be, "sectors");
    check(read_u32(be, "sector-size") == BLKIF_SECTOR_SIZE, "512-byte sectors");
    check(sectors >= 128, "a disk of at least 128 sectors: %u", sectors);
    printk("connected to %s: %u sectors, event channel %u\n", be, sectors, port);
}

/* ---- the pattern: byte o of disk sector s ------------------------------------------------ */
static u8 pattern(u32 s, u32 o) { return (u8)((s * 13 + o * 7 + (o >> 8)) ^ 0x5a); }

/* Three requests: A, sectors 2..16 over three segments (5 + 8 + 2 sectors); B, sectors
 * 40..50 in 11 one-sector segments from pages 3..10; C, sectors 60..65 (a barrier when
 * writing). No page sector serves two of them. */
struct span { u8 page, first, last; };
static const struct span span_a[] = { { 0, 3, 7 }, { 1, 0, 7 }, { 2, 0, 1 } };
static const struct span span_c[] = { { 2, 2, 7 } };
static struct span span_b[NPAGES];

static struct blkif_request *request(u8 op, u32 id, u32 sector, const struct span *sp, u32 n)
{
    struct blkif_request *r = queue(op, id, sector, n);
    for (u32 i = 0; i < n; i++)
        seg(r, i, REF_DATA + sp[i].page, sp[i].first, sp[i].last);
    return r;
}

static u32 over(const struct span *sp, u32 n, u32 sector, int fill_it)
{
    u32 bad = 0;
    for (u32 i = 0; i < n; i++)
        for (u32 k = sp[i].first; k <= sp[i].last; k++, sector++)
            for (u32 o = 0; o < BLKIF_SECTOR_SIZE; o++) {
                u8 *b = &data[sp[i].page][k * BLKIF_SECTOR_SIZE + o];
                if (fill_it)
                    *b = pattern(sector, o);
                else
                    bad += *b != pattern(sector, o);
            }
    return bad;
}

static void three(u8 op, u32 base_id)
{
    for (u32 i = 0; i < NPAGES; i++)
        span_b[i] = (struct span){ 3 + i % 8, i / 8, i / 8 };
    request(op, base_id, 2, span_a, 3);
    request(op, base_id + 1, 40, span_b, NPAGES);
    request(op == BLKIF_OP_WRITE ? BLKIF_OP_WRITE_BARRIER : op, base_id + 2, 60, span_c, 1);
}

static void write_and_read_back(void)
{
    memset(data, 0, sizeof(data));
    for (u32 i = 0; i < NPAGES; i++)
        span_b[i] = (struct span){ 3 + i % 8, i / 8, i / 8 };
    over(span_a, 3, 2, 1);
    over(span_b, NPAGES, 40, 1);
    over(span_c, 1, 60, 1);
    three(BLKIF_OP_WRITE, 1);
    u32 ev0 = rsp_events, n0 = notifies;
    push();
    wait_for(1); wait_for(2); wait_for(3);
    check(notifies == n0 + 1, "one notification for three requests");
    check(rsp_events == ev0 + 1, "three responses, one event: %u", rsp_events - ev0);
    check(status_of[1] == BLKIF_RSP_OKAY && status_of[2] == BLKIF_RSP_OKAY,
          "writes: %d %d", status_of[1], status_of[2]);
    check(status_of[3] == BLKIF_RSP_OKAY, "barrier write: %d", status_of[3]);

    /* Read everything back into cleared pages, again three requests in flight. */
    memset(data, 0, sizeof(data));
    three(BLKIF_OP_READ, 4);
    push();
    wait_for(4); wait_for(5); wait_for(6);
    check(status_of[4] == 0 && status_of[5] == 0 && status_of[6] == 0, "reads: %d %d %d",
          status_of[4], status_of[5], status_of[6]);
    check(over(span_a, 3, 2, 0) == 0, "request A read back: %u bytes differ",
          over(span_a, 3, 2, 0));
    check(over(span_b, NPAGES, 40, 0) == 0, "request B read back: %u bytes differ",
          over(span_b, NPAGES, 40, 0));
    check(over(span_c, 1, 60, 0) == 0, "request C read back: %u bytes differ",
          over(span_c, 1, 60, 0));
    u32 stray = 0;
    for (u32 o = 0; o < 3 * BLKIF_SECTOR_SIZE; o++)
        stray += data[0][o] != 0;
    check(stray == 0, "a read writes only its segments' sectors: %u bytes", stray);

    /* Past the end of the disk. */
    struct blkif_request *r = queue(BLKIF_OP_READ, 7, sectors - 1, 1);
    seg(r, 0, REF_DATA, 0, 1);
    r = queue(BLKIF_OP_READ, 8, sectors, 1);
    seg(r, 0, REF_DATA, 0, 0);
    r = queue(BLKIF_OP_READ, 9, sectors - 1, 1);
    seg(r, 0, REF_DATA, 0, 0);
    push();
    wait_for(7); wait_for(8); wait_for(9);
    check(status_of[7] == BLKIF_RSP_ERROR, "read across the end: %d", status_of[7]);
    check(status_of[8] == BLKIF_RSP_ERROR, "read past the end: %d", status_of[8]);
    check(status_of[9] == BLKIF_RSP_OKAY, "the last sector reads: %d", status_of[9]);
    printk("%u pushes, %u notifications, %u response events\n", pushes, notifies, rsp_events);
}

static void hostile(void)
{
    struct blkif_request *r;
    r = queue(BLKIF_OP_WRITE, 10, 0, 0);                           /* no segments */
    r = queue(BLKIF_OP_WRITE, 11, 0, 12);                          /* 12 segments */
    for (u32 i = 0; i < NPAGES; i++) seg(r, i, REF_DATA, 0, 0);
    r = queue(BLKIF_OP_WRITE, 12, 0, 1); seg(r, 0, REF_DATA, 5, 4); /* first > last */
    r = queue(BLKIF_OP_WRITE, 13, 0, 1); seg(r, 0, REF_DATA, 0, 8); /* last_sect 8 */
    r = queue(BLKIF_OP_WRITE, 14, 0, 2);                           /* a ref never granted */
    seg(r, 0, REF_DATA, 0, 7); seg(r, 1, REF_NONE, 0, 7);
    r = queue(BLKIF_OP_READ, 15, 0, 1); seg(r, 0, REF_RO, 0, 7);   /* read into read-only */
    r = queue(9, 16, 0, 1); seg(r, 0, REF_DATA, 0, 7);             /* unknown operation */
    r = queue(BLKIF_OP_WRITE, 17, sectors - 2, 1);                 /* across the end */
    seg(r, 0, REF_DATA, 0, 7);
    r = queue(BLKIF_OP_WRITE, 18, 0xffffffffu, 1); seg(r, 0, REF_DATA, 0, 0);
    r = queue(BLKIF_OP_READ, 19, 0, 1); seg(r, 0, 0xffffffffu, 0, 0); /* ref out of range */
    memset(data[0], 0xee, PAGE_SIZE);
    push();
    for (u32 id = 10; id <= 19; id++) {
        wait_for(id);
        check(status_of[id] == BLKIF_RSP_ERROR, "request %u: status %d", id, status_of[id]);
    }
    check(ro_page[0] == 0, "the read-only page is untouched");
}

static void overflow(void)
{
    struct blkif_request *r = queue(BLKIF_OP_WRITE, 20, 0, 1);
    seg(r, 0, REF_DATA, 0, 7);
    memset(data[0], 0xdd, PAGE_SIZE);
    ring.sring->req_prod = ring.req_prod_pvt + 1000;   /* far beyond the ring */
    evtchn_send(port);
    for (int i = 0; i < 10; i++)
        HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    take_responses();
    check(!answered(20), "a malformed ring is not served");
    ring.sring->req_prod = ring.req_prod_pvt;           /* even once repaired */
    evtchn_send(port);
    take_responses();
    check(!answered(20), "nor served again later");
}

/* The back end runs in another domain, after we give up the CPU: pushed requests get no
 * response while we run on; blocked (SCHEDOP_block), we are woken by the response event with
 * every one answered. A request reads one sector into a data page. */
static u32 answered_count(u32 first, u32 n)
{
    u32 k = 0;
    for (u32 id = first; id < first + n; id++)
        k += answered(id);
    return k;
}

static void block_until_answered(u32 first, u32 n)
{
    for (int i = 0; i < 100 && answered_count(first, n) < n; i++)
        HYPERVISOR_sched_op(SCHEDOP_block, NULL);   /* event delivery on: blk_interrupt */
    check(answered_count(first, n) == n, "answered after blocking: %u of %u",
          answered_count(first, n), n);
}

static void defer(void)
{
    for (u32 id = 0; id < 8; id++) {
        struct blkif_request *r = queue(BLKIF_OP_READ, id, id, 1);
        seg(r, 0, REF_DATA + id, 0, 0);
    }
    push();
    for (volatile u32 spin = 0; spin < 10000; spin++)
        ;                                            /* other work, in our own slice */
    take_responses();
    printk("defer: %u of 8 answered before blocking, response producer %u\n",
           answered_count(0, 8), ring.sring->rsp_prod);
    block_until_answered(0, 8);

    /* A ring's worth, one push each: nothing is consumed until we block, so it fills. */
    u32 n0 = notifies;
    for (u32 i = 0; i < BLKIF_RING_SIZE; i++) {
        struct blkif_request *r = queue(BLKIF_OP_READ, 8 + i, i, 1);
        seg(r, 0, REF_DATA + i % NPAGES, 0, 0);
        push();
    }
    printk("defer: ring full %d after %u pushes, %u notification(s), %u answered\n",
           ring_full(&ring), BLKIF_RING_SIZE, notifies - n0, answered_count(8, BLKIF_RING_SIZE));
    block_until_answered(8, BLKIF_RING_SIZE);
    check(!ring_full(&ring), "room again once the responses are taken");
    for (u32 id = 0; id < 8 + BLKIF_RING_SIZE; id++)
        check(status_of[id] == BLKIF_RSP_OKAY, "request %u: status %d", id, status_of[id]);
}

/* Benchmarks (benchmarks/bench_io.py): n null round trips (a request the back end refuses
 * at its first check: nr_segments 0), or kb KB written or read in requests of 11 whole
 * pages, four in flight per push. */
static void bench_null(u32 n)
{
    for (u32 i = 0; i < n; i++) {
        queue(BLKIF_OP_READ, i % MAX_ID, 0, 0);
        push();
        wait_for(i % MAX_ID);
    }
}

static void bench_io(u8 op, u32 kb)
{
    u32 per_req = NPAGES * 8, left = kb * 2, sector = 0, id = 0;
    if (left > sectors)
        panic("a disk of %u sectors is too small for %u KB", sectors, kb);
    while (left) {
        u32 first_id = id;
        for (int k = 0; k < 4 && left; k++) {
            u32 n = left < per_req ? left : per_req, nseg = (n + 7) / 8;
            struct blkif_request *r = queue(op, id++ % MAX_ID, sector, nseg);
            for (u32 i = 0; i < nseg; i++) {
                u32 secs = n - i * 8 < 8 ? n - i * 8 : 8;
                seg(r, i, REF_DATA + i, 0, secs - 1);
            }
            sector += n;
            left -= n;
        }
        push();
        for (u32 j = first_id; j < id; j++) {
            wait_for(j % MAX_ID);
            check(status_of[j % MAX_ID] == BLKIF_RSP_OKAY, "bench request %u", j);
        }
    }
}

void test_main(void)
{
    const char *c = (const char *)(start_info + START_INFO_cmd_line);
    connect();
    if (!memcmp(c, "bench-null ", 11))
        bench_null(parse(c + 11));
    else if (!memcmp(c, "bench-write ", 12))
        bench_io(BLKIF_OP_WRITE, parse(c + 12));
    else if (!memcmp(c, "bench-read ", 11))
        bench_io(BLKIF_OP_READ, parse(c + 11));
    else if (!strcmp(c, "hostile"))
        hostile();
    else if (!strcmp(c, "overflow"))
        overflow();
    else if (!strcmp(c, "defer"))
        defer();
    else if (!c[0])
        write_and_read_back();
    else
        xtf_error("command line: (none), hostile, overflow or defer");
}

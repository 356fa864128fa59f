/* The store (io/xs_wire.h, tools/xenstore/xenstored_core.c as of Xen 3.0.4) from a guest: the
 * frame and event channel start_info names, requests and answers over the ring, the keys the
 * tools write into the domain's home, errors as XS_ERROR with the errno's name, and the
 * permission rule (a domain reads and writes only under /local/domain/<domid>). */
#include "xenrt.h"

const char test_title[] = "xenstore: ring protocol, keys, errors, permissions, watches";

static char buf[XENSTORE_PAYLOAD_MAX + 1];
static char big[3001];
#define BIG 2000  /* twice the ring, below the 2048-byte node quota */

static void start_of_day(void)
{
    struct evtchn_status st;
    u32 port = si_u32(START_INFO_store_evtchn);
    if (!si_u32(START_INFO_store_mfn))
        xtf_skip("no store ring in start_info");
    check(port != 0, "store_evtchn is a port: %u", port);
    check(evtchn_status(DOMID_SELF, port, &st) == 0 && st.status == EVTCHNSTAT_interdomain,
          "the store port is bound to another domain: status %u", st.status);
    /* The store frame is one of ours, mapped in the bootstrap region. */
    u32 mfn = si_u32(START_INFO_store_mfn);
    u32 pfn = ((u32 *)MACH2PHYS_VIRT_START)[mfn];
    check(pfn < si_u32(START_INFO_nr_pages) && pfn_to_mfn(pfn) == mfn, "store mfn is ours");
}

static void tools_keys(void)
{
    int n = xenstore_read("domid", buf, sizeof(buf));
    check(n > 0 && buf[0] >= '0' && buf[0] <= '9', "domid: %d '%s'", n, buf);
    char path[64];
    snprintf(path, sizeof(path), "/local/domain/%s/name", buf);
    char name[64];
    n = xenstore_read(path, name, sizeof(name));
    check(n > 0, "name by its absolute path: %d", n);
    check(xenstore_read("name", buf, sizeof(buf)) == n && !strcmp(buf, name),
          "relative and absolute paths agree: '%s' '%s'", buf, name);
}

static void read_write(void)
{
    check(xenstore_write("data/greeting", "hello") == 0, "write data/greeting");
    int n = xenstore_read("data/greeting", buf, sizeof(buf));
    check(n == 5 && !strcmp(buf, "hello"), "read back: %d '%s'", n, buf);
    check(xenstore_write("data/greeting", "hi") == 0, "overwrite");
    n = xenstore_read("data/greeting", buf, sizeof(buf));
    check(n == 2 && !strcmp(buf, "hi"), "read back the new value: %d '%s'", n, buf);
    check(xenstore_write("data/empty", "") == 0 && xenstore_read("data/empty", buf, 8) == 0,
          "an empty value");
    check(xenstore_talk(XS_MKDIR, "data/dir", NULL, NULL, 0) >= 0, "mkdir");
    n = xenstore_talk(XS_DIRECTORY, "data", NULL, buf, sizeof(buf));
    check(n == 19 && !memcmp(buf, "greeting\0empty\0dir\0", 19),
          "directory data: %d bytes", n);
    check(xenstore_talk(XS_RM, "data/dir", NULL, NULL, 0) >= 0, "rm");
    check(xenstore_read("data/dir", buf, 8) == -ENOENT, "removed");
    /* Longer than the ring both ways: the request and the answer wrap and wait for room. */
    for (u32 i = 0; i < BIG; i++)
        big[i] = 'a' + i % 26;
    check(xenstore_write("data/big", big) == 0, "write %u bytes", BIG);
    n = xenstore_read("data/big", buf, sizeof(buf));
    check(n == BIG && !strcmp(buf, big), "read %u bytes back: %d", BIG, n);
    /* A node record of 2048 bytes or more is past an unprivileged domain's quota
     * (xenstored_core.c, quota_max_entry_size; write_node's ENOSPC): the value stays. */
    for (u32 i = BIG; i < sizeof(big) - 1; i++)
        big[i] = 'a' + i % 26;
    check(xenstore_write("data/big", big) == -ENOSPC, "write 3000 bytes: over the quota");
    n = xenstore_read("data/big", buf, sizeof(buf));
    check(n == BIG, "the %u bytes are still there: %d", BIG, n);
    for (u32 i = 0; i < 20; i++)     /* many round trips: the indexes go round the ring */
        check(xenstore_write("data/n", "0123456789") == 0, "write %u", i);
}

static void errors(void)
{
    check(xenstore_read("data/missing", buf, 8) == -ENOENT, "missing key: ENOENT");
    check(xenstore_read("/local/domain/4242/name", buf, 8) == -EACCES,
          "another domain's home: EACCES");
    check(xenstore_read("/local/domain", buf, 8) == -EACCES, "/local/domain: EACCES");
    check(xenstore_write("/tool/x", "1") == -EACCES, "write outside home: EACCES");
    check(xenstore_talk(XS_RM, "/local", NULL, NULL, 0) == -EACCES, "rm outside home");
    check(xenstore_read("data//x", buf, 8) == -EINVAL, "a malformed path: EINVAL");
    check(xenstore_talk(99, "data", NULL, NULL, 0) == -EINVAL, "unknown type: EINVAL");
    check(xenstore_talk(XS_TRANSACTION_START, "", NULL, buf, 8) >= 0, "transaction start");
}

/* "path\0token\0" of the next event equals path and token. */
static int event_is(const char *path, const char *token, int wait)
{
    int n = xenstore_event(buf, sizeof(buf) - 1, wait);
    if (n < 0)
        return 0;
    u32 plen = strlen(path);
    return (u32)n == plen + strlen(token) + 2 && !memcmp(buf, path, plen + 1)
        && !strcmp(buf + plen + 1, token);
}

/* xenstored_watch.c: XS_WATCH answers OK and fires once up front; a write at or below the
 * path fires it (the guest's own write: the event comes before the answer); XS_UNWATCH. */
static void watches(void)
{
    check(xenstore_watch(XS_WATCH, "wdir", "tok") == 0, "watch a relative path");
    check(event_is("wdir", "tok", 0), "the first event, named relative to the home");
    check(xenstore_event(buf, sizeof(buf), 0) == -EAGAIN, "one first event only");
    check(xenstore_write("wdir/a/b", "1") == 0, "write below the watched path");
    check(event_is("wdir/a/b", "tok", 0), "an event names the node written");
    check(xenstore_write("wdirx", "1") == 0 && xenstore_event(buf, sizeof(buf), 0) == -EAGAIN,
          "a sibling with the same prefix fires nothing");
    check(xenstore_watch(XS_WATCH, "wdir", "tok") == -EEXIST, "the same watch twice: EEXIST");
    check(xenstore_talk(XS_WATCH, "wdir", "tok", NULL, 0) == -EINVAL,
          "a token without its NUL: EINVAL");
    check(xenstore_watch(XS_UNWATCH, "wdir", "tok") == 0, "unwatch");
    check(xenstore_write("wdir/a", "2") == 0 && xenstore_event(buf, sizeof(buf), 0) == -EAGAIN,
          "no event after unwatch");
    check(xenstore_watch(XS_UNWATCH, "wdir", "tok") == -ENOENT, "unwatch again: ENOENT");
}

void test_main(void)
{
    start_of_day();
    tools_keys();
    read_write();
    errors();
    watches();
}

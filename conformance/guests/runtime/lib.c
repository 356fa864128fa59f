/* xenspec guest runtime: console, formatting, traps, results, memory helpers. */
#include "xenrt.h"

u8 *start_info;
volatile u8 *shared_info;
int xtf_failures, xtf_errors;
volatile struct last_trap last_trap;
static trap_handler_t handlers[256];
static u8 shared_info_page[4096] __attribute__((aligned(4096)));
static u8 scratch[16][4096] __attribute__((aligned(4096)));
static unsigned scratch_used;
static u32 next_free_pfn;
u32 boot_esp;                       /* ESP at entry (head.S): the top of the boot stack */

u32 si_u32(unsigned offset) { return *(u32 *)(start_info + offset); }

void *memset(void *p, int c, size_t n) { u8 *d = p; while (n--) *d++ = (u8)c; return p; }
void *memcpy(void *d, const void *s, size_t n)
{ u8 *a = d; const u8 *b = s; while (n--) *a++ = *b++; return d; }
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++) if (*x != *y) return *x - *y;
    return 0;
}
int strcmp(const char *a, const char *b)
{ while (*a && *a == *b) { a++; b++; } return (u8)*a - (u8)*b; }

/* ---- formatting ------------------------------------------------------------------- */
struct out { char *buf; size_t size, len; };
static void put(struct out *o, char c) { if (o->len + 1 < o->size) o->buf[o->len] = c; o->len++; }
static void put_num(struct out *o, u32 v, unsigned base, int width, char pad, int neg)
{
    char tmp[12]; int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    if (neg) tmp[n++] = '-';
    while (n < width--) put(o, pad);
    while (n) put(o, tmp[--n]);
}
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') { put(&o, *fmt); continue; }
        char pad = ' '; int width = 0;
        fmt++;
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') fmt++;
        switch (*fmt) {
        case 'd': { s32 v = va_arg(ap, s32);
                    put_num(&o, v < 0 ? -(u32)v : (u32)v, 10, width, pad, v < 0); break; }
        case 'u': put_num(&o, va_arg(ap, u32), 10, width, pad, 0); break;
        case 'x': put_num(&o, va_arg(ap, u32), 16, width, pad, 0); break;
        case 'p': put(&o, '0'); put(&o, 'x'); put_num(&o, va_arg(ap, u32), 16, 8, '0', 0); break;
        case 'c': put(&o, (char)va_arg(ap, int)); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            while (n < width--)
                put(&o, ' ');
            while (*s)
                put(&o, *s++);
            break;
        }
        case '%': put(&o, '%'); break;
        default: put(&o, '%'); put(&o, *fmt); break;
        }
    }
    if (size) buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}
int snprintf(char *buf, size_t size, const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); int n = vsnprintf(buf, size, fmt, ap); va_end(ap); return n; }

/* printk: the text of each call, formatted whole, goes to Xen's console (console_io: the
 * serial line of a debug Xen; a release Xen refuses it to a domain U) and to the domain's
 * console ring (what `xl create -c` and `xl console` show; console_line below). printk_ring
 * nonzero keeps it to the ring alone (console_io without a ring), for a kernel testing the ring. */
int printk_ring;
static void console_out(const char *buf, u32 n)
{
    if (!printk_ring || console_line(buf, n) == -ENODEV)
        HYPERVISOR_console_io(CONSOLEIO_write, n, buf);
    if (!printk_ring)
        console_line(buf, n);
}
static void vprintk_line(const char *prefix, const char *fmt, va_list ap)
{
    char buf[512];
    int p = prefix ? snprintf(buf, sizeof(buf), "%s", prefix) : 0;
    int n = p + vsnprintf(buf + p, sizeof(buf) - p, fmt, ap);
    if (n > (int)sizeof(buf) - 2) n = sizeof(buf) - 2;
    if (prefix) { buf[n++] = '\n'; buf[n] = 0; }   /* with a prefix: one whole line */
    console_out(buf, (u32)n);
}
void printk(const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); vprintk_line(NULL, fmt, ap); va_end(ap); }

/* The last line before SCHEDOP_shutdown states the reason, so that a console that is all a
 * tool shows (`xl create -c`) still tells how the kernel ended: "xenspec: shutdown NAME" with
 * sched.h's SHUTDOWN_* name, or "xenspec: shutdown reason N" for another number. Lines the
 * ring had no room for are counted first. A domain Xen crashes prints no such line. */
static const char *const shutdown_names[] = { "poweroff", "reboot", "suspend", "crash" };
void shutdown_announce(unsigned reason)
{
    if (console_ring_dropped)
        printk("xenspec: the console ring dropped %u bytes\n", console_ring_dropped);
    if (reason < sizeof(shutdown_names) / sizeof(shutdown_names[0]))
        printk("xenspec: shutdown %s\n", shutdown_names[reason]);
    else
        printk("xenspec: shutdown reason %u\n", reason);
    console_flush();
}
void shutdown(unsigned reason)
{
    shutdown_announce(reason);
    u32 arg = reason;
    HYPERVISOR_sched_op(SCHEDOP_shutdown, &arg);
    HYPERVISOR_sched_op_compat(SCHEDOP_shutdown, reason);
    for (;;) ;
}
void panic(const char *fmt, ...)
{
    va_list ap; va_start(ap, fmt);
    vprintk_line("PANIC: ", fmt, ap);
    va_end(ap);
    shutdown(SHUTDOWN_crash);
}

/* ---- results -------------------------------------------------------------------- */
void xtf_failure(const char *fmt, ...)
{
    va_list ap; va_start(ap, fmt);
    vprintk_line("FAILURE: ", fmt, ap);
    va_end(ap); xtf_failures++;
}
void xtf_error(const char *fmt, ...)
{
    va_list ap; va_start(ap, fmt);
    vprintk_line("ERROR: ", fmt, ap);
    va_end(ap); xtf_errors++;
}
void xtf_exit(void)
{
    printk("Test result: %s\n", xtf_errors ? "ERROR" : xtf_failures ? "FAILURE" : "SUCCESS");
    shutdown(SHUTDOWN_poweroff);
}
void xtf_success(const char *msg) { if (msg) printk("%s\n", msg); xtf_exit(); }
void xtf_skip(const char *msg)
{ if (msg) printk("%s\n", msg); printk("Test result: SKIP\n"); shutdown(SHUTDOWN_poweroff); }

/* ---- traps --------------------------------------------------------------------- */
extern char trap_entry_0[], trap_entry_1[], trap_entry_2[], trap_entry_3[], trap_entry_4[],
    trap_entry_5[], trap_entry_6[], trap_entry_7[], trap_entry_8[], trap_entry_9[],
    trap_entry_10[], trap_entry_11[], trap_entry_12[], trap_entry_13[], trap_entry_14[],
    trap_entry_15[], trap_entry_16[], trap_entry_17[], trap_entry_18[], trap_entry_19[],
    trap_entry_128[], trap_entry_32[];
struct trap_info_entry { u8 vector, flags; u16 cs; u32 address; };

void install_trap_table(void)
{
    static struct trap_info_entry t[24];
    char *entries[20] = { trap_entry_0, trap_entry_1, trap_entry_2, trap_entry_3, trap_entry_4,
        trap_entry_5, trap_entry_6, trap_entry_7, trap_entry_8, trap_entry_9, trap_entry_10,
        trap_entry_11, trap_entry_12, trap_entry_13, trap_entry_14, trap_entry_15,
        trap_entry_16, trap_entry_17, trap_entry_18, trap_entry_19 };
    int n = 0;
    for (int v = 0; v < 20; v++) {
        t[n].vector = v;
        t[n].flags = (v == TRAP_int3 || v == TRAP_overflow) ? 3 : 0;
        t[n].cs = FLAT_KERNEL_CS;
        t[n].address = (u32)entries[v];
        n++;
    }
    t[n].vector = SYSCALL_VECTOR; t[n].flags = 3; t[n].cs = FLAT_KERNEL_CS;
    t[n].address = (u32)trap_entry_128; n++;
    t[n].vector = 32; t[n].flags = 1; t[n].cs = FLAT_KERNEL_CS;   /* ring-1-only int $0x20 */
    t[n].address = (u32)trap_entry_32; n++;
    t[n].address = 0;
    long rc = HYPERVISOR_set_trap_table(t);
    if (rc) panic("set_trap_table: %d", (int)rc);
}

void set_trap_handler(unsigned vector, trap_handler_t h) { handlers[vector & 0xff] = h; }

u32 read_cr2(void)
{ return *(volatile u32 *)(shared_info + VCPU_INFO_arch_cr2); }

extern const u32 __start_ex_table[], __stop_ex_table[];

void do_upcall(struct trap_frame *f);

void do_trap(struct trap_frame *f)
{
    if (f->vector == EVENT_VECTOR) { do_upcall(f); return; }  /* head.S event_entry */
    last_trap.vector = f->vector;
    last_trap.error_code = f->error_code;
    last_trap.cr2 = f->vector == TRAP_page_fault ? read_cr2() : 0;
    last_trap.eip = f->eip;
    last_trap.count++;
    if (handlers[f->vector]) { handlers[f->vector](f); return; }
    for (const u32 *e = __start_ex_table; e < __stop_ex_table; e += 2) {
        if (e[0] == f->eip) { f->eip = e[1]; f->eax = FAULT_FLAG | f->vector; return; }
    }
    panic("unhandled trap %u, error code %x, at %x:%x, cr2 %x", f->vector, f->error_code,
          f->cs & 0xffff, f->eip, last_trap.cr2);
}

/* ---- memory -------------------------------------------------------------------- */
u32 pfn_to_mfn(u32 pfn) { return ((u32 *)si_u32(START_INFO_mfn_list))[pfn]; }
u32 virt_to_mfn(const void *va) { return pfn_to_mfn(((u32)va - KERNEL_VIRT_BASE) >> PAGE_SHIFT); }

/* Page-table entries are 4 bytes, or 8 with PAE (-DPAE_ONLY: the compat-pae profile, whose
 * L3 at pt_base names the L2s; xen_abi.h gives that profile's shifts and sizes). */
#ifdef PAE_ONLY
typedef u64 pte_t;
#else
typedef u32 pte_t;
#endif
#define TABLE_INDEX(va, shift) (((va) >> (shift)) & (L1_PAGETABLE_ENTRIES - 1))

static u32 pte_mfn(pte_t e) { return (u32)((e >> PAGE_SHIFT) & 0xFFFFFFF); }
/* A bootstrap table's address: it is mapped in the bootstrap region; its pfn is the M2P's. */
static u32 table_va(u32 mfn)
{
    return KERNEL_VIRT_BASE + (((u32 *)MACH2PHYS_VIRT_START)[mfn] << PAGE_SHIFT);
}
/* The page directory (L2) that maps va, or 0. */
static pte_t *directory(u32 va)
{
#ifdef PAE_ONLY
    pte_t l3e = ((pte_t *)si_u32(START_INFO_pt_base))[va >> 30];
    return (l3e & _PAGE_PRESENT) ? (pte_t *)table_va(pte_mfn(l3e)) : 0;
#else
    (void)va;
    return (pte_t *)si_u32(START_INFO_pt_base);
#endif
}
static pte_t l2e_of(u32 va)
{
    pte_t *l2 = directory(va);
    return l2 ? l2[TABLE_INDEX(va, L2_PAGETABLE_SHIFT)] : 0;
}
u32 virt_to_pte_maddr(u32 va)
{
    pte_t l2e = l2e_of(va);
    if (!(l2e & _PAGE_PRESENT)) return 0;
    return (pte_mfn(l2e) << PAGE_SHIFT) | (TABLE_INDEX(va, PAGE_SHIFT) * sizeof(pte_t));
}
u32 virt_to_pte(u32 va)
{
    pte_t l2e = l2e_of(va);
    if (!(l2e & _PAGE_PRESENT)) return 0;
    return (u32)((pte_t *)table_va(pte_mfn(l2e)))[TABLE_INDEX(va, PAGE_SHIFT)];
}
u32 alloc_page_pfn(void)
{
    if (next_free_pfn >= si_u32(START_INFO_nr_pages)) panic("out of pages");
    return next_free_pfn++;
}
u32 *alloc_scratch_page(void)
{
    if (scratch_used >= 16) panic("out of scratch pages");
    u32 *p = (u32 *)scratch[scratch_used++];
    memset(p, 0, 4096);
    return p;
}

/* ---- start of day ---------------------------------------------------------------- */
/* The bootstrap region, from what the ABI promises (xen.h, "Start-of-day memory layout"):
 * it starts at the image's base, maps pfns 1:1 from 0, ends on a 4 MB boundary, and the
 * bootstrap page tables (pt_base, nr_pt_frames) map it and nothing else: its end is the
 * first directory slot from the base that maps nothing. */
u32 bootstrap_end(void)
{
    u32 va = KERNEL_VIRT_BASE;
    while (va < HYPERVISOR_VIRT_START && (l2e_of(va) & _PAGE_PRESENT))
        va += 1u << L2_PAGETABLE_SHIFT;
    return va;
}

/* Let ring 3 reach the image: Xen's builders map the region without _PAGE_USER in the L1
 * entries (domain_build.c L1_PROT: "no ring-3 access in initial leaf page tables"), so the
 * kernel grants it itself, page by page, and in the directory entries that lack it. */
static void image_user_access(void)
{
    struct { u64 ptr, val; } req[32];
    u32 n = 0;
    for (u32 va = KERNEL_VIRT_BASE; va < (u32)_end; va += PAGE_SIZE_BYTES) {
        pte_t l2e = l2e_of(va);
        if (!(l2e & _PAGE_USER)) {
            u32 slot = TABLE_INDEX(va, L2_PAGETABLE_SHIFT);
            struct { u64 ptr, val; } u = {
                ((u64)virt_to_mfn(directory(va)) << PAGE_SHIFT) | (slot * sizeof(pte_t)),
                l2e | _PAGE_USER };
            if (HYPERVISOR_mmu_update(&u, 1, NULL, DOMID_SELF))
                panic("cannot give ring 3 directory slot %u", slot);
        }
        u32 pte = virt_to_pte(va);
        if (pte & _PAGE_USER)
            continue;
        req[n].ptr = virt_to_pte_maddr(va);
        req[n].val = pte | _PAGE_USER;
        if (++n == 32) {
            if (HYPERVISOR_mmu_update(req, n, NULL, DOMID_SELF))
                panic("cannot give ring 3 the image");
            n = 0;
        }
    }
    if (n && HYPERVISOR_mmu_update(req, n, NULL, DOMID_SELF))
        panic("cannot give ring 3 the image");
}

void start_kernel(u8 *si)
{
    start_info = si;
    /* Frames beyond the bootstrap region are unmapped: the ones alloc_page_pfn hands out. */
    next_free_pfn = (bootstrap_end() - KERNEL_VIRT_BASE) >> PAGE_SHIFT;
    image_user_access();
    if (HYPERVISOR_update_va_mapping((u32)shared_info_page,
                                     si_u32(START_INFO_shared_info) | _PAGE_PRESENT | _PAGE_RW,
                                     UVMF_INVLPG))
        panic("cannot map shared_info");
    shared_info = shared_info_page;
    install_trap_table();
    printk("--- xenspec test: %s ---\n", test_title);
    test_main();
    xtf_exit();
}

/* ---- events (event_channel.h; delivery as xen.h describes shared_info) ---------------- */
volatile struct event_stats event_stats;
static event_handler_t event_handlers[NR_EVENT_CHANNELS];
extern char event_entry[], failsafe_entry[];

static long evtchn_port_op(u32 cmd, void *arg, u32 *port)
{
    long rc = HYPERVISOR_event_channel_op(cmd, arg);
    return rc ? rc : (long)*port;
}
long evtchn_alloc_unbound(u16 remote_dom)
{
    struct { u16 dom, remote_dom; u32 port; } a = { DOMID_SELF, remote_dom, 0 };
    return evtchn_port_op(EVTCHNOP_alloc_unbound, &a, &a.port);
}
long evtchn_bind_interdomain(u16 remote_dom, u32 remote_port)
{
    struct { u16 remote_dom, pad; u32 remote_port, local_port; } b = { remote_dom, 0,
                                                                        remote_port, 0 };
    return evtchn_port_op(EVTCHNOP_bind_interdomain, &b, &b.local_port);
}
long evtchn_bind_virq(u32 virq, u32 vcpu)
{
    struct { u32 virq, vcpu, port; } b = { virq, vcpu, 0 };
    return evtchn_port_op(EVTCHNOP_bind_virq, &b, &b.port);
}
long evtchn_bind_ipi(u32 vcpu)
{
    struct { u32 vcpu, port; } b = { vcpu, 0 };
    return evtchn_port_op(EVTCHNOP_bind_ipi, &b, &b.port);
}
long evtchn_send(u32 port) { return HYPERVISOR_event_channel_op(EVTCHNOP_send, &port); }
long evtchn_close(u32 port) { return HYPERVISOR_event_channel_op(EVTCHNOP_close, &port); }
long evtchn_unmask(u32 port) { return HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &port); }
long evtchn_status(u16 dom, u32 port, struct evtchn_status *out)
{
    memset(out, 0, sizeof(*out));
    out->dom = dom;
    out->port = port;
    return HYPERVISOR_event_channel_op(EVTCHNOP_status, out);
}

static volatile u32 *bitmap(unsigned offset) { return (volatile u32 *)(shared_info + offset); }
int evtchn_pending(u32 port)
{ return (bitmap(SHARED_INFO_evtchn_pending)[port / 32] >> (port % 32)) & 1; }
void evtchn_mask(u32 port)
{ __atomic_fetch_or(&bitmap(SHARED_INFO_evtchn_mask)[port / 32], 1u << (port % 32),
                    __ATOMIC_SEQ_CST); }
void evtchn_clear(u32 port)
{ __atomic_fetch_and(&bitmap(SHARED_INFO_evtchn_pending)[port / 32], ~(1u << (port % 32)),
                     __ATOMIC_SEQ_CST); }
volatile u8 *vcpu0_info(void) { return shared_info + SHARED_INFO_vcpu_info; }

void set_event_handler(u32 port, event_handler_t h)
{ if (port < NR_EVENT_CHANNELS) event_handlers[port] = h; }

/* The upcall: clear upcall_pending, take the selector, then each pending unmasked port. */
void do_upcall(struct trap_frame *f)
{
    volatile u8 *vi = vcpu0_info();
    event_stats.upcalls++;
    event_stats.last_cs = f->cs;
    event_stats.last_eflags = f->eflags;
    vi[VCPU_INFO_evtchn_upcall_pending] = 0;
    u32 sel = __atomic_exchange_n((volatile u32 *)(vi + VCPU_INFO_evtchn_pending_sel), 0,
                                  __ATOMIC_SEQ_CST);
    event_stats.last_sel = sel;
    while (sel) {
        u32 word = __builtin_ctz(sel);
        sel &= sel - 1;
        u32 bits = bitmap(SHARED_INFO_evtchn_pending)[word] & ~bitmap(SHARED_INFO_evtchn_mask)[word];
        while (bits) {
            u32 port = word * 32 + __builtin_ctz(bits);
            bits &= bits - 1;
            evtchn_clear(port);
            event_stats.count[port]++;
            if (event_handlers[port])
                event_handlers[port](port, f);
        }
    }
}

void events_mask_upcalls(int masked)
{
    vcpu0_info()[VCPU_INFO_evtchn_upcall_mask] = masked ? 1 : 0;
    /* Unmasked with an upcall pending: any hypercall returns through the upcall. */
    if (!masked && vcpu0_info()[VCPU_INFO_evtchn_upcall_pending])
        HYPERVISOR_xen_version(XENVER_version, NULL);
}

void events_enable(void)
{
    long rc = HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, (u32)event_entry, FLAT_KERNEL_CS,
                                       (u32)failsafe_entry);
    if (rc) panic("set_callbacks: %d", (int)rc);
    events_mask_upcalls(0);
}

/* ---- time (xen.h vcpu_time_info; wc_version, wc_sec, wc_nsec) ------------------------- */
u64 rdtsc(void)
{
    u32 lo, hi;
    asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (u64)hi << 32 | lo;
}

static volatile u32 *time_info(void)
{ return (volatile u32 *)(vcpu0_info() + VCPU_INFO_time); }
u32 time_info_version(void) { return time_info()[VCPU_TIME_version / 4]; }

/* ((delta << shift) * mul) >> 32 without a 64-bit division (Linux's scale_delta). */
static u64 scale_delta(u64 delta, u32 mul, int shift)
{
    delta = shift < 0 ? delta >> -shift : delta << shift;
    u64 product = ((u64)(u32)delta * mul) >> 32;
    return product + (u64)(u32)(delta >> 32) * mul;
}

u64 system_time_ns(void)
{
    volatile u32 *t = time_info();
    u32 version;
    u64 ns;
    do {
        version = t[VCPU_TIME_version / 4];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        u64 stamp = t[VCPU_TIME_tsc_timestamp / 4] | (u64)t[VCPU_TIME_tsc_timestamp / 4 + 1] << 32;
        u64 base = t[VCPU_TIME_system_time / 4] | (u64)t[VCPU_TIME_system_time / 4 + 1] << 32;
        u32 mul = t[VCPU_TIME_tsc_to_system_mul / 4];
        int shift = (signed char)((volatile u8 *)t)[VCPU_TIME_tsc_shift];
        ns = base + scale_delta(rdtsc() - stamp, mul, shift);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    } while ((version & 1) || version != t[VCPU_TIME_version / 4]);
    return ns;
}

void wallclock(u32 *sec, u32 *nsec, u32 *version)
{
    volatile u32 *w = (volatile u32 *)(shared_info + SHARED_INFO_wc_version);
    u32 v;
    do {
        v = w[0];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        *sec = w[1];
        *nsec = w[2];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    } while ((v & 1) || v != w[0]);
    *version = v;
}

/* ---- the store ring (io/xs_wire.h; the client side of xenstored's protocol) ------------- */
volatile u8 *mfn_to_virt(u32 mfn)
{ return (volatile u8 *)(KERNEL_VIRT_BASE + (((u32 *)MACH2PHYS_VIRT_START)[mfn] << PAGE_SHIFT)); }

/* SCHEDOP_poll on one port until it is pending or system time reaches deadline (0: none). */
static void evtchn_poll(u32 port, u64 deadline)
{
    volatile u8 *vi = vcpu0_info();
    u8 masked = vi[VCPU_INFO_evtchn_upcall_mask];
    struct { u32 ports, nr_ports, timeout_lo, timeout_hi; } poll =
        { (u32)&port, 1, (u32)deadline, (u32)(deadline >> 32) };
    vi[VCPU_INFO_evtchn_upcall_mask] = 1;   /* SCHEDOP_poll needs event delivery masked */
    HYPERVISOR_sched_op(SCHEDOP_poll, &poll);
    evtchn_clear(port);
    events_mask_upcalls(masked);
}
void evtchn_wait(u32 port) { evtchn_poll(port, 0); }

#define XS_IDX(page, off) (*(volatile u32 *)((page) + (off)))
static volatile u8 *xs_page(void) { return mfn_to_virt(si_u32(START_INFO_store_mfn)); }
static u32 xs_port(void) { return si_u32(START_INFO_store_evtchn); }

/* Copy len bytes into the request ring, waiting for room; notify after each piece. */
static void xs_send(const void *data, u32 len)
{
    volatile u8 *page = xs_page();
    const u8 *p = data;
    while (len) {
        u32 cons = XS_IDX(page, XENSTORE_req_cons), prod = XS_IDX(page, XENSTORE_req_prod);
        u32 room = XENSTORE_RING_SIZE - (prod - cons);
        if (!room) {
            evtchn_clear(xs_port());
            if (XS_IDX(page, XENSTORE_req_cons) == cons)
                evtchn_wait(xs_port());
            continue;
        }
        u32 start = prod & (XENSTORE_RING_SIZE - 1), n = XENSTORE_RING_SIZE - start;
        if (n > room) n = room;
        if (n > len) n = len;
        for (u32 i = 0; i < n; i++)
            page[XENSTORE_req + start + i] = p[i];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* the bytes before the index */
        XS_IDX(page, XENSTORE_req_prod) = prod + n;
        evtchn_send(xs_port());
        p += n;
        len -= n;
    }
}

/* Take len bytes from the response ring (into out, if not NULL), waiting for them. */
static void xs_recv(void *out, u32 len)
{
    volatile u8 *page = xs_page();
    u8 *p = out;
    while (len) {
        u32 cons = XS_IDX(page, XENSTORE_rsp_cons), prod = XS_IDX(page, XENSTORE_rsp_prod);
        u32 avail = prod - cons;
        if (!avail) {
            evtchn_clear(xs_port());
            if (XS_IDX(page, XENSTORE_rsp_prod) == prod)
                evtchn_wait(xs_port());
            continue;
        }
        __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* the index before the bytes */
        u32 start = cons & (XENSTORE_RING_SIZE - 1), n = XENSTORE_RING_SIZE - start;
        if (n > avail) n = avail;
        if (n > len) n = len;
        for (u32 i = 0; i < n; i++)
            if (p) p[i] = page[XENSTORE_rsp + start + i];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        XS_IDX(page, XENSTORE_rsp_cons) = cons + n;
        evtchn_send(xs_port());                      /* room for the daemon's next answer */
        if (p) p += n;
        len -= n;
    }
}

static const struct { const char *name; int errno; } xs_errors[] = {
    { "EINVAL", EINVAL }, { "EACCES", EACCES }, { "ENOENT", ENOENT }, { "ENOSYS", ENOSYS },
    { "EEXIST", EEXIST }, { "E2BIG", E2BIG }, { "ENOSPC", ENOSPC }, { "EIO", EIO },
    { "EAGAIN", EAGAIN }, { "EPERM", EPERM }, { "EBUSY", EBUSY },
};

struct xsd_hdr { u32 type, req_id, tx_id, len; };   /* io/xs_wire.h, struct xsd_sockmsg */

/* Watch events that arrive while an answer is awaited, kept for xenstore_event (the first
 * XS_EVENTS, each cut to XS_EVENT_MAX bytes; later ones are counted and dropped). */
#define XS_EVENTS 8
#define XS_EVENT_MAX 128
static struct { u32 len; char data[XS_EVENT_MAX]; } xs_event_q[XS_EVENTS];
static u32 xs_event_head, xs_event_count, xs_events_lost;
static char answer[XENSTORE_PAYLOAD_MAX + 1];

/* The next message from the ring: its header, its payload in answer (cut, NUL-terminated). */
static u32 xs_next(struct xsd_hdr *rsp)
{
    xs_recv(rsp, sizeof(*rsp));
    u32 keep = rsp->len > XENSTORE_PAYLOAD_MAX ? XENSTORE_PAYLOAD_MAX : rsp->len;
    xs_recv(answer, keep);
    xs_recv(NULL, rsp->len - keep);
    answer[keep] = 0;
    return keep;
}

static void xs_keep_event(u32 keep)
{
    if (xs_event_count == XS_EVENTS) {
        xs_events_lost++;
        return;
    }
    u32 slot = (xs_event_head + xs_event_count++) % XS_EVENTS;
    u32 n = keep < XS_EVENT_MAX ? keep : XS_EVENT_MAX;
    memcpy(xs_event_q[slot].data, answer, n);
    xs_event_q[slot].len = n;
}

static int xs_talk(u32 type, const char *path, const char *value, u32 vlen, char *buf, u32 len)
{
    static u32 req_id;
    u32 plen = strlen(path) + 1;
    if (plen + vlen > XENSTORE_PAYLOAD_MAX)
        return -E2BIG;
    struct xsd_hdr hdr = { type, ++req_id, 0, plen + vlen };
    xs_send(&hdr, sizeof(hdr));
    xs_send(path, plen);
    if (vlen)
        xs_send(value, vlen);
    struct xsd_hdr rsp;
    u32 keep;
    while ((keep = xs_next(&rsp)), rsp.type == XS_WATCH_EVENT && rsp.req_id == 0)
        xs_keep_event(keep);
    if (rsp.req_id != hdr.req_id)
        return -EIO;
    if (rsp.type == XS_ERROR) {
        for (u32 i = 0; i < sizeof(xs_errors) / sizeof(xs_errors[0]); i++)
            if (!strcmp(answer, xs_errors[i].name))
                return -xs_errors[i].errno;
        return -EIO;
    }
    if (buf && len) {
        u32 n = keep < len - 1 ? keep : len - 1;
        memcpy(buf, answer, n);
        buf[n] = 0;
    }
    return (int)keep;
}

int xenstore_talk(u32 type, const char *path, const char *value, char *buf, u32 len)
{
    return xs_talk(type, path, value, value ? strlen(value) : 0, buf, len);
}

int xenstore_watch(u32 type, const char *path, const char *token)
{
    int rc = xs_talk(type, path, token, strlen(token) + 1, NULL, 0);
    return rc < 0 ? rc : 0;
}

int xenstore_event(char *buf, u32 len, int wait)
{
    volatile u8 *page = xs_page();
    while (!xs_event_count) {
        if (!wait && XS_IDX(page, XENSTORE_rsp_prod) == XS_IDX(page, XENSTORE_rsp_cons))
            return -EAGAIN;
        struct xsd_hdr rsp;
        u32 keep = xs_next(&rsp);
        if (rsp.type != XS_WATCH_EVENT || rsp.req_id != 0)
            return -EIO;                             /* no request is waiting for an answer */
        xs_keep_event(keep);
    }
    u32 slot = xs_event_head, n = xs_event_q[slot].len < len ? xs_event_q[slot].len : len;
    memcpy(buf, xs_event_q[slot].data, n);
    xs_event_head = (xs_event_head + 1) % XS_EVENTS;
    xs_event_count--;
    return (int)n;
}

int xenstore_read(const char *path, char *buf, u32 len)
{ return xenstore_talk(XS_READ, path, NULL, buf, len); }

int xenstore_write(const char *path, const char *value)
{
    int rc = xenstore_talk(XS_WRITE, path, value, NULL, 0);
    return rc < 0 ? rc : 0;
}

/* ---- the console ring (io/console.h, struct xencons_interface) ------------------------ */
#define CONS_IDX(page, off) (*(volatile u32 *)((page) + (off)))
int xencons_write(const char *buf, u32 len)
{
    if (!si_u32(START_INFO_console_mfn))
        return -ENODEV;
    volatile u8 *page = mfn_to_virt(si_u32(START_INFO_console_mfn));
    u32 port = si_u32(START_INFO_console_evtchn), done = 0;
    while (done < len) {
        u32 cons = CONS_IDX(page, XENCONS_out_cons), prod = CONS_IDX(page, XENCONS_out_prod);
        if (prod - cons >= XENCONS_OUT_SIZE) {      /* full: wait for the daemon to take it */
            evtchn_clear(port);
            if (CONS_IDX(page, XENCONS_out_cons) == cons)
                evtchn_wait(port);
            continue;
        }
        while (done < len && prod - cons < XENCONS_OUT_SIZE)
            page[XENCONS_out + (prod++ & (XENCONS_OUT_SIZE - 1))] = buf[done++];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* the bytes before the index */
        CONS_IDX(page, XENCONS_out_prod) = prod;
        evtchn_send(port);
    }
    return (int)len;
}

int xencons_read(char *buf, u32 len)
{
    if (!si_u32(START_INFO_console_mfn))
        return -ENODEV;
    volatile u8 *page = mfn_to_virt(si_u32(START_INFO_console_mfn));
    u32 cons = CONS_IDX(page, XENCONS_in_cons), prod = CONS_IDX(page, XENCONS_in_prod), n = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    while (n < len && cons != prod)
        buf[n++] = page[XENCONS_in + (cons++ & (XENCONS_IN_SIZE - 1))];
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    CONS_IDX(page, XENCONS_in_cons) = cons;
    if (n)
        evtchn_send(si_u32(START_INFO_console_evtchn));
    return (int)n;
}

/* printk's copy in the ring. Never blocks for good: a line waits for room at most
 * CONS_WAIT_NS of system time (SCHEDOP_poll with a timeout, a bounded number of times); a
 * line the ring has no room for then is dropped and counted, and after such a wait the next
 * lines that do not fit are dropped at once until the back end is seen to take some. A line
 * goes in whole or not at all (the back end never sees half of one), and a printk from an
 * event handler that interrupts one in progress is dropped rather than corrupt the indexes.
 * The console port is masked once (the kernel polls it; no upcall counts change). */
#define CONS_WAIT_NS 1000000000ull
#define CONS_WAIT_POLLS 64
u32 console_ring_dropped;
static int cons_busy, cons_stalled, cons_masked;

static volatile u8 *cons_page(void)
{
    if (!shared_info || !si_u32(START_INFO_console_mfn)
        || (si_u32(START_INFO_flags) & SIF_INITDOMAIN))   /* dom0's console field differs */
        return NULL;
    return mfn_to_virt(si_u32(START_INFO_console_mfn));
}

/* Wait (bounded) until the ring's output half has room for len more bytes. */
static int cons_room(volatile u8 *page, u32 port, u32 len)
{
    u64 deadline = 0;
    for (int polls = 0;; polls++) {
        u32 cons = CONS_IDX(page, XENCONS_out_cons), prod = CONS_IDX(page, XENCONS_out_prod);
        if (prod - cons > XENCONS_OUT_SIZE)
            return 0;                                /* indexes gone wrong: not ours to fix */
        if (XENCONS_OUT_SIZE - (prod - cons) >= len) {
            cons_stalled = 0;
            return 1;
        }
        u64 now = system_time_ns();
        if (!deadline)
            deadline = now + CONS_WAIT_NS;
        if (cons_stalled || now >= deadline || polls == CONS_WAIT_POLLS) {
            cons_stalled = 1;
            return 0;
        }
        evtchn_clear(port);     /* then look again, so that no notification is lost */
        if (CONS_IDX(page, XENCONS_out_cons) == cons)
            evtchn_poll(port, deadline);
    }
}

int console_line(const char *buf, u32 len)
{
    volatile u8 *page = cons_page();
    if (!page)
        return -ENODEV;
    if (cons_busy || len > XENCONS_OUT_SIZE) {
        console_ring_dropped += len;
        return -EBUSY;
    }
    cons_busy = 1;
    u32 port = si_u32(START_INFO_console_evtchn);
    if (!cons_masked) {
        evtchn_mask(port);
        cons_masked = 1;
    }
    int rc = cons_room(page, port, len);
    if (rc) {
        u32 prod = CONS_IDX(page, XENCONS_out_prod);
        for (u32 i = 0; i < len; i++)
            page[XENCONS_out + ((prod + i) & (XENCONS_OUT_SIZE - 1))] = buf[i];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* the bytes before the index */
        CONS_IDX(page, XENCONS_out_prod) = prod + len;
        evtchn_send(port);
    } else {
        console_ring_dropped += len;
    }
    cons_busy = 0;
    return rc ? (int)len : -EAGAIN;
}

/* Wait (bounded as above) until the back end has taken everything written to the ring. */
void console_flush(void)
{
    volatile u8 *page = cons_page();
    if (page && !cons_busy)
        cons_room(page, si_u32(START_INFO_console_evtchn), XENCONS_OUT_SIZE);
}

/* ---- grant tables (grant_table.h, grant_table.c) --------------------------------------- */
static volatile u8 *gnttab_frame;

void gnttab_init(void)
{
    u32 frame = 0;
    struct { u16 dom, pad; u32 nr_frames; s16 status; u16 pad2; u32 frame_list; } st =
        { DOMID_SELF, 0, 1, 0, 0, (u32)&frame };
    long rc = HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    if (rc || st.status)
        panic("GNTTABOP_setup_table: %d, status %d", (int)rc, st.status);
    u32 *va = alloc_scratch_page();
    if (HYPERVISOR_update_va_mapping((u32)va, frame << PAGE_SHIFT | _PAGE_PRESENT | _PAGE_RW,
                                     UVMF_INVLPG))
        panic("cannot map the grant table frame %x", frame);
    gnttab_frame = (volatile u8 *)va;
}

volatile u16 *gnttab_flags(u32 ref)
{
    return (volatile u16 *)(gnttab_frame + ref * GRANT_ENTRY_SIZE);
}

void gnttab_grant_access(u32 ref, u16 domid, u32 mfn, int readonly)
{
    volatile u8 *e = gnttab_frame + ref * GRANT_ENTRY_SIZE;
    *(volatile u16 *)(e + 2) = domid;
    *(volatile u32 *)(e + 4) = mfn;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* the entry before the flags that enable it */
    *gnttab_flags(ref) = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

int gnttab_end_access(u32 ref)
{
    u16 flags = *gnttab_flags(ref);
    if (flags & (GTF_reading | GTF_writing))
        return -1;
    /* grant_table.h: invalidate with a compare-and-swap against the flags just read. */
    return __atomic_compare_exchange_n(gnttab_flags(ref), &flags, 0, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST) ? 0 : -1;
}

int gnttab_map(u32 ref, u16 dom, u32 host_addr, u32 flags, u32 *handle)
{
    struct gnttab_map_grant_ref op = { host_addr, flags, ref, dom, 0, 0, 0 };
    long rc = HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &op, 1);
    if (rc)
        panic("GNTTABOP_map_grant_ref: %d", (int)rc);
    if (handle)
        *handle = op.handle;
    return op.status;
}

int gnttab_unmap(u32 host_addr, u32 handle)
{
    struct gnttab_unmap_grant_ref op = { host_addr, 0, handle, 0, 0 };
    long rc = HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &op, 1);
    if (rc)
        panic("GNTTABOP_unmap_grant_ref: %d", (int)rc);
    return op.status;
}

u16 my_domid(void)
{
    struct evtchn_status st;
    long port = evtchn_alloc_unbound(DOMID_SELF);
    if (port < 0 || evtchn_status(DOMID_SELF, port, &st))
        panic("cannot learn our domain id");
    evtchn_close(port);
    return st.u.dom;
}

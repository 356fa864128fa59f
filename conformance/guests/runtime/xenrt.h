/* xenspec guest runtime: the interface test kernels use. */
#ifndef XENRT_H
#define XENRT_H
#include "xen_abi.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int s32;
typedef short s16;
typedef unsigned long size_t;
typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)
#define NULL ((void *)0)

/* The frame trap_common builds (low to high). */
struct trap_frame {
    u32 ds, es, ebp, edi, esi, edx, ecx, ebx, eax;
    u32 vector, error_code;
    u32 eip, cs, eflags;
    u32 esp, ss;                 /* only when the trap came from ring 3 */
};

#define FAULT_FLAG 0x80000000u
#define PAGE_SIZE_BYTES 4096u
#define KERNEL_VIRT_BASE 0xC0000000u  /* the image's VIRT_BASE (head.S notes, link.ld) */

/* head.S */
long hypercall(unsigned nr, u32 a1, u32 a2, u32 a3, u32 a4, u32 a5);
extern char hypercall_page[];
int enter_user(u32 eip, u32 esp);
void user_return(int code) __attribute__((noreturn));
u32 probe_read(u32 addr);
u32 probe_write(u32 addr, u32 value);
extern char _end[];

/* lib.c */
extern u8 *start_info;
extern volatile u8 *shared_info;
u32 si_u32(unsigned offset);
u32 read_cr2(void);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...);
void printk(const char *fmt, ...);
void *memset(void *p, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int memcmp(const void *a, const void *b, size_t n);
int strcmp(const char *a, const char *b);
/* shutdown prints "xenspec: shutdown NAME" (shutdown_announce) before SCHEDOP_shutdown. */
void shutdown(unsigned reason) __attribute__((noreturn));
void shutdown_announce(unsigned reason);
void panic(const char *fmt, ...) __attribute__((noreturn));

/* Results in XTF's words, then poweroff. */
void xtf_success(const char *msg) __attribute__((noreturn));
void xtf_failure(const char *fmt, ...);
void xtf_error(const char *fmt, ...);
void xtf_skip(const char *msg) __attribute__((noreturn));
void xtf_exit(void) __attribute__((noreturn));
extern int xtf_failures, xtf_errors;
#define check(cond, ...) do { if (!(cond)) xtf_failure(__VA_ARGS__); } while (0)

/* Traps: a handler returns to the trapping context after it edits the frame. */
typedef void (*trap_handler_t)(struct trap_frame *f);
void set_trap_handler(unsigned vector, trap_handler_t h);
void install_trap_table(void);
struct last_trap { u32 vector, error_code, cr2, eip, count; };
extern volatile struct last_trap last_trap;

/* Hypercall wrappers. */
static inline long HYPERVISOR_console_io(u32 cmd, u32 count, const void *buf)
{ return hypercall(__HYPERVISOR_console_io, cmd, count, (u32)buf, 0, 0); }
static inline long HYPERVISOR_sched_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_sched_op, cmd, (u32)arg, 0, 0, 0); }
static inline long HYPERVISOR_sched_op_compat(u32 cmd, u32 arg)
{ return hypercall(__HYPERVISOR_sched_op_compat, cmd, arg, 0, 0, 0); }
static inline long HYPERVISOR_xen_version(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_xen_version, cmd, (u32)arg, 0, 0, 0); }
static inline long HYPERVISOR_vm_assist(u32 cmd, u32 type)
{ return hypercall(__HYPERVISOR_vm_assist, cmd, type, 0, 0, 0); }
static inline long HYPERVISOR_set_trap_table(const void *table)
{ return hypercall(__HYPERVISOR_set_trap_table, (u32)table, 0, 0, 0, 0); }
static inline long HYPERVISOR_stack_switch(u32 ss, u32 esp)
{ return hypercall(__HYPERVISOR_stack_switch, ss, esp, 0, 0, 0); }
static inline long HYPERVISOR_set_callbacks(u32 ecs, u32 eeip, u32 fcs, u32 feip)
{ return hypercall(__HYPERVISOR_set_callbacks, ecs, eeip, fcs, feip, 0); }
static inline long HYPERVISOR_fpu_taskswitch(u32 set)
{ return hypercall(__HYPERVISOR_fpu_taskswitch, set, 0, 0, 0, 0); }
static inline long HYPERVISOR_set_gdt(const u32 *frames, u32 entries)
{ return hypercall(__HYPERVISOR_set_gdt, (u32)frames, entries, 0, 0, 0); }
static inline long HYPERVISOR_update_descriptor(u64 ma, u64 desc)
{ return hypercall(__HYPERVISOR_update_descriptor, (u32)ma, (u32)(ma >> 32),
                   (u32)desc, (u32)(desc >> 32), 0); }
static inline long HYPERVISOR_update_va_mapping(u32 va, u32 pte, u32 flags)
{ return hypercall(__HYPERVISOR_update_va_mapping, va, pte, 0, flags, 0); }
static inline long HYPERVISOR_mmu_update(const void *req, u32 count, u32 *done, u32 dom)
{ return hypercall(__HYPERVISOR_mmu_update, (u32)req, count, (u32)done, dom, 0); }
static inline long HYPERVISOR_mmuext_op(const void *op, u32 count, u32 *done, u32 dom)
{ return hypercall(__HYPERVISOR_mmuext_op, (u32)op, count, (u32)done, dom, 0); }

/* Events (event_channel.h) and time (xen.h vcpu_time_info, set_timer_op). */
#define EVENT_VECTOR 256          /* trap_frame.vector of an event upcall */
static inline long HYPERVISOR_event_channel_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_event_channel_op, cmd, (u32)arg, 0, 0, 0); }
static inline long HYPERVISOR_event_channel_op_compat(void *op)
{ return hypercall(__HYPERVISOR_event_channel_op_compat, (u32)op, 0, 0, 0, 0); }
static inline long HYPERVISOR_multicall(void *call_list, u32 nr_calls)
{ return hypercall(__HYPERVISOR_multicall, (u32)call_list, nr_calls, 0, 0, 0); }
static inline long HYPERVISOR_callback_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_callback_op, cmd, (u32)arg, 0, 0, 0); }
static inline long HYPERVISOR_vcpu_op(u32 cmd, u32 vcpuid, void *arg)
{ return hypercall(__HYPERVISOR_vcpu_op, cmd, vcpuid, (u32)arg, 0, 0); }
static inline long HYPERVISOR_set_timer_op(u64 deadline)
{ return hypercall(__HYPERVISOR_set_timer_op, (u32)deadline, (u32)(deadline >> 32), 0, 0, 0); }
struct evtchn_status { u16 dom, pad; u32 port, status, vcpu; union { u16 dom;
    struct { u16 dom, pad; u32 port; } interdomain; u32 virq; } u; };
/* Each returns the port (>= 0) or the negative errno. */
long evtchn_alloc_unbound(u16 remote_dom);
long evtchn_bind_interdomain(u16 remote_dom, u32 remote_port);
long evtchn_bind_virq(u32 virq, u32 vcpu);
long evtchn_bind_ipi(u32 vcpu);
/* These return 0 or the negative errno. */
long evtchn_send(u32 port);
long evtchn_close(u32 port);
long evtchn_unmask(u32 port);
long evtchn_status(u16 dom, u32 port, struct evtchn_status *out);
/* shared_info bits of a port; vCPU 0's vcpu_info. */
int evtchn_pending(u32 port);
void evtchn_mask(u32 port);
void evtchn_clear(u32 port);
volatile u8 *vcpu0_info(void);
/* Register event_entry as the event callback and let upcalls in (forcing one if pending). */
void events_enable(void);
void events_mask_upcalls(int masked);
typedef void (*event_handler_t)(u32 port, struct trap_frame *f);
void set_event_handler(u32 port, event_handler_t h);
struct event_stats { u32 upcalls, last_sel, last_cs, last_eflags; u32 count[NR_EVENT_CHANNELS]; };
extern volatile struct event_stats event_stats;
/* Time: the TSC and Xen system time computed from vcpu_time_info, wallclock. */
u64 rdtsc(void);
u64 system_time_ns(void);
u32 time_info_version(void);
void wallclock(u32 *sec, u32 *nsec, u32 *version);

/* Memory: pseudo-physical <-> machine, and the page-table entry that maps a VA. */
u32 pfn_to_mfn(u32 pfn);
u32 virt_to_mfn(const void *va);
u32 virt_to_pte(u32 va);          /* read through the L2 at pt_base; 0 if not mapped */
u32 virt_to_pte_maddr(u32 va);    /* machine address of that L1 entry; 0 if none */
u32 alloc_page_pfn(void);         /* a pseudo-physical frame outside the bootstrap region */
u32 bootstrap_end(void);          /* the end of the bootstrap region (a 4 MB boundary) */
extern u32 boot_esp;              /* ESP at entry: the top of the boot stack */
u32 *alloc_scratch_page(void);    /* a zeroed writable page inside the image */

/* The store (io/xs_wire.h) and the PV console ring (io/console.h), in the frames start_info
 * names; each waits on its event channel (SCHEDOP_poll) for answers or room. */
volatile u8 *mfn_to_virt(u32 mfn);  /* a frame of the bootstrap region, through the M2P */
void evtchn_wait(u32 port);         /* poll the port with upcalls masked, then clear it */
/* A request of type XS_*: path (and value, if not NULL); the answer goes to buf (len bytes,
 * NUL-terminated, truncated). Returns the answer's length or -errno (from XS_ERROR). */
int xenstore_talk(u32 type, const char *path, const char *value, char *buf, u32 len);
int xenstore_read(const char *path, char *buf, u32 len);  /* the value's length or -errno */
int xenstore_write(const char *path, const char *value);  /* 0 or -errno */
/* XS_WATCH or XS_UNWATCH of path with token ("path\0token\0"): 0 or -errno. Watch events
 * (XS_WATCH_EVENT, req_id 0) that come while an answer is awaited are kept, in order;
 * xenstore_event takes the next one ("path\0token\0", cut to len; its length), waiting for
 * one if wait is nonzero, else -EAGAIN when there is none. */
int xenstore_watch(u32 type, const char *path, const char *token);
int xenstore_event(char *buf, u32 len, int wait);
/* The console ring: write all of buf (waiting for room); read what has arrived (no wait). */
int xencons_write(const char *buf, u32 len);              /* len, or -ENODEV without a ring */
int xencons_read(char *buf, u32 len);                     /* bytes read, or -ENODEV */
extern int printk_ring;             /* nonzero: printk writes to the ring alone */
/* printk's line in the ring: len, or -ENODEV without a ring, -EAGAIN if dropped for want of
 * room after a bounded wait, -EBUSY if another is in progress (counted in console_ring_dropped). */
int console_line(const char *buf, u32 len);
void console_flush(void);           /* wait (bounded) until the back end took all of the ring */
extern u32 console_ring_dropped;

/* Grant tables (grant_table.h, version-1 entries). gnttab_init maps the first shared frame
 * (refs 0..511) over a scratch page; an entry is written domid and frame first, flags last. */
static inline long HYPERVISOR_grant_table_op(u32 cmd, void *uop, u32 count)
{ return hypercall(__HYPERVISOR_grant_table_op, cmd, (u32)uop, count, 0, 0); }
struct gnttab_map_grant_ref { u64 host_addr; u32 flags, ref; u16 dom; s16 status; u32 handle;
    u64 dev_bus_addr; } __attribute__((packed));
struct gnttab_unmap_grant_ref { u64 host_addr, dev_bus_addr; u32 handle; s16 status;
    u16 pad; } __attribute__((packed));
void gnttab_init(void);
volatile u16 *gnttab_flags(u32 ref);     /* the entry's flags, as Xen updates them */
void gnttab_grant_access(u32 ref, u16 domid, u32 mfn, int readonly);
int gnttab_end_access(u32 ref);          /* 0, or -1 while the grantee still has it mapped */
/* Each returns the GNTST_* status; the handle comes back through *handle. */
int gnttab_map(u32 ref, u16 dom, u32 host_addr, u32 flags, u32 *handle);
int gnttab_unmap(u32 host_addr, u32 handle);
u16 my_domid(void);                      /* through an unbound port offered to ourselves */

/* Each test kernel provides this. */
/* A macro's value as a string, for asm operands built from ABI constants. */
#define STR(x) #x
#define XSTR(x) STR(x)

/* ---- segment descriptors (desc.h layout) --------------------------------------------- */
/* A descriptor with base, 20-bit limit and the high-word flags (type, S, DPL, P, D/B, G). */
static inline u64 mkdesc(u32 base, u32 limit, u32 flags)
{
    u32 lo = (limit & 0xffff) | (base << 16);
    u32 hi = ((base >> 16) & 0xff) | (limit & 0xf0000) | (base & 0xff000000) | flags;
    return ((u64)hi << 32) | lo;
}
static inline void set_desc(u32 *table, int i, u64 d)
{
    table[2 * i] = (u32)d;
    table[2 * i + 1] = (u32)(d >> 32);
}
struct mmuext_op { u32 cmd, arg1, arg2; };   /* xen.h, struct mmuext_op (x86_32) */
static inline long set_ldt(u32 base, u32 ents)
{
    struct mmuext_op op = { MMUEXT_SET_LDT, base, ents };
    return HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

void test_main(void);
extern const char test_title[];
#endif

/* Random code next to a victim (tests/test_hostile.py). The command line picks the role:
 *   random SEED RING TRAPS  fill two pages with random x86-32 bytes drawn from SEED (plain
 *                           random bytes and pieces of the instructions that reach the
 *                           hypervisor: hypercalls with random registers, software
 *                           interrupts, iret and far transfers, segment, descriptor-table and
 *                           control-register loads, I/O and other privileged instructions)
 *                           and run them in ring RING (1 or 3); after every trap jump to
 *                           another random place with random registers (now and then with
 *                           random selectors, flags or fresh bytes), and power off after TRAPS
 *                           traps. What the random code does to this kernel is its own affair.
 *   victim ROUNDS           compute over a pattern in its memory, ROUNDS times, yielding in
 *                           between, and check each time that its memory, its page directory,
 *                           the entries mapping the pattern and the hypervisor's answer to
 *                           xen_version are as they were: another domain's code must not
 *                           change any of them (the paper's isolation, SOSP'03 s2).
 * The seed is the whole input: the same command line replays the same run. */
#include "xenrt.h"

const char test_title[] = "hostile: random code in ring 1 and ring 3, and its victim";

#define CODE_BYTES (2 * 4096)
static u8 code[CODE_BYTES] __attribute__((aligned(4096)));
static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[2 * 4096] __attribute__((aligned(4096)));
static u32 rng, traps_left, ring;

static const char *cmdline(void) { return (const char *)(start_info + START_INFO_cmd_line); }

static const char *number(const char *s, u32 *out)
{
    u32 n = 0;
    while (*s == ' ')
        s++;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (u32)(*s++ - '0');
    *out = n;
    return s;
}

static u32 next(void)  /* xorshift32 */
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* Pieces of instructions; 0xAA bytes are filled with random immediates. */
static const struct { u8 len; u8 b[7]; } pieces[] = {
    { 7, { 0xb8, 0xAA, 0, 0, 0, 0xcd, 0x82 } },  /* mov $nr,%eax; int $0x82 (nr < 64) */
    { 2, { 0xcd, 0x82 } },                  /* int $0x82 with what eax holds */
    { 2, { 0xcd, 0x80 } },                  /* int $0x80 */
    { 2, { 0xcd, 0xAA } },                  /* int $n */
    { 1, { 0xcc } }, { 1, { 0xce } }, { 2, { 0xcd, 0x20 } },
    { 1, { 0xcf } },                        /* iret */
    { 2, { 0x66, 0xcf } },                  /* iretw */
    { 1, { 0xcb } }, { 3, { 0xca, 0x08, 0x00 } },       /* lret */
    { 7, { 0xea, 0, 0, 0, 0, 0xAA, 0xAA } },            /* ljmp $sel,$0 */
    { 7, { 0x9a, 0, 0, 0, 0, 0xAA, 0xAA } },            /* lcall $sel,$0 */
    { 2, { 0x8e, 0xd8 } }, { 2, { 0x8e, 0xc0 } },       /* mov %eax,%ds / %es */
    { 2, { 0x8e, 0xe0 } }, { 2, { 0x8e, 0xe8 } },       /* %fs / %gs */
    { 2, { 0x8e, 0xd0 } }, { 1, { 0x1f } }, { 1, { 0x07 } }, { 1, { 0x17 } },
    { 3, { 0x0f, 0x01, 0x10 } }, { 3, { 0x0f, 0x01, 0x18 } },   /* lgdt, lidt (%eax) */
    { 3, { 0x0f, 0x00, 0xd8 } }, { 3, { 0x0f, 0x00, 0xd0 } },   /* ltr, lldt %ax */
    { 3, { 0x0f, 0x01, 0x00 } }, { 3, { 0x0f, 0x00, 0xc0 } },   /* sgdt, sldt */
    { 3, { 0x0f, 0x02, 0xc0 } }, { 3, { 0x0f, 0x03, 0xc0 } },   /* lar, lsl */
    { 1, { 0xfa } }, { 1, { 0xfb } }, { 1, { 0xf4 } }, { 1, { 0x9c } }, { 1, { 0x9d } },
    { 2, { 0xe4, 0xAA } }, { 2, { 0xe6, 0xAA } }, { 1, { 0xec } }, { 1, { 0xee } },
    { 1, { 0x6c } }, { 1, { 0x6e } }, { 2, { 0xf3, 0x6c } }, { 2, { 0xf3, 0x6e } },
    { 3, { 0x0f, 0x20, 0xc0 } }, { 3, { 0x0f, 0x22, 0xd8 } },   /* mov %cr0,%eax; %eax,%cr3 */
    { 3, { 0x0f, 0x21, 0xf8 } }, { 3, { 0x0f, 0x23, 0xf8 } },   /* mov %dr7 */
    { 2, { 0x0f, 0x32 } }, { 2, { 0x0f, 0x30 } }, { 2, { 0x0f, 0x31 } },  /* rdmsr wrmsr rdtsc */
    { 2, { 0x0f, 0x06 } }, { 2, { 0x0f, 0x09 } }, { 2, { 0x0f, 0x08 } },  /* clts wbinvd invd */
    { 3, { 0x0f, 0x01, 0x38 } },            /* invlpg (%eax) */
    { 2, { 0x0f, 0x34 } }, { 2, { 0x0f, 0x05 } }, { 2, { 0x0f, 0x0b } }, { 2, { 0x0f, 0xa2 } },
    { 2, { 0x89, 0x00 } }, { 2, { 0x8b, 0x00 } },       /* mov %eax,(%eax); mov (%eax),%eax */
    { 2, { 0x89, 0x03 } }, { 2, { 0x89, 0x0b } },       /* stores through ebx, ebx */
    { 2, { 0xff, 0xe0 } }, { 2, { 0xff, 0xd0 } },       /* jmp *%eax; call *%eax */
    { 2, { 0xd9, 0xee } }, { 2, { 0x0f, 0x77 } },       /* fldz, emms: the FPU */
    { 2, { 0x8c, 0xc8 } }, { 3, { 0x0f, 0xa1, 0xc3 } }, /* mov %cs,%eax; pop %fs; ret */
    { 1, { 0xc3 } }, { 2, { 0xf0, 0x90 } }, { 2, { 0xeb, 0xfe } },        /* ret; lock nop; jmp . */
};
#define NPIECES (sizeof(pieces) / sizeof(pieces[0]))

static const u16 selectors[] = {
    0, 1, 3, FLAT_RING1_CS, FLAT_RING1_DS, FLAT_RING3_CS, FLAT_RING3_DS, FLAT_RING1_CS & ~3,
    FLAT_RING1_DS & ~3, FLAT_RING3_CS & ~3, 0xe008, 0xe010, 0xe011, 0x0b, 0x0f, 0x13, 0x17,
    0x1b, 0xfffc, 0xffff, 0x0007, 0x000c,
};
#define NSEL (sizeof(selectors) / sizeof(selectors[0]))

static u32 interesting(void)
{
    switch (next() % 12) {
    case 0: return 0;
    case 1: return next() % 64;
    case 2: return (u32)code + next() % CODE_BYTES;
    case 3: return 0xffffffffu;
    case 4: return 0x80000000u + (next() & 1);
    case 5: return 0xfc000000u + (next() & 0x3fffffc);         /* the hypervisor hole */
    case 6: return si_u32(START_INFO_pt_base) + (next() & 0xffc);  /* own page directory */
    case 7: return (u32)user_stack + (next() & 0x1ffc);
    case 8: return selectors[next() % NSEL];
    case 9: return (u32)hypercall_page + (next() & 0xfe0);
    default: return next();
    }
}

static void fill(void)
{
    u32 i = 0;
    while (i < CODE_BYTES) {
        if (next() % 5 < 2) {
            code[i++] = (u8)next();
            continue;
        }
        u32 p = next() % NPIECES;
        for (u32 k = 0; k < pieces[p].len && i < CODE_BYTES; k++, i++)
            code[i] = pieces[p].b[k] == 0xAA ? (u8)(p == 0 ? next() % 64 : next())
                                             : pieces[p].b[k];
    }
}

/* The way into the random bytes: the registers and stack come from here, so that a trap
 * leaves nothing of the random code's own state to the next attempt. The trampoline is
 * copied into user_area, which ring 3 may use (the rest of the kernel is supervisor-only in
 * ring-3 runs), and reads its registers from there: eax ebx ecx edx esi edi ebp esp eip. */
static u32 user_area[1024] __attribute__((aligned(4096)));
#define TRAMP_OFFSET 256
extern char tramp[], tramp_end[];
asm(".text\n"
    "tramp:\n"
    "    movl user_area + 28, %esp\n"
    "    movl user_area + 4, %ebx\n"
    "    movl user_area + 8, %ecx\n"
    "    movl user_area + 12, %edx\n"
    "    movl user_area + 16, %esi\n"
    "    movl user_area + 20, %edi\n"
    "    movl user_area + 24, %ebp\n"
    "    movl user_area, %eax\n"
    "    jmp *user_area + 32\n"
    "tramp_end:\n");

static u32 tramp_entry(void)
{
    memcpy((u8 *)user_area + TRAMP_OFFSET, tramp, (u32)(tramp_end - tramp));
    return (u32)user_area + TRAMP_OFFSET;
}

/* Ring 3 may touch only the code pages, its stack and user_area: clear _PAGE_USER on every
 * other page of the image (the runtime gives ring 3 the whole image at start of day). */
static void protect_kernel(void)
{
    for (u32 va = KERNEL_VIRT_BASE; va < (u32)_end; va += 4096) {
        int user = (va >= (u32)code && va < (u32)code + CODE_BYTES)
            || (va >= (u32)user_stack && va < (u32)user_stack + sizeof(user_stack))
            || va == (u32)user_area;
        u32 pte = virt_to_pte(va);
        if (!user && (pte & _PAGE_USER)
            && HYPERVISOR_update_va_mapping(va, pte & ~_PAGE_USER, UVMF_INVLPG))
            panic("cannot protect %x", va);
    }
}

static u32 stack_top(void)
{
    return ring == 3 ? (u32)user_stack + sizeof(user_stack) - 64
                     : (u32)trap_stack + sizeof(trap_stack) / 2;
}

static void shuffle(void)
{
    for (int r = 0; r < 7; r++)
        user_area[r] = interesting();
    user_area[7] = next() % 8 ? stack_top() : interesting();
    user_area[8] = (u32)code + next() % CODE_BYTES;
}

static void on_trap(struct trap_frame *f)
{
    if (--traps_left == 0) {
        printk("random code: done\n");
        shutdown(SHUTDOWN_poweroff);
    }
    if (next() % 32 == 0)
        fill();
    shuffle();
    f->eip = tramp_entry();
    if (ring == 3) {
        f->cs = FLAT_USER_CS;
        f->ss = FLAT_USER_SS;
        f->esp = stack_top();
        f->ds = f->es = FLAT_USER_DS;
    } else {
        f->cs = FLAT_KERNEL_CS;
        f->ds = f->es = FLAT_KERNEL_DS;
    }
    f->eflags = X86_EFLAGS_IF | X86_EFLAGS_MBS;
    switch (next() % 64) {  /* now and then a hostile frame for the return itself */
    case 0: f->cs = selectors[next() % NSEL]; break;
    case 1: f->ds = selectors[next() % NSEL]; f->es = selectors[next() % NSEL]; break;
    case 2: f->eflags = next(); break;
    case 3: if (ring == 3) f->ss = selectors[next() % NSEL]; break;
    default: break;
    }
}

static void attack(const char *args)
{
    u32 seed;
    args = number(args, &seed);
    args = number(args, &ring);
    number(args, &traps_left);
    rng = seed * 2654435761u + 1;
    if (!rng)
        rng = 1;
    if (!traps_left)
        traps_left = 100;
    for (unsigned v = 0; v < 20; v++)
        set_trap_handler(v, on_trap);
    set_trap_handler(32, on_trap);
    set_trap_handler(SYSCALL_VECTOR, on_trap);
    HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack));
    printk("random code: seed %u, ring %u, %u traps\n", seed, ring, traps_left);
    if (ring == 3)
        protect_kernel();
    fill();
    shuffle();
    if (ring == 3)
        enter_user(tramp_entry(), stack_top());
    else
        asm volatile("jmp *%0" : : "r"(tramp_entry()) : "memory");
    panic("the random code returned");
}

/* ---- the victim ---------------------------------------------------------------------- */
static u32 pattern[4096] __attribute__((aligned(4096)));
static u32 pd_copy[1024];
static u32 pte_copy[4];
static volatile u32 sink;

static u32 pattern_word(u32 i) { return (i + 1) * 2654435761u ^ 0x5a5aa5a5u; }

static void victim(const char *args)
{
    u32 rounds;
    number(args, &rounds);
    u32 *pd = (u32 *)si_u32(START_INFO_pt_base);
    for (u32 i = 0; i < 4096; i++)
        pattern[i] = pattern_word(i);
    memcpy(pd_copy, pd, sizeof(pd_copy));
    for (u32 p = 0; p < 4; p++)
        pte_copy[p] = virt_to_pte((u32)pattern + p * 4096);
    long version = HYPERVISOR_xen_version(XENVER_version, NULL);
    for (u32 r = 0; r < rounds; r++) {
        u32 acc = 0;
        for (u32 k = 0; k < 200000; k++)
            acc += pattern[k & 4095] * k;
        sink = acc;
        for (u32 i = 0; i < 4096; i++)
            check(pattern[i] == pattern_word(i), "round %u: word %u of the pattern changed",
                  r, i);
        check(!memcmp(pd_copy, pd, sizeof(pd_copy)), "round %u: the page directory changed", r);
        for (u32 p = 0; p < 4; p++)
            check(virt_to_pte((u32)pattern + p * 4096) == pte_copy[p],
                  "round %u: the mapping of pattern page %u changed", r, p);
        check(HYPERVISOR_xen_version(XENVER_version, NULL) == version,
              "round %u: xen_version changed", r);
        printk("victim round %u: ok\n", r);
        HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    }
}

void test_main(void)
{
    const char *c = cmdline();
    if (!memcmp(c, "random ", 7))
        attack(c + 7);
    else if (!memcmp(c, "victim ", 7))
        victim(c + 7);
    else
        xtf_error("command line: random SEED RING TRAPS, or victim ROUNDS");
}

/*
 * The CPU substrate's instruction counter (see refmodel/cpu.py, "Counting instructions").
 *
 * A Unicorn UC_HOOK_BLOCK callback in C: at the start of every translation block it adds the
 * block's instruction count to the running total or, once the total has reached the slice's
 * limit, asks the engine to stop before the block runs. A block's count
 * comes from Unicorn's own translation (UC_CTL_TB_REQUEST_CACHE, uc_tb.icount) the first time
 * the block is seen, and from a small direct-mapped cache after that. The cache is keyed by
 * the block's address, its size and a generation number that the substrate bumps when a new
 * page-table base is loaded or the translation cache is dropped. Code rewritten in place
 * (or remapped without either) into a block of the same address and size keeps the count
 * cached for the old one: still deterministic, not exact.
 *
 * Before counting, the callback reads the engine's EFLAGS (env->eflags, at an address the
 * substrate found): a block about to run with a flag the guest may never have (VM, IOPL) is
 * refused, the engine is asked to stop and the flags are kept for the substrate to see, so
 * that no instruction of it runs (the substrate crashes the domain).
 *
 * The engine's functions are called through pointers the substrate fills in, so this file
 * needs no Unicorn header and no link against the library: the process has one copy of it.
 */
#include <stdint.h>

#define XS_SLOTS 4096

typedef struct xs_uc_tb {        /* Unicorn 2.1's uc_tb */
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
} xs_uc_tb;

typedef int (*xs_uc_ctl_t)(void *uc, int control, ...);
typedef int (*xs_uc_emu_stop_t)(void *uc);

struct xs_counter {
    uint64_t insns;              /* instructions of the blocks entered in this run */
    uint64_t limit;              /* stop once insns reaches this */
    uint64_t generation;         /* bumped by the substrate: cached counts are void */
    uint64_t misses;             /* blocks whose count was asked of the engine */
    xs_uc_ctl_t uc_ctl;
    xs_uc_emu_stop_t uc_emu_stop;
    int request_cache;           /* UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2) */
    int pad;
    const volatile uint64_t *eflags;  /* the engine's env->eflags, or NULL */
    uint64_t eflags_never;       /* flags no guest block may start with */
    uint64_t eflags_refused;     /* the flags of the block refused, 0 if none */
    uint64_t tag[XS_SLOTS];      /* address << 16 | size, plus one (0: empty) */
    uint64_t gen[XS_SLOTS];      /* the generation the slot was filled in */
    uint32_t count[XS_SLOTS];
};

static uint32_t xs_block_insns(void *uc, struct xs_counter *c, uint64_t addr, uint32_t size)
{
    uint64_t tag = ((addr << 16) | size) + 1;
    unsigned slot = (unsigned)((addr ^ (addr >> 12) ^ ((uint64_t)size << 5)) & (XS_SLOTS - 1));
    xs_uc_tb tb;

    if (c->tag[slot] == tag && c->gen[slot] == c->generation)
        return c->count[slot];
    c->misses++;
    if (c->uc_ctl(uc, c->request_cache, addr, &tb) != 0 || tb.icount == 0)
        return 1;  /* not cached: count the block as one instruction, do not remember */
    c->tag[slot] = tag;
    c->gen[slot] = c->generation;
    c->count[slot] = tb.icount;
    return tb.icount;
}

void xs_count_block(void *uc, uint64_t addr, uint32_t size, void *user)
{
    struct xs_counter *c = user;

    if (c->eflags && (*c->eflags & c->eflags_never)) {
        c->eflags_refused = *c->eflags;
        c->uc_emu_stop(uc);
        return;
    }
    /* A block whose hook asks the engine to stop does not run (the exit check follows the
     * hook), so it is not counted. */
    if (c->insns >= c->limit) {
        c->uc_emu_stop(uc);
        return;
    }
    c->insns += xs_block_insns(uc, c, addr, size);
}

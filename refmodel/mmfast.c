/*
 * The common case of an mmu_update batch entry in C: the twin of MM.mmu_update_common in
 * refmodel/mm.py, which is the readable reference (and which is fused from mm.c's
 * do_mmu_update -> mod_l1_entry -> get_page_from_l1e / put_page_from_l1e of Xen 3.0.4).
 * tests/test_mm_native.py holds the two to the same result, state and memory.
 *
 * xs_mmu_update_common handles mmu_update_t records (uint64 ptr, uint64 val, little-endian)
 * in order, reading each from machine memory when it comes to it (an earlier record may have
 * written the page a later one is in), and stops at the first record that is not the common
 * case: MMU_NORMAL_PT_UPDATE of an entry of a validated L1 table the domain owns and uses, to
 * a value that is not present, or that keeps the entry's references, or that maps a frame of
 * FOREIGNDOM that is in use; replacing an entry whose references go without freeing or
 * retyping its frame. Unlike the Python it also stops before a writable map that would give
 * a frame the writable type (get_page_type's type change flushes the owner's TLBs, which is
 * the Python's to do). Every record it stops at goes to the Python, which decides it.
 *
 * Every index is checked against the frame count before it is used: no record, whatever its
 * contents, makes this code read or write outside the arrays it is given.
 */
#include <stdint.h>
#include <string.h>

struct xs_mm {
    uint32_t *words;          /* machine memory as 32-bit words */
    int32_t *owner;           /* the frame table (refmodel/memory.py, FrameTable) */
    uint32_t *count;
    uint8_t *type;
    uint32_t *type_count;
    uint64_t nr_frames;
    int32_t domid;            /* the domain issuing the batch */
    int32_t fd_domid;         /* FOREIGNDOM: the domain whose frames new entries map */
    uint32_t count_max;       /* the bounds below which no reference overflows */
    uint32_t type_count_max;
    uint32_t disallow;        /* L1_DISALLOW_MASK */
    uint32_t compare;         /* FASTPATH_COMPARE: the bits entry_has_changed compares */
    uint8_t t_l1, t_writable, t_ldt, pad;
};

#define PAGE_SHIFT 12
#define PRESENT 0x001u
#define RW 0x002u
#define CMD_MASK 3u
#define ENTRIES 1024u

static uint64_t le64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);   /* x86 hosts: little-endian, as the guest wrote it */
    return x;
}

static int counted(const struct xs_mm *m, uint64_t f)
{
    return m->count[f] > 0 && m->count[f] < m->count_max;
}

/* put_page_from_l1e of the present entry only lowers counts (MM._drops_plainly). */
static int drops_plainly(const struct xs_mm *m, uint32_t l1e)
{
    uint64_t f = l1e >> PAGE_SHIFT;
    if (f >= m->nr_frames)
        return 1;
    if (m->count[f] < 2)
        return 0;
    if (l1e & RW)
        return m->type_count[f] >= 1;
    return !(m->type[f] == m->t_ldt && m->type_count[f]);
}

/* One record: 1 if done, 0 if it is not the common case (nothing was changed). */
static int one(const struct xs_mm *m, uint64_t ptr, uint32_t val)
{
    uint64_t mfn = (ptr >> PAGE_SHIFT) & 0xFFFFFFFFu;
    if ((ptr & CMD_MASK) != 0 || mfn >= m->nr_frames || m->type[mfn] != m->t_l1
            || m->owner[mfn] != m->domid || !counted(m, mfn)
            || !(m->type_count[mfn] > 0 && m->type_count[mfn] < m->type_count_max))
        return 0;
    uint32_t *at = &m->words[mfn * ENTRIES + ((ptr & 0xFFF) >> 2)];
    uint32_t old = *at;
    uint64_t nw = val >> PAGE_SHIFT;
    if (val & PRESENT) {
        if (val & m->disallow)
            return 0;
        if (!((old ^ val) & m->compare)) {   /* entry_has_changed, written out */
            *at = val;
            return 1;
        }
        if (nw >= m->nr_frames || m->owner[nw] != m->fd_domid || !counted(m, nw))
            return 0;
        if ((val & RW) && (m->type_count[nw] >= m->type_count_max
                           || m->type[nw] != m->t_writable))
            return 0;   /* a type change, or a type that refuses the writable one */
    }
    if ((old & PRESENT) && !drops_plainly(m, old))
        return 0;
    if (val & PRESENT) {
        m->count[nw] += 1;
        if (val & RW)
            m->type_count[nw] += 1;
    }
    *at = val;
    if (old & PRESENT) {
        uint64_t gone = old >> PAGE_SHIFT;
        if (gone < m->nr_frames) {
            if (old & RW)
                m->type_count[gone] -= 1;
            m->count[gone] -= 1;
        }
    }
    return 1;
}

/* Records at machine address ``maddr`` (``n`` of them, all inside memory of ``mem_bytes``),
 * handled in order while each is the common case; returns how many were done. */
int xs_mmu_update_common(const struct xs_mm *m, uint64_t mem_bytes, uint64_t maddr, int n)
{
    const uint8_t *mem = (const uint8_t *)m->words;
    int done = 0;
    if (n <= 0 || maddr > mem_bytes || (uint64_t)n * 16 > mem_bytes - maddr)
        return 0;
    for (; done < n; done++) {
        const uint8_t *r = mem + maddr + (uint64_t)done * 16;
        if (!one(m, le64(r), (uint32_t)le64(r + 8)))
            break;
    }
    return done;
}

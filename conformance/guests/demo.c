/* The demo: a ring-1 kernel runs a ring-3 process that talks to it through int $0x80 system
 * calls, and gives it memory on demand from the page-fault handler: a fresh page table is
 * zeroed, pinned and hooked into the page directory with mmu_update, then each faulting page
 * gets a frame, all validated by the hypervisor. At exit the kernel takes the memory back. */
#include "xenrt.h"

const char test_title[] = "demo: a ring-3 process with demand paging";

#define HEAP_START 0x40000000u
#define HEAP_PAGES 24u
#define PROC_PTE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY)

struct mmu_update { u64 ptr, val; };

static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[8192] __attribute__((aligned(4096)));
static u32 *window;                      /* a kernel page remapped to zero new frames */
static u32 heap_l1_mfn, heap_frames[HEAP_PAGES], heap_mapped;
static u32 nr_faults, nr_syscalls;

static void mmu_set(u32 table_mfn, u32 index, u32 val)
{
    struct mmu_update u = { ((u64)table_mfn << PAGE_SHIFT) | (index * 4), val };
    u32 done = 0;
    long rc = HYPERVISOR_mmu_update(&u, 1, &done, DOMID_SELF);
    if (rc || done != 1)
        panic("mmu_update(%x[%u] = %x): %d", table_mfn, index, val, (int)rc);
}

static void mmuext(u32 cmd, u32 mfn)
{
    struct mmuext_op op = { cmd, mfn, 0 };
    long rc = HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);
    if (rc)
        panic("mmuext_op(%u, %x): %d", cmd, mfn, (int)rc);
}

static u32 fresh_frame(void)
{
    /* Map the frame at the window, zero it, and give the window its own frame back. */
    u32 mfn = pfn_to_mfn(alloc_page_pfn());
    u32 old = virt_to_pte((u32)window);
    if (HYPERVISOR_update_va_mapping((u32)window, (mfn << PAGE_SHIFT) | _PAGE_PRESENT
                                     | _PAGE_RW, UVMF_INVLPG))
        panic("map window");
    memset(window, 0, PAGE_SIZE_BYTES);
    if (HYPERVISOR_update_va_mapping((u32)window, old, UVMF_INVLPG))
        panic("unmap window");
    return mfn;
}

static u32 l2_mfn(void) { return virt_to_mfn((void *)si_u32(START_INFO_pt_base)); }

static void page_fault(struct trap_frame *f)
{
    u32 cr2 = read_cr2();
    nr_faults++;
    if ((f->cs & 3) != 3 || cr2 < HEAP_START || cr2 >= HEAP_START + HEAP_PAGES * 4096) {
        printk("process killed: page fault at %x (eip %x, error code %x)\n", cr2, f->eip,
               f->error_code);
        user_return(-TRAP_page_fault);
    }
    if (!heap_l1_mfn) {
        heap_l1_mfn = fresh_frame();
        mmuext(MMUEXT_PIN_L1_TABLE, heap_l1_mfn);
        mmu_set(l2_mfn(), HEAP_START >> L2_PAGETABLE_SHIFT,
                (heap_l1_mfn << PAGE_SHIFT) | PROC_PTE);
    }
    u32 page = (cr2 - HEAP_START) >> PAGE_SHIFT;
    heap_frames[page] = fresh_frame();
    mmu_set(heap_l1_mfn, page, (heap_frames[page] << PAGE_SHIFT) | PROC_PTE);
    heap_mapped++;
}

enum { SYS_exit = 1, SYS_write = 2 };

static void syscall(struct trap_frame *f)
{
    nr_syscalls++;
    if (f->eax == SYS_write) {
        HYPERVISOR_console_io(CONSOLEIO_write, f->edx, (void *)f->ecx);
        f->eax = f->edx;
    } else if (f->eax == SYS_exit) {
        user_return((int)f->ebx);
    } else {
        f->eax = (u32)-ENOSYS;
    }
}

/* ---- the process (ring 3) ---- */
static u32 sys(u32 nr, u32 a, u32 b, u32 c)
{
    u32 r;
    asm volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

static void say(const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    sys(SYS_write, 1, (u32)buf, (u32)n);
}

static void process(void)
{
    u32 *heap = (u32 *)HEAP_START;
    u32 words = HEAP_PAGES * 1024, cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    say("process: running in ring %u, filling %u KB of fresh memory\n", cs & 3,
        HEAP_PAGES * 4);
    for (u32 i = 0; i < words; i++)
        heap[i] = i * 2654435761u;
    u32 sum = 0;
    for (u32 i = 0; i < words; i++)
        sum += heap[i] >> 7;
    say("process: checksum %x\n", sum);
    sys(SYS_exit, sum & 0x7fffffff, 0, 0);
}

void test_main(void)
{
    window = alloc_scratch_page();
    set_trap_handler(TRAP_page_fault, page_fault);
    set_trap_handler(SYSCALL_VECTOR, syscall);
    HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack));
    printk("kernel: starting the process\n");
    int code = enter_user((u32)process, (u32)user_stack + sizeof(user_stack));

    u32 expect = 0;
    for (u32 i = 0; i < HEAP_PAGES * 1024; i++)
        expect += (i * 2654435761u) >> 7;
    check((u32)code == (expect & 0x7fffffff), "exit code %x, expected %x", code,
          expect & 0x7fffffff);
    check(heap_mapped == HEAP_PAGES, "%u pages demand-mapped", heap_mapped);
    printk("kernel: process exited with %x after %u page faults and %u system calls\n",
           code, nr_faults, nr_syscalls);

    /* Take the memory back: clear the entries, unhook and unpin the page table. */
    for (u32 i = 0; i < HEAP_PAGES; i++)
        mmu_set(heap_l1_mfn, i, 0);
    mmu_set(l2_mfn(), HEAP_START >> L2_PAGETABLE_SHIFT, 0);
    mmuext(MMUEXT_UNPIN_TABLE, heap_l1_mfn);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    set_trap_handler(TRAP_page_fault, NULL);
    check(probe_read(HEAP_START) == (FAULT_FLAG | TRAP_page_fault), "heap unmapped");
    printk("kernel: memory returned\n");
}

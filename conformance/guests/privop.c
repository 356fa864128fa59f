/* Privileged instructions as Xen 3.0 emulates them (traps.c, emulate_privileged_op): I/O
 * instructions against the virtual IOPL (PHYSDEVOP_set_iopl) and the guest's I/O bitmap
 * (PHYSDEVOP_set_iobitmap), with no I/O ports behind them (IN reads all ones, OUT is dropped);
 * CLI/STI; and from the ring-1 kernel only CLTS, WBINVD, MOV CR0/CR2/CR3/CR4, MOV DR, RDMSR,
 * WRMSR. Everything else, and all of it from ring 3, is the #GP the kernel sees. */
#include "xenrt.h"

const char test_title[] = "privileged instructions: I/O, CLI/STI, CR, DR, MSR emulation";

#define GP (FAULT_FLAG | TRAP_gp_fault)
#define PF (FAULT_FLAG | TRAP_page_fault)
/* An instruction whose fault (if any) resumes after it with FAULT_FLAG | vector in EAX. */
#define EX(insn) "1: " insn "\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"

static inline long HYPERVISOR_physdev_op(u32 cmd, void *arg)
{ return hypercall(__HYPERVISOR_physdev_op, cmd, (u32)arg, 0, 0, 0); }
static inline long HYPERVISOR_physdev_op_compat(void *op)
{ return hypercall(__HYPERVISOR_physdev_op_compat, (u32)op, 0, 0, 0, 0); }
static inline long HYPERVISOR_set_debugreg(u32 reg, u32 value)
{ return hypercall(__HYPERVISOR_set_debugreg, reg, value, 0, 0, 0); }
static inline long HYPERVISOR_get_debugreg(u32 reg)
{ return hypercall(__HYPERVISOR_get_debugreg, reg, 0, 0, 0, 0); }

static long set_iopl(u32 iopl) { return HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, &iopl); }
static long set_iobitmap(void *bitmap, u32 nr_ports)
{
    struct { u32 bitmap, nr_ports; } a = { (u32)bitmap, nr_ports };
    return HYPERVISOR_physdev_op(PHYSDEVOP_set_iobitmap, &a);
}

/* ---- probes: each returns EAX after the instruction (or FAULT_FLAG | vector) ------------ */
static u32 in_al_imm(u32 eax) { asm volatile(EX("inb $0x60, %%al") : "+a"(eax) :: "memory"); return eax; }
static u32 in_dx(int size, u32 port, u32 eax)
{
    switch (size) {
    case 1: asm volatile(EX("inb %%dx, %%al") : "+a"(eax) : "d"(port) : "memory"); break;
    case 2: asm volatile(EX("inw %%dx, %%ax") : "+a"(eax) : "d"(port) : "memory"); break;
    default: asm volatile(EX("inl %%dx, %%eax") : "+a"(eax) : "d"(port) : "memory"); break;
    }
    return eax;
}
static u32 out_imm(u32 eax) { asm volatile(EX("outb %%al, $0x80") : "+a"(eax) :: "memory"); return eax; }
static u32 out_dx(u32 port, u32 eax)
{ asm volatile(EX("outl %%eax, %%dx") : "+a"(eax) : "d"(port) : "memory"); return eax; }
static u32 cli_sti(int sti)
{
    u32 r = 0;
    if (sti) asm volatile(EX("sti") : "+a"(r) :: "memory");
    else asm volatile(EX("cli") : "+a"(r) :: "memory");
    return r;
}

struct sregs { u32 eax, ecx, esi, edi; };
enum { INSB, REP_INSB, STD_INSW, OUTSB, REP_OUTSL };
static struct sregs string_op(int which, u32 esi, u32 edi, u32 ecx)
{
    struct sregs r = { 0, ecx, esi, edi };
    switch (which) {
    case INSB: asm volatile(EX("insb") : "+a"(r.eax), "+c"(r.ecx), "+S"(r.esi), "+D"(r.edi)
                            : "d"(0x60) : "memory"); break;
    case REP_INSB: asm volatile(EX("rep insb") : "+a"(r.eax), "+c"(r.ecx), "+S"(r.esi),
                                "+D"(r.edi) : "d"(0x60) : "memory"); break;
    case STD_INSW: asm volatile("std\n" EX("insw") "\n cld" : "+a"(r.eax), "+c"(r.ecx),
                                "+S"(r.esi), "+D"(r.edi) : "d"(0x60) : "memory"); break;
    case OUTSB: asm volatile(EX("outsb") : "+a"(r.eax), "+c"(r.ecx), "+S"(r.esi), "+D"(r.edi)
                             : "d"(0x80) : "memory"); break;
    case REP_OUTSL: asm volatile(EX("rep outsl") : "+a"(r.eax), "+c"(r.ecx), "+S"(r.esi),
                                 "+D"(r.edi) : "d"(0x80) : "memory"); break;
    }
    return r;
}

/* The ring-0 instructions: the fault (0 or FAULT_FLAG | vector) and the value read. */
struct res { u32 fault, value; };
static struct res read_cr(int n)
{
    struct res r = { 0, 0xdeadbeef };
    switch (n) {
    case 0: asm volatile(EX("mov %%cr0, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    case 2: asm volatile(EX("mov %%cr2, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    case 3: asm volatile(EX("mov %%cr3, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    case 4: asm volatile(EX("mov %%cr4, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    }
    return r;
}
static u32 write_cr(int n, u32 v)
{
    u32 f = 0;
    switch (n) {
    case 0: asm volatile(EX("mov %%ecx, %%cr0") : "+a"(f) : "c"(v) : "memory"); break;
    case 2: asm volatile(EX("mov %%ecx, %%cr2") : "+a"(f) : "c"(v) : "memory"); break;
    case 3: asm volatile(EX("mov %%ecx, %%cr3") : "+a"(f) : "c"(v) : "memory"); break;
    case 4: asm volatile(EX("mov %%ecx, %%cr4") : "+a"(f) : "c"(v) : "memory"); break;
    }
    return f;
}
static struct res read_dr(int n)
{
    struct res r = { 0, 0xdeadbeef };
    switch (n) {
    case 0: asm volatile(EX("mov %%db0, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    case 6: asm volatile(EX("mov %%db6, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    case 7: asm volatile(EX("mov %%db7, %%ecx") : "+a"(r.fault), "+c"(r.value) :: "memory"); break;
    }
    return r;
}
static u32 write_dr(int n, u32 v)
{
    u32 f = 0;
    switch (n) {
    case 0: asm volatile(EX("mov %%ecx, %%db0") : "+a"(f) : "c"(v) : "memory"); break;
    case 4: asm volatile(EX("mov %%ecx, %%db4") : "+a"(f) : "c"(v) : "memory"); break;
    case 6: asm volatile(EX("mov %%ecx, %%db6") : "+a"(f) : "c"(v) : "memory"); break;
    case 7: asm volatile(EX("mov %%ecx, %%db7") : "+a"(f) : "c"(v) : "memory"); break;
    }
    return f;
}
static struct res rdmsr(u32 msr)
{
    struct res r = { 0, 0 };
    u32 edx = 0xdeadbeef;
    asm volatile(EX("rdmsr") : "+a"(r.fault), "+d"(edx) : "c"(msr) : "memory");
    r.value = r.fault;          /* EAX: the low half, or the fault */
    r.fault = (edx == 0xdeadbeef) ? r.fault : 0;
    return r;
}
static u32 wrmsr(u32 msr, u32 lo, u32 hi)
{ u32 f = lo; asm volatile(EX("wrmsr") : "+a"(f) : "c"(msr), "d"(hi) : "memory"); return f; }
static u32 simple(int which)
{
    u32 f = 0;
    static u8 gdtr[6];
    switch (which) {
    case 0: asm volatile(EX("clts") : "+a"(f) :: "memory"); break;
    case 1: asm volatile(EX("wbinvd") : "+a"(f) :: "memory"); break;
    case 2: asm volatile(EX("hlt") : "+a"(f) :: "memory"); break;
    case 3: asm volatile(EX("lgdt %1") : "+a"(f) : "m"(gdtr) : "memory"); break;
    case 4: asm volatile(EX("invlpg (%%ecx)") : "+a"(f) : "c"(0x1000) : "memory"); break;
    }
    return f;
}
enum { CLTS, WBINVD, HLT, LGDT, INVLPG };

/* ---- ring 3 ------------------------------------------------------------------------------ */
static u8 trap_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(4096)));
static volatile u32 user_r[16];

static void do_syscall(struct trap_frame *f) { user_return((int)f->ebx); }
static inline void user_exit(u32 code)
{ asm volatile("int $0x80" :: "a"(1), "b"(code) : "memory"); }

static void user_io(void)
{
    user_r[0] = in_al_imm(0x12345678);
    user_r[1] = out_imm(0x12345678);
    user_r[2] = cli_sti(0);
    user_r[3] = in_dx(1, 0x70, 0x12345678);
    user_exit(7);
}
static void user_ring0(void)
{
    user_r[0] = simple(CLTS);
    user_r[1] = read_cr(0).fault;
    user_r[2] = read_cr(3).fault;
    user_r[3] = write_cr(2, 0);
    user_r[4] = rdmsr(0x1B).value;
    user_r[5] = wrmsr(0x1B, 0, 0);
    user_r[6] = simple(WBINVD);
    user_r[7] = simple(HLT);
    user_r[8] = read_dr(7).fault;
    user_exit(7);
}
static int run_user(void (*fn)(void))
{
    for (int i = 0; i < 16; i++) user_r[i] = 0;
    return enter_user((u32)fn, (u32)user_stack + sizeof(user_stack));
}

/* ---- the checks ---------------------------------------------------------------------------- */
static void io_without_privilege(void)
{
    check(in_al_imm(0x12345678) == GP, "in imm8 without IOPL: #GP");
    check(out_imm(0x12345678) == GP, "out imm8 without IOPL: #GP");
    check(in_dx(4, 0x70, 0) == GP, "in dx without IOPL: #GP");
    check(out_dx(0x70, 0) == GP, "out dx without IOPL: #GP");
    check(cli_sti(0) == GP && cli_sti(1) == GP, "cli/sti without IOPL: #GP");
    u8 *buf = (u8 *)alloc_scratch_page();
    struct sregs r = string_op(INSB, 0, (u32)buf, 0);
    check(r.eax == GP && r.edi == (u32)buf, "insb without IOPL: #GP, EDI %x", r.edi);
    r = string_op(REP_OUTSL, (u32)buf, 0, 3);
    check(r.eax == GP && r.ecx == 3 && r.esi == (u32)buf, "rep outsl without IOPL: #GP");
    /* The permission check comes first: outs from an unmapped page is still the #GP. */
    r = string_op(OUTSB, 0x1000, 0, 0);
    check(r.eax == GP, "outsb of an unmapped page without IOPL: %x", r.eax);
    r = string_op(INSB, 0, 0x1000, 0);
    check(r.eax == GP, "insb to an unmapped page without IOPL: %x", r.eax);
}

static void io_with_iopl(void)
{
    volatile u8 *mask = vcpu0_info() + VCPU_INFO_evtchn_upcall_mask;
    u8 before = *mask;
    check(in_al_imm(0x12345678) == 0x123456ff, "in al with IOPL 1: all ones in AL only");
    check(in_dx(2, 0x70, 0x12345678) == 0x1234ffff, "in ax: all ones in AX only");
    check(in_dx(4, 0x70, 0x12345678) == 0xffffffff, "in eax: all ones");
    check(out_imm(0x12345678) == 0x12345678, "out with IOPL 1 completes");
    check(out_dx(0x70, 0xcafe) == 0xcafe, "out dx with IOPL 1 completes");
    check(cli_sti(0) == 0 && cli_sti(1) == 0, "cli/sti with IOPL 1 complete");
    check(*mask == before, "cli/sti leave the event mask alone: %u -> %u", before, *mask);
    /* An operand-size prefix and a segment override before IN. */
    u32 eax = 0x12345678;
    asm volatile(EX(".byte 0x2e, 0x66, 0xe5, 0x60") : "+a"(eax) :: "memory");
    check(eax == 0x1234ffff, "cs: 66 in $0x60,%%ax: %x", eax);

    u8 *buf = (u8 *)alloc_scratch_page();
    struct sregs r = string_op(REP_INSB, 0, (u32)buf, 4);
    check(r.eax == 0 && r.ecx == 0 && r.edi == (u32)buf + 4, "rep insb: ecx %u edi +%d",
          r.ecx, (int)(r.edi - (u32)buf));
    check(buf[0] == 0xff && buf[3] == 0xff && buf[4] == 0, "rep insb wrote 4 bytes of ones");
    r = string_op(STD_INSW, 0, (u32)buf + 16, 0);
    check(r.eax == 0 && r.edi == (u32)buf + 14, "std; insw steps EDI down by 2");
    check(*(u16 *)(buf + 16) == 0xffff, "insw wrote ones");
    r = string_op(REP_OUTSL, (u32)buf, 0, 3);
    check(r.eax == 0 && r.ecx == 0 && r.esi == (u32)buf + 12, "rep outsl: esi +%d",
          (int)(r.esi - (u32)buf));
    r = string_op(REP_INSB, 0, (u32)buf, 0);
    check(r.eax == 0 && r.edi == (u32)buf, "rep insb with ECX 0 does nothing");
    /* With permission, the memory access is Xen's own: a page fault, error code user read 4
     * or user write 6, at the address. */
    r = string_op(INSB, 0, 0x1000, 0);
    check(r.eax == PF && last_trap.error_code == (PFEC_user_mode | PFEC_write_access)
          && last_trap.cr2 == 0x1000, "insb to an unmapped page: %x ec %x cr2 %x", r.eax,
          last_trap.error_code, last_trap.cr2);
    check(r.edi == 0x1000, "the faulting insb left EDI: %x", r.edi);
    r = string_op(OUTSB, 0x1000, 0, 0);
    check(r.eax == PF && last_trap.error_code == PFEC_user_mode && last_trap.cr2 == 0x1000,
          "outsb from an unmapped page: %x ec %x", r.eax, last_trap.error_code);
}

static void io_bitmap(void)
{
    u8 *bm = (u8 *)alloc_scratch_page();
    for (int i = 0; i < 4096; i++) bm[i] = 0xff;
    bm[0x60 >> 3] = 0x00;           /* ports 0x60-0x67 allowed */
    check(set_iobitmap(bm, 0x100) == 0, "set_iobitmap");
    check(in_al_imm(0x12345678) == 0x123456ff, "in from an allowed port");
    check(in_dx(4, 0x64, 0) == 0xffffffff, "inl of ports 0x64-0x67");
    check(in_dx(4, 0x66, 0) == GP, "inl of ports 0x66-0x69 (0x68 refused)");
    check(in_dx(1, 0x70, 0) == GP, "in from a refused port");
    bm[0xf8 >> 3] = 0x00;
    check(in_dx(1, 0xff, 0) == GP, "port 0xff is not below nr_ports 0x100 + 1");
    check(in_dx(1, 0xfe, 0x12345678) == 0x123456ff, "port 0xfe is");
    check(cli_sti(0) == GP, "the bitmap does not allow cli");
    check(run_user(user_io) == 7, "ring 3 with the bitmap");
    check(user_r[0] == 0x123456ff && user_r[3] == GP, "ring 3 obeys the bitmap: %x %x",
          user_r[0], user_r[3]);
    /* The bitmap is read through the guest's page tables at each check. */
    bm[0x60 >> 3] = 0x01;
    check(in_al_imm(0) == GP, "the guest's later write to its bitmap counts");
    check(set_iobitmap((void *)0xFC000000u, 0x100) == -EINVAL, "bitmap in the hole: -EINVAL");
    check(set_iobitmap(bm, 65537) == -EINVAL, "nr_ports 65537: -EINVAL");
    check(set_iobitmap(bm, 0) == 0, "no bitmap");
    check(in_al_imm(0) == GP, "no bitmap: #GP");
}

static void physdev(void)
{
    u32 four = 4;
    check(HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, &four) == -EINVAL, "set_iopl 4: -EINVAL");
    check(HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, (void *)0x1000) == -EFAULT,
          "set_iopl from an unmapped page: -EFAULT");
    check(HYPERVISOR_physdev_op(PHYSDEVOP_set_iobitmap, (void *)0x1000) == -EFAULT,
          "set_iobitmap from an unmapped page: -EFAULT");
    u32 eoi = 1, bad_irq = NR_IRQS;
    check(HYPERVISOR_physdev_op(PHYSDEVOP_eoi, &eoi) == 0, "eoi of a line not bound: 0");
    check(HYPERVISOR_physdev_op(PHYSDEVOP_eoi, &bad_irq) == -EINVAL, "eoi beyond NR_IRQS");
    u32 apic[3] = { 0xfec00000, 0, 0 };
    check(HYPERVISOR_physdev_op(PHYSDEVOP_apic_read, apic) == -EPERM,
          "apic_read, unprivileged: -EPERM");
    struct { u32 cmd, iopl, pad[2]; } op = { PHYSDEVOP_set_iopl, 1, { 0, 0 } };
    check(HYPERVISOR_physdev_op_compat(&op) == 0, "physdev_op_compat set_iopl");
    check(in_al_imm(0x12345678) == 0x123456ff, "IOPL 1 through the compat call");
    check(HYPERVISOR_physdev_op_compat((void *)0x1000) == -EFAULT, "compat: -EFAULT");
}

static volatile u32 nm_count;
static void count_nm(struct trap_frame *f) { nm_count++; }

static void control_registers(void)
{
    u32 base = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_PG;
    set_trap_handler(TRAP_no_device, count_nm);
    HYPERVISOR_fpu_taskswitch(1);
    struct res r = read_cr(0);
    check(r.fault == 0 && r.value == (base | X86_CR0_TS), "cr0 with the virtual TS: %x", r.value);
    check(simple(CLTS) == 0, "clts from ring 1");
    r = read_cr(0);
    check(r.value == base, "cr0 after clts: %x", r.value);
    asm volatile("fninit; fld1; fstp %%st(0)" ::: "memory");
    check(nm_count == 0, "no #NM after clts: %u", nm_count);
    check(write_cr(0, base | X86_CR0_TS) == 0, "mov to cr0 setting TS");
    asm volatile("fld1; fstp %%st(0)" ::: "memory");
    check(nm_count == 1, "#NM after TS set through cr0: %u", nm_count);
    check(write_cr(0, base & ~X86_CR0_WP) == GP, "mov to cr0 clearing WP: #GP");
    set_trap_handler(TRAP_no_device, NULL);

    check(probe_read(0x1000) == PF, "a page fault at 0x1000");
    r = read_cr(2);
    check(r.fault == 0 && r.value == 0x1000, "cr2 after it: %x", r.value);
    check(write_cr(2, 0x1234) == 0 && read_cr(2).value == 0x1234, "mov to cr2");
    check(read_cr2() == 0x1234, "vcpu_info cr2 follows mov to cr2: %x", read_cr2());

    r = read_cr(4);
    check(r.fault == 0 && r.value == 0, "cr4: %x", r.value);
    check(write_cr(4, r.value) == 0, "mov to cr4 of what it reads");
    check(write_cr(4, 0x10) == GP, "mov to cr4 setting PSE: #GP");

    /* CR3: the machine address of the page directory; mov to cr3 switches tables. */
    u32 pt = si_u32(START_INFO_pt_base);
    u32 cr3 = virt_to_mfn((void *)pt) << PAGE_SHIFT;
    r = read_cr(3);
    check(r.fault == 0 && r.value == cr3, "cr3 %x, pt_base's frame %x", r.value, cr3);
    u32 *copy = alloc_scratch_page();
    memcpy(copy, (void *)pt, 4096);
    u32 copy_pte = virt_to_pte((u32)copy);
    check(HYPERVISOR_update_va_mapping((u32)copy, copy_pte & ~_PAGE_RW, UVMF_INVLPG) == 0,
          "the copy read-only");
    u32 copy_cr3 = copy_pte & PAGE_MASK;
    check(write_cr(3, copy_cr3) == 0, "mov to cr3 of the copy");
    check(read_cr(3).value == copy_cr3, "cr3 now %x", read_cr(3).value);
    check(probe_read(pt) == 0, "still running on the copy");
    check(write_cr(3, cr3) == 0 && read_cr(3).value == cr3, "back to the boot tables");
}

static void debug_registers(void)
{
    check(write_dr(0, 0x1000) == 0, "mov to dr0");
    struct res r = read_dr(0);
    check(r.fault == 0 && r.value == 0x1000, "dr0 %x", r.value);
    check(HYPERVISOR_get_debugreg(0) == 0x1000, "get_debugreg(0)");
    check(write_dr(0, 0xFC000000u) == GP, "dr0 in the hole: #GP");
    check(HYPERVISOR_set_debugreg(0, 0xFC000000u) == -EPERM, "set_debugreg in the hole: -EPERM");
    check(write_dr(6, 0) == 0 && read_dr(6).value == 0xffff0ff0, "dr6 reserved bits: %x",
          read_dr(6).value);
    check(write_dr(7, 0x400 | (1u << 13)) == GP, "dr7 with GD: #GP");
    check(write_dr(7, 0x1 | (2u << 16)) == GP, "dr7 with an I/O breakpoint: #GP");
    check(write_dr(7, 0x1) == 0 && read_dr(7).value == 0x401, "dr7: %x", read_dr(7).value);
    check(write_dr(7, 0) == 0 && read_dr(7).value == 0, "dr7 0 disables");
    check(write_dr(4, 0) == GP, "mov to dr4: #GP");
    check(HYPERVISOR_set_debugreg(4, 0) == -EINVAL, "set_debugreg(4): -EINVAL");
    check(HYPERVISOR_get_debugreg(8) == -EINVAL, "get_debugreg(8): -EINVAL");
}

static void msrs_and_others(void)
{
    struct res r = rdmsr(0x1B);
    check(r.fault == 0 && r.value == 0xFEE00900u, "rdmsr APIC_BASE: %x", r.value);
    r = rdmsr(0x10);
    check(r.value == GP, "rdmsr of an MSR the model lacks: %x", r.value);
    check(wrmsr(0x1B, 0, 0) == 0, "wrmsr ignored for an unprivileged domain");
    check(rdmsr(0x1B).value == 0xFEE00900u, "... and changed nothing");
    check(wrmsr(0x10, 0, 0) == 0, "wrmsr of any MSR ignored");
    check(simple(WBINVD) == 0, "wbinvd ignored");
    check(simple(HLT) == GP, "hlt: #GP");
    check(simple(LGDT) == GP, "lgdt: #GP");
    check(simple(INVLPG) == GP, "invlpg: #GP");
}

static void ring3(void)
{
    /* IOPL 1 is not enough for ring 3; IOPL 3 is. */
    check(set_iopl(1) == 0, "set_iopl 1");
    check(run_user(user_io) == 7, "ring 3 I/O");
    check(user_r[0] == GP && user_r[1] == GP && user_r[2] == GP,
          "ring 3 with IOPL 1: in/out/cli #GP (%x %x %x)", user_r[0], user_r[1], user_r[2]);
    check(set_iopl(3) == 0, "set_iopl 3");
    check(run_user(user_io) == 7, "ring 3 I/O with IOPL 3");
    check(user_r[0] == 0x123456ff && user_r[1] == 0x12345678 && user_r[2] == 0,
          "ring 3 with IOPL 3: %x %x %x", user_r[0], user_r[1], user_r[2]);
    /* The ring-0 instructions are the kernel's only. */
    check(run_user(user_ring0) == 7, "ring 3 privileged instructions");
    for (int i = 0; i < 9; i++)
        check(user_r[i] == GP, "ring 3 privileged instruction %d: %x", i, user_r[i]);
    check(set_iopl(0) == 0, "set_iopl 0");
}

void test_main(void)
{
    set_trap_handler(SYSCALL_VECTOR, do_syscall);
    check(HYPERVISOR_stack_switch(FLAT_KERNEL_SS, (u32)trap_stack + sizeof(trap_stack)) == 0,
          "stack_switch");
    io_without_privilege();
    physdev();                  /* leaves IOPL 1 */
    io_with_iopl();
    check(set_iopl(0) == 0, "set_iopl 0");
    io_bitmap();
    control_registers();
    debug_registers();
    msrs_and_others();
    ring3();
    u32 cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    check(cs == FLAT_KERNEL_CS, "back in ring 1: cs %x", cs);
}

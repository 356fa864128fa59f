/* Exceptions and software interrupts: Xen 3.0's bounce frame, CR2 in vcpu_info, #UD, the
 * forced-emulation CPUID, INT n against the trap table's DPL, fpu_taskswitch and #NM. */
#include "xenrt.h"

const char test_title[] = "traps: bounces, page faults, #UD, int n, #NM";

static volatile u32 frame_cs_word, frame_eflags, frame_ec, handled;

static void record_pf(struct trap_frame *f)
{
    frame_cs_word = f->cs;
    frame_eflags = f->eflags;
    frame_ec = f->error_code;
    handled++;
    f->eip = f->eip + 6;            /* skip "movl %eax, addr" (a3 + imm32 is 5; see below) */
}

static void skip_insn(struct trap_frame *f) { handled++; f->eip += 2; }
static void count_trap(struct trap_frame *f) { handled++; }
static volatile u32 handler_cs;
static void read_cs(struct trap_frame *f)
{
    u32 cs;
    asm volatile("mov %%cs, %0" : "=r"(cs));
    handler_cs = cs;
    handled++;
}
extern char trap_entry_32[];

/* Instructions Xen does not emulate, or refuses here (cli without IOPL, a CR0 write that
 * changes more than TS, an MSR the machine lacks): privop.c tests what it does emulate. */
static u32 probe_insn_gp(int which)
{
    u32 r = 0;
    static u8 idtr[6];
    switch (which) {
    case 0: asm volatile("1: hlt\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                         : "+a"(r) :: "memory"); break;
    case 1: asm volatile("1: cli\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                         : "+a"(r) :: "memory"); break;
    case 2: asm volatile("1: lidt %1\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b;"
                         " .popsection" : "+a"(r) : "m"(idtr) : "memory"); break;
    case 3: asm volatile("1: invd\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                         : "+a"(r) :: "memory"); break;
    case 4: asm volatile("1: mov %%ecx, %%cr0\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b;"
                         " .popsection" : "+a"(r) : "c"(0) : "memory"); break;
    case 5: asm volatile("1: rdmsr\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                         : "+a"(r) : "c"(0x10) : "edx", "memory"); break;
    }
    return r;
}

void test_main(void)
{
    /* Page faults: CR2 goes to vcpu_info.arch.cr2, the error code is the CPU's. */
    u32 r = probe_read(0x1000);
    check(r == (FAULT_FLAG | TRAP_page_fault), "read of an unmapped page: %x", r);
    check(last_trap.cr2 == 0x1000, "cr2 %x", last_trap.cr2);
    check(last_trap.error_code == 0, "error code %x", last_trap.error_code);
    u32 pt = si_u32(START_INFO_pt_base);
    r = probe_write(pt, 0);
    check(r == (FAULT_FLAG | TRAP_page_fault), "write to the page directory: %x", r);
    check(last_trap.error_code == (PFEC_page_present | PFEC_write_access),
          "error code %x", last_trap.error_code);
    check(last_trap.cr2 == pt, "cr2 %x", last_trap.cr2);

    /* The hole: the RO M2P is readable but not writable (#PF); above it the flat segments
     * end, so any access is a #GP(0). */
    check(probe_read(MACH2PHYS_VIRT_START) == 0, "M2P readable");
    check(probe_write(MACH2PHYS_VIRT_START, 0) == (FAULT_FLAG | TRAP_page_fault), "M2P write");
    check(probe_write(PERDOMAIN_VIRT_START + FIRST_RESERVED_GDT_BYTE, 0)
          == (FAULT_FLAG | TRAP_gp_fault), "write to Xen's GDT page");
    check(last_trap.error_code == 0, "#GP error code %x", last_trap.error_code);
    /* (A read of the read-only pages the CPU needs, such as Xen's GDT page, succeeds in the
     * model: the emulator has no segment limits; see refmodel/cpu.py.) */
    /* Xen's linear page table: the page directory maps itself at LINEAR_PT_VIRT_START, so
     * the L1 mapping the page directory's own address is at this address. Xen maps it
     * read-write for itself; the guest's segments end below it, so a write is a #GP(0). */
    r = probe_write(LINEAR_PT_VIRT_START + ((pt >> 22) << 12), 0);
    check(r == (FAULT_FLAG | TRAP_gp_fault), "write to the linear page table: %x", r);
    check(last_trap.error_code == 0, "#GP error code %x", last_trap.error_code);
    check(probe_read(0xFF000000) == (FAULT_FLAG | TRAP_gp_fault), "read of Xen's heap");
    check(probe_read(0xFFFFF000) == (FAULT_FLAG | TRAP_gp_fault), "read at the top");

    /* The bounce frame: CS word carries the saved event mask (masked at boot), EFLAGS.IF is
     * its inverse. */
    set_trap_handler(TRAP_page_fault, record_pf);
    asm volatile("movl %%eax, 0x2000\n nop" ::: "memory");
    set_trap_handler(TRAP_page_fault, NULL);
    check(handled == 1, "page-fault handler ran %u times", handled);
    check((frame_cs_word & 0xffff) == FLAT_KERNEL_CS, "frame cs %x", frame_cs_word);
    check(((frame_cs_word >> 16) & 0xff) == 1, "saved upcall mask %x", frame_cs_word);
    check(!(frame_eflags & X86_EFLAGS_IF), "frame eflags %x", frame_eflags);
    check(frame_ec == PFEC_write_access, "frame error code %x", frame_ec);

    /* #UD, and the forced-emulation prefix. */
    r = 0;
    asm volatile("1: ud2\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                 : "+a"(r) :: "memory");
    check(r == (FAULT_FLAG | TRAP_invalid_op), "ud2: %x", r);
    u32 a = 0, b, c = 0, d;
    asm volatile(XEN_EMULATE_PREFIX_ASM "\n cpuid"
                 : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    check(b == 0x756e6547 && d == 0x49656e69 && c == 0x6c65746e, "cpuid 0 vendor");
    a = 1; c = 0;
    asm volatile(XEN_EMULATE_PREFIX_ASM "\n cpuid"
                 : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    check(!(d & (1u << 3)) && !(d & (1u << 13)), "cpuid 1 hides PSE and PGE: %x", d);
    check(d & 1, "cpuid 1 has an FPU: %x", d);

    /* Privileged instructions at ring 1: #GP. */
    for (int i = 0; i < 6; i++) {
        r = probe_insn_gp(i);
        check(r == (FAULT_FLAG | TRAP_gp_fault), "privileged instruction %d: %x", i, r);
    }

    /* INT n: vector 0x20 is registered with DPL 1, 0x21 is not registered. */
    handled = 0;
    set_trap_handler(32, count_trap);
    asm volatile("int $0x20" ::: "memory");
    check(handled == 1 && last_trap.vector == 32, "int $0x20 delivered");
    set_trap_handler(32, NULL);
    /* A handler selector with RPL 0 is raised to RPL 1 (x86_32/traps.c, do_set_trap_table and
     * fixup_guest_code_selector): the handler runs in ring 1, never in ring 0. */
    struct { u8 v, f; u16 cs; u32 a; } ring0[2] = {
        { 32, 1, FLAT_KERNEL_CS & ~3, (u32)trap_entry_32 }, { 0, 0, 0, 0 } };
    check(HYPERVISOR_set_trap_table(ring0) == 0, "set_trap_table with an RPL-0 selector");
    handled = 0;
    set_trap_handler(32, read_cs);
    asm volatile("int $0x20" ::: "memory");
    check(handled == 1 && (handler_cs & 3) == 1, "RPL-0 handler ran in ring %u",
          handler_cs & 3);
    set_trap_handler(32, NULL);
    r = 0;
    asm volatile("1: int $0x21\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                 : "+a"(r) :: "memory");
    check(r == (FAULT_FLAG | TRAP_gp_fault), "int $0x21: %x", r);
    check(last_trap.error_code == ((0x21 << 3) | 2), "int $0x21 error code %x",
          last_trap.error_code);
    /* #PF is registered with DPL 0: int $14 from ring 1 is a #GP too. */
    r = 0;
    asm volatile("1: int $14\n2:\n .pushsection .ex_table,\"a\"; .long 1b, 2b; .popsection"
                 : "+a"(r) :: "memory");
    check(r == (FAULT_FLAG | TRAP_gp_fault), "int $14: %x", r);
    /* int3 goes through Xen's DPL-3 gate. */
    handled = 0;
    set_trap_handler(TRAP_int3, count_trap);
    asm volatile("int3" ::: "memory");
    check(handled == 1, "int3 delivered");
    set_trap_handler(TRAP_int3, NULL);

    /* #DE. */
    handled = 0;
    set_trap_handler(TRAP_divide_error, skip_insn);
    u32 zero = 0, q;
    asm volatile("xorl %%edx, %%edx\n divl %1\n" : "=a"(q) : "r"(zero), "a"(7) : "edx");
    check(handled == 1, "#DE delivered");
    set_trap_handler(TRAP_divide_error, NULL);

    /* fpu_taskswitch: the first FPU instruction after set raises #NM, once. */
    handled = 0;
    set_trap_handler(TRAP_no_device, count_trap);
    check(HYPERVISOR_fpu_taskswitch(1) == 0, "fpu_taskswitch(1)");
    asm volatile("fninit");
    check(handled == 1, "#NM after fpu_taskswitch(1): %u", handled);
    asm volatile("fninit");
    check(handled == 1, "no second #NM: %u", handled);
    HYPERVISOR_fpu_taskswitch(1);
    HYPERVISOR_fpu_taskswitch(0);
    asm volatile("fninit");
    check(handled == 1, "no #NM after fpu_taskswitch(0): %u", handled);
    set_trap_handler(TRAP_no_device, NULL);

    /* A fault storm: many faults in a row, each handled. */
    u32 before = last_trap.count;
    for (int i = 0; i < 2000; i++)
        probe_read(0x3000 + (i & 7) * 4096);
    check(last_trap.count - before == 2000, "fault storm: %u faults", last_trap.count - before);

    /* set_trap_table with an unreadable table. */
    check(HYPERVISOR_set_trap_table((void *)0x1000) == -EFAULT, "set_trap_table -EFAULT");
}

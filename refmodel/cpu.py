"""The CPU substrate: one vCPU of a paravirtual guest on the Unicorn x86-32 emulator.

This is the only module that imports Unicorn (design decision D5). It models the processor
Xen runs its guests on, not a Xen rule: machine memory is handed to Unicorn as its physical
memory (``mem_map_ptr``, no copy), the guest's page directory is CR3 with CR0.PG|WP, and
Xen's GDT sits at the vCPU's address in the per-domain area (xen/include/asm-x86/config.h,
GDT_VIRT_START) with the flat selectors of arch-x86_32.h in its reserved page. Every trap the
guest takes (``int $0x82``, ``int $0x80``, a fault, an invalid opcode) arrives in a hook and
goes to the hypervisor as a ``CpuUserRegs``; what the hypervisor changes is applied on return.

What Unicorn 2.1.4 does not do, and what this module does instead (measured on Unicorn
2.1.4; the start-up self-test checks each workaround):

* CPL follows SS and cannot be set by writing registers: a ring is entered through a one-byte
  ring-0 ``iret`` stub with a prepared frame, after the CPL bits of ``hflags`` have been set to
  0 in the saved context (offset ``_OFF_HFLAGS``). The guest never runs at CPL 0: it is
  resumed either by the stub's iret, which puts the CPU in the ring of the frame's CS RPL (a
  frame of RPL 0 is never written: the domain is crashed), or, when CS and SS stay, by
  register writes. Until the stub has run, or when its iret faults (Xen's FLT5: the failsafe
  callback), the engine is at the stub's CPL and the guest's EIP, CS, EFLAGS, ESP and SS are
  the frame's: the registers the hypervisor then works on (the failsafe frame, an event
  upcall when a slice ended there, as Xen's test_all_events builds it on top of the pending
  bounce) are the frame's, and the way back is the stub again, never a register write. As
  defence in depth the CPL is read before guest code is resumed otherwise while the
  substrate has lowered it, and in every fault; CPL 0 there crashes the domain.
* After a handled fault the next fault arrives as a double fault (upstream issue #1883, the
  ``old_exception`` field is never reset): every fault hook resets it in the saved context.
* There is no register for the page-fault error code: it is read from the saved context, as
  is the flag that tells a software ``int n`` from a fault.
* Segment limits are not enforced, so the hypervisor hole is protected by paging alone: only
  read-only supervisor pages (the read-only M2P, the GDT, the shadow LDT, the stub page) are
  mapped there.
* Writing a segment register loads its descriptor, and when that load faults the engine has no
  way to say so: a descriptor read or accessed-bit write that page-faults (an LDT page not
  mapped yet, a read-only GDT page) kills the process, any other faulting load is
  UC_ERR_EXCEPTION. So a selector reaches the engine only after the hypervisor has checked it
  as Xen's return path loads it (``reload_segments``: LDT page mapped, accessed bit set, or the
  failsafe callback instead). The LDTR is written with its hidden base and limit (Xen's
  load_LDT: the vCPU's LDT area, limit ents * 8 - 1, or null); Unicorn's reset value would
  read an LDT at linear address 0.
* The TLB and the translation cache are real: the MMU's flush requests (``Vcpu.flush_tlb``,
  ``flush_tlb_one``, a new base pointer) are carried out after each trap.
* Preemption must be deterministic, so a time slice is an instruction count (``emu_start``'s
  wall-clock ``timeout`` is not deterministic, and an engine that ran with a timeout never
  returns from a later counted run). Unicorn's own ``count`` puts a hook call before every
  instruction and makes a register loop about 19 times slower (measured: 32 ns against
  1.7 ns per 5-instruction iteration), so the substrate counts per translation block instead:
  a small C callback (refmodel/blockcount.c, built with the machine's gcc on first use, as
  the guests are) adds each block's instruction count, which Unicorn's translator reports
  (``UC_CTL_TB_REQUEST_CACHE``), and stops the engine once the slice's count is reached; the
  block under way runs to its end, so a slice may run a few instructions past its count, and
  the count reported is that of the blocks entered. A block cut short by a fault is counted
  whole, and code rewritten in place into a block of the same address and size keeps its old
  count until the next base-pointer load or cache flush: deterministic, not exact. Without
  gcc the substrate falls back to Unicorn's ``count`` and reads Unicorn's own counter
  (``emu_counter`` of ``struct uc_struct``, offset ``_OFF_EMU_COUNTER``).

* A hypercall's registers are read, and its result written, in place in the engine's live
  CPU state (env, whose address the substrate finds once per engine by writing a pattern
  into the registers and looking for it: ``_find_env``): Unicorn's batch read and its write
  cost about 1.6 us of a round trip (benchmarks/bench_cpu.py, the hook floors). The layout is
  Unicorn 2.1.4's (``_ENV_HYPERCALL``); tests/test_cpu_registers.py compares it with
  Unicorn's own reads at every hypercall of four guests. Where env is not found, the API.

* RDTSC reads the host's counter and cannot be hooked in the binding: with a time source
  installed (``set_rdtsc``) CR4.TSD makes it fault outside ring 0, and the #GP is completed
  with the source's value (``0f 31`` at EIP), so a guest reads the machine's deterministic
  clock. Xen does not set TSD; the guest sees an ordinary RDTSC. (Unicorn 2.1.4 refuses a
  UC_HOOK_INSN for RDTSC: UC_ERR_ARG.) Guests read their clock often (Mini-OS twice per block
  request in its disk loop), so the fault has a fast path that reads and writes the few
  registers involved in place (``_rdtsc_in_place``): 11 to 15 us against 27 to 29 us through
  the general path (benchmarks/bench_cpu.py), tested to give the same runs.

* ``in``/``out``/``ins``/``outs`` are never privilege-checked (Unicorn's translator allows
  every port), while on Xen every I/O instruction of a guest raises #GP(0) (the hardware IOPL
  is 0 and the TSS has no I/O bitmap). An IN/OUT hook runs with the registers from before the
  instruction, but its EIP is the last one the translated code stored (the instruction itself
  when Unicorn counts every instruction, else the start of the block): the hook saves the
  whole CPU context, points CR3 at an empty page directory of the substrate's own (whatever
  part of the block the engine still runs then reaches no memory; traps there are ignored)
  and stops the engine. Then the context is restored, the I/O instruction is found in the
  block's straight-line code from that EIP (Unicorn's decoder steps over each instruction in
  a scratch engine; the port and size must be the hook's), and its #GP(0) is delivered as a
  real one; the slice goes on with the instructions left. Departure: INS has already stored
  a zero at ES:EDI when the hook runs (the emulator's probe store before the port access),
  and those bytes stay zero. The emulator keeps the arithmetic flags lazily (an operation and
  its operands) and does not store that state before IN/OUT, so EFLAGS read in the hook can
  hold any 32 bits (VM, IOPL, bits 22-31 were seen): the substrate loads the exact flags
  instead, every flag but the arithmetic ones from the CPU state itself (env->eflags and
  env->df, read in place: ``_find_env``). Departure: the arithmetic flags (OF SF ZF AF PF
  CF) in the #GP(0) frame of an I/O instruction are those of the last point where the
  emulator stored its flag state (the start of the block, or an earlier instruction of it),
  not always those right before the I/O instruction.

* Virtual-8086 mode: the emulator's ``iret`` enters it whenever the popped EFLAGS has VM set
  (Unicorn 2.1.4, qemu/target/i386/seg_helper.c, helper_ret_protected: ``goto
  return_to_vm86``, which also loads IOPL), while the processor does so only at CPL 0 and at
  CPL 1 or 3 makes an ordinary protected-mode return with VM ignored and IOPL unchanged
  (Intel SDM, IRET). Xen never runs a PV guest in virtual-8086 mode or with IOPL above 0
  (x86_32/traps.c do_iret and entry.S create_bounce_frame clear VM and IOPL in every frame),
  and guest code cannot take a virtual-8086 frame through Xen either. So the block counter
  reads the engine's EFLAGS in place before each block and refuses to start a block with VM
  or IOPL set (the engine stops; no instruction of it runs), and every entry into the
  hypervisor (a trap, an I/O instruction, the end of a slice) checks the same flags before
  any register is read for the hypervisor: either way the domain is crashed with the reason.
  Departure: on the processor the iret would have returned normally (or faulted on its CS).
  Without the native counter (no gcc), the guest may run in virtual-8086 mode until its next
  entry; what it can reach there is what its own ring 3 can: CPL 3 accesses through its own
  page tables to linear addresses below 1 MB + 64 KB (far below the hypervisor hole at
  HYPERVISOR_VIRT_START), no hypercall (``int $0x82`` from virtual-8086 mode is a #GP with
  IOPL below 3, and any interrupt is an entry, which crashes the domain), and I/O
  instructions are trapped as everywhere. No register state with VM or IOPL set is ever
  handed to the hypervisor's handlers, and every register write-back clears both
  (``_check_eflags``).

Several domains: each vCPU has its own engine, and every engine maps the same machine memory
(``mem_map_ptr``), so a context switch is only a change of engine; measured on Unicorn 2.1.4,
an engine costs about 3 MB and 1 ms to create (benchmarks/bench_sched.py compares the other
design, one engine with a full context save and restore, CR3 and GDTR included, and a TLB
flush). Each engine has its own translation cache: a frame that held code, left this vCPU's
domain and came back rewritten by someone else could run from a stale translation, so a
domain that gains frames has its vCPUs' caches flushed (``flush_code_cache``). A destroyed
domain's engine is closed at once (``release``), not when the garbage collector finds its
reference cycles: a translation cache of random code measured about 220 MB.

A start-up self-test checks the version and the context offsets; a mismatch is one clear
error (``SubstrateError``), never a wrong emulation.
"""

from __future__ import annotations

import ctypes
import importlib
import struct
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

from xenspec.refmodel import native
from xenspec.refmodel.arch import (
    IN_OPCODES,
    IO_IMM8_OPCODES,
    IO_STRING_OPCODES,
    LEGACY_PREFIXES,
    OUT_OPCODES,
    CpuUserRegs,
)
from xenspec.refmodel.domain import Vcpu
from xenspec.refmodel.uaccess import Translate, copy_from_guest, translate, translate_pae
from xenspec.spec import abi

# The binding is only partly typed; the substrate treats it as untyped throughout.
unicorn: Any = importlib.import_module("unicorn")
ucc: Any = importlib.import_module("unicorn.unicorn_const")
x86: Any = importlib.import_module("unicorn.x86_const")
_uclib: Any = importlib.import_module("unicorn.unicorn_py3.unicorn").uclib

UNICORN_VERSION = "2.1.4"

# Offsets in the uc_context blob of Unicorn 2.1.4 (x86, 32-bit mode), found by experiment and
# checked by ``selftest``: the CPU state starts at byte 40 of the blob.
_OFF_HFLAGS = 216  # env->hflags; bits 0-1 are the CPL
_OFF_ERROR_CODE = 5424  # env->error_code of the last exception
_OFF_EXCEPTION_IS_INT = 5428  # env->exception_is_int: 1 for a software int n
_OFF_OLD_EXCEPTION = 5536  # env->old_exception (issue #1883)
_OFF_ENV = 40  # env (CPUX86State) itself: its copy starts here
_OFF_EFLAGS = 176  # env->eflags: every flag but the arithmetic ones and DF (those are lazy)
_OFF_DF = 212  # env->df: 1, or -1 when EFLAGS.DF is set
# The hypercall's registers in the live env, read in place (``_Engine.read_hypercall_args``):
# env->regs[] (target_ulong, EAX ECX EDX EBX ESP EBP ESI EDI) at its start, and the selector
# of env->segs[R_CS] (struct SegmentCache: selector, base, limit, flags: 24 bytes; the segments
# follow regs, eip, eflags, cc_dst, cc_src, cc_src2, cc_op, df, hflags and hflags2, so CS, the
# second, is at byte 208). Checked against Unicorn's own register reads by
# tests/test_cpu_registers.py at every hypercall of a booted guest.
_ENV_HYPERCALL = struct.Struct("<4Q16x2Q144xI")
_ENV_VIEW = _ENV_HYPERCALL.size
# env->regs[R_EDX] and env->eip in the live env: the 64-bit engine has 16 registers of 8 bytes
# before eip (the offsets above, less _OFF_ENV, locate the rest of what a fault hook reads).
_ENV_EDX = 16
_ENV_EIP = 128
# Offset in struct uc_struct (the engine handle) of emu_counter: the instructions the count
# hook has seen in this emu_start, the one it stopped before included (found by experiment).
_OFF_EMU_COUNTER = 1368

_CR0_PE = 0x1
_CR0_MP = 0x2
_CR0_TS = 0x8
_CR0_ET = 0x10
_CR0_NE = 0x20
_CR0_WP = 0x10000
_CR0_PG = 0x80000000
_CR4_TSD = 0x4
_GATE_CLEARED = (abi.X86_EFLAGS_NT | abi.X86_EFLAGS_TF | abi.X86_EFLAGS_RF
                 | abi.X86_EFLAGS_VM)
_CR4_PAE = 0x20
_MSR_EFER = 0xC0000080
_EFER_NXE = 0x800
# EFLAGS: the arithmetic flags (kept lazily by the emulator, cc_op/cc_src), and the flags a
# guest never runs with (Xen runs guests with IOPL 0 and never in virtual-8086 mode).
_EFLAGS_ARITH = 0x8D5  # OF SF ZF AF PF CF
_EFLAGS_NEVER = abi.X86_EFLAGS_VM | abi.X86_EFLAGS_IOPL
_RDTSC = b"\x0f\x31"
_CR0_BASE = _CR0_PE | _CR0_MP | _CR0_ET | _CR0_NE | _CR0_WP | _CR0_PG

_IRET = b"\xcf"
_FRAME = struct.Struct("<5I")  # the ring-entry frame: EIP, CS, EFLAGS, ESP, SS
_XEN_CS: int = abi.HYPERVISOR_CS
_XEN_DS: int = abi.HYPERVISOR_DS
_NEVER = 0xFFFFFFFFFFFFFFFF  # an "until" address the 32-bit PC never reaches
# desc.h, __LDT(0) << 3: the LDT descriptor Xen's load_LDT loads (FIRST_RESERVED_GDT_ENTRY + 9;
# only its hidden part matters here), type 2 (LDT) and present.
_LDT_SELECTOR = (abi.FIRST_RESERVED_GDT_ENTRY + 9) << 3
_LDT_FLAGS = 0x8200

# The registers of CpuUserRegs, in field order, and their Unicorn ids.
_REG_NAMES = tuple(f.name for f in fields(CpuUserRegs))
_REG_IDS = {
    "ebx": x86.UC_X86_REG_EBX, "ecx": x86.UC_X86_REG_ECX, "edx": x86.UC_X86_REG_EDX,
    "esi": x86.UC_X86_REG_ESI, "edi": x86.UC_X86_REG_EDI, "ebp": x86.UC_X86_REG_EBP,
    "eax": x86.UC_X86_REG_EAX, "eip": x86.UC_X86_REG_EIP, "cs": x86.UC_X86_REG_CS,
    "eflags": x86.UC_X86_REG_EFLAGS, "esp": x86.UC_X86_REG_ESP, "ss": x86.UC_X86_REG_SS,
    "es": x86.UC_X86_REG_ES, "ds": x86.UC_X86_REG_DS, "fs": x86.UC_X86_REG_FS,
    "gs": x86.UC_X86_REG_GS,
}
_SEGMENTS = ("es", "ds", "fs", "gs")
# Xen's flat selectors: base 0, descriptors in Xen's reserved GDT page (always present, the
# accessed bit set, unchangeable by a guest).
_FLAT_CODE = frozenset((_XEN_CS, abi.FLAT_RING1_CS, abi.FLAT_RING3_CS))
_FLAT_STACK = frozenset((_XEN_DS, abi.FLAT_RING1_DS, abi.FLAT_RING3_DS))
_GPRS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")
# The CS and SS of registers read at a pending ring entry: not loaded in the engine (it holds
# the stub's), so the way back to the guest is the stub's iret.
_UNLOADED = -1


# ------------------------------------------------------------------------------------------------
# Counting instructions: the native block counter (refmodel/blockcount.c).
# ------------------------------------------------------------------------------------------------
_COUNTER_SLOTS = 4096
_COUNTER_SOURCE = Path(__file__).resolve().with_name("blockcount.c")


class _Counter(ctypes.Structure):
    """struct xs_counter of blockcount.c."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("insns", ctypes.c_uint64), ("limit", ctypes.c_uint64),
        ("generation", ctypes.c_uint64), ("misses", ctypes.c_uint64),
        ("uc_ctl", ctypes.c_void_p), ("uc_emu_stop", ctypes.c_void_p),
        ("request_cache", ctypes.c_int), ("pad", ctypes.c_int),
        ("eflags", ctypes.c_void_p), ("eflags_never", ctypes.c_uint64),
        ("eflags_refused", ctypes.c_uint64),
        ("tag", ctypes.c_uint64 * _COUNTER_SLOTS), ("gen", ctypes.c_uint64 * _COUNTER_SLOTS),
        ("count", ctypes.c_uint32 * _COUNTER_SLOTS),
    ]


_native: Any = None  # the loaded counter library, False if it cannot be built


def native_counter() -> Any:
    """The block counter's shared object, built once per source version; None without gcc
    (or if the build fails), and the substrate then counts with Unicorn's ``count``."""
    global _native
    if _native is None:
        _native = native.load(_COUNTER_SOURCE, UNICORN_VERSION) or False
    return _native or None


def _raw_function(name: str) -> Any:
    """The engine library's ``name`` without the binding's prototype: every argument is passed
    as a ctypes object (the engine handle, arrays, ``byref``) or a small int, and no argument
    is converted, which halves the cost of a register access (measured: a 7-register batch
    read 0.56 -> 0.24 us)."""
    bound = getattr(_uclib, name)
    raw = type(bound)(ctypes.cast(bound, ctypes.c_void_p).value)
    raw.restype = ctypes.c_int
    return raw


_uc_reg_read = _raw_function("uc_reg_read")
_uc_reg_write = _raw_function("uc_reg_write")
_uc_reg_read_batch = _raw_function("uc_reg_read_batch")
_uc_reg_write_batch = _raw_function("uc_reg_write_batch")
_uc_context_save = _raw_function("uc_context_save")
_uc_context_restore = _raw_function("uc_context_restore")
_SEVEN_SLOTS = struct.Struct("<7Q")
_ALL_SLOTS = struct.Struct(f"<{len(fields(CpuUserRegs))}Q")

# uc_cb_hookintr_t: void (*)(uc_engine *uc, uint32_t intno, void *user_data)
_HOOK_INTR_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


def _hypercall_arg_ids() -> tuple[int, ...]:
    return tuple(_REG_IDS[r] for r in ("cs", "eax", "ebx", "ecx", "edx", "esi", "edi"))


class SubstrateError(RuntimeError):
    """The emulator is not the one the substrate was measured on."""


def flat_descriptor(dpl: int, code: bool, limit_pages: int = abi.FLAT_SEGMENT_LIMIT_PAGES) -> int:
    """A present, flat, 32-bit, page-granular segment descriptor with the accessed bit set
    (Xen's own descriptors; the CPU would otherwise write the bit into a read-only GDT)."""
    type_bits = (0xA if code else 0x2) | 0x1  # execute/read or read/write, accessed
    hi = (
        (limit_pages & 0xF0000)
        | abi._SEGMENT_G | abi._SEGMENT_DB | abi._SEGMENT_P | (dpl << 13) | abi._SEGMENT_S
        | (type_bits << 8)
    )
    lo = limit_pages & 0xFFFF
    return hi << 32 | lo


def reserved_gdt_page() -> bytes:
    """The contents of Xen's reserved GDT page (entries 7168..7679): its own ring-0 selectors
    and the guest's flat ring-1 and ring-3 selectors (xen/arch/x86/boot/x86_32.S, gdt_table)."""
    page = bytearray(abi.PAGE_SIZE)
    entries = {
        abi.HYPERVISOR_CS: flat_descriptor(0, True, 0xFFFFF),
        abi.HYPERVISOR_DS: flat_descriptor(0, False, 0xFFFFF),
        abi.FLAT_RING1_CS: flat_descriptor(1, True),
        abi.FLAT_RING1_DS: flat_descriptor(1, False),
        abi.FLAT_RING3_CS: flat_descriptor(3, True),
        abi.FLAT_RING3_DS: flat_descriptor(3, False),
    }
    for sel, desc in entries.items():
        off = (sel >> 3) * 8 - abi.FIRST_RESERVED_GDT_BYTE
        page[off : off + 8] = desc.to_bytes(8, "little")
    return bytes(page)


def stub_page() -> bytes:
    """The model's stub page: a ring-0 ``iret`` at offset 0; frames go at ``FRAME_OFFSET``."""
    return _IRET + bytes(abi.PAGE_SIZE - 1)


FRAME_OFFSET = 0x800  # vCPU n's ring-entry frame is at FRAME_OFFSET + 32 * n of the stub page


class TrapHandlers(Protocol):
    """The hypervisor side of the substrate (refmodel.traps implements it)."""

    def hypercall(self, v: Vcpu, nr: int, *args: int) -> int: ...

    def software_interrupt(self, v: Vcpu, vector: int, regs: CpuUserRegs) -> bool: ...

    def exception(
        self, v: Vcpu, vector: int, error_code: int, cr2: int, regs: CpuUserRegs
    ) -> None: ...

    def invalid_opcode(self, v: Vcpu, regs: CpuUserRegs) -> None: ...


# Where an engine's live env->eflags is: the offset in struct uc_struct of a pointer to the
# CPU object, and the offset of env in that object (found once per process, _find_env).
_env_offsets: list[tuple[int, int]] = []
_ENV_PATTERN_REGS = (x86.UC_X86_REG_EAX, x86.UC_X86_REG_ECX, x86.UC_X86_REG_EDX,
                     x86.UC_X86_REG_EBX)
_ENV_SEARCH = 1 << 18  # bytes of a CPU object searched for env


def _readable_ranges() -> list[tuple[int, int]]:
    """The process's readable mappings (Linux: /proc/self/maps); none elsewhere."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        span, perms = line.split()[:2]
        if perms.startswith("r"):
            lo, hi = (int(x, 16) for x in span.split("-"))
            ranges.append((lo, hi))
    return ranges


def _env_candidates(uch: int, pattern: bytes, known: list[tuple[int, int]],
                    ) -> dict[int, list[tuple[int, int]]] | None:
    """Where ``pattern`` is, behind the pointers ``known`` (offset in uc_struct, offset behind
    the pointer) or, with ``known`` empty, behind every pointer of uc_struct into a readable
    mapping (None if the mappings cannot be read); by address, with the pointers that lead
    there."""
    places: dict[int, list[tuple[int, int]]] = {}
    for at, inside in known:
        env = ctypes.c_uint64.from_address(uch + at).value + inside
        if ctypes.string_at(env, len(pattern)) == pattern:
            places.setdefault(env, []).append((at, inside))
    if known:
        return places
    ranges = _readable_ranges()
    if not ranges:
        return None
    for at in range(0, _OFF_EMU_COUNTER, 8):
        ptr = ctypes.c_uint64.from_address(uch + at).value
        for lo, hi in ranges:
            if lo <= ptr < hi:
                window = ctypes.string_at(ptr, min(hi - ptr, _ENV_SEARCH))
                inside = window.find(pattern)
                while inside >= 0:
                    if inside % 8 == 0:
                        places.setdefault(ptr + inside, []).append((at, inside))
                    inside = window.find(pattern, inside + 1)
                break
    return places


def _find_env(eng: _Engine) -> int | None:
    """The address of the live env (CPUX86State) of the fresh engine ``eng``, or None where
    the process's mappings cannot be read. Its first registers are set to a pattern, and the
    pattern is looked for behind the pointers of the engine's uc_struct; of the places found,
    the one that follows a write of EAX is env, and a write of EFLAGS must show at its
    eflags. The pointers that led there are kept: the next engines look behind them first,
    and search again if none leads to their env."""
    global _env_offsets
    for i, reg in enumerate(_ENV_PATTERN_REGS):
        eng.write(reg, 0x5A170000 + 0x10 * (eng.handle % 4093) + i)
    eng.save()
    pattern = ctypes.string_at(eng.blob + _OFF_ENV, 8 * len(_ENV_PATTERN_REGS))
    live: list[int] = []
    places: dict[int, list[tuple[int, int]]] = {}
    for known in ([_env_offsets, []] if _env_offsets else [[]]):
        found = _env_candidates(eng.handle, pattern, known)
        if found is None:
            return None
        places = found
        eng.write(x86.UC_X86_REG_EAX, 0x1DE5C0DE)
        live = [env for env in places
                if ctypes.string_at(env + 8, len(pattern) - 8) == pattern[8:]
                and ctypes.c_uint64.from_address(env).value == 0x1DE5C0DE]
        eng.write(x86.UC_X86_REG_EAX, 0x5A170000 + 0x10 * (eng.handle % 4093))
        if len(live) == 1:
            break
    if len(live) != 1:
        raise SubstrateError(f"the engine's CPU state was found at {len(live)} places; "
                             f"xenspec needs unicorn=={UNICORN_VERSION}")
    env = live[0]
    eflags = ctypes.c_uint64.from_address(env + _OFF_EFLAGS - _OFF_ENV)
    probe = abi.X86_EFLAGS_ID | abi.X86_EFLAGS_AC | abi.X86_EFLAGS_MBS
    eng.write(x86.UC_X86_REG_EFLAGS, probe | abi.X86_EFLAGS_DF)
    eng.save()
    seen = (eflags.value & ~(_EFLAGS_ARITH | abi.X86_EFLAGS_DF), eng.saved_df)
    for reg in (*_ENV_PATTERN_REGS, x86.UC_X86_REG_EFLAGS):
        eng.write(reg, abi.X86_EFLAGS_MBS if reg == x86.UC_X86_REG_EFLAGS else 0)
    eng.save()
    if seen != (probe, -1) or eng.saved_df != 1:
        raise SubstrateError(f"the engine's EFLAGS and DF are not at offsets {_OFF_EFLAGS} and "
                             f"{_OFF_DF} of the saved context; xenspec needs "
                             f"unicorn=={UNICORN_VERSION}")
    _env_offsets = places[env]
    return env


class _LiveFault:
    """The fields of the live env that a fault hook reads and writes in place (offsets as in
    the saved context, less _OFF_ENV)."""

    def __init__(self, env: int) -> None:
        self.is_int = ctypes.c_int32.from_address(env + _OFF_EXCEPTION_IS_INT - _OFF_ENV)
        self.error_code = ctypes.c_int32.from_address(env + _OFF_ERROR_CODE - _OFF_ENV)
        self.old_exception = ctypes.c_int32.from_address(env + _OFF_OLD_EXCEPTION - _OFF_ENV)
        self.hflags = ctypes.c_uint32.from_address(env + _OFF_HFLAGS - _OFF_ENV)
        self.eip = ctypes.c_uint64.from_address(env + _ENV_EIP)
        self.eax = ctypes.c_uint32.from_address(env)
        self.edx = ctypes.c_uint32.from_address(env + _ENV_EDX)


class _Engine:
    """A Unicorn x86-32 engine with fast register access and saved-context patching."""

    def __init__(self) -> None:
        if unicorn.__version__ != UNICORN_VERSION:
            raise SubstrateError(
                f"xenspec's CPU substrate needs unicorn {UNICORN_VERSION}, found "
                f"{unicorn.__version__}: pip install unicorn=={UNICORN_VERSION}"
            )
        self.uc = unicorn.Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_32)
        self.cr4 = 0  # the CR4 bits every write keeps (PAE for the compat-pae profile)
        self._lib = _uclib
        self._uch = self.uc._uch
        ctx = self.uc.context_save()
        self._ctx = ctx  # keeps the blob alive
        self._ctx_ptr = ctx.context
        base = ctypes.cast(ctx.context, ctypes.c_void_p).value
        assert base is not None
        self._hflags = ctypes.c_uint32.from_address(base + _OFF_HFLAGS)
        self._error_code = ctypes.c_int32.from_address(base + _OFF_ERROR_CODE)
        self._exception_is_int = ctypes.c_int32.from_address(base + _OFF_EXCEPTION_IS_INT)
        self._old_exception = ctypes.c_int32.from_address(base + _OFF_OLD_EXCEPTION)
        self._saved_eflags = ctypes.c_uint64.from_address(base + _OFF_EFLAGS)
        self._saved_df = ctypes.c_int32.from_address(base + _OFF_DF)
        self.blob = base
        self._val = ctypes.c_uint64(0)
        self._val_ref = ctypes.byref(self._val)
        n = len(_REG_NAMES)
        self._all_ids = (ctypes.c_int * n)(*(_REG_IDS[r] for r in _REG_NAMES))
        self._all_vals = (ctypes.c_uint64 * n)()
        size = ctypes.sizeof(ctypes.c_uint64)
        self._all_ptrs = (ctypes.c_void_p * n)(
            *(ctypes.addressof(self._all_vals) + i * size for i in range(n))
        )
        # The batch enter_ring loads: data segments, GPRs, then ESP and EIP.
        entry = (*_SEGMENTS, *_GPRS, "esp", "eip")
        self._entry_n = len(entry)
        self._entry_ids = (ctypes.c_int * len(entry))(*(_REG_IDS[r] for r in entry))
        self._entry_vals = (ctypes.c_uint64 * len(entry))()
        self._entry_ptrs = (ctypes.c_void_p * len(entry))(
            *(ctypes.addressof(self._entry_vals) + i * size for i in range(len(entry)))
        )
        uch = ctypes.cast(self._uch, ctypes.c_void_p).value
        assert uch is not None
        self.handle = uch
        self._emu_counter = ctypes.c_uint64.from_address(uch + _OFF_EMU_COUNTER)
        env = _find_env(self)
        # The live env->eflags (None where it cannot be found: then read through a save),
        # and the live registers of a hypercall (then read and written through Unicorn's
        # API, about 1.6 us more a hypercall: benchmarks/bench_cpu.py's floors).
        self._live_eflags = (None if env is None else
                             ctypes.c_uint64.from_address(env + _OFF_EFLAGS - _OFF_ENV))
        self._live_regs = (None if env is None else memoryview(
            (ctypes.c_char * _ENV_VIEW).from_address(env)).cast("B"))
        self._live_eax = None if env is None else ctypes.c_uint32.from_address(env)
        self._live_fault = None if env is None else _LiveFault(env)
        self._counter: _Counter | None = None
        lib = native_counter()
        if lib is not None:
            self._install_counter(lib)
        self._hc_ids = (ctypes.c_int * 7)(*_hypercall_arg_ids())
        self._hc_vals = (ctypes.c_uint64 * 7)()
        self._hc_ptrs = (ctypes.c_void_p * 7)(
            *(ctypes.addressof(self._hc_vals) + i * size for i in range(7))
        )

    # --- registers ------------------------------------------------------------------------
    def read(self, reg: int) -> int:
        self._val.value = 0
        _uc_reg_read(self._uch, reg, self._val_ref)
        return self._val.value & 0xFFFFFFFF

    def write(self, reg: int, value: int) -> None:
        self._val.value = value & 0xFFFFFFFF
        err = _uc_reg_write(self._uch, reg, self._val_ref)
        if err:
            raise unicorn.UcError(err)

    def read_hypercall_args(self) -> tuple[int, ...]:
        """CS, EAX, EBX, ECX, EDX, ESI, EDI: read in place from the live env (from a hook,
        where the emulator has stored them), or else in one batch call. The registers' upper
        halves are zero in 32-bit mode (the emulator zero-extends every 32-bit write), and
        Unicorn writes the low 2 or 4 bytes of each zeroed slot of a batch, so no masking is
        needed."""
        live = self._live_regs
        if live is not None:
            eax, ecx, edx, ebx, esi, edi, cs = _ENV_HYPERCALL.unpack_from(live)
            return cs & 0xFFFF, eax, ebx, ecx, edx, esi, edi
        return self.read_hypercall_args_api()

    def read_hypercall_args_api(self) -> tuple[int, ...]:
        """``read_hypercall_args`` through Unicorn's API, whatever the engine: what the
        in-place read is tested against."""
        _uc_reg_read_batch(self._uch, self._hc_ids, self._hc_ptrs, 7)
        return _SEVEN_SLOTS.unpack_from(self._hc_vals)

    def write_eax(self, value: int) -> None:
        """A hypercall's result into EAX: in place (from a hook), or through the API. For
        EAX, Unicorn's uc_reg_write only stores the low 32 bits of env->regs[R_EAX]."""
        live = self._live_eax
        if live is None:
            self.write(x86.UC_X86_REG_EAX, value)
        else:
            live.value = value & 0xFFFFFFFF

    def live_fault(self) -> tuple[bool, int, int, int] | None:
        """From a hook, the exception it is called for as a context save would show it (is it
        a software int, its error code, the CPL, EIP), read in place; None without the live
        env (then only the general path, through a save, is taken)."""
        f = self._live_fault
        if f is None:
            return None
        return (bool(f.is_int.value), f.error_code.value & 0xFFFFFFFF, f.hflags.value & 3,
                f.eip.value & 0xFFFFFFFF)

    def live_flags(self) -> int:
        """env->eflags in place (every flag but the arithmetic ones and DF); call only where
        ``live_fault`` is not None."""
        assert self._live_eflags is not None
        return int(self._live_eflags.value)

    def finish_rdtsc(self, value: int, next_eip: int) -> None:
        """From a fault hook with the live env: EDX:EAX = ``value``, EIP = ``next_eip`` (through
        the API, as every EIP the hypervisor sets), and the fault forgotten (old_exception,
        what ``reset_old_exception`` and ``restore`` do after a save)."""
        f = self._live_fault
        assert f is not None
        f.eax.value = value & 0xFFFFFFFF
        f.edx.value = (value >> 32) & 0xFFFFFFFF
        f.old_exception.value = -1
        self.write(x86.UC_X86_REG_EIP, next_eip)

    def read_all(self) -> CpuUserRegs:
        """All of CpuUserRegs in one call."""
        return CpuUserRegs(*self.read_all_values())

    def read_all_values(self) -> tuple[int, ...]:
        """The values of CpuUserRegs' fields, in its order, in one call (no masking needed:
        as for the hypercall arguments, Unicorn writes only the low 4 or 2 bytes of each
        zeroed slot)."""
        _uc_reg_read_batch(self._uch, self._all_ids, self._all_ptrs, len(_REG_NAMES))
        return _ALL_SLOTS.unpack_from(self._all_vals)

    # --- instruction counting ----------------------------------------------------------------
    def _install_counter(self, lib: Any) -> None:
        c = self._counter = _Counter()
        c.uc_ctl = ctypes.cast(self._lib.uc_ctl, ctypes.c_void_p).value
        c.uc_emu_stop = ctypes.cast(self._lib.uc_emu_stop, ctypes.c_void_p).value
        c.request_cache = (ucc.UC_CTL_IO_READ_WRITE << 30) | (2 << 26) | (
            ucc.UC_CTL_TB_REQUEST_CACHE)
        c.limit = 2**64 - 1
        if self._live_eflags is not None:
            c.eflags = ctypes.addressof(self._live_eflags)
            c.eflags_never = _EFLAGS_NEVER
        self._counter_hook = ctypes.c_size_t()
        err = self._lib.uc_hook_add(
            self._uch, ctypes.byref(self._counter_hook), ucc.UC_HOOK_BLOCK,
            ctypes.cast(lib.xs_count_block, ctypes.c_void_p), ctypes.byref(c),
            ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise unicorn.UcError(err)

    @property
    def counts_blocks(self) -> bool:
        """True with the native block counter, False with Unicorn's per-instruction count."""
        return self._counter is not None

    def run_counted(self, begin: int, count: int) -> int:
        """Run ``count`` (> 0) instructions from ``begin``, or fewer if a hook stops the
        engine; return how many ran (with the block counter, up to the end of the block that
        reached ``count``). ``old_exception`` is reset first: a slice that ended in the middle
        of the guest's work leaves it stale, and the next fault would arrive as a double fault
        (issue #1883)."""
        self.save()
        self.reset_old_exception()
        self.restore()
        c = self._counter
        if c is None:
            self.uc.emu_start(begin, _NEVER, count=count)
            # The counter includes the instruction the count hook stopped before.
            return min(self._emu_counter.value, count)
        c.insns = 0
        c.limit = count
        try:
            self.uc.emu_start(begin, _NEVER)
        finally:
            c.limit = 2**64 - 1
        return int(c.insns)

    def mode_flags(self) -> int:
        """The flags among VM and IOPL the engine runs with now (env->eflags: exact, whatever
        the lazy arithmetic flags hold). Read in place, or through a context save."""
        live = self._live_eflags
        if live is None:
            self.save()
            live = self._saved_eflags
        return live.value & _EFLAGS_NEVER

    def gate_flags(self) -> int:
        """The flags a gate clears (NT, TF, RF, VM) as the engine runs with them now: read in
        place from env->eflags (no lazy arithmetic flag among them), or through the API."""
        live = self._live_eflags
        flags = self.read(x86.UC_X86_REG_EFLAGS) if live is None else live.value
        return flags & _GATE_CLEARED

    def take_refused(self) -> int:
        """The EFLAGS of a block the counter refused to start (0 if none), and forget it."""
        c = self._counter
        if c is None or not c.eflags_refused:
            return 0
        flags, c.eflags_refused = int(c.eflags_refused), 0
        return flags

    def exact_eflags(self) -> int:
        """EFLAGS where the lazy arithmetic flags may be stale (in an I/O hook: the emulator
        stores its flag state before an instruction that may fault, not before IN/OUT): every
        flag but the arithmetic ones from env->eflags and env->df, which are exact; the
        arithmetic ones as the emulator computes them, kept to their 6 bits (with a stale
        operation its computation can return any 32 bits)."""
        computed = self.read(x86.UC_X86_REG_EFLAGS)
        self.save()
        flags = self._saved_eflags.value & ~(_EFLAGS_ARITH | abi.X86_EFLAGS_DF) & 0xFFFFFFFF
        if self.saved_df < 0:
            flags |= abi.X86_EFLAGS_DF
        return flags | (computed & _EFLAGS_ARITH) | abi.X86_EFLAGS_MBS

    def counted_so_far(self) -> int:
        """Instructions run so far in the current ``run_counted`` (read from a hook)."""
        c = self._counter
        return int(self._emu_counter.value if c is None else c.insns)

    def code_changed(self) -> None:
        """The code under some address may differ from what the counter saw (a new base
        pointer, a dropped translation cache): forget the cached block counts."""
        if self._counter is not None:
            self._counter.generation += 1

    def flush_code_cache(self) -> None:
        self.uc.ctl_flush_tb()
        self.code_changed()

    def hook_add_raw(self, kind: int, callback: Any) -> None:
        """Register a ctypes callback with the engine directly: no binding wrapper between
        the engine and the hypervisor on the trap path. The caller keeps ``callback`` alive."""
        handle = ctypes.c_size_t()
        err = self._lib.uc_hook_add(self._uch, ctypes.byref(handle), kind,
                                    ctypes.cast(callback, ctypes.c_void_p), None,
                                    ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise unicorn.UcError(err)

    # --- the saved context -----------------------------------------------------------------
    def save(self) -> None:
        _uc_context_save(self._uch, self._ctx_ptr)

    def restore(self) -> None:
        _uc_context_restore(self._uch, self._ctx_ptr)

    @property
    def saved_cpl(self) -> int:
        return self._hflags.value & 3

    def set_saved_cpl(self, cpl: int) -> None:
        self._hflags.value = (self._hflags.value & ~3) | cpl

    @property
    def saved_df(self) -> int:
        """env->df of the saved context: 1, or -1 with EFLAGS.DF set."""
        return int(self._saved_df.value)

    @property
    def saved_error_code(self) -> int:
        return self._error_code.value & 0xFFFFFFFF

    @property
    def saved_exception_is_int(self) -> bool:
        return bool(self._exception_is_int.value)

    @property
    def saved_old_exception(self) -> int:
        return self._old_exception.value

    def reset_old_exception(self) -> None:
        self._old_exception.value = -1

    # --- the MMU ---------------------------------------------------------------------------
    def flush_tlb(self) -> None:
        self.uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)

    def load_ldt(self, base: int, ents: int) -> None:
        """The LDTR as Xen's load_LDT sets it: ``ents`` descriptors at ``base``, or null."""
        ldtr = (_LDT_SELECTOR, base, ents * 8 - 1, _LDT_FLAGS) if ents else (0, 0, 0, 0)
        self.uc.reg_write(x86.UC_X86_REG_LDTR, ldtr)

    def load_cr3(self, maddr: int) -> None:
        self.write(x86.UC_X86_REG_CR3, maddr)
        self.code_changed()

    def setup_protected_mode(self, gdt_base: int, cr3: int) -> None:
        """Paging on with WP, Xen's GDT loaded, at CPL 0 with Xen's flat ring-0 segments;
        with ``cr4`` (CR4.PAE for the compat-pae profile) and, with PAE, EFER.NXE so that
        entries' bit 63 is NX rather than a reserved bit."""
        self.uc.reg_write(x86.UC_X86_REG_GDTR, (0, gdt_base, abi.GDT_PAGES * abi.PAGE_SIZE - 1, 0))
        self.write(x86.UC_X86_REG_CR4, self.cr4)
        if self.cr4 & _CR4_PAE:
            self.uc.reg_write(x86.UC_X86_REG_MSR, (_MSR_EFER, _EFER_NXE))
        self.write(x86.UC_X86_REG_CR3, cr3)
        self.write(x86.UC_X86_REG_CR0, _CR0_BASE)
        self.write(x86.UC_X86_REG_SS, _XEN_DS)
        self.write(x86.UC_X86_REG_DS, _XEN_DS)
        self.write(x86.UC_X86_REG_ES, _XEN_DS)
        self.write(x86.UC_X86_REG_CS, _XEN_CS)

    def enter_ring(
        self, regs: CpuUserRegs, stub_va: int, frame_va: int,
        write_frame: Callable[[bytes], None], cpl: int = 0, flat: bool = True,
    ) -> bool:
        """Load ``regs`` with a CS/SS change: load the data segments and GPRs and point EIP
        at the ``iret`` stub over a frame EIP, CS, EFLAGS, ESP, SS. The stub runs as the first
        instruction when emulation resumes. An ``iret`` may only go outward, and one to the
        ring running now (``cpl``) restores no ESP or SS, so for a ring inside or equal to
        ``cpl`` the saved context is first put at CPL 0 (a new CS in the same ring: a handler
        or an iret frame naming another code segment); the ring-1 kernel's return to ring 3
        needs no patch.

        The stub is fetched through CS and pops its frame through SS, so it may run on the
        guest's segments only when they are Xen's flat ones (``flat``: base 0, descriptors in
        Xen's reserved GDT page, which no guest can change). With any other CS or SS (a guest
        descriptor may have any base) the engine goes to CPL 0 and loads Xen's own flat ring-0
        selectors first: else the "stub" would be guest bytes at that base plus the stub's
        address, run at CPL 0.

        True if the engine was put at CPL 0: it stays there until the stub's iret succeeds.
        Whatever the caller does next, the stub must run before any guest code (or, if the
        iret faults, the engine must come back here): the caller checks the frame's CS."""
        # Entering Xen through a gate clears NT, TF, RF and VM (SDM vol. 3, 6.12.1); the
        # engine took the trap in a hook, with the guest's flags still live. An IRET with NT
        # set is a task return, and TF would single-step the stub: clear them. None of the
        # four is a lazy arithmetic flag or DF, so env->eflags in place shows them exactly
        # as a read through the API would; only a write needs the computed EFLAGS.
        if self.gate_flags():
            live = self.read(x86.UC_X86_REG_EFLAGS)
            self.write(x86.UC_X86_REG_EFLAGS, live & ~_GATE_CLEARED)
        lowered = not flat or regs.cs & 3 <= cpl
        if lowered:
            self.save()
            self.set_saved_cpl(0)
            self.restore()
            if not flat:
                self.write(x86.UC_X86_REG_SS, _XEN_DS)
                self.write(x86.UC_X86_REG_CS, _XEN_CS)
        write_frame(_FRAME.pack(regs.eip & 0xFFFFFFFF, regs.cs, regs.eflags & 0xFFFFFFFF,
                                regs.esp & 0xFFFFFFFF, regs.ss))
        vals = self._entry_vals
        vals[0], vals[1], vals[2], vals[3] = regs.es, regs.ds, regs.fs, regs.gs
        vals[4], vals[5], vals[6], vals[7] = regs.eax, regs.ebx, regs.ecx, regs.edx
        vals[8], vals[9], vals[10] = regs.esi, regs.edi, regs.ebp
        vals[11], vals[12] = frame_va, stub_va
        err = _uc_reg_write_batch(self._uch, self._entry_ids, self._entry_ptrs, self._entry_n)
        if err:
            raise unicorn.UcError(err)
        return lowered

    def cpl(self) -> int:
        """The CPL the engine runs at (its hflags, read through a context save)."""
        self.save()
        return self.saved_cpl


def counting_engine() -> _Engine:
    """A bare engine with the substrate's instruction counter and no other hook, its limit out
    of reach (for benchmarks: what deterministic time costs by itself). Keep the returned
    object alive while its ``uc`` runs: it owns the counter the engine calls."""
    return _Engine()


def _check_eflags(eflags: int) -> int:
    """The substrate's safety net: a guest never runs with IOPL > 0, VM86 or IF clear."""
    eflags &= ~(abi.X86_EFLAGS_IOPL | abi.X86_EFLAGS_VM | abi.X86_EFLAGS_NT)
    return eflags | abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS


class UnicornCPU:
    """Runs one vCPU of a domain whose page tables, GDT page and stub page are in place.

    ``stub_va``/``stub_maddr`` locate the domain's stub page; the vCPU's ring-entry frame is
    at ``FRAME_OFFSET + 32 * vcpu_id`` in it.
    """

    def __init__(
        self,
        memory: Any,
        v: Vcpu,
        handlers: TrapHandlers,
        gdt_base: int,
        stub_va: int,
        stub_maddr: int,
        walk: Translate = translate,
    ) -> None:
        selftest()
        self.v = v
        self.memory = memory
        self.walk = walk  # the page-table walk of the machine's ABI profile
        self.handlers = handlers
        self.engine = _Engine()
        if walk is translate_pae:
            self.engine.cr4 = _CR4_PAE
        self.uc = self.engine.uc
        ram = memory.ram
        self._ram_buf = (ctypes.c_char * len(ram)).from_buffer(ram)
        self.uc.mem_map_ptr(0, len(ram), ucc.UC_PROT_ALL, ctypes.addressof(self._ram_buf))
        self.stub_va = stub_va
        frame_off = FRAME_OFFSET + 32 * v.vcpu_id
        self.frame_va = stub_va + frame_off
        self.frame_maddr = stub_maddr + frame_off
        self.gdt_base = gdt_base
        self._cr3 = v.guest_table
        self._flushes = v.tlb_flushes
        self._invlpgs = len(v.tlb_invlpgs)
        self._real_ts = False
        self.virtual_ts: Callable[[], bool] = lambda: False
        self._regs: CpuUserRegs | None = None
        self._orig: CpuUserRegs | None = None
        self.instructions_hint = 0
        self.traps = 0
        self.instructions = 0  # run through run_slice
        self._flush_code = False
        self._slice_start_traps = 0
        self.slice_traps = 0  # traps taken in the last slice
        # Called on every return to the guest, with the registers it will resume with (the
        # event upcall: it may redirect them to the event callback).
        self.upcall: Callable[[Vcpu, CpuUserRegs], None] | None = None
        # Asked first, so that most traps read no registers for it: may an upcall be due?
        self.upcall_wanted: Callable[[], bool] = lambda: True
        # Asked after every trap, once the registers are applied: True ends the time slice
        # (the vCPU blocked, yielded, was paused, or the scheduler wants the CPU back).
        self.should_stop: Callable[[], bool] = lambda: False
        self.rdtsc: Callable[[], int] | None = None
        # Xen's return path reloads the data segments: checks the registers the guest resumes
        # with and may redirect them to the failsafe callback (refmodel/desc.py).
        self.reload_segments: Callable[[Vcpu, CpuUserRegs], None] | None = None
        # The failsafe callback, for the stub's iret faulting on a CS or SS (see _entry_fault).
        self.failsafe: Callable[[Vcpu, CpuUserRegs, str], None] | None = None
        self._intr_cb = _HOOK_INTR_CFUNC(self._hook_intr)
        self.engine.hook_add_raw(ucc.UC_HOOK_INTR, self._intr_cb)
        self.uc.hook_add(ucc.UC_HOOK_INSN_INVALID, self._hook_insn_invalid)
        self._io_init(len(ram))
        self.engine.setup_protected_mode(gdt_base, v.guest_table << abi.PAGE_SHIFT)
        self._ldt_ents = v.ldt_ents
        self.engine.load_ldt(gdt_base + abi.LDT_VIRT_OFFSET, v.ldt_ents)
        # A ring entry is prepared: EIP is at the stub, the frame holds the guest's EIP, CS,
        # EFLAGS, ESP and SS (set by _enter; a trap, or a slice ending away from the stub,
        # means the stub has run).
        self._entry_pending = False
        # The substrate put the engine at CPL 0 (setup_protected_mode, or for the stub) and
        # has not seen it leave since: the next resumption of guest code reads the CPL.
        self._cpl_lowered = True

    # --- the GuestCPU interface ------------------------------------------------------------
    def user_regs(self) -> CpuUserRegs:
        """The guest's registers at this trap (read once); changes are applied on return.

        While a ring entry is pending (the engine stopped at the stub, or the stub's iret
        faulted) the guest's EIP, CS, EFLAGS, ESP and SS are the frame's, not the engine's:
        the engine holds the stub's. Its CS and SS are then marked as not loaded, so that
        whatever the hypervisor does with these registers (an upcall on top, the failsafe
        callback) goes back to the guest through the stub's iret again."""
        if self._regs is None:
            values = self.engine.read_all_values()
            regs = self._regs = CpuUserRegs(*values)
            orig = self._orig = CpuUserRegs(*values)
            if self._entry_pending and regs.eip == self.stub_va:
                eip, cs, eflags, esp, ss = _FRAME.unpack(self.memory.read(self.frame_maddr, 20))
                regs.eip, regs.cs, regs.eflags, regs.esp, regs.ss = (
                    eip, cs & 0xFFFF, eflags, esp, ss & 0xFFFF)
                orig.cs = orig.ss = _UNLOADED
        return self._regs

    @property
    def _at_entry(self) -> bool:
        """The registers read at this trap are a pending ring entry's (``user_regs``)."""
        return self._orig is not None and self._orig.cs == _UNLOADED

    def start(self, regs: CpuUserRegs) -> None:
        """Load the initial register state (the domain builder's) through the iret stub."""
        regs.eflags = _check_eflags(regs.eflags)
        cs, ss = self.engine.read(x86.UC_X86_REG_CS), self.engine.read(x86.UC_X86_REG_SS)
        self._enter(regs, cs, ss)

    def _enter(self, regs: CpuUserRegs, cs: int, ss: int) -> bool:
        """Resume the guest at ``regs`` through the iret stub, from an engine holding ``cs``
        and ``ss`` (``_UNLOADED``: the stub's own, after a pending entry). The stub's iret
        puts the CPU in the ring of the frame's CS RPL, so a frame with RPL 0 is never
        written: Xen alone runs in ring 0 (INV-PRIV; do_iret refuses such a frame and every
        selector the guest registers has its RPL raised), and if one reaches here anyway
        the domain is crashed instead (False)."""
        if regs.cs & 3 == 0:
            self.v.domain.crash(f"the substrate would enter the guest in ring 0 at "
                                f"{regs.cs & 0xFFFF:#x}:{regs.eip & 0xFFFFFFFF:#x}")
            return False
        if self.engine.enter_ring(regs, self.stub_va, self.frame_va, self._write_frame, cs & 3,
                                  cs in _FLAT_CODE and ss in _FLAT_STACK):
            self._cpl_lowered = True
        self._entry_pending = True
        return True

    def _guest_cpl_ok(self) -> bool:
        """Defence in depth, asked before the engine resumes guest code other than through
        the stub: the CPL must not be 0. The CPL is read (a context save) only while the
        substrate has lowered it and not seen it leave; at CPL 0 the domain is crashed with
        the reason instead of running (False)."""
        if not self._cpl_lowered:
            return True
        if self.engine.cpl() == 0:
            eip = self.engine.read(x86.UC_X86_REG_EIP)
            self.v.domain.crash(f"the substrate would resume guest code at CPL 0 (eip "
                                f"{eip:#x})")
            return False
        self._cpl_lowered = False
        return True

    def _guest_mode_ok(self) -> bool:
        """The engine is not in virtual-8086 mode and its IOPL is 0, as Xen runs every guest:
        asked at every entry from guest code (a trap, an I/O instruction, the end of a slice)
        before any register reaches the hypervisor. Otherwise the domain is crashed with the
        reason (False): see the module docstring, "virtual-8086 mode"."""
        eng = self.engine
        refused = eng.take_refused()
        bad = eng.mode_flags()
        if not bad:
            return True
        what = (f"virtual-8086 mode (IOPL {(bad & abi.X86_EFLAGS_IOPL) >> 12})"
                if bad & abi.X86_EFLAGS_VM else f"IOPL {(bad & abi.X86_EFLAGS_IOPL) >> 12}")
        when = ("stopped before its first instruction there" if refused
                else "seen at its next entry into the hypervisor")
        cs, eip = eng.read(x86.UC_X86_REG_CS), eng.read(x86.UC_X86_REG_EIP)
        self._regs = self._orig = None
        self.v.domain.crash(
            f"the guest entered {what} at {cs:#x}:{eip:#x}: the emulator's iret took VM and "
            f"IOPL from the popped EFLAGS at CPL 1 or 3, where the processor ignores them "
            f"(substrate departure; {when})")
        return False

    # --- time slices (the scheduler's interface) -------------------------------------------
    def run_slice(self, max_instructions: int) -> int:
        """Run the vCPU for at most ``max_instructions`` (> 0); return how many ran. The slice
        ends early when the domain stops or ``should_stop`` says so after a trap."""
        d = self.v.domain
        if d.is_dying:  # destroyed: its vCPUs never run again (domain_kill)
            return 0
        if self._flush_code:
            self._flush_code = False
            self.engine.flush_code_cache()
        eip = self.engine.read(x86.UC_X86_REG_EIP)
        self._entry_pending = self._entry_pending and eip == self.stub_va
        if not self._entry_pending and not self._guest_cpl_ok():
            return 0
        traps_before = self._slice_start_traps = self.traps
        self._running = True
        try:
            ran = self._run_counted(eip, max_instructions)
        except unicorn.UcError as exc:
            ran = self._slice_ran + self.engine.counted_so_far()
            if d.is_running:
                d.crash(f"the CPU stopped at eip {self.engine.read(x86.UC_X86_REG_EIP):#x}:"
                        f" {exc}")
        if self._entry_pending and self.engine.read(x86.UC_X86_REG_EIP) != self.stub_va:
            self._entry_pending = False  # the stub ran and no trap followed
        self._running = False
        if d.is_running:
            self._guest_mode_ok()
        if self._release_pending:
            self.release()
        self.instructions += ran
        self.slice_traps = self.traps - traps_before
        return ran

    _running = False  # inside run_slice: the engine may be running
    _release_pending = False

    def release(self) -> None:
        """The vCPU's domain was destroyed: close its engine now (or, from inside a slice,
        once the slice has ended) rather than whenever the garbage collector finds the
        engine's reference cycles (its hooks are bound methods): an engine's translation
        cache can hold hundreds of MB. The vCPU never runs again (``run_slice`` of a dying
        domain runs nothing, and nothing else here touches the engine then)."""
        if not self.v.domain.is_dying:
            return
        if self._running:
            self._release_pending = True
            return
        self._release_pending = False
        self._regs = self._orig = None
        finalizer = getattr(self.uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()  # the binding's own uc_close, run once

    def set_rdtsc(self, source: Callable[[], int]) -> None:
        """RDTSC from the guest returns ``source()`` (a 64-bit count)."""
        self.rdtsc = source
        self.engine.write(x86.UC_X86_REG_CR4, self.engine.cr4 | _CR4_TSD)

    def _emulate_rdtsc(self, regs: CpuUserRegs) -> bool:
        if self.rdtsc is None:
            return False
        if not self._rdtsc_at(regs.eip):
            return False
        value = self.rdtsc()
        regs.eax, regs.edx = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
        regs.eip = (regs.eip + 2) & 0xFFFFFFFF
        return True

    def _rdtsc_at(self, eip: int) -> bool:
        """The guest's bytes at ``eip`` are RDTSC (read through its page tables)."""
        return copy_from_guest(self.memory, self.v.guest_table, eip, 2, self.walk) == _RDTSC

    rdtsc_in_place = 0  # RDTSCs emulated by _rdtsc_in_place

    def _rdtsc_in_place(self) -> bool:
        """The #GP of a guest's RDTSC (CR4.TSD, the clock's TSC) emulated as the general path
        of ``_hook_intr`` does it (``_emulate_rdtsc`` after a context save and ``user_regs``),
        with the few registers involved read and written in place: guests read their clock
        often. False, with nothing changed, wherever the general path has more to decide: no
        clock TSC or no live env, a ring entry pending, a software int, an error code, CPL 0,
        flags the return path would correct, or other bytes at EIP. Tested against the
        general path in tests/test_rdtsc_fast_path.py."""
        eng, clock_tsc = self.engine, self.rdtsc
        fault = eng.live_fault() if clock_tsc is not None else None
        if clock_tsc is None or fault is None or self._entry_pending:
            return False
        is_int, error_code, cpl, eip = fault
        if is_int or error_code or cpl == 0:
            return False
        flags = eng.live_flags()
        if _check_eflags(flags) != flags | abi.X86_EFLAGS_MBS or not self._rdtsc_at(eip):
            return False
        self._cpl_lowered = False  # seen in the guest's own ring
        eng.finish_rdtsc(clock_tsc(), (eip + 2) & 0xFFFFFFFF)
        return True

    def slice_progress(self) -> tuple[int, int]:
        """Instructions run and traps taken so far in the slice under way (from a hook)."""
        return (self._slice_ran + self.engine.counted_so_far(),
                self.traps - self._slice_start_traps)

    def switch_in(self) -> None:
        """The vCPU is about to run again: carry out what changed while it was off the CPU
        (base pointer, TLB, CR0.TS) and give the event upcall its chance."""
        self._regs = self._orig = None
        self._apply(stop=False)

    def flush_code_cache(self) -> None:
        """Drop every translation before the next slice: frames this domain gained may hold
        code cached earlier (never from a hook: the engine is running)."""
        self._flush_code = True

    # --- hooks -----------------------------------------------------------------------------
    def _write_frame(self, frame: bytes) -> None:
        self.memory.write(self.frame_maddr, frame)

    def _hook_intr(self, _uch: Any, intno: int, _user: Any) -> None:
        """UC_HOOK_INTR, called by the engine directly (``_HOOK_INTR_CFUNC``)."""
        if self._io_pending:  # the rest of an I/O instruction's block: undone, not handled
            self.uc.emu_stop()
            return
        try:
            self.traps += 1
            eng = self.engine
            if not self._guest_mode_ok():
                self._return_to_guest()
                return
            if intno >= 32:  # an int n: never the stub's iret, so the stub has run
                self._entry_pending = False
                if intno == abi.HYPERCALL_VECTOR:  # a hypercall if it comes from ring 1
                    args = eng.read_hypercall_args()
                    if args[0] & 3 == 1:
                        rc = self.handlers.hypercall(self.v, *args[1:])
                        if self._regs is not None:
                            self._regs.eax = rc
                        else:
                            eng.write_eax(rc)
                        self._apply(stop=True)  # _return_to_guest, one call less here
                        return
                if not self.handlers.software_interrupt(self.v, intno, self.user_regs()):
                    # The processor delivered it (Xen not entered), unless writing its frame
                    # crashed the domain: then the slice ends, as a crashed domain runs no
                    # further instruction (domain_crash_synchronous never returns to it).
                    self._apply(stop=not self.v.domain.is_running, xen_entered=False)
                    return
            elif intno == abi.TRAP_gp_fault and self._rdtsc_in_place():
                self.rdtsc_in_place += 1
            else:
                eng.save()
                is_int = eng.saved_exception_is_int
                error_code = eng.saved_error_code
                if not is_int:
                    eng.reset_old_exception()
                    eng.restore()
                regs = self.user_regs()
                self._entry_pending = False
                if not self._at_entry and eng.saved_cpl:
                    self._cpl_lowered = False  # seen in the guest's own ring
                if self._at_entry:
                    self._entry_fault(intno, regs)
                elif eng.saved_cpl == 0:
                    # Guest code ran at CPL 0: the substrate failed to keep it out of ring 0
                    # (every return path checks; this is the last line).
                    self.v.domain.crash(f"guest code ran at CPL 0 (vector {intno} at "
                                        f"{regs.cs:#x}:{regs.eip:#x})")
                elif is_int:
                    self.handlers.software_interrupt(self.v, intno, regs)
                elif intno == abi.TRAP_gp_fault and self._emulate_rdtsc(regs):
                    pass
                else:
                    if intno == abi.TRAP_no_device and self._real_ts:
                        self._set_ts(False)
                    cr2 = eng.read(x86.UC_X86_REG_CR2) if intno == abi.TRAP_page_fault else 0
                    self.handlers.exception(self.v, intno, error_code, cr2, regs)
            self._return_to_guest()
        except BaseException as exc:  # never let an exception unwind through Unicorn
            self.v.domain.crash(f"hypervisor bug: {type(exc).__name__}: {exc}")
            self.uc.emu_stop()
            self.pending_exception = exc

    def _hook_insn_invalid(self, uc: Any, _user: Any) -> bool:
        if self._io_pending:
            uc.emu_stop()
            return True
        try:
            self.traps += 1
            self._entry_pending = False
            if not self._guest_mode_ok():
                self._return_to_guest()
                return True
            self.handlers.invalid_opcode(self.v, self.user_regs())
            self._return_to_guest()
        except BaseException as exc:
            self.v.domain.crash(f"hypervisor bug: {type(exc).__name__}: {exc}")
            self.uc.emu_stop()
            self.pending_exception = exc
        return True

    pending_exception: BaseException | None = None

    # --- I/O instructions ------------------------------------------------------------------
    def _io_init(self, ram_size: int) -> None:
        """The IN/OUT hooks and the empty page directory (one zero page just above machine
        memory, mapped in this engine only)."""
        self._io_pending = False
        self._io_ctx = self.uc.context_save()
        self._io_seen: tuple[int, int, int] = (0, 0, 0)  # the hook's EIP, port and size
        self._slice_ran = 0  # instructions run in the earlier parts of the slice under way
        self._io_empty_pd = -(-ram_size // abi.PAGE_SIZE) * abi.PAGE_SIZE
        if self._io_empty_pd + abi.PAGE_SIZE > 1 << 32:
            raise SubstrateError("machine memory leaves no room below 4 GB for the substrate's "
                                 "empty page directory")
        self.uc.mem_map(self._io_empty_pd, abi.PAGE_SIZE, ucc.UC_PROT_READ)
        self.uc.hook_add(ucc.UC_HOOK_INSN, self._hook_in, None, 1, 0, x86.UC_X86_INS_IN)
        self.uc.hook_add(ucc.UC_HOOK_INSN, self._hook_out, None, 1, 0, x86.UC_X86_INS_OUT)

    def _hook_in(self, uc: Any, port: int, size: int, _user: Any) -> int:
        self._io_stop(port, size)
        return 0

    def _hook_out(self, uc: Any, port: int, size: int, _value: int, _user: Any) -> None:
        self._io_stop(port, size)

    def _io_stop(self, port: int, size: int) -> None:
        """Keep the context from before the I/O instruction and let the rest of its block
        touch nothing; the #GP is delivered once the engine has stopped."""
        if self._io_pending:
            return
        self._io_pending = True
        self.uc.context_update(self._io_ctx)
        self._io_seen = (self.engine.read(x86.UC_X86_REG_EIP), port, size)
        self.engine.write(x86.UC_X86_REG_CR3, self._io_empty_pd)
        self.uc.emu_stop()

    def _run_counted(self, eip: int, count: int) -> int:
        """``run_counted``, delivering the #GP(0) of each I/O instruction and going on with
        the instructions left while the domain runs and the scheduler lets it."""
        eng = self.engine
        self._slice_ran = 0
        ran = eng.run_counted(eip, count)
        while self._io_pending:
            self._slice_ran += ran
            ran = 0
            self._io_trap()
            if (self._slice_ran >= count or not self.v.domain.is_running
                    or self.pending_exception is not None or self.should_stop()):
                break
            ran = eng.run_counted(eng.read(x86.UC_X86_REG_EIP), count - self._slice_ran)
        ran += self._slice_ran
        self._slice_ran = 0
        return ran

    def _io_trap(self) -> None:
        """Rewind to the I/O instruction and deliver its #GP(0) as ``_hook_intr`` would."""
        self._io_pending = False
        self._entry_pending = False
        self.uc.context_restore(self._io_ctx)
        self.engine.flush_tlb()
        try:
            self.traps += 1
            if not self._guest_mode_ok():
                self._return_to_guest()
                return
            # The emulator's lazy flag state is stale here: EFLAGS as it reads it could hold
            # any bits (VM, IOPL, bits 22-31). Load the exact flags, so that the hypervisor
            # and the guest after it see them.
            self.engine.write(x86.UC_X86_REG_EFLAGS, self.engine.exact_eflags())
            eip = self._io_instruction()
            if eip is None:
                self.v.domain.crash(f"the substrate lost the I/O instruction after "
                                    f"{self._io_seen[0]:#x} (port {self._io_seen[1]:#x})")
                return
            regs = self.user_regs()
            regs.eip = eip
            self.handlers.exception(self.v, abi.TRAP_gp_fault, 0, 0, regs)
            self._return_to_guest()
        except BaseException as exc:
            self.v.domain.crash(f"hypervisor bug: {type(exc).__name__}: {exc}")
            self.pending_exception = exc

    def _io_instruction(self) -> int | None:
        """The address of the I/O instruction the hook saw. The hook's EIP is the last one the
        translated code stored: the instruction itself when every instruction is counted, else
        the start of its block (or a later instruction of it), so the first I/O instruction
        of the straight-line code from there, for the hook's port and size, is the one."""
        start, port, size = self._io_seen
        code = None
        for end in ((start | 0xFFF) + 0x1001, (start | 0xFFF) + 1):  # 2 pages, else 1
            code = copy_from_guest(self.memory, self.v.guest_table, start, end - start,
                                   self.walk)
            if code is not None:
                break
        if code is None:
            return None
        offset = _find_io_instruction(code)
        if offset is None:
            return None
        pfx, opcode = _io_opcode(code[offset:])
        want_port = code[offset + pfx + 1] if opcode in _IO_IMM8 else self.engine.read(
            x86.UC_X86_REG_EDX) & 0xFFFF
        want_size = 1 if opcode in _IO_BYTE else 2 if 0x66 in code[offset:offset + pfx] else 4
        if (want_port, want_size) != (port, size):
            return None
        return (start + offset) & 0xFFFFFFFF

    def _entry_fault(self, intno: int, regs: CpuUserRegs) -> None:
        """The stub's iret into the guest faulted (a CS or SS the CPU refuses); ``regs`` are
        the frame's (``user_regs``). Xen's own iret faulting (entry.S restore_all_guest FLT5,
        FIX5) ends in the failsafe callback with the frame it was returning with; without a
        hook, or when that frame is the failsafe callback's own entry, the domain is crashed.
        The engine is still where the stub left it (at CPL 0, unless the entry went outward
        from ring 1): the way back to the guest is the stub's iret again, never a register
        write (the CS and SS of ``regs`` are marked as not loaded)."""
        what = f"vector {intno} entering the guest at {self._frame_text()}"
        if self.failsafe is None or (regs.cs, regs.eip) == self._failsafe_entry:
            self.v.domain.crash(what)
            return
        self.failsafe(self.v, regs, what)
        self._failsafe_entry = (regs.cs, regs.eip)

    _failsafe_entry: tuple[int, int] = (-1, -1)

    def _frame_text(self) -> str:
        raw = self.memory.read(self.frame_maddr, 20)
        eip, cs, efl, esp, ss = (int.from_bytes(raw[i : i + 4], "little") for i in range(0, 20, 4))
        return f"{cs:#x}:{eip:#x} eflags {efl:#x} stack {ss:#x}:{esp:#x}"

    def _set_ts(self, on: bool) -> None:
        cr0 = self.engine.read(x86.UC_X86_REG_CR0)
        self.engine.write(x86.UC_X86_REG_CR0, (cr0 | _CR0_TS) if on else (cr0 & ~_CR0_TS))
        self._real_ts = on

    def _return_to_guest(self) -> None:
        self._apply(stop=True)

    def _apply(self, stop: bool, xen_entered: bool = True) -> None:
        """Apply what the hypervisor changed: registers, ring, base pointer, TLB, CR0.TS; call
        the upcall hook (unless Xen was not ``xen_entered``: an interrupt the processor
        delivered itself); with ``stop``, end the slice if the scheduler asks."""
        v = self.v
        if not v.domain.is_running or v.domain.is_dying:
            self._regs = self._orig = None
            if stop:
                self.uc.emu_stop()
            return
        # Xen's return path runs the scheduler before it looks for events: a vCPU leaving the
        # CPU gets its upcall when it is switched in again.
        leaving = stop and self.should_stop()
        if self.upcall is not None and not leaving and xen_entered and self.upcall_wanted():
            self.upcall(v, self.user_regs())
        if not self._load_segments():
            self._regs = self._orig = None
            if stop:
                self.uc.emu_stop()
            return
        try:
            self._apply_state()
        except unicorn.UcError as exc:
            # The engine refused a register the hypervisor wrote (a selector whose load it
            # faults on that the return-path checks did not foresee): the domain, never the
            # hypervisor, pays for it.
            self._regs = self._orig = None
            v.domain.crash(f"the CPU refused the guest's registers on return ({exc})")
        if not v.domain.is_running or not (self._entry_pending or self._guest_cpl_ok()):
            leaving = True
        if leaving:
            self.uc.emu_stop()

    def _apply_state(self) -> None:
        eng = self.engine
        v = self.v
        if v.guest_table != self._cr3:
            self._cr3 = v.guest_table
            eng.load_cr3(v.guest_table << abi.PAGE_SHIFT)
            self._flushes, self._invlpgs = v.tlb_flushes, len(v.tlb_invlpgs)
        elif v.tlb_flushes != self._flushes or len(v.tlb_invlpgs) != self._invlpgs:
            self._flushes, self._invlpgs = v.tlb_flushes, len(v.tlb_invlpgs)
            eng.flush_tlb()
        want_ts = self.virtual_ts()
        if want_ts != self._real_ts:
            self._set_ts(want_ts)
        regs, orig = self._regs, self._orig
        self._regs = self._orig = None
        if regs is None or orig is None:
            return
        regs.eflags = _check_eflags(regs.eflags)
        if regs.cs != orig.cs or regs.ss != orig.ss:
            self._enter(regs, orig.cs, orig.ss)
            return
        now, before = vars(regs), vars(orig)
        if now != before:
            for name, value in now.items():
                if value != before[name]:
                    eng.write(_REG_IDS[name], value)


    def _load_segments(self) -> bool:
        """The LDTR and the data segments of Xen's return path: when the LDT size, a data
        selector, a descriptor (``Vcpu.reload_segments``) or CS/SS may have changed, the
        hypervisor checks the selectors the guest resumes with. Unchanged data selectors were
        loaded with these descriptors already, so a move between Xen's flat rings (system
        calls, iret) needs no check: the iret into the guest nulls what the ring may not use.
        False if the check crashed the domain."""
        v = self.v
        if v.ldt_ents != self._ldt_ents:
            self._ldt_ents = v.ldt_ents
            self.engine.load_ldt(self.gdt_base + abi.LDT_VIRT_OFFSET, v.ldt_ents)
        check = self.reload_segments
        if check is None:
            return True
        regs, orig = self._regs, self._orig
        if regs is None or orig is None:
            if not v.reload_segments:
                return True
            regs = self.user_regs()
        elif not v.reload_segments and (regs.ds, regs.es, regs.fs, regs.gs) == (
                orig.ds, orig.es, orig.fs, orig.gs) and (
                (regs.cs, regs.ss) == (orig.cs, orig.ss)
                or (regs.cs in _FLAT_CODE and regs.ss in _FLAT_STACK)):
            return True
        descriptors_changed = v.reload_segments
        v.reload_segments = False
        check(v, regs)
        orig = self._orig
        if orig is not None:  # same selectors, maybe other descriptors: load all four again
            orig.ds = orig.es = orig.fs = orig.gs = -1
            if descriptors_changed:
                # and CS and SS: Xen's return ends in an iret, which reloads them (entry.S,
                # restore_all_guest FLT5); through the stub's iret a descriptor gone bad
                # faults into the failsafe path (_entry_fault) as Xen's does.
                orig.cs = orig.ss = -1
        return v.domain.is_running


# ------------------------------------------------------------------------------------------------
# Finding an I/O instruction in a block (the substrate's I/O hooks, UnicornCPU._io_instruction).
# ------------------------------------------------------------------------------------------------
_IO_OPCODES = frozenset(IO_STRING_OPCODES) | IN_OPCODES.keys() | OUT_OPCODES.keys()
_IO_IMM8 = IO_IMM8_OPCODES
_IO_BYTE = frozenset({0x6C, 0x6E}) | {op for op, b in (IN_OPCODES | OUT_OPCODES).items() if b}
_PREFIXES = LEGACY_PREFIXES
_WALK_BASE = 0x100000
_walker: Any = None


def _io_opcode(code: bytes) -> tuple[int, int]:
    """The number of legacy prefixes at the start of ``code`` and the opcode after them."""
    n = 0
    while n < len(code) - 1 and code[n] in _PREFIXES:
        n += 1
    return n, code[n] if code else -1


def _find_io_instruction(code: bytes) -> int | None:
    """The offset of the first I/O instruction in the straight-line code ``code``, found by
    letting Unicorn's own decoder step over each instruction without running it (a code hook
    that moves EIP past the instruction) in a scratch engine holding only these bytes."""
    global _walker
    if _walker is None:
        _walker = unicorn.Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_32)
        _walker.mem_map(_WALK_BASE, 0x3000)
    code = code[:0x2000]
    _walker.mem_write(_WALK_BASE, code.ljust(0x3000, b"\x90"))
    found: list[int] = []

    def step(uc: Any, address: int, size: int, _user: Any) -> None:
        off = address - _WALK_BASE
        if off >= len(code):
            uc.emu_stop()
            return
        if _io_opcode(code[off : off + size])[1] in _IO_OPCODES:
            found.append(off)
            uc.emu_stop()
            return
        uc.reg_write(x86.UC_X86_REG_EIP, address + size)

    hook = _walker.hook_add(ucc.UC_HOOK_CODE, step)
    try:
        _walker.emu_start(_WALK_BASE, _WALK_BASE + 0x3000, count=len(code) + 1)
    except unicorn.UcError:
        pass  # an instruction Unicorn cannot decode: the I/O instruction is not after it
    finally:
        _walker.hook_del(hook)
    return found[0] if found else None


# ------------------------------------------------------------------------------------------------
# The start-up self-test.
# ------------------------------------------------------------------------------------------------
_selftest_done = False


def selftest() -> None:
    """Check, once per process, that Unicorn behaves as the substrate was measured: version,
    the saved-context offsets (CPL, error code, int-vs-fault, old_exception), ring entry and
    the LDTR's hidden part.
    Raises ``SubstrateError`` with one clear message otherwise."""
    global _selftest_done
    if _selftest_done:
        return
    try:
        _run_selftest()
    except SubstrateError:
        raise
    except Exception as exc:
        raise SubstrateError(
            f"the Unicorn self-test failed ({type(exc).__name__}: {exc}); xenspec needs "
            f"unicorn=={UNICORN_VERSION}"
        ) from exc
    _selftest_done = True


def _run_selftest() -> None:
    eng = _Engine()
    uc = eng.uc
    # A 64 KB machine: page directory at 0x1000, one L1 at 0x2000, GDT page at 0x3000 (mapped
    # at the reserved-page address of a GDT based at 0x10000), stub page at 0x4000, ring-1 code
    # at 0x5000, ring-3 code at 0x6000, stacks at 0x7000/0x8000.
    uc.mem_map(0, 0x20000)
    pd, l1 = 0x1000, 0x2000
    gdt_base = 0x10000 - abi.FIRST_RESERVED_GDT_BYTE  # reserved page lands at 0x10000
    uc.mem_write(pd, ((l1 | 0x7).to_bytes(4, "little")))
    ro, rw, user = 0x21, 0x23, 0x4
    for page, flags in ((0x4, ro), (0x5, rw | user), (0x6, rw | user), (0x7, rw), (0x8, rw | user)):
        uc.mem_write(l1 + page * 4, ((page << 12) | flags).to_bytes(4, "little"))
    uc.mem_write(l1 + 0x10 * 4, ((0x3 << 12) | ro).to_bytes(4, "little"))
    uc.mem_write(0x3000, reserved_gdt_page())
    uc.mem_write(0x4000, stub_page())
    # ring 1: int $0x80; mov %eax,0x9000 (write, not present); mov 0xa000,%eax (read, not
    # present); int $0x82 (leave for ring 3)
    uc.mem_write(0x5000, b"\xcd\x80" + b"\xa3\x00\x90\x00\x00" + b"\xa1\x00\xa0\x00\x00"
                 + b"\xcd\x82")
    uc.mem_write(0x6000, b"\xcd\x80")  # ring 3: int $0x80
    eng.setup_protected_mode(gdt_base, pd)
    seen: list[tuple[int, int, int, bool, int, int]] = []

    def hook(uc_: Any, intno: int, _u: Any) -> None:
        eng.save()
        cs = eng.read(x86.UC_X86_REG_CS)
        seen.append((intno, cs & 3, eng.saved_cpl, eng.saved_exception_is_int,
                     eng.saved_error_code if intno == 14 else -1, eng.saved_old_exception))
        if not eng.saved_exception_is_int:
            eng.reset_old_exception()
        eng.restore()
        if intno == 14:
            eng.write(x86.UC_X86_REG_EIP, eng.read(x86.UC_X86_REG_EIP) + 5)
        elif len(seen) == 5:  # back inward from ring 3 to ring 1's int $0x82
            regs = eng.read_all()
            regs.cs, regs.ss, regs.eip, regs.esp = (
                abi.FLAT_RING1_CS, abi.FLAT_RING1_DS, 0x500C, 0x8000)
            regs.ds = regs.es = abi.FLAT_RING1_DS
            enter(regs, cpl=3)

    # The stub page is mapped at linear 0x4000; frames go there by physical writes.
    def write_frame(frame: bytes) -> None:
        uc.mem_write(0x4000 + FRAME_OFFSET, frame)

    def enter(regs: CpuUserRegs, cpl: int) -> None:
        eng.enter_ring(regs, 0x4000, 0x4000 + FRAME_OFFSET, write_frame, cpl)

    def hook_wrapper(uc_: Any, intno: int, u: Any) -> None:
        if intno == 0x82:
            seen.append((intno, eng.read(x86.UC_X86_REG_CS) & 3, -1, True, -1, -1))
            if len(seen) == 6:
                uc_.emu_stop()
                return
            regs = eng.read_all()
            regs.cs, regs.ss, regs.eip, regs.esp = (
                abi.FLAT_RING3_CS, abi.FLAT_RING3_DS, 0x6000, 0x9000)
            regs.ds = regs.es = abi.FLAT_RING3_DS
            enter(regs, cpl=1)  # outward: the stub's iret runs at CPL 1
            return
        hook(uc_, intno, u)

    uc.hook_add(ucc.UC_HOOK_INTR, hook_wrapper)
    start = CpuUserRegs(eip=0x5000, cs=abi.FLAT_RING1_CS, ss=abi.FLAT_RING1_DS,
                        ds=abi.FLAT_RING1_DS, es=abi.FLAT_RING1_DS, esp=0x8000,
                        eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
    enter(start, cpl=0)
    uc.emu_start(0x4000, _NEVER, count=100)
    want = [
        (0x80, 1, 1, True, -1),  # int $0x80 from ring 1: CPL 1 in hflags, a software int
        (14, 1, 1, False, abi.PFEC_write_access),  # write to a not-present page
        (14, 1, 1, False, 0),  # a second fault arrives as #PF, not #DF
        (0x82, 1, -1, True, -1),
        (0x80, 3, 3, True, -1),  # the iret stub entered ring 3
        (0x82, 1, -1, True, -1),  # and, from CPL 3 patched to 0, ring 1 again
    ]
    got = [s[:5] for s in seen]
    if got != want:
        raise SubstrateError(
            f"the Unicorn self-test saw {got}, expected {want}: the saved-context offsets "
            f"do not match this Unicorn build; xenspec needs unicorn=={UNICORN_VERSION}"
        )
    _selftest_counter()
    _selftest_ldt()
    _selftest_io()
    if seen[1][5] != abi.TRAP_page_fault:
        raise SubstrateError(
            f"old_exception is not at offset {_OFF_OLD_EXCEPTION} (read {seen[1][5]}); "
            f"xenspec needs unicorn=={UNICORN_VERSION}"
        )


def _selftest_ldt() -> None:
    """The LDTR written with its hidden part: ring-0 code loads an LDT data selector and reads
    through it; with a null LDTR the same load is #GP(selector)."""
    eng = _Engine()
    uc = eng.uc
    uc.mem_map(0, 0x20000)
    pd, l1 = 0x1000, 0x2000
    uc.mem_write(pd, (l1 | 0x3).to_bytes(4, "little"))
    for page in (0x5, 0x6, 0x8):  # code, data, LDT
        uc.mem_write(l1 + page * 4, ((page << 12) | 0x3).to_bytes(4, "little"))
    uc.mem_write(l1 + 0x10 * 4, ((0x3 << 12) | 0x1).to_bytes(4, "little"))  # Xen's GDT page
    uc.mem_write(0x3000, reserved_gdt_page())
    uc.mem_write(0x8008, flat_descriptor(0, False, 0).to_bytes(8, "little"))
    uc.mem_write(0x8008 + 2, b"\x00\x60")  # base 0x6000
    uc.mem_write(0x6000, (0x1DE5C0DE).to_bytes(4, "little"))
    # mov $0xc,%eax; mov %eax,%ds; mov %ds:0,%eax; int $0x80
    uc.mem_write(0x5000, b"\xb8\x0c\x00\x00\x00\x8e\xd8\xa1\x00\x00\x00\x00\xcd\x80")
    eng.setup_protected_mode(0x10000 - abi.FIRST_RESERVED_GDT_BYTE, pd)
    seen: list[tuple[int, int]] = []

    def hook(uc_: Any, intno: int, _u: Any) -> None:
        eng.save()
        seen.append((intno, eng.saved_error_code if intno == 13 else eng.read(
            x86.UC_X86_REG_EAX)))
        uc_.emu_stop()

    uc.hook_add(ucc.UC_HOOK_INTR, hook)
    for ents in (2, 0):
        eng.load_ldt(0x8000, ents)
        eng.write(x86.UC_X86_REG_DS, _XEN_DS)
        eng.run_counted(0x5000, 10)
    if seen != [(0x80, 0x1DE5C0DE), (13, 0xC)]:
        raise SubstrateError(
            f"the LDT self-test saw {seen}: writing the LDTR's hidden part does not work as "
            f"measured; xenspec needs unicorn=={UNICORN_VERSION}"
        )


def _selftest_counter() -> None:
    """The instruction counter: 1000 instructions of ``inc %eax; jmp .-1`` are 500 incs, and
    so are 999 with the block counter (the block under way, 2 instructions, runs to its end);
    Unicorn's own counter also counts the instruction it stopped before."""
    eng = _Engine()
    eng.uc.mem_map(0, 0x2000)
    eng.uc.mem_write(0x1000, b"\x40\xeb\xfd")
    for count in (1000, 999):
        eng.write(x86.UC_X86_REG_EAX, 0)
        ran = eng.run_counted(0x1000, count)
        got = (ran, eng.read(x86.UC_X86_REG_EAX), eng.counted_so_far())
        want = (1000, 500, 1000) if eng.counts_blocks else (count, count - count // 2, count + 1)
        if got != want:
            where = ("the native block counter" if eng.counts_blocks
                     else f"the instruction counter at offset {_OFF_EMU_COUNTER}")
            raise SubstrateError(
                f"{where} is wrong: ran, eax, counter = {got}, expected {want}; xenspec "
                f"needs unicorn=={UNICORN_VERSION}"
            )


def _selftest_io() -> None:
    """The I/O instructions: an IN or OUT hook runs with EAX from before it; after the
    substrate's rewind (context saved in the hook, CR3 at an empty page directory, engine
    stopped, context restored) a store that follows in the same block has not reached memory,
    whatever part of the block the engine ran; and a code hook that moves EIP past each
    instruction finds the I/O instruction in a block."""
    for code in (b"\xe4\x60", b"\xe6\x80"):  # in $0x60,%al; out %al,$0x80
        _selftest_io_one(code)
    # mov $imm32,%eax; mov %edx,0x10(%eax,%ecx,4); hlt; cpuid; cs: out %eax,%dx
    block = b"\xb8\x78\x56\x34\x12\x89\x54\x88\x10\xf4\x0f\xa2\x2e\xef\x90"
    if _find_io_instruction(block) != 12 or _find_io_instruction(block[:12]) is not None:
        raise SubstrateError(
            f"the Unicorn self-test could not step over instructions with a code hook; "
            f"xenspec needs unicorn=={UNICORN_VERSION}"
        )
    _selftest_io_loop()


def _selftest_io_loop() -> None:
    """The hook's EIP in a block run again and again leads to the I/O instruction each time
    (in a guest's blocks it can be the start of the block, as the privop kernel shows)."""
    eng = _Engine()
    uc = eng.uc
    uc.mem_map(0, 0x10000)
    # mov $3,%ecx; 1: inc %ebx; mov $0x11223344,%eax; out %al,$0x80; dec %ecx; jnz 1b; jmp .
    code = (b"\xb9\x03\x00\x00\x00\x43\xb8\x44\x33\x22\x11\xe6\x80\x49\x75\xf5"
            b"\xeb\xfe")
    uc.mem_write(0x3000, code)
    seen: list[int] = []
    uc.hook_add(ucc.UC_HOOK_INSN, lambda *_a: seen.append(eng.read(x86.UC_X86_REG_EIP)),
                None, 1, 0, x86.UC_X86_INS_OUT)
    eng.run_counted(0x3000, 40)
    offsets = [_find_io_instruction(code[e - 0x3000 :]) for e in seen]
    found = [e + off for e, off in zip(seen, offsets, strict=True) if off is not None]
    if found != [0x300B] * 3:
        raise SubstrateError(
            f"the Unicorn self-test of in/out saw the hook at {[hex(e) for e in seen]}, which "
            f"does not lead to the instruction at 0x300b; xenspec needs "
            f"unicorn=={UNICORN_VERSION}"
        )


def _selftest_io_one(code: bytes) -> None:
    eng = _Engine()
    uc = eng.uc
    uc.mem_map(0, 0x10000)
    uc.mem_map(0x10000, 0x1000, ucc.UC_PROT_READ)  # the empty page directory
    pd, l1 = 0x1000, 0x2000
    uc.mem_write(pd, (l1 | 3).to_bytes(4, "little"))
    for page in range(16):
        uc.mem_write(l1 + 4 * page, (page << 12 | 3).to_bytes(4, "little"))
    # mov $0x11223344,%eax; <in/out>; mov %eax,0x4000; inc %ebx; jmp .
    uc.mem_write(0x3000, b"\xb8\x44\x33\x22\x11" + code + b"\xa3\x00\x40\x00\x00"
                 + b"\x43\xeb\xfe")
    eng.write(x86.UC_X86_REG_CR3, pd)
    eng.write(x86.UC_X86_REG_CR0, _CR0_PE | _CR0_PG)
    ctx = uc.context_save()
    seen: list[tuple[int, int]] = []
    faults: list[int] = []

    def stop(*_a: Any) -> int:
        if not seen:
            seen.append((eng.read(x86.UC_X86_REG_EIP), eng.read(x86.UC_X86_REG_EAX)))
            uc.context_update(ctx)
            eng.write(x86.UC_X86_REG_CR3, 0x10000)
            uc.emu_stop()
        return 0

    def intr(uc_: Any, intno: int, _u: Any) -> None:
        faults.append(intno)
        uc_.emu_stop()

    uc.hook_add(ucc.UC_HOOK_INSN, stop, None, 1, 0, x86.UC_X86_INS_IN)
    uc.hook_add(ucc.UC_HOOK_INSN, stop, None, 1, 0, x86.UC_X86_INS_OUT)
    uc.hook_add(ucc.UC_HOOK_INTR, intr)
    eng.run_counted(0x3000, 50)
    uc.context_restore(ctx)
    got = (seen, eng.read(x86.UC_X86_REG_EIP), eng.read(x86.UC_X86_REG_EAX),
           eng.read(x86.UC_X86_REG_EBX), bytes(uc.mem_read(0x4000, 4)),
           eng.read(x86.UC_X86_REG_CR3))
    want = ([(0x3005, 0x11223344)], 0x3005, 0x11223344, 0, bytes(4), pd)
    if got != want or any(f != abi.TRAP_page_fault for f in faults):
        raise SubstrateError(
            f"the Unicorn self-test of in/out saw {got} (faults {faults}), expected {want};"
            f" xenspec needs unicorn=={UNICORN_VERSION}"
        )

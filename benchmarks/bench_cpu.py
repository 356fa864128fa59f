"""CPU-substrate benchmarks: run by hand (``python benchmarks/bench_cpu.py``), never in tests.

* hypercall round trip: ring-1 ``call hypercall_page+17*32`` -> hook -> xen_version -> back;
* int 0x80 round trip: ring 3 ``int $0x80`` -> the ring-1 handler on the stack_switch stack
  (Xen's direct trap gate, built by the model) -> ring 3 by the runtime's return path, the
  processor's own iret as XenoLinux does; and the same returning through the iret hypercall;
  beside it, the bare bounce (``bounce_floor``);
* guest compute vs raw Unicorn: the same register loop in a booted guest (paging, ring 1)
  and in a bare Unicorn engine with flat memory and no hooks;
* a guest store: the compute loop with a store in each iteration, less the loop, in a guest
  and on the bare engine;
* RDTSC: under the deterministic clock it faults (CR4.TSD) and the hypervisor completes it:
  the substrate's fast path, and the general fault path it stands for;
* demo boot: ``xenspec run`` of the demo guest, start to poweroff;
* the floors, measured in the same run: a bare engine (flat 32-bit code, no paging) looping on
  ``int $0x82`` with an interrupt hook that only returns (what any hypercall costs on Unicorn),
  and with a hook that also moves the hypercall's registers as the substrate does (the seven
  registers read in place from the engine's env, the EAX write; through Unicorn's API where
  env is not found). Each figure is printed with its ratio to its floor.

Each figure is the median of several runs; a per-iteration cost is (t(N) - t(0)) / N, so
machine and domain set-up is not counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import statistics
import struct
import time
from collections.abc import Callable, Iterator

from timing import median_time  # benchmarks/timing.py, beside this script

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.boot import boot
from xenspec.refmodel.cpu import UNICORN_VERSION


def per_iteration(elf: str, mode: str, n: int) -> float:
    def go(k: int) -> Callable[[], object]:
        return lambda: boot(elf, cmdline=f"{mode} {k}")

    return (median_time(go(n)) - median_time(go(0))) / n


def raw_unicorn_compute(n: int, counted: bool = False, store: bool = False) -> float:
    """The compute loop's body on a bare engine: flat 32-bit code, no paging, no hooks; with
    ``counted``, the substrate's engine with its instruction counter (refmodel/blockcount.c,
    a callback per translation block) and nothing else: the floor deterministic time sets;
    with ``store``, the loop also stores EAX to a data page in each iteration."""
    from xenspec.refmodel import cpu

    uc_mod = importlib.import_module("unicorn")
    ucc = importlib.import_module("unicorn.unicorn_const")
    x86 = importlib.import_module("unicorn.x86_const")
    # mov $1,%eax; xor %ecx,%ecx; loop: add %ecx,%eax; rol $3,%eax; [mov %eax,0x2000;]
    # inc %ecx; cmp %edx,%ecx; jb loop; hlt-free end (emu_start stops at 'until').
    code = bytes.fromhex("b801000000" "31c9" "01c8" "c1c003" + ("a300200000" if store else "")
                         + "41" "39d1" + ("72f1" if store else "72f6"))
    engine = cpu.counting_engine() if counted else None  # kept alive while it runs
    uc = engine.uc if engine is not None else uc_mod.Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_32)
    uc.mem_map(0x1000, 0x2000)
    uc.mem_write(0x1000, code)
    uc.reg_write(x86.UC_X86_REG_EDX, n)
    t = time.perf_counter()
    uc.emu_start(0x1000, 0x1000 + len(code))
    return time.perf_counter() - t


def hook_floor(n: int, registers: bool) -> float:
    """Seconds per ``int $0x82`` on a bare engine whose interrupt hook only returns, or with
    ``registers`` also does the substrate's register traffic of a hypercall."""
    from xenspec.refmodel import cpu

    x86 = importlib.import_module("unicorn.x86_const")
    ucc = importlib.import_module("unicorn.unicorn_const")
    # loop: int $0x82; dec %ecx; jnz loop
    code = bytes.fromhex("cd82" "49" "75fb")
    engine = cpu.counting_engine()

    def only_returns(_uch: object, _intno: int, _user: object) -> None:
        return None

    def with_registers(_uch: object, _intno: int, _user: object) -> None:
        engine.write_eax(sum(engine.read_hypercall_args()[1:2]))

    callback = cpu._HOOK_INTR_CFUNC(with_registers if registers else only_returns)
    engine.hook_add_raw(ucc.UC_HOOK_INTR, callback)
    uc = engine.uc
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, code)

    def run(k: int) -> float:
        uc.reg_write(x86.UC_X86_REG_ECX, k)
        t = time.perf_counter()
        uc.emu_start(0x1000, 0x1000 + len(code))
        return time.perf_counter() - t

    t = statistics.median(run(n) for _ in range(3)) - statistics.median(run(1) for _ in range(3))
    del callback
    return t / (n - 1)


def bounce_floor(n: int) -> float:
    """Seconds per bare ``int $0x80`` round trip: a 64 KB machine on the substrate's engine
    (paging, Xen's GDT, the ``iret`` stub page, as in ``refmodel/cpu.py``'s self-test) whose
    ring-3 code loops on ``int $0x80`` and whose ring-1 handler is one ``iret``. The
    interrupt hook does what any Python-hooked bounce must: read the registers, write the
    five-word frame (EIP, CS, EFLAGS, ESP, SS) on the ring-1 stack, and enter ring 1 through
    the stub (``_Engine.enter_ring``: the saved CPL patched to 0, the register batch). No
    trap table, no checks, no guest page-table walk: the floor the model's bounce is held to."""
    from xenspec.refmodel import cpu
    from xenspec.refmodel.arch import CpuUserRegs
    from xenspec.spec import abi

    ucc = importlib.import_module("unicorn.unicorn_const")
    x86 = importlib.import_module("unicorn.x86_const")
    engine = cpu.counting_engine()
    uc = engine.uc
    # RAM the hook writes in place, as the model's is (mem_map_ptr): a write through Unicorn's
    # API to the stub's page would throw its translated code away each time.
    ram = (ctypes.c_char * 0x20000)()
    uc.mem_map_ptr(0, 0x20000, ucc.UC_PROT_ALL, ctypes.addressof(ram))
    mem = memoryview(ram).cast("B")
    pd, l1 = 0x1000, 0x2000
    gdt_base = 0x10000 - abi.FIRST_RESERVED_GDT_BYTE  # its reserved page lands at 0x10000
    uc.mem_write(pd, (l1 | 0x7).to_bytes(4, "little"))
    ro, rw, user = 0x21, 0x23, 0x4
    # stub 0x4000, ring-1 code 0x5000, ring-3 code 0x6000, ring-1 stack 0x7000, ring-3 0x8000
    for page, flags in ((0x4, ro), (0x5, rw), (0x6, rw | user), (0x7, rw), (0x8, rw | user)):
        uc.mem_write(l1 + page * 4, ((page << 12) | flags).to_bytes(4, "little"))
    uc.mem_write(l1 + 0x10 * 4, ((0x3 << 12) | ro).to_bytes(4, "little"))
    uc.mem_write(0x3000, cpu.reserved_gdt_page())
    uc.mem_write(0x4000, cpu.stub_page())
    uc.mem_write(0x5000, b"\xcf")  # ring 1: iret
    ring3 = bytes.fromhex("cd80" "49" "75fb")  # loop: int $0x80; dec %ecx; jnz loop
    uc.mem_write(0x6000, ring3)
    engine.setup_protected_mode(gdt_base, pd)
    stub, frame_va = 0x4000, 0x4000 + cpu.FRAME_OFFSET

    def write_frame(frame: bytes) -> None:
        mem[frame_va : frame_va + len(frame)] = frame

    def bounce(_uch: object, _intno: int, _user: object) -> None:
        regs = engine.read_all()
        sp = 0x8000 - 20
        struct.pack_into("<5I", mem, sp, regs.eip, regs.cs, regs.eflags, regs.esp, regs.ss)
        regs.cs, regs.ss, regs.eip, regs.esp = abi.FLAT_RING1_CS, abi.FLAT_RING1_DS, 0x5000, sp
        engine.enter_ring(regs, stub, frame_va, write_frame, cpl=3)

    callback = cpu._HOOK_INTR_CFUNC(bounce)
    engine.hook_add_raw(ucc.UC_HOOK_INTR, callback)

    def run(k: int) -> float:
        start = CpuUserRegs(eip=0x6000, cs=abi.FLAT_RING3_CS, ss=abi.FLAT_RING3_DS,
                                ds=abi.FLAT_RING3_DS, es=abi.FLAT_RING3_DS, esp=0x9000,
                                ecx=k, eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS)
        engine.save()
        engine.set_saved_cpl(0)
        engine.restore()
        engine.enter_ring(start, stub, frame_va, write_frame, cpl=0)
        t = time.perf_counter()
        uc.emu_start(stub, 0x6000 + len(ring3))
        elapsed = time.perf_counter() - t
        if uc.reg_read(x86.UC_X86_REG_ECX) != 0:
            raise RuntimeError("the bare bounce loop did not run to its end")
        return elapsed

    t = statistics.median(run(n) for _ in range(3)) - statistics.median(run(1) for _ in range(3))
    del callback
    return t / (n - 1)


@contextlib.contextmanager
def general_rdtsc_path() -> Iterator[None]:
    """RDTSC through the general fault path (the fast path off), for the comparison."""
    from xenspec.refmodel import cpu

    fast = cpu.UnicornCPU._rdtsc_in_place
    cpu.UnicornCPU._rdtsc_in_place = lambda self: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        cpu.UnicornCPU._rdtsc_in_place = fast  # type: ignore[method-assign]


def main() -> None:
    hc = str(build_guest("bench"))
    demo = str(build_guest("demo"))
    n_hc, n_sys, n_comp = 20000, 5000, 50_000_000
    t_floor = hook_floor(n_hc, registers=False)
    t_floor_regs = hook_floor(n_hc, registers=True)
    print(f"floor: int $0x82, hook only returns:    {t_floor * 1e6:7.2f} us")
    print(f"floor: ... and the hypercall registers: {t_floor_regs * 1e6:7.2f} us "
          f"(ratio {t_floor_regs / t_floor:.2f})")
    t_hc = per_iteration(hc, "hypercall", n_hc)
    print(f"hypercall round trip (xen_version):     {t_hc * 1e6:7.2f} us "
          f"(ratio {t_hc / t_floor:.2f} to the bare hook, {t_hc / t_floor_regs:.2f} to the hook "
          f"with the registers; target 2)")
    t_bounce = bounce_floor(n_sys)
    print(f"floor: bare int $0x80 bounce and iret:  {t_bounce * 1e6:7.2f} us")
    t_sys = per_iteration(hc, "syscall", n_sys)
    print(f"int 0x80 round trip (ring 3, iret):     {t_sys * 1e6:7.2f} us "
          f"(ratio {t_sys / t_bounce:.2f} to the bare bounce, target 1.2)")
    t_hc_iret = per_iteration(hc, "syscall-hypercall-iret", n_sys)
    print(f"  ... returning by the iret hypercall:  {t_hc_iret * 1e6:7.2f} us")
    t_guest = per_iteration(hc, "compute", n_comp)
    t_raw = statistics.median(raw_unicorn_compute(n_comp) for _ in range(3)) / n_comp
    t_cnt = statistics.median(raw_unicorn_compute(n_comp, True) for _ in range(3)) / n_comp
    print(f"guest compute loop iteration:           {t_guest * 1e9:7.2f} ns "
          f"(raw Unicorn {t_raw * 1e9:.2f} ns, ratio {t_guest / t_raw:.2f})")
    print(f"  raw Unicorn with the block counter:   {t_cnt * 1e9:7.2f} ns "
          f"(ratio {t_cnt / t_raw:.2f}: what deterministic time costs)")
    t_store = per_iteration(hc, "store", n_comp // 10) - t_guest
    t_raw_store = (statistics.median(raw_unicorn_compute(n_comp // 10, store=True)
                                     for _ in range(3)) / (n_comp // 10) - t_raw)
    print(f"guest store (the compute loop's extra): {t_store * 1e9:7.2f} ns "
          f"(raw Unicorn {t_raw_store * 1e9:.2f} ns, ratio {t_store / t_raw_store:.2f}: "
          f"Unicorn {UNICORN_VERSION} takes every store to RAM it may execute through its "
          f"slow path)")
    t_rdtsc = per_iteration(hc, "rdtsc", n_hc)
    with general_rdtsc_path():
        t_rdtsc_general = per_iteration(hc, "rdtsc", n_hc)
    print(f"RDTSC (trapped: the clock's TSC):       {t_rdtsc * 1e6:7.2f} us "
          f"(ratio {t_rdtsc / t_floor:.2f} to the bare hook; the general fault path "
          f"{t_rdtsc_general * 1e6:.2f} us)")
    t_demo = median_time(lambda: boot(demo))
    print(f"demo guest boot to poweroff:            {t_demo * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()

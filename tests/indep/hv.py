"""A second, independent implementation of the Xen 3.0.4 x86_32 (non-PAE) paravirtual MMU.

It exists so that the conformance suite can be judged: it is written from the rules of Xen
3.0.4's xen/arch/x86/mm.c (get_page_type/put_page_type, alloc_l1_table/alloc_l2_table,
get_page_from_l1e/l2e, get_linear_pagetable, mod_l1_entry/mod_l2_entry, do_mmu_update,
do_mmuext_op, new_guest_cr3, set_foreigndom, do_update_va_mapping) and the x86_32 domain
builder (tools/libxc/xc_linux_build.c), shares no code with the reference model, and makes
different choices wherever the interface leaves one:

* the heap hands frames out lowest first (the reference shuffles its heap), domain ids start
  at 1, the machine is a different size;
* the builder puts the page tables before a boot-stack page, as xc_linux_build.c orders the
  bootstrap region (xen.h "start of day" item 4: page tables, then the stack), with that
  file's L1_PROT/L2_PROT entry flags;
* a validated page directory gets Xen's slots as alloc_l2_table writes them: a copy of the idle
  table's slots (here the read-only M2P at MACH2PHYS_VIRT_START), the directory itself at
  LINEAR_PT_VIRT_START's slot (__PAGE_HYPERVISOR) and the domain's per-domain table.

Departures from 3.0.4, the same later security fixes the specification follows: the fast path
of mod_l1_entry/mod_l2_entry is taken only when nothing but FASTPATH_FLAG_WHITELIST's flags
changes (XSA-182), and update_va_mapping acts only on an L2 slot naming an L1 table (later
Xen's do_update_va_mapping checks the type of the frame guest_map_l1e returns).

Only the hypercall level's MMU part exists: mmu_update, mmuext_op and update_va_mapping.
No domain has I/O memory permission; hypercalls are never preempted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from xenspec.spec import abi

NONE, L1, L2, WRITABLE = 0, 1, 2, 7  # PGT_* >> 29 (asm-x86/mm.h)
PRESENT, RW = abi._PAGE_PRESENT, abi._PAGE_RW
L1_DISALLOW = abi._PAGE_GLOBAL | abi._PAGE_PAT  # mm.c BASE_DISALLOW_MASK, flag bits
L2_DISALLOW = abi._PAGE_GLOBAL | abi._PAGE_PSE
FASTPATH_FLAG_WHITELIST = (abi._PAGE_AVAIL | abi._PAGE_GLOBAL | abi._PAGE_DIRTY
                           | abi._PAGE_ACCESSED | abi._PAGE_USER)  # XSA-182
PAGE_HYPERVISOR = PRESENT | RW | abi._PAGE_DIRTY | abi._PAGE_ACCESSED  # asm-x86/page.h
PAGE_HYPERVISOR_RO = PRESENT | abi._PAGE_DIRTY | abi._PAGE_ACCESSED
L1_PROT = PRESENT | RW | abi._PAGE_ACCESSED  # xc_linux_build.c, x86_32
L2_PROT = PRESENT | RW | abi._PAGE_ACCESSED | abi._PAGE_DIRTY | abi._PAGE_USER
FIRST_XEN_SLOT = abi.HYPERVISOR_VIRT_START >> abi.L2_PAGETABLE_SHIFT
NOBODY = 0x7FF4  # owner of a free frame (DOMID_INVALID)
TYPE_COUNT_MAX = (1 << 16) - 1  # asm-x86/mm.h PGT_count_mask: at most 65535 type references
MASK32 = 0xFFFFFFFF


@dataclass
class Page:
    """struct page_info: owner, count_info and type_info, unpacked."""

    owner: int = NOBODY
    count: int = 0
    type: int = NONE
    type_count: int = 0
    validated: bool = False
    pinned: bool = False
    allocated: bool = False


@dataclass
class Domain:
    domid: int
    privileged: bool
    p2m: list[int] = field(default_factory=list)
    perdomain_pt: int = 0
    base: int = 0  # vCPU 0's guest_table
    running: bool = True
    ldt: tuple[int, int] = (0, 0)


def pfn_of(e: int) -> int:
    return (e & MASK32) >> abi.PAGE_SHIFT


class Machine:
    """Machine memory, the frame table, the M2P and the MMU hypercalls."""

    def __init__(self, nr_frames: int = 1536, bug: str = "") -> None:
        self.nr_frames = nr_frames
        self.bug = bug  # a seeded defect, for testing the suite (see adapter.BUGS)
        self.pages = [Page() for _ in range(nr_frames)]
        self.mem: dict[int, list[int]] = {}
        self.m2p = [abi.INVALID_M2P_ENTRY] * nr_frames
        self.domains: dict[int, Domain] = {}
        self.next_domid = 1
        self.free = list(range(nr_frames - 1, 0, -1))  # pop() hands out the lowest frame
        # Xen's own frames: the M2P table and the L1 mapping it read-only (frame 0 never used).
        m2p_frames = -(-nr_frames * 4 // abi.PAGE_SIZE)
        self.m2p_l1 = self.alloc_xen()
        for k in range(m2p_frames):
            self.words(self.m2p_l1)[k] = self.alloc_xen() << abi.PAGE_SHIFT | PAGE_HYPERVISOR_RO
        self.idle_l2 = [0] * (abi.L2_PAGETABLE_ENTRIES - FIRST_XEN_SLOT)
        self.idle_l2[(abi.MACH2PHYS_VIRT_START >> abi.L2_PAGETABLE_SHIFT) - FIRST_XEN_SLOT] = (
            self.m2p_l1 << abi.PAGE_SHIFT | PAGE_HYPERVISOR_RO)
        self.foreign: Domain | None = None  # FOREIGNDOM of the current batch
        self.current = Domain(NOBODY, False)  # the calling domain
        # Xen's pseudo-domains dom_io and dom_xen: they own no RAM here.
        self.io, self.xen = Domain(abi.DOMID_IO, False), Domain(abi.DOMID_XEN, False)

    # --- memory and the heap -----------------------------------------------------------------
    def words(self, mfn: int) -> list[int]:
        w = self.mem.get(mfn)
        if w is None:
            w = self.mem[mfn] = [0] * abi.L1_PAGETABLE_ENTRIES
        return w

    def alloc_xen(self) -> int:
        mfn = self.free.pop()
        self.pages[mfn] = Page(owner=abi.DOMID_XEN)
        return mfn

    def alloc_domheap(self, d: Domain) -> int:
        mfn = self.free.pop()
        self.pages[mfn] = Page(owner=d.domid, count=1, allocated=True)
        self.m2p[mfn] = len(d.p2m)
        d.p2m.append(mfn)
        return mfn

    def mfn_valid(self, mfn: int) -> bool:
        return 0 <= mfn < self.nr_frames

    # --- general and type references (mm.c get_page, get_page_type, put_page_type) ----------
    def get_page(self, mfn: int, d: Domain) -> bool:
        if not self.mfn_valid(mfn):
            return False
        p = self.pages[mfn]
        if p.count == 0 or p.owner != d.domid:
            return False
        p.count += 1
        return True

    def put_page(self, mfn: int) -> None:
        self.pages[mfn].count -= 1

    def get_page_type(self, mfn: int, type: int) -> bool:
        p = self.pages[mfn]
        if p.type_count == TYPE_COUNT_MAX:
            return False  # "Type count overflow"
        if p.type_count == 0:
            if p.type != type:
                p.type, p.validated = type, type == WRITABLE
        elif p.type != type or not p.validated:
            return False  # a type mismatch, or a table whose validation is under way
        p.type_count += 1
        if not p.validated:
            ok = self.alloc_l1_table(mfn) if type == L1 else self.alloc_l2_table(mfn)
            if not ok:  # "No one else can get a reference": type_info = 0
                p.type, p.type_count, p.validated = NONE, 0, False
                return False
            p.validated = True
        return True

    def put_page_type(self, mfn: int) -> None:
        p = self.pages[mfn]
        p.type_count -= 1
        if p.type_count == 0 and p.type in (L1, L2) and p.validated:
            p.validated = False
            if p.type == L1:
                for e in self.words(mfn):
                    self.put_page_from_l1e(e)
            else:
                for e in self.words(mfn)[:FIRST_XEN_SLOT]:
                    self.put_page_from_l2e(e, mfn)

    def get_page_and_type(self, mfn: int, type: int, d: Domain) -> bool:
        if not self.get_page(mfn, d):
            return False
        if not self.get_page_type(mfn, type):
            self.put_page(mfn)
            return False
        return True

    def put_page_and_type(self, mfn: int) -> None:
        self.put_page_type(mfn)
        self.put_page(mfn)

    # --- entries (get_page_from_l1e/l2e, get_linear_pagetable and their puts) ---------------
    def get_page_from_l1e(self, e: int, d: Domain) -> bool:
        if not e & PRESENT:
            return True
        if e & L1_DISALLOW:
            return False
        mfn = pfn_of(e)
        if not self.mfn_valid(mfn):
            return False  # I/O memory: no domain here has iomem permission
        if d is self.io and self.bug == "io-maps-own-ram":
            d = self.current
        if e & RW:
            return self.get_page_and_type(mfn, WRITABLE, d)
        return self.get_page(mfn, d)

    def put_page_from_l1e(self, e: int) -> None:
        mfn = pfn_of(e)
        if not e & PRESENT or not self.mfn_valid(mfn):
            return
        if e & RW:
            self.put_page_and_type(mfn)
        else:
            self.put_page(mfn)

    def get_page_from_l2e(self, e: int, l2mfn: int, d: Domain) -> bool:
        if not e & PRESENT:
            return True
        if e & L2_DISALLOW:
            return False
        if self.get_page_and_type(pfn_of(e), L1, d):
            return True
        return self.get_linear_pagetable(e, l2mfn, d)

    def get_linear_pagetable(self, e: int, l2mfn: int, d: Domain) -> bool:
        """A read-only entry naming a validated page directory: a type reference on it, none
        when the directory names itself."""
        if e & RW:
            return False
        mfn = pfn_of(e)
        if mfn == l2mfn:
            return True
        if not self.get_page(mfn, d):
            return False
        p = self.pages[mfn]
        if p.type != L2 or not p.validated or p.type_count == TYPE_COUNT_MAX:
            self.put_page(mfn)
            return False
        p.type_count += 1
        return True

    def put_page_from_l2e(self, e: int, l2mfn: int) -> None:
        if e & PRESENT and pfn_of(e) != l2mfn:
            self.put_page_and_type(pfn_of(e))

    # --- table validation --------------------------------------------------------------------
    def alloc_l1_table(self, mfn: int) -> bool:
        d, w = self.domains[self.pages[mfn].owner], self.words(mfn)
        for i, e in enumerate(w):
            if not self.get_page_from_l1e(e, d):
                for done in w[:i]:
                    self.put_page_from_l1e(done)
                return False
        return True

    def alloc_l2_table(self, mfn: int) -> bool:
        d, w = self.domains[self.pages[mfn].owner], self.words(mfn)
        for i in range(FIRST_XEN_SLOT):
            if not self.get_page_from_l2e(w[i], mfn, d):
                for done in w[:i]:
                    self.put_page_from_l2e(done, mfn)
                return False
        w[FIRST_XEN_SLOT:] = self.xen_slots(d, mfn)
        return True

    def xen_slots(self, d: Domain, l2mfn: int) -> list[int]:
        """alloc_l2_table: the idle table's slots, the linear self-map, the per-domain area."""
        slots = list(self.idle_l2)
        slots[abi.LINEAR_PT_SLOT - FIRST_XEN_SLOT] = l2mfn << abi.PAGE_SHIFT | PAGE_HYPERVISOR
        slots[abi.PERDOMAIN_SLOT - FIRST_XEN_SLOT] = (d.perdomain_pt << abi.PAGE_SHIFT
                                                      | PAGE_HYPERVISOR)
        return slots

    # --- entry updates (mod_l1_entry, mod_l2_entry) ------------------------------------------
    def mod_l1_entry(self, l1mfn: int, index: int, new: int) -> bool:
        w, d = self.words(l1mfn), self.current
        old = w[index]
        if new & PRESENT:
            if new & L1_DISALLOW:
                return False
            if pfn_of(old ^ new) == 0 and not (old ^ new) & 0xFFF & ~FASTPATH_FLAG_WHITELIST:
                w[index] = new
                return True
            if not self.get_page_from_l1e(new, self.foreign or d):
                return False
        w[index] = new
        self.put_page_from_l1e(old)
        return True

    def mod_l2_entry(self, l2mfn: int, index: int, new: int) -> bool:
        if index >= FIRST_XEN_SLOT:
            return False
        w = self.words(l2mfn)
        old = w[index]
        if new & PRESENT:
            if new & L2_DISALLOW:
                return False
            if pfn_of(old ^ new) == 0 and not (old ^ new) & 0xFFF & ~FASTPATH_FLAG_WHITELIST:
                w[index] = new
                return True
            if not self.get_page_from_l2e(new, l2mfn, self.current):
                return False
        w[index] = new
        self.put_page_from_l2e(old, l2mfn)
        return True

    # --- guest memory, through the current page table ----------------------------------------
    def walk(self, d: Domain, va: int, write: bool) -> tuple[int, int] | None:
        """(mfn, offset) that ``va`` reaches through ``d``'s page table, as the MMU would."""
        if va >= abi.HYPERVISOR_VIRT_START or not d.base:
            return None
        table = d.base
        for shift in (abi.L2_PAGETABLE_SHIFT, abi.PAGE_SHIFT):
            e = self.words(table)[(va >> shift) & 1023]
            if not e & PRESENT or (write and not e & RW) or not self.mfn_valid(pfn_of(e)):
                return None
            table = pfn_of(e)
        return table, va & (abi.PAGE_SIZE - 1)

    def copy_from_guest(self, d: Domain, va: int, n: int) -> bytes | None:
        out = b""
        while len(out) < n:
            at = self.walk(d, (va + len(out)) & MASK32, False)
            if at is None:
                return None
            mfn, off = at
            chunk = min(n - len(out), abi.PAGE_SIZE - off)
            out += self.read(mfn, off, chunk)
        return out

    def copy_to_guest(self, d: Domain, va: int, data: bytes) -> bool:
        at = self.walk(d, va, True)
        if at is None or at[1] + len(data) > abi.PAGE_SIZE:
            return False
        self.write(at[0], at[1], data)
        return True

    def read(self, mfn: int, off: int, n: int) -> bytes:
        first = off // 4
        w = self.words(mfn)[first : (off + n + 3) // 4]
        raw = b"".join(x.to_bytes(4, "little") for x in w)
        return raw[off - first * 4 : off - first * 4 + n]

    def write(self, mfn: int, off: int, data: bytes) -> None:
        first, last = off // 4, (off + len(data) + 3) // 4
        w = self.words(mfn)
        raw = bytearray(b"".join(x.to_bytes(4, "little") for x in w[first:last]))
        raw[off - first * 4 : off - first * 4 + len(data)] = data
        w[first:last] = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]

    @staticmethod
    def array_ok(va: int, count: int, size: int) -> bool:
        """x86_32 array_access_ok: the whole array lies below HYPERVISOR_VIRT_START."""
        return va + count * size <= abi.HYPERVISOR_VIRT_START

    # --- the hypercalls ----------------------------------------------------------------------
    def set_foreigndom(self, d: Domain, domid: int) -> bool:
        self.foreign = None
        if domid == abi.DOMID_SELF:
            return True
        if domid == d.domid:
            return False
        if not d.privileged:
            if domid == abi.DOMID_IO:
                self.foreign = self.io
                return True
            return False
        e = self.domains.get(domid) or {abi.DOMID_IO: self.io, abi.DOMID_XEN: self.xen}.get(domid)
        self.foreign = e
        return e is not None

    def batch(self, d: Domain, uptr: int, count: int, pdone: int, domid: int, size: int,
              one: Callable[[Domain, bytes], int]) -> int:
        """The loop do_mmu_update and do_mmuext_op share."""
        self.current = d
        done = 0
        if count & abi.MMU_UPDATE_PREEMPTED:
            count &= ~abi.MMU_UPDATE_PREEMPTED
            if pdone:
                prev = self.copy_from_guest(d, pdone, 4)
                done = int.from_bytes(prev, "little") if prev else 0
        rc, i = 0, 0
        if not self.set_foreigndom(d, domid & 0xFFFF):
            rc = -abi.ESRCH
        elif not self.array_ok(uptr, count, size):
            rc = -abi.EFAULT
        else:
            while i < count:
                raw = self.copy_from_guest(d, uptr + i * size, size)
                if raw is None:
                    rc = -abi.EFAULT
                    break
                rc = one(d, raw)
                if rc:
                    break
                i += 1
        self.foreign = None
        if pdone:
            self.copy_to_guest(d, pdone, ((done + i) & MASK32).to_bytes(4, "little"))
        return rc

    def do_mmu_update(self, d: Domain, uptr: int, count: int, pdone: int, fd: int) -> int:
        return self.batch(d, uptr, count, pdone, fd, abi.MMU_UPDATE_T.size, self.one_update)

    def one_update(self, d: Domain, raw: bytes) -> int:
        ptr, val = abi.MMU_UPDATE_T.unpack(raw)
        cmd, mfn, val = ptr & 3, (ptr >> abi.PAGE_SHIFT) & MASK32, val & MASK32
        if cmd == abi.MMU_MACHPHYS_UPDATE:
            if not self.get_page(mfn, self.foreign or d):
                return -abi.EINVAL
            self.m2p[mfn] = val
            self.put_page(mfn)
            return 0
        if cmd != abi.MMU_NORMAL_PT_UPDATE:
            return -abi.ENOSYS
        if not self.get_page(mfn, d):
            return -abi.EINVAL
        index, p, ok = (ptr & (abi.PAGE_SIZE - 1)) >> 2, self.pages[mfn], False
        kind = p.type
        if kind in (L1, L2) and self.get_page_type(mfn, kind):
            ok = (self.mod_l1_entry(mfn, index, val) if kind == L1
                  else self.mod_l2_entry(mfn, index, val))
            self.put_page_type(mfn)
        elif self.get_page_type(mfn, WRITABLE):  # not_a_pt: a plain write
            self.words(mfn)[index] = val
            ok = True
            self.put_page_type(mfn)
        self.put_page(mfn)
        return 0 if ok else -abi.EINVAL

    def do_mmuext_op(self, d: Domain, uptr: int, count: int, pdone: int, fd: int) -> int:
        return self.batch(d, uptr, count, pdone, fd, abi.MMUEXT_OP_T.size, self.one_op)

    def one_op(self, d: Domain, raw: bytes) -> int:
        cmd, arg1, arg2 = abi.MMUEXT_OP_T.unpack(raw)
        mfn, ok = arg1, True
        if cmd in (abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE):
            ok = self.pin(mfn, L1 if cmd == abi.MMUEXT_PIN_L1_TABLE else L2, self.foreign or d)
        elif cmd in (abi.MMUEXT_PIN_L3_TABLE, abi.MMUEXT_PIN_L4_TABLE):
            pass  # ignored on 2-level paging
        elif cmd == abi.MMUEXT_UNPIN_TABLE:  # the caller's own frame, FOREIGNDOM or not
            ok = self.get_page(mfn, d)
            if ok:
                if self.pages[mfn].pinned:
                    self.pages[mfn].pinned = False
                    self.put_page_and_type(mfn)
                else:
                    ok = False
                self.put_page(mfn)
        elif cmd == abi.MMUEXT_NEW_BASEPTR:
            ok = self.new_guest_cr3(d, mfn)
        elif cmd in (abi.MMUEXT_TLB_FLUSH_LOCAL, abi.MMUEXT_INVLPG_LOCAL,
                     abi.MMUEXT_TLB_FLUSH_ALL, abi.MMUEXT_INVLPG_ALL):
            pass  # no TLB here
        elif cmd in (abi.MMUEXT_TLB_FLUSH_MULTI, abi.MMUEXT_INVLPG_MULTI):
            ok = self.copy_from_guest(d, arg2, 4) is not None
        elif cmd == abi.MMUEXT_FLUSH_CACHE:
            ok = False  # cache_flush_permitted: no domain has I/O permissions
        elif cmd == abi.MMUEXT_SET_LDT:
            ok = arg1 % abi.PAGE_SIZE == 0 and arg2 <= 8192 and self.array_ok(arg1, arg2, 8)
            if ok:
                d.ldt = (arg1, arg2)
        else:
            return -abi.ENOSYS
        return 0 if ok else -abi.EINVAL

    def pin(self, mfn: int, type: int, owner: Domain) -> bool:
        if not self.get_page_and_type(mfn, type, owner):
            return False
        if self.pages[mfn].pinned:
            self.put_page_and_type(mfn)
            return False
        self.pages[mfn].pinned = True
        return True

    def new_guest_cr3(self, d: Domain, mfn: int) -> bool:
        """3.0.4: on a failed validation, drop the old base and retry; a second failure
        crashes the domain, which is left with no page table."""
        if not self.get_page_and_type(mfn, L2, d):
            old, d.base = d.base, 0
            if old:
                self.put_page_and_type(old)
            if not self.get_page_and_type(mfn, L2, d):
                d.running = False
                return False
        old, d.base = d.base, mfn
        if old:
            self.put_page_and_type(old)
        return True

    def do_update_va_mapping(self, d: Domain, va: int, lo: int, hi: int, flags: int) -> int:
        if va >= abi.HYPERVISOR_VIRT_START:
            return -abi.EINVAL
        self.current, self.foreign = d, None
        rc = -abi.EINVAL
        l2e = self.words(d.base)[va >> abi.L2_PAGETABLE_SHIFT] if d.base else 0
        l1mfn = pfn_of(l2e)
        if l2e & PRESENT and self.mfn_valid(l1mfn) and (
                self.pages[l1mfn].type == L1 or self.bug == "uvm-through-linear-slot"):
            index = (va >> abi.PAGE_SHIFT) & 1023
            if self.mod_l1_entry(l1mfn, index, lo & MASK32):
                rc = 0
        flush, bmap = flags & abi.UVMF_FLUSHTYPE_MASK, flags & ~abi.UVMF_FLUSHTYPE_MASK & MASK32
        if (flush in (abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG)
                and bmap not in (abi.UVMF_LOCAL, abi.UVMF_ALL)
                and self.copy_from_guest(d, bmap, 4) is None):
            rc = -abi.EFAULT  # get_user(vmask, bmap_ptr) failed, after the update
        return rc

    # --- the builder (xc_linux_build.c setup_guest, x86_32) ----------------------------------
    def create_domain(self, nr_pages: int, nr_mapped: int, privileged: bool,
                      virt_base: int) -> tuple[Domain, int, tuple[int, ...]]:
        """A domain of ``nr_pages`` frames, pfns [0, nr_mapped) mapped at ``virt_base``: data,
        then the page directory and the L1 tables (mapped read-only), then one stack page."""
        nr_l1 = -(-nr_mapped // abi.L1_PAGETABLE_ENTRIES)
        if not nr_l1 + 2 <= nr_mapped <= nr_pages or nr_pages + 1 > len(self.free):
            raise ValueError(f"cannot map {nr_mapped} of {nr_pages} pages")
        d = Domain(self.next_domid, privileged)
        self.next_domid += 1
        self.domains[d.domid] = d
        d.perdomain_pt = self.alloc_xen()
        for _ in range(nr_pages):
            self.alloc_domheap(d)
        pt_base = nr_mapped - 2 - nr_l1
        l1_pfns = tuple(range(pt_base + 1, pt_base + 1 + nr_l1))
        slot = virt_base >> abi.L2_PAGETABLE_SHIFT
        for pfn in range(nr_mapped):
            va = virt_base + (pfn << abi.PAGE_SHIFT)
            l1 = d.p2m[l1_pfns[(va >> abi.L2_PAGETABLE_SHIFT) - slot]]
            flags = L1_PROT & ~RW if pt_base <= pfn <= l1_pfns[-1] else L1_PROT
            self.words(l1)[(va >> abi.PAGE_SHIFT) & 1023] = d.p2m[pfn] << abi.PAGE_SHIFT | flags
        for k, pfn in enumerate(l1_pfns):
            self.words(d.p2m[pt_base])[slot + k] = d.p2m[pfn] << abi.PAGE_SHIFT | L2_PROT
        self.current, self.foreign = d, None
        if not (self.pin(d.p2m[pt_base], L2, d) and self.new_guest_cr3(d, d.p2m[pt_base])):
            raise ValueError("the bootstrap page tables do not validate")
        return d, pt_base, l1_pfns

"""Malformed kernel images: seeded mutations of real guest ELFs, and what the builder and
``xenspec run`` must make of them.

The seed corpus is built at test time by conformance/guests/build.py (no binary is kept in the
repository): ``hello`` (identified by XEN_ELFNOTE_* notes), ``xen_guest_section`` (by a
``__xen_guest`` string) and ``ring3``. ``mutant(name, seed)`` applies one to three seeded
mutations: truncation, ELF header fields, program header fields, section header fields (type,
flags such as SHF_COMPRESSED, offsets and sizes), the Xen notes (sizes, types, the version,
VIRT_BASE, ENTRY, HYPERCALL_PAGE and PAE_MODE values), the ``__xen_guest`` string (keys,
numbers, the terminator), a compressed notes section (SHF_COMPRESSED with a broken zlib stream
or a zip bomb) and random bytes. The rule (design decision D8, refmodel/elfbuild.py):
a bad image is one ``BuildError`` of one line (``xenspec run``: that line and exit status 2),
never a traceback; an image that still builds boots like any guest, and the hypervisor
survives it. Memory stays bounded: parsing and building one image may allocate at most
``BUILD_PEAK_BOUND`` (traced), whatever sizes the headers claim.
"""

from __future__ import annotations

import random
import struct
import tempfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from xenspec.conformance.guests.build import build_guest
from xenspec.refmodel.boot import Machine
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.elfbuild import load_image_file
from xenspec.refmodel.hypervisor import HypervisorBug
from xenspec.refmodel.view import check_invariants
from xenspec.spec import abi

from .meters import MemoryMeter

CORPUS = ("hello", "xen_guest_section", "ring3")
MACHINE_MB, DOMAIN_MB = 16, 4
RUN_NS = 2_000_000  # a mutant that builds runs this long (system time)
BUILD_PEAK_BOUND = 64 << 20

M32 = 0xFFFFFFFF
EDGE = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0xFFFF, 0x10000, 0x7FFFFFFF,
        0x80000000, M32, 0xC0000000, 0xC0001000, 0xFC000000, 0xFBFFF000, 0x0FFFFFFF)
# ELF32 header (elf.h, Elf32_Ehdr): name -> (offset, size).
EHDR = {"class": (4, 1), "data": (5, 1), "version_id": (6, 1), "type": (16, 2),
        "machine": (18, 2), "version": (20, 4), "entry": (24, 4), "phoff": (28, 4),
        "shoff": (32, 4), "flags": (36, 4), "ehsize": (40, 2), "phentsize": (42, 2),
        "phnum": (44, 2), "shentsize": (46, 2), "shnum": (48, 2), "shstrndx": (50, 2)}
PHDR = {"type": 0, "offset": 4, "vaddr": 8, "paddr": 12, "filesz": 16, "memsz": 20,
        "flags": 24, "align": 28}  # Elf32_Phdr, 32 bytes, all words
SHDR = {"name": 0, "type": 4, "flags": 8, "addr": 12, "offset": 16, "size": 20, "link": 24,
        "info": 28, "addralign": 32, "entsize": 36}  # Elf32_Shdr, 40 bytes
SHT_NOTE, SHT_NOBITS, SHF_COMPRESSED = 7, 8, 0x800
NOTE_TYPES = (abi.XEN_ELFNOTE_XEN_VERSION, abi.XEN_ELFNOTE_VIRT_BASE, abi.XEN_ELFNOTE_ENTRY,
              abi.XEN_ELFNOTE_HYPERCALL_PAGE, abi.XEN_ELFNOTE_PAE_MODE,
              abi.XEN_ELFNOTE_PADDR_OFFSET, abi.XEN_ELFNOTE_GUEST_OS, abi.XEN_ELFNOTE_LOADER,
              abi.XEN_ELFNOTE_FEATURES, 0, 0xFFFF, M32)
XEN_GUEST_TEXTS = (
    "", "GUEST_OS=linux", "XEN_VER=xen-3.0", "XEN_VER=xen-2.0,VIRT_BASE=0xC0000000",
    "XEN_VER=xen-3.0,VIRT_BASE=zz", "XEN_VER=xen-3.0,VIRT_BASE=0xC0000001",
    "XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,HYPERCALL_PAGE=0xFFFFFFFF",
    "XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,HYPERCALL_PAGE=-1",
    "XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,ELF_PADDR_OFFSET=0x40000000",
    "XEN_VER=xen-3.0,VIRT_BASE=0xFC000000", "XEN_VER=xen-3.0,PAE=yes[extended-cr3]",
    "XEN_VER=xen-3.0,VIRT_ENTRY=0", "XEN_VER=xen-3.0,VIRT_ENTRY=0x" + "f" * 40,
    "XEN_VER=xen-3.0,,,,=,=,==", "XEN_VER=xen-3.0,VIRT_BASE=" + "9" * 5000,
    "XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,VIRT_BASE=0",
)


BOMB_BYTES = 256 << 20


@cache
def zip_bomb() -> bytes:
    """BOMB_BYTES of zeros, zlib-compressed (about a thousandth of that)."""
    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    out = b"".join(c.compress(chunk) for _ in range(BOMB_BYTES >> 20))
    return out + c.flush()


@cache
def corpus_image(name: str) -> bytes:
    return Path(build_guest(name)).read_bytes()


def _u32(b: bytearray, off: int) -> int:
    return int.from_bytes(b[off : off + 4], "little") if off + 4 <= len(b) else 0


def _put(b: bytearray, off: int, size: int, value: int) -> None:
    if off >= 0 and off + size <= len(b):
        b[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _edge(r: random.Random, b: bytearray) -> int:
    return r.choice([*EDGE, len(b), len(b) + 1, len(b) - 1, r.getrandbits(32)])


def _sections(b: bytearray) -> list[int]:
    """The offsets of the section headers (as the header says now)."""
    shoff, shnum = _u32(b, 32), int.from_bytes(b[48:50], "little")
    return [shoff + 40 * i for i in range(min(shnum, 64)) if shoff + 40 * (i + 1) <= len(b)]


def _notes(b: bytearray) -> list[int]:
    """Where the Xen notes start (from the SHT_NOTE sections)."""
    out = []
    for sh in _sections(b):
        if _u32(b, sh + 4) != SHT_NOTE:
            continue
        pos, end = _u32(b, sh + 16), _u32(b, sh + 16) + _u32(b, sh + 20)
        while pos + 12 <= min(end, len(b)):
            out.append(pos)
            namesz, descsz = _u32(b, pos), _u32(b, pos + 4)
            pos += 12 + (namesz + 3 & ~3) + (descsz + 3 & ~3)
    return out


def _mutate(r: random.Random, b: bytearray) -> str:
    kind = r.choice(["truncate", "ehdr", "phdr", "phdr", "shdr", "note", "note", "note_value",
                     "xen_guest", "bytes", "compress"])
    if kind == "truncate" and len(b) > 1:
        cut = r.choice([r.randrange(0, 64), r.randrange(52, 52 + 4 * 32),
                        r.randrange(0, len(b))])
        del b[cut:]
        return f"truncated at {cut}"
    if kind == "ehdr":
        field = r.choice(sorted(EHDR))
        off, size = EHDR[field]
        value = _edge(r, b)
        _put(b, off, size, value)
        return f"e_{field} = {value:#x}"
    if kind == "phdr":
        phoff, phnum = _u32(b, 28), int.from_bytes(b[44:46], "little") or 1
        ph = phoff + 32 * r.randrange(min(phnum, 8))
        field = r.choice(sorted(PHDR))
        value = r.choice([_edge(r, b), 1, 4, 7, 0x6474E551])  # PT_LOAD, PT_NOTE, ...
        _put(b, ph + PHDR[field], 4, value)
        return f"phdr at {ph:#x}: p_{field} = {value:#x}"
    if kind == "shdr":
        shs = _sections(b)
        if shs:
            sh = r.choice(shs)
            field = r.choice(sorted(SHDR))
            if field == "flags" and r.random() < 0.6:
                value = _u32(b, sh + 8) | SHF_COMPRESSED
            elif field == "type" and r.random() < 0.6:
                value = r.choice([SHT_NOTE, SHT_NOBITS, 0, 2, 3, 11])
            else:
                value = _edge(r, b)
            _put(b, sh + SHDR[field], 4, value)
            return f"shdr at {sh:#x}: sh_{field} = {value:#x}"
    if kind in ("note", "note_value"):
        notes = _notes(b)
        if notes:
            pos = r.choice(notes)
            if kind == "note":
                k = r.randrange(3)  # namesz, descsz, type
                value = r.choice([*EDGE, *NOTE_TYPES]) if k == 2 else _edge(r, b)
                _put(b, pos + 4 * k, 4, value)
                return f"note at {pos:#x}: {('namesz', 'descsz', 'type')[k]} = {value:#x}"
            namesz, descsz = _u32(b, pos), _u32(b, pos + 4)
            desc = pos + 12 + (namesz + 3 & ~3)
            data = r.choice([b"xen-3.0\0", b"xen-3.1\0", b"yes\0", b"bimodal\0", b"\0",
                             b"\xff" * 8, r.randbytes(8),
                             struct.pack("<I", _edge(r, b)), struct.pack("<Q", _edge(r, b))])
            data = data[: max(0, min(descsz, len(b) - desc))]
            b[desc : desc + len(data)] = data
            return f"note at {pos:#x}: desc = {data!r}"
    if kind == "xen_guest":
        at = b.find(b"GUEST_OS=")
        if at >= 0:
            end = b.find(b"\0", at)
            end = end if end >= 0 else len(b)
            text = r.choice(XEN_GUEST_TEXTS).encode()
            if r.random() < 0.3:
                text = text.replace(b"=", b"=" + r.randbytes(1))
            new = text[: end - at] if r.random() < 0.7 else text[: end - at + 1]
            b[at : at + len(new)] = new
            if len(new) < end - at:
                b[at + len(new)] = 0 if r.random() < 0.8 else 0x2C
            return f"__xen_guest = {bytes(new)!r}"
    if kind == "compress":  # SHF_COMPRESSED with an Elf32_Chdr and a zlib stream (gABI)
        notes = [sh for sh in _sections(b) if _u32(b, sh + 4) == SHT_NOTE]
        if notes:
            sh = notes[0]
            stream = r.choice(["garbage", "truncated", "bomb", "short"])
            body = {"garbage": r.randbytes(64), "truncated": zlib.compress(b"Xen" * 400)[:20],
                    "bomb": zip_bomb(), "short": zlib.compress(b"\0" * 16)}[stream]
            size = r.choice([len(body), 16, 0x1000, M32, BOMB_BYTES])
            chdr = struct.pack("<III", 1, size, 4)  # ELFCOMPRESS_ZLIB, ch_size, ch_addralign
            at = len(b)  # the new contents go at the end of the file: no offset moves
            b += chdr + body
            _put(b, sh + 16, 4, at)
            _put(b, sh + 20, 4, len(chdr) + len(body))
            _put(b, sh + 8, 4, _u32(b, sh + 8) | SHF_COMPRESSED)
            return f"the notes compressed: {stream} stream, ch_size {size:#x}"
    n = r.randrange(1, 17)
    where = r.choice([0, 0x34, len(b) // 2, max(0, len(b) - 0x400)])
    for _ in range(n):
        if b:
            i = min(len(b) - 1, where + r.randrange(0, 0x400))
            b[i] = r.getrandbits(8)
    return f"{n} random bytes near {where:#x}"


def mutant(name: str, seed: int) -> tuple[bytes, list[str]]:
    """Image ``name`` of the corpus with the mutations of ``seed``; what they were."""
    r = random.Random(f"{name}/{seed}")
    b = bytearray(corpus_image(name))
    what = [_mutate(r, b) for _ in range(r.choice([1, 1, 1, 2, 3]))]
    return bytes(b), what


@dataclass
class MutantResult:
    name: str
    seed: int
    mutations: list[str]
    outcome: str  # "rejected: <BuildError>", or how the domain ended
    problem: str | None
    peak: int

    @property
    def replay(self) -> str:
        return f"check_mutant({self.name!r}, {self.seed}) (tests/hostile/elfmut.py)"


def check_mutant(name: str, seed: int, path: Path | None = None) -> MutantResult:
    """Build (and briefly run) one mutant through the builder API; the problem, if any. The
    image is written to ``path`` (default: a temporary file, removed after)."""
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            return check_mutant(name, seed, Path(tmp) / f"{name}-{seed}.elf")
    data, what = mutant(name, seed)
    path.write_bytes(data)
    memory = MemoryMeter()
    m = Machine(MACHINE_MB)

    def build() -> object:
        return m.add_guest(load_image_file(str(path)), DOMAIN_MB)

    try:
        d = memory.measure(build)
    except BuildError as exc:
        text = str(exc)
        problem = "the BuildError is not one line" if "\n" in text or not text else None
        if memory.last_peak > BUILD_PEAK_BOUND:
            problem = f"rejecting the image took {memory.last_peak >> 20} MB"
        return MutantResult(name, seed, what, f"rejected: {text}", problem, memory.last_peak)
    except Exception as exc:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return MutantResult(name, seed, what, "exception", f"{kind} escaped the builder: {exc}",
                            memory.last_peak)
    problem = None
    if memory.last_peak > BUILD_PEAK_BOUND:
        problem = f"building took {memory.last_peak >> 20} MB"
    try:
        m.run(until_ns=RUN_NS)
    except HypervisorBug as exc:
        problem = f"HypervisorBug: {exc}"
    if problem is None:
        violations = check_invariants(m.hv)
        if violations:
            problem = "invariant violated: " + "; ".join(violations[:3])
    r = m.result(d)  # type: ignore[arg-type]
    outcome = r.crash_reason or (r.reason.name if r.reason else "running")
    return MutantResult(name, seed, what, outcome, problem, memory.last_peak)

"""Malformed kernel images (refmodel/elfbuild.py): every defect is one ``BuildError`` line
(``xenspec run`` exit 2), and the work an image can cause is bounded by the domain's memory.

The corpus is made at test time from a guest the suite builds (no binaries are kept):
truncations, header fields set to edge values, bad note sizes, overlapping and huge
segments, and sections stored compressed (SHF_COMPRESSED with an Elf32_Chdr) with bad zlib
data or declaring more than the domain can hold.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenspec.cli import main
from xenspec.conformance.guests.build import build_guest, toolchain_available
from xenspec.refmodel.builder import BuildError
from xenspec.refmodel.elfbuild import build_domain, parse_image
from xenspec.refmodel.hypervisor import Hypervisor
from xenspec.refmodel.platform import PVPlatform

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")

SHT_NOTE, SHF_COMPRESSED = 7, 0x800
EDGE_WORDS = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0xC0000000, 0xFC000000)
MB = 1 << 20


# ------------------------------------------------------------------------------------------
# The seed corpus: mutations of a real guest image.
# ------------------------------------------------------------------------------------------
def headers(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(e_phoff, e_phentsize, e_phnum, e_shoff, e_shentsize, e_shnum) of an ELF32 image."""
    e_phoff, e_shoff = struct.unpack_from("<II", data, 28)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 42)
    return e_phoff, phentsize, phnum, e_shoff, shentsize, shnum


def note_section(data: bytes) -> int:
    """The offset of the section header of the image's SHT_NOTE section."""
    _, _, _, shoff, shentsize, shnum = headers(data)
    for i in range(shnum):
        if struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] == SHT_NOTE:
            return shoff + i * shentsize
    raise AssertionError("the guest has no note section")


def refused_peak(build: Callable[[], object], why: str) -> int:
    """``build`` raises a BuildError matching ``why``; the peak of Python memory it traced."""
    tracemalloc.start()
    try:
        with pytest.raises(BuildError, match=why):
            build()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def compressed_notes(data: bytes, payload: bytes, declared: int, ch_type: int = 1) -> bytes:
    """The image with its note section stored compressed: an Elf32_Chdr (``ch_type``,
    ``declared`` size) and ``payload`` appended at the end of the file."""
    sh = note_section(data)
    flags = struct.unpack_from("<I", data, sh + 8)[0]
    blob = struct.pack("<III", ch_type, declared, 4) + payload
    out = bytearray(data + blob)
    struct.pack_into("<I", out, sh + 8, flags | SHF_COMPRESSED)
    struct.pack_into("<II", out, sh + 16, len(data), len(blob))
    return bytes(out)


def zeros_stream(n: int) -> bytes:
    """zlib data inflating to ``n`` zero bytes, made without holding them."""
    z = zlib.compressobj(9)
    chunk = bytes(MB)
    parts = [z.compress(chunk) for _ in range(n // MB)]
    return b"".join([*parts, z.compress(bytes(n % MB)), z.flush()])


def corpus(seed: bytes) -> Iterator[tuple[str, bytes]]:
    """Malformed variants of ``seed``, each with a name."""
    e_phoff, phentsize, phnum, e_shoff, shentsize, shnum = headers(seed)
    for cut in (0, 4, 16, 51, 52, e_phoff + phentsize, len(seed) // 2, e_shoff + 8,
                len(seed) - 1):
        yield f"truncated at {cut}", seed[:cut]
    for off, fmt, name in ((24, "<I", "e_entry"), (28, "<I", "e_phoff"),
                           (32, "<I", "e_shoff"), (42, "<H", "e_phentsize"),
                           (44, "<H", "e_phnum"), (46, "<H", "e_shentsize"),
                           (48, "<H", "e_shnum"), (50, "<H", "e_shstrndx")):
        for v in (0, 1, 0xFFFF):
            yield f"{name}={v:#x}", patched(seed, off, fmt, v)
    for i in range(phnum):
        base = e_phoff + i * phentsize
        for field, name in ((4, "p_offset"), (12, "p_paddr"), (16, "p_filesz"),
                            (20, "p_memsz")):
            for v in (0x7FFFFFFF, 0xFFFFFFFF, 0x3C000000):
                yield f"phdr {i} {name}={v:#x}", patched(seed, base + field, "<I", v)
        other = e_phoff + ((i + 1) % phnum) * phentsize  # overlapping segments
        yield f"phdr {i} overlaps", patched(seed, base + 12, "<I",
                                            struct.unpack_from("<I", seed, other + 12)[0])
    sh = note_section(seed)
    for field, name in ((16, "sh_offset"), (20, "sh_size")):
        for v in (0xFFFFFFF0, len(seed), 3):
            yield f"note section {name}={v:#x}", patched(seed, sh + field, "<I", v)
    notes = struct.unpack_from("<I", seed, sh + 16)[0]
    for field, name in ((0, "namesz"), (4, "descsz")):
        for v in (0xFFFFFFFF, 0x7FFFFFFD, 3, 2):
            yield f"first note {name}={v:#x}", patched(seed, notes + field, "<I", v)
    for i in range(shnum):  # every section header field of every section at an edge
        base = e_shoff + i * shentsize
        for field in range(0, 40, 4):
            yield (f"shdr {i} word {field // 4}=0x7fffffff",
                   patched(seed, base + field, "<I", 0x7FFFFFFF))
    size = struct.unpack_from("<I", seed, sh + 20)[0]
    real = seed[notes : notes + size]
    yield "compressed notes, bad zlib data", compressed_notes(seed, b"\x78\x9c" + bytes(40),
                                                              size)
    yield "compressed notes, truncated", compressed_notes(seed, zlib.compress(real)[:6], size)
    yield "compressed notes, longer than declared", compressed_notes(
        seed, zlib.compress(real + bytes(4 * MB)), size)
    yield "compressed notes, unknown type", compressed_notes(seed, zlib.compress(real), size, 2)
    yield "compressed notes, no header", patched(seed, sh + 8, "<I", SHF_COMPRESSED | 2)
    yield "compressed notes, 2.75 GB declared", compressed_notes(seed, zeros_stream(MB),
                                                                 0xB0000000)


@pytest.fixture(scope="module")
def seed() -> bytes:
    return build_guest("hello").read_bytes()


def load_and_build(data: bytes) -> None:
    """Parse for a 4 MB domain and, if that succeeds, build it on a fresh machine."""
    image = parse_image(io.BytesIO(data), "kernel", max_bytes=4 * MB)
    hv = Hypervisor(2048)
    build_domain(hv, PVPlatform(hv), image, 1024)


def test_corpus_gives_only_build_errors(seed: bytes) -> None:
    refused = 0
    for name, data in corpus(seed):
        try:
            load_and_build(data)
        except BuildError as exc:
            refused += 1
            assert "\n" not in str(exc), name
        except Exception as exc:  # what the test exists to catch
            raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from exc
    assert refused > 20  # the corpus does reach the loader's refusals


def test_compressed_section_is_bounded_by_the_domain(seed: bytes) -> None:
    """A compressed note section declaring (and inflating to) 64 MB, for a 4 MB domain: it
    is refused without being inflated."""
    sh = note_section(seed)
    size = struct.unpack_from("<I", seed, sh + 20)[0]
    bomb = compressed_notes(seed, zeros_stream(64 * MB), 64 * MB)
    assert len(bomb) - len(seed) < 128 << 10
    peak = refused_peak(lambda: parse_image(io.BytesIO(bomb), "bomb", max_bytes=4 * MB),
                        "more than the domain")
    assert peak < 16 * MB  # a generous bound: the inflated data would be 64 MB
    # Declaring a small size does not help: inflation stops one byte past it.
    liar = compressed_notes(seed, zeros_stream(64 * MB), size)
    peak = refused_peak(lambda: parse_image(io.BytesIO(liar), "liar", max_bytes=4 * MB),
                        "does not inflate")
    assert peak < 16 * MB


def test_compressed_notes_that_inflate_right_are_read(seed: bytes) -> None:
    sh = note_section(seed)
    off, size = struct.unpack_from("<II", seed, sh + 16)
    good = compressed_notes(seed, zlib.compress(seed[off : off + size]), size)
    image = parse_image(io.BytesIO(good), "good")
    assert image.notes == parse_image(io.BytesIO(seed), "seed").notes


@pytest.mark.parametrize("case", ["bad zlib", "bomb"])
def test_cli_reports_one_line_and_exit_2(seed: bytes, tmp_path: Path, case: str) -> None:
    sh = note_section(seed)
    size = struct.unpack_from("<I", seed, sh + 20)[0]
    data = (compressed_notes(seed, b"\x78\x9c" + bytes(40), size) if case == "bad zlib"
            else compressed_notes(seed, zeros_stream(64 * MB), 0xB0000000))
    path = tmp_path / "bad.elf"
    path.write_bytes(data)
    r = CliRunner().invoke(main, ["run", str(path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("field", ["p_filesz", "sh_size"])
def test_a_size_beyond_the_file_is_refused_before_it_is_read(seed: bytes, tmp_path: Path,
                                                               field: str) -> None:
    """A program or section header naming 1.6 GB in a 26 KB file: a read of that size from a
    file allocates it first, so the bounds are checked before anything is read."""
    e_phoff, _, _, _, _, _ = headers(seed)
    offset = e_phoff + 16 if field == "p_filesz" else note_section(seed) + 20
    path = tmp_path / "huge.elf"
    path.write_bytes(patched(seed, offset, "<I", 0x6474E551))
    with path.open("rb") as f:
        peak = refused_peak(lambda: parse_image(f, "huge"), "outside the file")
    assert peak < 64 * MB

"""The ELF domain builder: a Xen 3.0 x86_32 guest kernel image to a ready domain.

Xen 3.0.4's contract (xen/common/elf.c, xen/arch/x86/domain_build.c,
xen/include/public/elfnote.h and xen.h):

* the kernel identifies itself with a ``__xen_guest`` section (``KEY=VALUE,...``) or with
  ``XEN_ELFNOTE_*`` notes named "Xen"; one of them must be present and say ``xen-3.0``;
* the image's PAE mode (``PAE=`` in ``__xen_guest``, or the PAE_MODE note) decides its
  guest type, which must be the ABI profile's (spec/abi_profiles.py): a PAE-only kernel
  (``PAE=yes``, the note "yes") cannot run on non-PAE Xen, a non-PAE one not on the
  compat-pae profile, a "bimodal" one on either;
* segments load at ``p_paddr - ELF_PADDR_OFFSET + VIRT_BASE``;
* the bootstrap region starts at VIRT_BASE and maps pseudo-physical frames 1:1 from 0: the
  kernel, the p2m list, start_info, the store and console pages (tools/libxc/
  xc_linux_build.c; not for the initial domain, domain_build.c), the page tables (mapped
  read-only, the page directory pinned and loaded), the boot stack; it ends on a 4 MB
  boundary with at least 512 KB after the stack (refmodel/builder.py bootstrap_layout);
  on the compat-pae profile the region is Xen 4.19's tools' (refmodel/builder_pae.py: the
  same elements, PAE tables, start_info's magic ``xen-3.0-x86_32p``, and the
  pae_extended_cr3 assist for a kernel whose PAE_MODE note says it understands it);
* the hypercall page is filled with ``int $0x82`` stubs (the iret stub in slot 23);
* registers: CS = FLAT_KERNEL_CS, SS/DS/ES/FS/GS = FLAT_KERNEL_DS, EIP = entry,
  ESP = top of the boot stack, ESI = start_info's address, EFLAGS.IF = 1, events masked.

Every malformed input is one ``BuildError`` line; the builder never raises anything else for
a bad file. The work a file can cause is bounded by the domain it is built for: a section
stored compressed (SHF_COMPRESSED, gABI's Elf32_Chdr with ELFCOMPRESS_ZLIB) is inflated
only if its declared size fits the domain's memory, and never past that size; an image whose
segments span more than the domain's memory is refused before anything is loaded. (Xen
3.0.4's loader, xen/common/elf.c, reads no compressed section: the only ones the model reads
are the notes and ``__xen_guest``, and it reads them whole or refuses them.)
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from xenspec.refmodel.arch import CpuUserRegs
from xenspec.refmodel.bsdsyms import bsd_symtab
from xenspec.refmodel.builder import (
    BootstrapLayout,
    BuildError,
    bootstrap_layout,
    build_initial_tables,
)
from xenspec.refmodel.builder_pae import PaeLayout, bootstrap_layout_pae, build_initial_tables_pae
from xenspec.refmodel.domain import Domain
from xenspec.refmodel.hypervisor import HYPERCALL_NUMBERS, Hypervisor, OutOfMemory
from xenspec.refmodel.platform import PVPlatform
from xenspec.spec import abi
from xenspec.spec.abi_profiles import (
    DEFAULT_PROFILE,
    AbiProfile,
    PaeMode,
    pae_mode_of_note,
    pae_mode_of_xen_guest,
)

if TYPE_CHECKING:
    from elftools.elf.sections import Section
    from elftools.elf.segments import Segment

# The memory an image is parsed for when the caller names no domain: the default domain size.
DEFAULT_DOMAIN_BYTES = 16 << 20
_SHF_COMPRESSED = 0x800  # gABI section flag
_ELFCOMPRESS_ZLIB = 1
_ELF32_CHDR = struct.Struct("<III")  # ch_type, ch_size, ch_addralign


@dataclass
class GuestImage:
    """What the builder learned from the kernel image."""

    segments: list[tuple[int, bytes, int]]  # (load VA, file bytes, memory size)
    entry: int
    virt_base: int
    hypercall_page: int | None  # VA
    guest_os: str = ""
    xen_version: str = ""
    loader: str = ""
    features: str = ""
    notes: dict[int, bytes] = field(default_factory=dict)
    xen_guest: dict[str, str] = field(default_factory=dict)
    pae: PaeMode = PaeMode.no
    # The BSD_SYMTAB block (refmodel/bsdsyms.py): its address, bytes and reserved size.
    symtab: tuple[int, bytes, int] | None = None

    @property
    def kernel_start(self) -> int:
        return min(va for va, _, _ in self.segments)

    @property
    def kernel_end(self) -> int:
        end = max(va + memsz for va, _, memsz in self.segments)
        return end if self.symtab is None else self.symtab[0] + self.symtab[2]


@dataclass
class BuiltDomain:
    domain: Domain
    image: GuestImage
    start_info_va: int
    regs: CpuUserRegs
    nr_mapped: int


def hypercall_page_contents() -> bytes:
    """x86_32/traps.c, hypercall_page_initialise: 128 stubs of 32 bytes."""
    page = bytearray(b"\xcc" * abi.PAGE_SIZE)
    iret = HYPERCALL_NUMBERS["iret"]
    for i in range(abi.HYPERCALL_PAGE_STUBS):
        if i == iret:
            stub = b"\x50\xb8" + i.to_bytes(4, "little") + b"\xcd" + bytes([abi.HYPERCALL_VECTOR])
        else:
            stub = (b"\xb8" + i.to_bytes(4, "little") + b"\xcd" + bytes([abi.HYPERCALL_VECTOR])
                    + b"\xc3")
        page[i * abi.HYPERCALL_STUB_SIZE : i * abi.HYPERCALL_STUB_SIZE + len(stub)] = stub
    return bytes(page)


# ----------------------------------------------------------------------------------------------
# Parsing.
# ----------------------------------------------------------------------------------------------
def _parse_notes(data: bytes) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name_end = pos + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if name_end > len(data) or name_end + descsz > len(data):
            raise BuildError("truncated ELF note")
        name = data[pos : pos + namesz].rstrip(b"\0").decode("latin-1")
        out.append((name, ntype, data[name_end : name_end + descsz]))
        pos = desc_end
    return out


def _note_int(desc: bytes) -> int:
    if len(desc) not in (4, 8):
        raise BuildError(f"a numeric Xen ELF note has {len(desc)} bytes (4 or 8 expected)")
    return int.from_bytes(desc, "little")


def _note_str(desc: bytes) -> str:
    return desc.split(b"\0", 1)[0].decode("latin-1")


def _int(text: str, key: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise BuildError(f"__xen_guest: {key}={text} is not a number") from None


def _file_bytes(stream: IO[bytes], offset: int, size: int, what: str) -> bytes:
    """``size`` bytes of the image file at ``offset``. A header naming bytes the file does not
    hold is a BuildError, found before anything is read (a read of the size a header declares
    would allocate it first: 1.6 GB for one mutated p_filesz)."""
    end = stream.seek(0, io.SEEK_END)
    if offset < 0 or size < 0 or offset + size > end:
        raise BuildError(f"{what} lies outside the file ({size} bytes at {offset:#x}, the "
                         f"file has {end})")
    stream.seek(offset)
    return stream.read(size)


def _segment_data(seg: Segment, name: str) -> bytes:
    return _file_bytes(seg.stream, seg["p_offset"], seg["p_filesz"],
                       f"{name}: a program header's contents")


def _section_data(sec: Section, limit: int, name: str) -> bytes:
    """A section's contents as the file holds them, inflated if stored compressed: at most
    ``limit`` bytes, and exactly the size its compression header declares (BuildError)."""
    if sec["sh_type"] == "SHT_NOBITS":
        return b""  # no contents in the file (zeros; nothing the builder reads)
    if not sec["sh_flags"] & _SHF_COMPRESSED:
        return _file_bytes(sec.stream, sec["sh_offset"], sec["sh_size"],
                           f"{name}: section {sec.name or '#?'}")
    what = f"{name}: compressed section {sec.name or '#?'}"
    raw = _file_bytes(sec.stream, sec["sh_offset"], sec["sh_size"], what)
    if len(raw) < _ELF32_CHDR.size:
        raise BuildError(f"{what} has no compression header")
    ch_type, ch_size, _ = _ELF32_CHDR.unpack_from(raw)
    if ch_type != _ELFCOMPRESS_ZLIB:
        raise BuildError(f"{what} uses compression type {ch_type:#x}, not zlib")
    if ch_size > limit:
        raise BuildError(f"{what} declares {ch_size} bytes, more than the domain's "
                         f"{limit} bytes of memory")
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(raw[_ELF32_CHDR.size:], ch_size + 1)  # never more
    except zlib.error as exc:
        raise BuildError(f"{what}: bad zlib data ({exc})") from None
    if len(out) != ch_size or not inflate.eof:
        raise BuildError(f"{what} does not inflate to the {ch_size} bytes it declares")
    return out


def parse_image(stream: IO[bytes], name: str = "kernel",
                max_bytes: int = DEFAULT_DOMAIN_BYTES,
                profile: AbiProfile = DEFAULT_PROFILE) -> GuestImage:
    """Read a guest kernel image for a domain of ``max_bytes`` of memory on a machine of ABI
    ``profile``; raise ``BuildError`` with one line on any defect, or if the image is not
    for that profile."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise BuildError(f"{name}: not a 32-bit x86 ELF image")
        sections = list(elf.iter_sections())
        segments = list(elf.iter_segments())
        notes: dict[int, bytes] = {}
        note_blobs = [_section_data(s, max_bytes, name) for s in sections
                      if s["sh_type"] == "SHT_NOTE"]
        if not note_blobs:
            note_blobs = [_segment_data(p, name) for p in segments if p["p_type"] == "PT_NOTE"]
        for blob in note_blobs:
            for owner, ntype, desc in _parse_notes(blob):
                if owner == "Xen":
                    notes[ntype] = desc
        xen_guest: dict[str, str] = {}
        sec = elf.get_section_by_name("__xen_guest")
        if sec is not None:
            text = _section_data(sec, max_bytes, name).split(b"\0", 1)[0].decode("latin-1")
            for item in text.split(","):
                key, _, value = item.partition("=")
                if key.strip():
                    xen_guest[key.strip()] = value.strip()
        loads = [
            (p["p_paddr"], _segment_data(p, name), p["p_memsz"]) for p in segments
            if p["p_type"] == "PT_LOAD" and p["p_memsz"]
        ]
        e_entry = elf["e_entry"]
        image = _identify(name, notes, xen_guest, loads, e_entry, profile)
        if profile.paging_levels == 3 and _wants_bsd_symtab(notes, xen_guest):
            image.symtab = _bsd_symtab(stream, sections, image.kernel_end, max_bytes, name)
    except ELFError as exc:
        raise BuildError(f"{name}: not a valid ELF image ({exc})") from None
    except (struct.error, ValueError, OSError, EOFError, zlib.error) as exc:
        raise BuildError(f"{name}: malformed ELF image ({exc})") from None
    span = image.kernel_end - image.kernel_start
    if span > max_bytes:
        raise BuildError(f"{name}: the image spans {span} bytes, more than the domain's "
                         f"{max_bytes} bytes of memory")
    return image


def _wants_bsd_symtab(notes: dict[int, bytes], xen_guest: dict[str, str]) -> bool:
    """libelf-dominfo.c: the BSD_SYMTAB note "yes", or BSD_SYMTAB in ``__xen_guest``."""
    if notes:
        return _note_str(notes.get(abi.XEN_ELFNOTE_BSD_SYMTAB, b"")) == "yes"
    return "BSD_SYMTAB" in xen_guest


def _bsd_symtab(stream: IO[bytes], sections: list[Section], pend: int, max_bytes: int,
                name: str) -> tuple[int, bytes, int] | None:
    """The block of refmodel/bsdsyms.py for the first symbol table whose link names a string
    table (libelf elf_init); None without one (libelf marks the image broken, the tools only
    say so and build it without the block)."""
    for sec in sections:
        if sec["sh_type"] != "SHT_SYMTAB":
            continue
        link = sec["sh_link"]
        if not 0 < link < len(sections) or sections[link]["sh_type"] != "SHT_STRTAB":
            return None
        return bsd_symtab(_file_bytes(stream, 0, 52, name), sec, sections[link],
                          lambda s: _section_data(s, max_bytes, name), pend)
    return None


def _identify(
    name: str, notes: dict[int, bytes], xen_guest: dict[str, str],
    loads: list[tuple[int, bytes, int]], e_entry: int, profile: AbiProfile = DEFAULT_PROFILE,
) -> GuestImage:
    if not notes and not xen_guest:
        raise BuildError(
            f"{name}: not a Xen guest kernel: no __xen_guest section and no Xen ELF notes"
        )
    if notes:
        xen_ver = _note_str(notes.get(abi.XEN_ELFNOTE_XEN_VERSION, b""))
        pae_text = _note_str(notes.get(abi.XEN_ELFNOTE_PAE_MODE, b"no"))
        pae = pae_mode_of_note(pae_text)
        virt_base = _note_int(notes[abi.XEN_ELFNOTE_VIRT_BASE]) \
            if abi.XEN_ELFNOTE_VIRT_BASE in notes else 0
        paddr_offset = _note_int(notes[abi.XEN_ELFNOTE_PADDR_OFFSET]) \
            if abi.XEN_ELFNOTE_PADDR_OFFSET in notes else 0
        entry = _note_int(notes[abi.XEN_ELFNOTE_ENTRY]) \
            if abi.XEN_ELFNOTE_ENTRY in notes else e_entry
        hypercall_page = _note_int(notes[abi.XEN_ELFNOTE_HYPERCALL_PAGE]) \
            if abi.XEN_ELFNOTE_HYPERCALL_PAGE in notes else None
        guest_os = _note_str(notes.get(abi.XEN_ELFNOTE_GUEST_OS, b""))
        loader = _note_str(notes.get(abi.XEN_ELFNOTE_LOADER, b""))
        features = _note_str(notes.get(abi.XEN_ELFNOTE_FEATURES, b""))
    else:
        xen_ver = xen_guest.get("XEN_VER", "")
        pae_text = xen_guest.get("PAE", "no")
        pae = pae_mode_of_xen_guest(pae_text)
        virt_base = _int(xen_guest["VIRT_BASE"], "VIRT_BASE") if "VIRT_BASE" in xen_guest else 0
        paddr_offset = (_int(xen_guest["ELF_PADDR_OFFSET"], "ELF_PADDR_OFFSET")
                        if "ELF_PADDR_OFFSET" in xen_guest else virt_base)
        entry = _int(xen_guest["VIRT_ENTRY"], "VIRT_ENTRY") if "VIRT_ENTRY" in xen_guest \
            else e_entry
        hypercall_page = None
        if "HYPERCALL_PAGE" in xen_guest:
            pfn = _int(xen_guest["HYPERCALL_PAGE"], "HYPERCALL_PAGE")
            hypercall_page = virt_base + (pfn << abi.PAGE_SHIFT)
        guest_os = xen_guest.get("GUEST_OS", "")
        loader = xen_guest.get("LOADER", "")
        features = xen_guest.get("FEATURES", "")
    if not xen_ver.startswith("xen-3.0"):
        raise BuildError(f"{name}: built for {xen_ver or 'an unnamed Xen'}, not xen-3.0")
    how = f"PAE_MODE note {pae_text!r}" if notes else f"__xen_guest PAE={pae_text}"
    wrong = profile.mismatch(pae, how)
    if wrong is not None:
        raise BuildError(f"{name}: {wrong}")
    if not loads:
        raise BuildError(f"{name}: no loadable segments")
    segments = [((p - paddr_offset + virt_base) & 0xFFFFFFFF, data, memsz)
                for p, data, memsz in loads]
    image = GuestImage(segments, entry, virt_base, hypercall_page, guest_os, xen_ver,
                       loader, features, notes, xen_guest, pae)
    if virt_base & ((1 << abi.L2_PAGETABLE_SHIFT) - 1):
        raise BuildError(f"{name}: VIRT_BASE {virt_base:#x} is not 4 MB aligned")
    if image.kernel_start < virt_base or image.kernel_end > profile.hypervisor_virt_start:
        raise BuildError(f"{name}: the image [{image.kernel_start:#x}, {image.kernel_end:#x})"
                         f" lies outside [VIRT_BASE, HYPERVISOR_VIRT_START)")
    if not image.kernel_start <= entry < image.kernel_end:
        raise BuildError(f"{name}: entry point {entry:#x} is outside the image")
    if hypercall_page is not None and (
        hypercall_page & (abi.PAGE_SIZE - 1)
        or not image.kernel_start <= hypercall_page < image.kernel_end
    ):
        raise BuildError(f"{name}: hypercall page {hypercall_page:#x} is not a page of the image")
    return image


# ----------------------------------------------------------------------------------------------
# Building.
# ----------------------------------------------------------------------------------------------
def build_domain(
    hv: Hypervisor, pv: PVPlatform, image: GuestImage, nr_pages: int,
    cmdline: str = "", privileged: bool = False, devices: bool = False,
) -> BuiltDomain:
    """Create a domain of ``nr_pages`` and lay ``image`` out in it as Xen 3.0.4 does
    (refmodel/builder.py bootstrap_layout): as tools/libxc/xc_linux_build.c setup_guest
    builds a domain, with the store and console pages after start_info; for a privileged
    domain without devices as xen/arch/x86/domain_build.c construct_dom0 builds the initial
    domain, without them. With ``devices`` start_info names the store and console frames and
    their event channels, bound to the backend domain (refmodel/xenstore.py,
    refmodel/consring.py); without, those fields are 0, the ports stay free and the two pages
    are ordinary memory of the region. No initial ram disk: mod_start and mod_len are 0."""
    base = image.virt_base
    tools = devices or not privileged
    pae = hv.profile.paging_levels == 3
    lay: BootstrapLayout | PaeLayout
    if pae:  # Xen 4.19's tools (refmodel/builder_pae.py), for every domain
        lay = bootstrap_layout_pae(base, image.kernel_end, nr_pages)
    else:
        lay = bootstrap_layout(base, image.kernel_end, nr_pages, store_and_console=tools)
    nr_mapped = lay.nr_mapped
    if lay.v_end > hv.hole:
        raise BuildError("the bootstrap region would reach the hypervisor hole")
    try:
        d = hv.create_domain(nr_pages, privileged=privileged)
    except OutOfMemory as exc:
        raise BuildError(str(exc)) from None
    pv.setup_domain(d)
    mem = hv.memory
    mfns = d.page_list

    def write_va(va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pfn, off = divmod(va + pos - base, abi.PAGE_SIZE)
            chunk = min(len(data) - pos, abi.PAGE_SIZE - off)
            mem.write((mfns[pfn] << abi.PAGE_SHIFT) + off, data[pos : pos + chunk])
            pos += chunk

    for va, data, memsz in image.segments:
        write_va(va, data[:memsz] + bytes(max(0, memsz - len(data))))
    if image.symtab is not None:
        write_va(image.symtab[0], image.symtab[1])
    if image.hypercall_page is not None:
        write_va(image.hypercall_page, hypercall_page_contents())
    write_va(lay.vphysmap_start, struct.pack(f"<{nr_pages}I", *mfns))
    if isinstance(lay, PaeLayout):
        if image.pae is PaeMode.extended_cr3:  # xg_dom_x86.c: the kernel understands it
            pv.darch(d).vm_assist |= 1 << abi.VMASST_TYPE_pae_extended_cr3
        build_initial_tables_pae(hv, d, lay)
    else:
        build_initial_tables(hv, d, nr_mapped, base, pt_base_pfn=lay.pfn(lay.vpt_start))
    si_va = lay.vstartinfo_start
    si = bytearray(abi.SIZEOF_START_INFO)
    magic = hv.profile.guest_type.encode()
    si[0 : len(magic)] = magic

    def put(off: int, value: int) -> None:
        si[off : off + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")

    put(abi.START_INFO_nr_pages, nr_pages)
    put(abi.START_INFO_shared_info, pv.darch(d).shared_info_mfn << abi.PAGE_SHIFT)
    put(abi.START_INFO_flags, (abi.SIF_PRIVILEGED | abi.SIF_INITDOMAIN) if privileged else 0)
    put(abi.START_INFO_pt_base, lay.vpt_start)
    put(abi.START_INFO_nr_pt_frames, lay.nr_pt_pages)
    put(abi.START_INFO_mfn_list, lay.vphysmap_start)
    if devices:
        assert lay.vstore_start is not None and lay.vconsole_start is not None
        store_mfn = mfns[lay.pfn(lay.vstore_start)]
        put(abi.START_INFO_store_mfn, store_mfn)
        put(abi.START_INFO_store_evtchn, pv.xenstore.introduce(d, store_mfn))
        console_mfn = mfns[lay.pfn(lay.vconsole_start)]
        put(abi.START_INFO_console_mfn, console_mfn)
        put(abi.START_INFO_console_evtchn, pv.consrings.attach(d, console_mfn))
    cmd = cmdline.encode()[: abi.MAX_GUEST_CMDLINE - 1]
    si[abi.START_INFO_cmd_line : abi.START_INFO_cmd_line + len(cmd)] = cmd
    write_va(si_va, bytes(si))
    regs = CpuUserRegs(
        eip=image.entry, cs=abi.FLAT_KERNEL_CS, ss=abi.FLAT_KERNEL_SS, ds=abi.FLAT_KERNEL_DS,
        es=abi.FLAT_KERNEL_DS, fs=abi.FLAT_KERNEL_DS, gs=abi.FLAT_KERNEL_DS,
        esp=lay.stack_top, esi=si_va, eflags=abi.X86_EFLAGS_IF | abi.X86_EFLAGS_MBS,
    )
    return BuiltDomain(d, image, si_va, regs, nr_mapped)


def load_image_file(path: str, max_bytes: int = DEFAULT_DOMAIN_BYTES,
                    profile: AbiProfile = DEFAULT_PROFILE) -> GuestImage:
    """Parse the kernel image at ``path`` for a domain of ``max_bytes`` of memory on a
    machine of ABI ``profile``."""
    try:
        with open(path, "rb") as f:
            return parse_image(f, name=path, max_bytes=max_bytes, profile=profile)
    except OSError as exc:
        raise BuildError(f"{path}: {exc.strerror or exc}") from None

"""The symbol table a kernel asks the builder to load after its image (BSD_SYMTAB).

A kernel whose XEN_ELFNOTE_BSD_SYMTAB note says "yes" (or whose ``__xen_guest`` string has
``BSD_SYMTAB``) gets, after the end of its loaded segments rounded up to 4 bytes, a small ELF
file of its own symbols, as Xen 4.19's libelf lays it out (xen/common/libelf/libelf-loader.c
elf_parse_bsdsyms and elf_load_bsdsyms, for a 32-bit image):

  +0    u32: the size of what follows, up to the end of the string table
  +4    the image's ELF header, with e_phoff, e_phentsize, e_phnum and e_shstrndx 0,
        e_version 1, e_ehsize 52, e_shentsize 40, e_shnum 3, e_shoff 64; the 12 bytes after
        it are zero (the XSA-194 fix: the header is built in a zeroed buffer)
  +68   three section headers of 40 bytes: a null one, the symbol table's (sh_link 2), the
        string table's; each sh_offset counts from +4
  +260  the symbol table (rounded up to 4), then the string table (rounded up to 4)

``elf_parse_bsdsyms`` reserves less than ``elf_load_bsdsyms`` writes: it counts the headers
as 4 + 68 + 3 * 40 = 192 bytes where the tables start at 260, so the kernel's end (which the
start-of-day layout follows) is 68 bytes short of the block's end. The model keeps both
numbers, as Xen does: the block is written whole, and the layout after it starts from the
reserved end (the phys-to-machine list written later overwrites what spills over).

Only the compat-pae profile loads the block: Xen 3.0.4's loader (xc_load_elf.c
loadelfsymtab) has its own layout, not modelled (its images load without the block).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

_EHDR_SIZE: Final = 52  # sizeof(Elf32_Ehdr)
_SHDR_SIZE: Final = 40  # sizeof(Elf32_Shdr)
_EHDR_UNION: Final = 64  # libelf's elf_ehdr union (Elf64_Ehdr's size)
_SECTIONS: Final = 3  # ELF_BSDSYM_SECTIONS
_HEADER: Final = 4 + _EHDR_UNION + _SECTIONS * 64  # sizeof(struct elf_sym_header) = 260
_PARSED_HEADER: Final = 4 + 4 + _EHDR_UNION + _SECTIONS * _SHDR_SIZE  # elf_parse_bsdsyms


def _round4(x: int) -> int:
    return (x + 3) & ~3


def _shdr(h: Any, sh_type: int, offset: int, link: int) -> bytes:
    return struct.pack("<10I", h["sh_name"], sh_type, h["sh_flags"], h["sh_addr"], offset,
                       h["sh_size"], link, h["sh_info"], h["sh_addralign"], h["sh_entsize"])


def bsd_symtab(ehdr: bytes, symtab: Any, strtab: Any, read: Callable[[Any], bytes],
               pend: int) -> tuple[int, bytes, int]:
    """The block for an image whose segments end at virtual address ``pend``: (its address,
    its bytes, the size libelf reserves for it). ``symtab`` and ``strtab`` are the section
    headers (mappings of the ELF fields), ``read`` reads a section's contents."""
    pstart = _round4(pend)
    sym, strs = read(symtab), read(strtab)
    symtab_off = _round4(_HEADER)
    strtab_off = _round4(symtab_off + len(sym))
    header = bytearray(ehdr[:_EHDR_SIZE])
    struct.pack_into("<I", header, 20, 1)  # e_version = EV_CURRENT
    struct.pack_into("<II", header, 28, 0, _EHDR_UNION)  # e_phoff, e_shoff
    struct.pack_into("<6H", header, 40, _EHDR_SIZE, 0, 0, _SHDR_SIZE, _SECTIONS, 0)
    block = bytearray(strtab_off + len(strs))
    struct.pack_into("<I", block, 0, len(block) - 4)
    block[4 : 4 + _EHDR_SIZE] = header
    sections = 4 + _EHDR_UNION
    block[sections + _SHDR_SIZE : sections + 2 * _SHDR_SIZE] = _shdr(symtab, 2, symtab_off - 4, 2)
    block[sections + 2 * _SHDR_SIZE : sections + 3 * _SHDR_SIZE] = _shdr(
        strtab, 3, strtab_off - 4, strtab["sh_link"])
    block[symtab_off : symtab_off + len(sym)] = sym
    block[strtab_off:] = strs
    reserved = _round4(_round4(_round4(_PARSED_HEADER) + len(sym)) + len(strs))
    return pstart, bytes(block), reserved

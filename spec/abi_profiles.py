"""ABI profiles: which x86-32 paravirtual interface a machine offers, chosen explicitly.

Two profiles, each number defined once here or in ``spec/abi.py``:

* ``native-3.0.4`` (the default): Xen 3.0.4 built for x86_32 without PAE, the interface the
  rest of the specification models. Its numbers are ``spec/abi.py``'s and are only referred
  to here (guest type and start_info magic ``xen-3.0-x86_32``, two levels of 1024 four-byte
  entries, the hole from HYPERVISOR_VIRT_START = 0xFC000000).
* ``compat-pae``: a 32-bit PV guest on a 64-bit Xen 4.x (a "compat" guest, what XTF's
  pv32pae environment and today's Mini-OS target). Guest type ``xen-3.0-x86_32p``; PAE
  paging (an L3 of 4 entries, L2 and L1 of 512, eight-byte entries with NX at bit 63); the
  hole from 0xF5800000, the start of the read-only M2P, to 4 GB. Its numbers are defined
  below with the header each comes from (Xen RELEASE-4.19.0 unless a line says otherwise).
  The model runs it with Xen 4.19's MMU rules for a 32-bit PV domain (refmodel/mm_pae.py)
  and its tools' start-of-day layout (refmodel/builder_pae.py); the invariants are
  written over its paging structure as over the native one (spec/paging.py), and its MMU
  hypercalls are specified and proved in spec/mm_spec_pae.py.

Which profile a kernel image needs is Xen's tools' rule (tools/libxc/xc_linux_build.c
compat_check in 3.0.4; tools/libs/guest/xg_dom_elfloader.c xc_dom_guest_type and
xg_dom_boot.c xc_dom_compat_check in 4.x): the image's PAE mode decides its guest type, and
the guest type must be one of the hypervisor's capabilities (XENVER_capabilities). A
"bimodal" kernel takes the PAE type when the hypervisor offers it and the non-PAE one
otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Final

from xenspec.spec import abi

# ---------------------------------------------------------------------------------------------
# The image's PAE mode (xen/common/elf.c parseelfimage, 3.0.4: PAEKERN_*; libelf-dominfo.c,
# 4.x: XEN_PAE_*).
# ---------------------------------------------------------------------------------------------


class PaeMode(Enum):
    """What a kernel image says about PAE paging."""

    no = "no"  # PAEKERN_no: no note, "no", anything else
    yes = "yes"  # PAEKERN_yes: __xen_guest "PAE=yes..." without [extended-cr3]
    extended_cr3 = "extended-cr3"  # PAEKERN_extended_cr3: note "yes", or "PAE=yes[extended-cr3]"
    bimodal = "bimodal"  # PAEKERN_bimodal: note "bimodal" (adapts to the hypervisor)


def pae_mode_of_note(text: str) -> PaeMode:
    """XEN_ELFNOTE_PAE_MODE's string (elfnote.h): "bimodal..." is bimodal, "yes..." means
    PAE with extended-cr3 (a kernel that uses the notes understands it); anything else is
    no. Xen 3.0.4 xen/common/elf.c compares prefixes (strncmp), as here; Xen 4.x libelf
    (libelf-dominfo.c elf_xen_parse_note) wants "yes" exactly and finds "bimodal" anywhere."""
    if text.startswith("bimodal"):
        return PaeMode.bimodal
    if text.startswith("yes"):
        return PaeMode.extended_cr3
    return PaeMode.no


def pae_mode_of_xen_guest(value: str) -> PaeMode:
    """The ``PAE=`` value of a ``__xen_guest`` string (xen/common/elf.c, 3.0.4; libelf
    elf_xen_parse_guest_info, 4.x): "yes[extended-cr3]", other "yes..." values, else no.
    That legacy string has no bimodal form: ``PAE=bimodal`` is a non-PAE kernel."""
    if value.startswith("yes[extended-cr3]"):
        return PaeMode.extended_cr3
    if value.startswith("yes"):
        return PaeMode.yes
    return PaeMode.no


# Guest types (XENVER_capabilities entries, start_info.magic): xen/arch/x86/setup.c
# arch_get_xen_caps; tools/libs/guest/xg_dom_elfloader.c xc_dom_guest_type.
GUEST_TYPE_X86_32: Final = abi.XEN_START_INFO_MAGIC.decode()  # "xen-3.0-x86_32"
GUEST_TYPE_X86_32P: Final = "xen-3.0-x86_32p"
GUEST_TYPE_X86_64: Final = "xen-3.0-x86_64"

# ---------------------------------------------------------------------------------------------
# compat-pae: the numbers of a 32-bit PAE guest on 64-bit Xen.
# ---------------------------------------------------------------------------------------------
# xen/arch/x86/include/asm/config.h __HYPERVISOR_COMPAT_VIRT_START, the default of a compat
# domain's hv_compat_vstart; xen/include/public/arch-x86/xen-x86_32.h names the same address
# __HYPERVISOR_VIRT_START_PAE (and 3.0.4's arch-x86_32.h, CONFIG_X86_PAE, __HYPERVISOR_VIRT_START).
# A kernel may ask for a lower start with XEN_ELFNOTE_HV_START_LOW (not modelled).
COMPAT_HYPERVISOR_VIRT_START: Final = 0xF5800000
# config.h: MACH2PHYS_COMPAT_VIRT_START is HYPERVISOR_COMPAT_VIRT_START, and the compat M2P
# runs to MACH2PHYS_COMPAT_VIRT_END = 0xFFE00000 (what XENMEM_machphys_mapping reports,
# xen/arch/x86/x86_64/compat/mm.c). The public header's MACH2PHYS_VIRT_END_PAE, 0xF6800000,
# is the end a 32-bit PAE Xen used; a compat guest must not assume it.
COMPAT_MACH2PHYS_VIRT_START: Final = COMPAT_HYPERVISOR_VIRT_START
COMPAT_MACH2PHYS_VIRT_END: Final = 0xFFE00000
COMPAT_MACH2PHYS_NR_ENTRIES: Final = (COMPAT_MACH2PHYS_VIRT_END - COMPAT_MACH2PHYS_VIRT_START) // 4

# PAE paging: xen/include/asm-x86/x86_32/page-3level.h (3.0.4) and the x86 architecture;
# asm/page-bits.h (4.19): PAGETABLE_ORDER 9.
PAE_L1_PAGETABLE_SHIFT: Final = 12
PAE_L2_PAGETABLE_SHIFT: Final = 21
PAE_L3_PAGETABLE_SHIFT: Final = 30
PAE_L1_PAGETABLE_ENTRIES: Final = 512
PAE_L2_PAGETABLE_ENTRIES: Final = 512
PAE_L3_PAGETABLE_ENTRIES: Final = 4  # page-3level.h L3_PAGETABLE_ENTRIES (the CPU's PDPT)
PAE_PTE_BYTES: Final = 8  # intpte_t is u64
# The hypervisor's slots of the L2 that L3 slot 3 names (PGT_pae_xen_l2), from the one that
# maps HYPERVISOR_COMPAT_VIRT_START to the last: config.h COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT
# (l2_table_offset(HYPERVISOR_COMPAT_VIRT_START)) and COMPAT_L2_PAGETABLE_LAST_XEN_SLOT.
COMPAT_L3_XEN_SLOT: Final = 3
COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT: Final = (
    (COMPAT_HYPERVISOR_VIRT_START >> PAE_L2_PAGETABLE_SHIFT) & (PAE_L2_PAGETABLE_ENTRIES - 1)
)
COMPAT_L2_PAGETABLE_LAST_XEN_SLOT: Final = PAE_L2_PAGETABLE_ENTRIES - 1

# mmuext_op commands added after 3.0.4 (public/xen.h, 4.19) that the model answers: MARK_SUPER
# and UNMARK_SUPER (Xen 4.19 answers -EOPNOTSUPP). CLEAR_PAGE (16) and COPY_PAGE (17) are not
# modelled: -ENOSYS, as for any unknown command.
MMUEXT_FLUSH_CACHE_GLOBAL: Final = 18  # -EINVAL without cache_flush_permitted
MMUEXT_MARK_SUPER: Final = 19
MMUEXT_UNMARK_SUPER: Final = 20
# callback.h (4.19): the callbacks a compat guest may register besides event, failsafe, nmi.
CALLBACKTYPE_sysenter: Final = 5
CALLBACKTYPE_syscall32: Final = 7
# public/event_channel.h (4.19): the FIFO ABI's setup commands, struct evtchn_init_control
# (control_gfn, offset, vcpu; OUT link_bits and 7 bytes of padding) and the size of
# evtchn_fifo_control_block_t (ready, _rsvd, head[16]: 18 words).
EVTCHNOP_init_control: Final = 11
EVTCHNOP_expand_array: Final = 12
EVTCHN_INIT_CONTROL_T: Final = struct.Struct("<QIIB7x")
EVTCHN_FIFO_CONTROL_BLOCK_SIZE: Final = 72
# public/xen.h (4.19): the vm_assist type a 32-bit PV domain may enable beyond 3.0.4's
# (asm/domain.h PV32_VM_ASSIST_MASK; runstate_update_flag, 5, is not modelled).
VMASST_TYPE_architectural_iopl: Final = 4
# errno.h (public/errno.h in 4.x): the one code 4.19's MMU adds to 3.0.4's.
EOPNOTSUPP: Final = 95


@dataclass(frozen=True)
class AbiProfile:
    """One paravirtual x86-32 interface: its name on the command line, its guest type, the
    hypervisor's capabilities, and the shape of its paging and hole."""

    name: str
    title: str
    guest_type: str  # start_info.magic, the image type it runs
    capabilities: tuple[str, ...]  # XENVER_capabilities: the guest types the hypervisor runs
    paging_levels: int
    pte_bytes: int
    entries: tuple[int, ...]  # entries per table, L1 first
    hypervisor_virt_start: int
    mach2phys_virt_start: int
    mach2phys_virt_end: int
    source: str  # where its numbers come from
    xen_version: tuple[int, int] = (abi.XEN_VERSION_MAJOR, abi.XEN_VERSION_MINOR)

    def image_guest_type(self, pae: PaeMode) -> str:
        """The guest type a kernel of PAE mode ``pae`` is built as on this hypervisor
        (xc_dom_guest_type; 3.0.4 compat_check turns bimodal into extended-cr3 on a PAE
        host and into no elsewhere)."""
        if pae is PaeMode.bimodal:
            return GUEST_TYPE_X86_32P if GUEST_TYPE_X86_32P in self.capabilities \
                else GUEST_TYPE_X86_32
        return GUEST_TYPE_X86_32 if pae is PaeMode.no else GUEST_TYPE_X86_32P

    def mismatch(self, pae: PaeMode, how: str = "") -> str | None:
        """Why a kernel of PAE mode ``pae`` (said by ``how``) cannot run on this profile, or
        None (Xen 3.0.4 compat_check: "PAE-kernel on non-PAE host." / "Non PAE-kernel on PAE
        host."; 4.x xc_dom_compat_check: "guest type ... not supported by xen kernel")."""
        gtype = self.image_guest_type(pae)
        if gtype in self.capabilities:
            return None
        what = "a PAE-only kernel" if gtype == GUEST_TYPE_X86_32P else "a non-PAE kernel"
        said = f"{how}, " if how else ""
        return (f"{what} ({said}guest type {gtype}) cannot run on the {self.name} profile "
                f"({self.title}: {self.guest_type} guests only)")


NATIVE_3_0_4: Final = AbiProfile(
    name="native-3.0.4",
    title="Xen 3.0.4 x86_32 without PAE",
    guest_type=GUEST_TYPE_X86_32,
    capabilities=(GUEST_TYPE_X86_32,),
    paging_levels=2,
    pte_bytes=4,
    entries=(abi.L1_PAGETABLE_ENTRIES, abi.L2_PAGETABLE_ENTRIES),
    hypervisor_virt_start=abi.HYPERVISOR_VIRT_START,
    mach2phys_virt_start=abi.MACH2PHYS_VIRT_START,
    mach2phys_virt_end=abi.MACH2PHYS_VIRT_END,
    source="spec/abi.py (Xen 3.0.4 public headers, arch-x86_32.h without CONFIG_X86_PAE)",
)

COMPAT_PAE: Final = AbiProfile(
    name="compat-pae",
    title="32-bit PAE guest on 64-bit Xen 4.x",
    guest_type=GUEST_TYPE_X86_32P,
    # setup.c arch_get_xen_caps with CONFIG_PV and opt_pv32 (HVM types left out: no HVM here).
    capabilities=(GUEST_TYPE_X86_64, GUEST_TYPE_X86_32P),
    paging_levels=3,
    pte_bytes=PAE_PTE_BYTES,
    entries=(PAE_L1_PAGETABLE_ENTRIES, PAE_L2_PAGETABLE_ENTRIES, PAE_L3_PAGETABLE_ENTRIES),
    hypervisor_virt_start=COMPAT_HYPERVISOR_VIRT_START,
    mach2phys_virt_start=COMPAT_MACH2PHYS_VIRT_START,
    mach2phys_virt_end=COMPAT_MACH2PHYS_VIRT_END,
    source="spec/abi_profiles.py (Xen 4.19 asm/config.h, public/arch-x86/xen-x86_32.h)",
    xen_version=(4, 19),
)

PROFILES: Final = {p.name: p for p in (NATIVE_3_0_4, COMPAT_PAE)}
DEFAULT_PROFILE: Final = NATIVE_3_0_4

"""Generate the C header of ABI constants for guest kernels from ``xenspec.spec.abi``.

The guest runtime and the test kernels (conformance/guests) include the generated
``xen_abi.h``; nothing in them writes an ABI number by hand (design decision D1). Every integer
constant of ``abi`` becomes a ``#define`` (usable from C and from assembly); structure layouts
become ``<NAME>_SIZE``; byte strings become C string literals and, for instruction prefixes,
a ``.byte`` list and an inline-assembly string of it. A kernel built with ``-DPAE_ONLY`` is
a guest of the compat-pae profile (spec/abi_profiles.py): the header then gives that
profile's numbers where they differ (the hole, the M2P, start_info's magic, the paging).
Run ``python -m xenspec.spec.cheader OUT.h``.
"""

from __future__ import annotations

import struct
import sys

from xenspec.spec import abi
from xenspec.spec.abi_profiles import COMPAT_PAE


def _c_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\x{b:02x}"
                         for b in data) + '"'


def render() -> str:
    lines = [
        "/* Generated from xenspec/spec/abi.py by xenspec.spec.cheader: do not edit. */",
        "#ifndef XENSPEC_XEN_ABI_H",
        "#define XENSPEC_XEN_ABI_H",
    ]
    for name in vars(abi):
        if name.startswith("__") and not name.startswith("__HYPERVISOR"):
            continue
        value = getattr(abi, name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            text = f"{value:#x}" if value > 9 else str(value) if value >= 0 else f"({value})"
            lines.append(f"#define {name} {text}")
        elif isinstance(value, struct.Struct):
            base = name.removesuffix("_T")
            lines.append(f"#define {base}_SIZE {value.size}")
        elif isinstance(value, bytes):
            lines.append(f"#define {name}_STR {_c_string(value)}")
            lines.append(f"#define {name}_NBYTES {len(value)}")
            byte_list = ",".join(f"0x{b:02x}" for b in value)
            lines.append(f"#define {name}_BYTES {byte_list}")
            lines.append(f'#define {name}_ASM ".byte {byte_list}"')
    lines += _compat_pae()
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def _compat_pae() -> list[str]:
    """The compat-pae profile's numbers, for a kernel built with -DPAE_ONLY."""
    magic = COMPAT_PAE.guest_type.encode()
    values = {
        "HYPERVISOR_VIRT_START": f"{COMPAT_PAE.hypervisor_virt_start:#x}",
        "MACH2PHYS_VIRT_START": f"{COMPAT_PAE.mach2phys_virt_start:#x}",
        "L2_PAGETABLE_SHIFT": "21",
        "L1_PAGETABLE_ENTRIES": str(COMPAT_PAE.entries[0]),
        "L2_PAGETABLE_ENTRIES": str(COMPAT_PAE.entries[1]),
        "PTE_SIZE": str(COMPAT_PAE.pte_bytes),
        "XEN_START_INFO_MAGIC_STR": _c_string(magic),
        "XEN_START_INFO_MAGIC_NBYTES": str(len(magic)),
    }
    out = ["#ifdef PAE_ONLY  /* the compat-pae profile (spec/abi_profiles.py) */"]
    for name, text in values.items():
        out += [f"#undef {name}", f"#define {name} {text}"]
    return [*out, "#endif"]


def main(argv: list[str]) -> int:
    text = render()
    if len(argv) > 1:
        with open(argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

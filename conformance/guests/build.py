"""Build the guest test kernels with the machine's ``gcc -m32`` and ``ld -m elf_i386``.

``build_guest("hello")`` compiles ``conformance/guests/hello.c`` with the runtime into
``build/guests/hello.elf`` (the repository's gitignored build directory, or
``XENSPEC_BUILD_DIR``) and returns its path;
it rebuilds only what changed. The ABI header is generated first from ``xenspec.spec.abi``
(``xenspec.spec.cheader``). The processes of a parallel test run build under one lock, and
every output (header, object, image) appears whole, by rename (``xenspec.sharedfiles``): no
process links a half-written object or boots a half-written image.
Run ``python -m conformance.guests.build [NAME...]`` to build by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from xenspec.sharedfiles import locked, temporary_beside, write_atomic
from xenspec.spec import cheader

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "runtime"
REPO = HERE.parent.parent
# A source checkout builds into its gitignored build/; an installed package into a user cache.
BUILD = Path(os.environ.get("XENSPEC_BUILD_DIR") or (
    REPO / "build" / "guests" if (REPO / "pyproject.toml").exists()
    else Path.home() / ".cache" / "xenspec" / "guests"))

CFLAGS = [
    "-m32", "-march=i686", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-fno-builtin", "-fno-asynchronous-unwind-tables", "-mno-sse", "-mno-mmx",
    "-O2", "-Wall", "-Werror", "-std=gnu11",
]

# Guests built from the same source with extra flags: name -> (source, defines).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "xen_guest_section": ("hello", ["-DXEN_GUEST_SECTION"]),
    "pae_only": ("hello", ["-DPAE_ONLY"]),
    "bsd_symtab": ("hello", ["-DPAE_ONLY", "-DBSD_SYMTAB"]),
}


class GuestBuildError(RuntimeError):
    pass


def toolchain_available() -> bool:
    return shutil.which("gcc") is not None and shutil.which("ld") is not None


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise GuestBuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def _run_into(cmd: list[str], target: Path) -> None:
    """Run ``cmd`` with ``-o`` a temporary file, then rename it to ``target``."""
    tmp = temporary_beside(target)
    try:
        _run([*cmd, "-o", str(tmp)])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stale(target: Path, sources: list[Path]) -> bool:
    if not target.exists():
        return True
    t = target.stat().st_mtime
    return any(s.stat().st_mtime > t for s in sources)


def abi_header() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    header = BUILD / "xen_abi.h"
    text = cheader.render()
    if not header.exists() or header.read_text() != text:
        write_atomic(header, text)
    return header


def guest_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.c")) + sorted(VARIANTS)


def build_guest(name: str, pae: bool = False) -> Path:
    """The path of the built ELF for guest ``name``; with ``pae``, built from the same source
    for the compat-pae profile (``-DPAE_ONLY``: its ELF notes, numbers and page tables)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with locked(BUILD / "guests"):
        return _build_guest(name, pae)


def _build_guest(name: str, pae: bool = False) -> Path:
    source, defines = VARIANTS.get(name, (name, []))
    if pae and "-DPAE_ONLY" not in defines:
        name, defines = f"{name}-pae", [*defines, "-DPAE_ONLY"]
    src = HERE / f"{source}.c"
    if not src.exists():
        raise GuestBuildError(f"no guest source {src}")
    header = abi_header()
    out_dir = BUILD / name
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [header, *sorted(RUNTIME.glob("*.h")), Path(__file__)]
    inc = ["-I", str(BUILD), "-I", str(RUNTIME)]
    objs = []
    for unit in (RUNTIME / "head.S", RUNTIME / "lib.c", src):
        obj = out_dir / (unit.stem + ".o")
        if _stale(obj, [unit, *common]):
            _run_into(["gcc", *CFLAGS, *defines, *inc, "-c", str(unit)], obj)
        objs.append(obj)
    elf = BUILD / f"{name}.elf"
    script = RUNTIME / "link.ld"
    if _stale(elf, [*objs, script]):
        _run_into(["ld", "-m", "elf_i386", "-nostdlib", "-T", str(script), *map(str, objs)],
                  elf)
    return elf


def main(argv: list[str]) -> int:
    names = argv[1:] or guest_names()
    for n in names:
        print(build_guest(n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

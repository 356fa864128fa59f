"""The model's small C helpers, built with the machine's ``gcc`` on first use.

Two hot paths have a C twin beside the readable Python: the CPU substrate's instruction
counter (``blockcount.c``, see refmodel/cpu.py) and the common case of an ``mmu_update``
batch entry (``mmfast.c``, see refmodel/mm.py). Each is built once per source version into
the checkout's ``build/host`` (or ``XENSPEC_BUILD_DIR``/host, or a user cache), under a name
that changes with the source, and loaded with ctypes. Without gcc, or if the build fails, the
loader answers None and the model runs its Python alone: the C is for speed, never for a
rule the Python does not state.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path


def build_dir() -> Path:
    """Beside the guests: the checkout's build/, or XENSPEC_BUILD_DIR, or a user cache."""
    env = os.environ.get("XENSPEC_BUILD_DIR")
    if env:
        return Path(env) / "host"
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "build" / "host"
    return Path.home() / ".cache" / "xenspec" / "host"


def load(source: Path, salt: str = "", dll: type[ctypes.CDLL] = ctypes.CDLL
         ) -> ctypes.CDLL | None:
    """Build ``source`` (once per its text and ``salt``) into a shared object and load it as
    ``dll`` (``ctypes.PyDLL``: its functions run holding the interpreter lock); None if there
    is no gcc, the build fails or the build directory cannot be written."""
    try:
        text = source.read_bytes()
        digest = hashlib.sha256(text + salt.encode()).hexdigest()[:16]
        target = build_dir() / f"{source.stem}-{digest}.so"
        if not target.exists():
            gcc = shutil.which("gcc")
            if gcc is None:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            proc = subprocess.run(
                [gcc, "-O2", "-shared", "-fPIC", "-Wall", "-o", str(tmp), str(source)],
                capture_output=True, text=True)
            if proc.returncode:
                return None
            os.replace(tmp, target)
        return dll(str(target))
    except OSError:
        return None

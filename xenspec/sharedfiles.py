"""Files that several processes write at once: the proof cache and the last-run status
(``.xenspec-cache/``), the conformance record, the built guests and the block counter
(``build/``). The test command runs in parallel processes (pytest-xdist), and ``xenspec prove``
in a process pool, so each such file is

* written whole or not at all: into a temporary file of the writer's own (a name no other
  process uses), then renamed over the target, which POSIX makes atomic; a reader sees the old
  file or the new one, never a part;
* read, changed and written back under an exclusive lock (``flock`` on a lock file beside
  it), so that two writers do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def temporary_beside(path: Path) -> Path:
    """A fresh, empty file in ``path``'s folder that no other process names (created here)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` by ``data`` in one step (its folder is made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (the file ``path.lock`` beside it) while inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def read_json_dict(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} if there is none (absent, unreadable or not an object)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_json_dict(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Read the JSON object in ``path``, let ``change`` alter it, write it back: under the
    file's lock, so that concurrent updates all land. A folder that cannot be written loses
    the update silently (a read-only tree only loses its cache)."""
    try:
        with locked(path):
            data = read_json_dict(path)
            change(data)
            write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass

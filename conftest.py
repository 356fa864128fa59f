"""Loads the conformance suite's pytest plugin when the package is not installed (installed,
it comes through its pytest11 entry point under the same name).

It also keeps Python's compiled bytecode for the runs' own processes. The tests start many
Python processes (the conformance suite run as a user runs it, an adapter's server per domain,
the command line); with ``PYTHONDONTWRITEBYTECODE`` set, as on some CI machines, each would
compile every module of the package again (about 0.2 s each, measured). Where it is set, the
bytecode goes to ``.xenspec-cache/pycache`` (Python's ``PYTHONPYCACHEPREFIX``) instead of
nowhere: the source tree stays free of ``__pycache__`` folders, as the setting asks.
"""

import os
import sys
from pathlib import Path

pytest_plugins = ["xenspec.conformance.plugin"]

if sys.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
    _prefix = str(Path(os.environ.get("XENSPEC_CACHE_DIR", ".xenspec-cache")).resolve()
                  / "pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = _prefix
    sys.dont_write_bytecode = False
    sys.pycache_prefix = _prefix

"""Loads the conformance suite's pytest plugin when the package is not installed (installed,
it comes through its pytest11 entry point under the same name).

It also lets the runs' own processes keep Python's compiled bytecode. The tests start many
Python processes (the conformance suite run as a user runs it, an adapter's server per domain,
the command line); with ``PYTHONDONTWRITEBYTECODE`` set, as on some CI machines, each compiled
every module of the package again. Measured on the pipe adapter's run of the suite
(``tests/test_conformance_suite.py::test_adapter_outside_the_package``, 156 servers, a clean
tree): 120 s with the setting, 83 s without. So the tests' processes write bytecode as Python
does by default, into ``__pycache__`` folders (which git ignores). A bytecode folder of
their own (``PYTHONPYCACHEPREFIX``) measured the same on that run, but compiles the standard
library and every installed package again into each new cache.
"""

import os
import sys

pytest_plugins = ["xenspec.conformance.plugin"]

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

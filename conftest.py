"""Loads the conformance suite's pytest plugin when the package is not installed (installed,
it comes through its pytest11 entry point under the same name)."""

pytest_plugins = ["xenspec.conformance.plugin"]

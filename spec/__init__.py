"""The formal specification: ABI constants, frame types and entry formats, invariants."""

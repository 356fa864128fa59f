"""Solver-backed proof obligations: every MMU hypercall preserves every invariant."""

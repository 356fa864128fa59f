"""The hostile-guest harness of tests/test_hostile.py: a machine attacked by unprivileged
guests (``world``: Python-driven guests issuing hypercalls; ``randcode``: random x86 code run
by a real guest kernel; ``elfmut``: mutated kernel images), with the checks made after every
step (``checks``)."""

"""Reading a solver model back as a small, readable counterexample: the arguments, the frames
and entries the failing clause names, before and after the call."""

from __future__ import annotations

from collections.abc import Callable

import z3

from xenspec.spec.pagetable import PGT
from xenspec.spec.symbolic import SymState, bv

ARGUMENTS = ("v", "va", "val", "ptr", "mfn", "fd", "vector", "cs", "ss", "event_cs",
             "failsafe_cs", "entries", "frame0", "pa", "lo", "hi")


def _num(model: z3.ModelRef, term: z3.ExprRef) -> int | None:
    value = model.eval(term, model_completion=True)
    return value.as_long() if isinstance(value, z3.BitVecNumRef) else None


def _bool(model: z3.ModelRef, term: z3.ExprRef) -> bool:
    return bool(z3.is_true(model.eval(term, model_completion=True)))


def describe_frame(model: z3.ModelRef, s: SymState, f: int) -> str:
    t = _num(model, s.type[bv(f)])
    type_name = PGT(t).name if t is not None and t < 8 else str(t)
    flags = [name for name, arr in (("validated", s.validated), ("pinned", s.pinned),
                                    ("written by Xen", s.xen_written))
             if _bool(model, arr[bv(f)])]
    owner = _num(model, s.owner[bv(f)])
    return f"owner {owner}, type {type_name}" + (f", {'|'.join(flags)}" if flags else "")


def explain(
    model: z3.ModelRef,
    old: SymState,
    new: SymState,
    witnesses: list[tuple[str, z3.BitVecRef]],
) -> list[str]:
    """Lines describing the counterexample in ``model``."""
    lines = []
    decls = {d.name(): d for d in model.decls()}
    args = []
    for name in ARGUMENTS:
        if name in decls and decls[name].arity() == 0:
            args.append(f"{name}={model[decls[name]]}")
    if args:
        lines.append("arguments: " + ", ".join(args))
    frames = [w for k, w in witnesses if k == "frame"]
    indices: list[int] = []
    for k, w in witnesses:
        i = _num(model, w) if k == "index" else None
        if i is not None and i < 1024 and i not in indices:
            indices.append(i)
    vcpus = [w for k, w in witnesses if k == "vcpu"]
    shown: set[int] = set()
    for fw in frames:
        f = _num(model, fw)
        if f is None:
            continue
        lines.append(f"frame {f:#x}: before: {describe_frame(model, old, f)}")
        lines.append(f"{'':>{len(hex(f)) + 7}}after:  {describe_frame(model, new, f)}")
        shown.add(f)
        for i in indices:
            e_old = _num(model, z3.Select(old.mem, bv(f), bv(i))) or 0
            e_new = _num(model, z3.Select(new.mem, bv(f), bv(i))) or 0
            lines.append(f"  entry {i}: {e_old:#010x} -> {e_new:#010x}")
            if e_new & 1:
                target = e_new >> 12
                lines.append(f"  which names frame {target:#x}: "
                             f"{describe_frame(model, new, target)}")
    for vw in vcpus:
        v = _num(model, vw)
        if v is not None:
            b_old, b_new = _num(model, old.base[bv(v)]), _num(model, new.base[bv(v)])
            lines.append(f"vcpu {v} (domain {_num(model, old.vcpu_domain[bv(v)])}): "
                         f"base {b_old:#x} -> {b_new:#x}" if b_old is not None and b_new is not None
                         else f"vcpu {v}")
            if b_new is not None and b_new not in shown:
                lines.append(f"  base frame {b_new:#x}: {describe_frame(model, new, b_new)}")
            lines += describe_cpu(model, old, new, bv(v), indices)
    return lines


def describe_cpu(
    model: z3.ModelRef, old: SymState, new: SymState, v: z3.BitVecRef, indices: list[int]
) -> list[str]:
    """The vCPU's selectors before and after: callbacks, kernel stack, the named IDT entries."""
    def pair(get: Callable[[SymState], z3.ExprRef]) -> str:
        a, b = _num(model, get(old)), _num(model, get(new))
        return f"{a:#x} -> {b:#x}" if a is not None and b is not None else "?"

    lines = [f"  selectors: event cs {pair(lambda s: s.event_cs[v])}, failsafe cs "
             f"{pair(lambda s: s.failsafe_cs[v])}, kernel ss {pair(lambda s: s.kernel_ss[v])}"]
    for n in [i for i in indices if i < 256]:
        cs = [_num(model, z3.Select(s.trap_cs, v, bv(n))) for s in (old, new)]
        lines.append(f"  trap table entry {n}: cs {cs[0]} -> {cs[1]}")
    return lines

"""Keep a seeded random sample of the mutants of a cosmic-ray session, or summarise its results.

``python benchmarks/mutation/sample.py keep SESSION N [--seed S]`` drops all but N mutants
(chosen with ``random.Random(S)`` from the mutants sorted by position and operator, so the
sample is the same on every machine); ``... summary SESSION`` prints run / killed / survived /
timeout and the kill rate, then every survivor (line, function, operator; ``--diff`` adds
the change); ``... survivors SESSION EARLIER`` keeps only the mutants of SESSION that survived
in the executed session EARLIER (the same mutant: position, operator, occurrence), to judge
them again after new tests.
"""

from __future__ import annotations

import argparse
import random
import sqlite3


def _specs(db: sqlite3.Connection) -> list[tuple[str, ...]]:
    rows = db.execute(
        "SELECT start_pos_row, start_pos_col, operator_name, occurrence, definition_name, job_id "
        "FROM mutation_specs").fetchall()
    return sorted(tuple(str(c) for c in r) for r in rows)


def keep(session: str, n: int, seed: int) -> None:
    db = sqlite3.connect(session)
    specs = _specs(db)
    chosen = {s[-1] for s in random.Random(seed).sample(specs, min(n, len(specs)))}
    drop = [(s[-1],) for s in specs if s[-1] not in chosen]
    db.executemany("DELETE FROM work_results WHERE job_id = ?", drop)
    db.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
    db.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
    db.commit()
    print(f"kept {len(chosen)} of {len(specs)} mutants (seed {seed})")


def survivors(session: str, earlier: str) -> None:
    old = sqlite3.connect(earlier)
    survived = set(old.execute(
        "SELECT m.start_pos_row, m.start_pos_col, m.operator_name, m.occurrence "
        "FROM mutation_specs m JOIN work_results r USING (job_id) "
        "WHERE lower(r.test_outcome) = 'survived'").fetchall())
    db = sqlite3.connect(session)
    rows = db.execute("SELECT start_pos_row, start_pos_col, operator_name, occurrence, job_id "
                      "FROM mutation_specs").fetchall()
    drop = [(r[4],) for r in rows if tuple(r[:4]) not in survived]
    for table in ("work_results", "mutation_specs", "work_items"):
        db.executemany(f"DELETE FROM {table} WHERE job_id = ?", drop)
    db.commit()
    print(f"kept {len(rows) - len(drop)} of {len(rows)} mutants: the survivors of {earlier}")


def summary(session: str, diff: bool) -> None:
    db = sqlite3.connect(session)
    rows = db.execute(
        "SELECT m.start_pos_row, m.definition_name, m.operator_name, r.worker_outcome, "
        "r.test_outcome, r.output, r.diff FROM mutation_specs m JOIN work_results r USING (job_id) "
        "ORDER BY m.start_pos_row").fetchall()
    total = db.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
    # cosmic-ray reports a test run that outlived the timeout as killed, output "timeout"
    timeout = sum(1 for r in rows if r[4].lower() == "killed" and r[5] == "timeout")
    killed = sum(1 for r in rows if r[4].lower() == "killed") - timeout
    survived = [r for r in rows if r[4].lower() == "survived"]
    other = len(rows) - killed - len(survived) - timeout
    rate = 100.0 * (killed + timeout) / len(rows) if rows else 0.0
    print(f"run {len(rows)} of {total}  killed {killed}  survived {len(survived)}  "
          f"timeout {timeout}  other {other}  kill rate {rate:.1f}% (timeouts count as killed)")
    for r in survived:
        print(f"  SURVIVED line {r[0]:>4} {r[1] or '(module)':28} {r[2]}")
        if diff:
            print("\n".join("      " + x for x in str(r[6]).splitlines()
                            if x[:1] in "+-" and x[:3] not in ("+++", "---")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep")
    k.add_argument("session")
    k.add_argument("n", type=int)
    k.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("survivors")
    v.add_argument("session")
    v.add_argument("earlier")
    s = sub.add_parser("summary")
    s.add_argument("session")
    s.add_argument("--diff", action="store_true", help="show each survivor's change")
    a = p.parse_args()
    if a.cmd == "keep":
        keep(a.session, a.n, a.seed)
    elif a.cmd == "survivors":
        survivors(a.session, a.earlier)
    else:
        summary(a.session, a.diff)


if __name__ == "__main__":
    main()

"""The ``xenspec`` command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xenspec import __version__
from xenspec.refmodel.vtime import DEFAULT_WALLCLOCK_S

if TYPE_CHECKING:
    from xenspec.refmodel.boot import Machine
    from xenspec.refmodel.domain import Domain
    from xenspec.spec.abi_profiles import AbiProfile


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xenspec")
def main() -> None:
    """xenspec: the Xen paravirtual x86-32 interface (Xen 3.0 x86_32, non-PAE) as an
    executable, machine-checked specification and a reference hypervisor."""


@main.command()
@click.argument("guests", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--scenario", type=click.Choice(["demo", "mmu", "two-domains"]), default=None,
              help="Run a built-in scenario instead of guest kernels [default: demo].")
@click.option("--trace", is_flag=True, help="Print every hypercall with its arguments and result.")
@click.option("--check-invariants", is_flag=True,
              help="Check every invariant after each step (a guest: each hypercall).")
@click.option("--memory", "memory_mb", default=256, show_default=True,
              type=click.IntRange(16, 4096), help="Machine memory in MB.")
@click.option("--domain-memory", "domain_mb", default=None, type=click.IntRange(1, 1024),
              help="Memory of each domain in MB [guest: 16, mmu scenario: 64].")
@click.option("--cmdline", "cmdlines", multiple=True,
              help="A guest's command line (start_info.cmd_line); repeat it for several "
                   "guests: the n-th goes to the n-th GUEST.")
@click.option("--timeout", "timeout_s", default=0.0, type=click.FloatRange(0),
              help="Stop guests that have not shut down after this many seconds (0: never).")
@click.option("--disk", default=None, metavar="IMAGE",
              help="Give the first GUEST that is not domain 0 a virtual block device (blkif, "
                   "vbd 768) backed by this image file.")
@click.option("--wallclock", "wallclock_s", default=None, type=click.IntRange(0, 2**32 - 1),
              metavar="SECONDS",
              help="The wall-clock time at the machine's boot, in seconds since the Unix "
                   f"epoch (shared_info's wc_sec) [default: {DEFAULT_WALLCLOCK_S}, fixed so "
                   "that runs are reproducible].")
@click.option("--dom0", is_flag=True,
              help="Boot the first GUEST as domain 0, privileged (SIF_PRIVILEGED, "
                   "SIF_INITDOMAIN) and without store or console ring, as Xen boots its first "
                   "kernel; the back ends then act as a domain of a reserved id.")
@click.option("--xen-build", "xen_build", type=click.Choice(["debug", "release"]),
              default="debug", show_default=True,
              help="The Xen build to behave as: debug (verbose=y) lets every domain write to "
                   "Xen's console (console_io); release refuses it (-EPERM) to every domain "
                   "but domain 0, so a domain U is heard only through its console ring.")
@click.option("--devices", is_flag=True,
              help="No effect, kept for old command lines: every GUEST but a --dom0 one has "
                   "its store and console rings.")
@click.option("--abi", "abi_name", type=click.Choice(["native-3.0.4", "compat-pae"]),
              default="native-3.0.4", show_default=True,
              help="The ABI profile of the machine (spec/abi_profiles.py): native-3.0.4 is "
                   "Xen 3.0.4 x86_32 without PAE (guest type xen-3.0-x86_32); compat-pae is "
                   "a 32-bit PAE guest on 64-bit Xen 4.19 (xen-3.0-x86_32p, refmodel/mm_pae.py). "
                   "A GUEST whose PAE mode "
                   "(PAE_MODE note or __xen_guest PAE=) does not fit the profile is refused "
                   "(exit 2).")
def run(guests: tuple[str, ...], scenario: str | None, trace: bool, check_invariants: bool,
        memory_mb: int, domain_mb: int | None, cmdlines: tuple[str, ...],
        timeout_s: float, disk: str | None, wallclock_s: int | None, dom0: bool,
        xen_build: str, devices: bool, abi_name: str) -> None:
    """Boot each GUEST (a Xen 3.0 x86_32 kernel ELF: non-PAE, or PAE with --abi compat-pae) as
    a domain of one machine, as
    Xen's tools (xend, xc_linux_build) create one: an unprivileged domain (domains 1, 2, ...
    in order) with its store and console rings and their event channels, served by the
    model's back ends acting as domain 0 (with --dom0 the first GUEST is domain 0 instead).
    The CPU is shared between them (borrowed virtual time). The exit status is their shutdown
    reasons: poweroff 0, crash 1, reboot 2, suspend 3, no shutdown 4. With several guests
    the status is 0 if every one powered off, else that of the first guest (in domain id
    order) that did not. 5 if --check-invariants found a violation; 2 for an image that
    cannot be built.

    Each domain has two consoles, both printed on standard output a line at a time: Xen's
    console (what the domain writes with console_io, which Xen prints on its serial line),
    each line starting with "(dN) ", and the domain's own console (its console ring, what
    `xm console` shows), printed as it is, or with each line starting with "[dN] " when
    there are several guests. A kernel that writes to both, as Mini-OS does, shows each line
    once on each. Carriage returns are dropped. The hypervisor's own messages go to standard
    error, starting with "(XEN) ".

    With no GUEST, boot the demo guest (``--scenario demo``, built from
    conformance/guests/demo.c with the machine's gcc): a ring-1 kernel runs a ring-3 process
    through int 0x80 system calls and gives it memory on demand from its page-fault handler
    through mmu_update. On --abi compat-pae the built-in guest is conformance/guests/hello.c
    built for that profile (the demo's page tables are 2-level).

    ``--scenario two-domains`` boots two guests that compute in rounds and prints their
    interleaved consoles and the scheduler's account: each is preempted at the end of its
    slice and the other runs.

    ``--scenario mmu`` runs the built-in MMU scenario instead: two paravirtual domains build
    page tables through mmu_update, mmuext_op and update_va_mapping, then try what Xen must
    refuse; each step is compared with Xen 3.0.4's result and the exit status is non-zero if
    any step differs or an invariant breaks.
    """
    if guests and scenario is not None:
        raise click.UsageError("give GUESTs or a --scenario, not both")
    if len(cmdlines) > max(len(guests), 1):
        raise click.UsageError(f"{len(cmdlines)} --cmdline for {len(guests)} guest(s)")
    if disk is not None and scenario is not None:
        raise click.UsageError("--disk needs GUESTs, not a --scenario")
    del devices  # every domain U has its rings now
    if disk is not None and dom0 and len(guests) < 2:
        raise click.UsageError("--disk needs a GUEST that is not domain 0 (--dom0)")
    from xenspec.spec.abi_profiles import PROFILES

    profile = PROFILES[abi_name]
    if scenario == "mmu" and profile.paging_levels != 2:
        click.echo(f"xenspec: the mmu scenario builds 2-level page tables: it runs on the "
                   f"native-3.0.4 profile, not {profile.name}", err=True)
        sys.exit(2)
    if scenario == "mmu":
        _run_mmu_scenario(trace, check_invariants, memory_mb, domain_mb or 64)
        return
    stats = False
    pae = profile.paging_levels == 3
    if scenario == "two-domains":
        guests = (_built_guest("spin", pae),) * 2
        cmdlines = ("work 12", "work 12")
        stats = True
    elif not guests:
        guests = (_built_guest("hello" if pae else "demo", pae),)
    sys.exit(_run_guests(list(guests), list(cmdlines), trace, memory_mb, domain_mb or 16,
                         timeout_s, check_invariants, stats, disk, wallclock_s, dom0,
                         xen_build == "release", profile))


def _built_guest(name: str, pae: bool = False) -> str:
    from xenspec.conformance.guests.build import (
        GuestBuildError,
        build_guest,
        toolchain_available,
    )

    if not toolchain_available():
        raise click.ClickException(f"the {name} guest needs gcc and ld to build")
    try:
        return str(build_guest(name, pae))
    except GuestBuildError as exc:
        raise click.ClickException(f"building the {name} guest failed: {exc}") from exc


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _run_guests(paths: list[str], cmdlines: list[str], trace: bool, memory_mb: int,
                domain_mb: int, timeout_s: float, check_invariants: bool, stats: bool,
                disk: str | None = None, wallclock_s: int | None = None,
                dom0: bool = False, release: bool = False,
                profile: AbiProfile | None = None) -> int:
    from xenspec.refmodel.blkback import ImageError
    from xenspec.refmodel.boot import Machine
    from xenspec.refmodel.builder import BuildError
    from xenspec.refmodel.elfbuild import load_image_file
    from xenspec.refmodel.hypervisor import HypercallRecord, HypervisorBug
    from xenspec.spec.abi_profiles import DEFAULT_PROFILE

    if domain_mb * len(paths) + 4 >= memory_mb:
        raise click.UsageError(f"{len(paths)} domain(s) of {domain_mb} MB do not fit a "
                               f"{memory_mb} MB machine")

    def on_trace(record: HypercallRecord) -> None:
        click.echo(f"(XEN) {record}", err=True)

    from xenspec.refmodel.console import ConsoleLines

    consoles = ConsoleLines(_stdout_write, several=len(paths) > 1)
    try:
        # Each image is read for the machine's ABI profile before any domain exists: one
        # that does not fit it is refused (refmodel/elfbuild.py).
        images = [load_image_file(p, domain_mb << 20, profile or DEFAULT_PROFILE)
                  for p in paths]
        # The back ends are domain 0 unless a guest is (then they take a reserved id).
        m = Machine(memory_mb, trace=trace, console=consoles.xen, ring_console=consoles.ring,
                    on_trace=on_trace if trace else None, check_invariants=check_invariants,
                    wallclock_s=wallclock_s, backend_domid=None if dom0 else 0,
                    verbose_console=not release, profile=profile or DEFAULT_PROFILE)
        domains = [m.add_guest(img, domain_mb, cmdlines[i] if i < len(cmdlines) else "",
                               privileged=dom0 and i == 0, devices=not (dom0 and i == 0))
                   for i, img in enumerate(images)]
        if disk is not None:
            m.attach_disk(domains[1 if dom0 else 0].domain_id, disk)
        m.run(timeout_s=timeout_s)
    except ImageError as exc:
        click.echo(f"xenspec: {exc}", err=True)
        return 2
    except BuildError as exc:
        click.echo(f"xenspec: cannot build the domain: {exc}", err=True)
        return 2
    except HypervisorBug as exc:
        click.echo(f"xenspec: BUG in the reference hypervisor: {exc}", err=True)
        return 70
    consoles.flush()
    for dev in m.disks:
        for line in dev.messages:
            click.echo(f"(XEN) {line}", err=True)
    statuses = [_report_domain(m, d) for d in domains]
    if stats:
        _report_schedule(m)
    for v in m.violations:
        click.echo(f"(XEN) INVARIANT VIOLATED {v}", err=True)
    if check_invariants and not m.violations:
        until = " until the timeout, and at the end" if m.stop == "timeout" else ""
        click.echo(f"(XEN) every invariant held after every hypercall{until}", err=True)
    if m.violations:
        return 5
    return next((s for s in statuses if s != 0), 0)


def _report_domain(m: Machine, d: Domain) -> int:
    result = m.result(d)
    if result.reason is None:
        how = {"timeout": "timed out", "idle": "is blocked with nothing to wake it"}.get(
            result.stop, "stopped without shutting down")
        click.echo(f"(XEN) domain {d.domain_id} {how}", err=True)
    else:
        why = f": {result.crash_reason}" if result.crash_reason else ""
        click.echo(f"(XEN) domain {d.domain_id} shut down: {result.reason.name}{why}", err=True)
    return result.exit_status


def _report_schedule(m: Machine) -> None:
    clock, sched = m.pv.clock, m.pv.sched
    click.echo(f"(XEN) scheduler: {sched.stats.context_switches} context switches in "
               f"{clock.now_ns() / 1e6:.1f} ms of system time")
    for domid in sorted(m.cpus):
        click.echo(f"(XEN)   domain {domid} ran {clock.domain_run_ns(domid) / 1e6:.1f} ms")


def _run_mmu_scenario(trace: bool, check_invariants: bool, memory_mb: int,
                      domain_mb: int) -> None:
    from xenspec.refmodel.hypervisor import OutOfMemory
    from xenspec.refmodel.scenario import MMUTour

    if domain_mb + 4 >= memory_mb:
        raise click.UsageError(f"a {domain_mb} MB domain does not fit a {memory_mb} MB machine")
    try:
        tour = MMUTour(memory_mb, domain_mb, click.echo, check_each_step=check_invariants)
    except OutOfMemory as exc:
        raise click.ClickException(str(exc)) from exc
    if trace:
        tour.hv.trace = []
    ok = tour.run()
    if trace and tour.hv.trace is not None:
        click.echo("hypercall trace:")
        for record in tour.hv.trace:
            click.echo(f"  {record}")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--no-cache", is_flag=True, help="Prove everything afresh, ignoring cached results.")
@click.option("-k", "keyword", default=None, help="Only obligations whose name contains this.")
@click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True,
              type=click.IntRange(1, 64), help="Obligations solved in parallel.")
def prove(no_cache: bool, keyword: str | None, jobs: int) -> None:
    """Prove that every hypercall preserves every invariant.

    Each obligation (hypercall spec x invariant) is discharged by Z3 for all states and
    arguments. Results are cached by the obligation's content (.xenspec-cache/); a failing
    obligation prints a counterexample found in a small machine. Exit status 1 on any failure.
    """
    from xenspec.proofs.obligations import obligation_names
    from xenspec.proofs.runner import Result, prove_all

    names = obligation_names()
    selected = [i for i, name in enumerate(names) if keyword is None or keyword in name]
    if not selected:
        raise click.UsageError(f"no obligation matches {keyword!r}")
    click.echo(f"proving {len(selected)} obligations with {jobs} job(s)"
               + (" (cache off)" if no_cache else ""))
    done = [0]

    def progress(r: Result) -> None:
        done[0] += 1
        tag = "cached" if r.cached else f"{r.seconds:6.2f}s"
        click.echo(f"  [{done[0]:>3}/{len(selected)}] {r.status:<7} {tag:>8}  {r.name}")

    start = time.perf_counter()
    results = prove_all(selected, use_cache=not no_cache, jobs=jobs, on_result=progress)
    wall = time.perf_counter() - start
    click.echo("")
    width = max(len(r.name) for r in results)
    click.echo(f"{'obligation':<{width}}  {'result':<7}  seconds")
    for r in results:
        secs = f"{r.seconds:7.2f}" + (" (cached)" if r.cached else "")
        click.echo(f"{r.name:<{width}}  {r.status:<7}  {secs}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        click.echo(f"\n{r.name}: {r.status}")
        for line in r.counterexample:
            click.echo(f"  {line}")
    slowest = max(results, key=lambda r: r.seconds)
    click.echo(f"\n{len(results) - len(failed)}/{len(results)} proved in {wall:.1f} s wall; "
               f"slowest: {slowest.name} ({slowest.seconds:.2f} s)")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("-o", "--output", default="docs/_build/html", show_default=True,
              type=click.Path(file_okay=False), help="Where to write the HTML site.")
@click.option("--refresh", is_flag=True,
              help="Run `xenspec prove` and `pytest conformance` first, so that the "
                   "traceability matrix shows fresh proof and test status.")
def docs(output: str, refresh: bool) -> None:
    """Build the documentation: the user guide, and the specification's reference generated
    from its source (a page per hypercall, behaviour and invariant, the ABI tables, the
    address space, the traceability matrix). Sphinx warnings are errors.

    The matrix reads the last proof and conformance runs from .xenspec-cache/ (or
    XENSPEC_CACHE_DIR); without --refresh it only reads them, and says "not run yet" for a
    run that never happened.
    """
    from xenspec import docbuild

    source = docbuild.source_dir()
    if source is None:
        raise click.ClickException("no docs/ folder next to the xenspec package: build the "
                                   "documentation from a source checkout")
    env_cache = docbuild.cache_dir(source)
    if refresh:
        docbuild.refresh(source.parent, env_cache, click.echo)
    click.echo(f"generating the reference pages from the specification ({source}/generated)")
    start = time.perf_counter()
    try:
        pages = docbuild.generate_pages(source, env_cache)
    except Exception as exc:  # a broken spec page must not end in a traceback
        raise click.ClickException(f"generating the pages failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
    click.echo(f"  {pages} generated files up to date")
    click.echo(f"running sphinx-build -W -b html into {output}")
    failure = docbuild.sphinx(source, Path(output), env_cache, click.echo)
    if failure:
        raise click.ClickException(f"the documentation build failed: {failure}")
    click.echo(f"built {Path(output) / 'index.html'} in {time.perf_counter() - start:.1f} s")

@main.command("kill-rate")
@click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True,
              type=click.IntRange(1, 64), help="Suites run in parallel.")
@click.option("--focused", is_flag=True,
              help="Run the tests of the broken clauses first; the whole suite only if they "
                   "do not catch it.")
@click.argument("names", nargs=-1)
def kill_rate(jobs: int, focused: bool, names: tuple[str, ...]) -> None:
    """Run the conformance suite against each deliberately broken implementation.

    Each of xenspec.conformance.broken is the reference model with one rule removed or
    altered. It is KILLED when the suite fails and a failure names the broken clause. NAMES
    limits the run to those implementations. Exit status 1 unless every one is killed.
    """
    from xenspec.conformance import killrate

    sys.exit(killrate.main(["--jobs", str(jobs), *(["--focused"] if focused else []), *names]))


if __name__ == "__main__":
    main()

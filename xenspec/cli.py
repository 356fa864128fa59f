"""The ``xenspec`` command."""

from __future__ import annotations

import sys

import click

from xenspec import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xenspec")
def main() -> None:
    """xenspec: the Xen paravirtual x86-32 interface (Xen 3.0 x86_32, non-PAE) as an
    executable, machine-checked specification and a reference hypervisor."""


@main.command()
@click.option("--trace", is_flag=True, help="Print every hypercall with its arguments and result.")
@click.option("--check-invariants", is_flag=True,
              help="Check every invariant after each step, not only at the end.")
@click.option("--memory", "memory_mb", default=256, show_default=True,
              type=click.IntRange(16, 4096), help="Machine memory in MB.")
@click.option("--domain-memory", "domain_mb", default=64, show_default=True,
              type=click.IntRange(1, 1024), help="Memory of the first domain in MB.")
def run(trace: bool, check_invariants: bool, memory_mb: int, domain_mb: int) -> None:
    """Run the built-in scenario on the reference hypervisor.

    Two paravirtual domains build page tables through mmu_update, mmuext_op and
    update_va_mapping, then try what Xen must refuse (mapping the hypervisor hole, writable
    page tables, foreign frames). Each step is compared with Xen 3.0.4's result; the exit
    status is non-zero if any step differs or an invariant breaks. Booting guest ELF kernels
    is not implemented yet.
    """
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


if __name__ == "__main__":
    main()

"""``xenspec run`` with several guests (domains 1, 2, ...): consoles prefixed by domain id
(console_io's "(dN) ", the console rings' "[dN] "), per-guest command
lines, an exit status that reflects every domain, the two-domain scenario."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from xenspec.cli import main
from xenspec.conformance.guests.build import build_guest, toolchain_available

pytestmark = pytest.mark.skipif(not toolchain_available(), reason="needs gcc and ld")


def test_two_guests_with_their_own_command_lines() -> None:
    spin = str(build_guest("spin"))
    r = CliRunner().invoke(main, ["run", spin, spin, "--cmdline", "yield", "--cmdline",
                                  "work 2", "--domain-memory", "4", "--memory", "32"])
    assert r.exit_code == 0, r.output
    assert "(d1) yield 4" in r.output and "(d2) round 1" in r.output  # console_io's lines
    assert "domain 2 shut down: poweroff" in r.output


def test_exit_status_is_the_first_domain_that_did_not_power_off() -> None:
    r = CliRunner().invoke(main, ["run", str(build_guest("hello")), str(build_guest("crash")),
                                  str(build_guest("shutdown_reasons")), "--cmdline", "",
                                  "--cmdline", "guest-crash", "--cmdline", "1",
                                  "--domain-memory", "4", "--memory", "32"])
    assert r.exit_code == 1, r.output
    assert "domain 3 shut down: reboot" in r.output


def test_too_many_command_lines() -> None:
    r = CliRunner().invoke(main, ["run", str(build_guest("hello")), "--cmdline", "a",
                                  "--cmdline", "b"])
    assert r.exit_code == 2 and "2 --cmdline for 1 guest" in r.output


def test_two_domains_scenario() -> None:
    r = CliRunner().invoke(main, ["run", "--scenario", "two-domains"])
    assert r.exit_code == 0, r.output
    assert "(d1) Test result: SUCCESS" in r.output and "(d2) Test result: SUCCESS" in r.output
    assert "context switches" in r.output

"""``xenspec-xl`` (conformance/xl.py), the wrapper that runs a guest kernel on a real Xen with
``xl create -c``, checked without a Xen: its configuration and its reading of a console, and
the conformance suite run through it against the reference model, with a stand-in ``xl``
written here that boots the kernel with ``xenspec run --abi compat-pae`` and prints only what
``xl create -c`` would show (the console ring; never the "(d1) " console_io lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenspec.conformance import xl
from xenspec.conformance.guests.build import build_guest, toolchain_available

ROOT = Path(__file__).resolve().parent.parent
needs_gcc = pytest.mark.skipif(not toolchain_available(), reason="needs gcc -m32 and ld")

# The stand-in xl. FAKE_XL_MODE: "ring" (what xl create -c shows), "silent" (no console at
# all), "reboot" (the shutdown line lies), "report" (also xl's own shutdown report on stderr,
# as xl -F prints it), "hang" (the console never ends). Every call is logged to FAKE_XL_LOG.
FAKE_XL = r'''#!{python}
import json, os, re, subprocess, sys, time

def log(entry):
    with open(os.environ["FAKE_XL_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")

args = sys.argv[1:]
if args[:1] == ["destroy"]:
    log({{"destroy": args[1]}})
    sys.exit(0)
assert args[0] == "create" and "-c" in args, args
config = open(args[-1]).read()
keys = {{k: a or b or c for k, a, b, c in
        re.findall(r'^(\w+) = (?:"([^"]*)"|\'([^\']*)\'|(\S+))$', config, re.M)}}
log({{"create": args, "config": keys}})
mode = os.environ.get("FAKE_XL_MODE", "ring")
if mode == "hang":
    print("booting", flush=True)
    time.sleep(600)
run = subprocess.run([sys.executable, "-m", "xenspec.cli", "run", "--abi", "compat-pae",
                      keys["kernel"], "--cmdline", keys.get("extra", ""),
                      "--domain-memory", keys["memory"]], capture_output=True, text=True)
for line in run.stdout.splitlines():
    if line.startswith("(d1) ") or mode == "silent":
        continue
    if mode == "reboot":
        line = line.replace("shutdown poweroff", "shutdown reboot")
    print(line, flush=True)
if mode == "report" and run.returncode in (0, 1, 2, 3):
    code = {{0: 0, 1: 3, 2: 1, 3: 2}}[run.returncode]
    print(f"Domain 7 has shut down, reason code {{code}} 0x{{code:x}}", file=sys.stderr)
'''


def fake_xl(tmp_path: Path) -> Path:
    path = tmp_path / "xl"
    path.write_text(FAKE_XL.format(python=sys.executable))
    path.chmod(0o755)
    return path


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "xl.log"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def wrapper(tmp_path: Path, *args: str, mode: str = "ring",
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKE_XL_MODE": mode, "FAKE_XL_LOG": str(tmp_path / "xl.log")}
    return subprocess.run([sys.executable, "-m", "xenspec.conformance.xl", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


# --- the configuration and the console's reading ------------------------------------------
def test_config_has_xl_cfg_keys_and_no_devices() -> None:
    dom = xl.Domain("xenspec-1-ab", Path("/k/hello.elf"), "e02b:e033", 32)
    text = xl.config_text(dom)
    lines = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    assert lines == {
        "name": '"xenspec-1-ab"', "type": '"pv"', "kernel": '"/k/hello.elf"',
        "extra": '"e02b:e033"', "memory": "32", "vcpus": "1", "on_poweroff": '"destroy"',
        "on_reboot": '"destroy"', "on_crash": '"destroy"', "disk": "[]", "vif": "[]"}
    assert "extra" not in xl.config_text(xl.Domain("n", Path("/k"), ""))


def test_config_quotes_and_refuses_what_xl_cfg_cannot_hold() -> None:
    assert xl.quote('say "hi"') == "'say \"hi\"'"
    assert xl.quote("it's") == '"it\'s"'
    for bad in ("both \" and '", "two\nlines"):
        with pytest.raises(xl.WrapperError) as exc:
            xl.quote(bad)
        assert exc.value.status == xl.EX_USAGE


def test_names_are_unique_per_run() -> None:
    assert len({xl.unique_name() for _ in range(50)}) == 50


@pytest.mark.parametrize(("console", "xl_output", "reason", "status"), [
    ("Test result: SUCCESS\nxenspec: shutdown poweroff\n", "", "poweroff", 0),
    ("xenspec: shutdown crash\n", "", "crash", 1),
    ("x\nxenspec: shutdown reboot\r\n", "", "reboot", 2),
    ("(d1) xenspec: shutdown suspend\n", "", "suspend", 3),
    ("xenspec: shutdown poweroff\nFAILURE: still running\nxenspec: shutdown crash\n", "",
     "crash", 1),  # the last line counts
    ("xenspec: shutdown reason 77\n", "", "reason 77", 4),
    ("Test result: SUCCESS\n", "", None, 4),  # no line: not known
    ("", "Domain 3 has shut down, reason code 3 0x3\n", "crash", 1),  # a domain Xen crashed
    ("xenspec: shutdown poweroff\n", "Domain 3 has shut down, reason code 1 0x1", "reboot", 2),
    ("said xenspec: shutdown poweroff twice", "", None, 4),  # not the end of its line
])
def test_shutdown_reason_from_the_console_or_xl(console: str, xl_output: str,
                                                reason: str | None, status: int) -> None:
    assert xl.shutdown_reason(console, xl_output) == reason
    assert xl.exit_status(reason) == status


# --- the command's errors ----------------------------------------------------------------------
def test_missing_image_is_one_line(tmp_path: Path) -> None:
    r = wrapper(tmp_path, "--xl", str(fake_xl(tmp_path)), str(tmp_path / "none.elf"))
    assert r.returncode == xl.EX_NOINPUT
    assert r.stderr.strip().splitlines() == [f"xenspec-xl: no such kernel image: "
                                             f"{tmp_path / 'none.elf'}"]
    assert calls(tmp_path) == []


def test_missing_xl_is_one_line(tmp_path: Path) -> None:
    elf = tmp_path / "k.elf"
    elf.write_bytes(b"\x7fELF")
    r = wrapper(tmp_path, "--xl", str(tmp_path / "no-xl"), str(elf))
    assert r.returncode == xl.EX_UNAVAILABLE
    assert len(r.stderr.strip().splitlines()) == 1 and "no xl program" in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors_are_not_a_shutdown_status(tmp_path: Path) -> None:
    r = wrapper(tmp_path, "--memory", "lots", "k.elf")
    assert r.returncode == xl.EX_USAGE and "Traceback" not in r.stderr
    r = wrapper(tmp_path)
    assert r.returncode == xl.EX_USAGE
    help_ = wrapper(tmp_path, "--help")
    assert help_.returncode == 0
    words = " ".join(help_.stdout.split())
    assert "`xl create -c`" in words and "as the exit status" in words


# --- through the stand-in xl -------------------------------------------------------------------
@needs_gcc
def test_a_run_copies_the_ring_and_exits_with_the_reason(tmp_path: Path) -> None:
    xl_path = fake_xl(tmp_path)
    elf = build_guest("iret_selectors", pae=True)
    r = wrapper(tmp_path, "--xl", str(xl_path), "--keep-config", str(tmp_path / "cfg"),
                "--memory", "8", str(elf), "e02b:e033")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "outcome: ran cs=e02b" in r.stdout.splitlines()
    assert "(d1)" not in r.stdout  # what xl create -c shows: the ring only
    assert r.stdout.splitlines()[-1] == "xenspec: shutdown poweroff"
    create, destroyed = calls(tmp_path)
    name = create["config"]["name"]
    assert create["config"]["extra"] == "e02b:e033" and create["config"]["memory"] == "8"
    assert create["config"]["kernel"] == str(elf.resolve())
    assert create["create"][:2] == ["create", "-c"] and Path(create["create"][-1]).is_absolute()
    assert destroyed == {"destroy": name}
    assert (tmp_path / "cfg" / f"{name}.cfg").exists()


@needs_gcc
@pytest.mark.parametrize(("cmdline", "mode", "status"), [
    ("1", "ring", 2), ("2", "ring", 3), ("3", "ring", 1), ("0", "silent", 4),
    ("0", "reboot", 2), ("0", "report", 0), ("3", "report", 1)])
def test_exit_status_follows_what_the_console_or_xl_says(tmp_path: Path, cmdline: str,
                                                          mode: str, status: int) -> None:
    r = wrapper(tmp_path, "--xl", str(fake_xl(tmp_path)),
                str(build_guest("shutdown_reasons", pae=True)), cmdline, mode=mode)
    assert r.returncode == status, r.stdout + r.stderr


@needs_gcc
def test_a_domain_xen_crashes_is_a_crash_only_with_xls_report(tmp_path: Path) -> None:
    elf = str(build_guest("crash", pae=True))
    xl_path = str(fake_xl(tmp_path))
    assert wrapper(tmp_path, "--xl", xl_path, elf, "unhandled").returncode == 4
    assert wrapper(tmp_path, "--xl", xl_path, "--foreground", elf, "unhandled",
                   mode="report").returncode == 1
    assert calls(tmp_path)[-2]["create"][:3] == ["create", "-F", "-c"]


@needs_gcc
def test_timeout_destroys_the_domain(tmp_path: Path) -> None:
    r = wrapper(tmp_path, "--xl", str(fake_xl(tmp_path)), "--timeout", "2",
                str(build_guest("hello", pae=True)), mode="hang", timeout=60)
    assert r.returncode == 4
    assert "timed out after 2 s" in r.stderr
    create, destroyed = calls(tmp_path)
    assert destroyed == {"destroy": create["config"]["name"]}


@needs_gcc
def test_a_signal_destroys_the_domain(tmp_path: Path) -> None:
    env = {**os.environ, "FAKE_XL_MODE": "hang", "FAKE_XL_LOG": str(tmp_path / "xl.log")}
    proc = subprocess.Popen([sys.executable, "-m", "xenspec.conformance.xl", "--xl",
                             str(fake_xl(tmp_path)), str(build_guest("hello", pae=True))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"booting\n"  # the domain is up
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and b"stopped by SIGTERM" in err
    create, destroyed = calls(tmp_path)
    assert destroyed == {"destroy": create["config"]["name"]}


# --- the conformance suite through the wrapper ---------------------------------------------------
def suite(tmp_path: Path, mode: str, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                          dict[str, Any]]:
    report = tmp_path / "report.json"
    impl = (f"{sys.executable} -m xenspec.conformance.xl --xl {fake_xl(tmp_path)} "
            "{elf} {cmdline}")
    env = {**os.environ, "FAKE_XL_MODE": mode, "FAKE_XL_LOG": str(tmp_path / "xl.log"),
           "XENSPEC_PROFILE": "quick"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-n0", "-p", "no:cacheprovider",
         f"--conformance-report={report}", f"--implementation={impl}", "--abi", "compat-pae",
         *args], cwd=ROOT, capture_output=True, text=True, env=env)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {t["nodeid"].split("::")[-1]: t["outcome"] for t in doc["tests"]}


SELECTED = "guest_kernel and (hello or traps or consring or demo) or shutdown_reason"


@needs_gcc
def test_the_suite_judges_the_model_through_the_wrapper(tmp_path: Path) -> None:
    proc, doc = suite(tmp_path, "ring", "-k", SELECTED)
    assert proc.returncode == 0, proc.stdout[-3000:]
    got = outcomes(doc)
    assert doc["abi"] == "compat-pae"
    for test in ("test_guest_kernel[hello]", "test_guest_kernel[traps]",
                 "test_guest_kernel[consring]", "test_shutdown_reason[1-reboot]",
                 "test_shutdown_reason[3c-crash]"):
        assert got[test] == "passed", (test, got)
    assert got["test_guest_kernel[demo]"] == "skipped"  # native-only
    assert len(got) == 10  # 4 kernels and 6 shutdown reasons
    assert sum("destroy" in c for c in calls(tmp_path)) == 9  # every domain it created


@needs_gcc
@pytest.mark.parametrize("mode", ["silent", "reboot"])
def test_the_suite_fails_a_console_that_lies_or_says_nothing(tmp_path: Path,
                                                             mode: str) -> None:
    proc, doc = suite(tmp_path, mode, "-k", "guest_kernel and hello or shutdown_reason and 0")
    assert proc.returncode == 1, proc.stdout[-3000:]
    got = outcomes(doc)
    assert got["test_guest_kernel[hello]"] == "failed"
    assert got["test_shutdown_reason[0-poweroff]"] == "failed"
    if mode == "reboot":  # the kernel said SUCCESS, its shutdown line said reboot
        assert "SUCCESS but shutdown reboot" in proc.stdout

"""Privilege drop (--user): workers switch user, lose every capability, set no_new_privs, lower RLIMIT_NPROC."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import curl_status, start_server, wait_until

NOBODY = pwd.getpwnam("nobody")
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs the tests run as root")


def process_status(pid):
    """/proc/<pid>/status as {field: value}."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def nproc_limit(pid):
    match = re.search(r"^Max processes\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/limits").read_text(), re.M)
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def public_dir():
    """A directory (and path to it) that the user nobody can read, unlike pytest's 0700 temporary tree."""
    directory = Path(tempfile.mkdtemp(prefix="zs-privileges-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def tars(make_site):
    return {version: make_site({"v.txt": version}) for version in ("one", "two")}


@pytest.fixture(scope="module")
def server(request, public_dir, tars):
    live = public_dir / "site.tar"
    shutil.copyfile(tars["one"], live)
    live.chmod(0o644)
    return start_server(request, live, "--user", "nobody", workers=2)


def test_privileges_workers_run_as_user_without_capabilities(server):
    """Every worker runs as nobody with no groups, no capabilities, no_new_privs and a lowered RLIMIT_NPROC."""
    server.wait_for(r"isolation: workers run as user 'nobody' .*RLIMIT_NPROC 128")
    pids = server.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        status = process_status(pid)
        assert status["Uid"].split() == [str(NOBODY.pw_uid)] * 4
        assert status["Gid"].split() == [str(NOBODY.pw_gid)] * 4
        assert status["Groups"].strip() == ""
        assert {name: int(status[name], 16) for name in CAPABILITY_FIELDS} == dict.fromkeys(CAPABILITY_FIELDS, 0)
        assert status["NoNewPrivs"].strip() == "1"
        assert nproc_limit(pid) == (128, 128)
    supervisor = process_status(server.proc.pid)
    assert supervisor["Uid"].split()[0] == "0"  # the supervisor keeps root to rebuild Worlds and restart workers
    assert curl_status(server.url("/v.txt"))[1:] == (200, b"one")


def test_privileges_restarted_worker_drops_again(server):
    """A worker killed with SIGKILL is restarted by the supervisor and runs as nobody again."""
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    for pid in server.worker_pids():
        wait_until(lambda: process_status(pid)["Uid"].split()[0] == str(NOBODY.pw_uid))
        assert int(process_status(pid)["CapEff"], 16) == 0


def test_privileges_reload_reads_tar_readable_by_user(server, public_dir, tars):
    """After the drop, SIGHUP still swaps the site when the new tar is readable by the dropped user."""
    live = public_dir / "site.tar"
    staged = public_dir / "staged.tar"
    shutil.copyfile(tars["two"], staged)
    staged.chmod(0o644)
    os.replace(staged, live)
    start = len(server.lines)
    server.signal(signal.SIGHUP)
    wait_until(lambda: all(curl_status(server.url("/v.txt"))[2] == b"two" for _ in range(4)))
    assert not any("reload failed" in line for line in server.lines[start:])


def test_privileges_root_without_user_says_so(request, tars):
    """Started as root without --user, the workers keep root and the start-up line says no isolation."""
    plain = start_server(request, tars["one"])
    plain.wait_for(r"isolation: none, workers run as root; give --user NAME")
    assert process_status(plain.worker_pids()[0])["Uid"].split()[0] == "0"


def test_privileges_unknown_user_is_refused(tars):
    """--user naming no account stops start-up with one message naming the flag."""
    result = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                             "--tls-addr", "off", "--user", "no-such-user-zs", str(tars["one"])],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--user 'no-such-user-zs': no such user on this system" in result.stderr


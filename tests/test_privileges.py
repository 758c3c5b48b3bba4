"""Worker isolation: user switch, user+mount namespaces, capabilities, no_new_privs, RLIMIT_NPROC, start-up line."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from harness import ServerProcess, curl_status, start_server, wait_until

NOBODY = pwd.getpwnam("nobody")
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
NO_CAPABILITIES = dict.fromkeys(CAPABILITY_FIELDS, 0)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs the tests run as root")

# Runs the command after its first argument under a seccomp filter that fails unshare(2) with EPERM
# when the flags share a bit with the first argument, as a container's profile or a sysctl would:
# the kernel, not zeroserve, refuses the namespaces.
REFUSE_UNSHARE = r"""
import ctypes, os, sys
class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]
LOAD, JUMP_IF_EQUAL, JUMP_IF_ANY_BIT, RETURN = 0x20, 0x15, 0x45, 0x06
SYSCALL_NR, FIRST_ARGUMENT, SYS_UNSHARE, ERRNO_EPERM, ALLOW = 0, 16, 272, 0x00050001, 0x7FFF0000
rules = (Filter * 6)(Filter(LOAD, 0, 0, SYSCALL_NR), Filter(JUMP_IF_EQUAL, 0, 3, SYS_UNSHARE),
                     Filter(LOAD, 0, 0, FIRST_ARGUMENT), Filter(JUMP_IF_ANY_BIT, 0, 1, int(sys.argv[1], 0)),
                     Filter(RETURN, 0, 0, ERRNO_EPERM), Filter(RETURN, 0, 0, ALLOW))
program = Program(6, rules)
if ctypes.CDLL(None, use_errno=True).prctl(22, 2, ctypes.byref(program), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    raise OSError(ctypes.get_errno(), "seccomp")
os.execv(sys.argv[2], sys.argv[2:])
"""
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000


def process_status(pid):
    """/proc/<pid>/status as {field: value}."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def capabilities(pid):
    status = process_status(pid)
    return {name: int(status[name], 16) for name in CAPABILITY_FIELDS}


def nproc_limit(pid):
    match = re.search(r"^Max processes\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/limits").read_text(), re.M)
    return int(match.group(1)), int(match.group(2))


def namespace(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def assert_dropped_to_nobody(pid):
    status = process_status(pid)
    assert status["Uid"].split() == [str(NOBODY.pw_uid)] * 4
    assert status["Gid"].split() == [str(NOBODY.pw_gid)] * 4
    assert status["Groups"].strip() == ""
    assert capabilities(pid) == NO_CAPABILITIES
    assert status["NoNewPrivs"].strip() == "1"


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
    """Two workers with --user nobody given explicitly and namespaces off: the user switch alone."""
    live = public_dir / "site.tar"
    shutil.copyfile(tars["one"], live)
    live.chmod(0o644)
    return start_server(request, live, "--user", "nobody", "--disable-ns-isolation", workers=2)


@pytest.fixture(scope="module")
def default_server(request, tars):
    """Two workers started as root with no isolation flag: the default."""
    return start_server(request, tars["one"], workers=2)


def test_privileges_default_workers_run_as_nobody_in_own_namespaces(default_server):
    """By default a root start gives each worker nobody's ids, its own user and mount namespaces, no caps."""
    default_server.wait_for(r"^isolation: workers run as user 'nobody' \(uid 65534\) without supplementary "
                            r"groups; own user and mount namespaces .*; all capabilities dropped, "
                            r"no_new_privs set, RLIMIT_NPROC 64 per worker$")
    supervisor = default_server.proc.pid
    pids = default_server.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        assert_dropped_to_nobody(pid)
        assert nproc_limit(pid) == (64, 64)
        for kind in ("user", "mnt"):
            assert namespace(pid, kind) != namespace(supervisor, kind)
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["65534", "65534", "1"]
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["65534", "65534", "1"]
        assert Path(f"/proc/{pid}/setgroups").read_text().strip() == "deny"
    assert namespace(pids[0], "user") != namespace(pids[1], "user")  # one namespace per worker
    assert process_status(supervisor)["Uid"].split()[0] == "0"  # it keeps root to rebuild Worlds
    assert curl_status(default_server.url("/v.txt"))[1:] == (200, b"one")


def test_privileges_default_worker_sees_reduced_etc(default_server):
    """A worker's /etc is a read-only tmpfs holding the resolver files and CA bundle only."""
    pid = default_server.worker_pids()[0]
    mounts = Path(f"/proc/{pid}/mounts").read_text().splitlines()
    etc = [line.split() for line in mounts if line.split()[1] == "/etc"]
    assert etc and etc[-1][2] == "tmpfs"
    assert set(etc[-1][3].split(",")) >= {"ro", "nosuid", "nodev", "noexec"}
    seen = {str(path.relative_to(f"/proc/{pid}/root/etc")) for path in Path(f"/proc/{pid}/root/etc").rglob("*")
            if path.is_file()}
    assert "hosts" in seen and "resolv.conf" in seen
    assert "passwd" not in seen and "shadow" not in seen
    assert Path("/etc/passwd").exists()  # hidden from the worker only
    # Every mount is private: nothing mounted in the worker propagates out, nor in from the host.
    assert [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if "shared:" in line] == []


def test_privileges_workers_run_as_user_without_capabilities(server):
    """With --disable-ns-isolation each worker runs as nobody, in the supervisor's namespaces, NPROC per user."""
    server.wait_for(r"^isolation: workers run as user 'nobody' .*; no namespaces \(--disable-ns-isolation\); "
                    r"all capabilities dropped, no_new_privs set, RLIMIT_NPROC 128")
    pids = server.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        assert_dropped_to_nobody(pid)
        assert nproc_limit(pid) == (128, 128)
        for kind in ("user", "mnt"):
            assert namespace(pid, kind) == namespace(server.proc.pid, kind)
    assert curl_status(server.url("/v.txt"))[1:] == (200, b"one")


def test_privileges_restarted_worker_drops_again(server):
    """A worker killed with SIGKILL is restarted by the supervisor and runs as nobody again."""
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    for pid in server.worker_pids():
        wait_until(lambda: process_status(pid)["Uid"].split()[0] == str(NOBODY.pw_uid))
        assert capabilities(pid) == NO_CAPABILITIES


def test_privileges_reload_reads_tar_readable_by_user(server, public_dir, tars):
    """After the drop, SIGHUP still swaps the site."""
    live = public_dir / "site.tar"
    staged = public_dir / "staged.tar"
    shutil.copyfile(tars["two"], staged)
    staged.chmod(0o644)
    os.replace(staged, live)
    start = len(server.lines)
    server.signal(signal.SIGHUP)
    wait_until(lambda: all(curl_status(server.url("/v.txt"))[2] == b"two" for _ in range(4)))
    assert not any("reload failed" in line for line in server.lines[start:])


@pytest.mark.parametrize("refused, failed_step", [
    (CLONE_NEWNS | CLONE_NEWUSER, "unshare(CLONE_NEWNS)"),
    (CLONE_NEWUSER, "unshare(CLONE_NEWUSER)"),
], ids=["any-namespace", "user-namespace"])
def test_privileges_refused_namespaces_fall_back_to_user(request, tars, refused, failed_step):
    """When seccomp refuses a namespace, the line names the refused step and the workers still drop to nobody."""
    server = ServerProcess(tars["one"], workers=1)
    server.args = [sys.executable, "-c", REFUSE_UNSHARE, hex(refused), *server.args]
    request.addfinalizer(lambda: server.proc is not None and server.stop())
    server.start()
    server.wait_for(r"^isolation: workers run as user 'nobody' .*; no namespaces \(the kernel refused them: "
                    + re.escape(f"{failed_step} failed: Operation not permitted") + r"\); all "
                    r"capabilities dropped, no_new_privs set, RLIMIT_NPROC 64")
    pid = server.worker_pids()[0]
    assert_dropped_to_nobody(pid)
    for kind in ("user", "mnt"):  # all or nothing: a mount namespace alone is not kept
        assert namespace(pid, kind) == namespace(server.proc.pid, kind)
    assert curl_status(server.url("/v.txt"))[1:] == (200, b"one")


# The test interpreter lives in root's home, which nobody cannot enter; the system's CPython of the same
# version runs the server as nobody, importing zeroserve and its dependencies from this environment.
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
RUN_FROM_ENVIRONMENT = (f"import site, sys; site.addsitedir({sysconfig.get_paths()['purelib']!r}); "
                        "from zeroserve.core.cli import main; sys.exit(main())")


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason=f"needs {SYSTEM_PYTHON} to run the server as nobody")
def test_privileges_not_root_keeps_user_in_own_namespaces(request, public_dir, tars):
    """Started as nobody, workers keep that user, enter their own namespaces and still lose every capability."""
    tar = public_dir / "not-root.tar"
    shutil.copyfile(tars["one"], tar)
    tar.chmod(0o644)
    server = ServerProcess(tar, workers=1)
    server.args = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
                   str(SYSTEM_PYTHON), "-c", RUN_FROM_ENVIRONMENT, *server.args[3:]]
    request.addfinalizer(lambda: server.proc is not None and server.stop())
    server.start()
    server.wait_for(r"^isolation: not started as root, so no user to switch from \(workers keep uid 65534\); "
                    r"own user and mount namespaces .*; all capabilities dropped, no_new_privs set, "
                    r"RLIMIT_NPROC 64 per worker$")
    assert process_status(server.proc.pid)["Uid"].split()[0] == str(NOBODY.pw_uid)
    pid = server.worker_pids()[0]
    assert_dropped_to_nobody(pid)
    assert nproc_limit(pid) == (64, 64)
    for kind in ("user", "mnt"):
        assert namespace(pid, kind) != namespace(server.proc.pid, kind)
    assert curl_status(server.url("/v.txt"))[1:] == (200, b"one")
    staged = public_dir / "not-root.staged"
    shutil.copyfile(tars["two"], staged)
    staged.chmod(0o644)
    os.replace(staged, tar)
    server.signal(signal.SIGHUP)
    wait_until(lambda: curl_status(server.url("/v.txt"))[2] == b"two")


@pytest.mark.parametrize("user, message", [
    ("no-such-user-zs", "--user 'no-such-user-zs': no such user on this system"),
    ("root", "--user 'root' is root; give an unprivileged account"),  # workers never keep root
], ids=["unknown", "root"])
def test_privileges_unusable_user_is_refused(tars, user, message):
    """--user naming no account, or root, stops start-up with one message naming the flag."""
    result = subprocess.run([sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                             "--tls-addr", "off", "--user", user, str(tars["one"])],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr

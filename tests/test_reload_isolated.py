"""Reloads of isolated workers: a root-only tar, certificate and key reach them from the supervisor."""

import http.client
import os
import pwd
import shutil
import signal
import stat
from pathlib import Path

import pytest

from harness import curl, curl_status, start_server, wait_until
from tls_pki import make_test_pki
from zeroserve.core import worldfiles
from zeroserve.core.errors import ConfigError

NOBODY = pwd.getpwnam("nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root-only files and the drop need the tests run as root")

MODES = {
    "user-and-namespaces": (),  # the default for a root start
    "user-only": ("--disable-ns-isolation",),
}


@pytest.fixture(scope="module")
def tars(make_site):
    return {version: make_site({"v.txt": version}) for version in ("one", "two")}


@pytest.fixture(scope="module")
def pkis(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    return make_test_pki(base / "first"), make_test_pki(base / "second")


def install_root_only(source, target):
    """Put a copy of `source` at `target`, owned by root with mode 0600, replacing it in one rename."""
    staged = target.with_name(target.name + ".new")
    shutil.copyfile(source, staged)
    os.chown(staged, 0, 0)
    staged.chmod(0o600)
    os.replace(staged, target)


def uid_of(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


@pytest.mark.parametrize("mode", MODES)
def test_reload_isolated_root_only_tar_and_key_are_handed_over(request, tmp_path, tars, pkis, mode):
    """SIGHUP after replacing a 0600 root tar, certificate and key serves the new ones, keeping a live connection."""
    first, second = pkis
    live = {"tar": tmp_path / "site.tar", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    install_root_only(tars["one"], live["tar"])
    install_root_only(first.leaf_cert, live["cert"])
    install_root_only(first.leaf_key, live["key"])
    server = start_server(request, live["tar"], "--tls-addr", "127.0.0.1:0", "--cert", str(live["cert"]),
                          "--key", str(live["key"]), *MODES[mode], workers=2)
    workers = server.worker_pids()
    assert [uid_of(pid) for pid in workers] == [NOBODY.pw_uid] * 2
    for path in live.values():  # nobody could not open any of them
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
        assert path.parent.stat().st_mode & 0o077 == 0

    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    request.addfinalizer(kept.close)
    kept.request("GET", "/v.txt")
    assert kept.getresponse().read() == b"one"
    kept_socket = kept.sock

    install_root_only(tars["two"], live["tar"])
    install_root_only(second.leaf_cert, live["cert"])
    install_root_only(second.leaf_key, live["key"])
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"loaded 1 entries from .*site\.tar", start=mark)
    # Each worker swaps its World once its own build is done: poll new connections until all serve it.
    wait_until(lambda: all(curl_status(server.url("/v.txt"))[2] == b"two" for _ in range(6)))
    https = ("--cacert", str(second.ca_cert), *server.resolve_args(), server.https_url("/v.txt"))
    wait_until(lambda: all(curl(*https).stdout == b"two" for _ in range(6)))
    assert curl("--cacert", str(first.ca_cert), *server.resolve_args(), server.https_url("/v.txt")).returncode == 60

    kept.request("GET", "/v.txt")  # the connection opened before the reload is still served
    assert kept.getresponse().read() == b"two"
    assert kept.sock is kept_socket
    assert server.worker_pids() == workers  # no worker was restarted to get there
    assert not any("reload failed" in line or "was not handed" in line for line in server.lines[mark:])


@pytest.mark.parametrize("mode", MODES)
def test_reload_isolated_unreadable_new_tar_keeps_previous_site(request, tmp_path, tars, mode):
    """A reload whose tar is missing fails once in the supervisor and the workers keep serving the old site."""
    live = tmp_path / "site.tar"
    install_root_only(tars["one"], live)
    server = start_server(request, live, *MODES[mode], workers=2)
    live.unlink()
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed, still serving the previous site: .*site\.tar: cannot open the site tar",
                    start=mark)
    assert all(curl_status(server.url("/v.txt"))[2] == b"one" for _ in range(4))
    install_root_only(tars["two"], live)
    server.signal(signal.SIGHUP)
    wait_until(lambda: all(curl_status(server.url("/v.txt"))[2] == b"two" for _ in range(6)))
    assert sum("reload failed" in line for line in server.lines[mark:]) == 1


def test_reload_isolated_handover_replays_recorded_answers_without_the_disk(tmp_path, tars):
    """What the supervisor read travels over the handover channel; the worker's side answers the same, disk gone."""
    directory = tmp_path / "material"
    directory.mkdir()
    (directory / "cert.pem").write_bytes(b"PEM bytes")
    files = worldfiles.DiskFiles()
    with worldfiles.reading(files):
        site = worldfiles.open_site(tars["one"])
        assert worldfiles.read_bytes(directory / "cert.pem") == b"PEM bytes"
        assert worldfiles.kind(directory) == worldfiles.DIRECTORY
        assert worldfiles.list_dir(directory) == ["cert.pem"]
        with pytest.raises(FileNotFoundError):
            worldfiles.read_bytes(directory / "absent.pem")
    supervisor_end, worker_end = worldfiles.handover_channel()
    with supervisor_end, worker_end, site:
        worldfiles.send(supervisor_end, 7, files, site.fd)
        generation, replay = worldfiles.receive(worker_end)
    shutil.rmtree(directory)

    assert generation == 7
    with worldfiles.reading(replay):
        assert worldfiles.read_bytes(directory / "cert.pem") == b"PEM bytes"
        assert worldfiles.kind(directory) == worldfiles.DIRECTORY
        assert worldfiles.list_dir(directory) == ["cert.pem"]
        with pytest.raises(FileNotFoundError):
            worldfiles.read_bytes(directory / "absent.pem")
        with pytest.raises(ConfigError, match="a file the supervisor did not read"):
            worldfiles.read_bytes(directory / "never-read.pem")
        with worldfiles.open_site("handed-over.tar") as handed:
            assert handed.read(handed.get("v.txt")) == b"one"
    replay.close()

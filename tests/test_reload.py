"""Reload: SIGHUP and --reload-signal-file swap the site; in-flight requests finish on the old one."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import curl_status, parse_responses, read_until_closed, wait_until

BIG_A = bytes(range(256)) * 32768  # 8 MiB
BIG_B = bytes(reversed(range(256))) * 32768
SITE_A = {"index.html": "site A", "v.txt": "A", "big.bin": BIG_A}
SITE_B = {"index.html": "site B", "v.txt": "B", "big.bin": BIG_B}


@pytest.fixture(scope="module")
def tars(make_site):
    return make_site(SITE_A), make_site(SITE_B)


@pytest.fixture
def live_tar(tmp_path, tars):
    """A tar path the test may replace; starts as site A."""
    path = tmp_path / "live.tar"
    shutil.copyfile(tars[0], path)
    return path


def swap(live_tar, source):
    """Replace the live tar atomically, as a deploy would."""
    staging = live_tar.with_suffix(".new")
    shutil.copyfile(source, staging)
    os.replace(staging, live_tar)


def body(server, path="/v.txt"):
    return curl_status(server.url(path), "--http1.1")[2]


def test_reload_sighup_swaps_site(server_factory, live_tar, tars):
    """After the tar is replaced and SIGHUP sent, new requests get the new site."""
    server = server_factory(live_tar, workers=2)
    assert body(server) == b"A"
    swap(live_tar, tars[1])
    server.signal(signal.SIGHUP)
    wait_until(lambda: all(body(server) == b"B" for _ in range(10)))


def test_reload_broken_tar_keeps_old_site(server_factory, live_tar):
    """A broken tar on reload logs the reason once and the old site keeps serving."""
    server = server_factory(live_tar, workers=2)
    start = len(server.lines)
    staging = live_tar.with_suffix(".new")
    staging.write_bytes(b"this is not a tar" * 100)
    os.replace(staging, live_tar)
    server.signal(signal.SIGHUP)
    match = server.wait_for(r"reload failed, still serving the previous site: (.*)", start=start)
    assert "not a tar" in match.group(1)
    assert all(body(server) == b"A" for _ in range(10))
    assert server.count(r"reload failed") == 1


def test_reload_in_flight_download_finishes_on_old_site(server_factory, live_tar, tars):
    """A download in progress during a reload completes with the old content; the next gets the new."""
    server = server_factory(live_tar)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    first = sock.recv(65536)
    start = len(server.lines)
    swap(live_tar, tars[1])
    server.signal(signal.SIGHUP)
    server.wait_for(r"loaded \d+ entries", start=start)
    wait_until(lambda: body(server) == b"B")
    sock.settimeout(20)
    (response,) = parse_responses(first + read_until_closed(sock))
    sock.close()
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(BIG_A).digest()
    assert hashlib.sha256(body(server, "/big.bin")).digest() == hashlib.sha256(BIG_B).digest()


def test_reload_signal_file_change_triggers_reload(server_factory, live_tar, tars, tmp_path):
    """Changing the content of --reload-signal-file reloads the site within a few seconds."""
    trigger = tmp_path / "reload"
    trigger.write_text("1")
    server = server_factory(live_tar, "--reload-signal-file", str(trigger))
    assert body(server) == b"A"
    swap(live_tar, tars[1])
    trigger.write_text("2")
    wait_until(lambda: body(server) == b"B", timeout=10)


def test_reload_under_load_fails_no_request(server_factory, live_tar, tars):
    """h2load (h2c and HTTP/1.1) runs while 20 SIGHUPs swap two tars: zero failed requests."""
    server = server_factory(live_tar, "--disable-request-logging", workers=2)
    loads = [
        subprocess.Popen(["h2load", *mode, "-c", "8", "-m", "8", "-D", "6", server.url("/v.txt")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for mode in ([], ["--h1"])
    ]
    time.sleep(0.5)
    for number in range(20):
        swap(live_tar, tars[(number + 1) % 2])
        server.signal(signal.SIGHUP)
        time.sleep(0.2)
    outputs = [load.communicate(timeout=60)[0] for load in loads]
    for output in outputs:
        match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, 0 failed, "
                          r"0 errored, 0 timeout", output)
        assert match, output
        assert int(match.group(3)) == int(match.group(2)) > 1000
        assert re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", output), output
    assert server.count(r"reload failed") == 0
    assert server.count(r"loaded \d+ entries") == 21

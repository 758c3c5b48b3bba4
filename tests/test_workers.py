"""Worker processes: count, SO_REUSEPORT sharing, restart after a crash, graceful shutdown."""

import hashlib
import os
import re
import signal
import socket
import time

import pytest

from harness import (ServerProcess, connect, curl_status, parse_responses, pid_alive, read_until_closed,
                     wait_until)

BIG = bytes(range(256)) * 32768  # 8 MiB
FILES = {"index.html": "home", "a.txt": "alpha", "big.bin": BIG}


@pytest.fixture(scope="module")
def tar(make_site):
    return make_site(FILES)


def started(request, tar, *flags, workers=1):
    server = ServerProcess(tar, *flags, workers=workers)
    request.addfinalizer(lambda: server.proc.poll() is None and server.stop())
    return server.start()


def slow_download(port):
    """A socket with a GET for big.bin sent and a small receive buffer, so the response stays in flight."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    return sock, sock.recv(65536)


def test_workers_threads_start_that_many_processes(request, tar):
    """--threads 3 starts three workers on one port and connections are spread over them."""
    server = started(request, tar, workers=3)
    assert server.count(r"listening on http://127\.0\.0\.1:\d+ \(3 workers\)") == 1
    assert len(server.worker_pids()) == 3
    for _ in range(30):
        assert curl_status(server.url("/a.txt"), "--http1.1")[1:] == (200, b"alpha")
    server.wait_for(r"\[request\].*GET /a\.txt", start=0)
    wait_until(lambda: server.count(r"\[request\] .* GET /a\.txt 200") == 30)
    prefixes = {re.search(r"\] \S+ (\w+)-", line).group(1) for line in server.lines if "[request]" in line}
    assert len(prefixes) > 1


def test_workers_default_count_is_cpu_count(request, tar):
    """Without --threads the server starts one worker per available CPU."""
    server = ServerProcess(tar)
    server.args.remove("--threads")
    server.args.remove("1")
    request.addfinalizer(lambda: server.proc.poll() is None and server.stop())
    server.start()
    cpus = len(os.sched_getaffinity(0))
    assert len(server.worker_pids()) == cpus
    assert server.count(rf"\({cpus} workers?\)") == 1


def test_workers_killed_worker_is_restarted(request, tar):
    """A worker killed with SIGKILL is logged and replaced; the site keeps being served."""
    server = started(request, tar, workers=2)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker \d \(pid {victim}\) was killed by SIGKILL; restarting it")
    wait_until(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids())
    for _ in range(10):
        assert curl_status(server.url("/a.txt"), "--http1.1")[1] == 200


def test_workers_sigterm_lets_download_finish_and_exits_0(request, tar):
    """On SIGTERM a download in flight completes, new connections are refused, and the exit status is 0."""
    server = started(request, tar, workers=2)
    sock, first = slow_download(server.port)
    server.signal(signal.SIGTERM)
    server.wait_for(r"shutting down")

    def refused():
        try:
            connect(server.port, timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused)
    sock.settimeout(20)
    rest = read_until_closed(sock)
    sock.close()
    (response,) = parse_responses(first + rest)
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(BIG).digest()
    done = time.monotonic()
    assert server.proc.wait(20) == 0
    assert time.monotonic() - done < 5  # closed after its response, not at the grace deadline
    assert server.count(r"^stopped$") == 1


def test_workers_sigterm_closes_idle_connections_at_once(request, tar):
    """Idle keep-alive connections do not delay shutdown: the server exits well before the grace period."""
    server = started(request, tar, "--shutdown-timeout", "30")
    idle = connect(server.port)
    idle.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    idle.recv(65536)
    begun = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert time.monotonic() - begun < 10
    assert read_until_closed(idle) == b""
    idle.close()


def test_workers_shutdown_timeout_bounds_drain(request, tar):
    """A client that never finishes reading cannot hold shutdown past --shutdown-timeout."""
    server = started(request, tar, "--shutdown-timeout", "1", workers=2)
    pids = server.worker_pids()
    sock, _ = slow_download(server.port)
    begun = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert time.monotonic() - begun < 6
    assert not any(pid_alive(pid) for pid in pids)
    sock.close()


def test_workers_stop_when_supervisor_is_killed(request, tar):
    """Workers of a supervisor killed with SIGKILL stop on their own instead of serving forever."""
    server = started(request, tar, workers=2)
    pids = server.worker_pids()
    server.proc.kill()
    server.proc.wait(10)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=15)

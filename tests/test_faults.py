"""Faults a hostile or broken client (or machine) causes, at a small scale: each is bounded and others keep being served.

The same scenarios at full scale, with figures, are in bench/faults (`.venv/bin/python -m bench.faults`).
HTTP/2 PING, SETTINGS and rapid-reset floods are tested in test_http2.py, reloads under load in
test_reload.py.
"""

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame

from harness import ServerProcess, connect, read_until_closed, start_server, wait_until
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler

# The fault bench's attacking clients and scripts serve here too; its modules import each other by bare name.
BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path[:0] = [str(BENCH / "faults"), str(BENCH)]
from clients import send_until_answered, send_until_closed  # noqa: E402
from scenarios import RATE_LIMIT_SCRIPT  # noqa: E402

BIG = bytes(range(256)) * 48 * 1024  # 12 MiB: more than the kernel buffers of both ends hold (4 + 4 MiB)
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def tar(make_site):
    return make_site({"index.html": "<p>fine</p>\n", "big.bin": BIG})


@pytest.fixture(scope="module")
def server(request, tar):
    """One worker with short timeouts and a 64 KiB body limit."""
    return start_server(request, tar, "--header-timeout", "1", "--write-timeout", "1", "--max-body-bytes", "65536")


def status_of(port, request=REQUEST):
    """The status of one request on a new connection (0 when it gets no answer)."""
    with connect(port, timeout=5) as sock:
        sock.sendall(request)
        try:
            head = sock.recv(65536)
        except OSError:
            return 0
    return int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_faults_slowloris_clients_get_408_while_others_are_served(server):
    """Fifty clients trickling header lines all get 408 after the header timeout; a normal client is served meanwhile."""
    socks = [connect(server.port) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    for line in range(3):
        time.sleep(0.3)
        assert status_of(server.port) == 200
        for sock in socks:
            sock.sendall(b"X-%d: y\r\n" % line)
    answers = []
    for sock in socks:
        sock.settimeout(5)
        answers.append(read_until_closed(sock))
        sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)


def test_faults_stalled_readers_are_dropped_and_do_not_block_others(server):
    """Clients that never read a 12 MiB body are dropped after the write timeout; others are served meanwhile."""
    readers = []
    for _ in range(5):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        readers.append(sock)
    assert status_of(server.port) == 200
    time.sleep(2.5)  # write timeout 1 s, checked every 0.25 s
    for sock in readers:
        sock.settimeout(5)
        received = read_until_closed(sock)
        sock.close()
        assert len(received) < len(BIG)


def test_faults_pipelining_client_that_reads_nothing_is_stalled_and_dropped(server):
    """A client pipelining 54 MB of GETs without reading is stopped being read, then dropped; others are served."""
    data = REQUEST * 2_000_000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(0.0)
        sent, progress_at = 0, time.monotonic()
        while sent < len(data) and time.monotonic() - progress_at < 1.0:
            try:
                sent += sock.send(data[sent:sent + (1 << 20)])
                progress_at = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        assert sent < len(data), "the server read every pipelined request without answering being read"
        assert status_of(server.port) == 200
        time.sleep(2.5)  # write timeout 1 s, checked every 0.25 s; reading nothing meanwhile
        sock.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while sock.recv(1 << 20):
                pass
            raise BrokenPipeError  # an orderly close counts as dropped too


def test_faults_vanishing_clients_release_their_descriptors(server):
    """Plaintext clients that close or reset mid-download leave no descriptor and no error behind."""
    worker = server.worker_pids()[0]
    assert status_of(server.port) == 200
    before = open_fds(worker)
    lines = len(server.lines)
    for index in range(40):
        sock = connect(server.port)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        while got < 65536:
            got += len(sock.recv(65536))
        if index % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        sock.close()
    wait_until(lambda: open_fds(worker) <= before, timeout=10)
    assert status_of(server.port) == 200
    assert not [line for line in server.lines[lines:] if "Traceback" in line or "error" in line.lower()]


@pytest.mark.parametrize("first, filler, status", [
    (b"GET / HTTP/1.1\r\nHost: t\r\n", b"X-Flood: " + b"a" * 50 + b"\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ", b"b" * 4096, b"431"),
    (b"GET /", b"c" * 4096, b"414"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\n", b"d" * 65536, b"413"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", b"4000\r\n" + b"e" * 0x4000 + b"\r\n",
     b"413"),
], ids=["header-lines", "header-value", "request-line", "content-length", "chunked-body"])
def test_faults_endless_head_or_body_is_answered_and_closed(server, first, filler, status):
    """An endless head or body gets its 4xx long before the flood ends, and the connection is closed."""
    with connect(server.port) as sock:
        sent, answer = send_until_answered(sock, first, filler, 32 << 20)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
        assert sent < 32 << 20
        sock.settimeout(5)
        read_until_closed(sock)
    assert status_of(server.port) == 200


def test_faults_h2_continuation_flood_ends_the_connection(server):
    """HEADERS followed by CONTINUATION frames that never end the header block close the h2c connection."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    block = conn.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")])
    with connect(server.port) as sock:
        first = conn.data_to_send() + HeadersFrame(1, data=block).serialize()  # no END_HEADERS
        filler = ContinuationFrame(1, data=b"\x40\x01x\x01y" * 3000).serialize()
        sent, _, closed = send_until_closed(sock, first, filler, 64 << 20)
        assert closed, f"still open after {sent} bytes of CONTINUATION frames"
    assert status_of(server.port) == 200


def test_faults_killed_worker_fails_only_its_connections(request, tar):
    """SIGKILL to one of two workers: its open connection fails, the other worker's keeps serving, it is replaced."""
    server = start_server(request, tar, workers=2)
    victim, survivor = server.worker_pids()
    held = []  # one kept-alive connection per worker, found by asking until both are held
    deadline = time.monotonic() + 10
    while len({pid for pid, _ in held}) < 2 and time.monotonic() < deadline:
        sock = connect(server.port)
        sock.sendall(REQUEST)
        sock.recv(65536)
        pid = _serving_pid(sock, (victim, survivor))
        if pid in {p for p, _ in held}:
            sock.close()
        else:
            held.append((pid, sock))
    assert len(held) == 2
    os.kill(victim, signal.SIGKILL)
    server.wait_for(r"was killed by SIGKILL; restarting")
    for pid, sock in held:
        try:
            sock.sendall(REQUEST)
            answer = sock.recv(65536)
        except OSError:
            answer = b""
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200") == (pid == survivor)
    wait_until(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids())
    assert all(status_of(server.port) == 200 for _ in range(10))


def _serving_pid(sock, pids):
    """Which of `pids` holds the server end of sock (its inode is in that process's fd table)."""
    local = sock.getsockname()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:") and _peer_of_inode(target[8:-1]) == local:
                return pid
    return None


def _peer_of_inode(inode):
    """The remote (ip, port) of the IPv4 TCP socket with this inode, from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if fields[9] == inode:
                address, port = fields[2].split(":")
                ip = socket.inet_ntoa(int(address, 16).to_bytes(4, "little"))
                return ip, int(port, 16)
    return None


def test_faults_descriptor_limit_pauses_accept(request, tar):
    """Under RLIMIT_NOFILE 100 the worker caps connections at 36 (logged), stops accepting beyond, idles, recovers."""
    server = ServerProcess(tar)
    server.args = ["prlimit", "--nofile=100:100", *server.args]
    request.addfinalizer(lambda: server.proc is not None and server.stop())
    server.start()
    server.wait_for(r"worker 0: RLIMIT_NOFILE is 100, so at most 36 connections are served at once")
    worker = server.worker_pids()[0]
    held = [connect(server.port) for _ in range(36)]
    for sock in held:
        sock.sendall(REQUEST)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    waiting = connect(server.port)  # completed by the kernel, left in the listen queue
    waiting.sendall(REQUEST)
    waiting.settimeout(1)
    with pytest.raises(TimeoutError):
        waiting.recv(65536)
    ticks = _cpu_ticks(worker)
    time.sleep(1)
    assert _cpu_ticks(worker) - ticks < os.sysconf("SC_CLK_TCK") // 2, "the worker spins while at its cap"
    for sock in held:
        sock.close()
    waiting.settimeout(10)
    assert waiting.recv(65536).startswith(b"HTTP/1.1 200")
    waiting.close()
    wait_until(lambda: status_of(server.port) == 200)


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_faults_full_disk_keeps_previous_ratelimit_snapshot(request, tmp_path, full_disk):
    """A snapshot that does not fit on the disk logs one error naming the file, and leaves the old one whole."""
    source = tmp_path / "site"
    (source / ".zeroserve" / "scripts").mkdir(parents=True)
    (source / "index.html").write_text("<p>fine</p>\n")
    (source / ".zeroserve" / "scripts" / "10-limit.c").write_text(RATE_LIMIT_SCRIPT)
    tar = tmp_path / "site.tar"
    pack.build(source, tar, compiler=ScriptCompiler.find(None))
    state = full_disk / "ratelimit.msgpack"
    flags = ("--plugins", "ratelimit", "--ratelimit-state", str(state))
    first = start_server(request, tar, *flags)
    assert status_of(first.port, b"GET /limited?key=one HTTP/1.1\r\nHost: t\r\n\r\n") == 200
    assert first.stop() == 0
    previous = state.read_bytes()
    second = start_server(request, tar, *flags)
    with connect(second.port) as sock:  # 3000 keys: a snapshot of about 100 KiB
        sock.sendall(b"".join(b"GET /limited?key=k%05d HTTP/1.1\r\nHost: t\r\n\r\n" % key for key in range(3000))
                     + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).count(b"HTTP/1.1 200") == 3001
    assert second.stop() == 0
    errors = [line for line in second.lines if "[ratelimit] cannot save" in line]
    assert len(errors) == 1 and str(state) in errors[0] and "No space left on device" in errors[0]
    assert state.read_bytes() == previous
    assert sorted(path.name for path in full_disk.iterdir()) == ["ratelimit.msgpack"]


def test_faults_tls_clients_vanishing_mid_handshake_and_download_leave_nothing(request, tar):
    """TLS clients that vanish mid-handshake or mid-download leave no descriptor behind and the server serves."""
    server = start_server(request, tar, "--tls-addr", "127.0.0.1:0")
    worker = server.worker_pids()[0]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(connect(server.tls_port), server_hostname="localhost") as tls:
        tls.sendall(REQUEST)
        tls.recv(65536)
    before = open_fds(worker)
    for index in range(20):
        sock = connect(server.tls_port)
        if index % 2:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
            sock.close()
            continue
        tls = context.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.recv(65536)
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        tls.close()
    wait_until(lambda: open_fds(worker) <= before, timeout=10)
    assert status_of(server.port) == 200

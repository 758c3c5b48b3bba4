"""End-to-end test helpers: site tars built with the real packer, real `zeroserve run` processes, real clients.

`build_site` packs a dict of files with `zeroserve.core.pack.build`. `ServerProcess` starts `zeroserve run` on 127.0.0.1 port 0, reads the port from
its "listening on" line (and the HTTPS port when the flags give --tls-addr; without it the server gets
`--tls-addr off`), keeps every stderr line for assertions, and stops it
with SIGTERM. `start_server` ties one to a pytest finalizer, so a module can
share one server through a module-scoped fixture. The fixtures are in conftest.py.
"""

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from zeroserve.core import pack

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "examples" / "site"


def write_tree(root, files):
    """Write {relative path: str | bytes} under root."""
    for rel, content in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def build_site(directory, files, output):
    """Pack `files` (written into `directory`) into the tar `output`; return its path."""
    write_tree(directory, files)
    pack.build(directory, output)
    return Path(output)


class ServerProcess:
    """A `zeroserve run` child process and everything it printed on stderr."""

    def __init__(self, tar, *flags, workers=1, env=None):
        self.tar = Path(tar)
        self.tls = "--tls-addr" in flags and flags[flags.index("--tls-addr") + 1] != "off"
        if "--tls-addr" not in flags:
            flags = ("--tls-addr", "off", *flags)
        self.args = [sys.executable, "-m", "zeroserve.core.cli", "run", "--addr", "127.0.0.1:0",
                     "--threads", str(workers), *flags, str(tar)]
        self.env = env
        self.lines = []
        self._eof = False
        self._changed = threading.Condition()
        self.proc = None
        self.port = None
        self.tls_port = None  # the HTTPS port when the server has an HTTPS listener

    def start(self, timeout=20):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_terminate_with_parent, env=self.env)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        match = self.wait_for(r"listening on http://127\.0\.0\.1:(\d+)", timeout=timeout)
        self.port = int(match.group(1))
        if self.tls:
            self.tls_port = int(self.wait_for(r"listening on https://127\.0\.0\.1:(\d+)", timeout=timeout).group(1))
        return self

    def _read_stderr(self):
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, pattern, timeout=10, start=0):
        """The first match of `pattern` in a stderr line from index `start` on; fails on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"no stderr line matches {pattern!r}; got:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.2))

    def count(self, pattern):
        regex = re.compile(pattern)
        with self._changed:
            return sum(1 for line in self.lines if regex.search(line))

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def https_url(self, path="/", host="localhost"):
        """The HTTPS URL of path; give curl `--resolve` (resolve_args) for a name other than 127.0.0.1."""
        return f"https://{host}:{self.tls_port}{path}"

    def resolve_args(self, host="localhost"):
        """curl flags that send `host` (as SNI and Host) to this server's HTTPS port on 127.0.0.1."""
        return ("--resolve", f"{host}:{self.tls_port}:127.0.0.1")

    def signal(self, signum):
        self.proc.send_signal(signum)

    def worker_pids(self):
        """Pids of the worker processes (children of the supervisor)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return sorted(int(pid) for pid in children)

    def stop(self, timeout=20):
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def _terminate_with_parent():
    """In the child before exec: SIGTERM it when the starting thread (pytest's main thread) dies."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def start_server(request, tar, *flags, workers=1, env=None):
    """Start a server for the requesting fixture's scope; it is stopped at teardown."""
    server = ServerProcess(tar, *flags, workers=workers, env=env)
    request.addfinalizer(lambda: server.proc is not None and server.stop())
    return server.start()


# -- clients -------------------------------------------------------------------


def curl(*args, timeout=20):
    """Run curl; return the CompletedProcess (stdout as bytes)."""
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


def curl_status(url, *args):
    """(http_version, status code, body) of one curl request."""
    result = curl("-o", "-", "-w", "\n%{http_version} %{response_code}", *args, url)
    body, _, tail = result.stdout.rpartition(b"\n")
    version, code = tail.decode().split()
    return version, int(code), body


def connect(port, timeout=10):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock):
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class RawResponse:
    """One HTTP/1.1 response parsed from raw bytes."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # {lowercase name: value}
        self.body = body


def parse_responses(data, head_only=()):
    """Split raw bytes into RawResponses (Content-Length framing; indexes in head_only have no body)."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        _, status, reason = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status)
        length = 0 if status < 200 or len(responses) in head_only else int(headers.get("content-length", 0))
        responses.append(RawResponse(status, reason, headers, rest[:length]))
        data = rest[length:]
    return responses


def exchange(port, data, timeout=10):
    """Send raw bytes on a new connection; return everything until the server closes."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=10, interval=0.05):
    """Poll `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

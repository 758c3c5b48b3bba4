"""Runs one benchmark server as a child process pinned to a CPU, and stops it again.

Every server under test (zeroserve, nginx, Caddy, Granian) is started the same way: `taskset -c CPU argv`,
output to a log file, ready once their port accepts a TCP connection. `taskset` execs the
server, so the child's pid is the server's own pid, and every worker it forks inherits the pin.
Every child of the harness (servers and the client) is tied to it with die_with_parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ServerStartError(RuntimeError):
    """A server exited or never opened its port; the message carries the tail of its log."""


def die_with_parent() -> None:
    """Makes the calling child get SIGTERM when the harness dies, even by SIGKILL (a Popen preexec_fn).

    Without it a harness killed by a timeout leaves servers and clients running (and loading the machine).
    The setting survives the exec of taskset and of the program taskset runs.
    """
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def free_port() -> int:
    """Returns a loopback TCP port that was free a moment ago (bind port 0, then close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root_pid: int) -> list[int]:
    """Returns root_pid and all its living descendants, found through /proc/*/stat parent ids."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # the process ended while we listed /proc
        # The command name in parentheses may hold spaces; the fields after the last ')' do not.
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class Placement:
    """Where a server runs: the cores it is pinned to and how many worker processes (or threads) it runs."""

    cpus: tuple[int, ...]
    workers: int = 1


@dataclass
class PinnedProcess:
    """A server child pinned to `cpus`; `name` labels it in messages."""

    name: str
    argv: list[str]
    cpus: tuple[int, ...]
    log_path: Path
    env: dict[str, str] | None = None  # the child's environment; None inherits the harness's
    popen: subprocess.Popen | None = None

    def start(self, ready_port: int) -> None:
        """Starts the child with its output going to log_path and returns once it accepts connections on ready_port."""
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                ["taskset", "-c", ",".join(map(str, self.cpus)), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_for_port(ready_port)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _wait_for_port(self, port: int) -> None:
        """Returns once 127.0.0.1:port accepts a connection; raises ServerStartError if the child exits first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.popen.returncode} before listening on port {port}; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ServerStartError(
            f"{self.name} did not listen on port {port} within {READY_TIMEOUT_S:.0f} s; "
            f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """Returns the last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Ends the child (SIGTERM, then SIGKILL) and any worker it left behind, each by its pid."""
        if self.popen is None or self.popen.poll() is not None:
            return
        tree = process_tree(self.pid)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for pid in tree[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key (PEM files) both servers present."""

    cert: Path
    key: Path


@dataclass
class RunningServer:
    """A server that is up: its label in results, its process and the port the client loads."""

    label: str
    process: PinnedProcess
    port: int

    def worker_pid(self) -> int:
        """Returns the pid of the process that serves requests: the first child if the server forks workers."""
        tree = process_tree(self.process.pid)
        return tree[1] if len(tree) > 1 else tree[0]

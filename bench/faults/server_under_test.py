"""Starts the zeroserve a fault scenario attacks, pinned to the server core, and reads its workers' memory, CPU and log.

The site holds a small page (`/`, 174 bytes like the benchmark's), a 4 MiB file (`/big.bin`, for slow
readers and clients that vanish mid-response) and, when asked, scripts. The server runs with
`--disable-request-logging` so its log holds only what the scenario provoked: notices and errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from measure import cpu_ticks, pss_kib
from process import PinnedProcess, free_port, process_tree

ZEROSERVE = Path(sys.executable).with_name("zeroserve")
SERVER_CPU = 0
CLIENT_CPU = 1
PAGE = b"<!doctype html><title>fault</title>" + b"x" * (174 - 35 - 1) + b"\n"
BIG_SIZE = 4 * 1024 * 1024
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def pack_site(directory: Path, scripts: dict[str, str] | None = None, marker: str = "") -> Path:
    """Writes the fault site (plus `scripts`, C sources by file name) under directory and packs it; the tar's path.

    `marker` goes into /version.txt so that two packs of the site differ (reload scenarios swap them).
    """
    source = directory / "site"
    source.mkdir(parents=True)
    (source / "index.html").write_bytes(PAGE)
    (source / "big.bin").write_bytes(bytes(range(256)) * (BIG_SIZE // 256))
    (source / "version.txt").write_text(marker + "\n")
    if scripts:
        (source / ".zeroserve" / "scripts").mkdir(parents=True)
        for name, code in scripts.items():
            (source / ".zeroserve" / "scripts" / name).write_text(code)
    tar = directory / "site.tar"
    done = subprocess.run([str(ZEROSERVE), "pack", str(source), "-o", str(tar)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"zeroserve pack {source} failed:\n{done.stderr}")
    return tar


@dataclass
class Server:
    """A running `zeroserve run`: its supervisor process, ports and log; as a context manager, stopped on exit."""

    process: PinnedProcess
    port: int
    tls_port: int | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        """The worker pids (the supervisor's children), oldest first."""
        return sorted(process_tree(self.pid)[1:])

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def log_lines(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.log().splitlines() if regex.search(line)]

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start(workdir: Path, tar: Path, *flags: str, workers: int = 1, tls: bool = False, name: str = "zeroserve",
          wrapper: tuple[str, ...] = ()) -> Server:
    """Starts zeroserve on tar with flags (one worker by default) and returns once it accepts connections.

    `wrapper` is a command that execs the server, e.g. ("prlimit", "--nofile=256:256")."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [*wrapper, str(ZEROSERVE), "run", "--addr", f"127.0.0.1:{port}", "--threads", str(workers),
            "--disable-request-logging"]
    tls_port = None
    if tls:
        tls_port = free_port()
        argv += ["--tls-addr", f"127.0.0.1:{tls_port}", "--state-dir", str(workdir / "state")]
    else:
        argv += ["--tls-addr", "off"]
    process = PinnedProcess(name=name, argv=[*argv, *flags, str(tar)], cpus=(SERVER_CPU,),
                            log_path=workdir / f"{name}.log")
    process.start(ready_port=tls_port or port)
    server = Server(process, port, tls_port)
    deadline = time.monotonic() + 10
    while len(server.workers()) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


# ---------------------------------------------------------------- figures of one process


def rss_kib(pid: int) -> int:
    """VmRSS of pid in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of pid in KiB."""
    return pss_kib(pid), rss_kib(pid)


def open_fds(pid: int) -> int:
    """How many file descriptors pid holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class CpuWatch:
    """The CPU share (1.0 = one core) one process used between construction and `share()`."""

    def __init__(self, pid: int):
        self.pid = pid
        self.ticks = cpu_ticks(pid) or 0
        self.started = time.monotonic()

    def share(self) -> float:
        used = (cpu_ticks(self.pid) or self.ticks) - self.ticks
        return used / CLOCK_TICKS_PER_S / (time.monotonic() - self.started)

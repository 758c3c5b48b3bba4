"""Reads what a benchmark run measured: server CPU and memory from /proc, client results from wrk and h2load output."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from process import process_tree

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SATURATED = 0.95  # a CPU share above this (per core) means that side's cores were the limit
DISTURBED = 0.10  # this much of the measured cores going to anything else makes a run suspect


class MeasureError(RuntimeError):
    """A figure could not be read from /proc or from a load generator's output."""


# ---------------------------------------------------------------- server CPU and memory


def cpu_ticks(pid: int) -> int | None:
    """Returns user + system clock ticks used so far by pid (all its threads), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name: state is field 3, utime field 14, stime field 15 (proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class CpuMeter:
    """Measures the CPU share of a process tree between start() and stop(): 1.0 is one core fully busy."""

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.ticks_at_start: dict[int, int] = {}
        self.started_at = 0.0

    def start(self) -> None:
        self.ticks_at_start = {pid: cpu_ticks(pid) or 0 for pid in process_tree(self.root_pid)}
        self.started_at = time.monotonic()

    def stop(self) -> float:
        """Returns CPU seconds used by the tree per wall-clock second since start()."""
        wall = time.monotonic() - self.started_at
        used = 0
        # A worker forked during the run counts from zero; one that ended during the run is lost,
        # which is why the servers run a fixed set of workers.
        for pid in process_tree(self.root_pid):
            now = cpu_ticks(pid)
            if now is not None:
                used += now - self.ticks_at_start.get(pid, 0)
        return used / CLOCK_TICKS_PER_S / wall


def core_jiffies(cpus: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """Returns (busy, total) jiffies so far for each CPU in cpus, from /proc/stat; idle and iowait count as not busy."""
    jiffies = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal (guest time is already inside user).
            counts = [int(v) for v in values[:8]]
            jiffies[int(name[3:])] = (sum(counts) - counts[3] - counts[4], sum(counts))
    return jiffies


class CoreMeter:
    """Measures how busy whole CPUs were between start() and stop(), whoever kept them busy (steal included)."""

    def __init__(self, cpus: tuple[int, ...]):
        self.cpus = cpus
        self.at_start: dict[int, tuple[int, int]] = {}

    def start(self) -> None:
        self.at_start = core_jiffies(self.cpus)

    def stop(self) -> float:
        """Returns the summed busy share of the CPUs: 2.0 means two cores busy all the time."""
        now = core_jiffies(self.cpus)
        return sum(
            (now[cpu][0] - self.at_start[cpu][0]) / max(1, now[cpu][1] - self.at_start[cpu][1]) for cpu in self.cpus
        )


def limit_of(figures: dict, server_cores: int = 1) -> str:
    """Names what limited a run: other work on the cores, the client's core, the server's, or neither."""
    if figures["other_cpu"] >= DISTURBED:
        return "disturbed"
    if figures["client_cpu"] >= SATURATED:
        return "client"
    if figures["server_cpu"] >= SATURATED * server_cores:
        return "server"
    return "neither"


def memory_kib(pid: int) -> dict[str, int]:
    """Returns pid's memory in KiB from /proc/PID/smaps_rollup: pss (shared pages split among their users),
    rss (every resident page) and uss (pages no other process shares)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    if "Pss" not in fields:
        raise MeasureError(f"/proc/{pid}/smaps_rollup has no Pss line")
    return {"pss": fields["Pss"], "rss": fields["Rss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def pss_kib(pid: int) -> int:
    """Returns the proportional set size of pid in KiB."""
    return memory_kib(pid)["pss"]


# ---------------------------------------------------------------- client output


@dataclass(frozen=True)
class ClientResult:
    """What one load-generator run reports."""

    requests: int  # completed requests with a 2xx/3xx status
    seconds: float  # the client's own measured duration
    failures: int  # non-2xx/3xx responses, socket errors, failed or timed-out streams
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


_UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise MeasureError(f"wrk printed a latency {text!r} this parser does not know")
    return float(match[1]) * _UNIT_TO_MS[match[2]]


def parse_wrk(output: str) -> ClientResult:
    """Parses the output of `wrk --latency`."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", output, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)\s*$", output, re.M)
    if not total or not p99:
        raise MeasureError(f"wrk output lacks the request total or the 99% latency line:\n{output}")
    requests = int(total[1])
    seconds = float(total[2]) * _UNIT_TO_MS[total[3]] / 1000.0
    failures = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        failures += int(non_2xx[1])
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        failures += sum(int(n) for n in socket_errors.groups())
    return ClientResult(requests - failures, seconds, failures, _wrk_duration_ms(p99[1]))


def parse_h2load(output: str, log_file: Path) -> ClientResult:
    """Parses h2load's summary and its --log-file (for p99, which h2load does not print)."""
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s|m),", output, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
        re.M,
    )
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if not finished or not counts or not statuses:
        raise MeasureError(f"h2load output lacks the finished, requests or status codes line:\n{output}")
    seconds = float(finished[1]) * _UNIT_TO_MS[finished[2]] / 1000.0
    ok = int(statuses[1]) + int(statuses[2])
    # h2load exits 0 even when every request fails, so failures are counted from its summary.
    failures = int(counts[5]) + int(counts[6]) + int(counts[7]) + int(statuses[3]) + int(statuses[4])
    return ClientResult(ok, seconds, failures, h2load_p99_ms(log_file))


def h2load_p99_ms(log_file: Path) -> float:
    """Returns the 99th percentile of response times in an h2load --log-file (third column, microseconds)."""
    durations = []
    with open(log_file) as rows:
        for row in rows:
            columns = row.split("\t")
            if len(columns) >= 3 and columns[1] != "-1":  # -1: a failed stream, counted as a failure
                durations.append(int(columns[2]))
    if not durations:
        raise MeasureError(f"h2load's log {log_file} holds no completed request")
    durations.sort()
    return durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000.0

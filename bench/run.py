"""The benchmark command: loads zeroserve and nginx with the same workloads, interleaved in rounds, and reports.

    .venv/bin/python bench/run.py [--rounds N] [--duration S] [--workloads a,b] [--tls] [--h2] [--out FILE]
    .venv/bin/python bench/run.py --servers nginx,nginx      # self-check: the ratios should be close to 1.0
    .venv/bin/python bench/run.py --memory                   # idle PSS of one worker of each server

Each server is pinned to one core and the client to another. Rounds alternate which server goes first, and
ratios are taken per round (between runs seconds apart) before the median, so the machine's drift cancels.
The table goes to stdout; one JSON line per run and per summary is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import load
import nginx
import zeroserve_server
from measure import CoreMeter, CpuMeter, MeasureError, pss_kib
from process import RunningServer, ServerStartError, TlsFiles, process_tree
from workloads import Transport, Workload, select

BENCH_DIR = Path(__file__).resolve().parent
STARTERS = {"zeroserve": zeroserve_server.start, "nginx": nginx.start}
SATURATED = 0.95  # a CPU share above this means that side's core was the limit
DISTURBED = 0.10  # this much of the two cores going to anything else makes a run suspect
IDLE_SETTLE_S = 1.0  # time a server gets after it opens its port before its memory is read
ORIGIN_TRANSPORT = Transport(tls=False, client="wrk")  # how both servers reach a proxying workload's origin


class WrongAnswerError(RuntimeError):
    """A server answers the workload's request differently from what the workload expects."""


@dataclass(frozen=True)
class Measurement:
    """One server's figures for one round of one workload."""

    server: str
    round: int
    requests_per_s: float
    p99_ms: float
    server_cpu: float
    client_cpu: float
    other_cpu: float  # share of the server and client cores used by anything else (other processes, steal)
    failures: int
    origin_cpu: float = 0.0  # the proxied-to origin nginx's share of the server core (0 without an origin)

    @property
    def requests_per_core_s(self) -> float:
        """Requests served per second of server CPU: the figure to judge by when the client is the limit."""
        return self.requests_per_s / self.server_cpu if self.server_cpu > 0 else 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server and workload (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per measured run (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="whole seconds of unrecorded load per server before round 1 (default 1)"
    )
    parser.add_argument("--workloads", help="comma-separated workload names (default: all)")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 for workloads that do not fix it")
    parser.add_argument("--h2", action="store_true", help="HTTP/2 with h2load for workloads that do not fix a client")
    parser.add_argument(
        "--servers", default="zeroserve,nginx", help="two servers to compare, first/second in the ratios "
        "(default zeroserve,nginx; nginx,nginx is the self-check)",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=2, help="times a round is run again when other work disturbed it (default 2)"
    )
    parser.add_argument("--connections", type=int, default=50, help="client connections (default 50)")
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per HTTP/2 connection (default 10)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core the client is pinned to (default 1)")
    parser.add_argument("--memory", action="store_true", help="report idle PSS of each server's worker instead")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "out" / "results.jsonl", help="JSON lines file to append to"
    )
    args = parser.parse_args(argv)
    args.servers = [name.strip() for name in args.servers.split(",")]
    unknown = [name for name in args.servers if name not in STARTERS]
    if len(args.servers) != 2 or unknown:
        parser.error(f"--servers takes two of {', '.join(STARTERS)} joined by a comma, not {','.join(args.servers)!r}")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if args.rounds < 1 or args.duration < 1 or args.warmup < 1:
        parser.error("--rounds, --duration and --warmup must be at least 1 (wrk takes whole seconds)")
    return args


def server_labels(names: list[str]) -> list[str]:
    """Returns display labels; a server compared with itself gets '#2' on its second instance."""
    return [name if names.index(name) == i else f"{name}#2" for i, name in enumerate(names)]


def make_certificate(directory: Path) -> TlsFiles:
    """Creates a self-signed P-256 certificate for localhost and 127.0.0.1 that both servers present."""
    tls = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(tls.key), "-out", str(tls.cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return tls


def write_site(workload: Workload, directory: Path) -> Path:
    """Writes the workload's site files under directory and returns it."""
    for relative, content in workload.site.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return directory


def check_response(server: RunningServer, workload: Workload, transport: Transport, scratch: Path) -> None:
    """Fetches the workload's path once with curl and stops the benchmark if the answer is not the expected one."""
    body = scratch / f"check-{server.label}.body"
    protocol = ["--http2"] if transport.tls else ["--http2-prior-knowledge"]
    headers = [arg for header in workload.request_headers for arg in ("-H", header)]
    done = subprocess.run(
        ["curl", "-sS", "-k", *(protocol if transport.h2 else ["--http1.1"]), *headers, "-o", str(body),
         "-w", "%{http_code} %{http_version}", load.url(transport, server.port, workload.path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    status, _, version = done.stdout.partition(" ")
    expected_version = "2" if transport.h2 else "1.1"
    if done.returncode != 0:
        problem = f"no answer: curl failed ({done.returncode}): {done.stderr.strip()}"
    elif int(status) != workload.expected_status:
        problem = f"status {status}, expected {workload.expected_status}"
    elif version != expected_version:
        problem = f"HTTP version {version}, expected {expected_version}"
    elif workload.expected_body is not None and body.read_bytes() != workload.expected_body:
        problem = f"a body of {body.stat().st_size} bytes that differs from the expected {len(workload.expected_body)}"
    else:
        return
    raise WrongAnswerError(
        f"{server.label} answers {workload.path} over {transport.label} with {problem}; "
        f"the benchmark would compare different work. Server log:\n{server.process.log_tail()}"
    )


@contextmanager
def origin_for(workload: Workload, site: Path, workdir: Path, cpu: int):
    """Yields (workload with ORIGIN filled in, origin server) for a proxying workload, else (workload, None).

    The origin is a keep-alive nginx serving `site`, pinned to the server core like the servers proxying to it,
    and started once for the workload so both servers meet the same origin.
    """
    if not workload.origin:
        yield workload, None
        return
    served = Workload(name=workload.name, title=f"origin of {workload.name}", site=workload.site, path=workload.path)
    origin = nginx.start("origin", served, ORIGIN_TRANSPORT, site, workdir, cpu, None)
    try:
        yield workload.with_origin(f"127.0.0.1:{origin.port}"), origin
    finally:
        origin.process.stop()


def measure_once(
    server: RunningServer, workload: Workload, transport: Transport, settings: load.LoadSettings, seconds: int,
    scratch: Path, round_: int, origin: RunningServer | None = None,
) -> Measurement:
    """Loads one server for one measured run while metering its CPU (and its origin's, when it proxies)."""
    server_meter, core_meter = CpuMeter(server.process.pid), CoreMeter((server.process.cpu, settings.cpu))
    origin_meter = CpuMeter(origin.process.pid) if origin is not None else None
    server_meter.start()
    if origin_meter is not None:
        origin_meter.start()
    core_meter.start()
    run = load.run(workload, transport, server.port, seconds, settings, scratch)
    cores_busy = core_meter.stop()
    server_cpu = server_meter.stop()
    origin_cpu = origin_meter.stop() if origin_meter is not None else 0.0
    return Measurement(
        server=server.label,
        round=round_,
        requests_per_s=run.result.requests_per_s,
        p99_ms=run.result.p99_ms,
        server_cpu=server_cpu,
        client_cpu=run.client_cpu,
        other_cpu=max(0.0, cores_busy - server_cpu - run.client_cpu - origin_cpu),
        failures=run.result.failures,
        origin_cpu=origin_cpu,
    )


def benchmark_workload(
    workload: Workload, args: argparse.Namespace, tmp: Path, tls: TlsFiles | None
) -> tuple[Transport, list[Measurement]]:
    """Starts both servers for one workload, checks their answers, warms them up and measures them in rounds."""
    transport = workload.transport(args.tls, args.h2)
    site = write_site(workload, tmp / f"site-{workload.name}")
    scratch = tmp / f"client-{workload.name}"
    scratch.mkdir()
    servers: list[RunningServer] = []
    with origin_for(workload, site, tmp / f"origin-{workload.name}", args.server_cpu) as (workload, origin):
        try:
            for name, label in zip(args.servers, server_labels(args.servers)):
                workdir = tmp / f"{label.replace('#', '-')}-{workload.name}"
                servers.append(STARTERS[name](label, workload, transport, site, workdir, args.server_cpu, tls))
            for server in servers:
                check_response(server, workload, transport, scratch)
            settings = load.LoadSettings(cpu=args.client_cpu, connections=args.connections, streams=args.streams)
            for server in servers:
                load.run(workload, transport, server.port, args.warmup, settings, scratch)
            measurements = []
            for round_ in range(1, args.rounds + 1):
                for attempt in range(args.retries + 1):
                    # Alternating the order keeps either server from always running on a warmer or cooler machine.
                    order = servers if round_ % 2 == 1 else servers[::-1]
                    pair = [measure_once(s, workload, transport, settings, args.duration, scratch, round_, origin)
                            for s in order]  # fmt: skip
                    disturbed = max(m.other_cpu for m in pair) >= DISTURBED
                    note = ""
                    if disturbed:
                        note = "; disturbed by other work, " + ("run again" if attempt < args.retries else "kept")
                    figures = ", ".join(f"{m.server} {m.requests_per_s:,.0f} req/s" for m in pair)
                    print(f"  {workload.name} round {round_}/{args.rounds}: {figures}{note}", file=sys.stderr)
                    if not disturbed or attempt == args.retries:
                        break
                measurements += pair
            return transport, measurements
        finally:
            for server in servers:
                server.process.stop()


def summarize(labels: list[str], measurements: list[Measurement]) -> dict:
    """Returns per-server medians and the first/second ratios (median of per-round ratios)."""
    by_server = {label: [m for m in measurements if m.server == label] for label in labels}
    figures = ("requests_per_s", "p99_ms", "server_cpu", "client_cpu", "other_cpu", "origin_cpu", "requests_per_core_s")
    servers = {
        label: {figure: statistics.median(getattr(m, figure) for m in runs) for figure in figures}
        | {"failures": sum(m.failures for m in runs)}
        for label, runs in by_server.items()
    }
    first, second = (by_server[label] for label in labels)
    ratios = {
        figure: statistics.median(
            getattr(a, figure) / getattr(b, figure) for a, b in zip(first, second) if getattr(b, figure) > 0
        )
        for figure in ("requests_per_s", "p99_ms", "requests_per_core_s")
    }
    return {"servers": servers, "ratios": ratios}


def limit_of(figures: dict) -> str:
    """Names what limited a run: other work on the cores, the client's core, the server's, or neither."""
    if figures["other_cpu"] >= DISTURBED:
        return "disturbed"
    if figures["client_cpu"] >= SATURATED:
        return "client"
    if figures["server_cpu"] >= SATURATED:
        return "server"
    return "neither"


def print_table(rows: list[tuple[Workload, Transport, dict]], labels: list[str], rounds: int) -> None:
    """Prints each workload's per-server medians and the ratio line under them."""
    names = [f"({workload.name}) {workload.title}" for workload, _, _ in rows]
    width = max(len("workload"), *map(len, names))
    header = f"{'workload':<{width}} {'transport':<10} {'server':<11} {'req/s':>10} {'p99 ms':>8} " \
             f"{'srv CPU':>8} {'cli CPU':>8} {'other':>6} {'req/core-s':>11}  limit"  # fmt: skip
    print(f"\nmedians of {rounds} round(s); ratio = {labels[0]} / {labels[1]}, median of per-round ratios")
    print(header)
    print("-" * len(header))
    for name, (workload, transport, summary) in zip(names, rows):
        for i, label in enumerate(labels):
            f = summary["servers"][label]
            failures = f"  {f['failures']} FAILED" if f["failures"] else ""
            print(f"{name if i == 0 else '':<{width}} {transport.label if i == 0 else '':<10} {label:<11} "
                  f"{f['requests_per_s']:>10,.0f} {f['p99_ms']:>8.2f} {f['server_cpu']:>8.0%} {f['client_cpu']:>8.0%} "
                  f"{f['other_cpu']:>6.0%} {f['requests_per_core_s']:>11,.0f}  {limit_of(f)}{failures}")  # fmt: skip
        r = summary["ratios"]
        print(f"{'':<{width}} {'':<10} {'ratio':<11} {r['requests_per_s']:>9.2f}x {r['p99_ms']:>7.2f}x "
              f"{'':>8} {'':>8} {'':>6} {r['requests_per_core_s']:>10.2f}x")  # fmt: skip


def memory_report(args: argparse.Namespace, tmp: Path, tls: TlsFiles | None) -> list[dict]:
    """Starts each server on the first selected workload and reads the PSS of its worker while idle."""
    workload = select(args.workloads)[0]
    transport = workload.transport(args.tls, args.h2)
    site = write_site(workload, tmp / "site-memory")
    records = []
    with origin_for(workload, site, tmp / "origin-memory", args.server_cpu) as (workload, _):
        for name, label in zip(args.servers, server_labels(args.servers)):
            workdir = tmp / f"{label.replace('#', '-')}-memory"
            server = STARTERS[name](label, workload, transport, site, workdir, args.server_cpu, tls)
            try:
                time.sleep(IDLE_SETTLE_S)
                tree = process_tree(server.process.pid)
                records.append({
                    "kind": "memory", "server": label, "workload": workload.name, "transport": transport.label,
                    "worker_pss_kib": pss_kib(server.worker_pid()),
                    "total_pss_kib": sum(pss_kib(pid) for pid in tree),
                    "processes": len(tree),
                })  # fmt: skip
            finally:
                server.process.stop()
    print(f"\nidle memory after startup, before any request ({transport.label}, site of workload {workload.name})")
    print(f"{'server':<11} {'worker PSS':>11} {'all processes PSS':>18} {'processes':>10}")
    for r in records:
        print(f"{r['server']:<11} {r['worker_pss_kib'] / 1024:>8.1f} MiB {r['total_pss_kib'] / 1024:>15.1f} MiB "
              f"{r['processes']:>10}")  # fmt: skip
    return records


def run_context() -> dict:
    """Returns what identifies this run in the JSON lines: time, commit, machine."""
    commit = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"run_id": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), "commit": commit or None,
            "host": platform.node(), "kernel": platform.release()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workloads = select(args.workloads)
    labels = server_labels(args.servers)
    context = run_context()
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="zeroserve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx's worker runs as nobody when the harness runs as root
        needs_tls = any(w.transport(args.tls, args.h2).tls for w in workloads)
        tls = make_certificate(tmp) if needs_tls else None
        try:
            if args.memory:
                records = memory_report(args, tmp, tls)
            else:
                rows = []
                for workload in workloads:
                    transport, measurements = benchmark_workload(workload, args, tmp, tls)
                    summary = summarize(labels, measurements)
                    rows.append((workload, transport, summary))
                    common = {"workload": workload.name, "title": workload.title, "transport": transport.label}
                    records += [{"kind": "run", **common, **vars(m), "requests_per_core_s": m.requests_per_core_s}
                                for m in measurements]  # fmt: skip
                    records.append({"kind": "summary", **common, "rounds": args.rounds, "duration_s": args.duration,
                                    "connections": args.connections, **summary})  # fmt: skip
                print_table(rows, labels, args.rounds)
        except (ServerStartError, WrongAnswerError, MeasureError) as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        finally:
            if records:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as out:
                    for record in records:
                        out.write(json.dumps(context | record) + "\n")
    print(f"\n{len(records)} JSON line(s) appended to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

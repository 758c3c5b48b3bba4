"""The benchmark command: loads zeroserve and its rivals with the same workloads, interleaved in rounds, and reports.

    .venv/bin/python bench/run.py [--rounds N] [--duration S] [--workloads a,b] [--tls] [--h2] [--out FILE]
    .venv/bin/python bench/run.py --servers zeroserve,nginx,caddy,granian
    .venv/bin/python bench/run.py --servers nginx,nginx      # self-check: the ratio should be close to 1.0
    .venv/bin/python bench/run.py --memory                   # idle PSS of a worker, and PSS per idle connection
    .venv/bin/python bench/run.py --workers 2 --server-cpus 0,1 --client-cpus 0,1 --connections 32
    .venv/bin/python bench/run.py --results                  # all of it, into bench/RESULTS.md and results.png

Each server is pinned to its core(s) and the client to its own. Rounds alternate the order of the servers,
and ratios to nginx are taken per round (between runs seconds apart) before the median, so the machine's
drift cancels. The table goes to stdout; one JSON line per run, summary and memory reading is appended to --out.
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

import caddy
import granian
import load
import nginx
import report
import zeroserve_server
from measure import DISTURBED, CoreMeter, CpuMeter, MeasureError, limit_of, memory_kib, pss_kib
from process import Placement, RunningServer, ServerStartError, TlsFiles, process_tree
from workloads import Transport, Workload, select

BENCH_DIR = Path(__file__).resolve().parent
STARTERS = {"zeroserve": zeroserve_server.start, "nginx": nginx.start, "caddy": caddy.start, "granian": granian.start}
BASELINE = "nginx"  # every ratio is a server's figure over this one's (over the first server's without it)
IDLE_SETTLE_S = 1.0  # time a server gets after it opens its port before its memory is read
ORIGIN_TRANSPORT = Transport(tls=False, client="wrk")  # how the servers reach a proxying workload's origin
# What --results runs: every server on the HTTPS/1.1 workloads a-f and on (a) over h2; then one and two
# workers of zeroserve and nginx sharing both cores with a client of fewer connections; then memory.
RESULTS_WORKLOADS = "a,b,c,d,e,f"
RESULTS_SERVERS = "zeroserve,nginx,caddy,granian"
SCALE_SERVERS = "zeroserve,nginx"
SCALE_CONNECTIONS = 32
RATIO_FIGURES = ("requests_per_s", "p99_ms", "requests_per_core_s")


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
    other_cpu: float  # share of the measured cores used by anything else (other processes, steal)
    failures: int
    origin_cpu: float = 0.0  # the proxied-to origin nginx's share of the server core (0 without an origin)

    @property
    def requests_per_core_s(self) -> float:
        """Requests served per second of server CPU: the figure to judge by when the client is the limit."""
        return self.requests_per_s / self.server_cpu if self.server_cpu > 0 else 0.0


def _cpus(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(cpu) for cpu in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of CPU numbers") from None


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
        "--servers", default="zeroserve,nginx", help=f"servers to compare, two or more of {', '.join(STARTERS)} "
        "(default zeroserve,nginx; nginx,nginx is the self-check)",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=2, help="times a round is run again when other work disturbed it (default 2)"
    )
    parser.add_argument("--connections", type=int, default=50, help="client connections (default 50)")
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per HTTP/2 connection (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (threads) per server (default 1)")
    parser.add_argument("--server-cpus", type=_cpus, default=(0,), help="cores the servers are pinned to (default 0)")
    parser.add_argument("--client-cpus", type=_cpus, default=(1,), help="cores the client is pinned to (default 1)")
    parser.add_argument(
        "--memory", action="store_true", help="report idle PSS of each server's worker and PSS per idle connection"
    )
    parser.add_argument(
        "--idle-connections", type=int, default=1000, help="keep-alive connections --memory opens (default 1000)"
    )
    parser.add_argument(
        "--results", action="store_true",
        help=f"run {RESULTS_SERVERS} over HTTPS/1.1 {RESULTS_WORKLOADS} and h2 (a), workers 1 and 2, memory; "
        "write RESULTS.md and results.png into --results-dir",
    )  # fmt: skip
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR, help="where --results writes (default bench/)")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "out" / "results.jsonl", help="JSON lines file to append to"
    )
    args = parser.parse_args(argv)
    if args.results:
        args.servers, args.workloads = RESULTS_SERVERS, args.workloads or RESULTS_WORKLOADS
    args.servers = [name.strip() for name in args.servers.split(",")]
    unknown = [name for name in args.servers if name not in STARTERS]
    if len(args.servers) < 2 or unknown:
        parser.error(f"--servers takes two or more of {', '.join(STARTERS)} joined by commas, "
                     f"not {','.join(args.servers)!r}")  # fmt: skip
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if min(args.rounds, args.duration, args.warmup, args.workers, args.idle_connections) < 1:
        parser.error("--rounds, --duration, --warmup, --workers and --idle-connections must be at least 1")
    return args


def server_labels(names: list[str]) -> list[str]:
    """Returns display labels; a server named again gets '#2' (then '#3') on its later instances."""
    return [name if names.index(name) == i else f"{name}#{names[: i + 1].count(name)}" for i, name in enumerate(names)]


def baseline_of(labels: list[str]) -> str:
    """Returns the label every ratio divides by: nginx when it runs, else the first server."""
    return BASELINE if BASELINE in labels else labels[0]


def make_certificate(directory: Path) -> TlsFiles:
    """Creates a self-signed P-256 certificate for localhost and 127.0.0.1 that every server presents."""
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
    """Fetches the workload's path twice on one connection with curl; stops the benchmark unless both answers are
    the expected one (the load generator's requests after the first on a connection may take another path)."""
    bodies = [scratch / f"check-{server.label}-{i}.body" for i in (1, 2)]
    protocol = ["--http2"] if transport.tls else ["--http2-prior-knowledge"]
    headers = [arg for header in workload.request_headers for arg in ("-H", header)]
    url = load.url(transport, server.port, workload.path)
    done = subprocess.run(
        ["curl", "-sS", "-k", *(protocol if transport.h2 else ["--http1.1"]), *headers,
         "-w", "%{http_code} %{http_version}\n", url, "-o", str(bodies[0]), url, "-o", str(bodies[1])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    expected_version = "2" if transport.h2 else "1.1"
    problem = f"no answer: curl failed ({done.returncode}): {done.stderr.strip()}" if done.returncode != 0 else None
    for ordinal, line, body in zip(("first", "second"), done.stdout.splitlines(), bodies):
        status, _, version = line.partition(" ")
        if problem:
            break
        if int(status) != workload.expected_status:
            problem = f"status {status}, expected {workload.expected_status}"
        elif version != expected_version:
            problem = f"HTTP version {version}, expected {expected_version}"
        elif workload.expected_body is not None and body.read_bytes() != workload.expected_body:
            problem = (f"a body of {body.stat().st_size} bytes that differs from the expected "
                       f"{len(workload.expected_body)}")
        if problem:
            problem += f" to the {ordinal} request"
    if problem is None:
        return
    raise WrongAnswerError(
        f"{server.label} answers {workload.path} over {transport.label} with {problem}; "
        f"the benchmark would compare different work. Server log:\n{server.process.log_tail()}"
    )


@contextmanager
def origin_for(workload: Workload, site: Path, workdir: Path, cpus: tuple[int, ...]):
    """Yields (workload with ORIGIN filled in, origin server) for a proxying workload, else (workload, None).

    The origin is a keep-alive nginx serving `site`, pinned to the server core(s) like the servers proxying
    to it, and started once for the workload so every server meets the same origin.
    """
    if not workload.origin:
        yield workload, None
        return
    served = Workload(name=workload.name, title=f"origin of {workload.name}", site=workload.site, path=workload.path)
    origin = nginx.start("origin", served, ORIGIN_TRANSPORT, site, workdir, Placement(cpus), None)
    try:
        yield workload.with_origin(f"127.0.0.1:{origin.port}"), origin
    finally:
        origin.process.stop()


def served_site(workload: Workload, site: Path, base: Path) -> Path:
    """Returns the directory the servers under test serve: `site`, or for a proxying workload an empty one, so that
    only the origin has the files and a request that does not reach it is answered 404 and counted as failed."""
    if not workload.origin:
        return site
    empty = base / "proxy-site"
    empty.mkdir()
    return empty


def measure_once(
    server: RunningServer, workload: Workload, transport: Transport, settings: load.LoadSettings, seconds: int,
    scratch: Path, round_: int, origin: RunningServer | None = None,
) -> Measurement:
    """Loads one server for one measured run while metering its CPU (and its origin's, when it proxies)."""
    server_meter = CpuMeter(server.process.pid)
    core_meter = CoreMeter(tuple(sorted({*server.process.cpus, *settings.cpus})))
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
) -> tuple[Transport, list[str], list[Measurement], dict[str, str]]:
    """Starts the servers that can do one workload, checks their answers, warms them up and measures them in rounds.

    Returns the transport, the labels of the servers that ran, their measurements, and why each server left
    out failed to start or answered wrongly (with --results; otherwise such a server stops the benchmark).
    """
    transport = workload.transport(args.tls, args.h2)
    # A directory of its own per benchmark: --results runs the same workload more than once.
    base = Path(tempfile.mkdtemp(prefix=f"{workload.name}-{transport.label.replace('/', '')}-", dir=tmp))
    base.chmod(0o755)  # nginx's worker runs as nobody
    site = write_site(workload, base / "site")
    served = served_site(workload, site, base)
    scratch = base / "client"
    scratch.mkdir()
    placement = Placement(args.server_cpus, args.workers)
    chosen = [(name, label) for name, label in zip(args.servers, server_labels(args.servers))
              if name not in workload.unsupported]  # fmt: skip
    servers: list[RunningServer] = []
    refused: dict[str, str] = {}
    with origin_for(workload, site, base / "origin", args.server_cpus) as (workload, origin):
        try:
            for name, label in chosen:
                workdir = base / label.replace("#", "-")
                try:
                    server = STARTERS[name](label, workload, transport, served, workdir, placement, tls)
                    servers.append(server)
                    check_response(server, workload, transport, scratch)
                except (ServerStartError, WrongAnswerError) as error:
                    if not args.results:
                        raise
                    # On the results page one server's wrong answer must not cost the others their figures.
                    print(f"bench: ({workload.name}) {label} left out: {error}", file=sys.stderr)
                    refused[label] = str(error)
                    if servers and servers[-1].label == label:
                        servers.pop().process.stop()
            if not servers:
                return transport, [], [], refused
            settings = load.LoadSettings(cpus=args.client_cpus, connections=args.connections, streams=args.streams)
            for server in servers:
                load.run(workload, transport, server.port, args.warmup, settings, scratch)
            measurements = []
            for round_ in range(1, args.rounds + 1):
                for attempt in range(args.retries + 1):
                    # Alternating the order keeps any server from always running on a warmer or cooler machine.
                    order = servers if round_ % 2 == 1 else servers[::-1]
                    runs = [measure_once(s, workload, transport, settings, args.duration, scratch, round_, origin)
                            for s in order]  # fmt: skip
                    disturbed = max(m.other_cpu for m in runs) >= DISTURBED
                    note = ""
                    if disturbed:
                        note = "; disturbed by other work, " + ("run again" if attempt < args.retries else "kept")
                    figures = ", ".join(f"{m.server} {m.requests_per_s:,.0f} req/s" for m in runs)
                    print(f"  {workload.name} round {round_}/{args.rounds}: {figures}{note}", file=sys.stderr)
                    if not disturbed or attempt == args.retries:
                        break
                measurements += runs
            return transport, [s.label for s in servers], measurements, refused
        finally:
            for server in servers:
                server.process.stop()


def summarize(labels: list[str], measurements: list[Measurement]) -> dict:
    """Returns per-server medians and each server's ratios to the baseline (medians of per-round ratios)."""
    by_server = {label: [m for m in measurements if m.server == label] for label in labels}
    figures = ("requests_per_s", "p99_ms", "server_cpu", "client_cpu", "other_cpu", "origin_cpu", "requests_per_core_s")
    servers = {
        label: {figure: statistics.median(getattr(m, figure) for m in runs) for figure in figures}
        | {"failures": sum(m.failures for m in runs)}
        for label, runs in by_server.items()
    }
    if not labels:
        return {"servers": {}, "baseline": None, "ratios": {}}
    baseline = baseline_of(labels)
    ratios = {}
    for label in labels:
        if label == baseline:
            continue
        pairs = list(zip(by_server[label], by_server[baseline]))
        ratios[label] = {
            figure: statistics.median(
                getattr(a, figure) / getattr(b, figure) for a, b in pairs if getattr(b, figure) > 0
            )
            for figure in RATIO_FIGURES
        }
    return {"servers": servers, "baseline": baseline, "ratios": ratios}


def print_table(rows: list[tuple[Workload, Transport, list[str], dict]], rounds: int, server_cores: int) -> None:
    """Prints each workload's per-server medians, with each server's ratios to the baseline on its row."""
    names = [f"({workload.name}) {workload.title}" for workload, _, _, _ in rows]
    width = max(len("workload"), *map(len, names))
    header = f"{'workload':<{width}} {'transport':<10} {'server':<11} {'req/s':>10} {'p99 ms':>8} " \
             f"{'srv CPU':>8} {'cli CPU':>8} {'other':>6} {'req/core-s':>11} {'limit':<9}" \
             f" {'req/s x':>8} {'p99 x':>6} {'core-s x':>8}"  # fmt: skip
    baselines = sorted({summary["baseline"] for _, _, _, summary in rows if summary["baseline"]})
    print(f"\nmedians of {rounds} round(s); ratio = server / {' or '.join(baselines)}, median of per-round ratios")
    print(header)
    print("-" * len(header))
    for name, (workload, transport, labels, summary) in zip(names, rows):
        for i, label in enumerate(labels):
            f = summary["servers"][label]
            r = summary["ratios"].get(label)
            ratios = (f" {r['requests_per_s']:>7.2f}x {r['p99_ms']:>5.2f}x {r['requests_per_core_s']:>7.2f}x"
                      if r else f" {'':>8} {'':>6} {'':>8}")  # fmt: skip
            failures = f"  {f['failures']} FAILED" if f["failures"] else ""
            print(f"{name if i == 0 else '':<{width}} {transport.label if i == 0 else '':<10} {label:<11} "
                  f"{f['requests_per_s']:>10,.0f} {f['p99_ms']:>8.2f} {f['server_cpu']:>8.0%} {f['client_cpu']:>8.0%} "
                  f"{f['other_cpu']:>6.0%} {f['requests_per_core_s']:>11,.0f} {limit_of(f, server_cores):<9}"
                  f"{ratios}{failures}")  # fmt: skip
        skipped = [name for name in workload.unsupported if name in STARTERS]
        if skipped:
            print(f"{'':<{width}} {'':<10} not run: {', '.join(skipped)} (cannot do this workload without add-ons)")


def benchmark(args: argparse.Namespace, tmp: Path, tls: TlsFiles | None, records: list[dict], kind: str = "") -> None:
    """Benchmarks every selected workload, appends its JSON records (kinds prefixed by `kind`), prints the table."""
    rows = []
    for workload in select(args.workloads):
        transport, labels, measurements, refused = benchmark_workload(workload, args, tmp, tls)
        summary = summarize(labels, measurements)
        rows.append((workload, transport, labels, summary))
        common = {"workload": workload.name, "title": workload.title, "transport": transport.label,
                  "workers": args.workers, "server_cpus": list(args.server_cpus),
                  "client_cpus": list(args.client_cpus), "connections": args.connections}  # fmt: skip
        records += [{"kind": f"{kind}run", **common, **vars(m), "requests_per_core_s": m.requests_per_core_s}
                    for m in measurements]  # fmt: skip
        records.append({"kind": f"{kind}summary", **common, "rounds": args.rounds, "duration_s": args.duration,
                        **summary,
                        "not_run": [name for name in workload.unsupported if name in args.servers],
                        "refused": refused})  # fmt: skip
    print_table(rows, args.rounds, len(args.server_cpus))


def memory_report(args: argparse.Namespace, tmp: Path, tls: TlsFiles | None, records: list[dict]) -> None:
    """Reads each server's worker PSS while idle, then again holding --idle-connections keep-alive connections."""
    workload = select(args.workloads)[0]
    transport = workload.transport(args.tls, args.h2)
    base = Path(tempfile.mkdtemp(prefix=f"memory-{transport.label.replace('/', '')}-", dir=tmp))
    base.chmod(0o755)
    site = write_site(workload, base / "site")
    served = served_site(workload, site, base)
    first = len(records)
    with origin_for(workload, site, base / "origin", args.server_cpus) as (workload, _):
        for name, label in zip(args.servers, server_labels(args.servers)):
            if name in workload.unsupported:
                continue
            workdir = base / label.replace("#", "-")
            server = STARTERS[name](label, workload, transport, served, workdir, Placement(args.server_cpus), tls)
            try:
                time.sleep(IDLE_SETTLE_S)
                worker = server.worker_pid()
                tree = process_tree(server.process.pid)
                idle = memory_kib(worker)
                record = {"kind": "memory", "server": label, "workload": workload.name, "transport": transport.label,
                          "worker_pss_kib": idle["pss"], "worker_rss_kib": idle["rss"], "worker_uss_kib": idle["uss"],
                          "total_pss_kib": sum(pss_kib(pid) for pid in tree), "processes": len(tree)}  # fmt: skip
                with load.idle_connections(transport, server.port, workload.path, args.idle_connections):
                    time.sleep(IDLE_SETTLE_S)
                    held = pss_kib(worker)
                record |= {"idle_connections": args.idle_connections, "connections_pss_kib": held,
                           "pss_per_connection_kib": (held - idle["pss"]) / args.idle_connections}  # fmt: skip
                records.append(record)
            finally:
                server.process.stop()
    print(f"\nmemory of one worker ({transport.label}, site of workload {workload.name}): idle after startup, "
          f"then holding {args.idle_connections} idle keep-alive connections that each made one request")
    print(f"{'server':<11} {'worker PSS':>11} {'RSS':>10} {'USS':>10} {'all processes PSS':>18} {'processes':>10} "
          f"{'per connection':>15}")  # fmt: skip
    for r in records[first:]:
        print(f"{r['server']:<11} {r['worker_pss_kib'] / 1024:>7.1f} MiB {r['worker_rss_kib'] / 1024:>6.1f} MiB "
              f"{r['worker_uss_kib'] / 1024:>6.1f} MiB {r['total_pss_kib'] / 1024:>14.1f} MiB {r['processes']:>10} "
              f"{r['pss_per_connection_kib']:>11.1f} KiB")  # fmt: skip


def results(args: argparse.Namespace, tmp: Path, tls: TlsFiles, context: dict, records: list[dict]) -> None:
    """Runs everything RESULTS.md shows, appends the JSON records, and writes RESULTS.md with its chart."""
    def variant(**changes) -> argparse.Namespace:
        return argparse.Namespace(**(vars(args) | changes))

    started = time.monotonic()
    benchmark(variant(tls=True, h2=False), tmp, tls, records)
    benchmark(variant(tls=True, h2=True, workloads="a"), tmp, tls, records)
    for workers in (1, 2):
        # Both cores for everyone: the servers' workers and the one-threaded client share them.
        both = (*args.server_cpus, *args.client_cpus)
        benchmark(variant(tls=True, h2=False, workloads="a", servers=SCALE_SERVERS.split(","), workers=workers,
                          server_cpus=both, client_cpus=both, connections=SCALE_CONNECTIONS),
                  tmp, tls, records, kind="scale-")  # fmt: skip
    for transport_tls in (False, True):
        memory_report(variant(tls=transport_tls, h2=False, workloads="a"), tmp, tls, records)
    report.write_results(
        args.results_dir / "RESULTS.md", args.results_dir / "results.png", records, context | {
            "minutes": (time.monotonic() - started) / 60, "rounds": args.rounds, "duration_s": args.duration,
            "connections": args.connections, "streams": args.streams, "scale_connections": SCALE_CONNECTIONS,
            "retries": args.retries,
        },
    )  # fmt: skip
    print(f"\nwrote RESULTS.md and results.png into {args.results_dir}", file=sys.stderr)


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
    context = run_context()
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="zeroserve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx's worker runs as nobody when the harness runs as root
        needs_tls = args.results or any(w.transport(args.tls, args.h2).tls for w in workloads)
        tls = make_certificate(tmp) if needs_tls else None
        try:
            if args.results:
                results(args, tmp, tls, context, records)
            elif args.memory:
                memory_report(args, tmp, tls, records)
            else:
                benchmark(args, tmp, tls, records)
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

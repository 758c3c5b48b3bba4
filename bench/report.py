"""Writes bench/RESULTS.md and its chart, bench/results.png, from the JSON records of one `run.py --results`."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

from measure import DISTURBED, limit_of

# The goals of issue 12, as ratios to nginx in requests per server-core-second (h2 is the (a) file over h2).
GOALS = {("a", "https/1.1"): 1.5, ("b", "https/1.1"): 1.5, ("c", "https/1.1"): 1.5, ("d", "https/1.1"): 1.0,
         ("e", "https/1.1"): 1.0, ("a", "h2"): 0.5}  # fmt: skip
IDLE_PSS_GOAL_MIB = 20.0
SERVER_ORDER = ["zeroserve", "nginx", "caddy", "granian"]


def _first_line(argv: list[str]) -> str:
    """Returns the first line a version command prints (on stdout or stderr), or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError as error:
        return f"not available ({error.strerror})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def versions() -> dict[str, str]:
    """Returns the versions of everything a result depends on."""
    venv_bin = Path(sys.executable).parent
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {
        "zeroserve": _first_line([str(venv_bin / "zeroserve"), "--version"]),
        "nginx": _first_line(["nginx", "-v"]),
        "Caddy": _first_line(["caddy", "version"]),
        "Granian": _first_line([str(venv_bin / "granian"), "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "h2load": _first_line(["h2load", "--version"]),
        "Python": platform.python_version(),
        "kernel": platform.release(),
        "CPU": f"{cpu[1] if cpu else 'unknown'}, {len(_online_cpus())} core(s)",
    }


def _online_cpus() -> list[str]:
    return [line for line in Path("/proc/stat").read_text().splitlines() if re.match(r"cpu\d", line)]


def _summary_table(summary: dict, server_cores: int = 1) -> list[str]:
    """Returns markdown rows for one workload's servers with their ratios to the baseline."""
    baseline = summary["baseline"]
    lines = [
        f"| server | req/s | p99 ms | req/core-s | req/core-s vs {baseline} | req/s vs {baseline} | p99 vs {baseline} "
        "| server CPU | client CPU | other | limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, f in summary["servers"].items():
        r = summary["ratios"].get(label)
        ratio = (f"**{r['requests_per_core_s']:.2f}x** | {r['requests_per_s']:.2f}x | {r['p99_ms']:.2f}x"
                 if r else "1.00x | 1.00x | 1.00x")  # fmt: skip
        failures = f" ({f['failures']} failed)" if f["failures"] else ""
        lines.append(
            f"| {label}{failures} | {f['requests_per_s']:,.0f} | {f['p99_ms']:.2f} | {f['requests_per_core_s']:,.0f} "
            f"| {ratio} | {f['server_cpu']:.0%} | {f['client_cpu']:.0%} | {f['other_cpu']:.0%} "
            f"| {limit_of(f, server_cores)} |"
        )
    return lines


def _goal_lines(summaries: list[dict], memory: list[dict]) -> list[str]:
    """Returns the issue-12 goals, each with the figure measured and whether it is met."""
    lines = ["| goal | measured | met |", "| --- | ---: | --- |"]
    for s in summaries:
        goal = GOALS.get((s["workload"], s["transport"]))
        ratio = s["ratios"].get("zeroserve", {}).get("requests_per_core_s")
        if goal is not None and ratio is not None:
            lines.append(f"| ({s['workload']}) over {s['transport']}: req/core-s ≥ {goal:.1f}x nginx "
                         f"| {ratio:.2f}x | {'yes' if ratio >= goal else 'no'} |")  # fmt: skip
    for m in memory:
        if m["server"] == "zeroserve":
            mib = m["worker_pss_kib"] / 1024
            lines.append(f"| idle PSS of one worker ({m['transport']}) ≤ {IDLE_PSS_GOAL_MIB:.0f} MiB "
                         f"| {mib:.1f} MiB | {'yes' if mib <= IDLE_PSS_GOAL_MIB else 'no'} |")  # fmt: skip
    return lines


def _chart(summaries: list[dict], png: Path) -> None:
    """Draws req/s, req/core-s and p99 per server per workload as grouped bars."""
    # Imported here so that the benchmark itself runs without matplotlib (the `bench` extra).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [f"({s['workload']}) {s['transport']}" for s in summaries]
    # The same order (and so the same colour) for each server in every group, whoever ran first.
    ranks = {label: rank for rank, label in enumerate(SERVER_ORDER)}
    servers = sorted({label for s in summaries for label in s["servers"]}, key=lambda l: (ranks.get(l, len(ranks)), l))
    figure, axes = plt.subplots(3, 1, figsize=(12, 11), sharex=True)
    width = 0.8 / len(servers)
    for i, label in enumerate(servers):
        positions = [g + (i - (len(servers) - 1) / 2) * width for g in range(len(groups))]
        for axis, key in zip(axes, ("requests_per_s", "requests_per_core_s", "p99_ms")):
            values = [s["servers"].get(label, {}).get(key, 0.0) for s in summaries]
            axis.bar(positions, values, width, label=label)
    axes[0].set_ylabel("requests/s (median)")
    axes[1].set_ylabel("requests per server-core-second")
    axes[2].set_ylabel("p99 latency, ms (median)")
    axes[0].set_title("zeroserve, nginx, Caddy, Granian: one server core, wrk/h2load on the other (0 = not run)")
    axes[0].legend()
    axes[2].set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    for axis in axes:
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def write_results(markdown: Path, png: Path, records: list[dict], context: dict) -> None:
    """Writes the results page and its chart from one --results run's records and context."""
    summaries = [r for r in records if r["kind"] == "summary"]
    scale = [r for r in records if r["kind"] == "scale-summary"]
    memory = [r for r in records if r["kind"] == "memory"]
    runs = [r for r in records if r["kind"] in ("run", "scale-run")]
    disturbed = [r for r in runs if r["other_cpu"] >= DISTURBED]
    markdown.parent.mkdir(parents=True, exist_ok=True)
    _chart(summaries, png)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `.venv/bin/python bench/run.py --results` on {context['run_id']} (commit {context['commit']}), "
        f"in {context['minutes']:.0f} minutes. How the harness measures and how to read the columns: "
        "[README.md](README.md). Where the time goes inside zeroserve: [PROFILE.md](PROFILE.md).",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {version} |" for name, version in versions().items()),
        f"| host | {context['host']} |",
        "",
        f"Each server ran on core 0 (one worker; Caddy with GOMAXPROCS=1), the client on core 1: "
        f"`wrk -t1 -c{context['connections']}` over HTTPS/1.1 (TLS 1.3, keep-alive), "
        f"`h2load -t1 -c{context['connections']} -m{context['streams']}` over h2. Medians of {context['rounds']} "
        f"interleaved rounds of {context['duration_s']} s; ratios are medians of per-round ratios to nginx. "
        "**Judge by req/core-s** (requests per second of server CPU) when `limit` says `client`: the load "
        "generator's core was then saturated and req/s is only a floor.",
        "",
        f"**Disturbance.** This machine is shared (other engineers' builds and tests, a fuzzing campaign). "
        f"{len(disturbed)} of {len(runs)} measured runs had 10% or more of the measured cores taken by other "
        f"work (`other` column; a disturbed round is run again up to {context['retries']} time(s) and the last "
        "attempt is kept). "
        "req/s of disturbed runs is not comparable; req/core-s still roughly is.",
        "",
        "![req/s and p99 per server and workload](results.png)",
        "",
        "## Goals of issue 12 (zeroserve / nginx, req/core-s)",
        "",
        *_goal_lines(summaries, memory),
    ]
    for s in summaries:
        lines += ["", f"## ({s['workload']}) {s['title']}, {s['transport']}", "", *_summary_table(s)]
        if s.get("not_run"):
            lines += ["", f"Not run: {', '.join(s['not_run'])} (cannot do this workload without add-ons)."]
        for label, error in s.get("refused", {}).items():
            lines += ["", f"**{label} left out**: it did not give the expected answer, so its figures would "
                      "describe other work:", "", "```", *error.splitlines()[:6], "```"]  # fmt: skip
    lines += [
        "",
        "## Workers: 1 and 2",
        "",
        f"Workload (a) over HTTPS/1.1. Server and client both allowed on both cores (`taskset -c 0,1`), so they "
        f"share them: `wrk -t1 -c{context['scale_connections']}` (one client thread, at most one core), zeroserve "
        "`--threads N` (the kernel places its workers), nginx `worker_processes N` with `worker_cpu_affinity` "
        "(one worker: core 0; two: one on each core). With one worker the server can use at most one core and "
        "the client the other; with two, the two workers and the client compete for both, so the gain is "
        "bounded by what the client leaves. The `server CPU` column is out of 200% here.",
        "",
    ]
    for s in scale:
        lines += [f"### {s['workers']} worker(s)", "", *_summary_table(s, server_cores=2), ""]
    by_workers = {s["workers"]: s["servers"] for s in scale}
    if {1, 2} <= set(by_workers):
        lines += ["| server | req/s, 1 worker | req/s, 2 workers | 2 / 1 |", "| --- | ---: | ---: | ---: |"]
        for label, one in by_workers[1].items():
            two = by_workers[2].get(label)
            if two and one["requests_per_s"] > 0:
                lines.append(f"| {label} | {one['requests_per_s']:,.0f} | {two['requests_per_s']:,.0f} "
                             f"| {two['requests_per_s'] / one['requests_per_s']:.2f}x |")  # fmt: skip
        lines.append("")
    lines += [
        "## Memory",
        "",
        "PSS (`/proc/PID/smaps_rollup`) of the worker process (the first child of a server that forks; Caddy's "
        "only process) one second after start-up, before any request; then with N idle keep-alive connections "
        "open, each of which completed a TLS handshake (on HTTPS) and one request: (PSS then − idle PSS) / N.",
        "",
        "RSS counts every page the worker maps, USS only those no other process shares; PSS splits each "
        "shared page among its users (a forked worker shares its supervisor's pages).",
        "",
        "| server | transport | worker PSS idle | RSS | USS | all processes PSS | processes | N "
        "| per idle connection |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {m['server']} | {m['transport']} | {m['worker_pss_kib'] / 1024:.1f} MiB | "
          f"{m['worker_rss_kib'] / 1024:.1f} MiB | {m['worker_uss_kib'] / 1024:.1f} MiB | "
          f"{m['total_pss_kib'] / 1024:.1f} MiB | {m['processes']} | {m['idle_connections']} | "
          f"{m['pss_per_connection_kib']:.1f} KiB |" for m in memory),
        "",
    ]  # fmt: skip
    markdown.write_text("\n".join(lines))

"""The benchmark harness in bench/ runs end to end against real servers and records what it measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def run_bench(
    tmp_path: Path, *flags: str, servers: str = "nginx,nginx", workloads: str = "a", timeout: int = 120,
    idle_connections: int = 20,
) -> tuple[str, list[dict]]:
    """Runs bench/run.py briefly (nginx on both sides unless told) and returns its stdout and its JSON lines."""
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--servers", servers, "--rounds", "1", "--duration", "1",
         "--warmup", "1", "--retries", "0", "--workloads", workloads, "--idle-connections", str(idle_connections),
         "--out", str(out), *flags],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, [json.loads(line) for line in out.read_text().splitlines()]


TRANSPORTS = pytest.mark.parametrize(
    ("flags", "transport"), [((), "http/1.1"), (("--tls", "--h2"), "h2")], ids=["http1-plaintext", "h2-tls"]
)


@TRANSPORTS
def test_bench_self_check_records_runs_and_ratios(tmp_path, flags, transport):
    """nginx against nginx records one error-free run per server with throughput, p99 and CPU shares, and ratios."""
    stdout, records = run_bench(tmp_path, *flags)
    runs = [r for r in records if r["kind"] == "run"]
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert sorted(r["server"] for r in runs) == ["nginx", "nginx#2"]
    for run in runs:
        assert run["transport"] == transport
        assert run["failures"] == 0
        assert run["requests_per_s"] > 0
        assert run["p99_ms"] > 0
        assert 0 < run["server_cpu"] <= 1.2  # pinned to one core; clock-tick rounding may overshoot a little
        assert 0 < run["client_cpu"] <= 1.2
        assert 0 <= run["other_cpu"] <= 2.0  # the rest of the two cores
        assert run["requests_per_core_s"] == pytest.approx(run["requests_per_s"] / run["server_cpu"])
    assert summary["baseline"] == "nginx"
    assert list(summary["ratios"]) == ["nginx#2"]
    assert set(summary["ratios"]["nginx#2"]) == {"requests_per_s", "p99_ms", "requests_per_core_s"}
    assert all(ratio > 0 for ratio in summary["ratios"]["nginx#2"].values())
    assert "ratio = server / nginx" in stdout and transport in stdout


@TRANSPORTS
def test_bench_zeroserve_against_nginx_serves_the_same_content(tmp_path, flags, transport):
    """zeroserve packs and serves the workload's file (checked byte for byte first), so both servers get a run."""
    stdout, records = run_bench(tmp_path, *flags, servers="zeroserve,nginx")
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted(r["server"] for r in runs) == ["nginx", "zeroserve"]
    assert all(r["transport"] == transport for r in runs)
    assert all(r["failures"] == 0 and r["requests_per_s"] > 0 for r in runs)
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert summary["baseline"] == "nginx" and list(summary["ratios"]) == ["zeroserve"]
    assert "ratio = server / nginx" in stdout


@pytest.mark.parametrize("flags", [(), ("--tls",)], ids=["plaintext", "tls"])
def test_bench_memory_reports_idle_worker_pss(tmp_path, flags):
    """--memory reports one idle worker's PSS, RSS and USS, all processes' PSS, and PSS per idle connection."""
    # 200 connections grow zeroserve's worker by about 1.4 MiB: well clear of how far other processes mapping
    # the same libraries (a parallel test suite) move its PSS, which 20 were not.
    stdout, records = run_bench(tmp_path, "--memory", *flags, servers="zeroserve,nginx", idle_connections=200)
    assert [r["server"] for r in records] == ["zeroserve", "nginx"]
    for record in records:
        assert record["kind"] == "memory"
        assert 0 < record["worker_uss_kib"] <= record["worker_pss_kib"] <= record["worker_rss_kib"]
        assert record["worker_pss_kib"] <= record["total_pss_kib"]
        assert record["idle_connections"] == 200
        assert record["pss_per_connection_kib"] == pytest.approx(
            (record["connections_pss_kib"] - record["worker_pss_kib"]) / 200
        )
    # Each connection holds Python objects (and a TLS session): two hundred of them grow zeroserve's worker. (nginx's
    # growth, under 1 KiB each without TLS, is within what other processes sharing its pages move its PSS.)
    (zeroserve,) = [r for r in records if r["server"] == "zeroserve"]
    assert zeroserve["connections_pss_kib"] > zeroserve["worker_pss_kib"]
    (nginx,) = [r for r in records if r["server"] == "nginx"]
    assert nginx["processes"] == 2  # master and its one worker
    assert nginx["worker_pss_kib"] < nginx["total_pss_kib"]
    assert "worker PSS" in stdout and "per connection" in stdout


@pytest.mark.parametrize("workloads", ["a,d", "c"])
def test_bench_caddy_and_granian_serve_every_workload_they_can(tmp_path, workloads):
    """Caddy and Granian pass the byte-for-byte check and are measured with their ratios to nginx."""
    stdout, records = run_bench(tmp_path, "--tls", servers="caddy,granian,nginx", workloads=workloads)
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted({(r["workload"], r["server"]) for r in runs}) == sorted(
        (w, s) for w in workloads.split(",") for s in ("caddy", "granian", "nginx")
    )
    assert all(r["failures"] == 0 and r["requests_per_s"] > 0 for r in runs)
    for summary in (r for r in records if r["kind"] == "summary"):
        assert summary["baseline"] == "nginx"
        assert set(summary["ratios"]) == {"caddy", "granian"}
    assert "caddy" in stdout and "granian" in stdout


def test_bench_skips_servers_that_cannot_do_a_workload(tmp_path):
    """A workload a server cannot do (rate limiting, for Caddy) runs without it and says so."""
    stdout, records = run_bench(tmp_path, servers="caddy,nginx", workloads="ratelimit")
    assert sorted(r["server"] for r in records if r["kind"] == "run") == ["nginx"]
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert summary["not_run"] == ["caddy"] and summary["ratios"] == {}
    assert "not run: caddy" in stdout


def test_bench_results_writes_the_page_and_chart(tmp_path):
    """--results measures every server, h2, one and two workers and memory, and writes RESULTS.md and its PNG."""
    _, records = run_bench(tmp_path, "--results", "--results-dir", str(tmp_path), timeout=400)
    kinds = {r["kind"] for r in records}
    assert kinds == {"run", "summary", "scale-run", "scale-summary", "memory"}
    summaries = [(r["workload"], r["transport"]) for r in records if r["kind"] == "summary"]
    assert summaries == [("a", "https/1.1"), ("a", "h2")]
    assert sorted({r["workers"] for r in records if r["kind"] == "scale-summary"}) == [1, 2]
    page = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## Goals of issue 12", "## (a) static file, 174 B, https/1.1", "## (a) static file, 174 B, h2",
                    "## Workers: 1 and 2", "## Memory"):  # fmt: skip
        assert heading in page
    assert all(f"| {server} |" in page for server in ("zeroserve", "nginx", "caddy", "granian"))
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

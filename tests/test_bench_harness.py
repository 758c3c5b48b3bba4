"""The benchmark harness in bench/ runs end to end against real servers and records what it measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def run_bench(tmp_path: Path, *flags: str, servers: str = "nginx,nginx") -> tuple[str, list[dict]]:
    """Runs bench/run.py briefly (nginx on both sides unless told) and returns its stdout and its JSON lines."""
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--servers", servers, "--rounds", "1", "--duration", "1",
         "--warmup", "1", "--retries", "0", "--workloads", "a", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, [json.loads(line) for line in out.read_text().splitlines()]


TRANSPORTS = pytest.mark.parametrize(
    ("flags", "transport"), [((), "http/1.1"), (("--tls", "--h2"), "h2")], ids=["http1-plaintext", "h2-tls"]
)


@TRANSPORTS
def test_bench_self_check_records_runs_and_ratios(tmp_path, flags, transport):
    """nginx against nginx records one error-free run per server with throughput, p99 and CPU shares, and a ratio."""
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
    assert set(summary["ratios"]) == {"requests_per_s", "p99_ms", "requests_per_core_s"}
    assert all(ratio > 0 for ratio in summary["ratios"].values())
    assert "ratio" in stdout and transport in stdout


@TRANSPORTS
def test_bench_zeroserve_against_nginx_serves_the_same_content(tmp_path, flags, transport):
    """zeroserve packs and serves the workload's file (checked byte for byte first), so both servers get a run."""
    stdout, records = run_bench(tmp_path, *flags, servers="zeroserve,nginx")
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted(r["server"] for r in runs) == ["nginx", "zeroserve"]
    assert all(r["transport"] == transport for r in runs)
    assert all(r["failures"] == 0 and r["requests_per_s"] > 0 for r in runs)
    assert "ratio = zeroserve / nginx" in stdout


def test_bench_memory_reports_idle_worker_pss(tmp_path):
    """--memory reports the PSS of one idle worker of each server and the larger total of all its processes."""
    stdout, records = run_bench(tmp_path, "--memory", servers="zeroserve,nginx")
    assert [r["server"] for r in records] == ["zeroserve", "nginx"]
    for record in records:
        assert record["kind"] == "memory"
        assert 0 < record["worker_pss_kib"] <= record["total_pss_kib"]
    (nginx,) = [r for r in records if r["server"] == "nginx"]
    assert nginx["processes"] == 2  # master and its one worker
    assert nginx["worker_pss_kib"] < nginx["total_pss_kib"]
    assert "worker PSS" in stdout

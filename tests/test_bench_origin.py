"""The benchmark's proxying workloads: both servers proxy to one keep-alive nginx origin the harness starts."""

from test_bench_harness import run_bench


def test_bench_origin_workload_proxies_both_servers_to_the_origin(tmp_path):
    """Workload (e) checks both servers' proxied answer, loads them, and meters the origin's CPU in each run."""
    stdout, records = run_bench(tmp_path, "--workloads", "e", servers="zeroserve,nginx")
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted(r["server"] for r in runs) == ["nginx", "zeroserve"]
    for run in runs:
        assert run["workload"] == "e"
        assert run["failures"] == 0 and run["requests_per_s"] > 0
        assert run["origin_cpu"] > 0  # every request went through to the origin
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert all(figures["origin_cpu"] > 0 for figures in summary["servers"].values())
    assert "(e) proxied to a keep-alive nginx origin" in stdout


def test_bench_origin_memory_report_starts_the_origin(tmp_path):
    """--memory on a proxying workload starts its origin first, so both servers start and are measured."""
    _, records = run_bench(tmp_path, "--memory", "--workloads", "f", servers="zeroserve,nginx")
    assert [(r["server"], r["workload"]) for r in records] == [("zeroserve", "f"), ("nginx", "f")]
    assert all(0 < r["worker_pss_kib"] <= r["total_pss_kib"] for r in records)

"""bench/profiling.py profiles a real zeroserve worker under load with perf and py-spy and splits its CPU time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROFILING = Path(__file__).resolve().parents[1] / "bench" / "profiling.py"


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    """Profiles workload (a) over plaintext HTTP/1.1 for one second per run into a fresh directory."""
    out = tmp_path_factory.mktemp("profile")
    done = subprocess.run(
        [sys.executable, str(PROFILING), "--workloads", "a", "--seconds", "1", "--tag", "test", "--out", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_bench_profiling_splits_cpu_per_request(profile_dir):
    """The profile gives CPU µs per request and shares by shared object and by module that each add up to one."""
    (profile,) = [json.loads(line) for line in (profile_dir / "profiles.jsonl").read_text().splitlines()]
    assert (profile["workload"], profile["transport"], profile["tag"]) == ("a", "http/1.1", "test")
    assert profile["requests_per_s"] > 0 and 0 < profile["worker_cpu"] <= 1.2
    assert profile["us_per_request"] == pytest.approx(profile["worker_cpu"] / profile["requests_per_s"] * 1e6)
    assert sum(profile["dso"].values()) == pytest.approx(1.0, abs=0.02)
    assert sum(profile["modules"].values()) == pytest.approx(1.0, abs=1e-6)
    assert any(name.startswith("kernel") for name in profile["dso"])  # every response is a system call
    assert (profile_dir / "a-http1.1.perf").stat().st_size > 0


def test_bench_profiling_compares_two_profiles_as_markdown(profile_dir):
    """--compare prints each workload profiled in both directories as a markdown table, side by side."""
    done = subprocess.run(
        [sys.executable, str(PROFILING), "--compare", str(profile_dir), str(profile_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "### (a) over http/1.1" in done.stdout
    assert "| **CPU µs per request** |" in done.stdout
    assert "| *by zeroserve module (py-spy)* | | |" in done.stdout

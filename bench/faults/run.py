"""The load and fault command: attacks a real zeroserve with each scenario, measures it, and writes RESULTS.md.

    .venv/bin/python -m bench.faults [scenario ...]          # from the repository root
    .venv/bin/python bench/faults/run.py [--list] [scenario ...]

Each scenario (see scenarios.py) starts its own server pinned to core 0 (`taskset -c 0`), with one worker
unless it needs more; the well-behaved client (wrk or h2load) and the attackers run on core 1. A scenario
reports what it did, figures (memory of the worker from /proc/PID/smaps_rollup, requests a well-behaved
client got during the attack against a run without it, failed requests, times until the server acted,
log lines) and checks of the expected behaviour. The table goes to stdout; bench/faults/RESULTS.md gets
the same, with the machine and date. The exit code is 1 when a check failed. Run as root: the full-disk
scenario mounts a tmpfs, and the fd-exhaustion one lowers the worker's RLIMIT_NOFILE with prlimit.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import traceback
from pathlib import Path

FAULTS_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(FAULTS_DIR), str(FAULTS_DIR.parent)]  # the bench modules import each other by bare name

import scenarios  # noqa: E402
from server_under_test import CLIENT_CPU  # noqa: E402

RESULTS = FAULTS_DIR / "RESULTS.md"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(scenarios.SCENARIOS)}")
    parser.add_argument("--list", action="store_true", help="list the scenarios and what each checks")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the report goes (default {RESULTS})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in scenarios.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenarios.SCENARIOS)}")
    return args


def run_one(name, scratch):
    """Runs one scenario; an exception becomes a failed Outcome carrying its traceback."""
    print(f"== {name}", flush=True)
    try:
        return scenarios.SCENARIOS[name](scratch / name)
    except Exception:  # a harness failure must not hide the other scenarios' figures
        return scenarios.Outcome(name, scenarios.SCENARIOS[name].__doc__.split("\n")[0], [],
                                 [("the scenario ran to its end", False)], traceback.format_exc())


def text_report(outcome):
    lines = [f"{outcome.name}: {'PASS' if outcome.passed else 'FAIL'}  {outcome.what}"]
    lines += [f"    {label:<52} {value}" for label, value in outcome.figures]
    lines += [f"    [{'ok' if ok else 'FAILED'}] {check}" for check, ok in outcome.checks]
    if outcome.notes:
        lines += ["    " + line for line in outcome.notes.rstrip().splitlines()]
    return "\n".join(lines)


def markdown(outcomes):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Load and fault scenarios: results",
        "",
        f"Written by `bench/faults/run.py` on {now}, {platform.node()}, {os.cpu_count()} cores "
        f"({platform.platform()}). Server pinned to core 0, clients and attackers to core {CLIENT_CPU}; the "
        "machine was shared with other work, so the request rates are noisy (compare the ratios within a "
        "scenario, never across runs). How each scenario works: `bench/faults/scenarios.py`.",
        "",
        "| scenario | result | what was done |",
        "|---|---|---|",
    ]
    parts += [f"| [{o.name}](#{o.name}) | {'pass' if o.passed else '**FAIL**'} | {o.what} |" for o in outcomes]
    for outcome in outcomes:
        parts += ["", f"## {outcome.name}", "", outcome.what, "", "| figure | value |", "|---|---|"]
        parts += [f"| {label} | {value} |" for label, value in outcome.figures]
        parts += ["", "Checks:", ""]
        parts += [f"- {'pass' if ok else '**FAIL**'}: {check}" for check, ok in outcome.checks]
        if outcome.notes:
            parts += ["", "```", outcome.notes.rstrip(), "```"]
    return "\n".join(parts) + "\n"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, scenario in scenarios.SCENARIOS.items():
            print(f"{name:<18} {scenario.__doc__.strip().splitlines()[0]}")
        return 0
    os.sched_setaffinity(0, {CLIENT_CPU})  # the attackers are threads of this process
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="zeroserve-faults-") as scratch:
        for name in args.scenarios or list(scenarios.SCENARIOS):
            outcome = run_one(name, Path(scratch))
            print(text_report(outcome), flush=True)
            outcomes.append(outcome)
    args.out.write_text(markdown(outcomes))
    print(f"wrote {args.out}")
    return 0 if all(outcome.passed for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

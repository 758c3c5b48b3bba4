"""The fuzzing command: runs each fuzz target for a given time and reports executions, time and crashes.

    .venv/bin/python bench/fuzz/run.py [--seconds N] [targets...]
    .venv/bin/python bench/fuzz/run.py --replay FILE TARGET     # run one input, e.g. a crash

Targets run one after another (the machine is shared). C targets are libFuzzer
binaries built by native_build.py; Python targets run under atheris. Each
starts from its seed corpus (corpus/<target>, never written to) plus what
earlier runs found (build/corpus/<target>); a crash's input is saved as
build/crashes/<target>-crash-<hash> and named in the report, to be turned into
a regression test in tests/fuzz_regressions/. Bugs already reported and still
open are listed in known_bugs.supp so the fuzzers can look past them.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import native_build
from pytargets import TARGETS as PYTHON_TARGETS

FUZZ_DIR = Path(__file__).resolve().parent
BUILD_DIR = FUZZ_DIR / "build"
SEED_DIR = FUZZ_DIR / "corpus"
KNOWN_BUGS = FUZZ_DIR / "known_bugs.supp"
ALL_TARGETS = (*PYTHON_TARGETS, *native_build.C_TARGETS)
# Per-input time and memory caps: a slower or bigger input is itself a finding (a DoS).
_LIBFUZZER_FLAGS = ["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1", "-max_len=8192"]


@dataclass
class Outcome:
    """One target's run: executions done, seconds taken, the crashing input (None: no crash) and the output's tail."""

    target: str
    executions: int
    seconds: float
    crash: Path | None
    log_tail: str


def command(target):
    """The argv that runs `target` (before the libFuzzer flags and corpus paths)."""
    if target in PYTHON_TARGETS:
        return [sys.executable, str(FUZZ_DIR / "atheris_runner.py"), target]
    if target in native_build.C_TARGETS:
        return [str(native_build.build(target))]
    raise SystemExit(f"unknown fuzz target {target!r}; known: {', '.join(ALL_TARGETS)}")


def environment(ignore_known_bugs):
    """The sanitizers' options: halt at the first report; known open bugs suppressed only when asked."""
    ubsan = "halt_on_error=1:print_stacktrace=1"
    if ignore_known_bugs and KNOWN_BUGS.exists():
        ubsan += f":suppressions={KNOWN_BUGS}"
    return {**os.environ, "UBSAN_OPTIONS": ubsan, "ASAN_OPTIONS": "detect_leaks=1:allocator_may_return_null=1"}


def fuzz(target, seconds, work_dir=BUILD_DIR):
    """Fuzz `target` for `seconds` from its seeds and `work_dir`/corpus/<target>; the Outcome."""
    found = work_dir / "corpus" / target
    found.mkdir(parents=True, exist_ok=True)
    crashes = work_dir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [*command(target), *_LIBFUZZER_FLAGS, f"-max_total_time={seconds}",
            f"-artifact_prefix={crashes}/{target}-", str(found), str(SEED_DIR / target)]
    return _run(target, argv, ignore_known_bugs=True)


def replay(target, path):
    """Run `target` once on the input at `path`, known bugs included; the Outcome."""
    return _run(target, [*command(target), *_LIBFUZZER_FLAGS, str(path)], ignore_known_bugs=False)


def _run(target, argv, ignore_known_bugs):
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                            env=environment(ignore_known_bugs))
    elapsed = time.monotonic() - started
    log = result.stderr + result.stdout
    executions = re.search(r"stat::number_of_executed_units: (\d+)", log)
    crash = None
    if result.returncode != 0:
        written = re.search(r"Test unit written to (\S+)", log)
        crash = Path(written.group(1)) if written else Path("(no input written)")
    return Outcome(target, int(executions.group(1)) if executions else 0, elapsed, crash, log[-4000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--replay", metavar="FILE", help="run the one input FILE on the single target given")
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(ALL_TARGETS)}")
    args = parser.parse_args()
    targets = args.targets or list(ALL_TARGETS)
    if args.replay:
        if len(targets) != 1:
            parser.error("--replay needs exactly one target")
        outcome = replay(targets[0], args.replay)
        print(outcome.log_tail)
        return 1 if outcome.crash else 0
    failed = 0
    print(f"{'target':<12} {'executions':>12} {'seconds':>8}  result")
    for target in targets:
        outcome = fuzz(target, args.seconds)
        result = f"CRASH {outcome.crash}" if outcome.crash else "ok"
        print(f"{target:<12} {outcome.executions:>12} {outcome.seconds:>8.0f}  {result}", flush=True)
        if outcome.crash:
            failed += 1
            print(outcome.log_tail, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

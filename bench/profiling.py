"""Profiles zeroserve's worker under the benchmark's load and says where its CPU time goes, per request.

    .venv/bin/python bench/profiling.py [--workloads a,c,d,e] [--tls] [--h2] [--seconds 8] [--out DIR]
    .venv/bin/python bench/profiling.py --compare BEFORE_DIR AFTER_DIR    # side by side, as markdown

For each workload it starts zeroserve (and the workload's origin) exactly as `run.py` does, pinned to the
server core, with the client on the other core, and makes three runs of the same load:

1. unprofiled: requests/s and the worker's CPU share, hence CPU µs per request;
2. `perf record -e cpu-clock` on the worker: the split between the kernel, BoringSSL, the interpreter,
   uvloop, httptools, zeroserve's C modules and libc (by shared object), and the top kernel symbols;
3. `py-spy record --native` on the worker: the split by zeroserve module (the innermost project frame of each
   sample: TLS, HTTP/1.1, HTTP/2, handler, chain, static, proxy ...), which perf cannot see inside Python.

Shares times µs per request give µs per request for each part. Raw profiles are kept in --out.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import load
import nginx
import zeroserve_server
from measure import CpuMeter
from process import Placement, die_with_parent
from run import WrongAnswerError, served_site, check_response, make_certificate, origin_for, write_site
from workloads import select

BENCH_DIR = Path(__file__).resolve().parent
PY_SPY = Path(sys.executable).with_name("py-spy")
SAMPLE_RATE_HZ = 200

# perf's shared objects, grouped into what they stand for.
DSO_GROUPS = (
    ("kernel (syscalls, TCP, scheduling)", re.compile(r"\[kernel|\[vdso")),
    ("TLS library (BoringSSL; nginx: OpenSSL)", re.compile(r"libcrypto|libssl")),
    ("cffi runtime (_cffi_backend)", re.compile(r"_cffi_backend")),
    ("zeroserve C (fast path, VM, chain, h2 glue)", re.compile(r"_zs|zeroserve|_boringssl")),
    ("nghttp2", re.compile(r"nghttp2")),
    ("Python interpreter", re.compile(r"libpython|python3")),
    ("uvloop / libuv", re.compile(r"uvloop|loop\.cpython|libuv")),
    ("httptools", re.compile(r"httptools|parser\.cpython|llhttp")),
    ("libc", re.compile(r"libc[.-]|libm[.-]|ld-linux")),
    ("nginx and its Lua", re.compile(r"nginx|luajit|ngx_")),
)

# A py-spy sample whose innermost frame is one of these libc calls is time in the kernel, whoever called it.
SYSCALL_LEAF = re.compile(r"^(write|writev|read|readv|pread64|sendmsg|recvmsg|sendfile64|send|recv"
                          r"|epoll_ctl|__libc_\w+|__GI_\w+) \(libc")
# A sample in the event loop's wait is the worker waiting for input, not working (py-spy --native cannot tell
# a blocked thread from a running one): it is left out of the shares. perf counts the wait's own CPU time.
WAITING_LEAF = re.compile(r"^epoll_p?wait \(libc")
# Other py-spy samples, by the file a frame is in (Python module, C source or library); the innermost frame that
# matches names the sample. cffi's generated wrappers (_zsvm.c) match nothing, so their callers decide.
FRAME_GROUPS = (
    ("TLS (core/tls.py, BoringSSL)", re.compile(r"core/tls\.py|libssl|libcrypto|_boringssl")),
    ("response head formatting (http1 response_head, httpdate)", re.compile(r"response_head|core/httpdate\.py")),
    ("HTTP/1.1 parsing and framing (core/http1.py, httptools)", re.compile(r"core/http1\.py|httptools")),
    ("HTTP/2 (core/http2.py, nghttp2 glue, nghttp2, h2)",
     re.compile(r"core/http2\.py|/h2/|/hpack/|/hyperframe/|\(zsh2\.c:|nghttp2")),
    ("fast path (core/fastpath.py, native/fast)", re.compile(r"core/fastpath\.py|\((parse|pump|table)\.c:")),
    ("script chain (core/chain.py, script_abi.py, C chain, VM)",
     re.compile(r"core/chain\.py|core/script_abi\.py|\((chain|helpers_\w+|json|reqctx|interp|jit_x86_64|vm)\.c:")),
    ("static file (core/static.py, site.py)", re.compile(r"core/static\.py|core/site\.py")),
    ("proxy (core/proxy.py, upstream.py)", re.compile(r"core/proxy\.py|core/upstream\.py")),
    ("handler (core/handler.py, request.py)", re.compile(r"core/handler\.py|core/request\.py")),
    ("logging (accesslog, logging)", re.compile(r"logging/|core/accesslog\.py")),
    ("connection (core/connection.py, session.py)", re.compile(r"core/connection\.py|core/session\.py")),
    ("event loop (uvloop, libuv, asyncio)", re.compile(r"uvloop|asyncio|selectors|\((loop|stream|linux|core)\.c:")),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="a,c,d,e", help="comma-separated workload names (default a,c,d,e)")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 for workloads that do not fix it")
    parser.add_argument("--h2", action="store_true", help="HTTP/2 with h2load")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of each of the three runs (default 8)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out" / "profile", help="raw profiles go here")
    parser.add_argument("--server", choices=("zeroserve", "nginx"), default="zeroserve",
                        help="the server to profile (nginx: perf only, for comparison; default zeroserve)")
    parser.add_argument("--tag", default="", help="a label for this profile in the JSON summary, e.g. before")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print two --out directories' profiles side by side instead of profiling")  # fmt: skip
    return parser.parse_args(argv)


def start_client(workload, transport, port, seconds, settings, scratch) -> subprocess.Popen:
    """Starts the load generator for about `seconds` (h2load over TLS in count mode, ended by a kill)."""
    requests = 10**8 if transport.h2 and transport.tls else None
    argv = load.command(workload, transport, port, seconds, settings, scratch / "h2load.log", requests)
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)


def under_load(workload, transport, port, seconds, settings, scratch, tool: list[str]) -> None:
    """Runs `tool` (a profiler attached to the worker for `seconds`) while the client loads the server."""
    client = start_client(workload, transport, port, seconds + 3, settings, scratch)
    try:
        time.sleep(1.0)
        subprocess.run(tool, check=True, capture_output=True, timeout=seconds + 60)
    finally:
        client.kill()
        client.wait()


def perf_shares(data: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Returns CPU shares by shared-object group and the top kernel symbols from a perf.data file."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    groups: dict[str, float] = collections.Counter()
    kernel: list[tuple[str, float]] = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not match:
            continue
        share, dso, kind, symbol = float(match[1]) / 100, match[2], match[3], match[4].strip()
        name = next((group for group, pattern in DSO_GROUPS if pattern.search(dso)), f"other ({dso})")
        groups[name] += share
        if kind == "k" and len(kernel) < 15:
            kernel.append((symbol, share))
    return dict(groups), kernel


def spy_shares(raw: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Returns sample shares by innermost project module, and the top self-time frames, from py-spy raw output."""
    groups: dict[str, int] = collections.Counter()
    leaves: dict[str, int] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if WAITING_LEAF.match(frames[-1]):
            continue
        total += count
        leaves[frames[-1]] += count
        if SYSCALL_LEAF.match(frames[-1]):
            group = f"system call {frames[-1].split()[0]}"
        else:
            group = next(
                (g for frame in reversed(frames) for g, pattern in FRAME_GROUPS if pattern.search(frame)), "other"
            )
        groups[group] += count
    shares = {g: n / total for g, n in groups.items()} if total else {}
    top = [(frame, n / total) for frame, n in leaves.most_common(20)] if total else []
    return shares, top


def profile_workload(workload, args, tmp: Path, tls, out: Path) -> dict:
    """Measures and profiles the server (zeroserve, or nginx for comparison: perf only) on one workload."""
    transport = workload.transport(args.tls, args.h2)
    base = tmp / f"{workload.name}-{transport.label.replace('/', '')}"
    base.mkdir()
    site = write_site(workload, base / "site")
    scratch = base / "client"
    scratch.mkdir()
    settings = load.LoadSettings(cpus=(args.client_cpu,), connections=args.connections, streams=args.streams)
    stem = out / f"{workload.name}-{transport.label.replace('/', '')}"
    starter = zeroserve_server.start if args.server == "zeroserve" else nginx.start
    with origin_for(workload, site, base / "origin", (args.server_cpu,)) as (workload, _):
        served = served_site(workload, site, base)
        placement = Placement((args.server_cpu,))
        server = starter(args.server, workload, transport, served, base / args.server, placement, tls)
        try:
            check_response(server, workload, transport, scratch)
            worker = server.worker_pid()
            load.run(workload, transport, server.port, 1, settings, scratch)
            meter = CpuMeter(worker)
            meter.start()
            run = load.run(workload, transport, server.port, args.seconds, settings, scratch)
            cpu = meter.stop()
            rate = run.result.requests_per_s
            under_load(workload, transport, server.port, args.seconds, settings, scratch,
                       ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(worker),
                        "-o", f"{stem}.perf", "--", "sleep", str(args.seconds)])  # fmt: skip
            if args.server == "zeroserve":
                under_load(workload, transport, server.port, args.seconds, settings, scratch,
                           [str(PY_SPY), "record", "--native", "-r", str(SAMPLE_RATE_HZ), "-d", str(args.seconds),
                            "-f", "raw", "-o", f"{stem}.spy.txt", "-p", str(worker)])  # fmt: skip
        finally:
            server.process.stop()
    dso, kernel_symbols = perf_shares(Path(f"{stem}.perf"))
    modules, leaves = spy_shares(Path(f"{stem}.spy.txt")) if args.server == "zeroserve" else ({}, [])
    return {
        "server": args.server, "workload": workload.name, "transport": transport.label, "tag": args.tag,
        "requests_per_s": rate, "worker_cpu": cpu, "us_per_request": cpu / rate * 1e6 if rate else 0.0,
        "dso": dso, "kernel_symbols": kernel_symbols, "modules": modules, "leaves": leaves,
    }  # fmt: skip


def print_profile(p: dict) -> None:
    """Prints one workload's profile as µs per request and shares."""
    us = p["us_per_request"]
    print(f"\n{p['server']}, ({p['workload']}) over {p['transport']}: {p['requests_per_s']:,.0f} req/s at "
          f"{p['worker_cpu']:.0%} "
          f"of the server core = {us:.1f} µs CPU per request")  # fmt: skip
    for title, shares in (("by shared object (perf)", p["dso"]), ("by zeroserve module (py-spy)", p["modules"])):
        print(f"  {title}:")
        for name, share in sorted(shares.items(), key=lambda item: -item[1]):
            if share >= 0.005:
                print(f"    {share:6.1%} {share * us:6.2f} µs  {name}")
    print("  top kernel symbols (perf):")
    for symbol, share in p["kernel_symbols"][:8]:
        print(f"    {share:6.1%}  {symbol}")
    print("  top frames by self time (py-spy):")
    for frame, share in p["leaves"][:12]:
        print(f"    {share:6.1%}  {frame}")


def latest_profiles(directory: Path) -> dict[tuple[str, str], dict]:
    """Returns the last profile of each (workload, transport) in a directory, shares read again from the raw files."""
    found = {}
    for line in (directory / "profiles.jsonl").read_text().splitlines():
        profile = json.loads(line)
        stem = directory / f"{profile['workload']}-{profile['transport'].replace('/', '')}"
        profile["dso"], profile["kernel_symbols"] = perf_shares(Path(f"{stem}.perf"))
        spy = Path(f"{stem}.spy.txt")
        profile["modules"], profile["leaves"] = spy_shares(spy) if spy.exists() else ({}, [])
        found[profile["workload"], profile["transport"]] = profile
    return found


def print_comparison(before_dir: Path, after_dir: Path) -> None:
    """Prints, per workload profiled in both, µs per request and each part's µs and share, before and after."""
    before, after = latest_profiles(before_dir), latest_profiles(after_dir)
    for key in (k for k in before if k in after):
        b, a = before[key], after[key]
        print(f"\n### ({key[0]}) over {key[1]}\n")
        names = [f"{p.get('server', 'zeroserve')} {d.name}" for p, d in ((b, before_dir), (a, after_dir))]
        print(f"| | {names[0]} | {names[1]} |")
        print("| --- | ---: | ---: |")
        print(f"| requests/s (unprofiled run) | {b['requests_per_s']:,.0f} | {a['requests_per_s']:,.0f} |")
        print(f"| worker CPU share | {b['worker_cpu']:.0%} | {a['worker_cpu']:.0%} |")
        print(f"| **CPU µs per request** | **{b['us_per_request']:.1f}** | **{a['us_per_request']:.1f}** |")
        for title, field in (("by shared object (perf)", "dso"), ("by zeroserve module (py-spy)", "modules")):
            if not (b[field] or a[field]):
                continue
            print(f"| *{title}* | | |")
            names = sorted({*b[field], *a[field]}, key=lambda n: -(a[field].get(n, 0) + b[field].get(n, 0)))
            for name in names:
                cells = [f"{p[field].get(name, 0) * p['us_per_request']:.1f} µs ({p[field].get(name, 0):.0%})"
                         for p in (b, a)]  # fmt: skip
                if max(b[field].get(name, 0), a[field].get(name, 0)) >= 0.01:
                    print(f"| {name} | {cells[0]} | {cells[1]} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.compare:
        print_comparison(*args.compare)
        return 0
    for tool in ("perf", str(PY_SPY)):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (`apt-get install linux-perf`, `pip install py-spy`)", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    profiles = []
    with tempfile.TemporaryDirectory(prefix="zeroserve-profile-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the origin nginx's worker runs as nobody
        workloads = select(args.workloads)
        tls = make_certificate(tmp) if any(w.transport(args.tls, args.h2).tls for w in workloads) else None
        for workload in workloads:
            try:
                profile = profile_workload(workload, args, tmp, tls, args.out)
            except WrongAnswerError as error:
                print(f"bench: not profiled: {error}", file=sys.stderr)
                continue
            print_profile(profile)
            profiles.append(profile)
    with open(args.out / "profiles.jsonl", "a") as out:
        for profile in profiles:
            out.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | profile) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Times one request through a script chain: the Python loop (run_python) against the C runner (run_c).

Usage: python bench/chain_bench.py [--json OUT.json]

Chains of 1 and 3 scripts that each set a `zs.response.header.*` metadata
key (the (c) workload: static + a header from a script), and 1 script that
answers JSON (the (d) workload). Reported: microseconds of CPU per request,
the best of several rounds, for each path.
"""
import argparse
import json
import pathlib
import sys
import tempfile
import time

from zeroserve.core import pack
from zeroserve.core.chain import ChainOptions, ScriptChain
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.plugins import build_helper_table, build_plugin_manager
from zeroserve.core.site import Site

HEADER_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    zs_meta_set(ZS_STR("zs.response.header.x-script-%s"), ZS_STR("yes"));
    return 0;
}
"""

JSON_SCRIPT = """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void)
{
    zs_s64 reply = zs_json_new_object();
    zs_s64 value = zs_json_new_object();
    zs_json_set_string(value, ZS_STR("hello"));
    zs_json_set(reply, ZS_STR("greeting"), value);
    zs_json_respond(200, reply);
    return 0;
}
"""

REQUESTS = 20_000
ROUNDS = 5
HEADERS = [("host", "bench.test"), ("user-agent", "wrk"), ("accept", "*/*")]


def load_chain(scripts, compiler, helpers):
    """A ScriptChain of {name: C source}, packed into a site tar the way `zeroserve pack` does."""
    base = pathlib.Path(tempfile.mkdtemp())
    for name, source in scripts.items():
        path = base / "src" / ".zeroserve" / "scripts" / f"{name}.c"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    (base / "src" / "index.html").write_text("<p>hi</p>")
    pack.build(base / "src", base / "site.tar", compiler=compiler)
    return ScriptChain.load(Site.open(base / "site.tar"), helpers, ChainOptions())


def per_request_us(run):
    """Best CPU microseconds per request over ROUNDS rounds of REQUESTS calls of `run`."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(REQUESTS):
            run(None, "bench", "GET", "/index.html", "/index.html", "", "https", "127.0.0.1:5000", (1, 1), True,
                HEADERS)
        best = min(best, time.process_time() - started)
    return best / REQUESTS * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this file")
    args = parser.parse_args()
    compiler = ScriptCompiler.find(None)
    helpers = build_helper_table(build_plugin_manager([]), None)
    cases = {
        "1 header script": {"a": HEADER_SCRIPT % "a"},
        "3 header scripts": {f"{n}": HEADER_SCRIPT % n for n in "abc"},
        "1 JSON script": {"a": JSON_SCRIPT},
    }
    figures = {}
    for label, scripts in cases.items():
        chain = load_chain(scripts, compiler, helpers)
        python_us, c_us = per_request_us(chain.run_python), per_request_us(chain.run_c)
        figures[label] = {"python_us": round(python_us, 2), "c_runner_us": round(c_us, 2)}
        print(f"{label:18s} Python loop {python_us:6.2f} us   C runner {c_us:6.2f} us   "
              f"({python_us / c_us:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

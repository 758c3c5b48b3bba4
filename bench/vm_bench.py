"""Times the eBPF VM: JIT against interpreter on compute-heavy scripts, run overhead from Python, helper calls.

Usage: python bench/vm_bench.py [--json OUT.json]

- sha256 / crc32: tests/vm/scripts/hash.c compiled with clang for BPF, over 64 KiB / 16 KiB
  of input; time per run on each engine and the JIT's speed-up (goal: at least 5x).
- empty run: `run.start(0)` + `run.result` of `mov r0, 0; exit` from Python (goal: well under 1 us).
- helper call: cost of one helper call from a guest loop, for a C helper and a Python helper.
"""
import argparse
import json
import pathlib
import struct
import subprocess
import sys
import tempfile
import time

from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import Program, Run, jit_available

ROOT = pathlib.Path(__file__).resolve().parents[1]
HASH_SOURCE = ROOT / "tests" / "vm" / "scripts" / "hash.c"

EMPTY = bytes.fromhex("b700000000000000" "9500000000000000")  # mov r0, 0; exit


def insn(opcode, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", opcode, dst | src << 4, off, imm)


def helper_loop(count):
    """r6 = count; do { r1 = r6; call 1; r6 -= 1 } while r6 != 0; exit."""
    return (insn(0xB7, 6, imm=count) + insn(0xBF, 1, 6) + insn(0x85, imm=1)
            + insn(0x07, 6, imm=-1) + insn(0x55, 6, off=-4) + insn(0x95))


def best_of(repeats, fn):
    """Smallest CPU time of this process over `repeats` calls of fn(), in seconds (CPU time,
    so other load on a shared machine does not count)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def compile_hash():
    out = pathlib.Path(tempfile.mkdtemp()) / "hash.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-c", str(HASH_SOURCE), "-o", str(out)], check=True)
    return out.read_bytes()


def bench_compute(obj, engines):
    results = {}
    for entry, size, args in (("zeroserve.call.sha256", 64 * 1024, 3), ("zeroserve.call.crc32", 16 * 1024, 2)):
        name = entry.rsplit(".", 1)[1]
        for engine in engines:
            run = Run(Program.load_elf(obj, engine=engine), memory_kb=1024)
            data = bytes(i & 0xFF for i in range(size))
            argv = (run.alloc(data), size, run.alloc(32))[:args]
            seconds = best_of(5, lambda: run.start(entry, argv))
            results[f"{name}_{engine}_ms"] = round(seconds * 1e3, 3)
            results[f"{name}_{engine}_MBps"] = round(size / seconds / 1e6, 2)
        if "jit" in engines:
            results[f"{name}_jit_speedup"] = round(results[f"{name}_interp_ms"] / results[f"{name}_jit_ms"], 2)
    return results


def bench_empty_run(engines):
    results = {}
    for engine in engines:
        run = Run(Program.load_raw(EMPTY, engine=engine))
        start = run.start
        n = 200_000

        def loop():
            for _ in range(n):
                start(0)
                run.result

        results[f"empty_run_{engine}_ns"] = round(best_of(5, loop) / n * 1e9, 1)
    return results


def bench_helpers(engines):
    results = {}
    count = 100_000
    helpers = {"c": ffi.addressof(lib, "zs_helper_unwind"), "python": lambda run, r1, *_: r1}
    for engine in engines:
        for kind, helper in helpers.items():
            run = Run(Program.load_raw(helper_loop(count), {1: helper}, engine=engine))
            seconds = best_of(3, lambda: run.start(0))
            results[f"helper_{kind}_{engine}_ns"] = round(seconds / count * 1e9, 1)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this file")
    args = parser.parse_args()
    engines = ["interp", "jit"] if jit_available() else ["interp"]
    results = {"engines": engines}
    results.update(bench_compute(compile_hash(), engines))
    results.update(bench_empty_run(engines))
    results.update(bench_helpers(engines))
    for key, value in results.items():
        print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

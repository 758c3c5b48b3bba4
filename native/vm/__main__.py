"""The bpf_conformance plugin command: run a raw program read as hex on stdin, print r0 in hex.

    python -m zeroserve.vm run [--engine interp|jit] [MEMORY_HEX] < program.hex

r1 points at a writable copy of MEMORY_HEX (0 when there is none), r2 is its
length; call 5 is the suite's "unwind" helper.
"""
import argparse
import sys

from zeroserve.core.errors import ScriptFault, ScriptLoadError
from zeroserve.native._zsvm import ffi, lib
from zeroserve.vm import DEFAULT_ENGINE, DONE, ENGINES, Program, Run

CONFORMANCE_HELPERS = {5: ffi.addressof(lib, "zs_helper_unwind")}


def parse_hex(text, what):
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError as exc:
        raise SystemExit(f"zeroserve.vm: {what} is not hex: {exc}") from None


def run_command(args):
    code = parse_hex(sys.stdin.read(), "the program on stdin")
    memory = parse_hex(args.memory, "MEMORY_HEX")
    try:
        run = Run(Program.load_raw(code, CONFORMANCE_HELPERS, engine=args.engine))
        addr = run.alloc(memory) if memory else 0
        status = run.start(0, (addr, len(memory)))
    except (ScriptLoadError, ScriptFault) as exc:
        print(f"zeroserve.vm: {exc}", file=sys.stderr)
        return 1
    if status != DONE:
        print("zeroserve.vm: the program stopped without finishing", file=sys.stderr)
        return 1
    print(f"{run.result:x}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zeroserve.vm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a raw program (hex on stdin); print r0 in hex")
    run.add_argument("--engine", choices=sorted(ENGINES), default=DEFAULT_ENGINE)
    run.add_argument("memory", nargs="?", default="", metavar="MEMORY_HEX",
                     help="initial memory, pointed to by r1")
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

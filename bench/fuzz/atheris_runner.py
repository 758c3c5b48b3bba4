"""Runs one Python fuzz target under atheris (libFuzzer for Python): `atheris_runner.py TARGET [libFuzzer args]`.

The zeroserve modules and their parsers' dependencies (h2, hpack, hyperframe)
are imported under atheris' bytecode instrumentation so the fuzzer sees their
coverage.
"""

import sys

import atheris

with atheris.instrument_imports(include=["zeroserve", "h2", "hpack", "hyperframe", "pytargets"]):
    import pytargets


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in pytargets.TARGETS:
        sys.exit(f"usage: atheris_runner.py TARGET [libFuzzer args]; TARGET is one of {', '.join(pytargets.TARGETS)}")
    target = pytargets.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

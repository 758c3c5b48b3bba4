"""Builds the C fuzz targets (libFuzzer + ASan + UBSan) into bench/fuzz/build/, again only when a source changed.

The VM, script, sigv4, fast-path and HTTP/2 sources are compiled once with coverage instrumentation
(`-fsanitize=fuzzer-no-link`) and linked into each target with BoringSSL's
libcrypto, which sigv4 and the script helpers use, libssl, which the fast path's pump uses, and
libnghttp2, under the HTTP/2 glue (native/h2).
"""

import fcntl
import re
import subprocess
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parents[1]
BUILD_DIR = FUZZ_DIR / "build"
NATIVE = ROOT / "native"
LIBRARY_DIRS = (NATIVE / "vm", NATIVE / "script", NATIVE / "sigv4", NATIVE / "fast", NATIVE / "h2")
SDK_HEADER = ROOT / "sdk" / "zeroserve.h"
BORINGSSL_LIB = "/usr/lib/x86_64-linux-gnu/android"
BORINGSSL_INCLUDE = "/usr/include/android"
C_TARGETS = ("json", "elf", "vm", "sigv4", "fast", "h2")

_SANITIZE = "-fsanitize=address,undefined"
_CFLAGS = ["-g", "-O1", "-std=gnu11", "-fno-omit-frame-pointer", "-fsanitize-recover=undefined",
           *(f"-I{d}" for d in LIBRARY_DIRS), f"-I{BORINGSSL_INCLUDE}"]


class BuildError(Exception):
    """clang failed: the message holds its output."""


def _stale(output, inputs):
    # this file holds the flags: changing them rebuilds everything
    inputs = [Path(__file__), *inputs]
    return not output.exists() or any(p.stat().st_mtime > output.stat().st_mtime for p in inputs)


def _run(command):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(map(str, command))}\n{result.stderr}")


def _library_objects():
    """The instrumented objects of the native sources, rebuilt where stale."""
    obj_dir = BUILD_DIR / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    headers = [h for d in LIBRARY_DIRS for h in d.glob("**/*.h")]
    objects = []
    for source in sorted(s for d in LIBRARY_DIRS for s in d.glob("*.c")):
        obj = obj_dir / f"{source.parent.name}_{source.stem}.o"
        if _stale(obj, [source, *headers]):
            _run(["clang", *_CFLAGS, f"{_SANITIZE},fuzzer-no-link", "-c", source, "-o", obj])
        objects.append(obj)
    return objects


def _helper_names():
    """build/helper_names.h: HELPER("name") for every helper sdk/zeroserve.h declares."""
    header = BUILD_DIR / "helper_names.h"
    if _stale(header, [SDK_HEADER]):
        names = sorted(set(re.findall(r"^extern [^(]*?\b(zs_\w+)\(", SDK_HEADER.read_text(), re.M)))
        header.write_text("".join(f'HELPER("{name}")\n' for name in names))
    return header


def build(target):
    """The path of the fuzzer binary for C target `target`, built if missing or stale."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".lock", "w") as lock:  # parallel test workers build one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(target)


def _build_locked(target):
    objects = _library_objects()
    source = FUZZ_DIR / "c" / f"fuzz_{target}.c"
    binary = BUILD_DIR / f"fuzz_{target}"
    if _stale(binary, [source, _helper_names(), *objects]):
        _run(["clang", *_CFLAGS, f"-I{BUILD_DIR}", f"{_SANITIZE},fuzzer", source, *objects, f"-L{BORINGSSL_LIB}",
              f"-Wl,-rpath,{BORINGSSL_LIB}", "-l:libssl.so.0", "-l:libcrypto.so.0", "-lnghttp2", "-lm", "-o", binary])
    return binary

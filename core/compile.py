"""Compiles one script's C source to a BPF ELF object with clang or ziglang's clang.

`ScriptCompiler.find()` picks a compiler once and probes what it accepts (the
BPF ISA level, a 4096-byte stack per function); `compile()` then turns a
`.c` file into the bytes of its `.o`. The SDK header comes from the installed
`zeroserve.sdk` package, so scripts only write `#include "zeroserve.h"`.
"""

import importlib.resources
import importlib.util
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from zeroserve.core.errors import ConfigError, ScriptCompileError

log = logging.getLogger(__name__)

# Our VM gives every BPF frame 4096 bytes, as the original did with
# `llc -bpf-stack-size=4096`; compilers without the option stop at 512.
STACK_SIZE_FLAGS = ("-mllvm", "-bpf-stack-size=4096")
DEFAULT_STACK_SIZE = 512

# -fno-builtin keeps the optimizer from turning loops into memcpy/memset/strlen
# calls the BPF backend cannot emit; freestanding plus no system include dirs
# keep the host's libc headers out; no unwind tables, so no .eh_frame section.
COMMON_FLAGS = (
    "-O2",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdlibinc",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    "-Wall",
    "-g0",
    "-fno-crash-diagnostics",
    "-c",
)
CLANG_TARGET = ("-target", "bpf")
ZIG_TARGET = ("-target", "bpfel-freestanding-none")

BACKEND_CRASH_BANNER = "PLEASE submit a bug report"
PROBE_SOURCE = "int zeroserve_probe(int x) { return x + 1; }\n"
COMPILE_TIMEOUT_SECONDS = 300
ELF_MAGIC = b"\x7fELF"
EM_BPF = 247

INSTALL_HINT = (
    "install clang (apt-get install clang) or the ziglang package (pip install ziglang), "
    "or name a clang-compatible compiler with --compiler PATH"
)


def is_bpf_object(data: bytes) -> bool:
    """True when `data` starts like an ELF file for the BPF machine."""
    return data[:4] == ELF_MAGIC and int.from_bytes(data[18:20], "little") == EM_BPF


def sdk_include_dir() -> pathlib.Path:
    """The directory holding zeroserve.h (the installed zeroserve.sdk package)."""
    return pathlib.Path(str(importlib.resources.files("zeroserve.sdk")))


def sdk_header_text() -> str:
    """The text of the SDK header, for `zeroserve sdk`."""
    return (sdk_include_dir() / "zeroserve.h").read_text(encoding="utf-8")


def site_relative(messages: str, source: pathlib.Path, rel_path: str) -> str:
    """Compiler messages with the script's on-disk paths (file and directory)
    rewritten to its path inside the site, repeated lines shown once (clang
    reports an exceeded stack once per stack slot) and a backend crash's stack
    dump left out."""
    rel_dir = os.path.dirname(rel_path)
    messages = messages.replace(str(source), rel_path)
    messages = messages.replace(str(source.parent) + os.sep, f"{rel_dir}/" if rel_dir else "")
    lines = []
    for line in messages.strip().splitlines():
        if line.startswith(BACKEND_CRASH_BANNER):
            break
        if not lines or line != lines[-1]:
            lines.append(line)
    return "\n".join(lines)


class ScriptCompiler:
    """A BPF C compiler that passed its probe, with the flags it accepts."""

    def __init__(self, name, command, target, cpu, stack_size):
        self.name = name
        self.command = tuple(command)
        self.cpu = cpu
        self.stack_size = stack_size
        stack_flags = STACK_SIZE_FLAGS if stack_size != DEFAULT_STACK_SIZE else ()
        self.flags = (*target, f"-mcpu={cpu}", *stack_flags, *COMMON_FLAGS)

    def __repr__(self):
        return f"ScriptCompiler({self.name!r}, cpu={self.cpu}, stack={self.stack_size})"

    @classmethod
    def find(cls, preferred: str | None = None) -> "ScriptCompiler":
        """The compiler named by `preferred` ("clang", "zig" or a path to a
        clang-compatible binary), or by default clang on PATH, else ziglang's.
        Raises ConfigError naming what to install when none works."""
        if preferred is None:
            failures = []
            for name in ("clang", "zig"):
                try:
                    return cls._locate(name)
                except ConfigError as exc:
                    failures.append(str(exc))
            raise ConfigError(
                "no BPF C compiler works for compiling scripts: "
                + "; ".join(failures)
                + f". To fix: {INSTALL_HINT}"
            )
        return cls._locate(preferred)

    @classmethod
    def _locate(cls, name):
        if name == "zig":
            if importlib.util.find_spec("ziglang") is None:
                raise ConfigError(
                    "the ziglang package is not installed: pip install ziglang"
                )
            return cls._probe("zig", (sys.executable, "-m", "ziglang", "cc"), ZIG_TARGET)
        path = shutil.which(name)
        if path is None:
            if name == "clang":
                raise ConfigError(
                    "clang is not on PATH: apt-get install clang, or use --compiler zig"
                )
            raise ConfigError(
                f"compiler {name!r} is not an executable file or a command on PATH; "
                f"{INSTALL_HINT}"
            )
        return cls._probe(name, (path,), CLANG_TARGET)

    @classmethod
    def _probe(cls, name, command, target):
        """Checks that `command` compiles C to BPF, then which options it takes."""
        with tempfile.TemporaryDirectory(prefix="zeroserve-probe-") as tmp:
            source = pathlib.Path(tmp, "probe.c")
            source.write_text(PROBE_SOURCE)

            def accepts(*flags):
                argv = [*command, *target, *flags, *COMMON_FLAGS, str(source),
                        "-o", str(source.with_suffix(".o"))]
                try:
                    run = subprocess.run(argv, capture_output=True, text=True,
                                         errors="replace", timeout=COMPILE_TIMEOUT_SECONDS)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    return False, str(exc)
                output = source.with_suffix(".o")
                if run.returncode == 0 and not is_bpf_object(
                        output.read_bytes() if output.exists() else b""):
                    return False, "it did not write a BPF ELF object"
                return run.returncode == 0, run.stderr.strip()

            works, stderr = accepts("-mcpu=v3")
            if not works:
                raise ConfigError(
                    f"{name} ({' '.join(command)}) cannot compile C to BPF: {stderr}; "
                    f"{INSTALL_HINT}"
                )
            cpu = "v4" if accepts("-mcpu=v4")[0] else "v3"
            big_stack = accepts("-mcpu=v3", *STACK_SIZE_FLAGS)[0]
        return cls(name, command, target, cpu, 4096 if big_stack else DEFAULT_STACK_SIZE)

    def compile(self, source_path: pathlib.Path, rel_path: str) -> bytes:
        """The BPF object compiled from `source_path`; compiler messages name
        `rel_path` (the script's path inside the site). Raises ScriptCompileError."""
        source = pathlib.Path(source_path).resolve()
        with tempfile.TemporaryDirectory(prefix="zeroserve-compile-") as tmp:
            output = pathlib.Path(tmp, "script.o")
            argv = [*self.command, *self.flags, "-I", str(sdk_include_dir()),
                    str(source), "-o", str(output)]
            try:
                run = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                     timeout=COMPILE_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                raise ScriptCompileError(
                    f"{rel_path}: {self.name} did not finish within "
                    f"{COMPILE_TIMEOUT_SECONDS} s"
                ) from None
            except OSError as exc:
                raise ScriptCompileError(f"{rel_path}: cannot run {self.name}: {exc}") from None
            messages = site_relative(run.stderr, source, rel_path)
            if run.returncode != 0:
                raise ScriptCompileError(
                    f"{rel_path}: compilation with {self.name} failed:\n"
                    f"{messages}{self._hint(messages)}"
                )
            if messages:
                log.warning("%s", messages)
            obj = output.read_bytes() if output.exists() else b""
        if not obj:
            raise ScriptCompileError(f"{rel_path}: {self.name} produced an empty object file")
        if not is_bpf_object(obj):
            raise ScriptCompileError(
                f"{rel_path}: {self.name} did not produce a BPF ELF object; "
                "use clang or --compiler zig"
            )
        return obj

    def _hint(self, messages):
        """What to do about the two limits of an old clang that scripts hit."""
        if self.stack_size == DEFAULT_STACK_SIZE and "stack limit" in messages:
            return (
                f"\nnote: {self.name} limits each function's stack to {DEFAULT_STACK_SIZE} "
                "bytes (it does not accept -mllvm -bpf-stack-size); compile with "
                "--compiler zig (pip install ziglang) for 4096-byte frames, or shrink "
                "the large local buffers"
            )
        if self.cpu == "v3" and "signed division" in messages:
            return (
                f"\nnote: {self.name} targets BPF v3, which has no signed division or "
                "modulo; make the operands unsigned, or compile with --compiler zig "
                "(BPF v4)"
            )
        return ""

"""What the VM tests share: the engines, the shared assembler, and BPF C scripts compiled by clang and zig."""
import functools
import importlib.util
import pathlib
import struct
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
# The bpf_conformance vectors and assembler live beside the checkout, never inside it.
CONFORMANCE = HERE.parents[2] / "shared" / "bpf_conformance"

ENGINES = ("interp", "jit")
GUEST_BASE = 1 << 32
MASK64 = (1 << 64) - 1
FRAME_SIZE = 4096
STACK_SIZE = FRAME_SIZE * 9

COMPILERS = {
    "clang": ["clang", "-O2", "-target", "bpf"],
    "zig": [sys.executable, "-m", "ziglang", "cc", "-target", "bpfel-freestanding-none", "-O2"],
}


def _load_assembler():
    spec = importlib.util.spec_from_file_location("bpf_asm", CONFORMANCE / "bpf_asm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bpf_asm = _load_assembler()


def asm(text):
    """Raw program bytes for bpf_conformance assembly text (one instruction per line)."""
    return bpf_asm.assemble(text)


_OUT = pathlib.Path(tempfile.mkdtemp(prefix="zsvm-scripts-"))


@functools.cache
def compile_script(name, compiler="clang"):
    """The ELF object of tests/vm/scripts/<name>.c built by `compiler` (clang or zig)."""
    out = _OUT / f"{name}-{compiler}.o"
    subprocess.run([*COMPILERS[compiler], "-c", str(SCRIPTS / f"{name}.c"), "-o", str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


def insn(opcode, dst=0, src=0, off=0, imm=0):
    """One encoded instruction slot (for encodings the assembler refuses to produce)."""
    if imm >= 1 << 31:
        imm -= 1 << 32
    return struct.pack("<BBhi", opcode, dst | src << 4, off, imm)

"""ELF loading: objects from clang and zig, relocations, writable globals, helpers by name, malformed input."""
import hashlib
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm_support import COMPILERS, ENGINES, compile_script
from zeroserve.core.errors import ScriptLoadError
from zeroserve.vm import DONE, PREEMPTED, SUSPENDED, Program, Run

GLOBALS_HELPERS = {
    "host_add": lambda run, a, b, *_: a + b,
    "host_record": lambda run, ptr, length, *_: zlib.crc32(run.read(ptr, length)),
}


@pytest.fixture(params=[(c, e) for c in COMPILERS for e in ENGINES], ids=lambda p: f"{p[0]}-{p[1]}")
def globals_run(request):
    compiler, engine = request.param
    return Run(Program.load_elf(compile_script("globals", compiler), GLOBALS_HELPERS, engine=engine))


def call(run, entry, *args):
    assert run.start(entry, args) == DONE
    return run.result


def test_elf_entries_are_executable_sections(globals_run):
    """Every non-empty executable section is an entry point named after it."""
    assert set(globals_run.program.entries) == {
        ".text", "zeroserve.request", "zeroserve.call.bss", "zeroserve.call.rodata",
        "zeroserve.call.names", "zeroserve.call.local", "zeroserve.call.helper"}


def test_elf_data_global_is_writable_and_fresh_each_run(globals_run):
    """`counter += 1` on a .data global works and starts from its initial value every run."""
    assert [call(globals_run, "zeroserve.request") for _ in range(3)] == [41, 41, 41]


def test_elf_bss_global_is_writable_and_zero_each_run(globals_run):
    """A .bss array is writable and zeroed at the start of every run."""
    assert call(globals_run, "zeroserve.call.bss", 5) == 5
    assert call(globals_run, "zeroserve.call.bss", 7) == 7


def test_elf_rodata_reaches_helper_through_relocation(globals_run):
    """lddw of a .rodata string (R_BPF_64_64) hands the helper the string's guest address."""
    assert call(globals_run, "zeroserve.call.rodata") == zlib.crc32(b"hello from rodata")


def test_elf_pointer_table_in_data_is_relocated(globals_run):
    """R_BPF_64_ABS64 entries of a .data pointer table point at the .rodata strings."""
    assert [call(globals_run, "zeroserve.call.names", i) for i in range(3)] == [ord("a"), ord("b"), ord("g")]


def test_elf_local_calls_cross_sections(globals_run):
    """Calls into .text, by function symbol and by section symbol, return to the caller."""
    assert call(globals_run, "zeroserve.call.local", 10) == 20 + 13


def test_elf_helper_is_bound_by_name(globals_run):
    """`host_add` resolves by symbol name to the Python helper registered under that name."""
    assert call(globals_run, "zeroserve.call.helper", 37) == 42


@pytest.mark.parametrize("compiler", COMPILERS)
def test_elf_unknown_helper_fails_load_with_its_name(compiler):
    """A script calling a helper missing from the table does not load, and the error names it."""
    with pytest.raises(ScriptLoadError, match="unknown helper 'host_record'"):
        Program.load_elf(compile_script("globals", compiler), {"host_add": GLOBALS_HELPERS["host_add"]},
                         engine="interp")


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_elf_sha256_matches_hashlib(compiler, engine):
    """A SHA-256 written in C for BPF gives hashlib's digest on every padding boundary."""
    run = Run(Program.load_elf(compile_script("hash", compiler), engine=engine))
    for size in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000):
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        run.reset()
        src, out = run.alloc(data), run.alloc(32)
        assert run.start("zeroserve.call.sha256", (src, size, out)) == DONE
        assert run.read(out, 32) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_elf_crc32_matches_zlib(compiler, engine):
    """A bitwise CRC-32 in BPF gives zlib.crc32."""
    run = Run(Program.load_elf(compile_script("hash", compiler), engine=engine))
    data = bytes(range(256)) * 3
    assert run.start("zeroserve.call.crc32", (run.alloc(data), len(data))) == DONE
    assert run.result == zlib.crc32(data)


@pytest.mark.parametrize("data, message", [
    (b"", "not an ELF file"),
    (b"MZ\x90\x00" + bytes(60), "not an ELF file"),
    (b"\x7fELF" + bytes(60), "64-bit little-endian"),
])
def test_elf_garbage_is_rejected_with_message(data, message):
    """Input that is not a BPF object fails with a message saying what it is not."""
    with pytest.raises(ScriptLoadError, match=message):
        Program.load_elf(data, engine="interp")


def test_elf_wrong_machine_is_rejected():
    """An ELF object for another machine is refused, naming the fix."""
    obj = bytearray(compile_script("globals"))
    struct.pack_into("<H", obj, 18, 62)  # e_machine = x86-64
    with pytest.raises(ScriptLoadError, match="not BPF"):
        Program.load_elf(bytes(obj), GLOBALS_HELPERS, engine="interp")


@pytest.mark.parametrize("cut", [16, 64, 200, -200, -1])
def test_elf_truncated_object_is_rejected(cut):
    """A truncated object fails to load with a message instead of reading past its end."""
    obj = compile_script("globals")
    with pytest.raises(ScriptLoadError):
        Program.load_elf(obj[:cut], GLOBALS_HELPERS, engine="interp")


def _fuzz_helpers():
    def pend(run, *_):
        run.pend()
        return 0
    return {"host_add": lambda run, *_: 1, "host_record": lambda run, p, n, *_: len(run.read(p, n)),
            "fetch": pend}


@st.composite
def mutated_object(draw):
    name = draw(st.sampled_from(["globals", "hash", "control"]))
    obj = bytearray(compile_script(name, draw(st.sampled_from(list(COMPILERS)))))
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["byte", "word", "truncate"]))
        pos = draw(st.integers(0, len(obj) - 1))
        if kind == "byte":
            obj[pos] = draw(st.integers(0, 255))
        elif kind == "word" and pos + 8 <= len(obj):
            struct.pack_into("<Q", obj, pos, draw(st.sampled_from(
                [0, 1, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1, len(obj), draw(st.integers(0, (1 << 64) - 1))])))
        elif kind == "truncate":
            del obj[pos:]
            if not obj:
                break
    return bytes(obj)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=mutated_object(), engine=st.sampled_from(ENGINES))
def test_elf_fuzzed_object_loads_or_fails_cleanly(obj, engine):
    """A mutated object either loads and runs caged, or fails with ScriptLoadError: never a crash."""
    try:
        program = Program.load_elf(obj, _fuzz_helpers(), engine=engine)
    except ScriptLoadError as exc:
        assert str(exc)
        return
    run = Run(program, memory_kb=1024)
    for entry in program.entries:
        try:
            status = run.start(entry, (run.alloc(64), 64, run.alloc(64)), budget=2000)
        except Exception as exc:  # a fault of the mutated code is fine; a host crash is not
            assert type(exc).__name__ in ("ScriptFault", "MemoryFault")
            continue
        assert status in (DONE, PREEMPTED, SUSPENDED)
        run.reset()

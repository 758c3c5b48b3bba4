"""Script compilation and the SDK header: real clang and zig (ziglang) against sdk/zeroserve.h."""

import logging
import os
import pathlib
import re
import shutil
import struct
import subprocess

import pytest

from zeroserve.core.compile import ScriptCompiler, sdk_header_text, sdk_include_dir
from zeroserve.core.errors import ConfigError, ScriptCompileError
from zeroserve.vm import DONE, Program

REPO = pathlib.Path(__file__).resolve().parent.parent
# The SDK examples, and the scripts of the example site.
EXAMPLES = sorted([*(REPO / "examples" / "scripts").glob("*.c"),
                   *(REPO / "examples" / "site" / ".zeroserve" / "scripts").glob("*.c")])
COMPILERS = ("clang", "zig")

ET_REL = 1
EM_BPF = 247
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_REL = 9
SHF_EXECINSTR = 0x4
R_BPF_64_32 = 10
SHN_UNDEF = 0


def read_elf(data):
    """Header fields, sections {name: (type, flags, bytes)} and relocations
    [(target section, type, symbol name, symbol section index)] of an ELF64 LE object."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not ELF64 little-endian"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
               for i in range(e_shnum)]

    def cstr(table, offset):
        start = headers[table][4] + offset
        return data[start:data.index(b"\0", start)].decode()

    sections = {cstr(e_shstrndx, h[0]): (h[1], h[2], data[h[4]:h[4] + h[5]]) for h in headers}
    relocations = []
    for h in headers:
        if h[1] != SHT_REL:
            continue
        symtab = headers[h[6]]
        symbol_names = symtab[6]
        target = cstr(e_shstrndx, headers[h[7]][0])
        for offset in range(h[4], h[4] + h[5], 16):
            info = struct.unpack_from("<Q", data, offset + 8)[0]
            sym_name, _, _, sym_shndx = struct.unpack_from(
                "<IBBH", data, symtab[4] + (info >> 32) * symtab[9])
            relocations.append((target, info & 0xFFFFFFFF, cstr(symbol_names, sym_name),
                                sym_shndx))
    return {"type": e_type, "machine": e_machine}, sections, relocations


def declared_helpers():
    """Every helper the SDK header declares extern."""
    return set(re.findall(r"^extern [^;(]*?\b(zs_\w+)\(", sdk_header_text(), re.MULTILINE))


def helpers_called(source_text):
    """The declared helpers a script's source calls outside comments."""
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", source_text, flags=re.DOTALL)
    return declared_helpers() & set(re.findall(r"\b(zs_\w+)\s*\(", code))


@pytest.fixture(scope="module")
def compilers():
    return {name: ScriptCompiler.find(name) for name in COMPILERS}


def write_script(directory, text):
    path = directory / "script.c"
    path.write_text(text)
    return path


def test_compile_examples_exist():
    """The example scripts the SDK documents are all present."""
    names = {path.name for path in EXAMPLES}
    assert names >= {"add_header.c", "json_api.c", "basic_auth.c", "redirect.c", "template.c",
                     "call_caller.c", "call_callee.c", "ratelimit_429.c"}


@pytest.mark.parametrize("compiler_name", COMPILERS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_compile_example_is_bpf_object_calling_helpers_by_name(compilers, compiler_name, example,
                                                               caplog):
    """Each example compiles without warnings to an ELF64 ET_REL EM_BPF object with a
    zeroserve entry section whose call relocations name exactly the helpers its source calls."""
    with caplog.at_level(logging.WARNING, logger="zeroserve.core.compile"):
        obj = compilers[compiler_name].compile(example, f".zeroserve/scripts/{example.name}")
    assert not caplog.records, caplog.text
    header, sections, relocations = read_elf(obj)
    assert (header["type"], header["machine"]) == (ET_REL, EM_BPF)

    entries = [name for name, (kind, flags, _) in sections.items()
               if kind == SHT_PROGBITS and flags & SHF_EXECINSTR
               and (name == "zeroserve.request" or name.startswith("zeroserve.call."))]
    assert entries, f"no zeroserve entry section in {sorted(sections)}"
    assert all(sections[name][2] for name in entries), "an entry section is empty"
    assert any(kind == SHT_SYMTAB for kind, _, _ in sections.values())

    external_calls = {symbol for _, kind, symbol, shndx in relocations
                      if kind == R_BPF_64_32 and shndx == SHN_UNDEF}
    assert external_calls == helpers_called(example.read_text())


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_call_entry_gets_its_own_section(compilers, compiler_name, tmp_path):
    """ZS_CALL_ENTRY and ZS_INIT_ENTRY put each function in zeroserve.call.<name> and
    zeroserve.init.<name>, next to a zeroserve.request entry."""
    source = write_script(tmp_path, """#include "zeroserve.h"
ZS_CALL_ENTRY(first, input) { return input; }
ZS_CALL_ENTRY(second, input) { zs_s64 h = zs_json_new_array(); zs_json_array_push(h, input); return h; }
ZS_INIT_ENTRY(config) { return zs_json_new_object(); }
ZS_ENTRY zs_u64 entry(void) { return 0; }
""")
    _, sections, _ = read_elf(compilers[compiler_name].compile(source, "lib.c"))
    executable = {name for name, (_, flags, code) in sections.items()
                  if flags & SHF_EXECINSTR and code}
    assert executable == {"zeroserve.call.first", "zeroserve.call.second",
                          "zeroserve.init.config", "zeroserve.request"}


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_explicit_memcpy_becomes_named_call(compilers, compiler_name, tmp_path):
    """A script's own calls to memcpy/memset stay calls relocated against those names
    (the host registers them), never inlined libc."""
    source = write_script(tmp_path, """#include "zeroserve.h"
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
ZS_ENTRY zs_u64 entry(void) {
    char a[64], b[64];
    zs_u64 n = zs_now_ms() & 63;
    memset(a, 'x', n);
    memcpy(b, a, n);
    zs_log(b, n);
    return 0;
}
""")
    _, _, relocations = read_elf(compilers[compiler_name].compile(source, "copy.c"))
    calls = {symbol for _, kind, symbol, _ in relocations if kind == R_BPF_64_32}
    assert calls == {"memcpy", "memset", "zs_now_ms", "zs_log"}


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_syntax_error_names_script_path_and_line(compilers, compiler_name, tmp_path):
    """A syntax error raises ScriptCompileError whose message points at the script's
    path inside the site with its line, not at the file on disk."""
    source = write_script(tmp_path, '#include "zeroserve.h"\n\nZS_ENTRY zs_u64 entry(void) {\n'
                                    "    return 0\n}\n")
    rel_path = ".zeroserve/scripts/sub/broken.c"
    with pytest.raises(ScriptCompileError) as caught:
        compilers[compiler_name].compile(source, rel_path)
    message = str(caught.value)
    assert re.search(r"\.zeroserve/scripts/sub/broken\.c:4:\d+: error", message), message
    assert str(tmp_path) not in message


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_large_frame_follows_stack_limit(compilers, compiler_name, tmp_path):
    """A 2 KiB local buffer compiles where the compiler takes -bpf-stack-size=4096 (zig);
    otherwise the error says how to get 4096-byte frames."""
    compiler = compilers[compiler_name]
    source = write_script(tmp_path, """#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void) {
    char big[2048];
    zs_s64 n = zs_req_path(big, sizeof big);
    zs_log(big, (zs_u64)n);
    return 0;
}
""")
    if compiler.stack_size == 4096:
        read_elf(compiler.compile(source, "big.c"))
    else:
        with pytest.raises(ScriptCompileError, match="--compiler zig"):
            compiler.compile(source, "big.c")
    if compiler_name == "zig":
        assert compiler.stack_size == 4096


def test_compile_sdk_header_is_freestanding_and_warning_free(compilers, tmp_path):
    """The header compiles under -Wall -Wextra -Werror with every inline function used,
    and alongside the compiler's own <stdint.h> and <stddef.h>."""
    source = write_script(tmp_path, """#include <stdint.h>
#include <stddef.h>
#include "zeroserve.h"
ZS_ENTRY zs_u64 entry(void) {
    char a[32], b[32];
    uint64_t n = zs_strlen("abc");
    zs_strcpy(a, "x");
    zs_stpcpy(b, a);
    zs_strncpy(a, b, sizeof a);
    n += (uint64_t)zs_strcmp(a, b) + (uint64_t)zs_strncmp(a, b, 2);
    n += zs_strrchr(a, 'x') != NULL;
    n += (uint64_t)zs_utoa10(4096u, b, sizeof b);
    return n + ZS_MIN(1, 2) + ZS_MAX(3, 4);
}
""")
    for compiler in compilers.values():
        output = tmp_path / f"{compiler.name}.o"
        run = subprocess.run([*compiler.command, *compiler.flags, "-Wextra", "-Werror",
                              "-I", str(sdk_include_dir()), str(source), "-o", str(output)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        read_elf(output.read_bytes())


def test_compile_sdk_header_text_is_the_installed_header():
    """sdk_header_text() is zeroserve.h from the include dir the compiler uses."""
    text = sdk_header_text()
    assert text == (sdk_include_dir() / "zeroserve.h").read_text()
    assert "#define ZS_ENTRY" in text and "zs_aws_v4_sign_params" in text


def test_compile_find_prefers_clang_on_path(tmp_path, monkeypatch):
    """With no preference, find() takes the clang found on PATH."""
    real_clang = shutil.which("clang")
    assert real_clang, "clang must be installed for the suite"
    (tmp_path / "clang").symlink_to(real_clang)
    monkeypatch.setenv("PATH", str(tmp_path))
    compiler = ScriptCompiler.find()
    assert compiler.name == "clang"
    assert compiler.command == (str(tmp_path / "clang"),)


def test_compile_find_falls_back_to_zig_without_clang(tmp_path, monkeypatch):
    """With no clang on PATH, find() takes ziglang's clang."""
    monkeypatch.setenv("PATH", str(tmp_path))
    compiler = ScriptCompiler.find()
    assert compiler.name == "zig"
    assert compiler.command[1:] == ("-m", "ziglang", "cc")


def test_compile_find_zig_when_told():
    """find("zig") takes ziglang's clang, targeting bpfel-freestanding-none."""
    compiler = ScriptCompiler.find("zig")
    assert compiler.name == "zig"
    assert "bpfel-freestanding-none" in compiler.flags


def test_compile_find_explicit_path():
    """find(path) takes that clang-compatible binary."""
    real_clang = os.path.realpath(shutil.which("clang"))
    compiler = ScriptCompiler.find(real_clang)
    assert compiler.command == (real_clang,)


def test_compile_find_missing_binary_raises_config_error(tmp_path):
    """find() of a path that does not exist raises ConfigError saying what to install."""
    with pytest.raises(ConfigError, match="apt-get install clang"):
        ScriptCompiler.find(str(tmp_path / "no-such-clang"))


def test_compile_find_clang_missing_from_path_raises_config_error(tmp_path, monkeypatch):
    """find("clang") without clang on PATH raises ConfigError naming the package."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="apt-get install clang"):
        ScriptCompiler.find("clang")


def test_compile_find_rejects_binary_that_makes_no_bpf_object():
    """find() of a binary that exits 0 without writing a BPF object raises ConfigError."""
    with pytest.raises(ConfigError, match="cannot compile C to BPF"):
        ScriptCompiler.find(shutil.which("true"))


INLINE_CHECKS = r"""#include "zeroserve.h"

static int same(const char *a, const char *b, zs_u64 n)
{
    for (zs_u64 i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* Bit i of the result is set when check i fails. */
ZS_ENTRY zs_u64 entry(void)
{
    char buf[16];
    const char *path = "a/b/c";
    zs_u64 failed = 0;

    failed |= (zs_u64)(zs_strlen("") != 0 || zs_strlen("abc") != 3) << 0;
    failed |= (zs_u64)(zs_strcmp("abc", "abd") >= 0 || zs_strcmp("b", "a") <= 0 ||
                       zs_strcmp("abc", "abc") != 0 || zs_strcmp("ab", "abc") >= 0 ||
                       zs_strcmp("\xff", "a") <= 0) << 1;
    failed |= (zs_u64)(zs_strncmp("abcx", "abcy", 3) != 0 || zs_strncmp("abcx", "abcy", 4) >= 0 ||
                       zs_strncmp("a", "a", 10) != 0) << 2;
    failed |= (zs_u64)(zs_strcpy(buf, "hey") != buf || !same(buf, "hey", 4)) << 3;
    zs_strcpy(buf, "xxxxxxxx");
    zs_strncpy(buf, "ab", 5);
    failed |= (zs_u64)!same(buf, "ab\0\0\0xxx", 9) << 4;
    zs_strcpy(buf, "xxxxxxxx");
    zs_strncpy(buf, "abcdef", 3);
    failed |= (zs_u64)!same(buf, "abcxxxxx", 9) << 5;
    failed |= (zs_u64)(zs_stpcpy(buf, "hey") != buf + 3 || !same(buf, "hey", 4)) << 6;
    failed |= (zs_u64)(zs_strrchr(path, '/') != path + 3 || zs_strrchr(path, 'z') != NULL ||
                       zs_strrchr(path, '\0') != path + 5) << 7;
    failed |= (zs_u64)(zs_utoa10(0, buf, 2) != 1 || !same(buf, "0", 2)) << 8;
    failed |= (zs_u64)(zs_utoa10(4294967295u, buf, 11) != 10 || !same(buf, "4294967295", 11)) << 9;
    failed |= (zs_u64)(zs_utoa10(123, buf, 3) != -1 || zs_utoa10(5, NULL, 8) != -1) << 10;
    return failed;
}

ZS_CALL_ENTRY(next, input) { return input + 1; }
"""


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_sdk_inline_string_functions_behave_like_libc(compilers, compiler_name, tmp_path):
    """zs_strlen, zs_strcmp, zs_strncmp, zs_strcpy, zs_strncpy, zs_stpcpy, zs_strrchr and
    zs_utoa10, compiled and run in the VM, give the libc results (zs_utoa10: digits or -1)."""
    source = write_script(tmp_path, INLINE_CHECKS)
    program = Program.load_elf(compilers[compiler_name].compile(source, "inline.c"))
    run = program.run()
    assert run.start("zeroserve.request") == DONE
    assert run.result == 0, f"failed checks bitmask {run.result:#x}"


@pytest.mark.parametrize("compiler_name", COMPILERS)
def test_compile_call_entry_reads_handle_from_call_data(compilers, compiler_name, tmp_path):
    """A ZS_CALL_ENTRY function reads its input handle as a little-endian u64 at r1."""
    source = write_script(tmp_path, INLINE_CHECKS)
    program = Program.load_elf(compilers[compiler_name].compile(source, "inline.c"))
    run = program.run()
    call_data = run.alloc((41).to_bytes(8, "little"))
    assert run.start("zeroserve.call.next", args=(call_data,)) == DONE
    assert run.result == 42

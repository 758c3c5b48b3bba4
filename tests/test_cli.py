"""The `zeroserve` command: subcommands, --version, --help, one-line errors, JSON access log."""

import json
import socket
import subprocess
import sys
import tarfile

import pytest

from harness import EXAMPLE_SITE, ServerProcess, curl_status, write_tree
from zeroserve.core import __version__

ZS = [sys.executable, "-m", "zeroserve.core.cli"]


def run_cli(*args, timeout=30):
    return subprocess.run([*ZS, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments, code=None):
    assert result.returncode != 0 if code is None else result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zeroserve: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_version_prints_package_version():
    """--version prints the package version."""
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"zeroserve {__version__}"


def test_cli_help_lists_subcommands_and_run_flags():
    """--help names pack and run; run --help documents the original's flag names and the limits."""
    top = run_cli("--help")
    assert top.returncode == 0 and "pack" in top.stdout and "run" in top.stdout
    run_help = run_cli("run", "--help").stdout
    for flag in ("--addr", "--index", "--try-html", "--threads", "--validate-hostnames",
                 "--reload-signal-file", "--disable-request-logging", "--log-format", "--max-head-bytes",
                 "--max-body-bytes", "--header-timeout", "--idle-timeout", "--write-timeout",
                 "--max-connections", "--h2-max-streams", "--shutdown-timeout"):
        assert flag in run_help, flag


def test_cli_pack_writes_a_servable_tar(tmp_path):
    """`zeroserve pack DIR -o site.tar` packs the directory and reports what it stored."""
    output = tmp_path / "site.tar"
    result = run_cli("pack", str(EXAMPLE_SITE), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert output.stat().st_size > 0
    assert "packed" in result.stderr and str(output) in result.stderr


def test_cli_pack_compiles_scripts_to_objects(tmp_path):
    """pack compiles .zeroserve/scripts/*.c and stores the .o in place of the source."""
    source = tmp_path / "src"
    write_tree(source, {
        "index.html": "home",
        ".zeroserve/scripts/10-hello.c": '#include "zeroserve.h"\nZS_ENTRY zs_u64 entry(void) { return 0; }\n',
    })
    output = tmp_path / "site.tar"
    result = run_cli("pack", str(source), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert "1 scripts compiled" in result.stderr
    with tarfile.open(output) as tar:
        names = tar.getnames()
    assert ".zeroserve/scripts/10-hello.o" in names
    assert ".zeroserve/scripts/10-hello.c" not in names


def test_cli_pack_missing_directory_is_one_line_error(tmp_path):
    """Packing a directory that does not exist is one clear error line."""
    result = run_cli("pack", str(tmp_path / "nope"), "-o", str(tmp_path / "o.tar"))
    assert_one_line_error(result, "nope", code=1)


def test_cli_no_subcommand_is_usage_error():
    """Running without a subcommand is a one-line usage error with exit status 2."""
    assert_one_line_error(run_cli(), "COMMAND", code=2)


def tar_bytes_of(tmp_path):
    source = tmp_path / "src"
    write_tree(source, {"index.html": "x" * 1000, "b.txt": "b"})
    output = tmp_path / "ok.tar"
    assert run_cli("pack", str(source), "-o", str(output)).returncode == 0
    return output.read_bytes()


@pytest.mark.parametrize("case", ["missing", "not-a-tar", "truncated", "corrupt", "no-regular-files",
                                  "directory"])
def test_cli_run_bad_site_is_one_line_error(tmp_path, case):
    """An unusable site tar is refused at startup with one line naming the problem, exit status 1."""
    path = tmp_path / "site.tar"
    expected = {
        "missing": "cannot open",
        "not-a-tar": "not a tar",
        "truncated": "offset 1024",
        "corrupt": "offset 0",
        "no-regular-files": "does not contain any regular files",
        "directory": "is a directory",
    }[case]
    if case == "not-a-tar":
        path.write_text("hello, this is text and not a tar archive at all\n" * 20)
    elif case == "truncated":
        path.write_bytes(tar_bytes_of(tmp_path)[:1500])
    elif case == "corrupt":
        data = bytearray(tar_bytes_of(tmp_path))
        data[148:156] = b"0000001\0"  # wrong header checksum
        path.write_bytes(bytes(data))
    elif case == "no-regular-files":
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("emptydir")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    elif case == "directory":
        path.mkdir()
    result = run_cli("run", "--addr", "127.0.0.1:0", "--threads", "1", str(path))
    assert_one_line_error(result, expected, code=1)


def test_cli_run_port_in_use_is_one_line_error(tmp_path):
    """An address already taken by another socket is one error line naming the address."""
    tar = tmp_path / "site.tar"
    tar.write_bytes(tar_bytes_of(tmp_path))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("run", "--addr", f"127.0.0.1:{port}", "--threads", "1", str(tar))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-1] == (f"zeroserve: error: cannot listen on 127.0.0.1:{port}: the port is already in "
                         f"use; stop the other server or choose another --addr")


@pytest.mark.parametrize("flags, fragment", [
    (("--threads", "0"), "--threads"),
    (("--threads", "many"), "--threads"),
    (("--addr", "localhost"), "IP:PORT"),
    (("--addr", "127.0.0.1:99999"), "IP:PORT"),
    (("--max-body-bytes", "-1"), "--max-body-bytes"),
    (("--header-timeout", "0"), "--header-timeout"),
    (("--log-format", "xml"), "--log-format"),
    (("--no-such-flag",), "--no-such-flag"),
], ids=["threads-zero", "threads-word", "addr-host", "addr-port", "body-negative", "timeout-zero",
        "log-format", "unknown"])
def test_cli_bad_flag_value_is_one_line_error(flags, fragment):
    """A bad flag value is one usage error line naming the flag, exit status 2."""
    result = run_cli("run", *flags, "site.tar")
    assert_one_line_error(result, fragment, code=2)


def test_cli_json_log_format_writes_json_lines(request, make_site):
    """--log-format json writes each access-log line as a JSON object with every field."""
    server = ServerProcess(make_site({"a.txt": "alpha"}), "--log-format", "json")
    request.addfinalizer(lambda: server.proc.poll() is None and server.stop())
    server.start()
    assert curl_status(server.url("/a.txt?x=1"), "--http2-prior-knowledge")[1] == 200
    line = server.wait_for(r'^\{.*"path":"/a\.txt\?x=1"').string
    record = json.loads(line)
    assert record["method"] == "GET" and record["status"] == 200 and record["bytes"] == 5
    assert record["protocol"] == "HTTP/2" and record["client"].startswith("127.0.0.1:")
    assert set(record) == {"time", "id", "client", "method", "path", "status", "bytes", "duration_ms",
                           "protocol"}


def test_cli_disable_request_logging_writes_no_access_lines(request, make_site):
    """--disable-request-logging serves requests without access-log lines."""
    server = ServerProcess(make_site({"a.txt": "alpha"}), "--disable-request-logging")
    request.addfinalizer(lambda: server.proc.poll() is None and server.stop())
    server.start()
    for _ in range(3):
        assert curl_status(server.url("/a.txt"), "--http1.1")[1] == 200
    assert server.stop() == 0
    assert server.count(r"\[request\]") == 0
    assert server.count(r"^stopped$") == 1

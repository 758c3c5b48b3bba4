"""Plugins: discovery by entry point, --plugins errors, helper registration, every hook, and the third-party example.

A "recorder" plugin is installed for these tests the way pip installs one:
a module and a `*.dist-info` directory with its entry point, on the server's
PYTHONPATH. Each of its hooks appends a line to the file `--recorder-log`
names, and its helper `zs_recorder_state` answers the per-world state. The
geoip-like example plugin is pip-installed into the test environment.
"""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import REPO, ServerProcess, curl, curl_status, start_server, wait_until, write_tree
from tls_pki import make_test_pki
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler
from zeroserve.core.errors import ConfigError
from zeroserve.core.plugins import (
    build_helper_table, build_plugin_manager, installed_plugins,
)
from zeroserve.sdk import HelperSpec, hookimpl

RECORDER = textwrap.dedent('''
    """A test plugin that records every hook call in the file --recorder-log names."""
    import os
    from zeroserve.core.errors import ConfigError
    from zeroserve.sdk import HelperError, HelperSpec, hookimpl

    _log = []  # the log's descriptor, opened by the supervisor before the workers drop their privileges

    def _record(config, line):
        path = config.options.recorder_log
        if path and not _log:
            _log.append(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        if _log:
            os.write(_log[0], f"{os.getpid()} {line}\\n".encode())

    @hookimpl
    def zeroserve_add_options(parser):
        parser.add_argument("--recorder-log", metavar="FILE", help="where the recorder writes hook calls")
        parser.add_argument("--recorder-refuse", action="store_true", help="fail zeroserve_configure")

    @hookimpl
    def zeroserve_configure(config):
        if config.options.recorder_refuse:
            raise ConfigError("recorder: refusing to start because --recorder-refuse was given")
        _record(config, "configure")

    @hookimpl
    def zeroserve_known_helpers():
        return ["zs_recorder_state"]

    def recorder_state(call, out, out_len, *_):
        state = call.plugin_state("recorder")
        if state is None:
            raise HelperError("zs_recorder_state: no state")
        return call.write_cstring(out, out_len, state.encode())

    @hookimpl
    def zeroserve_register_helpers(config):
        _record(config, "register_helpers")
        return [HelperSpec("zs_recorder_state", function=recorder_state)]

    @hookimpl
    def zeroserve_world_state(config, site):
        _record(config, "world_state")
        return f"files={site.file_count}"

    @hookimpl
    def zeroserve_world_ready(world):
        _record(world.config, f"world_ready {world.generation}")

    @hookimpl
    def zeroserve_world_retired(world):
        _record(world.config, f"world_retired {world.generation}")

    @hookimpl
    def zeroserve_worker_started(config, worker_index):
        _record(config, f"worker_started {worker_index}")

    @hookimpl
    def zeroserve_configure_tls(tls, config):
        _record(config, "configure_tls")

    @hookimpl
    def zeroserve_unconfigure(config):
        _record(config, "unconfigure")
''')

STATE_SCRIPT = """#include "zeroserve.h"
extern zs_s64 zs_recorder_state(char *out, zs_u64 out_len);

ZS_ENTRY zs_u64 entry(void)
{
    char state[64];
    zs_s64 n = zs_recorder_state(state, sizeof state);
    zs_meta_set(ZS_STR("zs.response.header.x-recorder"), state, n);
    return 0;
}
"""

GEOIP_SCRIPT = """#include "zeroserve.h"
extern zs_s64 zs_geoip_country(const char *ip, zs_u64 ip_len, char *out, zs_u64 out_len);

ZS_ENTRY zs_u64 entry(void)
{
    char peer[64], country[8], bad[4];
    zs_req_peer(peer, sizeof peer);
    zs_s64 n = zs_geoip_country(ZS_STR(peer), country, sizeof country);
    if (n > 0)
        zs_meta_set(ZS_STR("zs.response.header.x-country"), ZS_STR(country));
    if (zs_geoip_country(ZS_STR("not an ip"), bad, sizeof bad) == -1)
        zs_meta_set(ZS_STR("zs.response.header.x-invalid"), ZS_STR("-1"));
    return 0;
}
"""


@pytest.fixture(scope="module")
def recorder_path(tmp_path_factory):
    """A directory holding the recorder plugin as an installed distribution, put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("recorder")
    (root / "zeroserve_recorder.py").write_text(RECORDER)
    info = root / "zeroserve_recorder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zeroserve-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zeroserve.plugins]\nrecorder = zeroserve_recorder\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        patch.syspath_prepend(str(root))
        yield root


@pytest.fixture(scope="module")
def compiler():
    return ScriptCompiler.find(None)


@pytest.fixture(scope="module")
def site_with(tmp_path_factory, compiler):
    """site_with({script name: C source}) -> a packed tar with an index page and those scripts."""
    counter = iter(range(1000))

    def make(scripts):
        base = tmp_path_factory.mktemp(f"plugsite{next(counter)}")
        files = {"index.html": "<p>plugins</p>"}
        files.update({f".zeroserve/scripts/{name}.c": source for name, source in scripts.items()})
        write_tree(base / "src", files)
        pack.build(base / "src", base / "site.tar", compiler=compiler)
        return base / "site.tar"

    return make


def zeroserve(*args, timeout=60):
    """Run the zeroserve command; the CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "zeroserve.core.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def recorded(path):
    return Path(path).read_text().splitlines() if Path(path).exists() else []


# -- discovery and errors ------------------------------------------------------------


def test_plugins_in_tree_found_by_entry_point():
    """The in-tree plugins are installed in the zeroserve.plugins entry-point group like any other."""
    assert {"oidc", "sigv4", "ratelimit", "tls_ech"} <= set(installed_plugins())


def test_plugins_unknown_name_lists_installed():
    """An unknown --plugins name is a ConfigError that lists the installed plugins."""
    with pytest.raises(ConfigError) as raised:
        build_plugin_manager(["nosuchplugin"])
    message = str(raised.value)
    assert "unknown plugin 'nosuchplugin' in --plugins" in message
    assert "ratelimit" in message and "tls_ech" in message


def test_plugins_unknown_name_stops_server(site_with):
    """`zeroserve run --plugins nosuchplugin` exits non-zero with the one-line error."""
    result = zeroserve("run", "--plugins", "nosuchplugin", "--addr", "127.0.0.1:0", str(site_with({})))
    assert result.returncode != 0
    assert "unknown plugin 'nosuchplugin' in --plugins; installed plugins:" in result.stderr
    assert "Traceback" not in result.stderr


class _Twice:
    """A plugin object registering a helper the core already has."""

    @hookimpl
    def zeroserve_register_helpers(self, config):
        return [HelperSpec("zs_now_ms", function=lambda call, *_: 0)]


def test_plugins_duplicate_helper_names_both():
    """Two plugins registering one helper name stop the build with an error naming both."""
    pm = build_plugin_manager([])
    pm.register(_Twice(), name="twice")
    with pytest.raises(ConfigError, match=r"helper zs_now_ms is registered twice: by plugin 'core' and by "
                                          r"plugin 'twice'"):
        build_helper_table(pm, None)


# -- every hook, through the recorder plugin in a real server -----------------------------


@pytest.fixture(scope="module")
def recorder_server(request, recorder_path, site_with, tmp_path_factory):
    log = tmp_path_factory.mktemp("reclog") / "hooks.log"
    tar = site_with({"state": STATE_SCRIPT})
    server = start_server(request, tar, "--plugins", "recorder", "--recorder-log", str(log))
    return server, log, tar


def test_hook_add_options(recorder_path):
    """A plugin's flags appear in `zeroserve run --help` once it is enabled with --plugins."""
    result = zeroserve("run", "--plugins", "recorder", "--help")
    assert result.returncode == 0
    assert "--recorder-log FILE" in result.stdout


def test_hook_configure(recorder_path, site_with):
    """A ConfigError from zeroserve_configure stops the server with its message."""
    result = zeroserve("run", "--plugins", "recorder", "--recorder-refuse", "--addr", "127.0.0.1:0",
                       str(site_with({})))
    assert result.returncode == 1
    assert "zeroserve: error: recorder: refusing to start because --recorder-refuse was given" in result.stderr


def test_hook_register_helpers(recorder_server):
    """A helper a plugin registers is callable from a script, and its result reaches the response."""
    server, log, _ = recorder_server
    _, status, _ = curl_status(server.url("/"))
    assert status == 200
    headers = curl("-D", "-", "-o", "/dev/null", server.url("/")).stdout.decode()
    assert re.search(r"(?im)^x-recorder: files=\d+\r$", headers)
    assert "register_helpers" in " ".join(recorded(log))


def test_hook_known_helpers(recorder_path, site_with):
    """A script calling a helper of an installed but disabled plugin fails to load, naming the flag to add."""
    result = zeroserve("check", str(site_with({"state": STATE_SCRIPT})))
    assert result.returncode == 1
    assert "helper zs_recorder_state is provided by plugin 'recorder'; add --plugins recorder" in result.stderr


def test_hook_world_state(recorder_server):
    """The per-world state a plugin builds is what its helper sees through HelperCall.plugin_state."""
    server, log, _ = recorder_server
    headers = curl("-D", "-", "-o", "/dev/null", server.url("/")).stdout.decode()
    assert "x-recorder: files=2" in headers.lower()  # index.html and the script
    assert any(line.endswith("world_state") for line in recorded(log))


def test_hook_world_ready(recorder_server):
    """zeroserve_world_ready runs for the first world and again for the world a reload builds."""
    server, log, _ = recorder_server
    assert any(line.endswith("world_ready 0") for line in recorded(log))
    server.signal(signal.SIGHUP)
    wait_until(lambda: any(line.endswith("world_ready 1") for line in recorded(log)))


def test_hook_world_retired(recorder_server):
    """After a reload, zeroserve_world_retired runs for the replaced world once its requests are done."""
    server, log, _ = recorder_server
    server.signal(signal.SIGHUP)
    wait_until(lambda: any(re.search(r"world_retired \d+$", line) for line in recorded(log)))


def test_hook_worker_started(recorder_server):
    """zeroserve_worker_started runs once in each worker process with its index."""
    server, log, _ = recorder_server
    wait_until(lambda: any(line.endswith("worker_started 0") for line in recorded(log)))


def test_hook_configure_tls(recorder_path, site_with, request, tmp_path_factory):
    """zeroserve_configure_tls runs when a world with an HTTPS listener is built."""
    pki = make_test_pki(tmp_path_factory.mktemp("pki"))
    log = tmp_path_factory.mktemp("tlslog") / "hooks.log"
    start_server(request, site_with({}), "--plugins", "recorder", "--recorder-log", str(log),
                 "--tls-addr", "127.0.0.1:0", "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key))
    wait_until(lambda: "configure_tls" in " ".join(recorded(log)))


def test_hook_unconfigure(recorder_path, site_with, tmp_path_factory):
    """zeroserve_unconfigure runs at graceful shutdown."""
    log = tmp_path_factory.mktemp("unconf") / "hooks.log"
    server = ServerProcess(site_with({}), "--plugins", "recorder", "--recorder-log", str(log)).start()
    assert server.stop() == 0
    assert any(line.endswith("unconfigure") for line in recorded(log))


# -- the third-party example plugin, pip-installed ----------------------------------------


@pytest.fixture(scope="module")
def geoip_installed(tmp_path_factory):
    """The examples/plugin-geoip-like package installed into this environment with pip (built in a copy)."""
    source = tmp_path_factory.mktemp("geoip") / "plugin-geoip-like"
    shutil.copytree(REPO / "examples" / "plugin-geoip-like", source)
    # pytest-xdist workers may get here at once; one pip at a time in the shared environment.
    with open(tmp_path_factory.getbasetemp().parent / "geoip-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        str(source)], check=True, capture_output=True, timeout=300)
    assert "geoip" in installed_plugins()


def test_plugins_third_party_helper_from_script(geoip_installed, site_with, request):
    """The pip-installed geoip plugin's helper answers a script: loopback is ZZ, garbage is -1."""
    server = start_server(request, site_with({"geo": GEOIP_SCRIPT}), "--plugins", "geoip")
    headers = curl("-D", "-", "-o", "/dev/null", server.url("/")).stdout.decode().lower()
    assert "x-country: zz" in headers
    assert "x-invalid: -1" in headers


def test_plugins_third_party_flag_and_reload(geoip_installed, site_with, request, tmp_path):
    """--geoip-ranges replaces the table, and a reload reads the changed file."""
    ranges = tmp_path / "ranges.csv"
    ranges.write_text("127.0.0.0/8,L1\n")
    server = start_server(request, site_with({"geo": GEOIP_SCRIPT}), "--plugins", "geoip",
                          "--geoip-ranges", str(ranges))
    assert "x-country: l1" in curl("-D", "-", "-o", "/dev/null", server.url("/")).stdout.decode().lower()
    ranges.write_text("127.0.0.0/8,L2\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "x-country: l2" in curl("-D", "-", "-o", "/dev/null", server.url("/")).stdout.decode().lower())


def test_plugins_third_party_not_enabled(geoip_installed, site_with):
    """Without --plugins geoip, a script using its helper is refused with the flag to add."""
    result = zeroserve("check", str(site_with({"geo": GEOIP_SCRIPT})))
    assert result.returncode == 1
    assert "helper zs_geoip_country is provided by plugin 'geoip'; add --plugins geoip" in result.stderr

"""Scripts end to end: the example scripts and a few test scripts, compiled with clang and with zig, in a real server.

One server per compiler serves the example site with the example scripts that
need no plugin and the test scripts below; curl is the client.
"""

import re
import shutil
import signal
import subprocess
import sys

import pytest

from harness import EXAMPLE_SITE, REPO, curl, curl_status, start_server, wait_until, write_tree
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler, sdk_header_text

HEADER = '#include "zeroserve.h"\n'
# The SDK example scripts that use core helpers only (the others need plugins); the example site
# brings its own (add_header.c, json_api.c, template.c).
CORE_EXAMPLES = ("basic_auth.c", "call_callee.c", "call_caller.c", "redirect.c")

TEST_SCRIPTS = {
    # Faults on /fault (an empty metadata key traps), spins forever on /spin.
    "50-trouble": HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    char path[32];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/fault") == 0) {
        zs_meta_set(ZS_STR("zs.response.header.x-before-fault"), ZS_STR("set"));
        zs_meta_set("", 0, ZS_STR("boom"));
    }
    if (zs_strcmp(path, "/spin") == 0)
        for (volatile zs_u64 i = 0;; i++) {
        }
    return 0;
}
""",
    # /hooked/...: a response hook reads the final head, turns a 404 into a 410 and adds a header.
    "60-hooks": HEADER + """
ZS_CALL_ENTRY(stamp, input)
{
    char type[64];
    zs_res_header(ZS_STR("content-type"), type, sizeof type);
    zs_meta_set(ZS_STR("zs.response.header.x-hook-saw"), ZS_STR(type));
    if (zs_res_status() == 404)
        zs_res_set_status(410);
    return input;
}

/* The first time: rerun the request scripts, which then answer themselves. */
ZS_CALL_ENTRY(again, input)
{
    char seen[8];
    if (zs_meta_get(ZS_STR("again.seen"), seen, sizeof seen) == 0) {
        zs_meta_set(ZS_STR("again.seen"), ZS_STR("1"));
        zs_res_continue_request();
    }
    return input;
}

ZS_ENTRY zs_u64 entry(void)
{
    char path[64];
    char seen[8];
    zs_req_path(path, sizeof path);
    if (zs_strncmp(path, ZS_STR("/hooked/")) == 0)
        zs_res_hook("", 0, ZS_STR("stamp"), zs_json_new_object());
    if (zs_strcmp(path, "/again") == 0) {
        if (zs_meta_get(ZS_STR("again.seen"), seen, sizeof seen) > 0)
            zs_respond(200, ZS_STR("second pass"));
        else
            zs_res_hook("", 0, ZS_STR("again"), zs_json_new_object());
    }
    if (zs_strcmp(path, "/outside-hook") == 0)
        zs_res_status();
    return 0;
}
""",
    # /config: answers the private .zeroserve/config.json plus the size of index.html.
    "70-static-json": HEADER + """
ZS_ENTRY zs_u64 entry(void)
{
    char path[32];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/config") != 0)
        return 0;
    zs_s64 config = zs_load_static_json(ZS_STR(".zeroserve/config.json"));
    zs_s64 meta = zs_load_file_metadata(ZS_STR("index.html"));
    zs_s64 missing = zs_load_static_json(ZS_STR("/index.html"));
    if (config < 0 || meta < 0 || missing != -1) {
        zs_respond(500, ZS_STR("lookup failed"));
        return 0;
    }
    zs_s64 size = zs_json_get(meta, ZS_STR("size"));
    zs_json_set(config, ZS_STR("index_size"), size);
    zs_json_respond(200, config);
    return 0;
}
""",
}

WELCOME = ("<html><body><p>from <zs-meta>page.client</zs-meta> via <zs-meta> page.method </zs-meta>"
           "</p></body></html>\n")
CONFIG_JSON = '{"site":"example","version":3}'


def make_site(directory, compiler, extra_scripts=TEST_SCRIPTS, output=None):
    """The example site with the example scripts and `extra_scripts`, packed with `compiler`."""
    shutil.copytree(EXAMPLE_SITE, directory)
    scripts = directory / ".zeroserve" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name in CORE_EXAMPLES:
        shutil.copy(REPO / "examples" / "scripts" / name, scripts / name)
    write_tree(directory, {f".zeroserve/scripts/{name}.c": text for name, text in extra_scripts.items()})
    write_tree(directory, {"welcome.html": WELCOME, ".zeroserve/config.json": CONFIG_JSON,
                           "private/index.html": "<p>members only</p>"})
    output = output or directory.parent / "site.tar"
    pack.build(directory, output, compiler=compiler)
    return output


@pytest.fixture(scope="module", params=["clang", "zig"])
def server(request, tmp_path_factory):
    """A server running the example scripts compiled with one compiler."""
    compiler = ScriptCompiler.find(request.param)
    tar = make_site(tmp_path_factory.mktemp(request.param) / "src", compiler)
    return start_server(request, tar, "--script-cpu-budget-ms", "1000")


def head(url, *args):
    """The response head of a GET as {lowercase name: value}, plus the status under ':status'."""
    text = curl("-sS", "-D", "-", "-o", "/dev/null", *args, url).stdout.decode("latin-1")
    lines = text.strip().split("\r\n")
    headers = {":status": int(lines[0].split()[1])}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def test_scripts_metadata_headers_on_static_file(server):
    """add_header's zs.response.header.* metadata becomes headers of a static file response."""
    headers = head(server.url("/about/"))
    assert headers[":status"] == 200
    assert headers["x-served-by"] == "zeroserve"
    assert headers["x-content-type-options"] == "nosniff"


def test_scripts_metadata_headers_on_404(server):
    """Metadata headers also go on the default 404."""
    headers = head(server.url("/no/such/page"))
    assert headers[":status"] == 404
    assert headers["referrer-policy"] == "same-origin"


def test_scripts_json_api(server):
    """json_api answers a JSON object with zs_json_respond and content-type application/json."""
    _, status, body = curl_status(server.url("/api/hello?name=Ada"))
    assert status == 200
    assert b'"greeting":"hello, Ada"' in body and b'"method":"GET"' in body
    assert head(server.url("/api/hello"))["content-type"] == "application/json"


def test_scripts_redirect_keeps_rest_and_query(server):
    """redirect answers 301 to the new section, keeping the rest of the path and the query."""
    headers = head(server.url("/old/a/b?x=1"))
    assert headers[":status"] == 301
    assert headers["location"] == "/new/a/b?x=1"


def test_scripts_basic_auth_gate(server):
    """basic_auth challenges without credentials and lets the right ones through to the file."""
    headers = head(server.url("/private/"))
    assert headers[":status"] == 401
    assert headers["www-authenticate"].startswith("Basic")
    _, status, body = curl_status(server.url("/private/"), "-u", "admin:zeroserve")
    assert (status, body) == (200, b"<p>members only</p>")
    assert curl_status(server.url("/private/"), "-u", "admin:wrong")[1] == 401


def test_scripts_template_pass(server):
    """template's metadata fills <zs-meta> in the page; the templated page has no validators."""
    _, status, body = curl_status(server.url("/welcome.html"))
    assert (status, body) == (200, WELCOME.replace("<zs-meta>page.client</zs-meta>", "127.0.0.1")
                              .replace("<zs-meta> page.method </zs-meta>", "GET").encode())
    headers = head(server.url("/welcome.html"))
    assert "etag" not in headers and "last-modified" not in headers and "accept-ranges" not in headers
    assert headers["content-length"] == str(len(body))


def test_scripts_zs_call_between_scripts(server):
    """call_caller gets its answer from call_callee through zs_call."""
    _, status, body = curl_status(server.url("/call/greet?name=Ada"))
    assert status == 200
    assert body == b'{"greeting":"hello, Ada"}'


def test_scripts_static_json_and_file_metadata(server):
    """zs_load_static_json reads private files by tar path; zs_load_file_metadata gives the size."""
    _, status, body = curl_status(server.url("/config"))
    size = (EXAMPLE_SITE / "index.html").stat().st_size
    assert (status, body) == (200, f'{{"index_size":{size},"site":"example","version":3}}'.encode())


def test_scripts_response_hook(server):
    """A response hook sees the final head, can change the status, and its metadata headers apply."""
    headers = head(server.url("/hooked/missing"))
    assert headers[":status"] == 410
    assert headers["x-hook-saw"] == "text/html; charset=utf-8"  # the site's 404.html


def test_scripts_hook_continue_request_reruns_scripts(server):
    """zs_res_continue_request drops the response and reruns the scripts with the same metadata."""
    assert curl_status(server.url("/again"))[1:] == (200, b"second pass")


def test_scripts_fault_gives_500_naming_request(server):
    """A faulting script gets a 500 whose body names the request id, logged once with script, section and pc."""
    start = len(server.lines)
    _, status, body = curl_status(server.url("/fault"))
    assert status == 500
    request_id = re.search(rb"request (\S+)\)", body).group(1).decode()
    line = server.wait_for(rf"\[script_runtime\] {re.escape(request_id)}: script '50-trouble.o' section "
                           r"'zeroserve.request' failed at pc \d+: .*zs_meta_set", start=start)
    assert b"zs_meta_set" not in body and b"pc" not in body
    assert head(server.url("/fault"))["x-before-fault"] == "set"
    assert curl_status(server.url("/about/"))[1] == 200
    assert line


def test_scripts_hook_only_helper_outside_hook_faults(server):
    """zs_res_status outside a response hook is a fault (500)."""
    assert curl_status(server.url("/outside-hook"))[1] == 500


def test_scripts_spinning_request_503_others_served(server):
    """An endless script gets a 503 after its CPU budget while other requests on the same worker are served."""
    start = len(server.lines)
    spin = subprocess.Popen(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", server.url("/spin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    served_meanwhile = 0
    while spin.poll() is None:
        _, status, _ = curl_status(server.url("/about/"))
        assert status == 200
        if spin.poll() is None:
            served_meanwhile += 1
    output = spin.stdout.read().decode()
    assert output.endswith("503")
    assert served_meanwhile >= 1
    server.wait_for(r"script '50-trouble.o' section 'zeroserve.request' stopped: .*--script-cpu-budget-ms 1000",
                    start=start)


# -- the command line around scripts ------------------------------------------------------


def zeroserve(*args):
    return subprocess.run([sys.executable, "-m", "zeroserve.core.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_scripts_sdk_command_prints_header():
    """`zeroserve sdk` prints the SDK header."""
    result = zeroserve("sdk")
    assert result.returncode == 0
    assert result.stdout == sdk_header_text()


def test_scripts_check_command(tmp_path):
    """`zeroserve check` verifies every script of a good tar and refuses a tar with a bad one."""
    compiler = ScriptCompiler.find(None)
    good = make_site(tmp_path / "good", compiler, {}, tmp_path / "good.tar")
    result = zeroserve("check", str(good))
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ scripts loaded and verified", result.stdout + result.stderr)
    bad_source = {"bad": HEADER + "extern zs_s64 zs_no_such_helper(void);\n"
                                  "ZS_ENTRY zs_u64 entry(void) { zs_no_such_helper(); return 0; }\n"}
    bad = make_site(tmp_path / "bad", compiler, bad_source, tmp_path / "bad.tar")
    result = zeroserve("check", str(bad))
    assert result.returncode == 1
    assert "script 'bad.o'" in result.stderr and "zs_no_such_helper" in result.stderr


def test_scripts_reload_with_broken_script_keeps_old(tmp_path, request):
    """A SIGHUP with a script that fails to load keeps the old world serving and logs why; a fixed one loads."""
    compiler = ScriptCompiler.find(None)
    tar = tmp_path / "site.tar"
    make_site(tmp_path / "v1", compiler, {}, tar)
    server = start_server(request, tar)
    assert head(server.url("/"))["x-served-by"] == "zeroserve"
    broken = {"bad": HEADER + "extern zs_s64 zs_no_such_helper(void);\n"
                              "ZS_ENTRY zs_u64 entry(void) { zs_no_such_helper(); return 0; }\n"}
    make_site(tmp_path / "v2", compiler, broken, tmp_path / "v2.tar")
    (tmp_path / "v2.tar").replace(tar)
    start = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"script 'bad.o'.*zs_no_such_helper", start=start)
    assert head(server.url("/"))["x-served-by"] == "zeroserve"
    fixed = {"zz-marker": HEADER + 'ZS_ENTRY zs_u64 entry(void) { zs_meta_set(ZS_STR("zs.response.header.x-v"), '
                                   'ZS_STR("3")); return 0; }\n'}
    make_site(tmp_path / "v3", compiler, fixed, tmp_path / "v3.tar")
    (tmp_path / "v3.tar").replace(tar)
    server.signal(signal.SIGHUP)
    wait_until(lambda: head(server.url("/")).get("x-v") == "3")

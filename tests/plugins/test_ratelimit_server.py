"""The ratelimit plugin in a real server: workers sharing limits, reloads, restarts with a snapshot, the bucket limit, the 429 example with curl, and Redis shared by two servers."""

import re
import signal

import msgpack
import pytest

from harness import (
    REPO, ServerProcess, curl, curl_status, parse_responses, start_server, wait_until, write_tree,
)
from test_ratelimit_redis import RedisServer
from zeroserve.core import pack
from zeroserve.core.compile import ScriptCompiler

# /limited?key=K: zs_rate_limit(K, 0, 0, 3); the body is the result code, the
# status 200 when allowed and 429 otherwise. Other paths are served normally.
LIMITED_SCRIPT = r"""
#include "zeroserve.h"

ZS_ENTRY zs_u64 entry(void)
{
    char path[32];
    char key[128];
    char code[8];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/limited") != 0)
        return 0;
    zs_s64 key_len = zs_req_query_param(ZS_STR("key"), key, sizeof key);
    if (key_len < 0)
        key_len = 0;
    zs_s64 result = zs_rate_limit(key, (zs_u64)key_len, 0, 0, 3);
    int digits = zs_utoa10(result < 0 ? 9 : (unsigned)result, code, sizeof code);
    zs_respond(result == 0 ? 200 : 429, code, (zs_u64)digits);
    return 0;
}
"""


@pytest.fixture(scope="module")
def compiler():
    return ScriptCompiler.find(None)


def site_with(directory, compiler, scripts):
    """A site tar with index.html and the given {file name: C source} scripts."""
    write_tree(directory, {"index.html": "<p>hello</p>\n"})
    write_tree(directory, {f".zeroserve/scripts/{name}": source for name, source in scripts.items()})
    output = directory.parent / f"{directory.name}.tar"
    pack.build(directory, output, compiler=compiler)
    return output


@pytest.fixture(scope="module")
def limited_tar(compiler, tmp_path_factory):
    return site_with(tmp_path_factory.mktemp("limited") / "site", compiler, {"10-limited.c": LIMITED_SCRIPT})


def limited(server, key):
    """(status, body) of /limited?key=key on a new connection."""
    _, status, body = curl_status(server.url(f"/limited?key={key}"))
    return status, body.decode()


def sequence(server, key, count):
    return [limited(server, key) for _ in range(count)]


ALLOWED, LIMITED = (200, "0"), (429, "3")


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    return tmp_path_factory.mktemp("state") / "ratelimit.msgpack"


@pytest.fixture(scope="module")
def server(request, limited_tar, state_file):
    """Two workers sharing one table, with a snapshot file."""
    return start_server(request, limited_tar, "--plugins", "ratelimit", "--ratelimit-state", str(state_file),
                        workers=2)


def test_ratelimit_server_limit_and_keys(server):
    """A key gets its 3 per hour, then 429 with code 3; another key is independent; a bad key gets -1."""
    assert sequence(server, "alpha", 4) == [ALLOWED] * 3 + [LIMITED]
    assert limited(server, "beta") == ALLOWED
    assert limited(server, "") == (429, "9")


def test_ratelimit_server_workers_share_one_table(server):
    """Requests spread over two workers on fresh connections get the limit once, not once per worker."""
    assert len(server.worker_pids()) == 2
    results = sequence(server, "shared", 20)
    assert results == [ALLOWED] * 3 + [LIMITED] * 17
    # Request ids start with a per-worker prefix: both workers answered some of them.
    pattern = r"\[request\] \S+ (\w+)-\w+ \S+ GET /limited\?key=shared "
    wait_until(lambda: server.count(pattern) == 20)
    workers = {re.search(pattern, line).group(1) for line in server.lines if re.search(pattern, line)}
    assert len(workers) == 2


def test_ratelimit_server_state_survives_reload(server, limited_tar, compiler, tmp_path):
    """SIGHUP loads a changed site into a new world but keeps the buckets."""
    assert sequence(server, "reload", 3) == [ALLOWED] * 3
    source = tmp_path / "site"
    write_tree(source, {"index.html": "<p>reloaded</p>\n", ".zeroserve/scripts/10-limited.c": LIMITED_SCRIPT})
    pack.build(source, limited_tar, compiler=compiler)
    server.signal(signal.SIGHUP)
    wait_until(lambda: curl_status(server.url("/"))[2] == b"<p>reloaded</p>\n")
    assert limited(server, "reload") == LIMITED
    assert limited(server, "other-after-reload") == ALLOWED


def test_ratelimit_server_state_survives_restart(request, limited_tar, tmp_path):
    """A graceful stop writes the snapshot and the next start restores it."""
    state = tmp_path / "state.msgpack"
    flags = ("--plugins", "ratelimit", "--ratelimit-state", str(state))
    first = start_server(request, limited_tar, *flags)
    assert sequence(first, "persist", 4) == [ALLOWED] * 3 + [LIMITED]
    assert limited(first, "once") == ALLOWED
    assert first.stop() == 0
    document = msgpack.unpackb(state.read_bytes())
    assert {bytes(entry[1]) for entry in document["buckets"]} == {b"persist", b"once"}
    second = start_server(request, limited_tar, *flags)
    assert limited(second, "persist") == LIMITED
    assert sequence(second, "once", 3) == [ALLOWED] * 2 + [LIMITED]


def test_ratelimit_server_corrupt_snapshot_is_ignored(request, limited_tar, tmp_path):
    """A corrupt snapshot is reported on stderr and the server starts with empty buckets."""
    state = tmp_path / "state.msgpack"
    state.write_bytes(b"\x93this is not a snapshot")
    server = start_server(request, limited_tar, "--plugins", "ratelimit", "--ratelimit-state", str(state))
    server.wait_for(r"\[ratelimit\] ignoring the saved state: .*state\.msgpack")
    assert sequence(server, "fresh", 4) == [ALLOWED] * 3 + [LIMITED]


def test_ratelimit_server_bucket_limit(request, limited_tar):
    """With --max-rate-limit-buckets 2 a third key gets 4 while the first two keep working."""
    server = start_server(request, limited_tar, "--plugins", "ratelimit", "--max-rate-limit-buckets", "2")
    assert [limited(server, key) for key in ("a", "b", "c", "a")] == [ALLOWED, ALLOWED, (429, "4"), ALLOWED]


def test_ratelimit_server_needs_the_plugin(limited_tar):
    """Without --plugins ratelimit the script is refused with a message naming the plugin."""
    server = ServerProcess(limited_tar)
    with pytest.raises(AssertionError):
        server.start(timeout=10)
    server.stop()
    assert any("--plugins ratelimit" in line for line in server.lines)


@pytest.mark.parametrize("flags, message", [
    (("--max-rate-limit-buckets", "0"), "--max-rate-limit-buckets must be between 1 and"),
    (("--ratelimit-redis", "http://127.0.0.1:1/"), "--ratelimit-redis http://127.0.0.1:1/: .*redis://host:port/db"),
    (("--ratelimit-redis", "redis://127.0.0.1:1/0", "--ratelimit-state", "x"), "drop one of the two flags"),
    (("--ratelimit-redis-timeout-ms", "0"), "--ratelimit-redis-timeout-ms must be positive"),
], ids=["no-buckets", "not-redis-url", "state-with-redis", "zero-timeout"])
def test_ratelimit_server_refuses_bad_flags(limited_tar, flags, message):
    """A bad ratelimit flag stops the server at start with a message naming the flag."""
    server = ServerProcess(limited_tar, "--plugins", "ratelimit", *flags)
    with pytest.raises(AssertionError):
        server.start(timeout=10)
    assert server.stop() != 0
    assert any(re.search(message, line) for line in server.lines), server.lines


# -- the 429 example ---------------------------------------------------------------


@pytest.fixture(scope="module")
def example_tar(compiler, tmp_path_factory):
    source = (REPO / "examples" / "scripts" / "ratelimit_429.c").read_text()
    return site_with(tmp_path_factory.mktemp("example") / "site", compiler, {"10-ratelimit_429.c": source})


def assert_burst_then_429(server):
    """A burst of 10 requests passes and the next gets 429 with Retry-After: 1 (ratelimit_429.c)."""
    # One curl, one kept-alive connection: the 15 requests take milliseconds,
    # far less than the 200 ms in which a token comes back.
    result = curl("-i", *[server.url("/")] * 15)
    responses = parse_responses(result.stdout)
    statuses = [response.status for response in responses]
    assert statuses[:10] == [200] * 10
    assert 429 in statuses
    limited = responses[statuses.index(429)]
    assert limited.headers["retry-after"] == "1"
    assert limited.body == b"Too Many Requests\n"


def test_ratelimit_example_429_with_curl(request, example_tar):
    """examples/scripts/ratelimit_429.c: a burst of 10 requests passes, the next gets 429 with Retry-After: 1."""
    assert_burst_then_429(start_server(request, example_tar, "--plugins", "ratelimit"))


# -- Redis -----------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_ratelimit_redis_two_servers_share_and_survive_outage(request, limited_tar, redis_server):
    """Two servers on one Redis share a key's limit; with Redis down "allow" allows and "deny" denies; after a restart limits apply again."""
    allow = start_server(request, limited_tar, "--plugins", "ratelimit", "--ratelimit-redis", redis_server.url,
                         "--ratelimit-redis-on-error", "allow", "--ratelimit-redis-timeout-ms", "200")
    deny = start_server(request, limited_tar, "--plugins", "ratelimit", "--ratelimit-redis", redis_server.url,
                        "--ratelimit-redis-on-error", "deny", "--ratelimit-redis-timeout-ms", "200")
    assert [limited(server, "both") for server in (allow, deny, allow, deny)] == [ALLOWED] * 3 + [LIMITED]
    assert limited(allow, "both") == LIMITED

    redis_server.kill()
    assert sequence(allow, "down", 4) == [ALLOWED] * 4
    assert sequence(deny, "down", 2) == [LIMITED] * 2
    allow.wait_for(r"\[ratelimit\] redis .* failed .*failure 4: allowing")
    deny.wait_for(r"\[ratelimit\] redis .* failed .*failure 2: denying")

    redis_server.start(redis_server.port)
    assert [limited(server, "back") for server in (deny, allow, deny, allow)] == [ALLOWED] * 3 + [LIMITED]


def test_ratelimit_redis_example_429_with_curl(request, example_tar, redis_server):
    """The 429 example on the Redis backend: the async zs_rate_limit_ex gives the same burst, 429 and Retry-After."""
    assert_burst_then_429(start_server(request, example_tar, "--plugins", "ratelimit",
                                       "--ratelimit-redis", redis_server.url))

"""The ratelimit plugin's Redis backend against a real redis-server: shared buckets, the Lua script, outages and both on-error policies."""

import asyncio
import os
import signal
import socket
import subprocess
import time

import pytest
import redis

from zeroserve.plugins.ratelimit.redis_limiter import RedisLimiter, ex_limits, window_limits
from zeroserve.plugins.ratelimit.table import KIND_EX, KIND_WINDOWS


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of its own on a free loopback port, in a test directory."""

    def __init__(self, directory):
        self.directory = directory
        self.port = None
        self.process = None

    def start(self, port=None):
        for _ in range(5):
            self.port = port or free_port()
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self.process.kill()
            self.process.wait()
            if port:
                time.sleep(0.2)  # the same port may still be closing: try it again
        raise RuntimeError(f"redis-server did not start: {self.process.stdout.read().decode(errors='replace')}")

    def _wait_ready(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.cli("ping").strip() == "PONG":
                return True
            time.sleep(0.02)
        return False

    def cli(self, *args):
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return done.stdout

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            if os.name == "posix":
                self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def checks(loop, limiter, kind, key, limits, count):
    """(code, retry-after ms) of `count` checks in a row."""
    async def run():
        return [await limiter.check(kind, key, limits) for _ in range(count)]
    return loop.run_until_complete(run())


def codes(loop, limiter, kind, key, limits, count):
    """The codes alone of `count` checks in a row."""
    return [code for code, _ in checks(loop, limiter, kind, key, limits, count)]


def test_ratelimit_redis_window_sequence(redis_server, loop):
    """The per-minute limit allows its burst, then answers 2; the per-second limit is checked first."""
    limiter = RedisLimiter(redis_server.url, "allow", 1000)
    results = checks(loop, limiter, KIND_WINDOWS, b"seq", window_limits(0, 3, 0), 5)
    assert [code for code, _ in results] == [0, 0, 0, 2, 2]
    assert [code for code, _ in checks(loop, limiter, KIND_WINDOWS, b"seq2", window_limits(1, 1, 5), 2)] == [0, 1]
    assert [code for code, _ in checks(loop, limiter, KIND_WINDOWS, b"seq3", window_limits(0, 0, 1), 2)] == [0, 3]
    assert limiter.failures == 0


def test_ratelimit_redis_ex_retry_after(redis_server, loop):
    """zs_rate_limit_ex through Redis reports the wait until the next token, in ms."""
    limiter = RedisLimiter(redis_server.url, "allow", 1000)
    results = checks(loop, limiter, KIND_EX, b"ex", ex_limits(1000, 2), 3)
    assert results[:2] == [(0, 0), (0, 0)]
    code, retry_after_ms = results[2]
    assert code == 1 and 0 < retry_after_ms <= 1000


def test_ratelimit_redis_buckets_expire_when_full(redis_server, loop):
    """A bucket key carries a TTL of the time until it is full again, so Redis reclaims it."""
    limiter = RedisLimiter(redis_server.url, "allow", 1000)
    checks(loop, limiter, KIND_WINDOWS, b"ttl", window_limits(0, 0, 2), 1)
    ttl_ms = redis.Redis(port=redis_server.port).pttl(b"zs:rl:\x00ttl")
    assert 1_790_000 <= ttl_ms <= 1_800_001  # one hour token of two: full again in 30 minutes


def test_ratelimit_redis_limiters_share_buckets(redis_server, loop):
    """Two limiters (two servers) on one Redis draw from the same bucket."""
    first = RedisLimiter(redis_server.url, "allow", 1000)
    second = RedisLimiter(redis_server.url, "allow", 1000)
    limits = window_limits(0, 0, 4)
    codes = [code for limiter in (first, second, first, second, first)
             for code, _ in checks(loop, limiter, KIND_WINDOWS, b"both", limits, 1)]
    assert codes == [0, 0, 0, 0, 3]


def test_ratelimit_redis_outage_policies_and_reconnect(tmp_path, loop):
    """Redis killed: "allow" allows and "deny" denies, each failure counted; after a restart the limits apply again."""
    server = RedisServer(tmp_path).start()
    try:
        allow = RedisLimiter(server.url, "allow", 200)
        deny = RedisLimiter(server.url, "deny", 200)
        limits = window_limits(0, 0, 1)
        assert codes(loop, allow, KIND_WINDOWS, b"o", limits, 2) == [0, 3]
        server.kill()
        assert checks(loop, allow, KIND_WINDOWS, b"o", limits, 2) == [(0, 0), (0, 0)]
        assert checks(loop, deny, KIND_WINDOWS, b"o", limits, 2) == [(3, 1000), (3, 1000)]
        assert checks(loop, deny, KIND_EX, b"o", ex_limits(1000, 5), 1) == [(1, 1000)]
        assert (allow.failures, deny.failures) == (2, 3)
        server.start(server.port)  # a new, empty Redis on the same address
        assert codes(loop, allow, KIND_WINDOWS, b"o", limits, 2) == [0, 3]
        assert allow.failures == 2
    finally:
        server.stop()


def test_ratelimit_redis_hung_server_times_out(tmp_path, loop):
    """A Redis that stops answering (SIGSTOP) makes the check time out and the policy answer."""
    server = RedisServer(tmp_path).start()
    try:
        deny = RedisLimiter(server.url, "deny", 100)
        assert checks(loop, deny, KIND_WINDOWS, b"h", window_limits(5, 0, 0), 1) == [(0, 0)]
        server.process.send_signal(signal.SIGSTOP)
        assert checks(loop, deny, KIND_WINDOWS, b"h", window_limits(5, 0, 0), 1) == [(1, 1000)]
        assert deny.failures == 1
        server.process.send_signal(signal.SIGCONT)
    finally:
        server.stop()

"""Token buckets kept in Redis, so that every server pointing at one Redis shares the limits: one Lua script call per check.

The buckets are the same GCRA as the local table (see native/ratelimit), with
Redis's own clock (TIME) so that servers on different machines agree. Each
bucket is a hash {result code: theoretical arrival time in µs} that expires
once it is full again. When Redis cannot be reached the configured policy
answers instead (allow, or deny as the first limit), and the failure is
logged and counted; the client reconnects by itself on a later check.
"""

import asyncio
import logging
import os

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = ["KEY_PREFIX", "ON_ERROR_POLICIES", "RedisLimiter", "window_limits", "ex_limits"]

log = logging.getLogger(__name__)

KEY_PREFIX = b"zs:rl:"
ON_ERROR_POLICIES = ("allow", "deny")
US_PER_SEC = 1_000_000
# A bucket's waits are capped so that µs timestamps stay exact in Lua's doubles.
TOLERANCE_CAP_US = 1 << 40
# Retry-After that zs_rate_limit_ex reports when Redis is down and the policy denies.
UNREACHABLE_RETRY_AFTER_MS = 1000
# Connections one worker keeps to Redis; more concurrent checks wait for one.
POOL_SIZE = 32

# KEYS[1]: the bucket. ARGV: (result code, interval µs, tolerance µs) per limit,
# checked in order. Answers {0, 0}, or {code of the first limit without a
# token, µs until it has one}; a denied check writes nothing.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local count = #ARGV / 3
local fields = {}
for i = 1, count do fields[i] = ARGV[3 * i - 2] end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local update = {}
local expires = now
for i = 1, count do
  local tat = math.max(tonumber(stored[i]) or 0, now)
  local tolerance = tonumber(ARGV[3 * i])
  if tat - now > tolerance then
    return {tonumber(fields[i]), tat - tolerance - now}
  end
  tat = tat + tonumber(ARGV[3 * i - 1])
  update[2 * i - 1] = fields[i]
  update[2 * i] = string.format('%d', tat)
  if tat > expires then expires = tat end
end
redis.call('HSET', KEYS[1], unpack(update))
redis.call('PEXPIRE', KEYS[1], math.floor((expires - now) / 1000) + 1)
return {0, 0}
"""


def _limit(code, interval_us, burst):
    return (code, interval_us, min(interval_us * (burst - 1), TOLERANCE_CAP_US))


def window_limits(per_second, per_minute, per_hour):
    """The script arguments of zs_rate_limit's three limits (0 = unlimited, left out)."""
    args = []
    for code, (count, window_s) in enumerate(((per_second, 1), (per_minute, 60), (per_hour, 3600)), 1):
        if count:
            args.extend(_limit(code, window_s * US_PER_SEC // count, count))
    return tuple(args)


def ex_limits(rate_per_sec_milli, burst):
    """The script arguments of zs_rate_limit_ex's bucket (rate and burst already checked non-zero)."""
    return _limit(1, 1000 * US_PER_SEC // rate_per_sec_milli, burst)


class RedisLimiter:
    """The Redis backend of one server process: its URL, error policy and failure count; the client is made per process."""

    def __init__(self, url, on_error, timeout_ms):
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"on-error policy must be one of {', '.join(ON_ERROR_POLICIES)}, got {on_error!r}")
        Redis.from_url(url)  # checks the URL's syntax now rather than at the first request
        self.url = url
        self.on_error = on_error
        self.timeout = timeout_ms / 1000
        self.failures = 0
        self._pid = None
        self._client = None
        self._script = None
        self._slots = None

    def _gcra(self):
        """The script runner of this process (a client must not cross a fork: made on first use)."""
        if self._pid != os.getpid():
            # One retry, so that a connection Redis dropped (it restarted) is
            # replaced transparently; an unreachable Redis still fails fast.
            self._client = Redis.from_url(self.url, max_connections=POOL_SIZE, socket_timeout=self.timeout,
                                          socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 1))
            # More concurrent checks than connections wait here for one (the
            # pool itself would refuse them).
            self._slots = asyncio.Semaphore(POOL_SIZE)
            self._script = self._client.register_script(GCRA_SCRIPT)
            self._pid = os.getpid()
        return self._script

    async def check(self, kind, key, limits):
        """(0, 0) when allowed, else (code of the first limit exceeded, ms until a token); the policy's answer when Redis fails."""
        if not limits:
            return 0, 0
        gcra = self._gcra()
        try:
            async with self._slots:
                code, wait_us = await gcra(keys=[KEY_PREFIX + bytes((kind,)) + key], args=limits)
        except RedisError as error:
            self.failures += 1
            log.warning("[ratelimit] redis %s failed (%s: %s), failure %d: %s the request",
                        self.url, type(error).__name__, error, self.failures,
                        "allowing" if self.on_error == "allow" else "denying")
            if self.on_error == "allow":
                return 0, 0
            return limits[0], UNREACHABLE_RETRY_AFTER_MS
        return int(code), -(-int(wait_us) // 1000)

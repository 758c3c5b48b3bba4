"""zs_rate_limit and zs_rate_limit_ex as async helpers on the Redis backend: read the arguments, suspend the script while Redis answers.

Same arguments and results as the C helpers of the local table (native/ratelimit).
Everything is read from the script's memory before the helper returns; the
one write after the wait, zs_rate_limit_ex's retry-after, goes to a pointer
checked (by writing 0 to it) before the wait, while the script is suspended.
"""

from zeroserve.plugins.ratelimit.redis_limiter import ex_limits, window_limits
from zeroserve.plugins.ratelimit.table import BAD_ARGS, KEY_MAX, KIND_EX, KIND_WINDOWS

__all__ = ["RedisHelpers"]

_ZERO_MS = (0).to_bytes(8, "little")


async def _result(value):
    return value


class RedisHelpers:
    """The two helpers, bound to one RedisLimiter."""

    def __init__(self, limiter):
        self.limiter = limiter

    def rate_limit(self, call, key, key_len, per_second, per_minute, per_hour):
        if not 1 <= key_len <= KEY_MAX:
            return _result(BAD_ARGS)
        return self._window_check(call.read(key, key_len), window_limits(per_second, per_minute, per_hour))

    async def _window_check(self, key, limits):
        code, _ = await self.limiter.check(KIND_WINDOWS, key, limits)
        return code

    def rate_limit_ex(self, call, key, key_len, rate_per_sec_milli, burst, out_retry_after_ms):
        if out_retry_after_ms:
            call.write(out_retry_after_ms, _ZERO_MS)
        if not 1 <= key_len <= KEY_MAX or not rate_per_sec_milli or not burst:
            return _result(BAD_ARGS)
        return self._ex_check(call.run, call.read(key, key_len), ex_limits(rate_per_sec_milli, burst),
                              out_retry_after_ms)

    async def _ex_check(self, run, key, limits, out_retry_after_ms):
        code, wait_ms = await self.limiter.check(KIND_EX, key, limits)
        if code and out_retry_after_ms:
            run.write(out_retry_after_ms, wait_ms.to_bytes(8, "little"))
        return code

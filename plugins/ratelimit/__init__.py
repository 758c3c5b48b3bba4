"""The ratelimit plugin: zs_rate_limit and zs_rate_limit_ex for scripts, on a table shared by all workers or on Redis.

Enable with ``--plugins ratelimit``. The buckets live in the process (see
``limiter``), so reloads keep them; ``--ratelimit-state FILE`` keeps them
across restarts and ``--ratelimit-redis URL`` shares them between servers.
"""

from zeroserve.core.errors import ConfigError
from zeroserve.plugins.ratelimit import limiter
from zeroserve.plugins.ratelimit.redis_limiter import ON_ERROR_POLICIES
from zeroserve.sdk import hookimpl


@hookimpl
def zeroserve_add_options(parser):
    parser.add_argument("--max-rate-limit-buckets", type=int, default=10000, metavar="N",
                        help="most distinct keys the local table holds; a new key beyond it gets 4 "
                             "(default 10000)")
    parser.add_argument("--ratelimit-state", metavar="FILE",
                        help="save the local buckets to FILE at shutdown and restore them at start")
    parser.add_argument("--ratelimit-redis", metavar="URL",
                        help="keep the buckets in Redis (redis://host:port/db), shared by every server using it")
    parser.add_argument("--ratelimit-redis-on-error", choices=ON_ERROR_POLICIES, default="allow",
                        help="answer when Redis cannot be reached: allow or deny the request (default allow)")
    parser.add_argument("--ratelimit-redis-timeout-ms", type=int, default=250, metavar="MS",
                        help="give up on a Redis check after MS milliseconds (default 250)")


@hookimpl
def zeroserve_configure(config):
    options = config.options
    if options.ratelimit_redis_timeout_ms <= 0:
        raise ConfigError(f"--ratelimit-redis-timeout-ms must be positive, got {options.ratelimit_redis_timeout_ms}")
    if options.ratelimit_redis and options.ratelimit_state:
        raise ConfigError("--ratelimit-state applies to the local table; with --ratelimit-redis "
                          "the buckets already live in Redis: drop one of the two flags")
    limiter.start(options)


@hookimpl
def zeroserve_known_helpers():
    return list(limiter.HELPER_NAMES)


@hookimpl
def zeroserve_register_helpers(config):
    return limiter.current().specs


@hookimpl
def zeroserve_unconfigure(config):
    limiter.stop()

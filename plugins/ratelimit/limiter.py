"""The rate limiter of one server: made once in the parent before it forks, kept across reloads, saved at shutdown.

The state belongs to the process, not to a world: a SIGHUP reload builds new
worlds whose helpers point at the same table (or Redis backend), so no
bucket is lost. The local table is written to --ratelimit-state by the
process that made it when that process shuts down, and read back at start.
"""

import logging
import os

from zeroserve.core.errors import ConfigError
from zeroserve.plugins.ratelimit import snapshot
from zeroserve.plugins.ratelimit.redis_helpers import RedisHelpers
from zeroserve.plugins.ratelimit.redis_limiter import RedisLimiter
from zeroserve.plugins.ratelimit.table import LocalTable
from zeroserve.sdk import HelperSpec

__all__ = ["HELPER_NAMES", "Limiter", "start", "current", "stop"]

log = logging.getLogger(__name__)

HELPER_NAMES = ("zs_rate_limit", "zs_rate_limit_ex")


class Limiter:
    """The backend chosen by the flags: a LocalTable (with its snapshot file) or a RedisLimiter."""

    def __init__(self, options):
        self.owner_pid = os.getpid()
        self.state_path = options.ratelimit_state
        if options.ratelimit_redis:
            try:
                self.redis = RedisLimiter(options.ratelimit_redis, options.ratelimit_redis_on_error,
                                          options.ratelimit_redis_timeout_ms)
            except ValueError as error:
                raise ConfigError(f"--ratelimit-redis {options.ratelimit_redis}: {error}; "
                                  "give redis://host:port/db") from None
            self.table = None
            helpers = RedisHelpers(self.redis)
            self.specs = [HelperSpec("zs_rate_limit", function=helpers.rate_limit, is_async=True),
                          HelperSpec("zs_rate_limit_ex", function=helpers.rate_limit_ex, is_async=True)]
            return
        self.redis = None
        try:
            self.table = LocalTable(options.max_rate_limit_buckets)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.specs = [HelperSpec(name, c_function=function, c_cookie=cookie)
                      for name, (function, cookie) in self.table.helpers().items()]
        if self.state_path and os.path.exists(self.state_path):
            self._load_snapshot()

    def _load_snapshot(self):
        try:
            restored = snapshot.load(self.table, self.state_path)
        except snapshot.SnapshotError as error:
            log.warning("[ratelimit] ignoring the saved state: %s (starting with empty buckets)", error)
            return
        log.info("[ratelimit] restored %d buckets from %s", restored, self.state_path)

    def save(self):
        """Writes the snapshot, in the process that made the table only (workers share it, the parent saves it)."""
        if self.table is None or not self.state_path or os.getpid() != self.owner_pid:
            return
        try:
            saved = snapshot.save(self.table, self.state_path)
        except OSError as error:
            log.warning("[ratelimit] cannot save the state to %s: %s", self.state_path, error)
            return
        log.info("[ratelimit] saved %d buckets to %s", saved, self.state_path)


_current = None


def start(options):
    """Makes this process's limiter from the parsed flags (at start-up, before workers fork)."""
    global _current
    _current = Limiter(options)
    return _current


def current():
    """The limiter made by start()."""
    if _current is None:
        raise ConfigError("the ratelimit plugin was not configured (zeroserve_configure did not run)")
    return _current


def stop():
    """Saves the state if this process owns it; the limiter stays usable until the process exits."""
    if _current is not None:
        _current.save()

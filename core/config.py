"""The server's settings: frozen dataclasses of every `run` flag, validated when built.

Nothing here touches the network or the site; `cli.py` fills these from argv and
every other module reads them. A value a user can get wrong raises `ConfigError`
naming the flag and what to do.
"""

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from zeroserve.core.errors import ConfigError
from zeroserve.core.upstream import UpstreamOptions

DEFAULT_ADDR = "0.0.0.0:8080"
DEFAULT_TLS_ADDR = "0.0.0.0:8443"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits and timeouts (seconds); each maps to one `run` flag."""

    max_head_bytes: int = 64 * 1024  # request line + headers; 431 beyond
    max_header_count: int = 100  # 431 beyond
    max_uri_bytes: int = 8 * 1024  # 414 beyond
    max_body_bytes: int = 1024 * 1024  # 413 beyond
    header_timeout: float = 10.0  # whole request head must arrive within this (slowloris)
    idle_timeout: float = 60.0  # keep-alive connection with no request in progress
    body_timeout: float = 30.0  # longest silence while a request body is being read
    write_timeout: float = 30.0  # longest time the peer may leave our output unread
    max_connections: int = 10000  # per worker; beyond, new connections wait in the listen backlog
    h2_max_concurrent_streams: int = 100

    def __post_init__(self):
        for name in ("max_head_bytes", "max_header_count", "max_uri_bytes", "max_connections",
                     "h2_max_concurrent_streams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.max_body_bytes < 0:
            raise ConfigError(f"--max-body-bytes must be 0 or more, got {self.max_body_bytes}")
        for name in ("header_timeout", "idle_timeout", "body_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{_flag(name)} must be a positive number of seconds, "
                                  f"got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Address:
    """A listening address: host (IPv4 or IPv6 literal) and port (0 = any free port)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text, flag="--addr"):
        """Parse `IP:PORT` or `[IPv6]:PORT`; raise ConfigError naming the flag otherwise."""
        host, sep, port_text = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            if not sep:
                raise ValueError
            ipaddress.ip_address(host)
            port = int(port_text)
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{flag} {text!r} is not IP:PORT; use e.g. 127.0.0.1:8080 or [::1]:8080") from None
        return cls(host, port)

    def url(self, scheme):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `zeroserve run` was told; the input of `World.build` and the server."""

    site_path: str
    addr: Address = field(default_factory=lambda: Address.parse(DEFAULT_ADDR))
    tls_addr: Address | None = None  # HTTPS listener; None = no HTTPS (the CLI's default is DEFAULT_TLS_ADDR)
    cert: str | None = None  # PEM certificate chain; None with tls_addr = the self-signed certificate
    key: str | None = None  # PEM private key of `cert`
    state_dir: str | None = None  # where the self-signed certificate is kept; None = certs.default_state_dir()
    index: str = "index.html"
    try_html: bool = False
    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    validate_hostnames: tuple = ()  # lowercase names without port; empty = any Host
    reload_signal_file: str | None = None
    request_logging: bool = True
    log_format: str = "text"
    proxy_protocol: bool = False
    fast_path: bool = True  # HTTP/1.1 static requests answered in C (core/fastpath.py); --no-fast-path: all in Python
    user: str | None = None  # account the workers switch to when started as root (--user); None = nobody
    ns_isolation: bool = True  # workers enter their own user and mount namespaces (--disable-ns-isolation)
    shutdown_timeout: float = 10.0
    limits: Limits = field(default_factory=Limits)
    upstream: UpstreamOptions = field(default_factory=UpstreamOptions)  # the reverse proxy's client side
    plugins: tuple = ()  # names given to --plugins, in order
    options: argparse.Namespace = field(default_factory=argparse.Namespace)  # every parsed flag, plugins' too
    preempt_timer_interval_ms: float = 2.0  # CPU a script runs before it yields the event loop
    script_cpu_budget_ms: float = 100.0  # CPU all scripts of one request may use; 503 beyond
    script_memory_kb: int = 256  # guest memory of one script run (stack, globals)
    max_request_external_memory_footprint_kb: int = 256  # host allocations (JSON) of one script run

    def __post_init__(self):
        if self.workers < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.workers}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be 'text' or 'json', got {self.log_format!r}")
        if not self.shutdown_timeout > 0:
            raise ConfigError(f"--shutdown-timeout must be a positive number of seconds, "
                              f"got {self.shutdown_timeout}")
        for name in ("preempt_timer_interval_ms", "script_cpu_budget_ms"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be more than 0, got {getattr(self, name)}")
        for name in ("script_memory_kb", "max_request_external_memory_footprint_kb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--cert and --key go together: give both, or neither for a self-signed "
                              "certificate for localhost")
        if self.upstream.ca_file is not None and not os.path.isfile(self.upstream.ca_file):
            raise ConfigError(f"--upstream-ca {self.upstream.ca_file!r} is not a readable file; give a PEM "
                              "bundle of the CAs that sign your https:// upstreams")
        if not self.index or "/" in self.index:
            raise ConfigError(f"--index must be a file name without '/', got {self.index!r}")


def _flag(field_name):
    return field_name.replace("_", "-").replace("h2-max-concurrent-streams", "h2-max-streams")

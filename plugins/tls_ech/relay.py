"""ECH relay: hand a handshake meant for the cover site to it, byte for byte, and splice the two sockets.

A hidden origin answers only ECH clients; a handshake for one of the public names that carries no
accepted ECH and that no local certificate covers is refused by the handshake policy with a RelayHandoff.
The connection then gives the relay its socket and every byte the client sent so far; the relay connects
to the cover site (bounded connect time), replays those bytes and copies both directions until one side
closes or nothing moves for the idle time. A bounded number of relays run at once per worker.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from zeroserve.core.errors import ConfigError, TLSError

log = logging.getLogger(__name__)

DEFAULT_PORT = 443
_HIGH_WATER = 256 * 1024


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where each public name is relayed to, and the bounds on every relay."""

    targets: dict  # public name -> (host, port)
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    max_relays: int = 256

    @classmethod
    def build(cls, public_names, target_flags, **bounds):
        """Targets for the public names: NAME=HOST:PORT flags where given, else NAME:443."""
        targets = {name: (name, DEFAULT_PORT) for name in public_names}
        for flag in target_flags:
            name, equals, address = flag.partition("=")
            host, colon, port = address.rpartition(":")
            name = name.strip().lower()
            if not equals or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--ech-relay-target {flag!r} is not NAME=HOST:PORT (e.g. "
                                  "public.example.com=192.0.2.10:443)")
            if name not in targets:
                raise ConfigError(f"--ech-relay-target names {name!r}, which is no ECH public name "
                                  f"(the keys' public names are {', '.join(public_names) or 'none'})")
            targets[name] = (host.strip("[]"), int(port))
        return cls(targets, **bounds)


@dataclass(slots=True)
class RelayStats:
    """Counters of one worker's relays."""

    started: int = 0
    failed: int = 0
    refused_busy: int = 0
    active: int = 0
    failures: list = field(default_factory=list)  # the last few failure messages


STATS = RelayStats()
_MAX_KEPT_FAILURES = 20


class RelayHandoff(TLSError):
    """The handshake belongs to the cover site: the connection should call take_over instead of closing."""

    def __init__(self, public_name, settings):
        host, port = settings.targets[public_name]
        super().__init__(f"ClientHello for public name {public_name} without accepted ECH: relayed to {host}:{port}")
        self.public_name = public_name
        self.settings = settings

    def take_over(self, transport, received, peer):
        """Start relaying: `transport` is the client's socket (its protocol is replaced), `received` every
        byte it sent so far. Returns the asyncio Task running the relay."""
        return asyncio.get_running_loop().create_task(
            relay(transport, bytes(received), self.public_name, self.settings, peer))


def _fail(message):
    STATS.failed += 1
    STATS.failures.append(message)
    del STATS.failures[:-_MAX_KEPT_FAILURES]
    log.warning("%s", message)


class _Pipe(asyncio.Protocol):
    """One side of a relay: writes what it reads into the other side's transport, with back-pressure.

    The relay ends (`done` resolves) when both sides have ended their streams or either socket is gone.
    """

    def __init__(self, done, activity, ended):
        self.peer = None  # the other side's transport
        self.transport = None
        self.buffered = bytearray()  # bytes read before the other side existed
        self._done = done
        self._activity = activity
        self._ended = ended  # a shared one-element list: how many sides sent EOF

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self._activity()
        if self.peer is None:
            self.buffered += data
        else:
            self.peer.write(data)

    def eof_received(self):
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()  # half-close: the other direction keeps flowing
        self._ended[0] += 1
        if self._ended[0] == 2 and not self._done.done():
            self._done.set_result("eof")
        return True

    def connection_lost(self, exc):
        if not self._done.done():
            self._done.set_result("closed")

    def pause_writing(self):
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self):
        if self.peer is not None:
            self.peer.resume_reading()


async def relay(client, received, public_name, settings, peer):
    """Relay one client connection to the cover site of `public_name`; log and count a failure."""
    loop = asyncio.get_running_loop()
    host, port = settings.targets[public_name]
    where = f'[listener] ECH relay of {peer[0]}:{peer[1]} to "{public_name}" ({host}:{port})'
    if STATS.active >= settings.max_relays:
        STATS.refused_busy += 1
        _fail(f"{where} failed: {settings.max_relays} relays already running")
        client.abort()
        return
    STATS.active += 1
    STATS.started += 1
    last_activity = loop.time()

    def activity():
        nonlocal last_activity
        last_activity = loop.time()

    done = loop.create_future()
    ended = [0]
    client_side = _Pipe(done, activity, ended)
    client_side.transport = client
    client.set_protocol(client_side)
    upstream = None
    try:
        try:
            upstream, upstream_side = await asyncio.wait_for(
                loop.create_connection(lambda: _Pipe(done, activity, ended), host, port),
                settings.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timed out connecting" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            _fail(f"{where} failed: {reason}")
            client.abort()
            return
        upstream.set_write_buffer_limits(_HIGH_WATER)
        client.set_write_buffer_limits(_HIGH_WATER)
        upstream_side.peer = client
        client_side.peer = upstream
        upstream.write(received + bytes(client_side.buffered))
        client_side.buffered.clear()
        while not done.done():
            remaining = settings.idle_timeout - (loop.time() - last_activity)
            if remaining <= 0:
                _fail(f"{where} failed: idle for {settings.idle_timeout:g} s")
                break
            await asyncio.wait([done], timeout=remaining)
    finally:
        STATS.active -= 1
        for transport in (client, upstream):
            if transport is not None and not transport.is_closing():
                transport.close()

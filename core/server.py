"""One worker process: its event loop, its SO_REUSEPORT listeners, its signals, its World.

The worker holds the current World in one attribute. A reload arrives from the
supervisor on the worker's handover channel (the open tar and the record of the
files the supervisor read, `worldfiles`); the worker builds the same World from
them in a thread (off the request path, without opening a path) and swaps that
attribute; requests already started keep the World they began with (and TLS
connections the TLS context they began with), and the old World closes when its
last request ends. SIGTERM/SIGINT stop accepting, let requests in flight finish
(up to --shutdown-timeout), then end the loop.
"""

import asyncio
import gc
import resource
import signal
import socket

import uvloop

from zeroserve.core import worldfiles
from zeroserve.core.accesslog import AccessLog, log_error
from zeroserve.core.connection import Connection
from zeroserve.core.errors import ZeroserveError
from zeroserve.core.fastpath import FastWorker
from zeroserve.core.listener import Listener
from zeroserve.core.session import PlainSession
from zeroserve.core.world import World
from zeroserve.native._zsvm import lib as zsvm

HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
_TICK = 0.25  # seconds between timeout sweeps over the connections
_BACKLOG = 1024
_GC_YOUNG_THRESHOLD = 10_000  # allocations between young-generation collections (CPython default 700)
# libc's allocator: by default it hands freed heap back to the kernel as soon as 128 KiB sit free at its top,
# and a streamed response frees that much per chunk, so every chunk cost a brk and fresh zeroed pages. A worker
# keeps up to 16 MiB free instead, and serves allocations up to 4 MiB (a read, a TLS record batch) from the heap.
_MALLOC_TRIM_THRESHOLD = 16 << 20
_MALLOC_TOP_PAD = 1 << 20
_MALLOC_MMAP_THRESHOLD = 4 << 20
_FD_RESERVE = 64  # descriptors kept free of connections: the tar, pipes, upstream sockets, a 503 to send


def _keep_freed_heap():
    """Let libc's allocator keep freed memory for the next request rather than return it to the kernel.

    A libc that refuses (musl's mallopt does nothing) costs speed, not correctness: one notice, and on.
    """
    for param, value in ((zsvm.M_TRIM_THRESHOLD, _MALLOC_TRIM_THRESHOLD), (zsvm.M_TOP_PAD, _MALLOC_TOP_PAD),
                         (zsvm.M_MMAP_THRESHOLD, _MALLOC_MMAP_THRESHOLD)):
        if not zsvm.mallopt(param, value):
            log_error(f"notice: libc refused mallopt({param}, {value}); freed heap goes back to the kernel")
            return


def listen_socket(addr):
    """A bound, listening, non-blocking TCP socket with SO_REUSEPORT (one per worker)."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _connection_cap(max_connections, index):
    """--max-connections, lowered to fit RLIMIT_NOFILE with _FD_RESERVE descriptors to spare (logged once).

    At the cap the worker stops accepting (core/listener.py); at the descriptor limit itself it could
    open no file or upstream.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or max_connections <= soft - _FD_RESERVE:
        return max_connections
    cap = max(1, soft - _FD_RESERVE)
    log_error(f"worker {index}: RLIMIT_NOFILE is {soft}, so at most {cap} connections are served at once "
              f"(--max-connections {max_connections}); raise the limit (ulimit -n) to serve more")
    return cap


class Worker:
    """The state a worker's connections share: the World, limits, access log, connection set."""

    def __init__(self, config, world, socks, index, handover):
        self.config = config
        self.limits = config.limits
        self.world = world
        self.connections = set()
        self.accepting = 0  # connections accepted whose transport is not made yet (core/listener.py)
        self.max_connections = _connection_cap(config.limits.max_connections, index)
        self.loop = None
        self.access_log = None
        self._socks = socks  # (plaintext listener, HTTPS listener or None)
        self._listeners = []
        self._index = index
        self._handover = handover  # this worker's end of the supervisor's handover channel
        self._reloading = False
        self._next_reload = None  # (generation, ReplayFiles) received while a build was running
        # The fast path's C state (core/fastpath.py). Its counter makes every request id, C's and
        # Python's: unique across workers and restarts without a syscall per request.
        self.fast = FastWorker(config)
        self.next_request_id = self.fast.next_request_id

    def run(self):
        """Serve until SIGTERM/SIGINT; return the process exit code."""
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(self._serve())

    async def _serve(self):
        loop = self.loop = asyncio.get_running_loop()
        if self.config.request_logging:
            self.access_log = AccessLog(self.config.log_format, loop.call_soon)
            self.fast.access_log = self.access_log
        plain_sock, tls_sock = self._socks
        self._listeners = [Listener(self, plain_sock, lambda: Connection(self, PlainSession()))]
        if tls_sock is not None:
            self._listeners.append(Listener(self, tls_sock, lambda: Connection(self, self.world.tls.new_session())))
        for listener in self._listeners:
            listener.start(loop)
        stopping = loop.create_future()
        loop.add_reader(self._handover.fileno(), self._receive_reload)
        # Reloads come over the handover channel; a SIGHUP sent to the whole group reaches the supervisor too.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stopping.done() or stopping.set_result(None))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        self.world.plugins.hook.zeroserve_worker_started(config=self.config, worker_index=self._index)
        self._tick()
        # What exists now (modules, the World) lives as long as the worker: keep it out of every
        # collection, and collect the young generation less often (requests make few cycles).
        gc.freeze()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        _keep_freed_heap()
        await stopping
        await self._drain()  # timeouts keep running: they end lingering closes
        self.world.plugins.hook.zeroserve_unconfigure(config=self.config)
        return 0

    def _tick(self):
        now = self.loop.time()
        for connection in list(self.connections):
            connection.check_timeout(now)
        self.loop.call_later(_TICK, self._tick)

    def connection_closed(self, connection):
        """`connection` has let go of its socket: it no longer counts against the cap."""
        self.connections.discard(connection)
        self.wake_listeners()

    def wake_listeners(self):
        """There may be room for another connection: listeners paused at the cap accept again."""
        for listener in self._listeners:
            listener.room()

    async def _drain(self):
        for listener in self._listeners:
            listener.close()  # stop accepting; the listener's queue goes to the other workers
        for connection in list(self.connections):
            connection.shutdown()
        deadline = self.loop.time() + self.config.shutdown_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self.access_log is not None:
            self.access_log.flush()

    # -- reload -----------------------------------------------------------------

    def _receive_reload(self):
        try:
            reload = worldfiles.receive(self._handover)
        except (OSError, ZeroserveError) as error:
            log_error(f"worker {self._index}: unreadable reload message from the supervisor: {error}")
            return
        if reload is None:  # the supervisor has gone; PR_SET_PDEATHSIG ends this worker
            self.loop.remove_reader(self._handover.fileno())
            return
        if self._next_reload is not None:
            self._next_reload[1].close()  # coalesce: only the newest World waiting is built
        self._next_reload = reload
        if not self._reloading:
            self._start_reload()

    def _start_reload(self):
        (generation, files), self._next_reload = self._next_reload, None
        self._reloading = True
        future = self.loop.run_in_executor(None, World.build, self.config, generation, self.world, files)
        future.add_done_callback(lambda done: self._finish_reload(done, files))

    def _finish_reload(self, future, files):
        files.close()  # the tar, when the build failed before taking it
        self._reloading = False
        error = future.exception()
        if error is None:
            old, self.world = self.world, future.result()
            old.retire()
        elif isinstance(error, ZeroserveError):
            log_error(f"worker {self._index}: reload failed, still serving the previous site: {error}")
        else:
            log_error(f"worker {self._index}: reload failed with an internal error, still serving the "
                      f"previous site: {error!r}")
        if self._next_reload is not None:
            self._start_reload()


def run_worker(config, world, socks, index, handover):
    """Entry point of a forked worker process; returns its exit code."""
    return Worker(config, world, socks, index, handover).run()

"""Accepts a worker's connections on one listening socket, and stops accepting while the worker is full.

asyncio's servers accept whenever the socket is readable; at a descriptor limit
libuv then accepts and closes the excess connections. A `Listener` instead
takes connections off the kernel's queue only while the worker is below its
connection cap (or has descriptors left): at the cap it stops watching the
socket, new connections wait in the listen backlog, and it starts again as soon
as one of the worker's connections closes.
"""

import errno
import socket

from zeroserve.core.accesslog import log_error

_ACCEPT_BATCH = 64  # connections taken per loop iteration, so one busy listener cannot starve the loop
_RETRY_SECONDS = 0.1  # after EMFILE/ENFILE/ENOBUFS/ENOMEM: try again this much later
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Listener:
    """One listening socket of a worker: accepts into `Connection`s made by `new_protocol()`."""

    def __init__(self, worker, sock, new_protocol):
        self._worker = worker  # its `connections` set and `max_connections` cap
        self._sock = sock
        self._fd = sock.fileno()
        self._new_protocol = new_protocol
        self._loop = None
        self._watching = False
        self._closed = False
        self._starved = False  # accepting ran out of descriptors or memory (logged once per episode)
        self._retry_pending = False  # a timer will watch the socket again after running out

    def start(self, loop):
        """Begin accepting on `loop`."""
        self._loop = loop
        self._watch()

    def close(self):
        """Stop accepting for good; what waits in the backlog goes to the other workers' listeners."""
        self._closed = True
        self._unwatch()
        self._sock.close()

    def room(self):
        """A connection of the worker closed: accept again if the cap had stopped us."""
        if not self._watching and not self._closed and not self._retry_pending:
            self._watch()

    def _watch(self):
        self._watching = True
        self._loop.add_reader(self._fd, self._accept)

    def _unwatch(self):
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)

    def _accept(self):
        worker = self._worker
        loop = self._loop
        for _ in range(_ACCEPT_BATCH):
            if len(worker.connections) + worker.accepting >= worker.max_connections:
                self._unwatch()  # room() resumes when a connection closes
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                self._starve(error)
                return
            if self._starved:
                self._starved = False
                log_error(f"accepting connections again on {self._where()}")
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The connection joins worker.connections once its transport exists; until then it counts here.
            worker.accepting += 1
            loop.create_task(loop.connect_accepted_socket(self._new_protocol, conn)).add_done_callback(
                self._accepted)
        # The queue may hold more: the loop does not report the socket readable again for connections
        # that were already waiting, so come back after the others have had their turn.
        loop.call_soon(self._accept_more)

    def _accept_more(self):
        if self._watching:
            self._accept()

    def _accepted(self, task):
        worker = self._worker
        worker.accepting -= 1
        # Between connection_made and here the connection counted twice, which may have paused accepting.
        worker.wake_listeners()
        if not task.cancelled() and task.exception() is not None:
            log_error(f"cannot set up a connection accepted on {self._where()}: {task.exception()}")

    def _starve(self, error):
        if not self._starved:
            log_error(f"cannot accept on {self._where()}: {error.strerror}; pausing accept, retrying every "
                      f"{_RETRY_SECONDS:g} s")
        self._starved = True
        self._unwatch()
        self._retry_pending = True
        self._loop.call_later(_RETRY_SECONDS, self._retry)

    def _retry(self):
        self._retry_pending = False
        if not self._closed and not self._watching:
            self._watch()

    def _where(self):
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

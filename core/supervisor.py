"""The parent process: loads and checks the site, forks N workers, restarts them, relays signals.

The parent binds the addresses (plaintext and HTTPS) once before forking (so
"port in use" is reported up front, and port 0 resolves to one real port), then
each worker binds its own SO_REUSEPORT listeners on those ports, then isolates
itself (`privileges.Isolation`: --user, default nobody, when started as root;
user and mount namespaces unless --disable-ns-isolation or refused by the
kernel). Without --cert/--key the parent makes (once, in the state directory)
the self-signed certificate before the first World is built. The parent keeps
its privileges and never serves a request: it waits for signals. SIGHUP (or a
change of --reload-signal-file) first builds the new World here, as a canary,
recording every file it read (`worldfiles`): a broken tar is reported once and
the workers keep their World; a good one is kept for future forks and handed to
each worker (the open tar and the record, over the worker's unix socket), which
builds the same World without opening a path. SIGTERM/SIGINT are forwarded and
the parent exits 0 once every worker has drained.
"""

import ctypes
import errno
import os
import resource
import select
import signal
import socket
import time
from dataclasses import replace

from zeroserve.core import worldfiles
from zeroserve.core.accesslog import log_error
from zeroserve.core.errors import ConfigError, ZeroserveError
from zeroserve.core.privileges import Isolation
from zeroserve.core.server import HANDLED_SIGNALS, listen_socket, run_worker
from zeroserve.core.tls import client_context
from zeroserve.core.world import World

_READY_TIMEOUT = 30.0  # seconds for all workers to report their listener
_RESTART_DELAY = 1.0  # a worker that dies this soon after starting is restarted after this delay
_POLL = 1.0  # seconds between checks of --reload-signal-file
_KILL_GRACE = 5.0  # seconds past --shutdown-timeout before a worker that will not stop is killed
_HANDOVER_TIMEOUT = 5.0  # seconds a reload waits for room in a worker's handover channel
_PR_SET_PDEATHSIG = 1  # prctl(2) option: signal this process when its parent dies


def serve(config):
    """Run the server until SIGTERM/SIGINT; return the exit code. Raises ZeroserveError on startup."""
    _raise_fd_limit()
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS + (signal.SIGCHLD,))
    isolation = Isolation(config.user, config.workers, config.ns_isolation)
    own = None
    if config.tls_addr is not None and config.cert is None:
        # Imported here: `cryptography` (about 5 MiB, inherited by every worker) is needed only for this.
        from zeroserve.core.certs import ensure_self_signed
        own = ensure_self_signed(config.state_dir)
        config = replace(config, cert=str(own.cert_path), key=str(own.key_path))
    if config.upstream.ca_file is not None:
        client_context(config.upstream.ca_file)  # loaded before the workers fork and lose access to it
    world = World.build(config)
    log_error(f"loaded {world.site.file_count} entries from {config.site_path} "
              f"({world.site.total_bytes} bytes)")
    # A plugin may have replaced the self-signed certificate (tls_ech's --cert-dir); then it is not served.
    if own is not None and str(world.tls.identity.cert_path) == str(own.cert_path):
        log_error(f"HTTPS certificate: self-signed for localhost and 127.0.0.1, "
                  f"{'created' if own.created else 'kept'} in {own.cert_path.parent} (SHA-256 {own.fingerprint})")
    reservations = [_reserve(config.addr, "--addr")]
    config = replace(config, addr=_resolved(config.addr, reservations[0]))
    if config.tls_addr is not None:
        reservations.append(_reserve(config.tls_addr, "--tls-addr"))
        config = replace(config, tls_addr=_resolved(config.tls_addr, reservations[1]))
    isolation.probe()
    log_error(isolation.describe())
    return _Supervisor(config, world, reservations, isolation).run()


def _resolved(addr, reservation):
    """`addr` with port 0 replaced by the port the reservation got."""
    return replace(addr, port=reservation.getsockname()[1]) if addr.port == 0 else addr


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reserve(addr, flag):
    """Bind (without listening) to learn the port and report a busy address before forking."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((addr.host, addr.port))
    except OSError as error:
        sock.close()
        where = addr.url("http").removeprefix("http://")
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {where}: the port is already in use; stop the other "
                              f"server or choose another {flag}") from None
        raise ConfigError(f"cannot listen on {where}: {error.strerror}; choose another {flag}") from None
    return sock


class _Supervisor:
    def __init__(self, config, world, reservations, isolation):
        self.config = config
        self.isolation = isolation
        self.world = world
        self.reservations = reservations
        self.workers = {}  # pid → (index, start time, supervisor end of its handover channel)
        self.stopping = False
        self.signal_file_content = self._read_signal_file()

    def run(self):
        ready_read, ready_write = os.pipe()
        for index in range(self.config.workers):
            self._fork(index, ready_write)
        os.close(ready_write)
        try:
            self._wait_ready(ready_read)
        finally:
            os.close(ready_read)
        count = self.config.workers
        log_error(f"listening on {self.config.addr.url('http')} ({count} worker{'s' if count != 1 else ''})")
        if self.config.tls_addr is not None:
            log_error(f"listening on {self.config.tls_addr.url('https')}")
        return self._loop()

    def _fork(self, index, ready_write=None):
        parent = os.getpid()
        channel, worker_channel = worldfiles.handover_channel()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for reservation in self.reservations:
                    reservation.close()
                for _, _, other in self.workers.values():
                    other.close()
                channel.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGCHLD,))
                tls_addr = self.config.tls_addr
                socks = (listen_socket(self.config.addr), listen_socket(tls_addr) if tls_addr else None)
                self.isolation.apply()  # the listeners are bound and the World's files open
                _stop_with_parent(parent)  # after apply(): the kernel forgets the request when the uid changes
                if ready_write is not None:
                    os.write(ready_write, b".")
                    os.close(ready_write)
                code = run_worker(self.config, self.world, socks, index, worker_channel)
            except BaseException as error:  # a worker must never return into the parent's code
                log_error(f"worker {index}: {error!r}")
            finally:
                os._exit(code)
        worker_channel.close()
        channel.settimeout(_HANDOVER_TIMEOUT)
        self.workers[pid] = (index, time.monotonic(), channel)

    def _wait_ready(self, ready_read):
        pending = self.config.workers
        deadline = time.monotonic() + _READY_TIMEOUT
        while pending:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([ready_read], [], [], max(remaining, 0))
            if not readable:
                self._stop_workers()
                raise ZeroserveError("workers did not start listening within "
                                     f"{_READY_TIMEOUT:.0f} s; see the messages above")
            data = os.read(ready_read, pending)
            if not data:
                self._stop_workers()
                raise ZeroserveError("a worker exited while starting; see the messages above")
            pending -= len(data)

    def _loop(self):
        watched = HANDLED_SIGNALS + (signal.SIGCHLD,)
        kill_at = None
        while self.workers or not self.stopping:
            if self.stopping:
                kill_at = kill_at or time.monotonic() + self.config.shutdown_timeout + _KILL_GRACE
                timeout = kill_at - time.monotonic()
                if timeout <= 0:
                    log_error("workers did not stop in time; killing them")
                    self._signal_workers(signal.SIGKILL)
                    kill_at = time.monotonic() + _KILL_GRACE
                    continue
            else:
                timeout = _POLL if self.config.reload_signal_file else None
            info = signal.sigtimedwait(watched, timeout) if timeout else signal.sigwaitinfo(watched)
            if info is None:
                if not self.stopping:
                    self._poll_signal_file()
            elif info.si_signo == signal.SIGCHLD:
                self._reap()
            elif info.si_signo == signal.SIGHUP:
                self._reload()
            elif not self.stopping:  # SIGTERM or SIGINT
                self.stopping = True
                log_error("shutting down: finishing requests in flight")
                self._signal_workers(signal.SIGTERM)
        self.world.plugins.hook.zeroserve_unconfigure(config=self.config)
        log_error("stopped")
        return 0

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index, started, channel = self.workers.pop(pid, (None, 0.0, None))
            if channel is not None:
                channel.close()
            if index is None or self.stopping:
                continue
            log_error(f"worker {index} (pid {pid}) {_describe(status)}; restarting it")
            if time.monotonic() - started < _RESTART_DELAY:
                time.sleep(_RESTART_DELAY)  # do not spin on a worker that dies at once
            self._fork(index)

    def _reload(self):
        log_error(f"reloading {self.config.site_path}")
        files = worldfiles.DiskFiles()
        try:
            world = World.build(self.config, self.world.generation + 1, self.world, files)
        except ZeroserveError as error:
            log_error(f"reload failed, still serving the previous site: {error}")
            return
        log_error(f"loaded {world.site.file_count} entries from {self.config.site_path} "
                  f"({world.site.total_bytes} bytes)")
        old, self.world = self.world, world
        old.retire()
        for pid, (index, _, channel) in self.workers.items():
            try:
                worldfiles.send(channel, world.generation, files, world.site.fd)
            except OSError as error:  # it died (and is restarted with this World) or does not read
                log_error(f"worker {index} (pid {pid}) was not handed the reloaded site: {error}")

    def _read_signal_file(self):
        path = self.config.reload_signal_file
        if not path:
            return None
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError:
            return None

    def _poll_signal_file(self):
        content = self._read_signal_file()
        if content != self.signal_file_content:
            self.signal_file_content = content
            self._reload()

    def _signal_workers(self, signum):
        for pid in self.workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _stop_workers(self):
        self.stopping = True
        self._signal_workers(signal.SIGTERM)
        for pid in list(self.workers):
            os.waitpid(pid, 0)
        self.workers.clear()


def _stop_with_parent(parent):
    """Have the kernel send this worker SIGTERM if the supervisor dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status):
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"

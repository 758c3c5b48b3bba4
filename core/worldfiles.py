"""Where a World build reads its files: the disk (answers recorded) in the supervisor, a replay in a worker.

An isolated worker cannot open the site tar or TLS keys the supervisor can
(root-only files, a hidden /etc), so a worker never opens a path to build a
World. The supervisor builds each new World first (the reload canary) through a
`DiskFiles`, which keeps every answer it gave: file contents, directory
listings, what a path is, and the errors. It hands the worker that record and
the open site tar (`handover`, over a unix socket with SCM_RIGHTS), and the
worker builds the same World through a `ReplayFiles`, which gives the same
answers without touching the file system.

Code that reads a file for a World (TLS material, plugin key files,
credentials) calls the functions below; `World.build` chooses the source for
the build with `reading(files)`. Outside a build they read the disk.
"""

import contextlib
import contextvars
import errno
import os
import socket
import stat

import msgpack

from zeroserve.core.errors import ConfigError
from zeroserve.core.site import Site

FILE, DIRECTORY, OTHER = "file", "dir", "other"
_MAX_MESSAGE = 4096  # the handover message is a small header; the record travels in a memfd


class DiskFiles:
    """Reads the file system and records every answer, so a worker can replay the same build."""

    def __init__(self):
        self.answers = {}  # "operation\0path" -> [True, result] or [False, errno, strerror]

    def open_site(self, path):
        return Site.open(path)

    def read_bytes(self, path):
        return self._answer("read", path, lambda: _read(path))

    def kind(self, path):
        """FILE, DIRECTORY, OTHER, or None when nothing is there (symbolic links followed)."""
        return self._answer("kind", path, lambda: _kind(path))

    def list_dir(self, path):
        """The names in a directory, sorted."""
        return self._answer("list", path, lambda: sorted(os.listdir(path)))

    def _answer(self, operation, path, read):
        key = f"{operation}\0{os.fspath(path)}"
        try:
            result = read()
        except OSError as error:
            self.answers[key] = [False, error.errno, error.strerror]
            raise
        self.answers[key] = [True, result]
        return result


class ReplayFiles:
    """Gives a worker's build the answers the supervisor's build got, and the site tar it had open."""

    def __init__(self, answers, site_fd):
        self.answers = answers
        self._site_fd = site_fd

    def open_site(self, path):
        fd, self._site_fd = self._site_fd, None
        if fd is None:
            raise ConfigError(f"{path}: the site tar was handed over once and is already used")
        return Site.from_fd(fd, os.fspath(path))

    def read_bytes(self, path):
        return self._answer("read", path)

    def kind(self, path):
        return self._answer("kind", path)

    def list_dir(self, path):
        return self._answer("list", path)

    def _answer(self, operation, path):
        key = f"{operation}\0{os.fspath(path)}"
        if key not in self.answers:
            raise ConfigError(f"{path}: this worker's reload asked for a file the supervisor did not read; "
                              "a plugin reads files outside zeroserve.core.worldfiles")
        answer = self.answers[key]
        if not answer[0]:
            raise OSError(answer[1], answer[2], os.fspath(path))
        return answer[1]

    def close(self):
        """Close the handed-over tar if no build took it."""
        if self._site_fd is not None:
            os.close(self._site_fd)
            self._site_fd = None


_current = contextvars.ContextVar("worldfiles", default=None)


@contextlib.contextmanager
def reading(files):
    """Within this block, this context's World-build reads go to `files`."""
    token = _current.set(files)
    try:
        yield files
    finally:
        _current.reset(token)


def open_site(path):
    """The Site of the tar at `path` (from the disk, or the tar the supervisor handed over)."""
    files = _current.get()
    return files.open_site(path) if files is not None else Site.open(path)


def read_bytes(path):
    """The content of the file at `path`; raises OSError as reading it would."""
    files = _current.get()
    return files.read_bytes(path) if files is not None else _read(path)


def kind(path):
    """FILE, DIRECTORY, OTHER, or None when nothing is at `path`."""
    files = _current.get()
    return files.kind(path) if files is not None else _kind(path)


def list_dir(path):
    """The sorted names in the directory at `path`; raises OSError as listing it would."""
    files = _current.get()
    return files.list_dir(path) if files is not None else sorted(os.listdir(path))


def _read(path):
    with open(path, "rb") as file:
        return file.read()


def _kind(path):
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
            return None
        raise
    if stat.S_ISREG(mode):
        return FILE
    return DIRECTORY if stat.S_ISDIR(mode) else OTHER


# -- the handover between supervisor and worker ---------------------------------------------------


def handover_channel():
    """(supervisor end, worker end): a SOCK_SEQPACKET pair, one message per reload."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock, generation, files, site_fd):
    """Hand a worker the World build of `generation`: the record of `files` and the open site tar."""
    record = msgpack.packb(files.answers, use_bin_type=True)
    record_fd = os.memfd_create("zeroserve-worldfiles", os.MFD_CLOEXEC)
    try:
        os.write(record_fd, record)
        header = msgpack.packb({"generation": generation, "record_bytes": len(record)})
        socket.send_fds(sock, [header], [site_fd, record_fd])
    finally:
        os.close(record_fd)


def receive(sock):
    """(generation, ReplayFiles) of one message from the supervisor; None when the supervisor has gone."""
    header, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 2)
    if not header:
        for fd in fds:
            os.close(fd)
        return None
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise ConfigError(f"the supervisor's reload message carried {len(fds)} descriptors instead of 2")
    site_fd, record_fd = fds
    try:
        message = msgpack.unpackb(header)
        record = os.pread(record_fd, message["record_bytes"], 0)
    finally:
        os.close(record_fd)
    answers = msgpack.unpackb(record, raw=False)
    return message["generation"], ReplayFiles(answers, site_fd)

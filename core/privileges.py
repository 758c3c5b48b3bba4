"""Isolating a worker once its listeners are bound: user switch, user+mount namespaces, capabilities, limits.

Started as root, a worker first makes its own mount namespace (every mount
private, `/etc` replaced by a read-only tmpfs holding only what a worker reads:
resolver files and the system CA bundle; a directory the user cannot enter that
holds the Python interpreter covered, with the interpreter bound back), then
switches to `--user` (default nobody: setgroups, setresgid, setresuid, after
emptying its capability bounding and ambient sets while it still may), then
enters a user namespace of its own (its uid and gid mapped to themselves,
`setgroups` denied). Not root, it makes both namespaces at once. With
`--disable-ns-isolation` there are no namespaces. Whatever the mode, it ends
with no capability in any set, no_new_privs set, and a lowered RLIMIT_NPROC
where that limit counts only the worker (its own user namespace) or only the
dropped user. A worker never opens the site or TLS files after this: reloads get
them from the supervisor (`worldfiles`). The supervisor probes once (`probe`)
whether the kernel lets a process make namespaces, so the start-up line
(`describe`) says what is in effect and a refusal falls back to the user switch
alone, never to root.
"""

import ctypes
import os
import pwd
import resource
import stat
import sys

from zeroserve.core.errors import ConfigError

# Constants from <linux/prctl.h>, <linux/capability.h>, <linux/sched.h> and <sys/mount.h>.
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = 126  # x86-64
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"

DEFAULT_USER = "nobody"
# Processes and threads one worker may have (the event loop's executor threads count).
NPROC_PER_WORKER = 64
# What a worker may still read under /etc in its mount namespace: name resolution (reverse proxy,
# OIDC), the local time zone and the system CA bundles (https:// upstreams). Everything else is hidden.
ETC_KEPT = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "localtime",
            "ssl/certs/ca-certificates.crt", "pki/tls/certs/ca-bundle.crt", "ssl/cert.pem", "ssl/ca-bundle.pem")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceRefused(OSError):
    """The kernel (or the container around it) would not give this process a user or mount namespace."""


def resolve_user(name):
    """(uid, gid) of the account `name`; raises ConfigError when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--user {name!r}: no such user on this system; give an existing "
                          "unprivileged account such as nobody") from None
    if entry.pw_uid == 0:
        raise ConfigError(f"--user {name!r} is root; give an unprivileged account")
    return entry.pw_uid, entry.pw_gid


class Isolation:
    """What the workers drop to: settled in the supervisor (flags checked, namespaces probed), applied per worker."""

    def __init__(self, user_name, workers, namespaces=True):
        self.is_root = os.geteuid() == 0
        if user_name is not None and not self.is_root:
            raise ConfigError(f"--user {user_name!r} needs the server started as root; leave --user out "
                              "to keep the current user")
        self.user_name = (user_name or DEFAULT_USER) if self.is_root else None
        self.user = resolve_user(self.user_name) if self.is_root else None
        self.workers = workers
        self.namespaces = namespaces
        # Why namespaces are off: the flag, or the kernel's refusal found by probe().
        self.namespaces_off_because = None if namespaces else "--disable-ns-isolation"

    def probe(self):
        """Try the whole isolation once in a throw-away child; on a namespace refusal, fall back to without.

        Other failures are left for the workers, which report them and refuse to start.
        """
        if not self.namespaces:
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(read_end)
                self.apply()
            except NamespaceRefused as refusal:
                os.write(write_end, refusal.strerror.encode())
                code = 1
            except BaseException:  # noqa: BLE001 - the worker will meet and report it
                code = 2
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            reason = reader.read().decode(errors="replace")
        os.waitpid(pid, 0)
        if reason:
            self.namespaces = False
            self.namespaces_off_because = f"the kernel refused them: {reason}"

    @property
    def nproc(self):
        """RLIMIT_NPROC of a worker; in its own user namespace the kernel counts only that worker's tasks."""
        return NPROC_PER_WORKER if self.namespaces else NPROC_PER_WORKER * self.workers

    def describe(self):
        """The start-up line saying what isolation the workers get."""
        if self.is_root:
            user = f"workers run as user {self.user_name!r} (uid {self.user[0]}) without supplementary groups"
        else:
            user = f"not started as root, so no user to switch from (workers keep uid {os.geteuid()})"
        barriers = list(_unreachable_interpreter_dirs(*self.user)) if self.is_root else []
        if self.namespaces:
            hidden = "".join(f", {barrier} hidden but for the Python interpreter" for barrier in barriers)
            spaces = f"own user and mount namespaces (/etc reduced to resolver files and CA bundles{hidden})"
            nproc = f"RLIMIT_NPROC {self.nproc} per worker"
        else:
            spaces = f"no namespaces ({self.namespaces_off_because})"
            nproc = (f"RLIMIT_NPROC {self.nproc}" if self.is_root else
                     "RLIMIT_NPROC unchanged (it would count all of this user's processes)")
        line = f"isolation: {user}; {spaces}; all capabilities dropped, no_new_privs set, {nproc}"
        if barriers and not self.namespaces:
            line += (f"; WARNING: user {self.user_name!r} cannot enter {', '.join(barriers)}, where Python is "
                     "installed, so modules first imported after start-up fail: install Python where that "
                     "user can read it, or allow namespaces")
        return line

    def apply(self):
        """Isolate this process for good; raises OSError (NamespaceRefused for a namespace step) on refusal."""
        if self.user is not None:
            uid, gid = self.user
            if self.namespaces:
                # Root makes the mount namespace, so it belongs to the initial user namespace: the worker,
                # whatever it holds in its own user namespace later, can never unmount what hides the host.
                _unshare(_CLONE_NEWNS)
                _reduce_mounts(uid, gid)
            _drop_bounding_and_ambient()  # needs CAP_SETPCAP, so before the uid changes
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # the kernel clears the permitted and effective sets here
            if self.namespaces:
                _unshare(_CLONE_NEWUSER)
                _map_own_ids()
        elif self.namespaces:
            _unshare(_CLONE_NEWUSER | _CLONE_NEWNS)  # the new user namespace's capabilities allow the mounts
            _map_own_ids()
            _reduce_mounts(os.geteuid(), os.getegid())
        if self.namespaces:
            _drop_bounding_and_ambient()  # the new user namespace came with a full bounding set
        if self.namespaces or self.user is not None:
            # In its own user namespace the kernel counts only this worker's tasks against the limit.
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()  # all zero: no effective, permitted or inheritable capability
        if _libc.syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
            _raise("capset clearing the capabilities")
        _prctl(_PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")


def _drop_bounding_and_ambient():
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "clearing the ambient capabilities")
    with open(_CAP_LAST_CAP) as file:
        last_cap = int(file.read())
    for cap in range(last_cap + 1):
        _prctl(_PR_CAPBSET_DROP, cap, "dropping the capability bounding set")


def _unshare(flags):
    if _libc.unshare(flags) != 0:
        names = "|".join(name for bit, name in ((_CLONE_NEWUSER, "CLONE_NEWUSER"), (_CLONE_NEWNS, "CLONE_NEWNS"))
                         if flags & bit)
        _raise(f"unshare({names})", NamespaceRefused)


def _map_own_ids():
    """Map this process's uid and gid to themselves in the user namespace it just made, groups denied."""
    uid, gid = os.geteuid(), os.getegid()
    # A process that changed its uid is not dumpable, which makes its /proc files root's; the maps
    # can only be written by the process itself while it is dumpable.
    _prctl(_PR_SET_DUMPABLE, 1, "making the process dumpable to write its id maps", NamespaceRefused)
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as file:
                    file.write(text)
            except OSError as error:
                raise NamespaceRefused(error.errno, f"writing /proc/self/{name} failed: {error.strerror}") from None
    finally:
        _prctl(_PR_SET_DUMPABLE, 0, "making the process undumpable again")


def _reduce_mounts(uid, gid):
    """Make every mount private, replace /etc, and let `uid` reach the interpreter's files.

    Python imports some modules only when first used; when the interpreter lives under a directory
    `uid` cannot enter (an installation in root's home), that directory is covered by a tmpfs into
    which the interpreter's directories alone are bound back read-only.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None, "making every mount private")
    sealed = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    kept = {}
    for name in ETC_KEPT:
        try:
            with open(os.path.join("/etc", name), "rb") as file:
                kept[name] = file.read()
        except OSError:
            continue  # not on this system: hidden like the rest
    _mount("zeroserve-etc", "/etc", "tmpfs", sealed, "mode=0755,size=4m", "mounting a tmpfs over /etc")
    for name, content in kept.items():
        path = os.path.join("/etc", name)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "wb") as file:
            file.write(content)
        os.chmod(path, 0o444)
    _mount(None, "/etc", None, _MS_REMOUNT | _MS_RDONLY | sealed, None, "making /etc read-only")
    for barrier, needed in _unreachable_interpreter_dirs(uid, gid).items():
        handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for path in needed]
        try:
            _mount("zeroserve-hidden", barrier, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k",
                   f"covering {barrier}")
            for path, handle in handles:
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC, None, f"binding {path}")
                _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None,
                       f"making {path} read-only")
        finally:
            for _, handle in handles:
                os.close(handle)


def _unreachable_interpreter_dirs(uid, gid):
    """{first directory `uid` cannot enter: [interpreter directories beneath it]} (outermost ones only)."""
    roots = {os.path.realpath(path) for path in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                  sys.base_exec_prefix, *sys.path) if path}
    # A directory the user cannot enter itself (a working directory in root's home) is not bound back.
    roots = sorted(path for path in roots if os.path.isdir(path) and _can_enter(path, uid, gid))
    outermost = [path for path in roots if not any(path.startswith(other + "/") for other in roots)]
    barriers = {}
    for path in outermost:
        parts = path.split("/")
        for depth in range(2, len(parts)):  # the ancestors of `path`, "/" excluded
            ancestor = "/".join(parts[:depth])
            if not _can_enter(ancestor, uid, gid):
                barriers.setdefault(ancestor, []).append(path)
                break
    return barriers


def _can_enter(directory, uid, gid):
    info = os.stat(directory)
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _mount(source, target, fstype, flags, data, what):
    if _libc.mount(_c_text(source), _c_text(target), _c_text(fstype), ctypes.c_ulong(flags), _c_text(data)) != 0:
        _raise(what, NamespaceRefused)


def _c_text(text):
    return None if text is None else text.encode()


def _prctl(option, argument, what, error_type=OSError):
    if _libc.prctl(option, ctypes.c_ulong(argument), 0, 0, 0) != 0:
        _raise(what, error_type)


def _raise(what, error_type=OSError):
    error = ctypes.get_errno()
    raise error_type(error, f"{what} failed: {os.strerror(error)}")

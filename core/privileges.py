"""Dropping a worker's privileges once its listeners are bound: user, groups, capabilities, no_new_privs, NPROC.

A worker started as root switches to `--user` (setgroups, setgid, setuid), after
emptying its capability bounding and ambient sets (which needs root), then clears
its remaining capabilities (capset), sets no_new_privs (no setuid binary or file
capability can give them back) and lowers RLIMIT_NPROC. Root without `--user`
keeps root (its reloads read root-only files). A worker not started as root has
nothing to switch from; it still clears its capabilities and sets no_new_privs
(its RLIMIT_NPROC counts the user's other processes too, so it is left alone).
`describe` gives the start-up line saying what is in effect.
"""

import ctypes
import os
import pwd
import resource

from zeroserve.core.errors import ConfigError

# prctl(2) options and capget/capset(2) constants from <linux/prctl.h> and <linux/capability.h>.
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = 126  # x86-64
_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
# Processes and threads the dropped user may have per worker (the event loop's executor threads count).
NPROC_PER_WORKER = 64


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


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
    """What the workers drop to: made (and --user checked) in the supervisor, applied in each worker."""

    def __init__(self, user_name, workers):
        self.is_root = os.geteuid() == 0
        if user_name is not None and not self.is_root:
            raise ConfigError(f"--user {user_name!r} needs the server started as root; leave --user out "
                              "to keep the current user")
        self.user_name = user_name
        self.user = resolve_user(user_name) if user_name is not None else None
        self.nproc = NPROC_PER_WORKER * workers

    def describe(self):
        """The start-up line saying what isolation the workers get."""
        if self.is_root and self.user is None:
            return "isolation: none, workers run as root; give --user NAME to drop privileges"
        if self.user is None:
            return "isolation: workers keep the starting user (not root), all capabilities dropped, no_new_privs set"
        return (f"isolation: workers run as user {self.user_name!r} without supplementary groups, all "
                f"capabilities dropped, no_new_privs set, RLIMIT_NPROC {self.nproc}")

    def apply(self):
        """Drop this worker's privileges (nothing for root without --user); raises OSError on refusal."""
        if self.is_root and self.user is None:
            return
        drop(self.user, self.nproc)


def drop(user, nproc):
    """Drop this process's privileges for good; `user` is (uid, gid) to switch to, or None to keep the user.

    Raises OSError when the kernel refuses a step: a worker must then not serve.
    """
    if user is not None:
        uid, gid = user
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))  # lowering needs no privilege
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "clearing the ambient capabilities")
        with open(_CAP_LAST_CAP) as file:
            last_cap = int(file.read())
        for cap in range(last_cap + 1):
            _prctl(_PR_CAPBSET_DROP, cap, "dropping the capability bounding set")
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: no effective, permitted or inheritable capability
    if _libc.syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
        _raise("capset clearing the capabilities")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")


def _prctl(option, argument, what):
    if _libc.prctl(option, ctypes.c_ulong(argument), 0, 0, 0) != 0:
        _raise(what)


def _raise(what):
    error = ctypes.get_errno()
    raise OSError(error, f"{what} failed: {os.strerror(error)}")

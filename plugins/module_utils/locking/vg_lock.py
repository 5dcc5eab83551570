# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster-wide VG lock: one interface, two backends (local lock file, etcd).

Usage::

    lock = make_vg_lock(settings, vg="vg0", holder="host1:sltv_disk")
    with lock:                 # acquire(timeout) ... release()
        lock.ensure_held()     # before every lvm command: raises LockLost if fenced
        ...

``settings`` is a plain dict with the keys of LOCK_SETTINGS_DEFAULTS (the modules' lock options).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import stat
import time

from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockTimeout

LOCK_DIR = "/run/lock/sltv"
MIN_LOCK_TTL = 2  # seconds; etcd's own minimum lease TTL with default election settings

LOCK_SETTINGS_DEFAULTS = {
    "lock_backend": "local",
    "etcd_endpoints": ["http://127.0.0.1:2379"],
    "etcd_ca_cert": None,
    "etcd_cert": None,
    "etcd_key": None,
    "etcd_user": None,
    "etcd_password": None,
    "lock_timeout": 60.0,
    "lock_ttl": 10,
    "lock_prefix": "/sltv",
}


class VgLock(object):
    """Interface of a VG lock. Subclasses implement acquire/release/ensure_held."""

    backend = None

    def __init__(self, vg, holder, timeout):
        self.vg = vg
        self.holder = holder
        self.timeout = float(timeout)
        self.token = None  # fencing token while held (etcd: create revision of the lock key)
        self.wait_seconds = 0.0  # how long the last acquire waited

    def acquire(self):
        raise NotImplementedError

    def release(self):
        raise NotImplementedError

    def ensure_held(self):
        """Raise LockLost unless the lock is still safely held (checked before each lvm command)."""
        raise NotImplementedError

    @property
    def held(self):
        return self.token is not None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def ensure_lock_dir(directory):
    """Create ``directory`` 0700, or check that the existing one is a real directory of ours.

    /run/lock is world-writable: another local user could pre-create the directory or plant a
    symlink in it to make sltv lock, or truncate, a file of their choosing."""
    parent = os.path.dirname(directory)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    try:
        os.mkdir(directory, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise LockError("cannot create lock directory %s: %s" % (directory, exc))
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise LockError("lock directory %s is not a directory (a symlink?): remove it; sltv creates it" % directory)
    if info.st_uid != os.geteuid():
        raise LockError("lock directory %s belongs to uid %d, not to uid %d that runs sltv: remove it "
                        "(another user may have created it to interfere with sltv's locks)"
                        % (directory, info.st_uid, os.geteuid()))
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)  # ours: an older sltv made it 0755


def open_lock_file(path):
    """Open (create) a lock file without following a link; it must be a regular file of ours."""
    ensure_lock_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockError("lock file %s is a symlink: remove it; sltv never follows links there" % path)
        raise LockError("cannot open lock file %s: %s" % (path, exc))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise LockError("lock file %s is not a regular file of uid %d: remove it" % (path, os.geteuid()))
    return fd


class FileLock(object):
    """An flock(2) lock file; waits up to ``timeout`` seconds. Used per VG and per host."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = float(timeout)
        self._fd = None

    def acquire(self):
        fd = open_lock_file(self.path)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise LockError("cannot lock %s: %s" % (self.path, exc))
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    "lock file %s is still held by another process after %.0f s; "
                    "see which with 'fuser %s' or raise lock_timeout" % (self.path, self.timeout, self.path)
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._fd = fd

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self):
        return self._fd is not None


class LocalVgLock(VgLock):
    """Single-host backend: a lock file per VG under /run/lock/sltv/."""

    backend = "local"

    def __init__(self, vg, holder, timeout, lock_dir=LOCK_DIR):
        super(LocalVgLock, self).__init__(vg, holder, timeout)
        self._file = FileLock(os.path.join(lock_dir, "vg-%s.lock" % vg), timeout)

    def acquire(self):
        started = time.monotonic()
        self._file.acquire()
        self.wait_seconds = time.monotonic() - started
        self.token = 0

    def release(self):
        self._file.release()
        self.token = None

    def ensure_held(self):
        # flock cannot be lost while the process lives; nothing to fence on one host.
        if not self._file.held:
            raise LockError("the local lock for VG %s is not held" % self.vg)


def make_vg_lock(settings, vg, holder):
    """Build the VG lock the settings ask for (a dict with LOCK_SETTINGS_DEFAULTS' keys)."""
    merged = dict(LOCK_SETTINGS_DEFAULTS)
    merged.update(dict((k, v) for k, v in settings.items() if v is not None))
    backend = merged["lock_backend"]
    if backend == "local":
        return LocalVgLock(vg, holder, merged["lock_timeout"])
    if backend == "etcd":
        # Imported here so that the local backend needs no etcd client installed.
        from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import EtcdVgLock

        return EtcdVgLock.from_settings(merged, vg, holder)
    raise LockError("unknown lock_backend %r: use 'local' or 'etcd'" % (backend,))

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A REAL libvirtd + QEMU for the integration tests (root, no systemd needed).

* ``LibvirtDaemon``: uses a running libvirtd (``virsh -c qemu:///system version`` answers) or
  starts virtlogd + libvirtd itself (DESIGN.md section 7 recipe); ``stop()`` only ends what it
  started; ``restart()`` kills libvirtd and starts it again (running domains survive).
* ``start_event_loop()``: libvirt's default event loop in a daemon thread; it must run before the
  first connection is opened, or that connection never delivers events.
* ``define_nos_domain()``: a domain with no OS that stays running (128 MiB, 1 vCPU, ACPI for PCI
  hotplug, a virtio-scsi controller, no disk, no network, no graphics, no serial).
* ``LoopDevice``: a loop device over a sparse file, to attach as a disk and grow.
* ``EventRecorder``: collects DEVICE_REMOVED and BLOCK_THRESHOLD events with their arrival time.
* ``domain_disks()``, ``hmp()``: the disks of a domain's XML, an HMP command through virsh.

Traps met on this machine (Debian 12, libvirt 9.0, QEMU 7.2):

* ``<graphics type='none'/>`` is invalid XML: "no graphics" means no ``<graphics>`` element.
* Without ``<features><acpi/></features>`` the i440fx ``pci.0`` bus refuses hotplug ("Bus 'pci.0'
  does not support hotplugging"), so a virtio disk could not be attached.
* ``virsh qemu-monitor-command --hmp`` exits 0 even when the HMP command failed (the error is the
  text of the reply), and ``qemu-io`` prints its result ("wrote N/N bytes") to QEMU's stdout, i.e.
  ``/var/log/libvirt/qemu/DOM.log``, not to the reply: ``hmp()`` raises on an "Error" reply.
* ``qemu-io`` by node name (``libvirt-1-format``) fails with a permission conflict; use the device
  id: ``qemu-io -d <alias> ...`` for a SCSI disk (alias ``scsi0-0-0-0``; the qdev path
  ``/machine/peripheral/scsi0-0-0-0`` works too), and
  ``qemu-io -d /machine/peripheral/<alias>/virtio-backend ...`` for a virtio disk (``-d <alias>``
  answers "Device does not have a block device backend").
* ``detachDeviceFlags()`` of a virtio disk on a guest without OS waits 5 s inside libvirtd and then
  returns success although the disk is still there; ``detachDeviceAlias()`` returns at once.
* Killing libvirtd closes every open connection; ``LibvirtSession.connection()`` reopens one.
* Without an init that reaps, a killed daemon may linger as a zombie: a zombie counts as dead.

One libvirtd serves every test process of the host (pytest-xdist workers, or two runs at once);
host-wide flocks in ``LOCK_DIR`` (/run/lock) keep them out of each other's way:

* ``ensure_running()``, ``restart()``, ``register_user()`` and ``unregister_user()`` hold
  ``DAEMON_LOCK``: two workers never start libvirtd twice, nor start it while a test restarts it;
  the users are counted, and only the last one out stops what a test session started
  (``SLTV_STOP_LIBVIRTD=1``).
* ``restart_guard(exclusive)``, a readers-writer lock (``rw_lock``): held shared by every test that
  uses libvirtd (conftest) and by every run of a module that opens libvirt (lvmtest.run_module);
  exclusive by a test that restarts libvirtd, which so runs while nothing else uses it on any
  worker (a restart closes every connection and makes libvirtd refuse calls for a while).
* ``domain_scan()`` (shared) around every look at all the domains of the host (the modules
  sltv_attachment, sltv_info and sltv_extend, ``Hypervisor.users_of``: a domain undefined in the
  middle of their scan fails them with "Domain not found"), ``domain_removal()`` (exclusive) around
  every undefine (``remove_domain``).
* ``host_lock(name)``: an exclusive lock (conftest's TEST_GROUPS).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

try:
    import libvirt
except ImportError:  # the fixtures skip (or fail in CI) with a clear reason
    libvirt = None

URI = "qemu:///system"
TEST_PREFIX = "sltvtest-"
START_TIMEOUT = 30.0
MIB = 1024 * 1024

LIBVIRTD_BIN = os.environ.get("SLTV_LIBVIRTD_BIN") or shutil.which("libvirtd") or "/usr/sbin/libvirtd"
VIRTLOGD_BIN = os.environ.get("SLTV_VIRTLOGD_BIN") or shutil.which("virtlogd") or "/usr/sbin/virtlogd"
VIRSH_BIN = shutil.which("virsh") or "/usr/bin/virsh"
QEMU_BIN = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
LOSETUP_BIN = shutil.which("losetup") or "/usr/sbin/losetup"
QEMU_CONF = "/etc/libvirt/qemu.conf"
QEMU_CONF_TEXT = (
    "# Written by the sltv.core integration tests (tests/integration/libvirttest.py):\n"
    "# QEMU runs as root so that it can open loop devices without relabelling.\n"
    'user = "root"\n'
    'group = "root"\n'
)
# host-wide locks (tmpfs: gone at boot); see the module docstring
LOCK_DIR = os.environ.get("SLTV_TEST_LOCK_DIR") or "/run/lock"
DAEMON_LOCK = os.path.join(LOCK_DIR, "sltv-test-libvirtd.lock")
DAEMON_USERS = os.path.join(LOCK_DIR, "sltv-test-libvirtd.users")
REMOVAL_WAIT = 120.0  # longest wait of a domain removal for the scans of others (then it goes ahead)
INSTALL_HINT = "Debian: apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86"


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(message):
    """Skip on a developer machine, fail in CI."""
    if in_ci():
        pytest.fail("CI is set but " + message, pytrace=False)
    pytest.skip(message)


def require_libvirt():
    """Skip (or fail in CI) unless root, the daemons, virsh, QEMU and the libvirt module are here."""
    if os.geteuid() != 0:
        skip_or_fail("the libvirt tests need root (they start libvirtd and use loop devices)")
    for path, what in ((LIBVIRTD_BIN, "libvirtd"), (VIRTLOGD_BIN, "virtlogd"), (VIRSH_BIN, "virsh"),
                       (QEMU_BIN, "qemu-system-x86_64"), (LOSETUP_BIN, "losetup")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            skip_or_fail("%s not found at %s (%s)" % (what, path, INSTALL_HINT))
    if libvirt is None:
        skip_or_fail("the libvirt Python module is missing (pip install libvirt-python, or python3-libvirt)")


def run(argv, timeout=60, check=True):
    """Run argv (never a shell); return stdout, raise with the output when check and it failed."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def pid_of(pidfile, name):
    """The pid in pidfile if that process is alive and is called name, else None."""
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().strip())
        with open("/proc/%d/comm" % pid) as comm:
            if comm.read().strip() != name:
                return None
    except (IOError, OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _lock_fd(path):
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def flocked(path, optional=False):
    """Hold flock(path) exclusive for the with block; ``optional``: no lock when path cannot be opened."""
    try:
        fd = _lock_fd(path)
    except OSError:
        if not optional:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def host_lock(name):
    """Hold the host-wide lock LOCK_DIR/sltv-test-group-NAME.lock (none when LOCK_DIR is not writable)."""
    return flocked(os.path.join(LOCK_DIR, "sltv-test-group-%s.lock" % name), optional=True)


def _flock_within(fd, operation, deadline):
    """flock, giving up at deadline (None: wait for ever); True when taken."""
    if deadline is None:
        fcntl.flock(fd, operation)
        return True
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except (IOError, OSError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


_SHARED_HELD = {}  # rw_lock name -> shared holds of this process


@contextlib.contextmanager
def rw_lock(name, exclusive=False, timeout=None):
    """A host-wide readers-writer lock (LOCK_DIR/sltv-test-rw-NAME.lock and its .gate): yields the
    seconds spent waiting. While a writer waits, new readers wait too (the gate: no writer starves);
    a process that already reads reads again at once (no deadlock behind a waiting writer). A writer
    with a timeout goes ahead without the lock after it (a reader of its own process that failed
    half-way must not hang the run). Without a writable LOCK_DIR, no lock."""
    began = time.monotonic()
    try:
        gate = _lock_fd(os.path.join(LOCK_DIR, "sltv-test-rw-%s.gate" % name))
        use = _lock_fd(os.path.join(LOCK_DIR, "sltv-test-rw-%s.lock" % name))
    except OSError:
        yield 0.0
        return
    try:
        if exclusive:
            deadline = None if timeout is None else began + timeout
            if _flock_within(gate, fcntl.LOCK_EX, deadline):  # from now on new readers wait...
                _flock_within(use, fcntl.LOCK_EX, deadline)   # ...and the readers of now end
            yield time.monotonic() - began
        else:
            if not _SHARED_HELD.get(name):
                fcntl.flock(gate, fcntl.LOCK_SH)  # no writer waiting
            fcntl.flock(use, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
            _SHARED_HELD[name] = _SHARED_HELD.get(name, 0) + 1
            try:
                yield time.monotonic() - began
            finally:
                _SHARED_HELD[name] -= 1
    finally:
        os.close(use)
        os.close(gate)


def restart_guard(exclusive=False):
    """Shared: a test that may use libvirtd; exclusive: one that restarts it (every connection of
    every process closes, and libvirtd refuses calls for a while). Yields the seconds waited."""
    return rw_lock("libvirtd", exclusive)


def domain_scan():
    """Shared: a look at every domain of the host (sltv_attachment, sltv_info and sltv_extend run
    Hypervisor.disk_users: listAllDomains, then each domain's XML; a domain undefined meanwhile fails
    the module with "Domain not found"). Hold it around such a call."""
    return rw_lock("domains")


def domain_removal():
    """Exclusive: a domain undefined (or a transient one destroyed) while no scan runs."""
    return rw_lock("domains", exclusive=True, timeout=REMOVAL_WAIT)


def start_event_loop():
    """Register libvirt's default event loop and run it in a daemon thread (once per process).

    Must be called BEFORE the connections that should deliver events are opened.
    """
    if start_event_loop.thread is not None:
        return start_event_loop.thread
    libvirt.virEventRegisterDefaultImpl()

    def loop():
        while True:
            libvirt.virEventRunDefaultImpl()

    thread = threading.Thread(target=loop, name="libvirt-event-loop")
    thread.daemon = True
    thread.start()
    start_event_loop.thread = thread
    return thread


start_event_loop.thread = None


class LibvirtDaemon(object):
    """virtlogd + libvirtd: reuse the running ones, or start them (as root, without systemd)."""

    uri = URI

    def __init__(self, qemu_conf=QEMU_CONF, libvirtd_pidfile="/run/libvirtd.pid",
                 virtlogd_pidfile="/run/virtlogd.pid"):
        self.qemu_conf = qemu_conf
        self.libvirtd_pidfile = libvirtd_pidfile
        self.virtlogd_pidfile = virtlogd_pidfile
        self.started_libvirtd = False
        self.started_virtlogd = False
        self.qemu_conf_backup = None
        self.start_seconds = None  # how long the last start took (None: found running)

    def answers(self):
        """True when ``virsh -c qemu:///system version`` works."""
        try:
            proc = subprocess.run([VIRSH_BIN, "-c", self.uri, "version"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    def libvirtd_pid(self):
        return pid_of(self.libvirtd_pidfile, "libvirtd")

    def virtlogd_pid(self):
        return pid_of(self.virtlogd_pidfile, "virtlogd")

    def ensure_running(self):
        """Make qemu:///system answer; return self. Two processes at once: one starts the daemons."""
        if self.answers():
            return self
        with flocked(DAEMON_LOCK):
            if self.answers():  # started (or restarted) by another process meanwhile
                return self
            self._start()
        return self

    def _start(self):
        began = time.monotonic()
        self.prepare_host()
        if self.virtlogd_pid() is None:
            run([VIRTLOGD_BIN, "-d"])
            self.started_virtlogd = True
        if self.libvirtd_pid() is None:
            run([LIBVIRTD_BIN, "-d"])
            self.started_libvirtd = True
        self.wait_ready(began)
        self.start_seconds = time.monotonic() - began

    # -- the processes that use this libvirtd (pytest-xdist workers, concurrent runs) -------------
    @staticmethod
    def _read_users():
        try:
            with open(DAEMON_USERS) as handle:
                state = json.load(handle)
        except (IOError, OSError, ValueError):
            state = {}
        state.setdefault("users", [])
        state["users"] = [pid for pid in state["users"] if pid_alive(pid)]  # a killed run left its pid
        state.setdefault("libvirtd", False)
        state.setdefault("virtlogd", False)
        return state

    @staticmethod
    def _write_users(state):
        tmp = "%s.%d" % (DAEMON_USERS, os.getpid())
        with open(tmp, "w") as handle:
            json.dump(state, handle)
        os.rename(tmp, DAEMON_USERS)

    def register_user(self):
        """ensure_running(), and count this process as a user; remember what a test session started."""
        with flocked(DAEMON_LOCK):
            if not self.answers():
                self._start()
            state = self._read_users()
            state["libvirtd"] = state["libvirtd"] or self.started_libvirtd
            state["virtlogd"] = state["virtlogd"] or self.started_virtlogd
            if os.getpid() not in state["users"]:
                state["users"].append(os.getpid())
            self._write_users(state)
        return self

    def unregister_user(self, stop=False):
        """This process is done with libvirtd. The last user out stops, with ``stop``, what a test
        session started while users overlapped; without, the daemons now belong to the host."""
        with flocked(DAEMON_LOCK):
            state = self._read_users()
            state["users"] = [pid for pid in state["users"] if pid != os.getpid()]
            if not state["users"]:
                if stop:
                    self.started_libvirtd, self.started_virtlogd = state["libvirtd"], state["virtlogd"]
                    self.stop()
                state["libvirtd"] = state["virtlogd"] = False
            self._write_users(state)

    def wait_ready(self, began, timeout=START_TIMEOUT):
        while not self.answers():
            if time.monotonic() - began > timeout:
                raise RuntimeError(
                    "libvirtd did not answer on %s within %.0f s (pid %s; look at the libvirtd log or run "
                    "'libvirtd -v' in a shell)" % (self.uri, timeout, self.libvirtd_pid()))
            time.sleep(0.1)

    def prepare_host(self):
        """The libvirt-qemu user/group, /var/log/libvirt and a qemu.conf running QEMU as root."""
        try:
            grp.getgrnam("libvirt-qemu")
        except KeyError:
            run(["groupadd", "--system", "libvirt-qemu"])
        try:
            pwd.getpwnam("libvirt-qemu")
        except KeyError:
            run(["useradd", "--system", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin",
                 "libvirt-qemu"])
        for directory in ("/var/log/libvirt", "/var/log/libvirt/qemu", os.path.dirname(self.qemu_conf)):
            if not os.path.isdir(directory):
                os.makedirs(directory)
        self.write_qemu_conf()

    @staticmethod
    def conf_settings(text):
        """key -> value of the uncommented ``key = "value"`` lines of a libvirt config file."""
        settings = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                key, value = line.split("=", 1)
                settings[key.strip()] = value.strip().strip('"')
        return settings

    def write_qemu_conf(self):
        """Keep a qemu.conf that already runs QEMU as root; else back it up and write ours."""
        if os.path.exists(self.qemu_conf):
            with open(self.qemu_conf) as handle:
                settings = self.conf_settings(handle.read())
            if settings.get("user") == "root" and settings.get("group", "root") == "root":
                return False
            self.qemu_conf_backup = "%s.sltv-backup-%d" % (self.qemu_conf, int(time.time()))
            shutil.copy2(self.qemu_conf, self.qemu_conf_backup)
        with open(self.qemu_conf, "w") as handle:
            handle.write(QEMU_CONF_TEXT)
        return True

    @staticmethod
    def _kill(pid, timeout=30.0):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += timeout
            time.sleep(0.05)

    def stop(self):
        """Stop only the daemons this object started (libvirtd first)."""
        if self.started_libvirtd:
            pid = self.libvirtd_pid()
            if pid is not None:
                self._kill(pid)
            self.started_libvirtd = False
        if self.started_virtlogd:
            pid = self.virtlogd_pid()
            if pid is not None:
                self._kill(pid)
            self.started_virtlogd = False

    def restart(self):
        """Kill libvirtd and start it again (QEMU processes keep running); return seconds taken.

        Every connection open before is closed by this; open new ones. If libvirtd was already
        running before ensure_running(), it still is not ours to stop() afterwards.
        """
        began = time.monotonic()
        with flocked(DAEMON_LOCK):  # no other process starts libvirtd meanwhile
            pid = self.libvirtd_pid()
            if pid is None:
                raise RuntimeError("no libvirtd to restart (no live pid in %s)" % self.libvirtd_pidfile)
            self._kill(pid)
            if self.virtlogd_pid() is None:
                run([VIRTLOGD_BIN, "-d"])
                self.started_virtlogd = True
            run([LIBVIRTD_BIN, "-d"])
            self.wait_ready(began)
        return time.monotonic() - began


def ignore_error(opaque, error):  # pylint: disable=unused-argument
    """libvirt error handler that prints nothing (the errors are raised as libvirtError anyway)."""


class LibvirtSession(object):
    """One connection for a whole test session, reopened when libvirtd restarted."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.conn = None
        start_event_loop()
        # without a handler libvirt prints every error to stderr, expected ones too (lookups)
        libvirt.registerErrorHandler(ignore_error, None)

    def connection(self):
        if self.conn is not None:
            try:
                if self.conn.isAlive():
                    self.conn.getLibVersion()
                    return self.conn
            except libvirt.libvirtError:
                pass
            self.close()
        self.conn = libvirt.open(self.daemon.uri)
        return self.conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
            self.conn = None


def nos_domain_xml(name, domain_type="kvm", memory_mib=128):
    """A domain without OS: nothing to boot, it just sits there running (and takes hotplug)."""
    return (
        "<domain type='{type}'>\n"
        "  <name>{name}</name>\n"
        "  <memory unit='MiB'>{memory}</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
        "  <features><acpi/></features>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <controller type='scsi' index='0' model='virtio-scsi'/>\n"
        "    <controller type='usb' model='none'/>\n"
        "    <memballoon model='none'/>\n"
        "  </devices>\n"
        "</domain>\n"
    ).format(type=domain_type, name=name, memory=memory_mib)


def usable_domain_type(conn):
    """'kvm' when a kvm domain starts and stays running here, else 'qemu' (TCG); probed once.

    SLTV_LIBVIRT_DOMAIN_TYPE=kvm|qemu skips the probe.
    """
    if usable_domain_type.cached is None:
        usable_domain_type.cached = "qemu"
        forced = os.environ.get("SLTV_LIBVIRT_DOMAIN_TYPE")
        if forced:
            usable_domain_type.cached = forced
            usable_domain_type.reason = "SLTV_LIBVIRT_DOMAIN_TYPE=%s" % forced
        elif os.path.exists("/dev/kvm"):
            name = "%sprobe-%s" % (TEST_PREFIX, uuid.uuid4().hex[:8])
            try:
                dom = conn.createXML(nos_domain_xml(name, "kvm"), 0)
            except libvirt.libvirtError as exc:
                usable_domain_type.reason = "kvm domain did not start: %s" % exc
            else:
                time.sleep(1.0)
                if dom.isActive():
                    usable_domain_type.cached = "kvm"
                    usable_domain_type.reason = "kvm domain started and kept running"
                else:
                    usable_domain_type.reason = "kvm domain stopped within 1 s"
                try:
                    with domain_removal():  # a transient domain: gone once destroyed
                        dom.destroy()
                except libvirt.libvirtError:
                    pass
        else:
            usable_domain_type.reason = "no /dev/kvm"
    return usable_domain_type.cached


usable_domain_type.cached = None
usable_domain_type.reason = None


def define_nos_domain(conn, name, persistent=True, start=True, domain_type=None):
    """Define (persistent) or create (transient) a no-OS domain; return the virDomain."""
    xml = nos_domain_xml(name, domain_type or usable_domain_type(conn))
    if not persistent:
        if not start:
            raise ValueError("a transient domain exists only while running: start must be True")
        return conn.createXML(xml, 0)
    dom = conn.defineXML(xml)
    if start:
        dom.create()
    return dom


def remove_domain(conn, name):
    """Destroy (if running) and undefine (if persistent) the domain name; False if there is none.

    What makes it vanish (the undefine, the destroy of a transient domain) runs under
    ``domain_removal()``: no other process scans all the domains meanwhile."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    try:
        persistent = dom.isPersistent()  # ask first: a transient domain is gone once destroyed
        for attempt in range(10):
            if not dom.isActive():
                break
            try:
                with domain_removal() if not persistent else contextlib.nullcontext():
                    dom.destroy()
            except libvirt.libvirtError:
                # Right after a libvirtd restart the domain may read as running, then refuse
                # destroy as "not running" while libvirtd reconnects to its QEMU: look again.
                if attempt == 9:
                    raise
                time.sleep(0.5)
        if persistent:
            with domain_removal():
                dom.undefine()
    except libvirt.libvirtError:
        if domain_exists(conn, name):
            raise
    return True


def domain_exists(conn, name):
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def undefine_all(conn, prefix=TEST_PREFIX):
    """Destroy and undefine every domain whose name starts with prefix; return their names."""
    names = [dom.name() for dom in conn.listAllDomains(0) if dom.name().startswith(prefix)]
    for name in names:
        remove_domain(conn, name)
    return names


class LoopDevice(object):
    """A loop device over a sparse file of size_mib MiB."""

    def __init__(self, directory, size_mib):
        self.image = os.path.join(directory, "%sloop-%s.img" % (TEST_PREFIX, uuid.uuid4().hex[:8]))
        self.size_mib = size_mib
        with open(self.image, "wb") as image:
            image.truncate(size_mib * MIB)
        self.path = run([LOSETUP_BIN, "--find", "--show", self.image]).strip()

    @property
    def size_bytes(self):
        return self.size_mib * MIB

    def grow(self, new_size_mib):
        """Grow the file and make the loop device see it (``losetup -c``)."""
        with open(self.image, "r+b") as image:
            image.truncate(new_size_mib * MIB)
        run([LOSETUP_BIN, "-c", self.path])
        self.size_mib = new_size_mib

    def destroy(self):
        if self.path:
            run([LOSETUP_BIN, "-d", self.path], check=False)
            self.path = None
        if os.path.exists(self.image):
            os.remove(self.image)


def disk_xml(source_dev, target_dev, bus):
    """A raw block disk, cache=none + io=native (what the product attaches)."""
    return ("<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>"
            "<source dev='%s'/><target dev='%s' bus='%s'/></disk>" % (source_dev, target_dev, bus))


def domain_disks(dom, live=True):
    """The disks of the live (or, live=False, the persistent) definition as a list of dicts."""
    xml = dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
    disks = []
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        alias = disk.find("alias")
        disks.append({
            "type": disk.get("type"),
            "device": disk.get("device"),
            "target": target.get("dev") if target is not None else None,
            "bus": target.get("bus") if target is not None else None,
            "source": (source.get("dev") or source.get("file")) if source is not None else None,
            "driver_type": driver.get("type") if driver is not None else None,
            "alias": alias.get("name") if alias is not None else None,
        })
    return disks


def hmp(dom_name, command, uri=URI, check=True):
    """Run an HMP command through ``virsh qemu-monitor-command --hmp``; return its reply.

    virsh exits 0 when the HMP command itself failed: with check, a reply starting with "Error"
    raises too. qemu-io output goes to the domain's log file, not to the reply.
    """
    proc = subprocess.run([VIRSH_BIN, "-c", uri, "qemu-monitor-command", dom_name, "--hmp", command],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                          check=False)
    reply = proc.stdout.strip()
    if check and (proc.returncode != 0 or reply.startswith("Error") or "\nError" in reply):
        raise RuntimeError("HMP %r on %s failed (%d): %s %s"
                           % (command, dom_name, proc.returncode, reply, proc.stderr.strip()))
    return reply


def qemu_io_write(dom_name, alias, bus, offset, length, uri=URI):
    """Make QEMU write length bytes at offset into a disk (the device id differs by bus)."""
    device = "/machine/peripheral/%s/virtio-backend" % alias if bus == "virtio" else alias
    return hmp(dom_name, 'qemu-io -d %s "write %d %d"' % (device, offset, length), uri=uri)


class EventRecorder(object):
    """DEVICE_REMOVED and BLOCK_THRESHOLD events of one connection, with time.monotonic() stamps.

    Events are dicts: kind ("device-removed" / "block-threshold"), domain, time, plus alias or
    dev, path, threshold, excess.
    """

    def __init__(self, conn):
        self.conn = conn
        self.events = []
        self.cond = threading.Condition()
        self.callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._removed, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD, self._threshold, None),
        ]

    def _add(self, event):
        event["time"] = time.monotonic()
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def _removed(self, conn, dom, alias, opaque):  # pylint: disable=unused-argument
        self._add({"kind": "device-removed", "domain": dom.name(), "alias": alias})

    def _threshold(self, conn, dom, dev, path, threshold, excess, opaque):  # pylint: disable=unused-argument
        self._add({"kind": "block-threshold", "domain": dom.name(), "dev": dev, "path": path,
                   "threshold": threshold, "excess": excess})

    def wait_for(self, timeout, **match):
        """The first event whose items include match, waiting up to timeout seconds; None if none came."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events:
                    if all(event.get(key) == value for key, value in match.items()):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def close(self):
        for callback_id in self.callback_ids:
            try:
                self.conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        self.callback_ids = []

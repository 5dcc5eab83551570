# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real etcd servers for tests and benchmarks: single member, 127.0.0.1, free ports, temporary data."""


from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest

ETCD_BIN = os.environ.get("SLTV_ETCD_BIN") or "/usr/bin/etcd"
ETCDCTL_BIN = os.environ.get("SLTV_ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"
OPENSSL_BIN = shutil.which("openssl") or "/usr/bin/openssl"
START_TIMEOUT = 30.0

_RUNNING = []  # every started server, stopped at exit even if a finalizer did not run


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binary(path, what):
    """Skip (developer machine) or fail (CI) when a needed program is missing."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return
    message = "%s not found at %s (Debian: apt-get install etcd-server etcd-client openssl)" % (what, path)
    if in_ci():
        pytest.fail("CI is set but " + message, pytrace=False)
    pytest.skip(message)


# free_port() hands out ports of this process's own range, above the kernel's ephemeral range
# (32768-60999 by default, where bind(0) and every outgoing connection take theirs): a pytest-xdist
# worker gwN uses PORT_BASE + N * PORT_SPAN .. + PORT_SPAN - 1, so that two workers never pick the
# same port between the probe below and etcd's own bind; a serial run uses the first range.
PORT_BASE = int(os.environ.get("SLTV_TEST_PORT_BASE") or 61000)
PORT_SPAN = 400
PORT_RANGES = (65536 - PORT_BASE) // PORT_SPAN


def port_range():
    """(first, last + 1) of the ports of this process: by its pytest-xdist worker number (gwN)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    first = PORT_BASE + (number % PORT_RANGES) * PORT_SPAN
    return first, first + PORT_SPAN


def _bindable(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_port():
    """A port nobody listens on, from this process's range; each call the next one (a port just
    closed is not handed out again soon). The range starts at a random offset: two runs at once."""
    first, end = port_range()
    if free_port.next is None:
        free_port.next = first + random.randrange(PORT_SPAN)
    for _attempt in range(PORT_SPAN):
        port = free_port.next
        free_port.next = port + 1 if port + 1 < end else first
        if _bindable(port):
            return port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the whole range busy: any free port
    try:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


free_port.next = None


def run(argv, **kwargs):
    """Run argv (never a shell), raise with its output on failure."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), proc.returncode, proc.stdout))
    return proc.stdout


class TlsMaterial(object):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (EC keys)."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_cert, self.ca_key = self._ca("ca")
        self.other_ca_cert = self._ca("other-ca")[0]
        self.server_cert, self.server_key = self._leaf(
            "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        self.client_cert, self.client_key = self._leaf("client", "root", "extendedKeyUsage=clientAuth\n")

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name):
        cert, key = self._path(name + ".crt"), self._path(name + ".key")
        run([OPENSSL_BIN, "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", key, "-out", cert, "-days", "3", "-subj", "/CN=sltv test %s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        return cert, key

    def _leaf(self, name, cn, extensions):
        cert, key, csr, ext = (self._path(name + suffix) for suffix in (".crt", ".key", ".csr", ".ext"))
        with open(ext, "w") as handle:
            handle.write(extensions)
        run([OPENSSL_BIN, "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", key, "-out", csr, "-subj", "/CN=%s" % cn])
        run([OPENSSL_BIN, "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-CAcreateserial", "-out", cert, "-days", "3", "-extfile", ext])
        return cert, key


class EtcdServer(object):
    """One etcd member. Ports and data dir are kept across stop()/start()."""

    USER = "root"
    PASSWORD = "Sltv-test-pw-4f9c2a"  # distinctive: tests grep messages for it

    def __init__(self, base_dir, name="sltv-test", tls=None, auth=False):
        self.base_dir = base_dir
        self.name = name
        self.tls = tls
        self.auth = auth
        self.data_dir = os.path.join(base_dir, "data")
        self.log_path = os.path.join(base_dir, "etcd.log")
        self.client_port = None
        self.peer_port = None
        self.proc = None
        self._auth_enabled = False
        self.initial_cluster = None  # "name=peer,..." of an EtcdCluster; None: a cluster of one

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _argv(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        argv = [
            ETCD_BIN, "--name", self.name, "--data-dir", self.data_dir,
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or "%s=%s" % (self.name, peer), "--initial-cluster-state", "new",
            "--initial-cluster-token", "sltv-test-%s" % (self.initial_cluster and "cluster" or self.peer_port),
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        if self.tls:
            argv += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--trusted-ca-file", self.tls.ca_cert, "--client-cert-auth"]
        return argv

    def start(self):
        if self.running:
            return self
        first_start = self.client_port is None
        for attempt in range(3):
            if first_start:
                # Free ports can be taken by someone else before etcd binds them: retry.
                self.client_port, self.peer_port = free_port(), free_port()
                if self.client_port == self.peer_port:
                    continue
            self.launch()
            if self._wait_healthy():
                break
            self.stop()
            if not first_start or attempt == 2:
                raise RuntimeError("etcd did not start; log %s:\n%s" % (self.log_path, self.log_tail()))
        if self.auth and not self._auth_enabled:
            self._enable_auth()
        return self

    def launch(self):
        """Start the process without waiting (a cluster member is healthy only once a quorum runs)."""
        log = open(self.log_path, "a")
        try:
            self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            log.close()
        _RUNNING.append(self)

    def _wait_healthy(self):
        import requests  # noqa: imported late: conftest must load even without it

        deadline = time.monotonic() + START_TIMEOUT
        kwargs = {"timeout": 1.0}
        if self.tls:
            kwargs["verify"] = self.tls.ca_cert
            kwargs["cert"] = (self.tls.client_cert, self.tls.client_key)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                resp = requests.get(self.endpoint + "/health", **kwargs)
                if resp.status_code == 200 and resp.json().get("health") == "true":
                    return True
            except (requests.exceptions.RequestException, ValueError):
                pass
            time.sleep(0.05)
        return False

    def _enable_auth(self):
        self.etcdctl("user", "add", self.USER, "--interactive=false", "--new-user-password", self.PASSWORD)
        self.etcdctl("user", "grant-role", self.USER, "root")
        self.etcdctl("auth", "enable")
        self._auth_enabled = True

    def etcdctl(self, *args):
        """Run etcdctl against this server (as root once auth is on); returns its output."""
        argv = [ETCDCTL_BIN, "--endpoints", self.endpoint, "--dial-timeout", "5s", "--command-timeout", "10s"]
        if self.tls:
            argv += ["--cacert", self.tls.ca_cert, "--cert", self.tls.client_cert, "--key", self.tls.client_key]
        if self._auth_enabled:
            argv += ["--user", "%s:%s" % (self.USER, self.PASSWORD)]
        env = dict(os.environ, ETCDCTL_API="3")
        return run(argv + list(args), env=env)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after ``timeout``. Leaves no process behind."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self in _RUNNING:
            _RUNNING.remove(self)

    def kill(self):
        """Crash-stop (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def log_tail(self, lines=30):
        try:
            with open(self.log_path) as handle:
                return "".join(handle.readlines()[-lines:])
        except IOError:
            return "(no log)"

    def client_settings(self, **overrides):
        """Lock settings (make_vg_lock / EtcdVgLock.from_settings) for this server."""
        settings = {
            "lock_backend": "etcd",
            "etcd_endpoints": [self.endpoint],
            "etcd_ca_cert": self.tls.ca_cert if self.tls else None,
            "etcd_cert": self.tls.client_cert if self.tls else None,
            "etcd_key": self.tls.client_key if self.tls else None,
            "etcd_user": self.USER if self.auth else None,
            "etcd_password": self.PASSWORD if self.auth else None,
            "lock_timeout": 10.0,
            "lock_ttl": 10,
            "lock_prefix": "/sltv-test",
        }
        settings.update(overrides)
        return settings

    def __repr__(self):
        return "<EtcdServer %s %s>" % (self.endpoint if self.client_port else "(not started)",
                                       "running" if self.running else "stopped")


class EtcdCluster(object):
    """A real cluster of ``size`` members on 127.0.0.1 (free ports, own data dirs).

    ``members[i]`` are EtcdServer objects (``kill()``, ``start()`` again keeps its ports and data);
    ``endpoints`` lists every member's client URL, ``client_settings()`` the lock settings for all."""

    def __init__(self, base_dir, size=3):
        self.members = []
        for number in range(size):
            member = EtcdServer(os.path.join(base_dir, "m%d" % number), name="m%d" % number)
            os.makedirs(member.base_dir)
            member.client_port, member.peer_port = free_port(), free_port()
            self.members.append(member)
        peers = ",".join("%s=http://127.0.0.1:%d" % (m.name, m.peer_port) for m in self.members)
        for member in self.members:
            member.initial_cluster = peers

    @property
    def endpoints(self):
        return [member.endpoint for member in self.members]

    def start(self):
        for member in self.members:
            if not member.running:
                member.launch()
        for member in self.members:
            if not member._wait_healthy():  # pylint: disable=protected-access  # same module family
                self.stop()
                raise RuntimeError("etcd member %s did not start; log %s:\n%s"
                                   % (member.name, member.log_path, member.log_tail()))
        return self

    def member(self, endpoint):
        return next(m for m in self.members if m.endpoint == endpoint)

    def stop(self):
        for member in self.members:
            member.stop(timeout=5.0)

    def client_settings(self, **overrides):
        settings = self.members[0].client_settings(etcd_endpoints=self.endpoints)
        settings.update(overrides)
        return settings


@atexit.register
def _stop_all():
    for server in list(_RUNNING):
        server.stop(timeout=5.0)

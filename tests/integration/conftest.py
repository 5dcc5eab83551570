# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures starting REAL etcd servers (single member, 127.0.0.1, free ports, temporary data).

* ``etcd_server`` (session): a plain http server shared by all tests; use your own
  ``lock_prefix`` (or VG names) per test to stay out of each other's way.
* ``etcd_factory`` (function): ``etcd_factory(tls=False, auth=False)`` starts a new server that
  the test may ``stop()`` and ``start()`` again (same endpoint, same data); all are stopped at
  the end of the test.
* ``etcd_tls_server`` / ``etcd_auth_server`` (function): a server with client certificate
  auth, one with user/password auth (user root, password ``EtcdServer.PASSWORD``).
* ``tls_material`` (session): CA, server and client certificates made with openssl, plus
  ``other_ca`` (a CA that signed nothing here).

A server object has ``.endpoint``, ``.stop()``, ``.start()``, ``.kill()``, ``.running``,
``.client_settings(**overrides)`` (lock settings dict for it) and ``.etcdctl(*args)``.

Without etcd the tests are skipped, unless CI is set: there a missing etcd is a failure.

REAL libvirtd + QEMU (``libvirttest.py``; root):

* ``libvirtd`` (session): a ``LibvirtDaemon`` that answers on qemu:///system (found running, or
  started with virtlogd). It is left running after the session (starting it the first time
  costs seconds); set ``SLTV_STOP_LIBVIRTD=1`` to stop what the session started.
* ``libvirt_session`` (session): the session's one connection, opened after the event loop thread
  started (so events arrive), reopened when a test restarted libvirtd.
* ``libvirt_conn`` (function): that connection, alive.
* ``nos_domain`` (function): ``nos_domain(persistent=True, start=True)`` defines a no-OS domain
  ``sltvtest-<random>``; destroyed and undefined after the test.
* ``loop_device`` (function): ``loop_device(size_mib=64)`` makes a ``LoopDevice``; detached after
  the test, after the test's domains are gone.

Without libvirtd, virtlogd, virsh, QEMU or the libvirt module the libvirt tests are skipped,
unless CI is set.

Under pytest-xdist (``make integration`` runs ``-n SLTV_INTEGRATION_WORKERS --dist loadgroup``)
every worker has its own session fixtures: its own etcd servers (ports of its own range,
``etcdtest.free_port``), data dirs and loop files under its own ``tmp_path``; VG and domain names
are random. What the workers share is guarded here: one libvirtd for all (started under a lock,
stopped only by the last worker, ``libvirttest.LibvirtDaemon.register_user``); every test that
uses libvirtd (and every module run that opens libvirt) holds the libvirtd lock shared and a test
marked ``libvirtd_restart`` holds it exclusive (it runs while nothing else uses libvirtd); a domain
is undefined while no module looks at all the domains (``libvirttest.domain_removal``); the test
files of one ``TEST_GROUPS`` group run on one worker, one after the other, under a host lock.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import time
import uuid

import pytest

try:
    from xdist.scheduler import LoadGroupScheduling
except ImportError:  # serial runs need no pytest-xdist
    LoadGroupScheduling = None

import libvirttest
from etcdtest import ETCD_BIN, ETCDCTL_BIN, OPENSSL_BIN, EtcdServer, TlsMaterial, require_binary
from lvmtest import LoopVG


# Test files whose tests run on one pytest-xdist worker, one after the other, under a host lock.
# "guests": their guests pause for ENOSPC, with an agent (test_thin_agent_guest) or without one
# (test_guest_harness), and an agent counts the ENOSPC pauses of every domain of the host (it
# resumes only its own): beside another file's pause, "resumes >= pauses" fails. One TCG guest at
# a time also leaves a core to the other workers.
TEST_GROUPS = {
    "test_guest_harness.py": "guests",
    "test_thin_agent_guest.py": "guests",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "libvirtd_restart: restarts the host's libvirtd; runs while nothing else "
                                       "uses libvirtd, on any pytest-xdist worker (libvirttest.restart_guard)")


if LoadGroupScheduling is not None:
    class GroupScheduling(LoadGroupScheduling):
        """--dist loadgroup, with TEST_GROUPS as groups too: pytest-xdist 3.8 groups by a suffix it
        writes into the node id, which pytest 9.2's structured node ids ignore (pytest-xdist issue
        #1386), so that its xdist_group mark groups nothing here. The largest work unit (a group)
        is handed out first (--loadscope-reorder, the default)."""

        def _split_scope(self, nodeid):
            scope = super(GroupScheduling, self)._split_scope(nodeid)
            if scope != nodeid:
                return scope  # an xdist_group mark, where pytest-xdist's suffix works
            return TEST_GROUPS.get(os.path.basename(nodeid.split("::", 1)[0]), nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "loadgroup":
            return GroupScheduling(config, log)
        return None


@pytest.fixture(autouse=True)
def host_guards(request):
    """The host lock of the test's TEST_GROUPS group, then the libvirtd lock (libvirttest.restart_guard):
    exclusive for a ``libvirtd_restart`` test, shared for one that uses the ``libvirtd`` fixture (the
    modules that open libvirt take it themselves, lvmtest.run_module), none for the others: they go
    on while libvirtd restarts. Waits longer than 0.5 s are recorded as properties in the JUnit XML."""
    group = TEST_GROUPS.get(request.node.path.name)
    exclusive = request.node.get_closest_marker("libvirtd_restart") is not None
    began = time.monotonic()
    with libvirttest.host_lock(group) if group else contextlib.nullcontext():
        if group and time.monotonic() - began > 0.5:
            request.node.user_properties.append(("group_lock_wait", "%.1f" % (time.monotonic() - began)))
        if not exclusive and "libvirtd" not in request.fixturenames:
            yield
            return
        with libvirttest.restart_guard(exclusive) as waited:
            if waited > 0.5:
                request.node.user_properties.append(("libvirtd_guard_wait", "%.1f" % waited))
            yield


@pytest.fixture
def loop_vg(tmp_path):
    """A fresh VG on a loop device over a sparse 8 GiB file (lvm2 with activation off)."""
    vg = LoopVG(str(tmp_path))
    yield vg
    vg.destroy()


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    require_binary(OPENSSL_BIN, "openssl")
    return TlsMaterial(str(tmp_path_factory.mktemp("etcd-tls")))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """A plain etcd server shared by the whole session."""
    require_binary(ETCD_BIN, "etcd")
    server = EtcdServer(str(tmp_path_factory.mktemp("etcd-session")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_factory(tmp_path_factory, request):
    """Start extra servers: ``etcd_factory(tls=False, auth=False)``. Stopped after the test."""
    require_binary(ETCD_BIN, "etcd")
    servers = []

    def make(tls=False, auth=False):
        if auth:
            require_binary(ETCDCTL_BIN, "etcdctl")
        material = request.getfixturevalue("tls_material") if tls else None
        server = EtcdServer(str(tmp_path_factory.mktemp("etcd")), tls=material, auth=auth)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def etcd_tls_server(etcd_factory):
    return etcd_factory(tls=True)


@pytest.fixture
def etcd_auth_server(etcd_factory):
    return etcd_factory(auth=True)


@pytest.fixture(scope="session")
def libvirtd():
    """A libvirtd answering on qemu:///system; left running (SLTV_STOP_LIBVIRTD=1 stops ours)."""
    libvirttest.require_libvirt()
    daemon = libvirttest.LibvirtDaemon().register_user()  # pytest-xdist workers: one starts it
    try:
        yield daemon
    finally:
        daemon.unregister_user(stop=bool(os.environ.get("SLTV_STOP_LIBVIRTD")))  # the last one stops it


@pytest.fixture(scope="session")
def libvirt_session(libvirtd):
    session = libvirttest.LibvirtSession(libvirtd)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def libvirt_conn(libvirt_session):
    """The session's connection (event loop running), reopened if libvirtd was restarted."""
    return libvirt_session.connection()


@pytest.fixture
def loop_device(tmp_path):
    """``loop_device(size_mib=64)`` -> LoopDevice; all detached after the test."""
    libvirttest.require_libvirt()
    loops = []

    def make(size_mib=64):
        loop = libvirttest.LoopDevice(str(tmp_path), size_mib)
        loops.append(loop)
        return loop

    try:
        yield make
    finally:
        for loop in loops:
            loop.destroy()


@pytest.fixture
def nos_domain(libvirt_session, loop_device):
    """``nos_domain(persistent=True, start=True, domain_type=None)`` -> virDomain ``sltvtest-<random>``.

    Depends on loop_device so that pytest tears it down first: the domains go before the loops.
    """
    names = []

    def make(persistent=True, start=True, domain_type=None):
        name = "%s%s" % (libvirttest.TEST_PREFIX, uuid.uuid4().hex[:8])
        names.append(name)
        return libvirttest.define_nos_domain(libvirt_session.connection(), name, persistent=persistent, start=start,
                                             domain_type=domain_type)

    try:
        yield make
    finally:
        conn = libvirt_session.connection()
        for name in names:
            libvirttest.remove_domain(conn, name)

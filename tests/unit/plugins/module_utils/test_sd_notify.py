# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd's notify protocol against datagram sockets the tests bind (a path and an abstract name).

libsystemd's sd_notify (python3-systemd) reads $NOTIFY_SOCKET from the process environment: the tests
set it there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

import pytest

from ansible_collections.sltv.core.plugins.module_utils.infra.sd_notify import Notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
        env = address
    else:
        name = "sltv-test-notify-%d-%d" % (os.getpid(), id(sock))
        sock.bind("\0" + name)
        env = "@" + name
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    yield env, sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode("utf-8").split("\n")


def test_datagrams_arrive(listener):
    env, sock = listener
    notifier = Notifier()
    assert notifier.address == env
    assert notifier.ready("watching 3 thin disks") is True
    assert received(sock) == ["READY=1", "STATUS=watching 3 thin disks"]
    assert notifier.status("extending vg0/d1") is True
    assert received(sock) == ["STATUS=extending vg0/d1"]
    assert notifier.watchdog() is True
    assert received(sock) == ["WATCHDOG=1"]
    assert notifier.stopping() is True
    assert received(sock) == ["STOPPING=1"]


def test_no_socket_does_nothing(listener):
    env, sock = listener
    notifier = Notifier({})  # an environment without NOTIFY_SOCKET, whatever the process's says
    assert notifier.address is None
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.status("x") is False
    assert notifier.stopping() is False
    sock.settimeout(0.1)
    with pytest.raises(socket.timeout):
        sock.recv(4096)


def test_dead_socket_returns_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    assert notifier.ready("x") is False


def test_default_environment_is_os_environ(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "s"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier()
    assert notifier.address == str(tmp_path / "s")
    assert notifier.watchdog_interval == 2.0


@pytest.mark.parametrize("env, interval", [
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_the_timeout(env, interval):
    assert Notifier(env).watchdog_interval == interval

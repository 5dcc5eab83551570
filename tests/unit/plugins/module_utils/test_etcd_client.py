# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""etcd_client: every request is bounded by the client's timeout, whatever etcd3gw's version."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import socket
import threading
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client

pytest.importorskip("etcd3gw")
from etcd3gw import exceptions as etcd3gw_exceptions  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def silent_server():
    """A TCP port whose server accepts connections and never answers: a SIGSTOPped etcd."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    done = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept)
    thread.start()
    yield "http://127.0.0.1:%d" % server.getsockname()[1]
    done.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("call", [
    lambda client: client.get_prefix("/sltv/extends/"),
    lambda client: client.get_kv("/sltv/x"),
    lambda client: client.grant_lease(10),
    lambda client: client.txn({"compare": [], "success": [], "failure": []}),
])
def test_a_silent_etcd_times_out_instead_of_blocking(silent_server, call):
    client = etcd_client.EtcdClient(silent_server, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(etcd3gw_exceptions.ConnectionTimeoutError):
        call(client)
    assert time.monotonic() - started < 3
    client.close()


def test_a_lowered_timeout_applies_to_the_next_request(silent_server):
    client = etcd_client.EtcdClient(silent_server, timeout=30)
    client.timeout = 0.2  # what the lock does to stay within its deadline
    started = time.monotonic()
    with pytest.raises(etcd3gw_exceptions.ConnectionTimeoutError):
        client.get_kv("/k")
    assert time.monotonic() - started < 3
    client.close()


@pytest.mark.parametrize("status, error", [
    (200, None),
    (500, "InternalServerError"),
    (503, "ConnectionFailedError"),
    (408, "ConnectionTimeoutError"),
    (504, "ConnectionTimeoutError"),
    (412, "PreconditionFailedError"),
    (400, "Etcd3Exception"),
])
def test_http_errors_map_like_etcd3gw(status, error):
    found = etcd_client.http_error(status)
    assert (found.__name__ if found else None) == error


@contextlib.contextmanager
def serving(server):
    """The server's URL while it serves in a thread; stopped and closed after."""
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def answering_server():
    """A minimal etcd gateway stand-in: every POST gets an empty range answer; paths are recorded."""
    import http.server
    import json

    paths = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            paths.append(self.path)
            body = json.dumps({"header": {"revision": "7"}, "kvs": []}).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serving(http.server.HTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url, paths


def closed_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return "http://127.0.0.1:%d" % port


def test_a_request_fails_over_to_the_next_member(answering_server):
    """The member in use is gone (a rolling restart): the request goes to the next one, and stays there."""
    good, paths = answering_server
    dead = closed_port()
    client = etcd_client.EtcdClient(dead, timeout=1.0, endpoints=[dead, good])
    assert client.get_kv("/sltv/x") is None
    assert client.endpoint == good and client.failovers == 1
    assert paths == ["/v3/kv/range"]
    clone = client.clone()
    assert clone.endpoints == [dead, good] and clone.endpoint == good  # the keepalive's client, too
    client.close()
    clone.close()


def test_every_member_down_raises_after_trying_each_once():
    dead = [closed_port(), closed_port()]
    client = etcd_client.EtcdClient(dead[0], timeout=0.5, endpoints=dead)
    with pytest.raises(etcd3gw_exceptions.ConnectionFailedError):
        client.txn({"compare": [], "success": [], "failure": []})
    assert client.failovers == 1
    client.close()


# -- the client's own connection ----------------------------------------------------------------


@pytest.fixture
def keepalive_server():
    """An HTTP/1.1 server answering JSON; counts connections; ``close_idle`` makes it close each
    connection after its answer (an idle timeout), ``status`` sets the next answers' HTTP status."""
    import http.server
    import json

    state = {"connections": 0, "close_idle": False, "status": 200, "tokens": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            state["connections"] += 1
            http.server.BaseHTTPRequestHandler.setup(self)

        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["tokens"].append(self.headers.get("Authorization"))
            body = json.dumps({"header": {"revision": "7"}, "kvs": [], "message": "boom"}).encode("utf-8")
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            if state["close_idle"]:
                self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with serving(server) as url:
        yield url, state


def test_requests_share_one_kept_alive_connection(keepalive_server):
    url, state = keepalive_server
    client = etcd_client.EtcdClient(url, timeout=2.0)
    client.session.headers["Authorization"] = "tok"  # where authenticate() puts the token
    for _round in range(5):
        assert client.get_kv("/k") is None
    assert state["connections"] == 1 and state["tokens"] == ["tok"] * 5
    client.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(keepalive_server):
    url, state = keepalive_server
    state["close_idle"] = True
    client = etcd_client.EtcdClient(url, timeout=2.0)
    for _round in range(3):
        assert client.get_kv("/k") is None
        time.sleep(0.05)  # the server's close has arrived
    assert state["connections"] == 3
    client.close()


def test_an_http_error_keeps_etcds_text_and_the_connection(keepalive_server):
    url, state = keepalive_server
    state["status"] = 500
    client = etcd_client.EtcdClient(url, timeout=2.0)
    with pytest.raises(etcd3gw_exceptions.InternalServerError) as info:
        client.get_kv("/k")
    assert etcd_client.describe_error(info.value) == "boom"
    state["status"] = 200
    assert client.get_kv("/k") is None and state["connections"] == 1
    client.close()


# -- the pool of idle clients ---------------------------------------------------------------------

POOL_SETTINGS = {"etcd_endpoints": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}


@pytest.fixture
def empty_pool(monkeypatch):
    monkeypatch.setattr(etcd_client, "_pool", etcd_client.ProcessLocal())


def pooled(settings=None):
    client = etcd_client.EtcdClient("http://127.0.0.1:1", endpoints=POOL_SETTINGS["etcd_endpoints"])
    client.pool_key = etcd_client.pool_key(settings or POOL_SETTINGS)
    return client


def test_a_client_given_back_is_reused_for_the_same_settings_only(empty_pool):
    client = pooled()
    etcd_client.give_back(client)
    assert etcd_client.idle_client(etcd_client.pool_key(dict(POOL_SETTINGS, etcd_user="u", etcd_password="p"))) is None
    assert etcd_client.idle_client(etcd_client.pool_key({"etcd_endpoints": ["http://127.0.0.1:2"]})) is None
    again = etcd_client.idle_client(etcd_client.pool_key(POOL_SETTINGS), timeout=1.5)
    assert again is client and again.timeout == 1.5
    assert etcd_client.idle_client(etcd_client.pool_key(POOL_SETTINGS)) is None  # one user at a time


def test_pooled_client_reuses_an_idle_one_without_connecting(empty_pool, monkeypatch):
    client = pooled()
    etcd_client.give_back(client)

    def no_connect(*args, **kwargs):
        raise AssertionError("connected although an idle client was there")

    monkeypatch.setattr(etcd_client, "connect", no_connect)
    taken = etcd_client.pooled_client(POOL_SETTINGS)
    assert taken is client and taken.reused


def test_another_process_never_gets_or_keeps_a_client(empty_pool, monkeypatch):
    client = pooled()
    closed = []
    client.close = lambda: closed.append(True)
    monkeypatch.setattr(etcd_client.os, "getpid", lambda: -1)  # as seen from a forked child
    etcd_client.give_back(client)
    assert closed == [True] and etcd_client._pool == {}  # pylint: disable=protected-access


def test_the_pool_keeps_at_most_pool_size_idle_clients(empty_pool):
    clients = [pooled() for _number in range(etcd_client.POOL_SIZE + 2)]
    closed = []
    for client in clients:
        client.close = lambda: closed.append(True)
        etcd_client.give_back(client)
    assert len(closed) == 2
    assert len(etcd_client._pool[etcd_client.pool_key(POOL_SETTINGS)]) == etcd_client.POOL_SIZE  # pylint: disable=protected-access

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the etcd lock: keys, prefixes, settings, endpoints, txn bodies. No server."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import socket
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockLost
from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import (
    EtcdVgLock,
    holder_value,
    lock_key,
    lock_settings,
    normalize_prefix,
    safety_margin,
)


def settings(**overrides):
    base = {"lock_backend": "etcd", "etcd_endpoints": ["http://127.0.0.1:2379"]}
    base.update(overrides)
    return base


def unused_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.parametrize("prefix, expected", [
    ("/sltv", "/sltv"),
    ("sltv", "/sltv"),
    ("sltv/", "/sltv"),
    ("//a//b/", "/a/b"),
    ("  /a/b  ", "/a/b"),
    ("/", ""),
    ("", ""),
    (None, ""),
])
def test_normalize_prefix(prefix, expected):
    assert normalize_prefix(prefix) == expected


def test_normalize_prefix_rejects_non_string():
    with pytest.raises(LockError, match="lock_prefix"):
        normalize_prefix(5)


@pytest.mark.parametrize("prefix, key", [
    ("/sltv", "/sltv/locks/vg/vg0"),
    ("cluster-a/", "/cluster-a/locks/vg/vg0"),
    ("/", "/locks/vg/vg0"),
])
def test_lock_key(prefix, key):
    assert lock_key(prefix, "vg0") == key


def test_lock_object_key_and_attributes():
    lock = EtcdVgLock.from_settings(settings(lock_prefix="//c1//"), "vg_data", "host1:test")
    assert lock.key == "/c1/locks/vg/vg_data"
    assert lock.backend == "etcd"
    assert lock.lease_id is None and lock.token is None and not lock.held
    assert lock.ttl == 10 and lock.timeout == 60.0  # defaults of LOCK_SETTINGS_DEFAULTS


def test_make_vg_lock_builds_etcd_lock():
    lock = make_vg_lock(settings(lock_ttl=5, lock_timeout=2.5, etcd_user=None), "vg0", "h:x")
    assert isinstance(lock, EtcdVgLock)
    assert lock.ttl == 5 and lock.timeout == 2.5 and lock.key == "/sltv/locks/vg/vg0"


@pytest.mark.parametrize("vg", ["", "a/b", "..", "-x", "vg 0", None, "vg\n"])
def test_bad_vg_names(vg):
    with pytest.raises(LockError, match="invalid VG name"):
        EtcdVgLock.from_settings(settings(), vg, "h")


@pytest.mark.parametrize("ttl", [0, 1, -5, 2.5, "x", True, None])
def test_bad_ttl(ttl):
    if ttl is None:  # None means 'default'
        assert lock_settings(settings(lock_ttl=None))[0] == 10
        return
    with pytest.raises(LockError, match="lock_ttl"):
        lock_settings(settings(lock_ttl=ttl))


def test_ttl_accepts_integral_strings_and_floats():
    assert lock_settings(settings(lock_ttl="7"))[0] == 7
    assert lock_settings(settings(lock_ttl=7.0))[0] == 7


@pytest.mark.parametrize("timeout", [-1, "soon", float("nan"), False])
def test_bad_timeout(timeout):
    with pytest.raises(LockError, match="lock_timeout"):
        lock_settings(settings(lock_timeout=timeout))


def test_safety_margin():
    assert safety_margin(2) == 1.0
    assert safety_margin(3) == 1.0
    assert safety_margin(10) == pytest.approx(10 / 3.0)
    assert safety_margin(30) == 10.0


@pytest.mark.parametrize("url, parsed", [
    ("http://127.0.0.1:2379", ("http", "127.0.0.1", 2379)),
    ("https://etcd1.example.com:12379/", ("https", "etcd1.example.com", 12379)),
    ("http://etcd", ("http", "etcd", 2379)),
    ("https://[fd00::1]:2379", ("https", "fd00::1", 2379)),
    ("  http://h:1  ", ("http", "h", 1)),
])
def test_parse_endpoint(url, parsed):
    assert etcd_client.parse_endpoint(url) == parsed


@pytest.mark.parametrize("url", [
    "127.0.0.1:2379", "ftp://h:1", "http://", "http://h:99999", "http://h:0", "http://h:2379/v3",
    "http://user:pw@h:1", "", None, "http://h:x",
])
def test_parse_endpoint_rejects(url):
    with pytest.raises(LockError, match="etcd_endpoints"):
        etcd_client.parse_endpoint(url)


def test_parse_endpoints_list_and_string():
    assert etcd_client.parse_endpoints(["http://a:1/", "https://b:2"]) == ["http://a:1", "https://b:2"]
    assert etcd_client.parse_endpoints("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]
    with pytest.raises(LockError, match="empty"):
        etcd_client.parse_endpoints([])


def test_tls_files_must_exist(tmp_path):
    missing = str(tmp_path / "nope-ca.pem")
    with pytest.raises(LockError) as info:
        EtcdVgLock.from_settings(settings(etcd_ca_cert=missing), "vg0", "h")
    assert missing in str(info.value) and "etcd_ca_cert" in str(info.value)
    with pytest.raises(LockError, match="is not a regular file"):
        etcd_client.tls_files({"etcd_ca_cert": str(tmp_path)})


def test_tls_file_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "key.pem"
    path.write_text("x")
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # root could read a chmod 0 file
    with pytest.raises(LockError, match="not readable"):
        etcd_client.check_readable_file(str(path), "etcd_key")


def test_cert_and_key_go_together(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(LockError, match="etcd_cert and etcd_key"):
        etcd_client.tls_files({"etcd_cert": str(cert)})
    assert etcd_client.tls_files({"etcd_cert": str(cert), "etcd_key": str(cert)}) == (None, str(cert), str(cert))


def test_credentials_validation():
    assert etcd_client.credentials({}) == (None, None)
    assert etcd_client.credentials({"etcd_user": "u", "etcd_password": "p"}) == ("u", "p")
    with pytest.raises(LockError, match="etcd_user is not"):
        etcd_client.credentials({"etcd_password": "secret-pw"})
    with pytest.raises(LockError) as info:
        etcd_client.credentials({"etcd_user": "u"})
    assert "etcd_password" in str(info.value)


def test_txn_bodies_are_base64():
    body = etcd_client.txn_body(
        [etcd_client.compare_create_revision("/k", 0)],
        [etcd_client.request_put("/k", '{"a": 1}', lease=12)],
        [etcd_client.request_range("/k")],
    )
    assert body["compare"] == [{"key": base64.b64encode(b"/k").decode(), "target": "CREATE",
                                "result": "EQUAL", "create_revision": 0}]
    put = body["success"][0]["request_put"]
    assert base64.b64decode(put["value"]) == b'{"a": 1}' and put["lease"] == 12
    assert body["failure"] == [{"request_range": {"key": "L2s="}}]
    assert etcd_client.request_delete("/k") == {"request_delete_range": {"key": "L2s="}}
    json.dumps(body)  # what is posted


def test_txn_response_helpers():
    # as the gateway sends them: int64 as strings, false booleans left out
    failed = {"header": {"revision": "41"}, "responses": [{"response_range": {"header": {"revision": "41"}, "kvs": [
        {"key": "L2s=", "create_revision": "40", "mod_revision": "40", "version": "1",
         "value": base64.b64encode(b"holder").decode(), "lease": "7587"}], "count": "1"}}]}
    assert not etcd_client.txn_succeeded(failed)
    assert etcd_client.header_revision(failed) == 41
    kv = etcd_client.first_range_kv(failed)
    assert kv == {"key": b"/k", "value": b"holder", "create_revision": 40, "mod_revision": 40,
                  "version": 1, "lease": 7587}
    ok = {"header": {"revision": "42"}, "succeeded": True, "responses": [{"response_put": {}}]}
    assert etcd_client.txn_succeeded(ok) and etcd_client.first_range_kv(ok) is None


def test_holder_value():
    value = json.loads(holder_value("host1:sltv_disk", "vg0"))
    assert value["holder"] == "host1:sltv_disk" and value["vg"] == "vg0"
    assert value["pid"] == os.getpid() and value["hostname"] == socket.gethostname()
    assert value["acquired"].endswith("Z")


def test_describe_error_and_token_detection():
    from etcd3gw import exceptions

    body = '{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}'
    exc = exceptions.Etcd3Exception(body, "Unauthorized")
    assert etcd_client.describe_error(exc) == "etcdserver: invalid auth token"
    assert etcd_client.is_invalid_token_error(exc)
    refused = exceptions.ConnectionFailedError("Connection refused")
    assert str(refused) == ""  # etcd3gw keeps the text in detail_text only
    assert etcd_client.describe_error(refused) == "Connection refused"
    assert not etcd_client.is_invalid_token_error(refused)


@pytest.mark.parametrize("text, reason", [
    ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /v3/maintenance/status "
     "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new "
     "connection: [Errno 111] Connection refused\"))", "Connection refused"),
    ("HTTPConnectionPool(host='127.0.0.1', port=2): Read timed out. (read timeout=0.8955339860000322)",
     "no answer (read timeout 0.895 s)"),
    ("Max retries exceeded (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
     "certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)')))",
     "TLS error: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate"),
    ("something else entirely", "something else entirely"),
])
def test_short_reason(text, reason):
    assert etcd_client.short_reason(text) == reason


def test_client_scrubs_password():
    client = etcd_client.EtcdClient("http://127.0.0.1:1", user="u", password="hunter22")
    assert client.scrub("bad hunter22 here") == "bad *** here"
    assert client.timeout == etcd_client.REQUEST_TIMEOUT  # never None (= wait forever)


def test_ensure_held_without_acquire():
    lock = EtcdVgLock.from_settings(settings(), "vg0", "h")
    with pytest.raises(LockLost, match="NOT run"):
        lock.ensure_held()
    lock.release()  # nothing to do, no error


def test_connect_lists_every_endpoint():
    # no server: connection refused at once on both ports
    urls = ["http://127.0.0.1:%d" % unused_port(), "http://127.0.0.1:%d" % unused_port()]
    with pytest.raises(etcd_client.EndpointError) as info:
        etcd_client.connect({"etcd_endpoints": urls}, timeout=1.0)
    for url in urls:
        assert url in str(info.value)
    assert not info.value.permanent


def test_acquire_unreachable_is_bounded():
    url = "http://127.0.0.1:%d" % unused_port()
    lock = EtcdVgLock.from_settings(settings(etcd_endpoints=[url], lock_timeout=0.6), "vg0", "h")
    started = time.monotonic()
    with pytest.raises(LockError) as info:
        with lock:
            pytest.fail("the body must not run without the lock")
    assert time.monotonic() - started < 2.0
    assert url in str(info.value) and "Nothing was changed" in str(info.value)
    assert not lock.held


class SlowGrantClient(object):
    """A client whose grants are answered ``delays`` seconds late (an election), on a fake clock."""

    endpoint = "http://127.0.0.1:2379"

    def __init__(self, clock, delays, refresh_ttls):
        self.clock = clock
        self.delays = list(delays)
        self.refresh_ttls = list(refresh_ttls)
        self.calls = []
        self.timeout = 5.0
        self.reused = False

    def grant_lease(self, ttl):
        self.calls.append("grant")
        self.clock[0] += self.delays.pop(0)
        return 100 + len(self.calls), ttl

    def refresh_lease(self, lease_id):
        self.calls.append(("refresh", lease_id))
        return self.refresh_ttls.pop(0)


@pytest.mark.parametrize("delays, refresh_ttls, calls, lease", [
    ([0.5], [], ["grant"], 101),                                            # on time: as it was
    ([5.0], [10], ["grant", ("refresh", 101)], 101),                        # late: refreshed at once
    ([11.0, 0.1], [-1], ["grant", ("refresh", 101), "grant"], 103),         # gone meanwhile: a new one
], ids=["on-time", "late", "expired"])
def test_a_lease_granted_late_is_refreshed_before_the_lock_relies_on_it(monkeypatch, delays, refresh_ttls, calls, lease):
    from ansible_collections.sltv.core.plugins.module_utils.locking import etcd_lock

    clock = [1000.0]
    monkeypatch.setattr(etcd_lock.time, "monotonic", lambda: clock[0])
    lock = EtcdVgLock.from_settings(settings(lock_ttl=10), "vg0", "host1:test")
    client = SlowGrantClient(clock, delays, refresh_ttls)
    lock._client = client  # pylint: disable=protected-access
    started = lock._fresh_lease(clock[0] + 60)  # pylint: disable=protected-access
    assert client.calls == calls
    assert lock.lease_id == lease
    assert clock[0] - started <= lock.lease_ttl / 3.0  # a whole lease known to be left from here


class FakeLeaseClient(object):
    """Grants and refreshes leases on request; refresh answers from ``refresh_ttls`` (default: the TTL)."""

    endpoint = "http://127.0.0.1:2379"
    pool_key = ("fake",)
    reused = False

    def __init__(self):
        self.calls = []
        self.refresh_ttls = []
        self.timeout = 5.0

    def grant_lease(self, ttl):
        self.calls.append("grant")
        return 200 + len(self.calls), ttl

    def refresh_lease(self, lease_id):
        self.calls.append(("refresh", lease_id))
        return self.refresh_ttls.pop(0) if self.refresh_ttls else 30

    def clone(self, timeout=None):
        return self

    def close(self):
        pass


def test_locks_share_the_process_lease_refreshed_first_when_its_keepalive_is_behind(monkeypatch):
    from ansible_collections.sltv.core.plugins.module_utils.locking import etcd_lock

    monkeypatch.setattr(etcd_lock, "_sessions", etcd_client.ProcessLocal())
    client = FakeLeaseClient()

    def take():
        lock = EtcdVgLock.from_settings(settings(lock_ttl=30), "vg0", "h")
        lock._client = client  # pylint: disable=protected-access
        lock._value = "v"  # pylint: disable=protected-access
        lock._take_session(time.monotonic() + 5)  # pylint: disable=protected-access
        return lock._session  # pylint: disable=protected-access

    try:
        first = take()
        assert take() is first and client.calls == ["grant"]  # one grant for both
        first._valid_until -= 20  # pylint: disable=protected-access  # 10 s of 30 known: behind
        assert take() is first and client.calls == ["grant", ("refresh", first.lease_id)]
        assert first.left()[0] > 25
        first._valid_until -= 20  # pylint: disable=protected-access
        client.refresh_ttls = [-1]  # gone meanwhile
        second = take()
        assert second is not first and second.lease_id != first.lease_id
        assert first.lost and "expired" in first.lost and client.calls[-1] == "grant"
    finally:
        for session in etcd_lock._sessions.values():  # pylint: disable=protected-access
            session.mark_lost("test over")

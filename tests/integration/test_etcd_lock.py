# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The etcd VG lock against a real etcd server (fixtures in conftest.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import multiprocessing
import os
import signal
import threading
import time
import uuid

import pytest

from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockLost, LockTimeout
from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import EtcdVgLock

pytestmark = pytest.mark.etcd

# spawn, not fork: the parent has threads (keepalives, HTTP pools) that a fork would copy mid-way.
MP = multiprocessing.get_context("spawn")


def unique_prefix():
    return "/sltv-test-%s" % uuid.uuid4().hex[:8]


def settings_for(server, **overrides):
    overrides.setdefault("lock_prefix", unique_prefix())
    return server.client_settings(**overrides)


# -- worker processes (module level: spawn imports them by name) --------------------------------


def _counter_worker(settings, vg, counter_path, log_path, rounds, start_event):
    start_event.wait(30)
    for _round in range(rounds):
        lock = make_vg_lock(settings, vg, "counter-%d" % os.getpid())
        with lock:
            lock.ensure_held()
            with open(counter_path) as handle:
                count = int(handle.read())
            time.sleep(0.002)  # widen the race window: read, sleep, write
            with open(counter_path, "w") as handle:
                handle.write(str(count + 1))
            with open(log_path, "a") as handle:
                handle.write("%d %d\n" % (lock.token, os.getpid()))


def _fenced_worker(settings, vg, marker_path, conn):
    lock = EtcdVgLock.from_settings(settings, vg, "fenced-child")
    lock.acquire()
    conn.send(("acquired", lock.token, lock.lease_id))
    conn.recv()  # 'go': sent after we were frozen with SIGSTOP and thawed
    try:
        lock.ensure_held()
    except LockLost as exc:
        conn.send(("lost", str(exc)))
    else:
        with open(marker_path, "w") as handle:
            handle.write("lvm command run by a fenced holder\n")
        conn.send(("held", None))
    finally:
        lock.release()
        conn.send(("released", lock.release_warning))


@pytest.fixture
def watch_results(monkeypatch):
    """Records what each wait_for_delete returned: True means a watch event woke the waiter."""
    results = []
    original = etcd_client.EtcdClient.wait_for_delete

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(etcd_client.EtcdClient, "wait_for_delete", recording)
    return results


# -- basics -------------------------------------------------------------------------------------


def test_acquire_release(etcd_server):
    settings = settings_for(etcd_server)
    raw = etcd_client.connect(settings)
    lock = make_vg_lock(settings, "vg0", "host1:test_acquire_release")
    assert isinstance(lock, EtcdVgLock)
    with lock:
        key, lease_id = lock.key, lock.lease_id
        assert key == settings["lock_prefix"] + "/locks/vg/vg0"
        kv = raw.get_kv(key)
        assert kv is not None and kv["lease"] == lease_id
        assert kv["create_revision"] == lock.token > 0
        value = json.loads(kv["value"].decode())
        assert value["holder"] == "host1:test_acquire_release" and value["pid"] == os.getpid()
        assert 0 < raw.lease_ttl(lease_id) <= 10
        lock.ensure_held()
        assert lock.held and lock.wait_seconds < 1.0
    assert not lock.held and lock.lease_id is None
    assert raw.get_kv(key) is None
    assert raw.lease_ttl(lease_id) > 0  # the process's lease stays for its next lock
    assert lock.release_warning is None
    lock.release()  # idempotent
    with pytest.raises(LockLost):
        lock.ensure_held()
    # the same object can lock again
    with lock:
        assert lock.token > kv["create_revision"]
    raw.close()


def test_body_not_run_when_acquire_fails(etcd_server):
    settings = settings_for(etcd_server, lock_timeout=0.3)
    ran = []
    with make_vg_lock(settings, "vg0", "first"):
        with pytest.raises(LockTimeout):
            with make_vg_lock(settings, "vg0", "second"):
                ran.append(True)
    assert ran == []


def test_lost_txn_answer_is_recognised(etcd_server, monkeypatch):
    """The creating txn is applied but its answer is lost: the retry must see the key as ours."""
    from etcd3gw import exceptions

    original = etcd_client.EtcdClient.txn
    lost = []

    def lossy(self, body):
        result = original(self, body)
        if not lost and "request_put" in body["success"][0]:
            lost.append(result)
            raise exceptions.ConnectionTimeoutError("simulated lost answer")
        return result

    monkeypatch.setattr(etcd_client.EtcdClient, "txn", lossy)
    settings = settings_for(etcd_server, lock_timeout=5)
    with make_vg_lock(settings, "vg0", "h") as lock:
        assert lost and lost[0].get("succeeded")
        assert lock.token == etcd_client.header_revision(lost[0])
        assert lock.wait_seconds < 1.0
        lock.ensure_held()
    raw = etcd_client.connect(settings)
    assert raw.get_kv(lock.key) is None
    raw.close()


def test_keepalive_keeps_short_lease(etcd_server):
    settings = settings_for(etcd_server, lock_ttl=2)
    with make_vg_lock(settings, "vg0", "keepalive") as lock:
        for _round in range(8):  # 4 s: twice the TTL
            time.sleep(0.5)
            lock.ensure_held()


def test_mutual_exclusion_between_processes(etcd_server, tmp_path):
    settings = settings_for(etcd_server, lock_timeout=120)
    counter, log = tmp_path / "counter", tmp_path / "log"
    counter.write_text("0")
    workers, rounds = 8, 20
    start = MP.Event()
    procs = [MP.Process(target=_counter_worker, args=(settings, "vg0", str(counter), str(log), rounds, start))
             for _round in range(workers)]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    start.set()
    for proc in procs:
        proc.join(180)
    elapsed = time.monotonic() - started
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * workers
    assert int(counter.read_text()) == workers * rounds
    tokens = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert len(tokens) == workers * rounds
    assert tokens == sorted(set(tokens))  # fencing tokens strictly grow with each holder
    print("\nmutual exclusion: %d processes x %d rounds in %.2f s" % (workers, rounds, elapsed))


def test_mutual_exclusion_between_threads_sharing_the_process_connections(etcd_server, tmp_path):
    """The agent's case: several threads of one process (one worker per VG, the releases) lock through
    the process's pooled connections; the lock is never held twice and the tokens strictly grow."""
    settings = settings_for(etcd_server, lock_timeout=60)
    counter, log = tmp_path / "counter", tmp_path / "log"
    counter.write_text("0")
    start = threading.Event()
    threads = [threading.Thread(target=_counter_worker, args=(settings, "vg0", str(counter), str(log), 15, start))
               for _round in range(6)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(120)
    assert int(counter.read_text()) == 6 * 15
    tokens = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert len(tokens) == 6 * 15 and tokens == sorted(set(tokens))


@pytest.fixture
def requests_sent(monkeypatch):
    """The API path of every HTTP request the etcd clients send: their own connection's (requests)
    and their requests session's (health check, authentication, watch streams)."""
    import requests

    paths = []

    def recorder(original, url_at):
        def recording(self, *args, **kwargs):
            paths.append(args[url_at].split("/v3/", 1)[-1])
            return original(self, *args, **kwargs)
        return recording

    monkeypatch.setattr(etcd_client.EtcdClient, "request", recorder(etcd_client.EtcdClient.request, 0))
    monkeypatch.setattr(requests.Session, "request", recorder(requests.Session.request, 1))
    return paths


def test_a_process_reuses_its_connection_and_lease_and_a_lock_costs_two_requests(etcd_server, requests_sent):
    """Uncontended acquire + release after the first: the transaction and the guarded delete. No
    connect and health check, no lease grant or revoke per lock: one lease for them all."""
    settings = settings_for(etcd_server)
    with make_vg_lock(settings, "vg0", "first") as first:
        lease_id = first.lease_id
    del requests_sent[:]
    for _round in range(5):
        lock = make_vg_lock(settings, "vg0", "again")
        with lock:
            key = lock.key
            assert lock.lease_id == lease_id
        raw = etcd_client.connect(settings)
        assert raw.get_kv(key) is None and raw.lease_ttl(lease_id) > 0  # released: key gone, lease kept
        raw.close()
        requests_sent[-4:] = []  # the checks above (status, range, range, timetolive)
    assert [path for path in requests_sent if path != "lease/keepalive"] == ["kv/txn", "kv/txn"] * 5, requests_sent


# -- the process's lease ----------------------------------------------------------------------------


def test_successive_locks_of_a_process_are_granted_one_lease(etcd_server, requests_sent):
    """N locks one after the other, on several VGs: one lease grant in all, the same lease each time."""
    settings = settings_for(etcd_server, lock_ttl=7)  # a TTL of its own: no session of other tests
    leases = set()
    for number in range(6):
        with make_vg_lock(settings, "vg%d" % (number % 3), "h") as lock:
            lock.ensure_held()
            leases.add(lock.lease_id)
    assert len(leases) == 1
    assert requests_sent.count("lease/grant") == 1 and "kv/lease/revoke" not in requests_sent


def test_two_threads_on_two_vgs_share_the_lease_and_one_release_leaves_the_other_held(etcd_server):
    settings = settings_for(etcd_server)
    raw = etcd_client.connect(settings)
    first, second = make_vg_lock(settings, "vg1", "a"), make_vg_lock(settings, "vg2", "b")
    errors = []

    def hold(lock, release):
        try:
            lock.acquire()
            release.wait(10)
            lock.release()
        except Exception as exc:  # reported below
            errors.append(exc)

    go_first, go_second = threading.Event(), threading.Event()
    threads = [threading.Thread(target=hold, args=(first, go_first)),
               threading.Thread(target=hold, args=(second, go_second))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not (first.held and second.held) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.held and second.held and first.lease_id == second.lease_id
    go_second.set()
    threads[1].join(10)
    assert not second.held and raw.get_kv(second.key) is None
    first.ensure_held()  # still ours, its lease alive
    assert raw.get_kv(first.key)["create_revision"] == first.token
    go_first.set()
    threads[0].join(10)
    assert errors == [] and raw.get_kv(first.key) is None
    raw.close()


def test_a_second_lock_of_the_process_on_the_same_vg_waits_for_the_first(etcd_server):
    """Same VG, same process, same lease: the key on our lease is not taken for this lock's own."""
    settings = settings_for(etcd_server)
    with make_vg_lock(settings, "vg0", "host1:first") as first:
        second = make_vg_lock(dict(settings, lock_timeout=0.3), "vg0", "host1:second")
        with pytest.raises(LockTimeout) as info:
            second.acquire()
        assert "host1:first" in str(info.value) and not second.held
        first.ensure_held()


def test_a_lost_lease_fences_every_lock_on_it_and_the_next_lock_gets_a_new_one(etcd_server):
    settings = settings_for(etcd_server, lock_ttl=3)  # keepalive every second
    raw = etcd_client.connect(settings)
    one, two = make_vg_lock(settings, "vg1", "a"), make_vg_lock(settings, "vg2", "b")
    one.acquire()
    two.acquire()
    lease_id = one.lease_id
    assert two.lease_id == lease_id
    raw.revoke_lease(lease_id)  # behind the process's back: its keys go with it
    time.sleep(1.5)  # the next keepalive learns it
    for lock in (one, two):
        with pytest.raises(LockLost) as info:
            lock.ensure_held()
        assert "expired" in str(info.value) and "NOT run" in str(info.value)
        lock.release()  # safe: nothing of ours is left
        assert lock.release_warning is None
    with make_vg_lock(settings, "vg1", "c") as again:
        assert again.lease_id != lease_id
        again.ensure_held()
    raw.close()


def test_a_lease_revoked_unnoticed_is_replaced_at_acquire(etcd_server):
    """etcd refuses a put on a lease it no longer knows: the lock takes a new lease and goes on."""
    settings = settings_for(etcd_server, lock_ttl=9)
    with make_vg_lock(settings, "vg0", "a") as lock:
        lease_id = lock.lease_id
    raw = etcd_client.connect(settings)
    raw.revoke_lease(lease_id)  # the keepalive is due in ~3 s: it has not seen it yet
    with make_vg_lock(settings, "vg0", "b") as lock:
        assert lock.lease_id != lease_id and lock.wait_seconds < 1.0
        lock.ensure_held()
    raw.close()


def test_close_sessions_revokes_the_process_lease(etcd_server):
    from ansible_collections.sltv.core.plugins.module_utils.locking import etcd_lock

    settings = settings_for(etcd_server, lock_ttl=8)
    with make_vg_lock(settings, "vg0", "a") as lock:
        lease_id = lock.lease_id
    etcd_lock.close_sessions()  # what the process does at exit
    raw = etcd_client.connect(settings)
    assert raw.lease_ttl(lease_id) == -1
    raw.close()
    with make_vg_lock(settings, "vg0", "b") as lock:  # a new one
        assert lock.lease_id != lease_id


def test_a_forked_child_never_uses_its_parents_connections(etcd_server):
    """The pool is per process: a child made by fork connects on its own (the parent's sockets and
    keepalive threads are not its own) and locks and releases normally."""
    settings = settings_for(etcd_server, lock_timeout=5)
    with make_vg_lock(settings, "vg0", "parent") as parent:
        parent_lease = parent.lease_id
    idle = etcd_client.idle_client(etcd_client.pool_key(settings))
    assert idle is not None  # the parent has one idle
    etcd_client.give_back(idle)
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()

    def child():
        key = etcd_client.pool_key(settings)
        results.put(etcd_client.idle_client(key) is None)
        with make_vg_lock(settings, "vg0", "child") as lock:
            lock.ensure_held()
            results.put(lock.token)
            results.put(lock.lease_id)

    proc = fork.Process(target=child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert results.get(timeout=5) is True
    assert results.get(timeout=5) > 0
    assert results.get(timeout=5) != parent_lease  # nor its lease
    with make_vg_lock(settings, "vg0", "parent-again") as lock:  # the parent's connection still works
        lock.ensure_held()
        assert lock.lease_id == parent_lease


def test_waiter_wakes_promptly(etcd_server, watch_results):
    settings = settings_for(etcd_server)
    latencies = []
    for _round in range(5):
        holder = make_vg_lock(settings, "vg0", "holder")
        holder.acquire()
        acquired = {}

        def wait():
            waiter = make_vg_lock(settings, "vg0", "waiter")
            waiter.acquire()
            acquired["at"] = time.monotonic()
            waiter.release()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)  # the waiter is watching by now
        released_at = time.monotonic()
        holder.release()
        thread.join(15)
        assert "at" in acquired
        latencies.append(acquired["at"] - released_at)
        assert watch_results and watch_results[-1] is True  # woken by the watch, not by a retry
        del watch_results[:]
    print("\nwakeup latency after release: max %.1f ms, all %s"
          % (max(latencies) * 1000, ["%.1f" % (x * 1000) for x in latencies]))
    # polling would show up as up to 1 s (the watch slice); a watch wakes within milliseconds
    assert max(latencies) < 0.5


def test_release_before_watch_is_not_missed(etcd_server, monkeypatch):
    """The holder releases after the waiter's failed txn but before its watch starts."""
    settings = settings_for(etcd_server)
    holder = make_vg_lock(settings, "vg0", "holder")
    holder.acquire()
    original = etcd_client.EtcdClient.wait_for_delete
    results = []

    def release_first(self, key, start_revision, timeout, settle=0.0):
        if holder.held:
            holder.release()  # the delete now lies in the past of the watch
        results.append(original(self, key, start_revision, timeout, settle))
        return results[-1]

    monkeypatch.setattr(etcd_client.EtcdClient, "wait_for_delete", release_first)
    with make_vg_lock(settings, "vg0", "waiter") as waiter:
        assert waiter.wait_seconds < 0.5
    assert results == [True]  # seen from the watch history, no 1 s slice wasted


def test_a_settling_waiter_sees_the_key_taken_again_and_waits_for_the_next_delete(etcd_server):
    """After a delete, wait_for_delete(settle=...) waits that long for someone else's put; when one
    comes, it returns only at the next delete (no transaction in between), else after the settle."""
    raw = etcd_client.connect(settings_for(etcd_server))
    key = unique_prefix() + "/locks/vg/vg0"
    for retaken in (True, False):
        start = etcd_client.header_revision(raw.txn(etcd_client.txn_body([], [etcd_client.request_put(key, "a")]))) + 1
        waiter = raw.clone()
        woken = {}

        def wait():
            woken["result"] = waiter.wait_for_delete(key, start, 5.0, settle=0.5)
            woken["at"] = time.monotonic()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)  # watching by now
        deleted_at = time.monotonic()
        raw.delete(key)
        if retaken:
            raw.txn(etcd_client.txn_body([], [etcd_client.request_put(key, "b")]))  # within the settle
            time.sleep(1.0)
            assert "at" not in woken  # still waiting: the key is taken
            deleted_at = time.monotonic()
            raw.delete(key)
        thread.join(5)
        assert woken["result"] is True
        assert 0.45 <= woken["at"] - deleted_at < 1.0  # the settle after the last delete
        waiter.close()
    raw.close()


def test_timeout_names_holder(etcd_server):
    settings = settings_for(etcd_server)
    with make_vg_lock(settings, "vg7", "host9:the-holder") as holder:
        waiter = make_vg_lock(dict(settings, lock_timeout=1), "vg7", "host2:waiter")
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            waiter.acquire()
        elapsed = time.monotonic() - started
        holder.ensure_held()
    message = str(info.value)
    assert 1.0 <= elapsed < 2.0, elapsed
    assert "host9:the-holder" in message and "vg7" in message and holder.key in message
    assert "1.0 s" in message and "Nothing was changed" in message
    assert not waiter.held and waiter.lease_id is None
    assert waiter.wait_seconds == 0.0


def test_prefix_isolation(etcd_server):
    one = make_vg_lock(settings_for(etcd_server, lock_prefix="/cluster-a/"), "vg0", "a")
    two = make_vg_lock(settings_for(etcd_server, lock_prefix="cluster-b", lock_timeout=1), "vg0", "b")
    with one, two:
        assert one.key == "/cluster-a/locks/vg/vg0" and two.key == "/cluster-b/locks/vg/vg0"
        one.ensure_held()
        two.ensure_held()


# -- fencing --------------------------------------------------------------------------------------


def test_frozen_holder_is_fenced(etcd_server, tmp_path):
    settings = settings_for(etcd_server, lock_ttl=2)
    marker = tmp_path / "lvm-ran"
    parent_conn, child_conn = MP.Pipe()
    proc = MP.Process(target=_fenced_worker, args=(settings, "vg0", str(marker), child_conn))
    proc.start()
    try:
        assert parent_conn.poll(30)
        state, child_token = parent_conn.recv()[:2]
        assert state == "acquired"
        os.kill(proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            second = make_vg_lock(dict(settings, lock_ttl=10, lock_timeout=15), "vg0", "second")
            second.acquire()  # possible once the frozen holder's lease expired
            assert second.token > child_token
            assert second.wait_seconds > 0.5
            time.sleep(max(0.0, stopped_at + 3.5 - time.monotonic()))  # frozen > TTL + 1 s
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        parent_conn.send("go")
        assert parent_conn.poll(20)
        state, message = parent_conn.recv()
        assert state == "lost", message
        assert "vg0" in message and "NOT run" in message
        assert parent_conn.poll(20)
        assert parent_conn.recv()[0] == "released"
        proc.join(20)
        assert proc.exitcode == 0
        assert not marker.exists()
        # the fenced holder's release did not delete the new holder's key
        raw = etcd_client.connect(settings)
        kv = raw.get_kv(second.key)
        raw.close()
        assert kv["create_revision"] == second.token and json.loads(kv["value"].decode())["holder"] == "second"
        second.ensure_held()
        second.release()
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.join(5)


# -- etcd down --------------------------------------------------------------------------------------


def test_etcd_stopped_acquire_fails_in_time(etcd_factory):
    server = etcd_factory()
    settings = settings_for(server, lock_timeout=3)
    server.stop()
    lock = make_vg_lock(settings, "vg0", "h")
    started = time.monotonic()
    with pytest.raises(LockError) as info:
        lock.acquire()
    elapsed = time.monotonic() - started
    assert elapsed < 3 + 1.0, elapsed
    assert server.endpoint in str(info.value) and "Nothing was changed" in str(info.value)
    assert not lock.held
    server.start()  # same endpoint, same data
    with lock:
        lock.ensure_held()


def test_etcd_hung_acquire_fails_in_time(etcd_factory):
    server = etcd_factory()
    settings = settings_for(server, lock_timeout=2)
    os.kill(server.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        with pytest.raises(LockError) as info:
            make_vg_lock(settings, "vg0", "h").acquire()
        elapsed = time.monotonic() - started
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert elapsed < 2 + 1.0, elapsed
    assert server.endpoint in str(info.value)


def test_etcd_dies_while_held(etcd_factory):
    server = etcd_factory()
    settings = settings_for(server, lock_ttl=2)
    lock = make_vg_lock(settings, "vg0", "h")
    lock.acquire()
    key = lock.key
    server.kill()
    with pytest.raises(LockLost) as info:
        lock.ensure_held()
    assert "NOT run" in str(info.value)
    lock.release()  # must not raise: the lease expiry frees the key
    assert lock.release_warning and "lease expires" in lock.release_warning
    assert not lock.held
    server.start()
    # etcd restores leases with a fresh TTL at restart: the old key goes within ~2 s
    with make_vg_lock(dict(settings, lock_timeout=15), "vg0", "after-restart") as again:
        assert again.key == key
        again.ensure_held()


def test_release_without_etcd_inside_exception(etcd_factory):
    server = etcd_factory()
    settings = settings_for(server)
    with pytest.raises(ZeroDivisionError):
        with make_vg_lock(settings, "vg0", "h"):
            server.kill()
            1 / 0  # the caller's own error must come out, not a release error


def test_first_healthy_endpoint_wins(etcd_server):
    dead = "http://127.0.0.1:%d" % _unused_port()
    settings = settings_for(etcd_server, etcd_endpoints=[dead, etcd_server.endpoint])
    client = etcd_client.connect(settings)
    assert client.endpoint == etcd_server.endpoint
    client.close()
    with make_vg_lock(settings, "vg0", "h") as lock:
        lock.ensure_held()


def _unused_port():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_with_client_cert(etcd_tls_server):
    settings = settings_for(etcd_tls_server)
    assert settings["etcd_endpoints"][0].startswith("https://")
    with make_vg_lock(settings, "vg0", "tls") as lock:
        lock.ensure_held()
        raw = etcd_client.connect(settings)
        assert raw.get_kv(lock.key)["lease"] == lock.lease_id
        raw.close()


def test_tls_missing_ca_file(etcd_tls_server, tmp_path):
    missing = str(tmp_path / "missing-ca.crt")
    with pytest.raises(LockError) as info:
        make_vg_lock(settings_for(etcd_tls_server, etcd_ca_cert=missing), "vg0", "h")
    assert missing in str(info.value) and "etcd_ca_cert" in str(info.value)


def test_tls_wrong_ca(etcd_tls_server, tls_material):
    settings = settings_for(etcd_tls_server, etcd_ca_cert=tls_material.other_ca_cert, lock_timeout=10)
    started = time.monotonic()
    with pytest.raises(LockError) as info:
        make_vg_lock(settings, "vg0", "h").acquire()
    message = str(info.value)
    assert time.monotonic() - started < 3  # a TLS error is not retried until the timeout
    assert tls_material.other_ca_cert in message and "etcd_ca_cert" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message


def test_tls_without_client_cert(etcd_tls_server):
    settings = settings_for(etcd_tls_server, etcd_cert=None, etcd_key=None, lock_timeout=2)
    with pytest.raises(LockError) as info:
        make_vg_lock(settings, "vg0", "h").acquire()
    assert etcd_tls_server.endpoint in str(info.value)
    assert "etcd_cert" in str(info.value)


# -- user/password --------------------------------------------------------------------------------


def test_auth_works_and_token_is_renewed(etcd_auth_server):
    settings = settings_for(etcd_auth_server, lock_ttl=2)
    with make_vg_lock(settings, "vg0", "auth") as lock:
        time.sleep(1.5)  # a few keepalives went through with the token
        lock.ensure_held()
        raw = etcd_client.connect(settings)
        raw.session.headers["Authorization"] = "not-a-valid-token"
        assert raw.get_kv(lock.key)["lease"] == lock.lease_id  # re-authenticated once, retried
        raw.close()


def test_auth_waiter_wakes_promptly(etcd_auth_server, watch_results):
    """The watch carries the token too (a refused watch would fall back to 1 s retries)."""
    settings = settings_for(etcd_auth_server)
    holder = make_vg_lock(settings, "vg0", "holder")
    holder.acquire()
    acquired = {}

    def wait():
        with make_vg_lock(settings, "vg0", "waiter"):
            acquired["at"] = time.monotonic()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    released_at = time.monotonic()
    holder.release()
    thread.join(15)
    assert acquired["at"] - released_at < 0.5
    assert watch_results == [True]  # one watch, woken by the delete event


def test_auth_wrong_password(etcd_auth_server):
    password = "Wrong-pw-7d1e0b"
    settings = settings_for(etcd_auth_server, etcd_password=password, lock_timeout=10)
    started = time.monotonic()
    with pytest.raises(LockError) as info:
        make_vg_lock(settings, "vg0", "h").acquire()
    message = str(info.value)
    assert time.monotonic() - started < 3  # not retried until the timeout
    assert "root" in message and "etcd_password" in message and "authentication failed" in message
    assert password not in message and etcd_auth_server.PASSWORD not in message
    assert password not in repr(info.value)


def test_auth_missing_credentials(etcd_auth_server):
    settings = settings_for(etcd_auth_server, etcd_user=None, etcd_password=None, lock_timeout=2)
    with pytest.raises(LockError) as info:
        make_vg_lock(settings, "vg0", "h").acquire()
    assert "requires authentication" in str(info.value)


def test_password_not_in_any_message(etcd_auth_server):
    """Drive the failure paths with the right password configured: none may show it."""
    settings = settings_for(etcd_auth_server, lock_timeout=1, lock_ttl=2)
    messages = []
    holder = make_vg_lock(settings, "vg0", "holder")
    holder.acquire()
    try:
        make_vg_lock(settings, "vg0", "waiter").acquire()
    except LockError as exc:
        messages.append(repr(exc) + str(exc))
    etcd_auth_server.stop()
    try:
        holder.ensure_held()
    except LockLost as exc:
        messages.append(repr(exc) + str(exc))
    holder.release()
    messages.append(holder.release_warning or "")
    try:
        make_vg_lock(settings, "vg0", "h").acquire()
    except LockError as exc:
        messages.append(repr(exc) + str(exc))
    assert len(messages) == 4
    for message in messages:
        assert etcd_auth_server.PASSWORD not in message


# -- latency ------------------------------------------------------------------------------------


def test_latency_report(etcd_server):
    settings = settings_for(etcd_server)
    lock = make_vg_lock(settings, "vg-bench", "bench")
    samples = []
    for _round in range(200):
        started = time.monotonic()
        lock.acquire()
        lock.release()
        samples.append(time.monotonic() - started)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]
    print("\nacquire+release over 200 cycles: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (p50 * 1000, p99 * 1000, samples[-1] * 1000))


@pytest.mark.etcd
def test_short_etcd_hiccup_does_not_lose_the_lock(etcd_factory):
    """Keepalives failing for less than the lease's life are retried; the lock stays safe."""
    server = etcd_factory()
    settings = server.client_settings(lock_ttl=6, lock_timeout=5)
    with make_vg_lock(settings, "vg-hiccup", "hiccup") as lock:
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)  # at least one keepalive (every 2 s) fails meanwhile
            with pytest.raises(LockLost):
                lock.ensure_held()  # etcd cannot confirm: fenced while it is frozen
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(2.2)  # the retried keepalive goes through
        lock.ensure_held()

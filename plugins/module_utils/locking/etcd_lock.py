# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The etcd backend of the VG lock: a key owned by a lease, created by a transaction.

* the lease: one per process and settings (connection, ``lock_ttl``), shared by the process's locks
  and the agent's records (``LeaseSession``, ``process_lease``): granted by its first user, kept
  alive by one daemon thread that tracks until
  when it surely lives, revoked at exit. A lock starts only on a lease whose keepalive is on time
  (else it is refreshed first, or a new one granted). Once lost (expired, or its keepalive failed
  until it would have expired) it stays lost, and every lock on it is lost: the next lock gets a new
  lease. A forked child never uses its parent's.
* acquire: loop on the transaction ``if create_revision(key) == 0 then put(key, value, lease) else
  range(key)``. Success: the key's create revision is the fencing token. Failure: watch the key for
  its deletion from the revision right after the failed transaction, so a release that happens
  between the transaction and the watch is still seen. After a delete, a waiter first gives the
  others a few ms (``SETTLE``) and waits on if one of them puts the key: no herd of doomed
  transactions after each release.
* ensure_held (before every lvm command): the lease must still have a safety margin left, both
  by the local clock (time of the last successful keepalive) and by etcd (the key is ours and
  the lease's remaining TTL is large enough). Otherwise LockLost: another host may already hold
  the VG, so the command must not run.
* release: delete the key if its create revision is still our token (someone else's key, made
  after ours went, has another one). The lease stays for the process's next lock. When that delete
  fails (etcd unreachable) the lease is given up (marked lost, no more keepalives): the key goes
  with it within ``lock_ttl``, as it did when each lock had its own lease.
* ours: the value carries a random ``lock`` id, so a transaction of ours that was applied but
  whose answer was lost is recognised as ours (value and lease), never another lock of the same
  process on the same lease.
* connections: a process reuses its idle connected clients (``etcd_client.pooled_client``): no
  new TCP connection and health check per lock. Once a process has its lease, a lock costs two
  requests (the transaction and the delete), as little as any etcd lock can.
* every request (the keepalive's too) fails over to the next member of ``etcd_endpoints`` when the
  one in use cannot be reached (``etcd_client``): the lease, the key and its revision live in the
  cluster, so a lock survives losing one member of a healthy cluster (a rolling restart).

The lock is never re-acquired behind the caller's back: once lost it stays lost.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import datetime
import json
import math
import os
import random
import re
import socket
import threading
import time
import uuid

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, MIN_LOCK_TTL as MIN_TTL, VgLock
from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockLost, LockTimeout
from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import (
    compare_create_revision,
    compare_value,
    first_range_kv,
    header_revision,
    request_delete,
    request_put,
    request_range,
    txn_body,
    txn_succeeded,
)

# Longest single wait on the watch before the transaction is tried again (in case the watch
# stream died silently): bounds how long a lost wakeup could delay us.
WATCH_SLICE = 1.0
# After a release, a waiter that has waited less than WATCH_SLICE first gives the others this long
# (random in the range) to take the key: when one does, the rest see it taken and wait on instead of
# all sending a transaction, all but one doomed (on 2 cores that herd halved the hand-off rate). One
# that waited longer tries at once, so that a process re-locking in a loop cannot starve it.
SETTLE = (0.0, 0.008)

_VG_RE = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z")


def normalize_prefix(prefix):
    """'sltv/' -> '/sltv', '//a//b/' -> '/a/b', '' or '/' -> ''."""
    if prefix is None:
        prefix = ""
    if not isinstance(prefix, str):
        raise LockError("lock_prefix must be a string, got %r" % (prefix,))
    parts = [part for part in prefix.strip().split("/") if part]
    return "".join("/" + part for part in parts)


def lock_key(prefix, vg):
    """The etcd key locking ``vg``: <prefix>/locks/vg/<vg>."""
    return "%s/locks/vg/%s" % (normalize_prefix(prefix), vg)


def check_vg_name(vg):
    if not isinstance(vg, str) or not _VG_RE.match(vg) or vg in (".", ".."):
        raise LockError("invalid VG name %r for the etcd lock" % (vg,))
    return vg


def safety_margin(ttl):
    """How much lease time must be left for ensure_held to trust the lock: max(1 s, TTL/3)."""
    return max(1.0, ttl / 3.0)


def lock_settings(settings):
    """Checked (ttl, timeout, prefix) from the settings (defaults filled in). Raises LockError."""
    merged = dict(LOCK_SETTINGS_DEFAULTS)
    merged.update(dict((k, v) for k, v in settings.items() if v is not None))
    try:
        ttl = merged["lock_ttl"]
        if isinstance(ttl, bool) or float(ttl) != int(float(ttl)):
            raise ValueError
        ttl = int(float(ttl))
    except (TypeError, ValueError):
        raise LockError("lock_ttl must be a whole number of seconds, got %r" % (merged["lock_ttl"],))
    if ttl < MIN_TTL:
        raise LockError("lock_ttl must be at least %d seconds, got %d" % (MIN_TTL, ttl))
    try:
        timeout = float(merged["lock_timeout"])
        if isinstance(merged["lock_timeout"], bool) or math.isnan(timeout):
            raise ValueError
    except (TypeError, ValueError):
        raise LockError("lock_timeout must be a number of seconds, got %r" % (merged["lock_timeout"],))
    if timeout < 0:
        raise LockError("lock_timeout must not be negative, got %s" % timeout)
    return ttl, timeout, normalize_prefix(merged["lock_prefix"]), merged


def holder_value(holder, vg):
    """The JSON stored in the lock key: who holds it, for the admin and for error messages."""
    return json.dumps(
        {
            "holder": holder,
            "vg": vg,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "acquired": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "lock": uuid.uuid4().hex[:16],  # this acquire's own: see 'ours' in the module docstring
        },
        sort_keys=True,
    )


# -- the process's leases ---------------------------------------------------------------------


class LeaseSession(object):
    """A lease of this process shared by its locks with the same settings (see the module docstring).

    ``left()`` says how long it surely lives by the local clock: etcd started each TTL after the
    request that gave it was sent."""

    def __init__(self, key, lease_id, ttl, valid_until, source):
        self.key = key
        self.lease_id = lease_id
        self.ttl = ttl
        self.interval = ttl / 3.0
        self._source = source  # the lock's client that granted it: the keepalive uses a copy
        self._state = threading.Lock()
        self._valid_until = valid_until
        self.lost = None  # why, once it is
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, name="sltv-etcd-lease-%x" % lease_id)
        self._thread.daemon = True
        self._thread.start()

    def left(self):
        """(seconds the lease surely lives still, None) or (0, why it is lost)."""
        with self._state:
            if self.lost:
                return 0.0, self.lost
            return self._valid_until - time.monotonic(), None

    def renewed(self, sent, ttl):
        """A refresh sent at ``sent`` was answered ``ttl``."""
        with self._state:
            if not self.lost:
                self._valid_until = sent + ttl

    def mark_lost(self, why):
        """For good: the keepalive stops, so the lease and any key on it expire within its TTL."""
        with self._state:
            if not self.lost:
                self.lost = why
        self._stop.set()

    def refresh_with(self, client):
        """Refresh through ``client`` (errors go to the caller); False and lost if it is gone."""
        sent = time.monotonic()
        ttl = client.refresh_lease(self.lease_id)
        if ttl <= 0:
            self.mark_lost("the lease %x expired (etcd answered TTL %d)" % (self.lease_id, ttl))
            return False
        self.renewed(sent, ttl)
        return True

    def _keepalive(self):
        # The first refresh comes sooner when less than a whole lease is known to be left.
        wait = max(0.0, min(self.interval, self.left()[0] - (self.ttl - self.interval)))
        client = None
        try:
            while not self._stop.wait(wait):
                try:
                    if client is None:  # own HTTP session: requests sessions are not for sharing
                        client = self._source.clone(timeout=max(0.2, self.interval))
                    if not self.refresh_with(client):
                        return
                except Exception as exc:
                    # A passing etcd hiccup: retry soon while the lease surely still lives.
                    # ensure_held() checks etcd itself before every lvm command, so this
                    # never hides a gap; once the local bound is past, the lease is lost.
                    if self.left()[0] <= 0:
                        self.mark_lost("refreshing the lease failed until it expired: %s"
                                       % (client or self._source).describe(exc))
                        return
                    wait = min(self.interval, 0.25)
                    continue
                wait = self.interval
        finally:
            if client is not None:
                client.close()

    def close(self):
        """Stop the keepalive and revoke the lease (bounded, best effort: else it expires)."""
        self.mark_lost("this process closed its etcd lease")
        client = self._source.clone(timeout=1.0)
        try:
            client.revoke_lease(self.lease_id)
        except etcd_client.etcd_errors():
            pass
        client.close()


# session_key() -> LeaseSession; a forked child has none (the keepalive threads stay behind)
_sessions = etcd_client.ProcessLocal()


def session_key(pool_key, ttl):
    """The key of a process's lease: its connection settings (etcd_client.pool_key) and lock_ttl."""
    return (pool_key, ttl)


@atexit.register
def close_sessions():
    """Revoke this process's leases: at exit, or to start afresh."""
    with _sessions.guard:
        sessions = [session for session in _sessions.values() if not session.lost]
        _sessions.clear()
    for session in sessions:
        session.close()


def process_lease(settings, client):
    """This process's lease for ``settings`` (the one its locks take), granted through ``client``
    when there is none yet or it is lost. A key put on it lives while the process keeps it alive
    and goes with it (at exit, or ``lock_ttl`` after the process died): the agent puts its records
    on it, so that an agent holds one lease in etcd, not one for its records and one for its locks."""
    ttl, _timeout, _prefix, merged = lock_settings(settings)
    key = session_key(etcd_client.pool_key(merged), ttl)
    with _sessions.guard:
        session = _sessions.get(key)
        if session is None or session.lost:
            sent = time.monotonic()
            lease_id, granted = client.grant_lease(ttl)
            session = LeaseSession(key, lease_id, granted, sent + granted, client)
            _sessions[key] = session
    return session


class EtcdVgLock(VgLock):
    """Cluster-wide VG lock in etcd. See the module docstring for the protocol."""

    backend = "etcd"

    def __init__(self, vg, holder, settings):
        ttl, timeout, prefix, merged = lock_settings(settings)
        super(EtcdVgLock, self).__init__(check_vg_name(vg), holder, timeout)
        etcd_client.validate_connection_settings(merged)  # bad paths/URLs fail now, not mid-run
        self._settings = merged
        self.endpoints = etcd_client.parse_endpoints(merged["etcd_endpoints"])
        self.ttl = ttl  # requested; self.lease_ttl is what etcd granted
        self.prefix = prefix
        self.key = lock_key(prefix, vg)
        self.lease_id = None
        self.lease_ttl = None
        self.margin = safety_margin(ttl)
        self.release_warning = None  # set when release could not clean up (lease expiry will)
        self._client = None
        self._session = None
        self._value = None  # the value our transaction puts
        self._unanswered = False  # a transaction of ours may have been applied without our knowing

    @classmethod
    def from_settings(cls, settings, vg, holder):
        return cls(vg, holder, settings)

    # -- acquire ------------------------------------------------------------------------------

    def _unreachable(self, detail):
        return LockError(
            "cannot lock VG %s in etcd (key %s): %s. Nothing was changed." % (self.vg, self.key, detail)
        )

    def _connect(self, deadline, reuse=True):
        """Connect (an idle client of the process when ``reuse``), retrying until the deadline while
        the failure may be temporary."""
        while True:
            try:
                if reuse:
                    return etcd_client.pooled_client(self._settings, deadline=deadline)
                return etcd_client.connect(self._settings, deadline=deadline)
            except etcd_client.EndpointError as exc:
                if exc.permanent or time.monotonic() + 0.2 >= deadline:
                    raise self._unreachable(str(exc))
            time.sleep(0.2)

    def acquire(self):
        if self.token is not None:
            raise LockError("the etcd lock on VG %s is already held by this object" % self.vg)
        started = time.monotonic()
        # Connecting gets at least a little time even with lock_timeout=0.
        deadline = started + max(self.timeout, 0.5)
        self.release_warning = None
        self._unanswered = False
        self._client = self._connect(deadline)
        try:
            self._acquire(deadline)
        except BaseException:
            self._cleanup()
            raise
        self.wait_seconds = time.monotonic() - started

    def _bounded(self, deadline):
        """Let the next request last no longer than what is left of the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout("out of time")
        self._client.timeout = max(0.05, min(etcd_client.REQUEST_TIMEOUT, left))

    def _grant(self, deadline):
        """Grant a lease; return when the request was sent. A reused client whose member fails it
        (gone, no leader: an election) is replaced by a fresh connection, which waits for a healthy
        member, as a new one always did."""
        errors = etcd_client.etcd_errors()
        fresh = not getattr(self._client, "reused", False)
        while True:
            client = self._client
            try:
                self._bounded(deadline)
                sent = time.monotonic()
                self.lease_id, self.lease_ttl = client.grant_lease(self.ttl)
                return sent
            except errors as exc:
                if fresh or time.monotonic() >= deadline:
                    raise self._unreachable("granting a lease at %s failed: %s" % (client.endpoint, client.describe(exc)))
            except LockTimeout:
                raise self._unreachable("no time left to grant a lease at %s" % client.endpoint)
            client.close()
            self._client = self._connect(deadline, reuse=False)
            self._client.pool_key = client.pool_key  # given back to the pool like the one it replaces
            fresh = True

    def _ask(self, what, deadline, call):
        """``call(client)`` through the lock's client within the deadline, else LockError naming ``what``."""
        client = self._client
        try:
            self._bounded(deadline)
            return call(client)
        except etcd_client.etcd_errors() as exc:
            raise self._unreachable("%s at %s failed: %s" % (what, client.endpoint, client.describe(exc)))
        except LockTimeout:
            raise self._unreachable("no time left for %s at %s" % (what, client.endpoint))

    def _fresh_lease(self, deadline):
        """Grant the lease; when its answer came late (an election in the cluster: the request waited
        for the new leader), refresh it once at once, so that the lock starts with a whole lease
        known to be left (granted again if it is gone already). Returns the time the bound starts."""
        while True:
            sent = self._grant(deadline)
            if time.monotonic() - sent <= self.lease_ttl / 3.0:
                return sent
            sent = time.monotonic()
            ttl = self._ask("refreshing the lease", deadline, lambda client: client.refresh_lease(self.lease_id))
            if ttl > 0:
                self.lease_ttl = ttl
                return sent
            self.lease_id = None  # expired while its answer was on the way: a new one

    def _take_session(self, deadline):
        """Put the lock on the process's lease for its settings: granted when there is none or it is
        lost; refreshed first when its keepalive is behind (less than half of it known to be left;
        the keepalive keeps two thirds), so that a lock always starts with most of a lease."""
        key = session_key(self._client.pool_key, self.ttl)
        guard = _sessions.guard
        if not guard.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise self._unreachable("another thread of this process was granting the lease until the deadline")
        try:
            session = _sessions.get(key)
            if session is not None and not session.lost and session.left()[0] < session.ttl / 2.0:
                self._ask("refreshing the lease", deadline, session.refresh_with)  # lost if it is gone
            if session is None or session.lost:
                sent = self._fresh_lease(deadline)
                session = LeaseSession(key, self.lease_id, self.lease_ttl, sent + self.lease_ttl, self._client)
                _sessions[key] = session
        finally:
            guard.release()
        self._session = session
        self.lease_id, self.lease_ttl = session.lease_id, session.ttl
        self.margin = safety_margin(session.ttl)
        return txn_body(
            [compare_create_revision(self.key, 0)],
            [request_put(self.key, self._value, self.lease_id)],
            [request_range(self.key)],
        )

    def _acquire(self, deadline):
        started = time.monotonic()
        self._value = holder_value(self.holder, self.vg)
        txn = self._take_session(deadline)
        client = self._client
        errors = etcd_client.etcd_errors()
        current = None
        last_error = None
        while True:
            if self._session.lost:
                txn = self._take_session(deadline)  # a new lease (none of our keys is on it yet)
            try:
                self._bounded(deadline)
                response = client.txn(txn)
            except LockTimeout:
                break
            except errors as exc:
                self._unanswered = True
                last_error = client.describe(exc)
                if "requested lease not found" in last_error:  # revoked behind our back
                    self._session.mark_lost("etcd does not know the lease %x" % self.lease_id)
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    break
                continue
            last_error = None
            if txn_succeeded(response):
                # The put created the key in this transaction: its create revision is the
                # transaction's revision. That number only grows: it is our fencing token.
                self.token = header_revision(response)
                return
            kv = first_range_kv(response)
            if kv and kv["lease"] == self.lease_id and kv["value"] == self._value.encode("utf-8"):
                # An earlier txn of ours was applied but its answer was lost (timeout): ours.
                self.token = kv["create_revision"]
                return
            current = kv["value"].decode("utf-8", "replace") if kv else None
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Watch from the revision after the failed txn: a delete after it cannot be missed.
            settle = random.uniform(*SETTLE) if time.monotonic() - started < WATCH_SLICE else 0.0
            client.wait_for_delete(self.key, header_revision(response) + 1, min(WATCH_SLICE, left), settle)

        if last_error:
            raise self._unreachable("etcd at %s stopped answering: %s" % (client.endpoint, last_error))
        raise LockTimeout(
            "timed out after %.1f s waiting for the etcd lock on VG %s (key %s), held by %s. "
            "Nothing was changed. Retry later; if that holder is dead its lease expires within "
            "its lock_ttl; or raise lock_timeout." % (self.timeout, self.vg, self.key, current or "(unknown)")
        )

    # -- ensure_held --------------------------------------------------------------------------

    def _fenced(self, why):
        return LockLost(
            "the etcd lock on VG %s (key %s) is no longer safely held: %s. The lvm command was NOT "
            "run. Another host may hold the VG now: check the state of the disk and run the "
            "operation again." % (self.vg, self.key, why)
        )

    def _local_left(self):
        left, lost = self._session.left()
        if lost:
            raise self._fenced(lost)
        return left

    def ensure_held(self):
        if self.token is None or self._client is None:
            raise self._fenced("the lock is not held")
        left = self._local_left()
        if left < self.margin:
            raise self._fenced("the last lease keepalive is too old (%.1f s of lease left, need %.1f)"
                               % (left, self.margin))
        client = self._client
        try:
            client.timeout = max(0.2, min(etcd_client.REQUEST_TIMEOUT, left - self.margin))
            kv = client.get_kv(self.key)
            remaining = client.lease_ttl(self.lease_id) if kv else -1
        except etcd_client.etcd_errors() as exc:
            raise self._fenced("etcd could not confirm it: %s" % client.describe(exc))
        if kv is None:
            raise self._fenced("the lock key is gone")
        if kv["lease"] != self.lease_id or kv["create_revision"] != self.token:
            raise self._fenced(
                "the lock key now belongs to someone else (create revision %d, ours %d): %s"
                % (kv["create_revision"], self.token, kv["value"].decode("utf-8", "replace"))
            )
        # etcd rounds the remaining TTL down to whole seconds: comparing it is conservative.
        if remaining < self.margin:
            raise self._fenced("the lease has only %d s left in etcd (need %.1f)" % (remaining, self.margin))
        # Checked again last: the etcd requests themselves took time.
        left = self._local_left()
        if left < self.margin:
            raise self._fenced("the last lease keepalive is too old (%.1f s left)" % left)

    # -- release ------------------------------------------------------------------------------

    def release(self):
        """Give the lock back. Never raises for etcd problems: the lease expiry frees the key."""
        if self._client is None:
            return
        self._cleanup()

    def _cleanup(self):
        """Delete our key: the one with our token, or (acquire failed) the one a transaction of ours
        may have created unbeknown to us. The process's lease stays for its next lock."""
        client, self._client = self._client, None
        session, self._session = self._session, None
        token, self.token = self.token, None
        self.lease_id = None
        if client is None:
            return
        if token is not None:
            guard = compare_create_revision(self.key, token)  # someone else's key has another
        elif self._unanswered and session is not None:
            guard = compare_value(self.key, self._value)  # our value is ours alone
        else:
            etcd_client.give_back(client)
            return
        client.timeout = 2.0  # bounded: release runs on error paths too
        try:
            client.txn(txn_body([guard], [request_delete(self.key)]))
        except etcd_client.etcd_errors() as exc:
            # etcd down or hung: one failure is enough, do not wait on a second request. Our key
            # may stay: give the lease up so that it goes within the TTL (and our other locks on
            # it are fenced, which is safe).
            session.mark_lost("releasing the lock on VG %s failed, so the lease is left to expire" % self.vg)
            client.close()  # it may be stuck on a bad member: not for the next lock
            self.release_warning = (
                "etcd lock on VG %s not cleanly released (etcd at %s: %s); it frees itself when the lease "
                "expires within %s s" % (self.vg, client.endpoint, client.describe(exc), session.ttl)
            )
            return
        etcd_client.give_back(client)

    @property
    def held(self):
        return self.token is not None

    @property
    def endpoint(self):
        """The etcd member the lock talks to now (it moves to the next one when that one is lost)."""
        return self._client.endpoint if self._client is not None else None

# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The etcd backend of the VG lock: a key owned by a lease, created by a transaction.

* acquire: grant a lease (TTL ``lock_ttl``) kept alive by a daemon thread, then loop on the
  transaction ``if create_revision(key) == 0 then put(key, value, lease) else range(key)``.
  Success: the key's create revision is the fencing token. Failure: watch the key for its
  deletion from the revision right after the failed transaction, so a release that happens
  between the transaction and the watch is still seen.
* ensure_held (before every lvm command): the lease must still have a safety margin left, both
  by the local clock (time of the last successful keepalive) and by etcd (the key is ours and
  the lease's remaining TTL is large enough). Otherwise LockLost: another host may already hold
  the VG, so the command must not run.
* release: revoke the lease. etcd deletes the keys attached to it in the same step: our key,
  never someone else's (a key created by another holder is on that holder's lease). One request
  (it was a guarded delete plus a revoke).
* connections: a process reuses its idle connected clients (``etcd_client.pooled_client``): no
  new TCP connection and health check per lock. The lease stays one per lock (granted at acquire,
  revoked at release), so a lock's lifetime and fencing are exactly its own.
* every request (the keepalive's too) fails over to the next member of ``etcd_endpoints`` when the
  one in use cannot be reached (``etcd_client``): the lease, the key and its revision live in the
  cluster, so a lock survives losing one member of a healthy cluster (a rolling restart).

The lock is never re-acquired behind the caller's back: once lost it stays lost.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import math
import os
import re
import socket
import threading
import time

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, MIN_LOCK_TTL as MIN_TTL, VgLock
from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockLost, LockTimeout
from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import (
    compare_create_revision,
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
        },
        sort_keys=True,
    )


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
        self._state = threading.Lock()
        self._stop = None
        self._thread = None
        self._valid_until = None  # monotonic time until which the lease surely lives
        self._lost = None  # why the lock is lost, once it is

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
        self._lost = None
        self.release_warning = None
        self._client = self._connect(deadline)
        try:
            self._acquire(deadline)
        except BaseException:
            self._cleanup(delete_key=False)
            raise
        self.wait_seconds = time.monotonic() - started

    def _bounded(self, deadline):
        """Let the next request last no longer than what is left of the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout("out of time")
        self._client.timeout = max(0.05, min(etcd_client.REQUEST_TIMEOUT, left))

    def _grant(self, deadline):
        """Grant the lock's lease; return when the request was sent. A reused client whose member
        fails it (gone, no leader: an election) is replaced by a fresh connection, which waits for a
        healthy member, as a new one always did."""
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

    def _fresh_lease(self, deadline):
        """Grant the lease; when its answer came late (an election in the cluster: the request waited
        for the new leader), refresh it once at once, so that the lock starts with a whole lease
        known to be left (granted again if it is gone already). Returns the time the bound starts."""
        while True:
            sent = self._grant(deadline)
            if time.monotonic() - sent <= self.lease_ttl / 3.0:
                return sent
            client = self._client
            try:
                self._bounded(deadline)
                sent = time.monotonic()
                ttl = client.refresh_lease(self.lease_id)
            except etcd_client.etcd_errors() as exc:
                raise self._unreachable("refreshing the lease at %s failed: %s" % (client.endpoint, client.describe(exc)))
            except LockTimeout:
                raise self._unreachable("no time left to refresh the lease at %s" % client.endpoint)
            if ttl > 0:
                self.lease_ttl = ttl
                return sent
            self.lease_id = None  # expired while its answer was on the way: a new one

    def _acquire(self, deadline):
        sent = self._fresh_lease(deadline)
        client = self._client
        errors = etcd_client.etcd_errors()
        self._valid_until = sent + self.lease_ttl
        self.margin = safety_margin(self.lease_ttl)
        self._start_keepalive()

        value = holder_value(self.holder, self.vg)
        txn = txn_body(
            [compare_create_revision(self.key, 0)],
            [request_put(self.key, value, self.lease_id)],
            [request_range(self.key)],
        )
        current = None
        last_error = None
        while True:
            if self._lost:
                raise LockError("cannot lock VG %s: %s. Nothing was changed." % (self.vg, self._lost))
            try:
                self._bounded(deadline)
                response = client.txn(txn)
            except LockTimeout:
                break
            except errors as exc:
                last_error = client.describe(exc)
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
            if kv and kv["lease"] == self.lease_id:
                # An earlier txn of ours was applied but its answer was lost (timeout): ours.
                self.token = kv["create_revision"]
                return
            current = kv["value"].decode("utf-8", "replace") if kv else None
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Watch from the revision after the failed txn: a delete after it cannot be missed.
            client.wait_for_delete(self.key, header_revision(response) + 1, min(WATCH_SLICE, left))

        if last_error:
            raise self._unreachable("etcd at %s stopped answering: %s" % (client.endpoint, last_error))
        raise LockTimeout(
            "timed out after %.1f s waiting for the etcd lock on VG %s (key %s), held by %s. "
            "Nothing was changed. Retry later; if that holder is dead its lease expires within "
            "its lock_ttl; or raise lock_timeout." % (self.timeout, self.vg, self.key, current or "(unknown)")
        )

    # -- keepalive ----------------------------------------------------------------------------

    def _start_keepalive(self):
        self._stop = threading.Event()
        interval = self.lease_ttl / 3.0
        self._thread = threading.Thread(
            target=self._keepalive, args=(self._client, self.lease_id, interval, self._stop),
            name="sltv-etcd-keepalive-%s" % self.vg,
        )
        self._thread.daemon = True
        self._thread.start()

    @staticmethod
    def _keepalive_client(source, timeout):
        """Own client (own HTTP session): requests sessions are not meant to be shared by threads.
        Taken at the first refresh (most locks are given back before one is due): an idle one of
        the process, else a copy of the lock's (same member, same token)."""
        key = getattr(source, "pool_key", None)
        client = etcd_client.idle_client(key, timeout) if key else None
        return client or source.clone(timeout=timeout)

    def _next_refresh(self, interval):
        """Seconds until the next keepalive: ``interval`` after the last one, sooner when less of the
        lease is known to be left (a grant answered late, a refresh that failed)."""
        with self._state:
            left = self._valid_until - time.monotonic() if self._valid_until is not None else 0.0
        return max(0.0, min(interval, left - (self.lease_ttl - interval)))

    def _keepalive(self, source, lease_id, interval, stop):
        wait = self._next_refresh(interval)
        client = None
        healthy = True
        try:
            while not stop.wait(wait):
                sent = time.monotonic()
                try:
                    if client is None:
                        client = self._keepalive_client(source, max(0.2, interval))
                    ttl = client.refresh_lease(lease_id)
                except Exception as exc:
                    # A passing etcd hiccup: retry soon while the lease surely still lives.
                    # ensure_held() checks etcd itself before every lvm command, so this
                    # never hides a gap; once the local bound is past, the lock is lost.
                    with self._state:
                        expired = self._valid_until is None or time.monotonic() >= self._valid_until
                    healthy = False
                    if expired:
                        self._mark_lost("refreshing the lease failed until it expired: %s"
                                        % (client or source).describe(exc))
                        return
                    wait = min(interval, 0.25)
                    continue
                healthy = True
                if ttl <= 0:
                    self._mark_lost("the lease %x expired (etcd answered TTL %d)" % (lease_id, ttl))
                    return
                wait = interval
                with self._state:
                    if not self._lost:
                        # etcd started the new TTL after we sent: sent + ttl is a safe bound.
                        self._valid_until = sent + ttl
        finally:
            if client is not None and healthy:
                etcd_client.give_back(client)
            elif client is not None:
                client.close()

    def _mark_lost(self, why):
        with self._state:
            if not self._lost:
                self._lost = why
            self._valid_until = None

    def _stop_keepalive(self):
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=etcd_client.REQUEST_TIMEOUT + 1)
        self._thread = None
        self._stop = None

    # -- ensure_held --------------------------------------------------------------------------

    def _fenced(self, why):
        return LockLost(
            "the etcd lock on VG %s (key %s) is no longer safely held: %s. The lvm command was NOT "
            "run. Another host may hold the VG now: check the state of the disk and run the "
            "operation again." % (self.vg, self.key, why)
        )

    def _local_left(self):
        with self._state:
            if self._lost:
                raise self._fenced(self._lost)
            if self._valid_until is None:
                raise self._fenced("the lease is not being kept alive")
            return self._valid_until - time.monotonic()

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
        self._cleanup(delete_key=True)

    def _cleanup(self, delete_key):
        self._stop_keepalive()
        client, self._client = self._client, None
        token, lease_id = self.token, self.lease_id
        self.token = None
        self.lease_id = None
        self._valid_until = None
        warnings = []
        if client is None:
            return
        client.timeout = 2.0  # bounded: release runs on error paths too
        try:
            if lease_id is not None:
                # Revoking the lease deletes our key with it (delete_key or not: a txn of ours may
                # have created it although its answer was lost), and only ours: a key another
                # holder created after ours went is on that holder's lease.
                client.revoke_lease(lease_id)
            elif delete_key and token is not None:
                # Delete only our own key: someone else's has another create revision.
                client.txn(txn_body([compare_create_revision(self.key, token)], [request_delete(self.key)]))
        except etcd_client.etcd_errors() as exc:
            # etcd down or hung: one failure is enough, do not wait on a second request.
            warnings.append("etcd at %s: %s" % (client.endpoint, client.describe(exc)))
        if warnings:
            client.close()  # it may be stuck on a bad member: not for the next lock
        else:
            etcd_client.give_back(client)
        if warnings:
            self.release_warning = (
                "etcd lock on VG %s not cleanly released (%s); it frees itself when the lease expires "
                "within %s s" % (self.vg, "; ".join(warnings), self.lease_ttl or self.ttl)
            )

    @property
    def held(self):
        return self.token is not None

    @property
    def endpoint(self):
        """The etcd member the lock talks to now (it moves to the next one when that one is lost)."""
        return self._client.endpoint if self._client is not None else None

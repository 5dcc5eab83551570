# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the thin-extend agent grows, and how: thin disks in lvm2, extended under the VG lock.

``Storage`` is the interface the agent drives; ``LvmStorage`` is the real one. It also tells other
hosts about each extend through etcd (``cluster_state``) and refreshes the LVs that another host
extended while they are active here (the migration window), so the dm device sees the new size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os
import socket
import threading
import time

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_status import write_status
from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import WritePath, check_backend
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult
from ansible_collections.sltv.core.plugins.module_utils.infra.cluster_state import agent_key, extend_key
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import lv_device_paths
from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError, LockError, SltvError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import HostLockTimeout, VgNotFound
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human, thin_cap

CLUSTER_RETRY = 15.0  # seconds between etcd attempts while it does not answer: a sweep must not block on it
# The agent record is written again only when it changes (or its lease does), and at least this often
# (seconds): between, a sweep only keeps the lease alive. A write is a raft proposal and a revision
# etcd keeps until its next compaction; 50 agents writing at every sweep made 10 of them a second.
AGENT_RECORD_REWRITE = 300.0


class ExtendFailed(SltvError):
    """An extend that did not happen; ``reason`` is lock, host_lock (another lvm command on this host
    held the host's lvm lock past the agent's bound), lvm, vg_full, cap or other."""

    def __init__(self, message, reason="other"):
        super(ExtendFailed, self).__init__(message)
        self.reason = reason


class ThinDisk(object):
    """A thin disk the agent may grow: its LV size, its cap and the paths a domain may use for it."""

    def __init__(self, vg, name, size, cap, extent_size, paths=None, active=False, claims=()):
        self.vg = vg
        self.name = name
        self.size = size
        self.cap = cap
        self.extent_size = extent_size
        self.paths = tuple(paths or lv_device_paths(vg, name))
        self.active = active
        self.claims = list(claims)  # model.ownership.Claim, as last read

    @property
    def key(self):
        return "%s/%s" % (self.vg, self.name)


class Storage(object):
    """Interface of the agent's storage. Sizes are bytes."""

    def thin_disks(self):
        """Every thin disk this host may grow (a fresh read)."""
        raise NotImplementedError

    def extend(self, disk, size, timings):
        """Grow ``disk`` to ``size`` (extent-aligned, at most its cap) and return the size read back.
        Fills ``timings`` with the seconds spent in 'lock', 'lvextend' and 'verify'."""
        raise NotImplementedError

    def published(self, disk, size, seconds):
        """Called after an extend and the re-arm: tell other hosts (nothing by default)."""

    def after_sweep(self, disks):
        """Called after each sweep with the current thin disks: refresh what others grew."""

    def reclaim(self, uuid, domain_name, paths):
        """Move to this host the claims of domain ``uuid`` (running here) that name another host, for
        the sltv disks among ``paths``; return the disk keys moved (none by default)."""
        return []

    missing_vgs = ()  # configured VGs not found at the last read of thin_disks()

    @property
    def cluster_up(self):
        """False while the cluster store (etcd) does not answer."""
        return True

    def kernel_size(self, disk):
        """Bytes the kernel gives the disk's device on this host now; None when not active here."""
        return None

    def stopping(self):
        """The agent stops: start no lvm write from now on (nothing by default)."""

    def close(self):
        """Release what the storage holds (etcd lease, connections)."""


class _ClaimRecord(object):
    """The claims of one sltv disk as last read (or as this agent last wrote them)."""

    def __init__(self, vg, lv, claims):
        self.vg = vg
        self.lv = lv
        self.claims = claims


def device_size(path):
    """Size of a block device as the kernel sees it now (after lvextend or lvchange --refresh)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def active_here(disk):
    """The LV is active on this host: the catalog says so, or (the catalog is older) its device exists."""
    return disk.active or any(os.path.exists(path) for path in disk.paths)


class LvmStorage(Storage):
    """Thin disks of the configured VGs; extends with lvextend under the VG lock (etcd or local)."""

    def __init__(self, config, runner, host=None, etcd_connect=None, log=None, clock=time.time, cluster_up=True,
                 status_path=None):
        self.config = config
        self.runner = runner
        self.host = host or socket.gethostname()
        self.holder = "%s:sltv-agent:%d" % (self.host, os.getpid())
        self.log = log
        self.clock = clock
        self._etcd_connect = etcd_connect
        self._etcd = None
        self._lease = None
        self._session = None  # the etcd_lock.LeaseSession the lease belongs to
        self._registered = None  # (lease, value) of the agent record last written, and when
        self._cluster_up = cluster_up  # False: started during an etcd outage
        self._seen_extends = {}  # etcd key -> (size, time) already handled
        self._cluster_retry_at = 0.0
        self._releasing = {}  # VG -> the thread giving its last etcd lock back (one worker per VG)
        self._backend_refused = set()
        self.claim_index = {}  # device path -> _ClaimRecord of every sltv disk, as last read
        self.missing_vgs = []  # configured VGs not found at the last read
        self.metadata_free = {}  # VG name -> bytes free in its metadata area at the last read
        self.status_path = status_path  # the status file sltv_info reads (agent_status), None: not written
        self._status_failed = False
        self.started = clock()
        self._stopping = threading.Event()

    # -- reading -----------------------------------------------------------------------------------
    def _read_vgs(self):
        """The configured VGs this host sees now; a missing one is noted (logged when it changes)."""
        try:
            vgs = self.runner.read_vgs(self.config.vgs)
        except VgNotFound:
            # lvm fails the whole report for one missing VG: read every VG, keep the configured ones
            vgs = [vg for vg in self.runner.read_vgs() if vg.name in self.config.vgs]
        missing = sorted(set(self.config.vgs) - set(vg.name for vg in vgs))
        if self.log:
            for name in sorted(set(missing) - set(self.missing_vgs)):
                self.log.error("volume group %s not found on host %s: no disk of it is grown until it appears "
                               "(checked at every sweep; check vgs in the agent config and that its PVs are "
                               "visible here: pvs)", name, self.host)
            for name in sorted(set(self.missing_vgs) - set(missing)):
                self.log.info("volume group %s found on host %s: growing its disks", name, self.host)
        self.missing_vgs = missing
        self.metadata_free = dict((vg.name, vg.mda_free) for vg in vgs if vg.mda_size)
        return vgs

    def degraded(self):
        """Why the agent cannot do all its work now (a list of short texts; empty when it can)."""
        why = ["VG %s not found" % name for name in self.missing_vgs]
        if not self._cluster_up:
            why.append("etcd not reachable")
        return why

    def thin_disks(self):
        vgs = self._read_vgs()
        disks = []
        index = {}  # swapped in whole at the end: a reclaim on a worker thread reads the old one meanwhile
        for vg in vgs:
            problem = self._backend_problem(vg)
            for lv in vg.lvs.values():
                managed, facts = T.parse_tags(lv.tags)
                if not managed:
                    continue
                paths = sorted(set(lv_device_paths(vg.name, lv.name)) | (set([lv.path]) if lv.path else set()))
                claims = O.claims_of(facts.get(T.ATTACHED, []))
                record = _ClaimRecord(vg.name, lv.name, claims)  # one per disk, shared by its paths
                for path in paths:
                    index[path] = record
                if problem or facts.get(T.KIND, [None])[0] != "thin":
                    continue
                if facts.get(T.INIT) or facts.get(T.STATE):
                    continue  # header not written yet, or being deleted: not a disk to grow
                vsize = facts.get(T.VSIZE, [""])[0]
                virtual = int(vsize) if vsize.isdigit() else lv.size
                disks.append(ThinDisk(vg.name, lv.name, lv.size, thin_cap(virtual, vg.extent_size),
                                      vg.extent_size, paths, lv.active, claims))
        self.claim_index = index
        return disks

    def _backend_problem(self, vg):
        """The VG declares a stronger lock backend than the agent's: grow nothing there, say so once."""
        try:
            check_backend(vg, self.config.lock["lock_backend"])
            return None
        except LockError as exc:
            if self.log and vg.name not in self._backend_refused:
                self.log.error("not growing any disk of VG %s on host %s: %s", vg.name, self.host, exc)
            self._backend_refused.add(vg.name)
            return str(exc)

    def _lock_factory(self, vg_name):
        def make():
            return make_vg_lock(self.config.lock, vg_name, self.holder)
        return make

    # -- claims ------------------------------------------------------------------------------------
    def reclaim(self, uuid, domain_name, paths):
        moved = []
        for record in self._records(paths):
            if not any(c.uuid == uuid and c.host != self.host for c in record.claims):
                continue
            with WritePath(self.runner, self._lock_factory(record.vg), record.vg, OpResult(), record.lv) as vg:
                lv = vg.lvs.get(record.lv)
                if lv is None:
                    continue
                claims = O.claims_in_tags(lv.tags)
                decision = O.decide(O.RECLAIM, "disk %s/%s" % (record.vg, record.lv), claims, self.host, uuid,
                                    domain_name, running_here=True)
                if decision.claim is not None:
                    self.runner.change_tags(record.vg, record.lv,
                                            add=[T.make_tag(T.ATTACHED, decision.claim.value)],
                                            delete=[T.make_tag(T.ATTACHED, c.raw) for c in decision.stale])
                    claims = [c for c in claims if c not in decision.stale] + [decision.claim]
                    moved.append("%s/%s" % (record.vg, record.lv))
            record.claims = claims  # every path of the disk sees it
        return moved

    def _records(self, paths):
        """The index records of the sltv disks among ``paths``, each once."""
        records = []
        for path in paths:
            record = self.claim_index.get(path)
            if record is not None and record not in records:
                records.append(record)
        return records

    # -- extending ---------------------------------------------------------------------------------
    def extend(self, disk, size, timings):
        if size > disk.cap:
            raise ExtendFailed("%s: %s is above the cap %s" % (disk.key, human(size), human(disk.cap)), "cap")
        self._wait_released(disk.vg)
        lock = make_vg_lock(self.config.lock, disk.vg, self.holder)
        started = time.monotonic()
        try:
            lock.acquire()
        except Exception as exc:  # pylint: disable=broad-except  # LockError, or an etcd client surprise
            self._cluster_up = self.config.lock["lock_backend"] != "etcd"
            raise ExtendFailed("%s: cannot take the lock of VG %s: %s" % (disk.key, disk.vg, exc), "lock")
        self._cluster_up = True
        timings["lock"] = time.monotonic() - started
        fenced = []  # seconds spent confirming the lock right before lvextend (etcd: two requests)

        def fence():
            self._refuse_if_stopping(disk, "lvextend")
            fence_started = time.monotonic()
            lock.ensure_held()
            fenced.append(time.monotonic() - fence_started)

        # A runner of its own carries this lock's fence: extends of other VGs run at the same time.
        runner = copy.copy(self.runner)
        runner.fence = fence
        try:
            started = time.monotonic()
            try:
                runner.extend_lv(disk.vg, disk.name, size)
            except HostLockTimeout as exc:
                raise ExtendFailed("%s: lvextend not run: %s" % (disk.key, exc), "host_lock")
            except LockError as exc:
                raise ExtendFailed("%s: lost the lock of VG %s before lvextend: %s" % (disk.key, disk.vg, exc), "lock")
            except CommandError as exc:
                self._classify_failure(disk, size, exc)  # returns when another host grew it already
            timings["fence"] = sum(fenced)
            timings["lvextend"] = time.monotonic() - started - timings["fence"]
        finally:
            runner.fence = None
            self._release(lock, disk.vg)
        started = time.monotonic()
        new_size = self._verify(disk, size)
        timings["verify"] = time.monotonic() - started
        return new_size

    def _release(self, lock, vg):
        """Give the VG lock back; an etcd lock off the extend's path.

        Its release is an etcd request after lvextend has run: nothing is left to protect, so the
        extend's latency need not include them. Other hosts see the key go as soon as it would
        otherwise; this agent's next extend (or close) waits for it first."""
        if self.config.lock["lock_backend"] != "etcd":
            lock.release()
            return
        releasing = threading.Thread(target=lock.release, name="lock-release-%s" % vg)
        releasing.daemon = True
        self._releasing[vg] = releasing
        releasing.start()

    def _wait_released(self, vg=None):
        """Wait for the release of the last lock of ``vg`` (of every VG when None)."""
        for name in [vg] if vg is not None else list(self._releasing):
            releasing = self._releasing.pop(name, None)
            if releasing is not None:
                releasing.join()

    def _classify_failure(self, disk, size, exc):
        try:
            vg = self.runner.read_vg(disk.vg, disk.name)
        except SltvError:
            raise ExtendFailed("%s: lvextend failed: %s" % (disk.key, exc), "lvm")
        lv = vg.lvs.get(disk.name)
        if lv is not None and lv.size >= size:
            # Another agent (the other end of a migration) grew it first: nothing lost, but the dm
            # device here keeps the old size until a refresh; do it now, so that _verify passes and
            # a guest paused here is resumed at once (not after the next catalog read or a back-off).
            if active_here(disk):
                self._refuse_if_stopping(disk, "lvchange --refresh")
                try:
                    self.runner.refresh(disk.vg, disk.name)
                except SltvError as refresh_error:
                    raise ExtendFailed("%s: another host grew it to %s, but lvchange --refresh here failed: %s"
                                       % (disk.key, human(lv.size), refresh_error), "lvm")
            return
        if lv is not None and size - lv.size > vg.free:
            raise ExtendFailed("%s: VG %s is full (%s free, %s needed): add a PV (vgextend) or free space; "
                               "domains that hit the end of this disk stay paused until then"
                               % (disk.key, disk.vg, human(vg.free), human(size - lv.size)), "vg_full")
        raise ExtendFailed("%s: lvextend failed: %s" % (disk.key, exc), "lvm")

    def kernel_size(self, disk):
        for path in disk.paths:
            try:
                return device_size(path)
            except OSError:
                continue  # not active here (or this path is not its device)
        return None

    def stopping(self):
        self._stopping.set()

    def _refuse_if_stopping(self, disk, command):
        """Once the agent stops, no lvextend or refresh (a device suspend and resume) starts: it could
        outlive the agent's wait for it and be killed halfway. lvextend's check is in its fence, after
        the waits for the VG lock and the host's lvm lock, which may end well after the stop began."""
        if self._stopping.is_set():
            raise ExtendFailed("%s: %s not run: the agent is stopping" % (disk.key, command), "other")

    def _verify(self, disk, size):
        """The size the kernel now gives the LV's device (active here), else lvm's report."""
        if active_here(disk):
            for path in disk.paths:
                try:
                    seen = device_size(path)
                except OSError:
                    continue
                if seen < size:
                    raise ExtendFailed("%s: lvextend ran but the device %s is %s, not %s"
                                       % (disk.key, path, human(seen), human(size)), "lvm")
                return seen
        lv = self.runner.read_vg(disk.vg, disk.name).lvs.get(disk.name)
        if lv is None or lv.size < size:
            raise ExtendFailed("%s: lvextend ran but lvm reports %s" % (disk.key, human(lv.size) if lv else "no LV"),
                               "lvm")
        return lv.size

    # -- the cluster (etcd) ------------------------------------------------------------------------
    @property
    def cluster_up(self):
        return self._cluster_up

    def _client(self):
        if self.config.lock["lock_backend"] != "etcd" or self._etcd_connect is None:
            return None
        if self._etcd is None:
            self._etcd = self._etcd_connect(self.config.lock)
        return self._etcd

    def _cluster(self, what, work):
        """Run ``work(client)``; an etcd failure is logged and remembered, never raised."""
        if time.monotonic() < self._cluster_retry_at:
            return None
        try:
            client = self._client()
            if client is None:
                return None
            result = work(client)
            self._cluster_up = True
            return result
        except Exception as exc:  # pylint: disable=broad-except  # etcd down must not stop the agent
            self._cluster_up = False
            self._cluster_retry_at = time.monotonic() + CLUSTER_RETRY
            self._etcd = None
            self._lease = None
            self._registered = None  # written again on the next connection, whatever it holds
            if self.log:
                # Imported only here and in _put: with lock_backend=local the agent never loads the etcd
                # client (requests, etcd3gw: 10 MB of its RSS, issue 15).
                from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import describe_error

                self.log.warning("etcd: %s failed: %s (will retry in %.0f s)", what, describe_error(exc), CLUSTER_RETRY)
            return None

    def _put(self, client, key, value, lease):
        from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import request_put, txn_body

        client.txn(txn_body([], [request_put(key, json.dumps(value, sort_keys=True), lease)]))

    def _agent_lease(self, client):
        """The agent's one lease: the process's, which its VG locks take too (etcd_lock.process_lease;
        ``lock_ttl``, kept alive by its own thread). Its keys (the agent's record and its extend
        records) go with it when the agent stops, nothing piles up in etcd; a lost lease is replaced
        by a new one, and register() puts the record on it at once."""
        if self._session is None or self._session.lost:  # else no settings check and guard at every sweep
            from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import process_lease

            self._session = process_lease(self.config.lock, client)
        self._lease = self._session.lease_id
        return self._lease

    def register(self, disks_watched=0):
        """Keep ``<prefix>/agents/<host>`` alive on the agent's lease (sltv_info lists it), and write the
        host's status file (sltv_info reads it with the local lock too). The record is put only when
        it changed, its lease is new or AGENT_RECORD_REWRITE has passed; else the lease's keep-alive
        is all (no write, no new revision in etcd)."""
        self._write_status(disks_watched)

        def work(client):
            value = dict(host=self.host, pid=os.getpid(), started=int(self.started), disks=disks_watched,
                         vgs=list(self.config.vgs), vgs_missing=list(self.missing_vgs),
                         degraded=self.degraded())
            lease = self._agent_lease(client)
            now = time.monotonic()
            if (self._registered is not None and self._registered[:2] == (lease, value)
                    and now - self._registered[2] < AGENT_RECORD_REWRITE):
                return
            self._put(client, agent_key(self.config.lock["lock_prefix"], self.host), value, lease)
            self._registered = (lease, value, now)

        self._cluster("agent registration", work)

    def _write_status(self, disks_watched):
        if not self.status_path:
            return
        try:
            write_status(dict(host=self.host, pid=os.getpid(), disks=disks_watched, vgs=list(self.config.vgs),
                              vgs_missing=list(self.missing_vgs), degraded=self.degraded()), self.status_path)
            self._status_failed = False
        except (IOError, OSError) as exc:
            if self.log and not self._status_failed:
                self.log.warning("cannot write the status file %s (sltv_info reads it): %s", self.status_path, exc)
            self._status_failed = True

    def published(self, disk, size, seconds):
        def work(client):
            value = dict(host=self.host, vg=disk.vg, disk=disk.name, size=size, time=round(self.clock(), 3),
                         seconds=round(seconds, 3))
            self._put(client, extend_key(self.config.lock["lock_prefix"], disk.vg, disk.name), value,
                      self._agent_lease(client))

        self._cluster("publishing the extend of %s" % disk.key, work)

    def after_sweep(self, disks):
        """Refresh LVs active here whose dm device is smaller than the LV: another host grew them.

        etcd's extend records say which to look at at once; a size check of every active thin disk
        is the backstop (a record can be missed while etcd is down)."""
        records = self._cluster("reading extends", self._remote_extends) or []
        by_key = dict((d.key, d) for d in disks)
        wanted = {}
        for key, size, record_key, marker in records:
            if key in by_key:
                wanted[key] = size
                # handled below; a disk the catalog does not know yet is looked at again next sweep
                self._seen_extends[record_key] = marker
        for disk in disks:
            if disk.active:
                wanted.setdefault(disk.key, None)
        refreshed = []
        for key in wanted:
            # An etcd record is checked even when the catalog (up to CATALOG_MAX_AGE old) says the LV
            # is inactive: it may have been activated since (an incoming migration). Its device exists
            # only where it is active.
            disk = by_key[key]
            try:
                seen = device_size(disk.paths[0]) if os.path.exists(disk.paths[0]) else None
            except OSError:
                seen = None
            if seen is not None and seen < max(disk.size, wanted[key] or 0):
                self.runner.refresh(disk.vg, disk.name)
                refreshed.append(disk.key)
        return refreshed

    def _remote_extends(self, client):
        """(disk key, size, record key, marker) of each extend record of another host not handled yet."""
        from ansible_collections.sltv.core.plugins.module_utils.infra.cluster_state import recent_extends

        found = []
        for record in recent_extends(client, self.config.lock["lock_prefix"]):
            if record.get("host") == self.host:
                continue
            marker = (record.get("size"), record.get("time"))
            if self._seen_extends.get(record["key"]) == marker:
                continue
            found.append(("%s/%s" % (record.get("vg"), record.get("disk")), record.get("size"), record["key"], marker))
        return found

    def close(self):
        self._wait_released()
        if self._session is not None:
            from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import close_sessions

            # the process's leases (its records' and its locks', released above; best effort, bounded):
            # its keys go at once
            close_sessions()
        if self._etcd is not None:
            try:
                self._etcd.close()
            except Exception:  # pylint: disable=broad-except  # closing a dead connection
                pass
        self._etcd = None

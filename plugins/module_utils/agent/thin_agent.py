# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent: grows thin disks before their guest fills them (DESIGN.md section 5).

Two sources of work feed one worker (the caller's thread of ``run``):

* libvirt events, from the libvirt event-loop thread: BLOCK_THRESHOLD (armed per thin disk on
  ``vdX[index]``; one-shot; may come twice, as ``vdb`` and ``vdb[4]``), IO_ERROR_REASON (``enospc``),
  LIFECYCLE (a domain started, resumed or paused) and DEVICE_ADDED (a hot attach: the new disk is
  armed at once, with a fresh catalog read for its claim, not at the next sweep). Callbacks only
  queue; the worker decides.
* a sweep every ``sweep_interval`` seconds: ONE ``getAllDomainStats`` call for all running domains,
  which catches missed events, libvirtd restarts, new attachments and incoming migrations.

Decisions are made in that one thread, so two triggers for a disk never race: each decision reads
fresh statistics first, so a duplicate event finds the disk already grown and only re-arms. The
extends themselves run on one worker thread per VG (``vg_workers``): a VG whose lock cannot be had
(etcd down, a stuck holder) or whose lvm command hangs until its timeout delays no other VG; moving
claims after a migration (under the VG lock too) runs on a worker of its own. A disk being extended
is left alone until its outcome comes back as an event. A domain paused for ENOSPC on a thin disk is
resumed once every such disk has room; a domain paused for any other reason is never resumed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import logging
import threading
import time

try:
    import queue
except ImportError:  # Python 2 (ansible-test imports every module_utils with it)
    import Queue as queue  # noqa: N813

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_metrics import Metrics
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed
from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import parse_disks
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.agent.extend_policy import WriteRateEstimator
from ansible_collections.sltv.core.plugins.module_utils.agent.vg_workers import VgWorkers
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import LibvirtError, import_libvirt
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import HOST_LOCK_TIMEOUT, LVM_COMMAND_TIMEOUT
from ansible_collections.sltv.core.plugins.module_utils.infra.sd_notify import Notifier
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human

CATALOG_MAX_AGE = 30.0  # seconds between lvm reads of the thin disks when nothing new shows up
MAX_BACKOFF = 30.0      # seconds between retries of a failed extend (VG full, lvm error)
# An extend's phases, as logged and in the duration histogram; fence is the lock's check right before lvextend.
EXTEND_PHASES = ("detect", "lock", "fence", "lvextend", "verify", "rearm", "total")
LOCK_BACKOFF = 2.0      # ... when the lock was the problem: each attempt already waits lock_timeout
LOCK_REASONS = ("lock", "host_lock")  # ... the VG lock, or the host's lvm lock (a module's lvm command held it)
RECONNECT_BACKOFF = (0.5, 10.0)
SPACE_POLL_SECONDS = 0.02  # how often a guest paused on ENOSPC looks at its device while lvextend runs
HISTORY = 2000          # extends kept in memory for tests and benchmarks
CLAIMS_WORKER = "claims"  # the worker that moves claims after a migration (off the event thread)

# libvirt constants, by value, so that the logic can be tested without libvirt installed.
EVENT_LIFECYCLE, EVENT_IO_ERROR_REASON, EVENT_DEVICE_ADDED, EVENT_BLOCK_THRESHOLD = 0, 6, 19, 24
LIFECYCLE_STARTED, LIFECYCLE_SUSPENDED, LIFECYCLE_RESUMED = 2, 3, 4
STATS_STATE, STATS_BLOCK = 0x1, 0x20
STATS_ACTIVE, STATS_BACKING = 0x1, 0x40000000
STATE_RUNNING, STATE_PAUSED, PAUSED_IOERROR = 1, 3, 5
DISK_ERROR_NO_SPACE = 2

ExtendJob = collections.namedtuple("ExtendJob", "dom watch disk target trigger detected_at timings arming done")
Event = collections.namedtuple("Event", "kind uuid dev path detail at excess")
Event.__new__.__defaults__ = (None,)  # excess: bytes written past the threshold (threshold events only)


def block_entries(record):
    """The top image of every disk in one getAllDomainStats record: name, path, sizes, threshold."""
    entries = []
    names = set()
    for num in range(int(record.get("block.count", 0))):
        prefix = "block.%d." % num
        name = record.get(prefix + "name")
        if name is None or name in names:
            continue  # with BACKING, later entries of a name are the backing chain
        names.add(name)
        entries.append(dict(
            name=name,
            path=record.get(prefix + "path"),
            allocation=int(record.get(prefix + "allocation", 0)),
            physical=int(record.get(prefix + "physical", 0)),
            threshold=record.get(prefix + "threshold"),
            index=record.get(prefix + "backingIndex"),
        ))
    return entries


def target_of(dev):
    """'vdb[4]' -> 'vdb'."""
    return (dev or "").split("[", 1)[0]


class Watch(object):
    """What the agent knows of one thin disk in one running domain."""

    def __init__(self, uuid, domain, target, disk_key):
        self.uuid = uuid
        self.domain = domain
        self.target = target
        self.disk_key = disk_key
        self.index = None
        self.allocation = 0
        self.threshold = None       # as libvirt reported it (None: not armed)
        self.armed = None           # the threshold this agent armed last
        self.armed_size = None      # the LV size it was computed for
        self.estimator = WriteRateEstimator()
        self.retry_at = None
        self.backoff = 0.0
        self.cap_reported = False
        self.extending = False      # an extend of it runs on its VG's worker
        self.missed = False         # something wanted it while it did
        self.kernel_size = None     # the LV's device here has grown to this while its extend runs
        self.extend_done = None     # the running extend's threading.Event, set once its outcome is in
        self.space_watch = None     # the extend_done a space watch runs for (one per extend)

    @property
    def dev(self):
        return "%s[%s]" % (self.target, self.index) if self.index is not None else self.target

    @property
    def rate(self):
        return self.estimator.rate

    @property
    def planning_rate(self):
        """The rate the policy plans with: None until one is measured (the policy then assumes the
        configured initial_write_rate: a new attachment may be written at once, at full speed)."""
        return self.estimator.rate if self.estimator.measured else None


class Agent(object):
    """``start()`` connects, ``run(stop_event)`` works until the event is set, ``close()`` cleans up."""

    def __init__(self, config, storage, host=None, metrics=None, notifier=None, log=None, libvirt_module=None,
                 clock=time.monotonic, own_event_loop=True, vg_workers=True,
                 stop_timeout=LVM_COMMAND_TIMEOUT + HOST_LOCK_TIMEOUT):
        self.config = config
        self.storage = storage
        self.host = host
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier(environ={})
        self.log = log or logging.getLogger("sltv-agent")
        self.libvirt = libvirt_module or import_libvirt()
        self.clock = clock
        self.events = queue.Queue()
        self.conn = None
        self.watches = {}           # (uuid, target) -> Watch
        self.disks = {}             # disk key -> ThinDisk
        self.paths = {}             # device path -> disk key
        self.catalog_at = None
        self.unknown_paths = set()
        self.indexes = {}           # uuid -> {target: source index}, from the live XML
        self.domains = {}           # uuid -> virDomain given by an event (saves a lookup per event)
        self.enospc = {}            # uuid -> set of targets (or source paths) an enospc event named
        self.paused = {}            # uuid -> reason, while a domain is paused for an I/O error
        self.history = collections.deque(maxlen=HISTORY)
        self.libvirt_calls = 0
        self.sweep_calls = []       # libvirt calls of each sweep (benchmark)
        self.policies = {}
        self.refused = set()        # (uuid, disk key) the ownership rule refused (logged once)
        self.reclaim_failing = set()  # uuids whose claims could not be moved here yet (logged once)
        self.reclaiming = set()     # uuids whose reclaim runs on the claims worker
        self._closed = threading.Event()
        # A process has one libvirt event loop: a caller that runs its own passes own_event_loop=False.
        self._loop = None if own_event_loop else False
        # One worker per VG runs the extends (vg_workers=False: inline, in the caller's thread).
        self.workers = VgWorkers(self.log) if vg_workers else None
        # How long close() waits for an extend that runs: one lvm command and its wait for the host's
        # lvm lock (the runner's bounds; agent_main passes the agent's).
        self.stop_timeout = stop_timeout
        self._reconnect_delay = RECONNECT_BACKOFF[0]
        self._next_connect = 0.0
        self.ready = False

    # -- libvirt connection ------------------------------------------------------------------------
    def _call(self, func, *args):
        self.libvirt_calls += 1
        return func(*args)

    def start(self):
        """Start the event loop and connect; raises LibvirtError when libvirt cannot be reached."""
        if self._loop is None:
            self.libvirt.virEventRegisterDefaultImpl()
            self._loop = threading.Thread(target=self._run_event_loop, name="libvirt-events")
            self._loop.daemon = True
            self._loop.start()
        self.connect()

    def _run_event_loop(self):
        while True:
            self.libvirt.virEventRunDefaultImpl()

    def connect(self):
        try:
            conn = self.libvirt.open(self.config.libvirt_uri)
        except self.libvirt.libvirtError as exc:
            raise LibvirtError("cannot connect to libvirt at %s: %s (is libvirtd running? systemctl status libvirtd)"
                               % (self.config.libvirt_uri, exc))
        try:
            conn.setKeepAlive(5, 3)
            self._closed.clear()
            conn.registerCloseCallback(self._on_close, None)
            conn.domainEventRegisterAny(None, EVENT_BLOCK_THRESHOLD, self._on_threshold, None)
            conn.domainEventRegisterAny(None, EVENT_IO_ERROR_REASON, self._on_io_error, None)
            conn.domainEventRegisterAny(None, EVENT_LIFECYCLE, self._on_lifecycle, None)
            conn.domainEventRegisterAny(None, EVENT_DEVICE_ADDED, self._on_device_added, None)
        except self.libvirt.libvirtError as exc:
            try:
                conn.close()
            except self.libvirt.libvirtError:
                pass
            raise LibvirtError("cannot register for libvirt events at %s: %s" % (self.config.libvirt_uri, exc))
        self.conn = conn
        self.indexes = {}
        self.domains = {}
        self.metrics.libvirt_connected.set(1)
        self._reconnect_delay = RECONNECT_BACKOFF[0]

    def _on_close(self, conn, reason, opaque):
        self._closed.set()
        self.events.put(Event("closed", None, None, None, reason, self.clock()))

    def _on_threshold(self, conn, dom, dev, path, threshold, excess, opaque):
        self.domains[dom.UUIDString()] = dom
        self.events.put(Event("threshold", dom.UUIDString(), dev, path, threshold, self.clock(), excess))

    def _on_io_error(self, conn, dom, path, dev, action, reason, opaque):
        self.domains[dom.UUIDString()] = dom
        self.events.put(Event("io_error", dom.UUIDString(), dev, path, reason, self.clock()))

    def _on_lifecycle(self, conn, dom, event, detail, opaque):
        if event in (LIFECYCLE_STARTED, LIFECYCLE_SUSPENDED, LIFECYCLE_RESUMED):
            self.events.put(Event("lifecycle", dom.UUIDString(), None, None, (event, detail), self.clock()))

    def _on_device_added(self, conn, dom, dev_alias, opaque):
        self.domains[dom.UUIDString()] = dom
        self.events.put(Event("device_added", dom.UUIDString(), dev_alias, None, None, self.clock()))

    def _disconnected(self, why):
        if self.conn is not None:
            self.log.warning("libvirt connection to %s lost (%s): reconnecting", self.config.libvirt_uri, why)
            self.metrics.errors.inc(kind="libvirt")
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except  # the connection is dead already
                pass
        self.conn = None
        self.metrics.libvirt_connected.set(0)

    def _ensure_connected(self):
        if self.conn is not None and not self._closed.is_set():
            return True
        if self.conn is not None:
            self._disconnected("libvirtd closed the connection")
        now = self.clock()
        if now < self._next_connect:
            return False
        try:
            self.connect()
        except LibvirtError as exc:
            self._next_connect = now + self._reconnect_delay
            self.log.warning("%s; next try in %.1fs", exc, self._reconnect_delay)
            self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_BACKOFF[1])
            return False
        self.metrics.reconnects.inc()
        self.log.info("connected to libvirt at %s again: re-arming every thin disk", self.config.libvirt_uri)
        return True

    # -- thin disk catalog -------------------------------------------------------------------------
    def _load_catalog(self):
        disks = self.storage.thin_disks()
        self.disks = dict((d.key, d) for d in disks)
        self.paths = {}
        for disk in disks:
            for path in disk.paths:
                self.paths[path] = disk.key
        self.catalog_at = self.clock()
        self.unknown_paths = set()

    def _ours(self, path):
        """True for a path under one of the agent's VGs (a disk the catalog may not know yet)."""
        for vg in self.config.vgs:
            if path.startswith("/dev/%s/" % vg) or path.startswith("/dev/mapper/%s-" % vg.replace("-", "--")):
                return True
        return False

    def _refresh_catalog_if_needed(self, paths, by_age=True):
        # The age-based reload (an lvm fullreport) belongs to the sweep, never to an extend's path;
        # while a VG is missing, every sweep looks for it (it may come back: a LUN, a vgimport).
        stale = self.catalog_at is None or (by_age and (self.clock() - self.catalog_at > CATALOG_MAX_AGE
                                                        or self.storage.missing_vgs))
        new = [p for p in paths if p and p not in self.paths and p not in self.unknown_paths and self._ours(p)]
        if stale or new:
            self._load_catalog()
            self.unknown_paths.update(p for p in new if p not in self.paths)

    def _policy(self, disk):
        if disk.extent_size not in self.policies:
            self.policies[disk.extent_size] = self.config.policy(disk.extent_size)
        return self.policies[disk.extent_size]

    # -- the worker --------------------------------------------------------------------------------
    def run(self, stop):
        """Work until ``stop`` (a threading.Event) is set."""
        next_sweep = self.clock()
        watchdog = self.notifier.watchdog_interval
        while not stop.is_set():
            now = self.clock()
            if not self._ensure_connected():
                self._wait(stop, min(1.0, max(self._next_connect - now, 0.05)))
                continue
            if now >= next_sweep:
                self._guarded(self.sweep)
                next_sweep += self.config.sweep_interval
                if next_sweep <= self.clock():
                    next_sweep = self.clock() + self.config.sweep_interval  # fell behind: no burst
                if not self.ready:
                    self.ready = True
                    self.notifier.ready("watching %d thin disks" % len(self.watches))
                    self.log.info("ready: watching %d thin disks of running domains", len(self.watches))
            self._guarded(self._retry_due)
            wait = next_sweep - self.clock()
            if watchdog:
                wait = min(wait, watchdog)
                self.notifier.watchdog()
            batch = self._next_events(max(wait, 0.0), stop)
            if batch:
                self._guarded(self.handle, batch)

    def _guarded(self, work, *args):
        """A surprise in one turn is logged and counted; the agent keeps watching the other disks."""
        try:
            work(*args)
        except Exception:  # pylint: disable=broad-except  # a daemon that dies lets guests pause
            self.metrics.errors.inc(kind="other")
            self.log.exception("unexpected error in %s (the agent goes on)", getattr(work, "__name__", "work"))

    def _feed_watchdog(self):
        if self.notifier.watchdog_interval:
            self.notifier.watchdog()

    def _wait(self, stop, seconds):
        self._feed_watchdog()
        stop.wait(seconds)

    def _next_events(self, timeout, stop):
        try:
            first = self.events.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return []
        batch = [first]
        while True:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                return batch

    def handle(self, batch):
        """Process queued events: one statistics read and one decision per domain."""
        by_domain = collections.OrderedDict()
        for event in batch:
            if event.kind == "extended":
                self._extended(event)  # first: the decisions below see the new size
            elif event.kind == "reclaimed":
                self._reclaimed(event.uuid, *event.detail)
            elif event.kind == "space":
                self._space(event)
        for event in batch:
            if event.kind in ("closed", "extended", "reclaimed", "space"):
                continue  # _ensure_connected sees a close
            self.metrics.events.inc(type={"threshold": "block_threshold", "io_error": "io_error",
                                          "device_added": "device_added"}.get(event.kind, "lifecycle"))
            if event.kind == "io_error":
                event = event._replace(dev=self._io_error_target(event))
            if event.kind == "io_error" and event.detail == "enospc":
                # the target when a watch resolves it, else the source path (a disk not watched yet:
                # the event names only its alias, which no later lookup knows)
                dev = target_of(event.dev)
                known = (event.uuid, dev) in self.watches
                self.enospc.setdefault(event.uuid, set()).add(dev if known or not event.path else event.path)
            if event.kind == "lifecycle" and event.detail and event.detail[0] == LIFECYCLE_STARTED:
                self.catalog_at = None  # a domain came (a start, an incoming migration): claims may move here
            if event.kind == "device_added":
                # A hot attach: the attach wrote the disk's claim (read it again) and the domain's
                # source indexes changed. Armed now, from this domain's fresh statistics.
                self.catalog_at = None
                self.indexes.pop(event.uuid, None)
            by_domain.setdefault(event.uuid, []).append(event)
        for uuid, events in by_domain.items():
            self._process_uuid(uuid, events)

    def _io_error_target(self, event):
        """IO_ERROR events name the device alias (virtio-disk1) and the source path: the target, by path."""
        key = self.paths.get(event.path)
        for (uuid, target), watch in self.watches.items():
            if uuid == event.uuid and key is not None and watch.disk_key == key:
                return target
        return event.dev

    def _process_uuid(self, uuid, events):
        if self.conn is None:
            return
        record = self._record_from_events(uuid, events)
        if record is not None:
            self._process(self.domains[uuid], record, events)
            return
        try:
            dom = self.domains.get(uuid) or self._call(self.conn.lookupByUUIDString, uuid)
            records = self._call(self.conn.domainListGetStats, [dom], STATS_BLOCK | STATS_STATE, STATS_BACKING)
        except self.libvirt.libvirtError as exc:
            self.domains.pop(uuid, None)
            if self._closed.is_set() or not self._alive():
                self._disconnected(exc)
            return  # the domain is gone (stopped, migrated away): nothing to grow here
        try:
            self._refresh_catalog_if_needed([b["path"] for _dom, record in records for b in block_entries(record)],
                                            by_age=False)
        except SltvError as exc:
            self.metrics.errors.inc(kind="lvm")
            self.log.error("cannot read the thin disks: %s", exc)
        for record_dom, record in records:
            self._process(record_dom, record, events)

    def _record_from_events(self, uuid, events):
        """A stats record built from threshold events alone, or None when a stats read is needed.

        An event for the threshold armed now says where the guest writes (threshold + excess):
        that is all the decision needs, and it saves a stats read (a QEMU round trip) on the
        extend's path. Anything else (another event, a domain seen paused, an unknown disk, an
        old threshold) goes the safe way, through fresh statistics."""
        if uuid not in self.domains or uuid in self.paused or self.enospc.get(uuid):
            return None
        record = {"state.state": STATE_RUNNING}
        targets = []
        for event in events:
            if event.kind != "threshold" or event.excess is None:
                return None
            target = target_of(event.dev)
            watch = self.watches.get((uuid, target))
            if (watch is None or watch.armed is None or event.detail != watch.armed
                    or self.paths.get(event.path) != watch.disk_key or watch.disk_key not in self.disks):
                return None
            if target in targets:
                continue  # vdb and vdb[4]: one entry
            prefix = "block.%d." % len(targets)
            targets.append(target)
            record.update({prefix + "name": target, prefix + "path": event.path,
                           prefix + "allocation": int(event.detail) + int(event.excess),
                           prefix + "threshold": 0})  # a threshold that fired is disarmed
            if watch.index is not None:
                record[prefix + "backingIndex"] = watch.index
        record["block.count"] = len(targets)
        return record

    def _alive(self):
        try:
            return self.conn is not None and self.conn.isAlive() == 1
        except self.libvirt.libvirtError:
            return False

    def sweep(self):
        """One getAllDomainStats call for every running domain; extend, arm, resume what needs it."""
        self._feed_watchdog()
        started = self.clock()
        calls = self.libvirt_calls
        try:
            records = self._call(self.conn.getAllDomainStats, STATS_BLOCK | STATS_STATE, STATS_ACTIVE | STATS_BACKING)
        except self.libvirt.libvirtError as exc:
            self._disconnected(exc)
            return
        paths = [b["path"] for _dom, record in records for b in block_entries(record)]
        try:
            self._refresh_catalog_if_needed(paths)
        except SltvError as exc:
            self.metrics.errors.inc(kind="lvm")
            self.log.error("cannot read the thin disks: %s", exc)
        seen = set()
        for dom, record in records:
            seen |= self._process(dom, record, [Event("sweep", None, None, None, None, started)])
        for key in [k for k in self.watches if k not in seen]:
            del self.watches[key]  # domain stopped or migrated away, or disk detached
        self.paused = dict((u, r) for u, r in self.paused.items() if any(k[0] == u for k in seen))
        self._publish_gauges()
        try:
            refreshed = self.storage.after_sweep(list(self.disks.values()))
            if refreshed:
                self.metrics.refreshes.inc(len(refreshed))
        except SltvError as exc:
            self.metrics.errors.inc(kind="lvm")
            self.log.error("refreshing LVs another host extended failed: %s", exc)
        register = getattr(self.storage, "register", None)
        if register is not None:
            register(len(self.watches))
        self.metrics.etcd_up.set(1 if self.storage.cluster_up else 0)
        for vg in self.config.vgs:
            self.metrics.vg_up.set(0 if vg in self.storage.missing_vgs else 1, vg=vg)
        for vg, free in getattr(self.storage, "metadata_free", {}).items():
            self.metrics.vg_metadata_free.set(free, vg=vg)
        self.metrics.sweeps.inc()
        self.metrics.sweep_duration.observe(self.clock() - started)
        self.sweep_calls.append(self.libvirt_calls - calls)
        del self.sweep_calls[:-100]

    def _retry_due(self):
        now = self.clock()
        due = sorted(set(w.uuid for w in self.watches.values() if w.retry_at is not None and w.retry_at <= now))
        for uuid in due:
            self._process_uuid(uuid, [Event("retry", uuid, None, None, None, now)])

    # -- decisions for one domain ------------------------------------------------------------------
    def _process(self, dom, record, events):
        """Decide for every thin disk of one domain; return the watch keys seen."""
        uuid = dom.UUIDString()
        now = self.clock()
        seen = set()
        paused_for_io = record.get("state.state") == STATE_PAUSED and record.get("state.reason") == PAUSED_IOERROR
        no_space = self._no_space_targets(dom, uuid, record) if paused_for_io else set()
        grown = {}
        for entry in block_entries(record):
            key = self.paths.get(entry["path"])
            disk = self.disks.get(key) if key else None
            if disk is None or not self._may_extend(dom, uuid, disk):
                continue
            watch = self._watch(dom, uuid, entry, key)
            seen.add((uuid, watch.target))
            watch.allocation = entry["allocation"]
            watch.threshold = entry["threshold"]
            watch.estimator.update(now, entry["allocation"])
            trigger, at = self._trigger(watch, events, now)
            urgent = watch.target in no_space
            if urgent:
                trigger = "enospc"
            if watch.retry_at is not None and now < watch.retry_at and not urgent and trigger != "retry":
                continue
            if watch.extending:
                watch.missed = True  # looked at again with fresh statistics once that extend is done
                if urgent:
                    self._start_space_watch(watch, disk)  # paused while the extend runs
                continue
            if self._wants_extend(watch, disk, events, urgent):
                grown[watch.target] = self._extend(dom, watch, disk, trigger, at)
            else:
                watch.retry_at = None
                self._arm(dom, watch, disk)
        if paused_for_io:
            self._maybe_resume(dom, uuid, no_space, grown)
        elif uuid in self.paused:
            del self.paused[uuid]
        if any(e.kind in ("sweep", "lifecycle") for e in events):
            self._reclaim(dom, uuid, record)  # never on an extend's path (it may wait for the lock)
        return seen

    def _may_extend(self, dom, uuid, disk):
        """The ownership rule: a disk that runs here in a domain its claims do not name is left alone."""
        try:
            O.decide(O.AGENT_EXTEND, "disk %s" % disk.key, getattr(disk, "claims", []), self._host(), uuid,
                     dom.name(), running_here=True)
            self.refused.discard((uuid, disk.key))
            return True
        except SltvError as exc:
            if (uuid, disk.key) not in self.refused:
                self.refused.add((uuid, disk.key))
                self.metrics.errors.inc(kind="ownership")
                self.log.error("not growing %s: %s", disk.key, exc)
            return False

    def _host(self):
        return self.host or getattr(self.storage, "host", "") or ""

    def _reclaim(self, dom, uuid, record):
        """After a live migration the claim still names the source host: move it here (under the VG
        lock, decided again on a fresh read). A failure is logged and retried at the next sweep; until
        then other hosts refuse to act on the disk as if it ran on the source (the hook refuses to start
        it there, modules name the source)."""
        if getattr(self.storage, "reclaim", None) is None:
            return
        paths = [entry["path"] for entry in block_entries(record)]
        name = dom.name()
        if self.workers is None:
            self._reclaimed(uuid, name, self._run_reclaim(uuid, name, paths))
            return
        # Off this thread: it may wait for a VG lock (etcd down), which must not hold up events.
        if uuid in self.reclaiming:
            return  # the last one is still running (or waiting for its lock)
        self.reclaiming.add(uuid)
        self.workers.submit(CLAIMS_WORKER, lambda: self.events.put(
            Event("reclaimed", uuid, None, None, (name, self._run_reclaim(uuid, name, paths)), self.clock())),
            what="the claim move of domain %s" % name)

    def _run_reclaim(self, uuid, name, paths):
        """storage.reclaim; its failure (an SltvError) is returned, so that it can cross threads."""
        try:
            return self.storage.reclaim(uuid, name, paths)
        except SltvError as exc:
            return exc

    def _reclaimed(self, uuid, name, outcome):
        self.reclaiming.discard(uuid)
        if isinstance(outcome, SltvError):
            self.metrics.errors.inc(kind="reclaim")
            if uuid not in self.reclaim_failing:
                self.log.error("moving the claims of domain %s to this host failed (retried at every sweep): %s",
                               name, outcome)
            self.reclaim_failing.add(uuid)
            return
        self.reclaim_failing.discard(uuid)
        for key in outcome:
            self.log.info("claim of %s moved to this host for domain %s (live migration)", key, name)

    def _trigger(self, watch, events, now):
        for event in events:
            if event.kind == "threshold" and target_of(event.dev) == watch.target:
                return "threshold", event.at
            if event.kind == "io_error" and target_of(event.dev) == watch.target:
                return "enospc", event.at
            if event.kind == "device_added":
                return "attach", event.at
        return ("retry" if any(e.kind == "retry" for e in events) else "sweep"), (events[0].at if events else now)

    def _wants_extend(self, watch, disk, events, urgent):
        policy = self._policy(disk)
        if not policy.can_grow(disk.size, disk.cap):
            return urgent or watch.allocation >= disk.size - policy.headroom(disk.size, watch.planning_rate)  # _extend reports the cap
        if urgent and watch.allocation < disk.size - policy.headroom(disk.size, watch.planning_rate):
            return False  # diskErrors still says NO_SPACE (libvirt keeps it), but the disk has room: resume only
        if urgent or watch.allocation >= disk.size:
            return True
        for event in events:
            # A threshold event is trusted when it fired for the threshold armed now. The duplicate
            # (vdb and vdb[N]) or a late one finds a newer threshold armed: the policy decides.
            if (event.kind == "threshold" and target_of(event.dev) == watch.target
                    and watch.armed is not None and event.detail == watch.armed):
                return policy.can_grow(disk.size, disk.cap)
        return policy.needs_extend(disk.size, disk.cap, watch.allocation, watch.planning_rate)

    def _watch(self, dom, uuid, entry, key):
        target = entry["name"]
        watch = self.watches.get((uuid, target))
        if watch is None or watch.disk_key != key:
            watch = Watch(uuid, dom.name(), target, key)
            self.watches[(uuid, target)] = watch
        if entry["index"] is not None:
            watch.index = entry["index"]
        elif watch.index is None:
            watch.index = self._source_index(dom, uuid, target)
        return watch

    def _source_index(self, dom, uuid, target):
        if uuid not in self.indexes or target not in self.indexes[uuid]:
            try:
                xml = self._call(dom.XMLDesc, 0)
            except self.libvirt.libvirtError:
                return None
            self.indexes[uuid] = dict((d.target, d.index) for d in parse_disks(xml) if d.target)
        return self.indexes[uuid].get(target)

    def _no_space_targets(self, dom, uuid, record):
        """Targets paused for ENOSPC; records the pause the first time it is seen for sure."""
        try:
            errors = self._call(dom.diskErrors)
            read = True
        except self.libvirt.libvirtError:
            errors, read = {}, False
        targets = set(t for t, code in errors.items() if code == DISK_ERROR_NO_SPACE)
        by_path = dict((entry["path"], entry["name"]) for entry in block_entries(record))
        names = set(by_path.values())
        for named in self.enospc.get(uuid, set()):
            # a source path (or an alias) from an event: the target the statistics give it now
            if named in names:
                targets.add(named)
            elif named in by_path:
                targets.add(by_path[named])
        others = set(t for t, code in errors.items() if code != DISK_ERROR_NO_SPACE and code != 0)
        reason = "enospc" if targets and not others else "other"
        if not read and not targets:
            return set()  # diskErrors failed and no event said ENOSPC: decide at the next look, record nothing
        if uuid not in self.paused:
            self.paused[uuid] = reason
            self.metrics.pauses.inc(reason=reason)
            self.log.warning("domain %s paused for an I/O error (%s): %s", dom.name(),
                             ", ".join("%s=%s" % item for item in sorted(errors.items())) or "no disk error listed",
                             "extending and resuming" if reason == "enospc" else "not ours to resume")
        if others:
            return set()  # paused for a reason the agent cannot fix: never resume it
        return targets

    def _maybe_resume(self, dom, uuid, no_space, grown):
        if not no_space or self.paused.get(uuid) != "enospc":
            return
        for target in no_space:
            watch = self.watches.get((uuid, target))
            disk = self.disks.get(watch.disk_key) if watch else None
            if disk is None:
                self.log.warning("domain %s: ENOSPC on %s, which is not an sltv thin disk of VGs %s: not resumed",
                                 dom.name(), target, ", ".join(self.config.vgs))
                return
            if grown.get(target) is False or max(disk.size, watch.kernel_size or 0) <= watch.allocation:
                return  # still no room: stays paused, retried with back-off
        try:
            self._call(dom.resume)
        except self.libvirt.libvirtError as exc:
            self.metrics.errors.inc(kind="libvirt")
            self.log.error("domain %s: resume after the extend failed: %s", dom.name(), exc)
            return
        self.metrics.resumes.inc()
        self.paused.pop(uuid, None)
        self.enospc.pop(uuid, None)
        self.log.info("domain %s resumed after ENOSPC on %s", dom.name(), ", ".join(sorted(no_space)))

    # -- extend and arm ----------------------------------------------------------------------------
    def _extend(self, dom, watch, disk, trigger, detected_at):
        policy = self._policy(disk)
        target = min(policy.next_size(max(disk.size, watch.allocation), disk.cap, watch.planning_rate),
                     disk.cap // disk.extent_size * disk.extent_size)
        if target <= disk.size:
            if not watch.cap_reported:
                watch.cap_reported = True
                self.metrics.extend_failures.inc(vg=disk.vg, reason="cap")
                self.log.warning("%s in domain %s reached its cap %s: not extended further (grow its virtual "
                                 "size with sltv.core.sltv_extend)", disk.key, watch.domain, human(disk.cap))
            return False
        started = self.clock()
        timings = dict(detect=started - detected_at)
        # An extend may wait up to lock_timeout (etcd down): feed systemd's watchdog before each one,
        # so that a burst of them between two loop turns never gets the agent killed.
        self._feed_watchdog()
        # QEMU takes any threshold, whatever the device's size: arm the one for the new size while
        # lvextend runs, so that re-arming adds nothing to the extend's latency.
        arming = threading.Thread(target=self._arm, args=(dom, watch, disk), kwargs=dict(force=True, size=target),
                                  name="arm-ahead")
        arming.start()
        done = watch.extend_done = threading.Event()  # set once the extend's outcome is in
        job = ExtendJob(dom, watch, disk, target, trigger, detected_at, timings, arming, done)
        if self.paused.get(watch.uuid) == "enospc":
            self._start_space_watch(watch, disk)
        if self.workers is None:
            return self._finish_extend(job, self._run_extend(job))
        # On the VG's worker: its lock wait and lvm commands never hold up this thread (events,
        # sweeps, other VGs). The outcome comes back as an event; until then the disk is left alone.
        watch.extending = True
        self.workers.submit(disk.vg, lambda: self.events.put(
            Event("extended", watch.uuid, None, None, (job, self._run_extend(job)), self.clock())),
            what="the extend of %s (domain %s)" % (disk.key, watch.domain))
        return None

    def _run_extend(self, job):
        """storage.extend; its failure is returned (an ExtendFailed), so that it can cross threads."""
        try:
            return self.storage.extend(job.disk, job.target, job.timings)
        except ExtendFailed as exc:
            return exc
        except Exception as exc:  # pylint: disable=broad-except  # e.g. lvm's verify read failed: retried too
            return ExtendFailed("%s: %s" % (job.disk.key, exc), "other")
        finally:
            job.done.set()

    def _start_space_watch(self, watch, disk):
        """The guest waits for the running extend: resume it once the device has grown, not when
        lvextend returns. lvm commits the new metadata before it resumes the device with the new
        size; what lvextend does after that (the backup file, waiting for udev) took 2-4 s of a
        4.6 s extend in the TCG test bed."""
        done = watch.extend_done
        if self.workers is None or done is None or done.is_set() or watch.space_watch is done:
            return  # inline extends (tests) return before anyone could look; one watch per extend
        watch.space_watch = done
        threading.Thread(target=self._watch_for_space, args=(watch, disk, disk.size, done), name="space-watch").start()

    def _watch_for_space(self, watch, disk, old_size, done):
        """While an extend runs for a guest paused on ENOSPC: tell the main thread once the disk's
        device here is bigger than ``old_size``."""
        while not done.wait(SPACE_POLL_SECONDS):
            try:
                size = self.storage.kernel_size(disk)
            except (OSError, IOError):
                size = None
            if size is not None and size > old_size:
                self.events.put(Event("space", watch.uuid, watch.target, None, size, self.clock()))
                return

    def _space(self, event):
        """The device of a disk being extended has grown: resume its domain if that was all it waited for."""
        watch = self.watches.get((event.uuid, event.dev))
        if watch is None or not watch.extending or self.paused.get(event.uuid) != "enospc":
            return
        watch.kernel_size = event.detail
        self._process_uuid(event.uuid, [Event("retry", event.uuid, None, None, None, self.clock())])

    def _finish_extend(self, job, outcome):
        """Account for an extend's outcome (new size or ExtendFailed) and re-arm; True when grown."""
        dom, watch, disk, timings, trigger = job.dom, job.watch, job.disk, job.timings, job.trigger
        watch.extending = False
        watch.kernel_size = None
        if isinstance(outcome, ExtendFailed):
            exc = outcome
            job.arming.join()
            self._arm(dom, watch, disk, force=True)  # back to the threshold of the size the LV still has
            watch.backoff = min(max(watch.backoff * 2, 0.5), LOCK_BACKOFF if exc.reason in LOCK_REASONS else MAX_BACKOFF)
            watch.retry_at = self.clock() + watch.backoff
            self.metrics.extend_failures.inc(vg=disk.vg, reason=exc.reason)
            self.metrics.errors.inc(kind="lock" if exc.reason in LOCK_REASONS else "lvm")
            if "lock" in timings:
                self.metrics.lock_wait.observe(timings["lock"])
            self.log.error("extend of %s (domain %s, %s) failed: %s; retry in %.1fs", disk.key, watch.domain,
                           trigger, exc, watch.backoff)
            return False
        new_size = outcome
        old_size = disk.size
        disk.size = new_size
        current = self.disks.get(disk.key)
        if current is not None and current is not disk:  # the catalog was read again meanwhile
            current.size = max(current.size, new_size)
        watch.backoff = 0.0
        watch.retry_at = None
        watch.cap_reported = False
        rearm_started = self.clock()
        job.arming.join()
        self._arm(dom, watch, disk)  # only if the LV did not end at the target (another host grew it more)
        timings["rearm"] = self.clock() - rearm_started
        timings["total"] = self.clock() - job.detected_at
        for phase, seconds in timings.items():
            self.metrics.extend_duration.observe(seconds, phase=phase)
        self.metrics.lock_wait.observe(timings.get("lock", 0.0))
        self.metrics.extends.inc(vg=disk.vg, trigger=trigger)
        record = dict(disk=disk.key, domain=watch.domain, trigger=trigger, old_size=old_size, new_size=new_size,
                      allocation=watch.allocation, rate=watch.rate, **timings)
        self.history.append(record)
        self.log.info("extended %s domain=%s trigger=%s %s -> %s allocation=%s rate=%s/s %s", disk.key, watch.domain,
                      trigger, human(old_size), human(new_size), human(watch.allocation), human(int(watch.rate)),
                      " ".join("%s=%.3fs" % (k, timings[k]) for k in EXTEND_PHASES if k in timings))
        self.storage.published(disk, new_size, timings["total"])
        return True

    def _extended(self, event):
        """An extend done on a VG worker: account for it, then look at the domain again at once when it
        waits for it (paused on ENOSPC) or wrote on while it ran (an event or sweep found it busy)."""
        job, outcome = event.detail
        self._finish_extend(job, outcome)
        watch = job.watch
        missed, watch.missed = watch.missed, False
        if (missed or watch.uuid in self.paused or self.enospc.get(watch.uuid)) and watch.retry_at is None:
            self._process_uuid(watch.uuid, [Event("retry", watch.uuid, None, None, None, self.clock())])

    def _arm(self, dom, watch, disk, force=False, size=None):
        """Arm the threshold for ``size`` (default: the LV's size now)."""
        size = disk.size if size is None else size
        policy = self._policy(disk)
        wanted = policy.threshold(size, disk.cap, watch.planning_rate)
        if wanted is None:
            return  # at the cap: nothing left to grow, no event wanted
        current = watch.threshold
        if not force and current is not None and watch.armed_size == size:
            # Re-arm only for a real change of the write rate: every call is a libvirt round trip.
            if abs(int(current) - wanted) <= max(disk.extent_size, policy.headroom(size, watch.planning_rate) // 4):
                return
        try:
            self._call(dom.setBlockThreshold, watch.dev, wanted)
        except self.libvirt.libvirtError as exc:
            self.metrics.errors.inc(kind="libvirt")
            self.log.warning("domain %s: cannot arm the block threshold of %s (%s): the sweep will retry",
                             watch.domain, watch.dev, exc)
            return
        watch.threshold = wanted
        watch.armed = wanted
        watch.armed_size = size

    def _publish_gauges(self):
        keys = []
        for watch in self.watches.values():
            disk = self.disks.get(watch.disk_key)
            if disk is None:
                continue
            labels = dict(vg=disk.vg, disk=disk.name, domain=watch.domain)
            keys.append((disk.vg, disk.name, watch.domain))
            self.metrics.physical.set(disk.size, **labels)
            self.metrics.allocation.set(watch.allocation, **labels)
            self.metrics.cap.set(disk.cap, **labels)
            self.metrics.headroom.set(disk.size - watch.allocation, **labels)
            self.metrics.write_rate.set(round(watch.rate), **labels)
        for gauge in (self.metrics.physical, self.metrics.allocation, self.metrics.cap, self.metrics.headroom,
                      self.metrics.write_rate):
            gauge.keep_only(keys)
        self.metrics.disks_watched.set(len(self.watches))

    def close(self):
        # No lvm write starts from now on, and the running ones end before the process exits: systemd
        # kills what is left in the unit once the agent is gone (a killed lvextend may leave its LV
        # suspended). What is dropped is derived again at the next start.
        self.storage.stopping()
        if self.workers is not None:
            self.workers.close(self.stop_timeout)
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except  # closing at exit
                pass
            self.conn = None
        self.storage.close()

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's decisions against a fake libvirt (module, connection, domains) and a fake Storage.

The fake connection keeps the state a real libvirtd would (allocation, armed thresholds, paused
state, disk errors), answers getAllDomainStats with the flags' domain selection, and records every
call, so that the tests count libvirt round trips. The real libvirtd runs in tests/integration.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import threading
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent import thin_agent
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed, Storage, ThinDisk
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, thin_cap
from ansible_collections.sltv.core.plugins.module_utils.model.ownership import Claim
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import Agent, Event, block_entries, target_of

EXTENT = 4 * MIB
UUID1 = "11111111-1111-4111-8111-111111111111"
UUID2 = "22222222-2222-4222-8222-222222222222"
UUID3 = "33333333-3333-4333-8333-333333333333"
RUNNING, PAUSED = 1, 3
PAUSED_USER, PAUSED_IOERROR = 1, 5
DISK_ERROR_UNSPEC, DISK_ERROR_NO_SPACE = 1, 2
# libvirt's virConnectGetAllDomainStatsFlags
ALL_STATS_ACTIVE, ALL_STATS_RUNNING, ALL_STATS_PAUSED = 0x1, 0x10, 0x20
LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR = 3, 2


# -- fakes ----------------------------------------------------------------------------------------

class FakeLibvirtError(Exception):
    pass


class FakeDisk(object):
    def __init__(self, path, allocation=0, physical=0, index=4, stats_index=True, alias=None):
        self.path = path
        self.allocation = allocation
        self.physical = physical
        self.index = index
        self.stats_index = stats_index  # False: backingIndex missing from the stats (index from the XML)
        self.threshold = None
        self.alias = alias
        self.backing = None  # path of a backing image (listed after the top with BACKING)


class FakeDomain(object):
    def __init__(self, uuid, name):
        self.uuid = uuid
        self._name = name
        self.state = RUNNING
        self.reason = 1
        self.disks = collections.OrderedDict()
        self.disk_errors = {}
        self.calls = []
        self.threshold_error = None

    def add_disk(self, target, path, **kwargs):
        kwargs.setdefault("alias", "virtio-disk%d" % (len(self.disks) + 1))
        self.disks[target] = FakeDisk(path, **kwargs)
        return self.disks[target]

    def UUIDString(self):  # noqa: N802 (libvirt's name)
        return self.uuid

    def name(self):
        return self._name

    def XMLDesc(self, flags=0):  # noqa: N802
        self.calls.append(("XMLDesc",))
        disks = "".join("<disk type='block' device='disk'><source dev='%s' index='%s'/><target dev='%s' bus='virtio'/>"
                        "<alias name='%s'/></disk>" % (d.path, d.index, target, d.alias)
                        for target, d in self.disks.items())
        return "<domain><name>%s</name><uuid>%s</uuid><devices>%s</devices></domain>" % (self._name, self.uuid, disks)

    def setBlockThreshold(self, dev, threshold, flags=0):  # noqa: N802
        self.calls.append(("setBlockThreshold", dev, threshold))
        if self.threshold_error:
            raise FakeLibvirtError(self.threshold_error)
        target, _sep, index = dev.partition("[")
        disk = self.disks.get(target)
        if disk is None or (index and index.rstrip("]") != str(disk.index)):
            raise FakeLibvirtError("invalid argument: disk '%s' not found in domain" % dev)
        disk.threshold = threshold

    def diskErrors(self, flags=0):  # noqa: N802
        self.calls.append(("diskErrors",))
        return dict(self.disk_errors)

    def resume(self):
        self.calls.append(("resume",))
        if self.state != PAUSED:
            raise FakeLibvirtError("Requested operation is not valid: domain is not paused")
        self.state, self.reason = RUNNING, 1

    def names_called(self, name):
        return [c for c in self.calls if c[0] == name]

    def record(self):
        rec = {"state.state": self.state, "state.reason": self.reason}
        num = 0
        for target, disk in self.disks.items():
            prefix = "block.%d." % num
            rec[prefix + "name"] = target
            rec[prefix + "path"] = disk.path
            rec[prefix + "allocation"] = disk.allocation
            rec[prefix + "capacity"] = 10 * GIB
            rec[prefix + "physical"] = disk.physical
            if disk.threshold is not None:
                rec[prefix + "threshold"] = disk.threshold
            if disk.stats_index:
                rec[prefix + "backingIndex"] = disk.index
            num += 1
            if disk.backing:
                prefix = "block.%d." % num
                rec[prefix + "name"] = target
                rec[prefix + "path"] = disk.backing
                rec[prefix + "allocation"] = 0
                rec[prefix + "backingIndex"] = disk.index + 1
                num += 1
        rec["block.count"] = num
        return rec


class Hypervisor(object):
    """What libvirtd knows; survives reconnections (thresholds are lost when libvirtd restarts)."""

    def __init__(self):
        self.domains = collections.OrderedDict()

    def add(self, uuid, name):
        self.domains[uuid] = FakeDomain(uuid, name)
        return self.domains[uuid]

    def restart(self):
        for dom in self.domains.values():
            for disk in dom.disks.values():
                disk.threshold = None


class FakeConn(object):
    def __init__(self, hv):
        self.hv = hv
        self.calls = []
        self.callbacks = {}
        self.close_cb = None
        self.closed = False
        self.alive = True
        self.fail_stats = None

    def setKeepAlive(self, interval, count):  # noqa: N802
        self.calls.append(("setKeepAlive", interval, count))

    def registerCloseCallback(self, cb, opaque):  # noqa: N802
        self.close_cb = cb

    def domainEventRegisterAny(self, dom, event_id, cb, opaque):  # noqa: N802
        self.callbacks[event_id] = cb
        return event_id

    def isAlive(self):  # noqa: N802
        return 1 if self.alive else 0

    def close(self):
        self.calls.append(("close",))
        self.closed = True

    def _selected(self, dom, flags):
        if dom.state not in (RUNNING, PAUSED):
            return False
        wanted = flags & (ALL_STATS_ACTIVE | ALL_STATS_RUNNING | ALL_STATS_PAUSED)
        if not wanted:
            return True
        return bool((flags & ALL_STATS_ACTIVE) or (flags & ALL_STATS_RUNNING and dom.state == RUNNING)
                    or (flags & ALL_STATS_PAUSED and dom.state == PAUSED))

    def getAllDomainStats(self, stats, flags):  # noqa: N802
        self.calls.append(("getAllDomainStats", stats, flags))
        if self.fail_stats:
            raise FakeLibvirtError(self.fail_stats)
        return [(dom, dom.record()) for dom in self.hv.domains.values() if self._selected(dom, flags)]

    def lookupByUUIDString(self, uuid):  # noqa: N802
        self.calls.append(("lookupByUUIDString", uuid))
        if uuid not in self.hv.domains:
            raise FakeLibvirtError("Domain not found: no domain with matching uuid '%s'" % uuid)
        return self.hv.domains[uuid]

    def domainListGetStats(self, doms, stats, flags):  # noqa: N802
        self.calls.append(("domainListGetStats", stats, flags))
        for dom in doms:
            if dom.uuid not in self.hv.domains:
                raise FakeLibvirtError("Requested operation is not valid: domain is not running")
        return [(dom, dom.record()) for dom in doms]

    def names_called(self, name):
        return [c for c in self.calls if c[0] == name]

    # what libvirtd sends
    def fire_threshold(self, dom, dev, threshold):
        target = target_of(dev)
        disk = dom.disks[target]
        disk.threshold = None  # one-shot
        self.callbacks[thin_agent.EVENT_BLOCK_THRESHOLD](self, dom, dev, disk.path, threshold,
                                                         max(disk.allocation - threshold, 0), None)

    def fire_io_error(self, dom, target, reason="enospc", use_alias=True):
        disk = dom.disks[target]
        self.callbacks[thin_agent.EVENT_IO_ERROR_REASON](self, dom, disk.path, disk.alias if use_alias else target,
                                                         1, reason, None)

    def fire_lifecycle(self, dom, event, detail):
        self.callbacks[thin_agent.EVENT_LIFECYCLE](self, dom, event, detail, None)

    def fire_device_added(self, dom, target):
        self.callbacks[thin_agent.EVENT_DEVICE_ADDED](self, dom, dom.disks[target].alias, None)

    def fire_close(self, reason=0):
        self.close_cb(self, reason, None)


class FakeLibvirt(object):
    """The attributes of the libvirt module the agent uses."""

    libvirtError = FakeLibvirtError

    def __init__(self, hv):
        self.hv = hv
        self.conns = []
        self.opens = 0
        self.open_failures = 0

    def open(self, uri):
        self.opens += 1
        if self.open_failures:
            self.open_failures -= 1
            raise FakeLibvirtError("Failed to connect socket to '/run/libvirt/libvirt-sock': Connection refused")
        conn = FakeConn(self.hv)
        self.conns.append(conn)
        return conn

    def virEventRegisterDefaultImpl(self):  # noqa: N802
        raise AssertionError("the tests run no libvirt event loop")


class FakeStorage(Storage):
    """Thin disks in a dict; extends change the 'LV' size; failures scripted in ``failures``."""

    def __init__(self):
        self.lvs = collections.OrderedDict()  # key -> [vg, name, size, cap, paths]
        self.reads = 0
        self.extends = []  # (key, old, asked)
        self.attempts = 0
        self.failures = []  # ExtendFailed to raise, one per attempt
        self.published_calls = []
        self.after_sweep_calls = 0
        self.refreshed = []
        self.read_error = None
        self.stopped = False
        self.closed = False
        self.claims = {}
        self.reclaims = []  # (uuid, domain name, paths)
        self.reclaim_error = None

    def add(self, name, size, virtual=10 * GIB, vg="vg0", paths=None, claims=()):
        key = "%s/%s" % (vg, name)
        self.lvs[key] = [vg, name, size, thin_cap(virtual, EXTENT), paths]
        self.claims[key] = list(claims)
        return key

    def size(self, key):
        return self.lvs[key][2]

    def thin_disks(self):
        self.reads += 1
        if self.read_error:
            raise SltvError(self.read_error)
        return [ThinDisk(vg, name, size, cap, EXTENT, paths, claims=self.claims.get("%s/%s" % (vg, name), []))
                for vg, name, size, cap, paths in self.lvs.values()]

    def reclaim(self, uuid, domain_name, paths):
        self.reclaims.append((uuid, domain_name, list(paths)))
        if self.reclaim_error:
            raise SltvError(self.reclaim_error)
        return []

    def extend(self, disk, size, timings):
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        timings.update(lock=0.001, lvextend=0.01, verify=0.001)
        self.extends.append((disk.key, self.lvs[disk.key][2], size))
        self.lvs[disk.key][2] = size
        return size

    def published(self, disk, size, seconds):
        self.published_calls.append((disk.key, size))

    def after_sweep(self, disks):
        self.after_sweep_calls += 1
        return list(self.refreshed)

    def stopping(self):
        self.stopped = True

    def close(self):
        self.closed = True


class Clock(object):
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Setup(object):
    """A connected agent over the fakes; ``drain()`` hands queued events to the worker."""

    def __init__(self, vg_workers=False, **config):
        # No assumed initial rate unless a test asks for one: these tests arm at chunk_min / 2 before a
        # rate is measured (the initial rate's own tests set initial_write_rate).
        data = {"vgs": ["vg0"], "initial_write_rate": 0}
        data.update(config)
        self.config = parse_agent_config(data)
        self.hv = Hypervisor()
        self.libvirt = FakeLibvirt(self.hv)
        self.storage = FakeStorage()
        self.clock = Clock()
        self.agent = Agent(self.config, self.storage, host="host1", libvirt_module=self.libvirt, clock=self.clock,
                           own_event_loop=False, vg_workers=vg_workers)
        self.agent.start()

    @property
    def conn(self):
        return self.libvirt.conns[-1]

    def drain(self):
        batch = []
        while not self.agent.events.empty():
            batch.append(self.agent.events.get_nowait())
        self.agent.handle(batch)
        return batch

    def policy(self):
        return self.config.policy(EXTENT)


def one_disk(size=2 * GIB, virtual=10 * GIB, **disk_kwargs):
    """A running domain web01 with the thin disk vg0/d1 as vdb (index 4), swept once."""
    setup = Setup()
    key = setup.storage.add("d1", size, virtual)
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vda", "/var/lib/libvirt/images/root.qcow2", index=1)
    dom.add_disk("vdb", "/dev/vg0/d1", **disk_kwargs)
    setup.agent.sweep()
    return setup, dom, key


def write_past_threshold(dom, target="vdb"):
    """The guest wrote 1 MiB past the armed threshold; returns that threshold."""
    armed = dom.disks[target].threshold
    dom.disks[target].allocation = armed + MIB
    return armed


def pause_for_enospc(dom, target="vdb", errors=None, allocation=2 * GIB + MIB):
    """The guest wrote past the end of the 2 GiB LV: QEMU paused it (error_policy='stop')."""
    dom.state, dom.reason = PAUSED, PAUSED_IOERROR
    dom.disk_errors = {target: DISK_ERROR_NO_SPACE} if errors is None else errors
    dom.disks[target].allocation = allocation


# -- constants and statistics parsing -------------------------------------------------------------

LIBVIRT_CONSTANTS = [
    ("EVENT_LIFECYCLE", "VIR_DOMAIN_EVENT_ID_LIFECYCLE"),
    ("EVENT_IO_ERROR_REASON", "VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON"),
    ("EVENT_BLOCK_THRESHOLD", "VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD"),
    ("EVENT_DEVICE_ADDED", "VIR_DOMAIN_EVENT_ID_DEVICE_ADDED"),
    ("LIFECYCLE_STARTED", "VIR_DOMAIN_EVENT_STARTED"),
    ("LIFECYCLE_SUSPENDED", "VIR_DOMAIN_EVENT_SUSPENDED"),
    ("LIFECYCLE_RESUMED", "VIR_DOMAIN_EVENT_RESUMED"),
    ("STATS_STATE", "VIR_DOMAIN_STATS_STATE"),
    ("STATS_BLOCK", "VIR_DOMAIN_STATS_BLOCK"),
    ("STATS_BACKING", "VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING"),
    ("STATS_ACTIVE", "VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE"),
    ("STATE_RUNNING", "VIR_DOMAIN_RUNNING"),
    ("STATE_PAUSED", "VIR_DOMAIN_PAUSED"),
    ("PAUSED_IOERROR", "VIR_DOMAIN_PAUSED_IOERROR"),
    ("DISK_ERROR_NO_SPACE", "VIR_DOMAIN_DISK_ERROR_NO_SPACE"),
]


@pytest.mark.parametrize("ours, theirs", LIBVIRT_CONSTANTS)
def test_constants_match_libvirt(ours, theirs):
    libvirt = pytest.importorskip("libvirt")
    assert getattr(thin_agent, ours) == getattr(libvirt, theirs)


def test_block_entries_top_image_only():
    dom = FakeDomain(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1", allocation=5, physical=9, index=4)
    dom.disks["vdb"].backing = "/var/lib/base.qcow2"
    dom.disks["vdb"].threshold = 7
    dom.add_disk("vdc", "/dev/vg0/d2", stats_index=False)
    entries = block_entries(dom.record())
    assert [(e["name"], e["path"], e["index"]) for e in entries] == [("vdb", "/dev/vg0/d1", 4), ("vdc", "/dev/vg0/d2", None)]
    assert (entries[0]["allocation"], entries[0]["physical"], entries[0]["threshold"]) == (5, 9, 7)
    assert entries[1]["threshold"] is None
    assert block_entries({}) == []


def test_target_of():
    assert target_of("vdb[4]") == "vdb"
    assert target_of("vdb") == "vdb"
    assert target_of(None) == ""


# -- arming -----------------------------------------------------------------------------------------

def test_sweep_arms_threshold_on_indexed_target():
    setup, dom, key = one_disk()
    policy = setup.policy()
    assert dom.names_called("setBlockThreshold") == [("setBlockThreshold", "vdb[4]", policy.threshold(2 * GIB, thin_cap(10 * GIB, EXTENT), 0))]
    assert dom.disks["vdb"].threshold == 2 * GIB - 512 * MIB
    assert dom.names_called("XMLDesc") == []  # backingIndex came with the statistics
    assert list(setup.agent.watches) == [(UUID1, "vdb")]  # the foreign root disk is not watched
    assert setup.storage.extends == []
    assert setup.agent.metrics.disks_watched.value() == 1


def test_index_from_domain_xml_when_stats_lack_it():
    setup, dom, key = one_disk(index=7, stats_index=False)
    assert dom.names_called("setBlockThreshold")[0][1] == "vdb[7]"
    assert len(dom.names_called("XMLDesc")) == 1
    setup.clock.advance(5)
    setup.agent.sweep()
    assert len(dom.names_called("XMLDesc")) == 1  # read once, not every sweep


def test_one_stats_call_per_sweep_for_all_domains():
    setup = Setup()
    for num, uuid in enumerate((UUID1, UUID2, UUID3)):
        setup.storage.add("d%d" % num, 2 * GIB)
        setup.hv.add(uuid, "vm%d" % num).add_disk("vdb", "/dev/vg0/d%d" % num, index=num + 1)
    setup.agent.sweep()
    assert len(setup.conn.names_called("getAllDomainStats")) == 1
    assert setup.agent.sweep_calls[-1] == 1 + 3  # the stats and three arms
    assert [d.names_called("setBlockThreshold")[0][1] for d in setup.hv.domains.values()] == ["vdb[1]", "vdb[2]", "vdb[3]"]
    for attempt_number in range(3):
        setup.clock.advance(5)
        setup.agent.sweep()
    assert len(setup.conn.names_called("getAllDomainStats")) == 4
    assert setup.agent.sweep_calls[-3:] == [1, 1, 1]  # armed thresholds still in place: no re-arm
    assert setup.storage.reads == 1  # the catalog is not re-read every sweep
    assert setup.agent.metrics.sweeps.value() == 4


def test_sweep_rearms_a_threshold_libvirt_lost():
    setup, dom, key = one_disk()
    setup.hv.restart()
    setup.clock.advance(5)
    setup.agent.sweep()
    assert len(dom.names_called("setBlockThreshold")) == 2
    assert dom.disks["vdb"].threshold == 2 * GIB - 512 * MIB


def test_arm_failure_is_counted_and_retried_by_the_next_sweep():
    setup, dom, key = one_disk()
    setup.hv.restart()
    dom.threshold_error = "internal error: unable to execute QEMU command"
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.agent.metrics.errors.value(kind="libvirt") == 1
    dom.threshold_error = None
    setup.clock.advance(5)
    setup.agent.sweep()
    assert dom.disks["vdb"].threshold == 2 * GIB - 512 * MIB


# -- a new attachment ---------------------------------------------------------------------------------

def hot_attach(setup, size=2 * GIB, virtual=10 * GIB):
    """web01 runs (swept, nothing of ours attached); vg0/d1 was last claimed by db on host2. The attach
    moves the claim to web01 here and adds the disk as vdb: the agent's catalog still has the old claim."""
    key = setup.storage.add("d1", size, virtual, claims=[Claim("host2", UUID3, "exclusive", "db")])
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vda", "/var/lib/libvirt/images/root.qcow2", index=1)
    setup.agent.sweep()
    assert setup.agent.watches == {}
    setup.storage.claims[key] = [Claim("host1", UUID1, "exclusive", "web01")]
    dom.add_disk("vdb", "/dev/vg0/d1", index=2)
    return dom, key


def test_a_hot_attached_disk_is_armed_on_the_device_added_event_not_at_the_next_sweep():
    setup = Setup(vg_workers=False)
    dom, key = hot_attach(setup)
    sweeps = len([c for c in setup.conn.calls if c[0] == "getAllDomainStats"])
    reads = setup.storage.reads
    setup.conn.fire_device_added(dom, "vdb")
    setup.drain()
    # armed for the disk's size now, on vdb[index], with the claim read again (the attach moved it here)
    assert dom.disks["vdb"].threshold == 2 * GIB - GIB // 2
    assert dom.names_called("setBlockThreshold") == [("setBlockThreshold", "vdb[2]", 2 * GIB - GIB // 2)]
    assert setup.storage.reads == reads + 1
    assert len([c for c in setup.conn.calls if c[0] == "getAllDomainStats"]) == sweeps  # no sweep was needed
    assert setup.agent.metrics.events.value(type="device_added") == 1
    assert setup.agent.refused == set()


def test_a_domain_start_arms_its_thin_disks_at_once():
    setup = Setup(vg_workers=False)
    setup.storage.add("d1", 2 * GIB)
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1")
    setup.conn.fire_lifecycle(dom, thin_agent.LIFECYCLE_STARTED, 0)
    setup.drain()
    assert dom.disks["vdb"].threshold == 2 * GIB - GIB // 2
    assert not [c for c in setup.conn.calls if c[0] == "getAllDomainStats"]


def test_before_a_rate_is_measured_the_first_headroom_covers_the_assumed_host_rate():
    """initial_write_rate 1G (a 10 GbE path; the default is 256M): a guest may write at 1 GiB/s right after the attach, and one
    extend may take 4 s on a loaded host: the first headroom is 4 GiB. A 2 GiB disk is grown at once
    (before its first write) by twice that (8 GiB, chunk_max) and armed 4 GiB below its new end."""
    setup = Setup(vg_workers=False, initial_write_rate="1G")
    dom, key = hot_attach(setup, size=2 * GIB, virtual=40 * GIB)
    setup.conn.fire_device_added(dom, "vdb")
    setup.drain()
    assert setup.storage.extends == [(key, 2 * GIB, 10 * GIB)]
    assert setup.agent.history[-1]["trigger"] == "attach"
    assert dom.disks["vdb"].threshold == 10 * GIB - 4 * GIB
    # a guest writing at 1 GiB/s from the moment of the event has 6 GiB ahead: 6 s, past a 3 s lvextend


def test_a_large_disk_is_armed_with_the_assumed_rate_and_rearmed_once_the_rate_is_measured():
    setup = Setup(vg_workers=False, initial_write_rate="512M")
    dom, key = hot_attach(setup, size=20 * GIB, virtual=40 * GIB)
    setup.conn.fire_device_added(dom, "vdb")
    setup.drain()
    assert setup.storage.extends == []  # 20 GiB has room for 4 s at 512 MiB/s
    assert dom.disks["vdb"].threshold == 20 * GIB - 2 * GIB
    dom.disks["vdb"].allocation = 10 * MIB  # measured: a slow writer (2 MiB/s)
    setup.clock.advance(5)
    setup.agent.sweep()
    assert dom.disks["vdb"].threshold == 20 * GIB - GIB // 2  # chunk_min / 2 again: its rate is known


def test_initial_write_rate_zero_keeps_the_chunk_min_floor():
    setup = Setup(vg_workers=False, initial_write_rate=0)
    dom, key = hot_attach(setup)
    setup.conn.fire_device_added(dom, "vdb")
    setup.drain()
    assert setup.storage.extends == [] and dom.disks["vdb"].threshold == 2 * GIB - GIB // 2


# -- threshold events -------------------------------------------------------------------------------

def test_threshold_event_twice_in_one_batch_extends_once():
    setup, dom, key = one_disk()
    armed = dom.disks["vdb"].threshold
    dom.disks["vdb"].allocation = armed + MIB
    setup.conn.fire_threshold(dom, "vdb", armed)
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    batch = setup.drain()
    assert len(batch) == 2
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]
    assert dom.names_called("setBlockThreshold")[-1] == ("setBlockThreshold", "vdb[4]", 3 * GIB - 512 * MIB)
    assert setup.agent.metrics.extends.value(vg="vg0", trigger="threshold") == 1
    assert setup.agent.metrics.events.value(type="block_threshold") == 2
    assert setup.storage.published_calls == [(key, 3 * GIB)]
    record = setup.agent.history[-1]
    assert (record["disk"], record["trigger"], record["old_size"], record["new_size"]) == (key, "threshold", 2 * GIB, 3 * GIB)
    assert set(["detect", "lock", "lvextend", "verify", "rearm", "total"]) <= set(record)
    assert setup.agent.metrics.extend_duration.count(phase="total") == 1
    # events for the threshold armed now say where the guest writes: no stats read on the extend's path
    assert len(setup.conn.names_called("domainListGetStats")) == 0
    assert setup.agent.watches[(UUID1, "vdb")].allocation == armed + MIB


def test_a_threshold_event_with_anything_unusual_reads_fresh_stats_once():
    setup, dom, key = one_disk()
    armed = write_past_threshold(dom)
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)  # another kind of event with it
    setup.drain()
    assert len(setup.conn.names_called("domainListGetStats")) == 1  # one read for the batch
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]


@pytest.mark.parametrize("what", ["old threshold", "unknown path", "paused", "no excess"])
def test_threshold_events_the_agent_cannot_trust_alone_read_stats(what):
    setup, dom, key = one_disk()
    armed = write_past_threshold(dom)
    threshold, path, excess = armed, "/dev/vg0/d1", MIB
    if what == "old threshold":
        threshold = armed - EXTENT
    elif what == "unknown path":
        path = "/dev/vg0/other"
    elif what == "paused":
        setup.agent.paused[UUID1] = "enospc"
    else:
        excess = None
    setup.agent.handle([Event("threshold", UUID1, "vdb[4]", path, threshold, setup.clock(), excess)])
    assert len(setup.conn.names_called("domainListGetStats")) == 1


def test_the_new_threshold_is_armed_while_lvextend_runs():
    setup, dom, key = one_disk()
    armed = write_past_threshold(dom)
    seen_during_extend = []
    plain_extend = setup.storage.extend

    def slow_extend(disk, size, timings):
        deadline = time.monotonic() + 5
        while dom.disks["vdb"].threshold == armed and time.monotonic() < deadline:
            time.sleep(0.005)  # lvextend takes seconds: the arming thread runs meanwhile
        seen_during_extend.append(dom.disks["vdb"].threshold)
        return plain_extend(disk, size, timings)

    setup.storage.extend = slow_extend
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    assert seen_during_extend == [3 * GIB - 512 * MIB]
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]
    assert dom.names_called("setBlockThreshold")[-1] == ("setBlockThreshold", "vdb[4]", 3 * GIB - 512 * MIB)
    assert len(dom.names_called("setBlockThreshold")) == 2  # the first arm and the one ahead: none after


def test_a_failed_extend_arms_the_threshold_of_the_size_the_lv_still_has():
    setup, dom, key = one_disk()
    armed = write_past_threshold(dom)
    setup.storage.failures = [ExtendFailed("cannot take the lock of VG vg0", "lock")]
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    assert setup.storage.extends == []
    arms = [call[2] for call in dom.names_called("setBlockThreshold")]
    assert arms == [armed, 3 * GIB - 512 * MIB, armed]  # first arm, ahead of the extend, back after it failed
    assert setup.agent.watches[(UUID1, "vdb")].armed == armed


def test_late_duplicate_after_rearm_does_not_extend():
    setup, dom, key = one_disk()
    armed = dom.disks["vdb"].threshold
    dom.disks["vdb"].allocation = armed + MIB
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    arms = len(dom.names_called("setBlockThreshold"))
    setup.clock.advance(0.2)
    setup.conn.callbacks[thin_agent.EVENT_BLOCK_THRESHOLD](setup.conn, dom, "vdb", "/dev/vg0/d1", armed, MIB, None)
    setup.drain()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]
    assert len(dom.names_called("setBlockThreshold")) == arms  # the new threshold is still armed
    assert dom.disks["vdb"].threshold == 3 * GIB - 512 * MIB


def test_stale_threshold_does_not_extend_unless_policy_says_so():
    setup, dom, key = one_disk()
    armed = dom.disks["vdb"].threshold
    stale = armed - 256 * MIB
    dom.disks["vdb"].allocation = 100 * MIB  # far below the headroom
    setup.conn.fire_threshold(dom, "vdb[4]", stale)
    setup.drain()
    assert setup.storage.extends == []
    assert dom.disks["vdb"].threshold == armed  # re-armed (the fake cleared it as libvirt would)
    # the same stale value, but the disk is now inside its headroom: the policy asks for an extend
    dom.disks["vdb"].allocation = armed + MIB
    setup.clock.advance(0.1)
    setup.conn.fire_threshold(dom, "vdb[4]", stale)
    setup.drain()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]


def test_sweep_extends_a_disk_inside_its_headroom_without_an_event():
    setup, dom, key = one_disk()
    dom.disks["vdb"].allocation = 2 * GIB - 100 * MIB
    setup.clock.advance(0.1)  # within min_interval: the rate stays unknown
    setup.agent.sweep()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]
    assert setup.agent.metrics.extends.value(vg="vg0", trigger="sweep") == 1


def test_allocation_past_physical_extends_beyond_it():
    setup, dom, key = one_disk()
    dom.disks["vdb"].allocation = 2 * GIB + 3 * MIB  # a failed write past the end
    setup.clock.advance(0.1)
    setup.agent.sweep()
    (disk, old, new), = setup.storage.extends
    assert new > 2 * GIB + 3 * MIB and new % EXTENT == 0


def claimed_disk_past_its_end(claim):
    """web01 runs the thin disk vg0/d1 (claimed by ``claim``) and wrote past its end; not swept yet."""
    setup = Setup()
    key = setup.storage.add("d1", 2 * GIB, claims=[claim])
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1", index=4)
    dom.disks["vdb"].allocation = 2 * GIB + MIB
    return setup, key


def test_a_disk_claimed_by_another_domain_is_never_grown_here():
    setup, key = claimed_disk_past_its_end(Claim("host2", UUID3, "exclusive", "db"))
    setup.agent.sweep()
    setup.agent.sweep()
    assert setup.storage.extends == []
    assert setup.agent.metrics.errors.value(kind="ownership") == 1  # logged and counted once


def test_a_migrated_domains_disk_is_grown_and_its_claim_moved_here_by_the_sweep():
    setup, key = claimed_disk_past_its_end(Claim("host2", UUID1, "exclusive", "web01"))
    setup.agent.sweep()
    assert [e[0] for e in setup.storage.extends] == [key]
    assert setup.storage.reclaims == [(UUID1, "web01", ["/dev/vg0/d1"])]


def test_a_threshold_event_never_waits_for_a_reclaim_and_a_failed_reclaim_is_retried():
    setup, dom, key = one_disk()
    setup.storage.reclaims = []
    write_past_threshold(dom)
    setup.agent.handle([Event("threshold", UUID1, "vdb", "/dev/vg0/d1", dom.disks["vdb"].threshold, setup.clock())])
    assert setup.storage.reclaims == []
    setup.storage.reclaim_error = "cannot take the lock of VG vg0"
    setup.agent.sweep()
    setup.agent.sweep()
    assert len(setup.storage.reclaims) == 2
    assert setup.agent.metrics.errors.value(kind="reclaim") == 2


def test_event_for_an_unknown_domain_is_ignored():
    setup, dom, key = one_disk()
    setup.agent.handle([Event("threshold", UUID3, "vdb", "/dev/vg0/x", 5, setup.clock())])
    assert setup.storage.extends == []
    assert setup.agent.conn is setup.conn  # a vanished domain is not a lost connection


def test_write_rate_grows_the_chunk():
    setup, dom, key = one_disk(size=8 * GIB, virtual=100 * GIB)
    dom.disks["vdb"].allocation = 200 * MIB
    setup.clock.advance(1.0)
    setup.agent.sweep()  # 200 MiB/s
    assert setup.agent.watches[(UUID1, "vdb")].rate == pytest.approx(200 * MIB)
    armed = dom.disks["vdb"].threshold
    assert armed == 8 * GIB - 2000 * MIB  # headroom = 10 s of writes
    dom.disks["vdb"].allocation = armed + MIB
    setup.clock.advance(1.0)
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    (disk, old, new), = setup.storage.extends
    rate = setup.agent.watches[(UUID1, "vdb")].rate
    assert new == setup.policy().next_size(8 * GIB, thin_cap(100 * GIB, EXTENT), rate)
    assert new - old > GIB  # more than chunk_min


def test_allocation_zero_after_reattach_resets_the_rate():
    setup, dom, key = one_disk()
    for step in range(1, 4):
        dom.disks["vdb"].allocation = step * 100 * MIB
        setup.clock.advance(1.0)
        setup.agent.sweep()
    watch = setup.agent.watches[(UUID1, "vdb")]
    assert watch.rate == pytest.approx(100 * MIB)
    dom.disks["vdb"].allocation = 0  # detached and attached again: QEMU starts counting anew
    dom.disks["vdb"].index = 9
    setup.clock.advance(1.0)
    setup.agent.sweep()
    assert watch.rate == 0
    assert watch.allocation == 0
    assert watch.dev == "vdb[9]"
    assert setup.storage.extends == []
    assert dom.names_called("setBlockThreshold")[-1] == ("setBlockThreshold", "vdb[9]", 2 * GIB - 512 * MIB)


# -- the cap --------------------------------------------------------------------------------------------

def test_extends_stop_at_the_cap():
    # virtual 2 GiB: cap 2256 MiB (virtual * 1.1, extent-aligned)
    setup, dom, key = one_disk(size=GIB, virtual=2 * GIB)
    cap = thin_cap(2 * GIB, EXTENT)
    assert cap == 2256 * MIB
    for attempt_number in range(4):
        disk = dom.disks["vdb"]
        disk.allocation = setup.storage.size(key) - MIB
        setup.clock.advance(0.1)
        setup.agent.sweep()
    assert [new for _k, _o, new in setup.storage.extends] == [2 * GIB, cap]
    assert max(size for _k, _o, size in setup.storage.extends) <= cap
    arms = len(dom.names_called("setBlockThreshold"))
    setup.clock.advance(5)
    setup.agent.sweep()
    assert len(dom.names_called("setBlockThreshold")) == arms  # at the cap: nothing armed


def test_cap_reported_once():
    setup, dom, key = one_disk(size=2256 * MIB, virtual=2 * GIB)
    for attempt_number in range(3):
        dom.disks["vdb"].allocation = 2256 * MIB - MIB
        setup.clock.advance(0.1)
        setup.agent.sweep()
    assert setup.storage.extends == []
    assert setup.agent.metrics.extend_failures.value(vg="vg0", reason="cap") == 1


def test_allocation_above_cap_never_extends_above_cap():
    cap = thin_cap(2 * GIB, EXTENT)
    setup, dom, key = one_disk(size=cap - 8 * MIB, virtual=2 * GIB)
    dom.disks["vdb"].allocation = cap + 60 * MIB + 512  # a large write failed past the end
    setup.clock.advance(0.1)
    setup.agent.sweep()
    assert setup.storage.extends and all(size <= cap for _k, _o, size in setup.storage.extends)


# -- ENOSPC and pauses ---------------------------------------------------------------------------------

def test_io_error_enospc_extends_and_resumes():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    setup.conn.fire_io_error(dom, "vdb", use_alias=False)
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)
    setup.drain()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB + EXTENT)]
    assert dom.names_called("resume") == [("resume",)]
    assert dom.state == RUNNING
    metrics = setup.agent.metrics
    assert metrics.resumes.value() == 1
    assert metrics.pauses.value(reason="enospc") == 1
    assert metrics.extends.value(vg="vg0", trigger="enospc") == 1
    assert UUID1 not in setup.agent.paused and UUID1 not in setup.agent.enospc


def test_io_error_event_with_device_alias_resumes():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    setup.conn.fire_io_error(dom, "vdb")  # what libvirt really sends: srcPath and devAlias
    setup.drain()
    assert len(setup.storage.extends) == 1
    assert dom.names_called("resume") == [("resume",)]


def test_enospc_on_a_disk_not_watched_yet_is_extended_and_resumed():
    """The event names the alias of a disk attached after the last sweep: before, the alias went into
    the ENOSPC set, the resume found no watch for it and the guest stayed paused (issue 12)."""
    setup = Setup()
    key = setup.storage.add("d1", 2 * GIB)
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vda", "/var/lib/libvirt/images/root.qcow2", index=1)
    setup.agent.sweep()
    dom.add_disk("vdb", "/dev/vg0/d1", index=4)  # hot-attached; no sweep yet
    pause_for_enospc(dom)
    setup.conn.fire_io_error(dom, "vdb")  # alias only, no watch to resolve it
    setup.drain()
    assert [e[0] for e in setup.storage.extends] == [key]
    assert dom.names_called("resume") == [("resume",)]
    assert UUID1 not in setup.agent.paused and UUID1 not in setup.agent.enospc


def test_a_failed_disk_errors_read_does_not_mark_the_pause_as_not_ours():
    """Before: one failed diskErrors() at the first sight of a pause recorded it as 'other' for good."""
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    real = dom.diskErrors

    def failing(flags=0):
        raise FakeLibvirtError("libvirtd is restarting")

    dom.diskErrors = failing
    setup.clock.advance(5)
    setup.agent.sweep()
    assert dom.names_called("resume") == [] and UUID1 not in setup.agent.paused
    dom.diskErrors = real
    setup.clock.advance(5)
    setup.agent.sweep()
    assert dom.names_called("resume") == [("resume",)]


def test_io_error_enospc_without_pause_extends_at_once():
    setup, dom, key = one_disk()
    dom.disks["vdb"].allocation = 2 * GIB  # error_policy='report': the guest got the error, no pause
    setup.conn.fire_io_error(dom, "vdb", use_alias=False)
    setup.drain()
    assert len(setup.storage.extends) == 1
    assert dom.names_called("resume") == []


def test_paused_for_enospc_seen_through_lifecycle_event():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)
    setup.drain()
    assert len(setup.storage.extends) == 1
    assert dom.names_called("resume") == [("resume",)]


def test_sweep_finds_a_domain_paused_for_enospc():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)  # the events were missed (agent restart, libvirtd restart)
    setup.clock.advance(5)
    setup.agent.sweep()
    assert len(setup.storage.extends) == 1
    assert dom.names_called("resume") == [("resume",)]


@pytest.mark.parametrize("state, reason, errors", [
    (PAUSED, PAUSED_IOERROR, {"vdb": DISK_ERROR_UNSPEC}),
    (PAUSED, PAUSED_IOERROR, {"vdb": DISK_ERROR_NO_SPACE, "vda": DISK_ERROR_UNSPEC}),
    (PAUSED, PAUSED_USER, {}),
    (PAUSED, PAUSED_USER, {"vdb": DISK_ERROR_NO_SPACE}),  # stale 'no space' from an earlier pause
], ids=["other-disk-error", "enospc-and-other-error", "paused-by-user", "paused-by-user-stale-nospace"])
def test_domain_paused_for_another_reason_is_never_resumed(state, reason, errors):
    setup, dom, key = one_disk()
    dom.state, dom.reason = state, reason
    dom.disk_errors = errors
    dom.disks["vdb"].allocation = 2 * GIB + MIB
    setup.conn.fire_io_error(dom, "vdb", use_alias=False)  # even after an 'enospc' event
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, 0)
    setup.drain()
    for attempt_number in range(3):
        setup.clock.advance(5)
        setup.agent.handle([Event("lifecycle", UUID1, None, None, (LIFECYCLE_SUSPENDED, 0), setup.clock())])
        setup.agent.sweep()
    assert dom.names_called("resume") == []
    assert dom.state == PAUSED


def test_pause_counted_once():
    setup, dom, key = one_disk()
    dom.state, dom.reason = PAUSED, PAUSED_IOERROR
    dom.disk_errors = {"vdb": DISK_ERROR_UNSPEC}
    for attempt_number in range(3):
        setup.agent.handle([Event("lifecycle", UUID1, None, None, (LIFECYCLE_SUSPENDED, 2), setup.clock())])
        setup.clock.advance(5)
        setup.agent.sweep()
    assert setup.agent.metrics.pauses.value(reason="other") == 1


def test_enospc_on_a_foreign_disk_is_not_resumed():
    setup, dom, key = one_disk()
    dom.state, dom.reason = PAUSED, PAUSED_IOERROR
    dom.disk_errors = {"vda": DISK_ERROR_NO_SPACE}  # the root image on a full filesystem
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)
    setup.drain()
    assert dom.names_called("resume") == []
    assert setup.storage.extends == []


def test_resume_failure_is_counted():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    original = dom.resume

    def failing_resume():
        dom.calls.append(("resume",))
        raise FakeLibvirtError("internal error: unable to execute QEMU command 'cont'")

    dom.resume = failing_resume
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)
    setup.drain()
    assert setup.agent.metrics.errors.value(kind="libvirt") == 1
    assert setup.agent.metrics.resumes.value() == 0
    dom.resume = original
    setup.clock.advance(1)
    setup.agent.handle([Event("lifecycle", UUID1, None, None, (LIFECYCLE_SUSPENDED, 2), setup.clock())])
    assert dom.state == RUNNING
    assert dom.names_called("resume") == [("resume",), ("resume",)]


def test_paused_domain_with_room_is_resumed_without_another_extend():
    setup, dom, key = one_disk()
    armed = dom.disks["vdb"].threshold
    dom.disks["vdb"].allocation = armed + MIB
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]
    # the guest wrote past the old end while the extend ran: paused, and the lifecycle event comes late
    pause_for_enospc(dom)
    attempts = []

    def failing_resume():
        attempts.append(1)
        if len(attempts) == 1:
            raise FakeLibvirtError("internal error: unable to execute QEMU command 'cont'")
        dom.state, dom.reason = RUNNING, 1

    dom.resume = failing_resume
    for attempt_number in range(2):
        setup.clock.advance(0.1)
        setup.agent.handle([Event("lifecycle", UUID1, None, None, (LIFECYCLE_SUSPENDED, 2), setup.clock())])
    assert dom.state == RUNNING
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB)]  # 3 GiB had room for the failed write


# -- failed extends ------------------------------------------------------------------------------------

def test_failed_extend_backs_off_and_resumes_after_success():
    setup, dom, key = one_disk()
    pause_for_enospc(dom)
    setup.storage.failures = [ExtendFailed("VG vg0 is full", "vg_full")] * 8
    setup.conn.fire_lifecycle(dom, LIFECYCLE_SUSPENDED, SUSPENDED_IOERROR)
    setup.drain()
    watch = setup.agent.watches[(UUID1, "vdb")]
    backoffs = [watch.backoff]
    for attempt_number in range(7):
        setup.agent._retry_due()  # not due yet: nothing happens
        assert setup.storage.attempts == len(backoffs)
        setup.clock.advance(watch.retry_at - setup.clock())
        setup.agent._retry_due()
        backoffs.append(watch.backoff)
        assert dom.state == PAUSED and dom.names_called("resume") == []
    assert backoffs == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert setup.agent.metrics.extend_failures.value(vg="vg0", reason="vg_full") == 8
    assert setup.agent.metrics.errors.value(kind="lvm") == 8
    setup.clock.advance(watch.retry_at - setup.clock())
    setup.agent._retry_due()
    assert setup.storage.extends == [(key, 2 * GIB, 3 * GIB + EXTENT)]
    assert dom.names_called("resume") == [("resume",)]
    assert (watch.backoff, watch.retry_at) == (0.0, None)


def crossed_threshold_failing(failure, times):
    """One watched disk written past its threshold while the next ``times`` extends fail with ``failure``."""
    setup, dom, key = one_disk()
    armed = dom.disks["vdb"].threshold
    dom.disks["vdb"].allocation = armed + MIB
    setup.storage.failures = [failure] * times
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    return setup, dom, key


def test_extend_failed_on_the_host_lock_is_counted_and_retried_soon():
    """A module's lvm command held the host's lvm lock past the agent's bound: the extend failed
    without running lvextend. Counted (reason host_lock), retried like a VG lock failure (each attempt
    already waited its bound: back-off at most LOCK_BACKOFF, not 30 s), and done once the lock is free."""
    setup, dom, key = crossed_threshold_failing(ExtendFailed("the host's lvm lock is still held", "host_lock"), 4)
    watch = setup.agent.watches[(UUID1, "vdb")]
    backoffs = [watch.backoff]
    for attempt_number in range(4):
        setup.clock.advance(watch.retry_at - setup.clock())
        setup.agent._retry_due()
        backoffs.append(watch.backoff)
    assert backoffs == [0.5, 1.0, thin_agent.LOCK_BACKOFF, thin_agent.LOCK_BACKOFF, 0.0]
    assert setup.agent.metrics.extend_failures.value(vg="vg0", reason="host_lock") == 4
    assert setup.agent.metrics.errors.value(kind="lock") == 4
    (disk, old, new), = setup.storage.extends
    assert (disk, old) == (key, 2 * GIB) and new > 2 * GIB


def test_failed_threshold_extend_waits_for_its_backoff():
    setup, dom, key = crossed_threshold_failing(ExtendFailed("cannot take the lock of VG vg0", "lock"), 2)
    assert setup.storage.attempts == 1
    assert setup.agent.metrics.extend_failures.value(vg="vg0", reason="lock") == 1
    assert setup.agent.metrics.errors.value(kind="lock") == 1
    setup.clock.advance(0.1)
    setup.agent.sweep()  # inside the back-off: no new attempt
    assert setup.storage.attempts == 1
    setup.clock.advance(0.4)
    setup.agent._retry_due()
    assert setup.storage.attempts == 2
    assert setup.agent.watches[(UUID1, "vdb")].backoff == 1.0
    setup.clock.advance(0.9)
    setup.agent._retry_due()
    assert setup.storage.attempts == 2
    setup.clock.advance(0.1)
    setup.agent._retry_due()
    assert setup.storage.attempts == 3
    (disk, old, new), = setup.storage.extends
    assert (disk, old) == (key, 2 * GIB) and new > 2 * GIB + GIB


def test_retry_that_needs_no_extend_clears_the_retry():
    setup, dom, key = one_disk()
    armed = write_past_threshold(dom)
    setup.storage.failures = [ExtendFailed("cannot take the lock of VG vg0", "lock")]
    setup.conn.fire_threshold(dom, "vdb[4]", armed)
    setup.drain()
    dom.disks["vdb"].allocation = 0  # re-attached meanwhile
    setup.clock.advance(1)
    setup.agent._retry_due()
    calls = setup.agent.libvirt_calls
    setup.clock.advance(1)
    setup.agent._retry_due()
    assert setup.agent.libvirt_calls == calls
    assert setup.agent.watches[(UUID1, "vdb")].retry_at is None


# -- domains coming and going -----------------------------------------------------------------------

def test_stopped_domain_watches_and_gauges_dropped():
    setup, dom, key = one_disk()
    setup.storage.add("d2", 2 * GIB)
    other = setup.hv.add(UUID2, "db01")
    other.add_disk("vdb", "/dev/vg0/d2")
    setup.clock.advance(31)  # the catalog is re-read (older than CATALOG_MAX_AGE)
    setup.agent.sweep()
    assert sorted(setup.agent.watches) == [(UUID1, "vdb"), (UUID2, "vdb")]
    assert setup.agent.metrics.physical.value(vg="vg0", disk="d1", domain="web01") == 2 * GIB
    text = setup.agent.metrics.render()
    assert 'domain="web01"' in text and 'domain="db01"' in text
    del setup.hv.domains[UUID1]  # web01 stopped (or migrated away)
    setup.clock.advance(5)
    setup.agent.sweep()
    assert list(setup.agent.watches) == [(UUID2, "vdb")]
    text = setup.agent.metrics.render()
    assert 'domain="web01"' not in text
    assert 'domain="db01"' in text
    assert setup.agent.metrics.disks_watched.value() == 1


def test_detached_disk_watch_dropped():
    setup, dom, key = one_disk()
    del dom.disks["vdb"]
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.agent.watches == {}
    assert setup.agent.metrics.disks_watched.value() == 0


def test_gauges_published():
    setup, dom, key = one_disk()
    dom.disks["vdb"].allocation = 30 * MIB
    setup.clock.advance(1)
    setup.agent.sweep()
    assert setup.storage.extends == []
    labels = dict(vg="vg0", disk="d1", domain="web01")
    metrics = setup.agent.metrics
    assert metrics.physical.value(**labels) == 2 * GIB
    assert metrics.allocation.value(**labels) == 30 * MIB
    assert metrics.headroom.value(**labels) == 2 * GIB - 30 * MIB
    assert metrics.cap.value(**labels) == thin_cap(10 * GIB, EXTENT)
    assert metrics.write_rate.value(**labels) == 30 * MIB
    assert metrics.etcd_up.value() == 1


# -- catalog ------------------------------------------------------------------------------------------

def test_catalog_reread_for_a_new_path_under_a_configured_vg():
    setup, dom, key = one_disk()
    assert setup.storage.reads == 1
    setup.storage.add("d2", 2 * GIB)
    dom.add_disk("vdc", "/dev/vg0/d2", index=6)
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.storage.reads == 2
    assert (UUID1, "vdc") in setup.agent.watches
    assert dom.names_called("setBlockThreshold")[-1][1] == "vdc[6]"


def test_catalog_reread_for_a_mapper_path():
    setup = Setup(vgs=["vg-a"])
    setup.storage.add("d1", 2 * GIB, vg="vg-a")
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/mapper/vg--a-d1")
    setup.agent.sweep()
    assert setup.storage.reads == 1
    setup.storage.add("d-2", 2 * GIB, vg="vg-a")
    dom.add_disk("vdc", "/dev/mapper/vg--a-d--2")
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.storage.reads == 2
    assert sorted(setup.agent.watches) == [(UUID1, "vdb"), (UUID1, "vdc")]


def test_unknown_path_rereads_once_then_waits_for_max_age():
    setup, dom, key = one_disk()
    dom.add_disk("vdc", "/dev/vg0/not-sltv")  # a plain LV of the VG, never in the catalog
    for attempt_number in range(5):
        setup.clock.advance(5)
        setup.agent.sweep()
    assert setup.storage.reads == 2  # once for the new path, not every sweep
    setup.clock.advance(thin_agent.CATALOG_MAX_AGE)
    setup.agent.sweep()
    assert setup.storage.reads == 3


@pytest.mark.parametrize("path", ["/dev/vg1/d9", "/var/lib/libvirt/images/x.qcow2", "/dev/mapper/vg1-d9",
                                  "/dev/vg0x/d9", "/dev/mapper/vg0x-d9", None])
def test_foreign_paths_do_not_reread_the_catalog(path):
    setup, dom, key = one_disk()
    dom.add_disk("vdc", path)
    for attempt_number in range(3):
        setup.clock.advance(5)
        setup.agent.sweep()
    assert setup.storage.reads == 1


def test_catalog_error_is_counted_and_the_sweep_goes_on():
    setup, dom, key = one_disk()
    setup.storage.read_error = "volume group vg0 not found on host host1"
    setup.clock.advance(31)
    setup.agent.sweep()
    assert setup.agent.metrics.errors.value(kind="lvm") == 1
    assert setup.agent.metrics.sweeps.value() == 2
    assert list(setup.agent.watches) == [(UUID1, "vdb")]  # the last catalog still serves


def test_refreshes_counted():
    setup, dom, key = one_disk()
    setup.storage.refreshed = [key]
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.agent.metrics.refreshes.value() == 1


def test_after_sweep_called_and_storage_closed():
    setup, dom, key = one_disk()
    assert setup.storage.after_sweep_calls == 1
    setup.agent.close()
    assert setup.storage.stopped and setup.storage.closed
    assert setup.agent.conn is None


# -- the connection ------------------------------------------------------------------------------------

def test_connect_registers_events_and_keepalive():
    setup = Setup()
    conn = setup.conn
    assert sorted(conn.callbacks) == sorted([thin_agent.EVENT_LIFECYCLE, thin_agent.EVENT_IO_ERROR_REASON,
                                             thin_agent.EVENT_BLOCK_THRESHOLD, thin_agent.EVENT_DEVICE_ADDED])
    assert conn.close_cb is not None
    assert conn.names_called("setKeepAlive")
    assert setup.agent.metrics.libvirt_connected.value() == 1


def test_start_fails_with_a_message_when_libvirt_is_down():
    hv = Hypervisor()
    libvirt = FakeLibvirt(hv)
    libvirt.open_failures = 1
    agent = Agent(parse_agent_config({"vgs": ["vg0"]}), FakeStorage(), libvirt_module=libvirt, own_event_loop=False)
    with pytest.raises(SltvError, match="cannot connect to libvirt at qemu:///system.*libvirtd"):
        agent.start()


def test_closed_connection_reconnects_and_rearms():
    setup, dom, key = one_disk()
    first = setup.conn
    first.fire_close()
    setup.hv.restart()  # libvirtd restarted: thresholds are gone
    assert setup.agent._ensure_connected()
    assert first.closed
    assert setup.conn is not first and setup.agent.conn is setup.conn
    assert setup.agent.metrics.reconnects.value() == 1
    assert setup.agent.metrics.errors.value(kind="libvirt") == 1
    setup.drain()  # the 'closed' event itself is no work
    setup.clock.advance(1)
    setup.agent.sweep()
    assert dom.disks["vdb"].threshold == 2 * GIB - 512 * MIB


def test_reconnect_backoff():
    setup, dom, key = one_disk()
    setup.libvirt.open_failures = 7
    setup.conn.fire_close()
    delays = []
    opens = setup.libvirt.opens
    while not setup.agent._ensure_connected():
        assert setup.libvirt.opens == opens + 1
        opens = setup.libvirt.opens
        delays.append(setup.agent._next_connect - setup.clock())
        setup.clock.advance(0.25)
        assert not setup.agent._ensure_connected()  # too early: no attempt
        assert setup.libvirt.opens == opens
        setup.clock.advance(setup.agent._next_connect - setup.clock())
        assert setup.agent.metrics.libvirt_connected.value() == 0
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert setup.agent.metrics.reconnects.value() == 1
    assert setup.agent.metrics.libvirt_connected.value() == 1
    assert setup.agent._reconnect_delay == 0.5


def test_failed_sweep_drops_the_connection():
    setup, dom, key = one_disk()
    setup.conn.fail_stats = "Cannot write data: Broken pipe"
    setup.clock.advance(5)
    setup.agent.sweep()
    assert setup.agent.conn is None
    assert setup.agent.metrics.libvirt_connected.value() == 0
    assert setup.agent._ensure_connected()
    assert setup.agent.metrics.reconnects.value() == 1


def test_dead_connection_found_by_event_processing():
    setup, dom, key = one_disk()
    setup.conn.alive = False
    setup.agent.handle([Event("threshold", UUID3, "vdb", "/dev/vg0/x", 5, setup.clock())])
    assert setup.agent.conn is None


# -- the worker loop (real time, short) -----------------------------------------------------------------

class RecordingNotifier(object):
    def __init__(self, watchdog_interval=None):
        self.watchdog_interval = watchdog_interval
        self.sent = []

    def ready(self, status):
        self.sent.append("READY=1")

    def watchdog(self):
        self.sent.append("WATCHDOG=1")

    def status(self, status):
        self.sent.append("STATUS=" + status)

    def stopping(self):
        self.sent.append("STOPPING=1")


def wait_until(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_run_loop_sweeps_notifies_and_handles_events():
    config = parse_agent_config({"vgs": ["vg0"], "sweep_interval": 0.05, "initial_write_rate": 0})
    hv = Hypervisor()
    libvirt = FakeLibvirt(hv)
    storage = FakeStorage()
    key = storage.add("d1", 2 * GIB)
    dom = hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1")
    notifier = RecordingNotifier(watchdog_interval=0.02)
    agent = Agent(config, storage, libvirt_module=libvirt, notifier=notifier, own_event_loop=False)
    agent.start()
    stop = threading.Event()
    worker = threading.Thread(target=agent.run, args=(stop,))
    worker.daemon = True
    worker.start()
    try:
        assert wait_until(lambda: agent.ready)
        assert [m for m in notifier.sent if m != "WATCHDOG=1"][0] == "READY=1"
        armed = dom.disks["vdb"].threshold
        dom.disks["vdb"].allocation = armed + MIB
        libvirt.conns[-1].fire_threshold(dom, "vdb[4]", armed)
        assert wait_until(lambda: storage.extends)
        assert wait_until(lambda: agent.metrics.sweeps.value() >= 3)
        libvirt.conns[-1].fire_close()
        assert wait_until(lambda: agent.metrics.reconnects.value() == 1)
    finally:
        stop.set()
        worker.join(2)
    assert not worker.is_alive()
    assert storage.extends == [(key, 2 * GIB, 3 * GIB)]
    assert "WATCHDOG=1" in notifier.sent


# -- one worker per VG ------------------------------------------------------------------------------

class GatedStorage(FakeStorage):
    """Extends of the VGs in ``gates`` wait for their threading.Event (a lock wait, a hung lvextend)."""

    def __init__(self):
        super(GatedStorage, self).__init__()
        self.gates = {}
        self.threads = []

    def extend(self, disk, size, timings):
        self.threads.append((disk.vg, threading.current_thread().name))
        gate = self.gates.get(disk.vg)
        if gate is not None:
            gate.wait(10)
        return super(GatedStorage, self).extend(disk, size, timings)


def drain_until(setup, predicate, timeout=2.0):
    """Hand the workers' outcomes (extends, claim moves) to the agent until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        setup.drain()
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def two_vgs_setup():
    setup = Setup(vg_workers=True, vgs=["vg0", "vg1"])
    setup.storage = setup.agent.storage = GatedStorage()
    key0 = setup.storage.add("d0", 2 * GIB, vg="vg0")
    key1 = setup.storage.add("d1", 2 * GIB, vg="vg1")
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d0")
    dom.add_disk("vdc", "/dev/vg1/d1")
    setup.agent.sweep()
    return setup, dom, key0, key1


def test_a_vg_whose_extend_hangs_does_not_hold_up_another_vg():
    setup, dom, key0, key1 = two_vgs_setup()
    gate = setup.storage.gates["vg1"] = threading.Event()
    try:
        write_past_threshold(dom, "vdb")
        write_past_threshold(dom, "vdc")
        started = time.monotonic()
        setup.agent.sweep()  # both want an extend; the sweep does not wait for either
        assert time.monotonic() - started < 1
        assert wait_until(lambda: [e[0] for e in setup.storage.extends] == [key0])
        assert wait_until(lambda: ("vg1", "worker-vg1") in setup.storage.threads)  # started, waiting
        assert drain_until(setup, lambda: setup.agent.history)
        assert [r["disk"] for r in setup.agent.history] == [key0]  # vg0 grown and re-armed, vg1 still waits
        assert setup.agent.disks[key0].size == 3 * GIB
        setup.agent.sweep()  # vg1's disk is being extended: not submitted twice
        time.sleep(0.05)
        assert len([t for t in setup.storage.threads if t[0] == "vg1"]) == 1
    finally:
        gate.set()
    assert drain_until(setup, lambda: len(setup.agent.history) == 2)
    assert sorted(r["disk"] for r in setup.agent.history) == [key0, key1]
    assert set(name for vg, name in setup.storage.threads) == set(["worker-vg0", "worker-vg1"])
    setup.agent.close()


def test_a_failed_extend_on_a_vg_worker_is_counted_and_retried():
    setup, dom, key0, key1 = two_vgs_setup()
    setup.storage.failures = [ExtendFailed("vg0/d0: lvextend failed: command timeout after 15 s", "lvm")]
    write_past_threshold(dom, "vdb")
    setup.agent.sweep()
    assert drain_until(setup, lambda: setup.agent.metrics.errors.value(kind="lvm") == 1)
    assert setup.agent.metrics.extend_failures.value(vg="vg0", reason="lvm") == 1
    watch = setup.agent.watches[(UUID1, "vdb")]
    assert watch.retry_at is not None and not watch.extending
    setup.clock.advance(watch.backoff)
    setup.agent._retry_due()  # pylint: disable=protected-access  # the run loop's retry turn
    assert drain_until(setup, lambda: setup.agent.history)
    assert setup.agent.disks[key0].size > 2 * GIB and setup.agent.history[-1]["trigger"] == "retry"
    setup.agent.close()


def test_a_paused_domain_is_resumed_when_its_vg_worker_is_done():
    setup, dom, key0, key1 = two_vgs_setup()
    pause_for_enospc(dom, "vdb")
    setup.conn.fire_io_error(dom, "vdb")
    setup.drain()
    assert dom.names_called("resume") == []  # the extend runs on the worker
    assert drain_until(setup, lambda: dom.state == RUNNING)
    assert dom.state == RUNNING and setup.agent.metrics.resumes.value() == 1
    setup.agent.close()


def test_a_reclaim_waiting_for_its_vg_lock_holds_up_no_event():
    """After a migration the claim is moved under the VG lock; while that lock cannot be had (etcd
    down), the sweep and the extends go on: the reclaim waits on its own worker."""
    setup, dom, key0, key1 = two_vgs_setup()
    gate = threading.Event()
    real = setup.storage.reclaim

    def slow_reclaim(uuid, domain_name, paths):
        gate.wait(10)
        return real(uuid, domain_name, paths)

    setup.storage.reclaim = slow_reclaim
    try:
        started = time.monotonic()
        setup.agent.sweep()
        setup.agent.sweep()  # the first reclaim still waits: not submitted again
        assert time.monotonic() - started < 1
        write_past_threshold(dom, "vdb")
        setup.agent.sweep()
        assert drain_until(setup, lambda: setup.agent.history)
        assert len(setup.storage.reclaims) <= 1
    finally:
        gate.set()
    assert drain_until(setup, lambda: not setup.agent.reclaiming)
    setup.agent.close()


def test_close_waits_for_the_running_extend_and_drops_the_queued_one():
    """systemctl stop: the agent exits only after the extend that runs (its lvextend may be between
    device suspend and resume, and systemd kills what is left once the agent is gone). The extend
    queued behind it never starts: the next start derives it again from fresh statistics."""
    setup = Setup(vg_workers=True)
    setup.storage = setup.agent.storage = GatedStorage()
    key1 = setup.storage.add("d1", 2 * GIB)
    setup.storage.add("d2", 2 * GIB)
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1")
    dom.add_disk("vdc", "/dev/vg0/d2")
    setup.agent.sweep()
    gate = setup.storage.gates["vg0"] = threading.Event()
    write_past_threshold(dom, "vdb")
    write_past_threshold(dom, "vdc")
    setup.agent.sweep()  # d1's extend runs (held at the gate), d2's waits behind it on vg0's worker
    assert wait_until(lambda: len(setup.storage.threads) == 1)
    setup.agent.stop_timeout = 10.0
    stopped_while_running = []

    def lvextend_done():
        stopped_while_running.append(setup.storage.stopped)
        gate.set()

    releasing = threading.Timer(0.5, lvextend_done)  # the lvextend takes 0.5 s
    releasing.start()
    began = time.monotonic()
    setup.agent.close()
    took = time.monotonic() - began
    releasing.join()
    assert stopped_while_running == [True]  # told first: no lvm write starts any more (LvmStorage refuses it)
    assert [e[0] for e in setup.storage.extends] == [key1] and 0.3 < took < 5
    time.sleep(0.1)
    assert len(setup.storage.threads) == 1  # d2's extend never started


class GrowingDeviceStorage(GatedStorage):
    """GatedStorage whose device here shows ``device_size`` (the kernel's view) while lvextend runs."""

    def __init__(self):
        super(GrowingDeviceStorage, self).__init__()
        self.device_size = None

    def kernel_size(self, disk):
        return self.device_size


def gated_growing_disk():
    """web01 with the 2 GiB thin disk vg0/d1 as vdb on a GrowingDeviceStorage, swept once; its
    extends wait at the returned gate."""
    setup = Setup(vg_workers=True)
    setup.storage = setup.agent.storage = GrowingDeviceStorage()
    setup.storage.add("d1", 2 * GIB)
    dom = setup.hv.add(UUID1, "web01")
    dom.add_disk("vdb", "/dev/vg0/d1")
    setup.agent.sweep()
    gate = setup.storage.gates["vg0"] = threading.Event()
    return setup, dom, gate


@pytest.mark.parametrize("grown", [True, False])
def test_a_guest_paused_on_enospc_is_resumed_once_its_device_has_grown_not_when_lvextend_returns(grown):
    """lvm commits the new metadata and then resumes the device with the new size; lvextend's tail
    (backup file, udev) took 2-4 s in the test bed. The guest waits for the device, not for that tail;
    while the device has not grown, it stays paused until the extend is done."""
    setup, dom, gate = gated_growing_disk()
    try:
        pause_for_enospc(dom)
        setup.conn.fire_io_error(dom, "vdb")
        setup.drain()  # the extend runs on vg0's worker, held at the gate (lvextend's tail)
        assert wait_until(lambda: len(setup.storage.threads) == 1)
        setup.storage.device_size = 3 * GIB if grown else 2 * GIB
        resumed = drain_until(setup, lambda: dom.names_called("resume"), timeout=0.5)
        assert bool(resumed) is grown and (dom.state == RUNNING) is grown
    finally:
        gate.set()
    watch = setup.agent.watches[(UUID1, "vdb")]
    assert drain_until(setup, lambda: not watch.extending and dom.state == RUNNING)
    assert len(dom.names_called("resume")) == 1 and not setup.agent.paused and watch.kernel_size is None
    setup.agent.close()


def test_a_guest_that_pauses_while_its_extend_already_runs_is_resumed_once_the_device_has_grown():
    """The extend began at the threshold; the guest outran it and paused before lvextend returned."""
    setup, dom, gate = gated_growing_disk()
    try:
        write_past_threshold(dom)
        setup.agent.sweep()  # the extend runs on vg0's worker, held at the gate
        assert wait_until(lambda: len(setup.storage.threads) == 1)
        pause_for_enospc(dom)
        setup.conn.fire_io_error(dom, "vdb")
        setup.drain()
        assert not drain_until(setup, lambda: dom.names_called("resume"), timeout=0.2)  # no room yet
        setup.storage.device_size = 3 * GIB
        assert drain_until(setup, lambda: dom.names_called("resume"), timeout=1.0) and dom.state == RUNNING
    finally:
        gate.set()
    watch = setup.agent.watches[(UUID1, "vdb")]
    assert drain_until(setup, lambda: not watch.extending)
    assert len(dom.names_called("resume")) == 1 and len(setup.storage.extends) == 1
    setup.agent.close()

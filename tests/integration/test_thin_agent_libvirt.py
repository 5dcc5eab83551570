# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent against a REAL libvirtd + QEMU on this machine.

A qcow2 image on a loop device is attached to a running domain; QEMU writes into it (HMP
qemu-io). The only stand-in is the extend step: the loop device grows instead of an LV
(agent_standin.LoopStorage; no device-mapper here). Events, statistics, thresholds, re-arming,
reconnection after a libvirtd restart and the duplicate-event rule all run for real.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess
import threading
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, thin_cap
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import (
    STATS_BACKING,
    STATS_BLOCK,
    Agent,
    Event,
    block_entries,
)

from agent_standin import EXTENT, LoopStorage, device_size
from libvirttest import hmp

LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE

pytestmark = pytest.mark.lvm


def qcow2_disk_xml(path, target, bus):
    return ("<disk type='block' device='disk'><driver name='qemu' type='qcow2' cache='none' io='native' "
            "error_policy='stop'/><source dev='%s'/><target dev='%s' bus='%s'/></disk>" % (path, target, bus))


def write(dom, offset, length):
    """QEMU writes ``length`` bytes at guest offset ``offset`` of the scsi disk sda."""
    return hmp(dom.name(), 'qemu-io -d scsi0-0-0-0 "write -P 0x5a %d %d"' % (offset, length))


def wait_until(predicate, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class RunningAgent(object):
    def __init__(self, agent):
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=agent.run, args=(self.stop,))
        self.thread.daemon = True

    def __enter__(self):
        self.agent.start()
        self.thread.start()
        assert wait_until(lambda: self.agent.ready, 20), "the agent never finished its first sweep"
        return self.agent

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.agent.close()


@pytest.fixture
def thin_setup(libvirt_session, nos_domain, loop_device):
    """A running domain with a qcow2 (virtual 1 GiB) on a 32 MiB loop device as sda; the storage."""
    libvirt_session.connection()
    dom = nos_domain()
    loop = loop_device(32)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", loop.path, str(GIB)], check=True)
    dom.attachDeviceFlags(qcow2_disk_xml(loop.path, "sda", "scsi"), LIVE)
    storage = LoopStorage()
    storage.add("thin1", loop, thin_cap(GIB, EXTENT))
    return dom, loop, storage


def make_agent(storage, **settings):
    # initial_write_rate 0: these tests drive the thresholds of small devices (the initial rate's own
    # tests set one); the default (1 GiB/s for 4 s) would grow a 32 MiB device to its cap at once.
    values = dict(vgs=["vg_standin"], chunk_min="32M", chunk_max="256M", headroom_seconds=2.0, sweep_interval=1.0,
                  metrics_port=19464, initial_write_rate=0)
    values.update(settings)
    return Agent(parse_agent_config(values), storage, own_event_loop=False)


def test_threshold_events_drive_extends_and_duplicates_extend_once(thin_setup):
    dom, loop, storage = thin_setup
    # chunk_max 64M: at most 64 MiB per extend, so the 170 MiB of growth below needs three extends or
    # more whatever write rate this machine measures (at 256M a fast run needed only two).
    agent = make_agent(storage, chunk_max="64M")
    with RunningAgent(agent):
        watch = next(iter(agent.watches.values()))
        assert watch.dev.startswith("sda"), watch.dev
        assert watch.armed is not None, "the first sweep arms the threshold"
        written = 0
        step = 8 * MIB
        for step_number in range(24):  # 192 MiB into a 32 MiB device: needs several extends
            assert wait_until(lambda: device_size(loop.path) >= written + step + 2 * MIB, 10), \
                "the agent did not make room in time (device %d, written %d)" % (device_size(loop.path), written)
            write(dom, written, step)
            written += step
        assert wait_until(lambda: device_size(loop.path) > written and agent.events.empty(), 10)
        time.sleep(1.5)  # one more sweep: it must not extend again
        history = list(agent.history)
        extends_before = len(history)
        # Duplicate events for the threshold that already fired: one extend at most per crossing.
        armed = watch.armed
        uuid = dom.UUIDString()
        now = agent.clock()
        agent.events.put(Event("threshold", uuid, "sda", loop.path, armed, now))
        agent.events.put(Event("threshold", uuid, watch.dev, loop.path, armed, now))
        stale = Event("threshold", uuid, "sda", loop.path, armed - MIB, now)
        agent.events.put(stale)
        time.sleep(1.0)
    history = list(agent.history)
    assert extends_before >= 3, history
    triggers = [h["trigger"] for h in history[:extends_before]]
    assert triggers.count("threshold") >= extends_before - 1, triggers
    # Sizes only grow, each extend starts where the last ended, and never above the cap.
    for before, after in zip(history, history[1:]):
        assert after["old_size"] == before["new_size"]
    assert all(h["new_size"] <= storage.caps["thin1"] for h in history)
    # The two fresh duplicates of the armed threshold cause one extend; the stale one none.
    assert len(history) - extends_before <= 1, history[extends_before:]
    assert agent.metrics.extends.value(vg="vg_standin", trigger="threshold") >= extends_before - 1
    for record in history:
        print("extend %s -> %s detect %.4f lock %.4f lvextend %.4f verify %.4f rearm %.4f total %.4f" % (
            record["old_size"] // MIB, record["new_size"] // MIB, record["detect"], record["lock"],
            record["lvextend"], record["verify"], record["rearm"], record["total"]))
    agent_part = sorted(h["total"] - h["lvextend"] for h in history)
    middle = agent_part[len(agent_part) // 2]
    print("agent's own part p50 %.4fs max %.4fs over %d extends" % (middle, agent_part[-1], len(agent_part)))


@pytest.mark.libvirtd_restart  # alone: the restart closes every connection of every worker
def test_agent_reconnects_after_libvirtd_restart_and_keeps_extending(thin_setup, libvirtd):
    dom, loop, storage = thin_setup
    agent = make_agent(storage)
    with RunningAgent(agent):
        write(dom, 0, 8 * MIB)
        libvirtd.restart()
        assert wait_until(lambda: agent.metrics.reconnects.value() >= 1, 30), "no reconnection"
        assert wait_until(lambda: agent.conn is not None, 10)
        dom = agent.conn.lookupByUUIDString(dom.UUIDString())
        written = 8 * MIB
        for step_number in range(8):
            assert wait_until(lambda: device_size(loop.path) >= written + 10 * MIB, 10)
            write(dom, written, 8 * MIB)
            written += 8 * MIB
        assert wait_until(lambda: device_size(loop.path) > written, 10)
    assert agent.metrics.libvirt_connected.value() == 1 or agent.conn is None
    assert any(h["trigger"] == "threshold" for h in agent.history), list(agent.history)


def test_failed_extends_are_retried_with_backoff(thin_setup):
    dom, loop, storage = thin_setup
    storage.fail_with = "lock"
    agent = make_agent(storage)
    with RunningAgent(agent):
        write(dom, 0, 24 * MIB)  # within the 32 MiB device, past the threshold
        assert wait_until(lambda: agent.metrics.extend_failures.value(vg="vg_standin", reason="lock") >= 2, 10)
        size_during_outage = device_size(loop.path)
        storage.fail_with = None  # the lock is back
        assert wait_until(lambda: device_size(loop.path) > size_during_outage, 10), "no retry after the outage"
    assert agent.history and agent.history[-1]["trigger"] in ("retry", "sweep", "threshold")
    assert agent.metrics.errors.value(kind="lock") >= 2


def threshold_of(conn, dom, path):
    """The block threshold libvirt has armed on the disk whose source is ``path`` (None: none)."""
    (record_dom, record), = conn.domainListGetStats([dom], STATS_BLOCK, STATS_BACKING)
    for entry in block_entries(record):
        if entry["path"] == path:
            return entry["threshold"]
    return None


def hot_attach_and_time_arming(libvirt_conn, dom, loop, agent):
    """Attach the loop's qcow2 to the running domain while the agent runs (its next sweep is far away);
    return the seconds from the attach call to a threshold armed on it."""
    sweeps = agent.metrics.sweeps.value()
    started = time.monotonic()
    dom.attachDeviceFlags(qcow2_disk_xml(loop.path, "sda", "scsi"), LIVE)
    armed = wait_until(lambda: threshold_of(libvirt_conn, dom, loop.path), 5.0, step=0.005)
    seconds = time.monotonic() - started
    assert armed, "the hot-attached disk was not armed (threshold %r)" % threshold_of(libvirt_conn, dom, loop.path)
    assert agent.metrics.sweeps.value() == sweeps, "armed by a sweep, not by the device-added event"
    assert agent.metrics.events.value(type="device_added") >= 1
    return seconds


@pytest.fixture
def attach_setup(libvirt_session, nos_domain, loop_device):
    """A running domain with nothing attached yet, and a qcow2 (virtual 1 GiB) on a 32 MiB loop device."""
    conn = libvirt_session.connection()
    dom = nos_domain()
    loop = loop_device(32)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", loop.path, str(GIB)], check=True)
    storage = LoopStorage()
    storage.add("thin1", loop, thin_cap(GIB, EXTENT))
    return conn, dom, loop, storage


def test_a_hot_attached_disk_is_armed_at_once_on_the_device_added_event(attach_setup):
    """No sweep for 10 minutes: the threshold must come from DEVICE_ADDED, within 1 s of the attach."""
    conn, dom, loop, storage = attach_setup
    agent = make_agent(storage, sweep_interval=600.0, initial_write_rate="4M")  # 4 s at 4 MiB/s: chunk_min / 2 rules
    with RunningAgent(agent):
        seconds = hot_attach_and_time_arming(conn, dom, loop, agent)
        assert threshold_of(conn, dom, loop.path) == 16 * MIB  # 32 MiB device, headroom 16 MiB
        assert storage.extends == []
    print("hot attach -> threshold armed in %.3f s" % seconds)
    assert seconds < 1.0, seconds


def test_a_hot_attached_disk_is_grown_at_once_when_the_assumed_rate_needs_it(attach_setup):
    """initial_write_rate 64M: 4 s of it (256 MiB) is more than the 32 MiB device: grown on the event,
    before any write, by chunk_max (256 MiB), and armed 256 MiB below its new end."""
    conn, dom, loop, storage = attach_setup
    agent = make_agent(storage, sweep_interval=600.0, initial_write_rate="64M")
    with RunningAgent(agent):
        seconds = hot_attach_and_time_arming(conn, dom, loop, agent)
        assert wait_until(lambda: threshold_of(conn, dom, loop.path) == 32 * MIB, 2.0), threshold_of(conn, dom, loop.path)
        # the threshold of the new size is armed while the extend runs (arm-ahead): on a busy machine
        # the loop device grows a moment after it
        assert wait_until(lambda: device_size(loop.path) == 288 * MIB, 2.0), device_size(loop.path)
    assert [h["trigger"] for h in agent.history] == ["attach"]
    print("hot attach -> armed in %.3f s, grown %s" % (seconds, storage.extends))
    assert seconds < 1.0, seconds

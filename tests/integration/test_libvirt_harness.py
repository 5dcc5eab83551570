# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proof that the libvirt harness runs a REAL libvirtd + QEMU here (see libvirttest.py).

Also the facts the product relies on, measured on this machine: SCSI hot-unplug completes and
emits DEVICE_REMOVED, virtio hot-unplug never completes without a guest OS, blockResize after the
loop device grew, block-threshold events after a write injected with HMP qemu-io, and domains that
outlive a libvirtd restart. Run with ``-s`` to see the timings.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

import libvirttest
from libvirttest import MIB, EventRecorder, LibvirtDaemon, disk_xml, domain_disks, hmp, qemu_io_write

try:
    import libvirt
except ImportError:
    libvirt = None

LIVE_AND_CONFIG = 3  # VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG


@pytest.fixture
def events(libvirt_conn):
    recorder = EventRecorder(libvirt_conn)
    try:
        yield recorder
    finally:
        recorder.close()


def attach(dom, loop, target, bus, flags=LIVE_AND_CONFIG):
    began = time.monotonic()
    dom.attachDeviceFlags(disk_xml(loop.path, target, bus), flags)
    elapsed = time.monotonic() - began
    disk = [d for d in domain_disks(dom) if d["target"] == target]
    assert len(disk) == 1, domain_disks(dom)
    return disk[0], elapsed


def test_daemon_answers(libvirtd, libvirt_conn):
    assert libvirtd.answers()
    assert libvirt_conn.getURI() == "qemu:///system"
    domain_type = libvirttest.usable_domain_type(libvirt_conn)
    print("\nlibvirtd: %s (started libvirtd=%s virtlogd=%s); domain type %s: %s; libvirt %d, QEMU %d" % (
        "started in %.2f s" % libvirtd.start_seconds if libvirtd.start_seconds is not None else "found running",
        libvirtd.started_libvirtd, libvirtd.started_virtlogd, domain_type, libvirttest.usable_domain_type.reason,
        libvirt_conn.getLibVersion(), libvirt_conn.getVersion()))
    assert domain_type in ("kvm", "qemu")


def test_nos_domain_stays_running(nos_domain, libvirt_conn):
    began = time.monotonic()
    dom = nos_domain()
    started = time.monotonic() - began
    assert dom.name().startswith(libvirttest.TEST_PREFIX)
    assert dom.isPersistent() and dom.isActive()
    time.sleep(3)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert domain_disks(dom) == []
    print("\ndomain %s (%s) defined+started in %.2f s, still running after 3 s" % (
        dom.name(), libvirttest.usable_domain_type(libvirt_conn), started))

    transient = nos_domain(persistent=False)
    assert transient.isActive() and not transient.isPersistent()
    stopped = nos_domain(start=False)
    assert stopped.isPersistent() and not stopped.isActive()


def test_hmp_error_raises(nos_domain):
    dom = nos_domain()
    assert "qemu-io" in hmp(dom.name(), "help qemu-io")
    with pytest.raises(RuntimeError, match="not found"):
        hmp(dom.name(), 'qemu-io -d no-such-device "write 0 4k"')


def test_scsi_attach_resize_write_detach(nos_domain, loop_device, events):
    dom = nos_domain()
    loop = loop_device(64)
    disk, attach_seconds = attach(dom, loop, "sda", "scsi")
    assert disk == {"type": "block", "device": "disk", "target": "sda", "bus": "scsi", "source": loop.path,
                    "driver_type": "raw", "alias": "scsi0-0-0-0"}
    inactive = domain_disks(dom, live=False)
    assert [(d["target"], d["bus"], d["source"]) for d in inactive] == [("sda", "scsi", loop.path)]
    assert dom.blockInfo("sda")[0] == 64 * MIB

    # grow the device, then tell QEMU
    loop.grow(96)
    seen_before_resize = dom.blockInfo("sda")[0]
    began = time.monotonic()
    dom.blockResize("sda", 96 * MIB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    resize_seconds = time.monotonic() - began
    assert dom.blockInfo("sda")[0] == 96 * MIB

    # QEMU writes into the disk (qemu-io on the SCSI device id = its alias)
    qemu_io_write(dom.name(), disk["alias"], "scsi", 0, 4 * MIB)
    assert dom.blockInfo("sda")[1] >= 4 * MIB  # allocation of the sparse file behind the loop

    began = time.monotonic()
    dom.detachDeviceFlags(disk_xml(loop.path, "sda", "scsi"), LIVE_AND_CONFIG)
    detach_seconds = time.monotonic() - began
    removed = events.wait_for(5, kind="device-removed", domain=dom.name(), alias="scsi0-0-0-0")
    assert removed is not None, events.events
    assert domain_disks(dom) == [] and domain_disks(dom, live=False) == []
    print("\nscsi: attach %.3f s; capacity before blockResize %d; blockResize %.3f s; detach call %.3f s, "
          "DEVICE_REMOVED %.3f s after the detach call began" % (
              attach_seconds, seen_before_resize, resize_seconds, detach_seconds, removed["time"] - began))


def test_virtio_detach_does_not_complete_without_guest_os(nos_domain, loop_device, events):
    """A fact, not a wish: virtio unplug needs the guest's cooperation, a no-OS guest never gives it."""
    dom = nos_domain()
    loop = loop_device(16)
    disk, attach_seconds = attach(dom, loop, "vdb", "virtio")
    assert disk["alias"] == "virtio-disk1"
    began = time.monotonic()
    dom.detachDeviceAlias(disk["alias"], libvirt.VIR_DOMAIN_AFFECT_LIVE)  # asynchronous: returns at once
    call_seconds = time.monotonic() - began
    assert events.wait_for(3, kind="device-removed", domain=dom.name()) is None
    assert [d["target"] for d in domain_disks(dom)] == ["vdb"]
    print("\nvirtio: attach %.3f s; detachDeviceAlias returned in %.3f s; no DEVICE_REMOVED in 3 s, vdb still there"
          % (attach_seconds, call_seconds))


@pytest.mark.parametrize("bus,target", [("virtio", "vdb"), ("scsi", "sda")])
def test_block_threshold_event(nos_domain, loop_device, events, bus, target):
    dom = nos_domain()
    loop = loop_device(64)
    disk = attach(dom, loop, target, bus, flags=libvirt.VIR_DOMAIN_AFFECT_LIVE)[0]
    dom.setBlockThreshold(target, MIB)
    began = time.monotonic()
    qemu_io_write(dom.name(), disk["alias"], bus, 0, 4 * MIB)
    written = time.monotonic()
    event = events.wait_for(5, kind="block-threshold", domain=dom.name())
    assert event is not None, events.events
    assert event["dev"] in (target, "%s[1]" % target) or event["dev"].startswith(target + "["), event
    assert event["path"] == loop.path
    assert event["threshold"] == MIB and event["excess"] > 0
    print("\n%s threshold event: dev %s excess %d; %.1f ms after the HMP call began (%.1f ms after it returned)" % (
        bus, event["dev"], event["excess"], (event["time"] - began) * 1000, (event["time"] - written) * 1000))


@pytest.mark.libvirtd_restart  # alone: the restart closes every connection of every worker
def test_restart_keeps_domains_running(libvirtd, libvirt_session, nos_domain):
    if libvirtd.libvirtd_pid() is None:
        pytest.skip("libvirtd runs without a pid file in %s: cannot restart it" % libvirtd.libvirtd_pidfile)
    dom = nos_domain()
    name = dom.name()
    old_conn = libvirt_session.connection()
    seconds = libvirtd.restart()
    conn = libvirt.open(libvirtd.uri)
    try:
        again = conn.lookupByName(name)
        assert again.isActive() and again.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        conn.close()
    session_conn = libvirt_session.connection()
    assert session_conn is not old_conn
    assert session_conn.lookupByName(name).isActive()
    print("\nlibvirtd restarted in %.2f s; %s still running" % (seconds, name))


def test_qemu_conf_kept_or_backed_up(tmp_path):
    conf = tmp_path / "qemu.conf"
    daemon = LibvirtDaemon(qemu_conf=str(conf))
    assert daemon.write_qemu_conf() is True  # none yet: written
    assert daemon.conf_settings(conf.read_text()) == {"user": "root", "group": "root"}
    assert daemon.qemu_conf_backup is None

    conf.write_text('# user = "nobody"\nuser = "root"  # ours\ngroup = "root"\nvnc_listen = "0.0.0.0"\n')
    assert daemon.write_qemu_conf() is False  # already runs QEMU as root: untouched
    assert "vnc_listen" in conf.read_text()

    conf.write_text('user = "libvirt-qemu"\n')
    assert daemon.write_qemu_conf() is True
    assert daemon.conf_settings(conf.read_text())["user"] == "root"
    with open(daemon.qemu_conf_backup) as backup:
        assert backup.read() == 'user = "libvirt-qemu"\n'

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proof that the busybox guest harness (guesttest.py) runs a REAL Linux guest under libvirt + QEMU
(TCG) here, and the facts a thin-provisioning agent relies on, measured without any agent:

* a guest writing past the end of a qcow2-on-block-device disk with ``error_policy='stop'`` makes
  QEMU pause the domain (PAUSED / IOERROR, ``diskErrors()`` NO_SPACE, IO_ERROR_REASON 'enospc');
* growing the device (``losetup -c``) and ``resume()`` lets the queued write finish;
* block-threshold events on ``vdb[<source index>]`` and on ``vdb``, and what ``getAllDomainStats``
  reports as ``physical`` before and after the device grew (no ``blockResize``).

Measured here (libvirt 9.0, QEMU 7.2, qcow2 on a loop device, ``cache='none' io='native'``):

* IO_ERROR_REASON: reason ``'enospc'``, action PAUSE, path the loop device, and ``dev`` is the
  device ALIAS (``virtio-disk1``), not the target ``vdb``.  Lifecycle: SUSPENDED/IOERROR, then
  RESUMED/UNPAUSED after ``resume()``.  ``diskErrors()`` keeps saying NO_SPACE after the device grew
  and after the resume: it is history, not the current state.
* ``setBlockThreshold('vdb[<source index>]')`` -> one event, dev ``vdb[N]``;
  ``setBlockThreshold('vdb')`` -> two events, dev ``vdb`` and dev ``vdb[N]``.  A fired threshold
  is gone from the stats (``block.<n>.threshold`` is present only while armed).
* getAllDomainStats (BLOCK, with or without the BACKING flag) lists the top layer once: name
  ``vdb``, ``backingIndex`` = its ``<source index>``; keys allocation, capacity (qcow2 virtual size),
  physical (device size), threshold (while armed), path, rd/wr/fl counters.  While paused,
  allocation (highest offset QEMU wrote, 64.3 MiB) exceeds physical (64 MiB).  After ``losetup -c``
  ``physical`` (and ``blockInfo()``) show the new size at once, without ``blockResize``.
* Timings: 40 MiB of direct writes 0.15-0.26 s; writing past the device end pauses the domain
  0.1-0.16 s after ``run()``; resume -> the remaining ~100 MiB done in 0.3-0.7 s.  Virtio hotplug with a
  guest OS: seen in the guest 0.5-0.6 s after attach; ``detachDeviceAlias`` -> DEVICE_REMOVED 0.4 s.

Run with ``-s`` to see the timings and the facts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from libvirttest import MIB, domain_disks, run

# pytest finds fixtures imported into the test module
from guesttest import (busybox_guest, guest_events, guest_image,  # noqa: F401 pylint: disable=unused-import
                       block_stats, source_index, thin_disk_xml)

try:
    import libvirt
except ImportError:
    libvirt = None

DD_DONE = r"SLTV-DD-DONE rc=(\d+) bytes=(\d+)"


def make_thin_device(loop_device, device_mib=64, virtual_mib=512):
    """A loop device of device_mib MiB over a sparse file, formatted qcow2 with virtual_mib MiB."""
    loop = loop_device(device_mib)
    run(["qemu-img", "create", "-q", "-f", "qcow2", loop.path, "%dM" % virtual_mib])
    return loop


def test_guest_boots_and_writes(guest_image, busybox_guest, loop_device):  # pylint: disable=redefined-outer-name
    loop = loop_device(32)
    guest = busybox_guest(disks=[thin_disk_xml(loop.path, driver_type="raw", serial="data0")],
                          script="sltv_dd $(sltv_disk data0) 4 0 script")
    disks = guest.wait_for(r"SLTV-GUEST-DISKS (.*)", 1).group(1).split()
    assert disks == ["vda:%d:data0" % (32 * MIB)], guest.console()
    assert "SLTV-GUEST-ERROR" not in guest.console(), guest.console()
    done = guest.wait_for(DD_DONE + " id=script", 60)
    assert done.groups() == ("0", str(4 * MIB)), guest.console()

    since = guest.mark()
    began = time.monotonic()
    guest.run("echo channel-ok $(cat /sys/block/vda/serial)")
    guest.wait_for("channel-ok data0", 10, since=since)
    roundtrip = time.monotonic() - began
    assert guest.state() == (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED)
    print("\nguest image: %s; kernel %s; boot to READY %.1f s; command round trip %.3f s" % (
        "built in %.1f s" % guest_image.build_seconds if guest_image.build_seconds is not None else "cached",
        guest_image.kernel, guest.boot_seconds, roundtrip))


def test_enospc_pause_then_grow_and_resume(libvirt_conn, busybox_guest, loop_device,  # pylint: disable=redefined-outer-name
                                           guest_events):  # pylint: disable=redefined-outer-name
    facts = []
    loop = make_thin_device(loop_device, 64, 512)
    guest = busybox_guest(disks=[thin_disk_xml(loop.path)])
    dom = guest.dom
    name = guest.name
    index = source_index(dom, "vdb")
    [disk] = [d for d in domain_disks(dom) if d["target"] == "vdb"]
    assert disk["driver_type"] == "qcow2" and disk["source"] == loop.path

    stats = block_stats(libvirt_conn, dom)
    facts.append("stats keys of vdb: %s" % sorted(stats["vdb"]))
    facts.append("disks in stats: %s" % sorted(stats))
    assert stats["vdb"]["capacity"] == 512 * MIB
    assert stats["vdb"]["physical"] == 64 * MIB, stats

    # phase 1: threshold set by index, 40 MiB written
    indexed = "vdb[%d]" % index
    dom.setBlockThreshold(indexed, 32 * MIB)
    assert block_stats(libvirt_conn, dom)["vdb"].get("threshold") == 32 * MIB
    since = guest.mark()
    began = time.monotonic()
    guest.run("sltv_dd $(sltv_disk) 40 0 phase1")
    assert guest.wait_for(DD_DONE + " id=phase1", 120, since=since).groups() == ("0", str(40 * MIB))
    phase1_seconds = time.monotonic() - began
    event = guest_events.wait_for(5, kind="block-threshold", domain=name)
    assert event is not None, guest_events.events
    time.sleep(0.5)  # a second event for the other name, if any, comes right after
    devs = sorted(e["dev"] for e in guest_events.of(name, "block-threshold"))
    facts.append("threshold set on %s -> events for %s (path %s, excess %d)" % (
        indexed, devs, event["path"], event["excess"]))
    assert indexed in devs
    assert event["path"] == loop.path and event["threshold"] == 32 * MIB
    assert "threshold" not in block_stats(libvirt_conn, dom)["vdb"]  # fired: cleared

    # phase 2: threshold set by target name, 160 MiB more: 200 MiB in all, past the 64 MiB device
    dom.setBlockThreshold("vdb", 56 * MIB)
    before = len(guest_events.events)
    since = guest.mark()
    dd_started = time.monotonic()
    guest.run("sltv_dd $(sltv_disk) 160 40 phase2")
    io_error = guest_events.wait_for(120, kind="io-error", domain=name)
    assert io_error is not None, (guest_events.events, guest.console()[-2000:])
    paused_after = io_error["time"] - dd_started
    facts.append("io-error event: %s" % {k: io_error[k] for k in ("dev", "path", "action", "reason")})
    assert io_error["reason"] == "enospc" and io_error["path"] == loop.path
    assert io_error["action"] == libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE
    assert guest.state() == (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)
    assert dom.diskErrors() == {"vdb": libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE}
    lifecycle = [(e["event"], e["detail"]) for e in guest_events.of(name, "lifecycle")]
    assert (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR) in lifecycle
    devs = sorted(e["dev"] for e in guest_events.events[before:] if e["kind"] == "block-threshold")
    facts.append("threshold set on vdb -> events for %s" % devs)
    assert devs, guest_events.events

    paused = block_stats(libvirt_conn, dom)["vdb"]
    facts.append("paused: stats physical %d allocation %d capacity %d; blockInfo %s" % (
        paused["physical"], paused["allocation"], paused["capacity"], dom.blockInfo("vdb")))
    assert paused["physical"] == 64 * MIB

    # grow the device under QEMU's feet: no blockResize
    loop.grow(1024)
    grown = block_stats(libvirt_conn, dom)["vdb"]
    facts.append("after losetup -c (no blockResize): stats physical %d capacity %d; blockInfo %s" % (
        grown["physical"], grown["capacity"], dom.blockInfo("vdb")))
    facts.append("diskErrors after growing, before resume: %s" % dom.diskErrors())

    since = guest.mark()
    resumed_at = time.monotonic()
    dom.resume()
    done = guest.wait_for(DD_DONE + " id=phase2", 180, since=since)
    resume_to_done = time.monotonic() - resumed_at
    assert done.groups() == ("0", str(160 * MIB)), guest.console()[-2000:]
    assert guest.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert len(guest_events.of(name, "io-error")) == 1, guest_events.of(name, "io-error")
    facts.append("state after resume: %s; diskErrors after resume: %s" % (guest.state(), dom.diskErrors()))
    final = block_stats(libvirt_conn, dom)["vdb"]
    facts.append("done: stats physical %d allocation %d" % (final["physical"], final["allocation"]))
    assert final["allocation"] > 200 * MIB
    lifecycle = [(e["event"], e["detail"]) for e in guest_events.of(name, "lifecycle")]
    facts.append("lifecycle events (event, detail): %s" % lifecycle)
    print("\nboot to READY %.1f s; 40 MiB dd %.2f s; 160 MiB dd: run -> IO error (pause) %.2f s, "
          "resume -> DD-DONE %.2f s\n%s" % (guest.boot_seconds, phase1_seconds, paused_after, resume_to_done,
                                            "\n".join(facts)))


def test_hotplug_virtio_disk_with_guest_os(busybox_guest, loop_device,  # pylint: disable=redefined-outer-name
                                           guest_events):  # pylint: disable=redefined-outer-name
    """With a guest OS, a hot-plugged virtio disk shows up and its unplug completes (DEVICE_REMOVED)."""
    loop = make_thin_device(loop_device, 64, 512)
    guest = busybox_guest()
    assert guest.wait_for(r"SLTV-GUEST-DISKS (.*)", 1).group(1).strip() == ""
    began = time.monotonic()
    guest.dom.attachDeviceFlags(thin_disk_xml(loop.path, serial="hot0"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    since = guest.mark()
    guest.run("echo hot-disk=$(sltv_disk hot0) size=$(cat /sys/block/vda/size)")
    seen = guest.wait_for(r"hot-disk=(\S+) size=(\d+)\s", 60, since=since)  # \s: the whole number, not a part
    attach_seconds = time.monotonic() - began
    assert seen.groups() == ("/dev/vda", str(512 * MIB // 512)), guest.console()[-2000:]
    [disk] = [d for d in domain_disks(guest.dom) if d["target"] == "vdb"]

    began = time.monotonic()
    guest.dom.detachDeviceAlias(disk["alias"], libvirt.VIR_DOMAIN_AFFECT_LIVE)
    removed = guest_events.wait_for(60, kind="device-removed", domain=guest.name, alias=disk["alias"])
    assert removed is not None, guest_events.events
    assert domain_disks(guest.dom) == []
    print("\nvirtio hotplug with a guest OS: attach -> seen in the guest %.2f s; detachDeviceAlias -> "
          "DEVICE_REMOVED %.2f s" % (attach_seconds, removed["time"] - began))

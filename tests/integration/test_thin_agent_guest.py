# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent and a REAL guest: a busybox Linux under libvirt + QEMU (TCG) writes with dd
into a qcow2 thin disk on a loop device (the LV's stand-in, agent_standin.LoopStorage).

* The guest outruns a slowed-down extend: QEMU pauses the domain with ENOSPC (error_policy=stop),
  the agent extends and resumes it, and the guest's dd completes with every block written.
* While extends fail (VG full), the domain stays paused; it is resumed once they succeed.
* A domain paused by the user is never resumed by the agent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.model.sizes import MIB, thin_cap

from agent_standin import EXTENT, LoopStorage, device_size
from libvirttest import run
from test_thin_agent_libvirt import RunningAgent, make_agent, wait_until

# pytest finds fixtures imported into the test module
from guesttest import busybox_guest, guest_image, thin_disk_xml  # noqa: F401 pylint: disable=unused-import

try:
    import libvirt
except ImportError:
    libvirt = None

pytestmark = pytest.mark.lvm

DD_DONE = r"SLTV-DD-DONE rc=(\d+) bytes=(\d+) id=%s"
VIRTUAL_MIB = 512


def thin_guest(busybox_guest, loop_device, device_mib=64):  # pylint: disable=redefined-outer-name
    loop = loop_device(device_mib)
    run(["qemu-img", "create", "-q", "-f", "qcow2", loop.path, "%dM" % VIRTUAL_MIB])
    guest = busybox_guest(disks=[thin_disk_xml(loop.path)])
    storage = LoopStorage()
    storage.add("thin1", loop, thin_cap(VIRTUAL_MIB * MIB, EXTENT))
    return guest, loop, storage


def paused_for_io(guest):
    return guest.state() == (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)


def test_guest_past_the_device_end_pauses_with_enospc_and_is_resumed(busybox_guest, loop_device):  # pylint: disable=redefined-outer-name
    guest, loop, storage = thin_guest(busybox_guest, loop_device)
    storage.extend_delay = 1.5  # slower than the guest's writes: it must hit the end of the device
    agent = make_agent(storage, chunk_min="32M", chunk_max="32M")
    with RunningAgent(agent):
        since = guest.mark()
        began = time.monotonic()
        guest.run("sltv_dd $(sltv_disk) 300 0 big")
        done = guest.wait_for(DD_DONE % "big", 180, since=since)
        seconds = time.monotonic() - began
        assert done.groups() == ("0", str(300 * MIB)), guest.console()[-2000:]
        assert wait_until(lambda: guest.state()[0] == libvirt.VIR_DOMAIN_RUNNING, 10)
    pauses = agent.metrics.pauses.value(reason="enospc")
    resumes = agent.metrics.resumes.value()
    print("\n300 MiB dd in %.1f s through %d ENOSPC pauses, %d resumes, %d extends; device %d MiB, cap %d MiB" % (
        seconds, pauses, resumes, len(agent.history), device_size(loop.path) // MIB, storage.caps["thin1"] // MIB))
    assert pauses >= 1, "the guest never hit the end of the device: the test proves nothing"
    assert resumes >= pauses
    assert agent.metrics.pauses.value(reason="other") == 0
    assert any(h["trigger"] == "enospc" for h in agent.history), list(agent.history)
    assert device_size(loop.path) <= storage.caps["thin1"]


def test_domain_stays_paused_while_extends_fail_then_resumes(busybox_guest, loop_device):  # pylint: disable=redefined-outer-name
    guest, loop, storage = thin_guest(busybox_guest, loop_device)
    storage.fail_with = "vg_full"
    agent = make_agent(storage, chunk_min="32M", chunk_max="32M")
    with RunningAgent(agent):
        since = guest.mark()
        guest.run("sltv_dd $(sltv_disk) 100 0 full")
        assert wait_until(lambda: paused_for_io(guest), 60), "the guest never paused"
        time.sleep(3)  # several retries with back-off: still paused, never resumed half-way
        assert paused_for_io(guest)
        assert agent.metrics.extend_failures.value(vg="vg_standin", reason="vg_full") >= 2
        assert agent.metrics.resumes.value() == 0
        storage.fail_with = None  # space was added to the VG
        done = guest.wait_for(DD_DONE % "full", 120, since=since)
        assert done.groups() == ("0", str(100 * MIB)), guest.console()[-2000:]
    assert agent.metrics.resumes.value() >= 1


def test_domain_paused_by_the_user_is_never_resumed(busybox_guest, loop_device):  # pylint: disable=redefined-outer-name
    guest, loop, storage = thin_guest(busybox_guest, loop_device)
    agent = make_agent(storage)
    with RunningAgent(agent):
        guest.dom.suspend()
        time.sleep(3)  # three sweeps
        assert guest.state() == (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER)
        assert agent.metrics.resumes.value() == 0
        guest.dom.resume()

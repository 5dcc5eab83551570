# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The product's libvirt layer (module_utils.libvirt_domain) on a REAL libvirtd + QEMU, with loop
devices standing in for active LVs: attach with the product's XML, detach that waits for QEMU,
blockInfo and blockResize, finding a disk's users."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

import libvirttest
from libvirttest import MIB

from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import disk_element, parse_disks
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import DetachTimeout, DomainNotFound, Hypervisor


@pytest.fixture
def hypervisor(libvirtd):
    hv = Hypervisor("qemu:///system")
    try:
        yield hv
    finally:
        hv.close()


def test_lookup_by_name_and_uuid(hypervisor, nos_domain):
    dom = nos_domain(persistent=True, start=True)
    by_name = hypervisor.lookup(dom.name())
    by_uuid = hypervisor.lookup(dom.UUIDString())
    assert by_name.uuid == by_uuid.uuid == dom.UUIDString()
    assert by_name.running and by_name.persistent and by_name.state_name() == "running"
    with pytest.raises(DomainNotFound) as info:
        hypervisor.lookup("sltvtest-nope")
    assert "sltvtest-nope" in str(info.value)


def test_scsi_attach_resize_and_detach_that_waits_for_qemu(hypervisor, nos_domain, loop_device):
    dom = hypervisor.lookup(nos_domain(persistent=True, start=True).name())
    loop = loop_device(64)
    began = time.monotonic()
    dom.attach(disk_element(loop.path, "raw", "sda", "scsi", serial="loop0"), live=True, config=True)
    attach_seconds = time.monotonic() - began
    live = [d for d in parse_disks(dom.xml(True)) if d.source == loop.path]
    config = [d for d in parse_disks(dom.xml(False)) if d.source == loop.path]
    assert [d.target for d in live] == ["sda"] and [d.target for d in config] == ["sda"]
    assert live[0].attrs["cache"] == "none" and live[0].attrs["io"] == "native"
    assert dom.block_info("sda")[0] == 64 * MIB

    with libvirttest.domain_scan():  # no domain of another test undefined in the middle of the scan
        users = hypervisor.users_of((loop.path,))
    assert sorted((u[0].uuid, u[1].target, u[2]) for u in users) == [(dom.uuid, "sda", False), (dom.uuid, "sda", True)]

    loop.grow(96)
    dom.block_resize("sda", 96 * MIB)
    assert dom.block_info("sda")[0] == 96 * MIB

    began = time.monotonic()
    dom.detach_live(live[0], timeout=10)
    detach_seconds = time.monotonic() - began
    assert not [d for d in parse_disks(dom.xml(True)) if d.source == loop.path]
    dom.detach_config(config[0])
    assert not [d for d in parse_disks(dom.xml(False)) if d.source == loop.path]
    print("\nattach %.1f ms, detach (until the live XML dropped it) %.1f ms" % (attach_seconds * 1e3, detach_seconds * 1e3))


def test_virtio_detach_without_a_guest_times_out_and_the_disk_stays(hypervisor, nos_domain, loop_device):
    dom = hypervisor.lookup(nos_domain(persistent=True, start=True).name())
    loop = loop_device(16)
    dom.attach(disk_element(loop.path, "raw", "vdb", "virtio"), live=True, config=False)
    disk = [d for d in parse_disks(dom.xml(True)) if d.source == loop.path][0]
    with pytest.raises(DetachTimeout) as info:
        dom.detach_live(disk, timeout=2)
    assert "has not released vdb" in str(info.value) and dom.name in str(info.value)
    assert [d.target for d in parse_disks(dom.xml(True)) if d.source == loop.path] == ["vdb"]

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Domain XML logic: targets, disk elements, LV paths, and what the hook reads from the XML."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import (
    disk_element, find_disk, lv_device_paths, parse_disks, pick_target, target_name, validate_serial,
    validate_target,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.hook.libvirt_hook import candidate_lvs, lv_of_path

DOMAIN = """<domain type='kvm'><name>web01</name><uuid>7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11</uuid>
<devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/root.qcow2'/>
    <target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>
  <disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>
    <source dev='/dev/vg_san/web01-data'/><target dev='vdb' bus='virtio'/><serial>data</serial></disk>
  <disk type='block' device='disk'><driver name='qemu' type='raw'/>
    <source dev='/dev/mapper/vg--x-my--disk'/><target dev='sda' bus='scsi'/><shareable/></disk>
  <disk type='file' device='cdrom'><target dev='sdb' bus='scsi'/></disk>
</devices></domain>"""


def test_parse_disks_reads_every_disk_with_its_attributes():
    disks = parse_disks(DOMAIN)
    assert [d.target for d in disks] == ["vda", "vdb", "sda", "sdb"]
    data = disks[1]
    assert (data.source, data.driver_type, data.bus) == ("/dev/vg_san/web01-data", "raw", "virtio")
    assert data.attrs["cache"] == "none" and data.attrs["serial"] == "data"
    assert disks[2].shareable and not data.shareable
    assert disks[3].source is None


@pytest.mark.parametrize("index,name", [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab"), (701, "vdzz")])
def test_target_names_follow_libvirt(index, name):
    assert target_name("vd", index) == name


def test_pick_target_takes_the_first_free_name_of_the_bus():
    assert pick_target("virtio", ["vda", "vdb", "sda"]) == "vdc"
    assert pick_target("scsi", ["vda", "sda", "sdc"]) == "sdb"
    assert pick_target("virtio", []) == "vda"
    used = [target_name("vd", i) for i in range(30)]
    assert pick_target("virtio", used) == "vdae"


@pytest.mark.parametrize("target,bus", [("vdb", "scsi"), ("sdb", "virtio"), ("vd1", "virtio"), ("/dev/vdb", "virtio"),
                                        ("vdb;", "virtio"), ("", "virtio")])
def test_bad_targets_are_refused(target, bus):
    with pytest.raises(ValidationError):
        validate_target(target, bus)


def test_serial_rules():
    assert validate_serial("db01-data") == "db01-data"
    for bad in ("x" * 21, "a b", "a'b", ""):
        with pytest.raises(ValidationError):
            validate_serial(bad)


def test_disk_element_for_a_thin_disk():
    xml = disk_element("/dev/vg0/t1", "qcow2", "vdc", "virtio", discard="unmap", serial="t1", error_policy="stop")
    node = ET.fromstring(xml)
    driver = node.find("driver")
    assert node.get("type") == "block"
    assert driver.attrib == {"name": "qemu", "type": "qcow2", "cache": "none", "io": "native",
                             "discard": "unmap", "error_policy": "stop"}
    assert node.find("source").get("dev") == "/dev/vg0/t1"
    assert node.find("target").attrib == {"dev": "vdc", "bus": "virtio"}
    assert node.find("serial").text == "t1"
    assert node.find("shareable") is None


def test_lv_paths_and_find_disk():
    paths = lv_device_paths("vg-x", "my-disk")
    assert paths == ("/dev/vg-x/my-disk", "/dev/mapper/vg--x-my--disk")
    assert find_disk(parse_disks(DOMAIN), paths).target == "sda"
    assert find_disk(parse_disks(DOMAIN), lv_device_paths("vg_san", "other")) is None


@pytest.mark.parametrize("path,expected", [
    ("/dev/vg_san/web01-data", ("vg_san", "web01-data")),
    ("/dev/mapper/vg--x-my--disk", ("vg-x", "my-disk")),
    ("/dev/mapper/vg0-d1", ("vg0", "d1")),
    ("/dev/sda", None), ("/var/lib/libvirt/images/root.qcow2", None), (None, None), ("/dev/mapper/control", None),
])
def test_hook_maps_paths_to_lvs(path, expected):
    assert lv_of_path(path) == expected


def test_hook_candidates_from_the_domain_xml():
    assert candidate_lvs(DOMAIN) == [("vg_san", "web01-data", False), ("vg-x", "my-disk", True)]

# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Domain XML, read and written as data (pure logic, no libvirt): the disks a domain has, which
target names are free, and the <disk> element sltv attaches."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import xml.etree.ElementTree as ET

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError

BUSES = {"virtio": "vd", "scsi": "sd"}
CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe")
IO_MODES = ("native", "threads", "io_uring")
DISCARD_MODES = ("unmap", "ignore")
# \Z, not $: "$" matches before a trailing newline ("vdb\n" would pass)
_TARGET_RE = re.compile(r"^(vd|sd|hd|xvd)([a-z]{1,3})\Z")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,20}\Z")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z")


class DomainDisk(object):
    """One <disk> of a domain."""

    def __init__(self, target, bus, source, driver_type, alias, shareable, attrs, index=None):
        self.target = target
        self.index = index  # <source index='N'> in live XML: block-threshold events name 'vdb[N]'
        self.bus = bus
        self.source = source
        self.driver_type = driver_type
        self.alias = alias
        self.shareable = shareable
        self.attrs = attrs  # driver attributes (cache, io, discard, error_policy) and serial

    def to_dict(self):
        return dict(target=self.target, bus=self.bus, source=self.source, driver_type=self.driver_type,
                    alias=self.alias, shareable=self.shareable, **self.attrs)


def looks_like_uuid(text):
    return bool(_UUID_RE.match(text or ""))


def parse_disks(xml_text):
    """Every <disk> of a domain's XML (cdroms and network disks included: they use targets too)."""
    root = ET.fromstring(xml_text)
    disks = []
    for node in root.findall("./devices/disk"):
        target = node.find("target")
        source = node.find("source")
        driver = node.find("driver")
        alias = node.find("alias")
        serial = node.find("serial")
        path = None
        if source is not None:
            path = source.get("dev") or source.get("file") or source.get("name")
        attrs = {}
        if driver is not None:
            for key in ("cache", "io", "discard", "error_policy"):
                attrs[key] = driver.get(key)
        attrs["serial"] = serial.text if serial is not None else None
        disks.append(DomainDisk(
            target=target.get("dev") if target is not None else None,
            bus=target.get("bus") if target is not None else None,
            source=path,
            driver_type=driver.get("type") if driver is not None else None,
            alias=alias.get("name") if alias is not None else None,
            shareable=node.find("shareable") is not None,
            attrs=attrs,
            index=source.get("index") if source is not None else None,
        ))
    return disks


def domain_uuid(xml_text):
    node = ET.fromstring(xml_text).find("uuid")
    return node.text.strip() if node is not None and node.text else None


def lv_device_paths(vg, lv):
    """The paths under which a domain may name an LV: /dev/VG/LV and /dev/mapper/VG-LV."""
    mapper = "/dev/mapper/%s-%s" % (vg.replace("-", "--"), lv.replace("-", "--"))
    return ("/dev/%s/%s" % (vg, lv), mapper)


def find_disk(disks, paths):
    for disk in disks:
        if disk.source in paths:
            return disk
    return None


def target_name(prefix, index):
    """libvirt's naming: 0 -> a, 25 -> z, 26 -> aa, ... (vda, vdz, vdaa)."""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def validate_target(target, bus):
    match = _TARGET_RE.match(target or "")
    if not match:
        raise ValidationError("target %r is not a disk target name such as vdb or sdb" % (target,))
    if match.group(1) != BUSES[bus]:
        raise ValidationError("target %r does not fit bus %s: use a %s* name" % (target, bus, BUSES[bus]))
    return target


def validate_serial(serial):
    if serial is not None and not _SERIAL_RE.match(serial):
        raise ValidationError("serial %r must be 1 to 20 characters out of A-Z a-z 0-9 _ . + -" % (serial,))
    return serial


def pick_target(bus, used):
    """The first free target of ``bus`` that no disk of the domain (live or persistent) uses."""
    prefix = BUSES[bus]
    used = set(used)
    for index in range(26 * 27):
        name = target_name(prefix, index)
        if name not in used:
            return name
    raise ValidationError("no free %s target left" % bus)


def disk_element(path, driver_type, target, bus, cache="none", io="native", discard=None, serial=None,
                 error_policy=None, shareable=False):
    """The <disk> XML that sltv attaches (a block device, never a file)."""
    disk = ET.Element("disk", type="block", device="disk")
    driver = ET.SubElement(disk, "driver", name="qemu", type=driver_type, cache=cache, io=io)
    if discard:
        driver.set("discard", discard)
    if error_policy:
        driver.set("error_policy", error_policy)
    ET.SubElement(disk, "source", dev=path)
    ET.SubElement(disk, "target", dev=target, bus=bus)
    if serial:
        ET.SubElement(disk, "serial").text = serial
    if shareable:
        ET.SubElement(disk, "shareable")
    return ET.tostring(disk).decode("utf-8")


def detach_element(disk):
    """A minimal <disk> that libvirt matches against an attached disk (by target)."""
    node = ET.Element("disk", type="block", device="disk")
    ET.SubElement(node, "source", dev=disk.source)
    ET.SubElement(node, "target", dev=disk.target, bus=disk.bus or "virtio")
    return ET.tostring(node).decode("utf-8")

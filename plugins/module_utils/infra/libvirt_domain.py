# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt side: find a domain, read its disks (live and persistent), attach, detach and
resize. libvirt-python is imported only here, and only when a connection is opened."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import (
    detach_element, looks_like_uuid, parse_disks,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError

DEFAULT_URI = "qemu:///system"


class LibvirtError(SltvError):
    """libvirt refused or failed; the message says what and on which domain."""


class DomainNotFound(LibvirtError):
    pass


class DetachTimeout(LibvirtError):
    pass


def import_libvirt():
    try:
        import libvirt  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LibvirtError("the Python libvirt bindings are not installed on this host "
                           "(Debian/Ubuntu: python3-libvirt, EL: python3-libvirt)")
    return libvirt


def _silence(ctx, err):
    """libvirt prints every error to stderr by default; the exceptions carry them already."""


class Hypervisor(object):
    """A libvirt connection with the few calls sltv needs."""

    def __init__(self, uri=DEFAULT_URI):
        self.libvirt = import_libvirt()
        self.libvirt.registerErrorHandler(_silence, None)
        self.uri = uri
        try:
            self.conn = self.libvirt.open(uri)
        except self.libvirt.libvirtError as exc:
            raise LibvirtError("cannot connect to libvirt at %s: %s (is libvirtd running?)" % (uri, exc))

    def close(self):
        try:
            self.conn.close()
        except self.libvirt.libvirtError:
            pass

    def lookup(self, ident):
        """A domain by UUID or name."""
        try:
            if looks_like_uuid(ident):
                try:
                    return Domain(self, self.conn.lookupByUUIDString(ident))
                except self.libvirt.libvirtError:
                    pass  # a domain may be named like a UUID
            return Domain(self, self.conn.lookupByName(ident))
        except self.libvirt.libvirtError:
            raise DomainNotFound("domain %r is not defined on this host (virsh list --all shows the "
                                 "domains here)" % (ident,))

    def domains(self):
        return [Domain(self, dom) for dom in self.conn.listAllDomains(0)]

    def disk_users(self):
        """{source path: [(domain, DomainDisk, live)]} over every domain of this host, in one scan."""
        users = {}
        for dom in self.domains():
            for view in dom.disk_views():
                for disk in view[2]:
                    users.setdefault(disk.source, []).append((dom, disk, view[0]))
        return users

    def users_of(self, paths, disk_users=None):
        """(domain, DomainDisk, live) for every domain of this host whose XML names one of ``paths``."""
        disk_users = self.disk_users() if disk_users is None else disk_users
        return [user for path in paths for user in disk_users.get(path, [])]


class Domain(object):
    def __init__(self, hypervisor, dom):
        self.hv = hypervisor
        self.libvirt = hypervisor.libvirt
        self.dom = dom
        self.name = dom.name()
        self.uuid = dom.UUIDString()

    def _call(self, what, func, *args):
        try:
            return func(*args)
        except self.libvirt.libvirtError as exc:
            raise LibvirtError("domain %s: %s failed: %s" % (self.name, what, exc.get_error_message() or exc))

    @property
    def running(self):
        """True while QEMU runs (running or paused): live changes apply."""
        return bool(self._call("isActive", self.dom.isActive))

    @property
    def persistent(self):
        return bool(self._call("isPersistent", self.dom.isPersistent))

    def state_name(self):
        state = self._call("state", self.dom.state)[0]
        names = {self.libvirt.VIR_DOMAIN_RUNNING: "running", self.libvirt.VIR_DOMAIN_PAUSED: "paused",
                 self.libvirt.VIR_DOMAIN_SHUTOFF: "shutoff", self.libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
                 self.libvirt.VIR_DOMAIN_CRASHED: "crashed"}
        return names.get(state, "other")

    def xml(self, live):
        flags = 0 if live else self.libvirt.VIR_DOMAIN_XML_INACTIVE
        return self._call("XMLDesc", self.dom.XMLDesc, flags)

    def disk_views(self):
        """[(live, xml, disks)] for the live XML (if running) and the persistent XML (if persistent)."""
        views = []
        for live, wanted in ((True, self.running), (False, self.persistent)):
            if wanted:
                xml_text = self.xml(live)
                views.append((live, xml_text, parse_disks(xml_text)))
        return views

    def _flags(self, live, config):
        flags = 0
        if live:
            flags |= self.libvirt.VIR_DOMAIN_AFFECT_LIVE
        if config:
            flags |= self.libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return flags

    def attach(self, disk_xml, live, config):
        self._call("attaching a disk", self.dom.attachDeviceFlags, disk_xml, self._flags(live, config))

    def detach_config(self, disk):
        self._call("detaching %s from the persistent definition" % disk.target, self.dom.detachDeviceFlags,
                   detach_element(disk), self._flags(False, True))

    def detach_live(self, disk, timeout):
        """Ask QEMU to unplug ``disk`` and wait until the live XML no longer has it.

        The guest must acknowledge a hot-unplug (virtio, PCI); without that QEMU keeps the device
        open, so success is only claimed once libvirt's live XML has dropped the target.
        """
        self._call("detaching %s" % disk.target, self.dom.detachDeviceFlags, detach_element(disk),
                   self._flags(True, False))
        deadline = time.time() + timeout
        delay = 0.02
        while True:
            if not self.running or not any(d.target == disk.target for d in parse_disks(self.xml(True))):
                return
            if time.time() >= deadline:
                raise DetachTimeout(
                    "domain %s has not released %s (%s) within %.0f s: the guest did not acknowledge "
                    "the unplug (no OS, or no hotplug support). The disk stays attached; the unplug "
                    "request may still complete later. Shut the domain down, or raise detach_timeout"
                    % (self.name, disk.target, disk.source, timeout))
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def block_info(self, target):
        """(capacity, allocation, physical) in bytes, as QEMU sees the disk now."""
        return tuple(self._call("blockInfo(%s)" % target, self.dom.blockInfo, target))

    def block_resize(self, target, size):
        self._call("blockResize(%s, %d bytes)" % (target, size), self.dom.blockResize, target, size,
                   self.libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

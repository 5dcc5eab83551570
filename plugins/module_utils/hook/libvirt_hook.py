# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt QEMU hook: activate a domain's sltv LVs before QEMU opens them, deactivate them
once QEMU has let go. Installed as /etc/libvirt/hooks/qemu.d/sltv, a script that calls hook_main().

libvirt calls ``qemu.d/<script> <domain> <operation> <sub-operation> <extra>`` with the domain
XML on stdin. What happens here:

* ``prepare begin`` (start, restore, and the destination of a live migration): activate;
  a failure exits 1 and libvirt refuses to start the domain, with our message;
* ``migrate begin`` (destination only, before ``prepare``): remember that the domain comes in by
  migration, so that on an lvmlockd VG the LV is activated shared (the source still holds it);
* ``release end`` (after QEMU exited: shutdown, destroy, the source after a migration, a failed
  incoming migration): deactivate;
* anything else: nothing.

It never calls libvirt (a hook that does deadlocks libvirtd), runs lvm with argv lists only,
and logs each action to syslog (the journal).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket
import sys
import syslog

from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import domain_uuid, parse_disks
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner, VgNotFound

STATE_DIR = "/run/sltv/hook"
_DEV_PATH = re.compile(r"^/dev/(?!mapper/)([A-Za-z0-9+_.-]+)/([A-Za-z0-9+_.-]+)$")
_MAPPER_PATH = re.compile(r"^/dev/mapper/((?:[^-]|--)+)-((?:[^-]|--)+)$")


def lv_of_path(path):
    """(vg, lv) for /dev/VG/LV or /dev/mapper/VG-LV, else None."""
    match = _DEV_PATH.match(path or "")
    if match:
        return match.group(1), match.group(2)
    match = _MAPPER_PATH.match(path or "")
    if match:
        return match.group(1).replace("--", "-"), match.group(2).replace("--", "-")
    return None


def candidate_lvs(xml_text):
    """(vg, lv, shareable) of every block disk of the domain that names an LV path."""
    found = []
    for disk in parse_disks(xml_text):
        names = lv_of_path(disk.source)
        if names and names not in [(vg, lv) for vg, lv, _s in found]:
            found.append(names + (disk.shareable,))
    return found


def managed_lvs(runner, xml_text):
    """[(vg, lv, shareable, vg_shared, active, claims)] of the domain's disks that are sltv LVs."""
    wanted = candidate_lvs(xml_text)
    result = []
    for vg_name in sorted(set(vg for vg, _lv, _s in wanted)):
        try:
            # only the domain's LVs: the hook runs inside libvirt's domain start, on VGs of 10,000 disks too
            vg = runner.read_vg(vg_name, sorted(set(lv for name, lv, _s in wanted if name == vg_name)))
        except VgNotFound:
            continue  # a /dev/X/Y path that is not an LVM volume
        for name, lv_name, shareable in wanted:
            lv = vg.lvs.get(lv_name) if name == vg_name else None
            if lv is not None and T.MANAGED in lv.tags:
                result.append((vg_name, lv_name, shareable, vg.shared, lv.active, O.claims_in_tags(lv.tags)))
    return result


class Hook(object):
    def __init__(self, runner=None, state_dir=STATE_DIR, log=None, host=None):
        self.runner = runner or LvmRunner()
        self.state_dir = state_dir
        self.log = log or _syslog
        self.host = host or socket.gethostname()

    def _marker(self, uuid):
        return os.path.join(self.state_dir, "incoming-%s" % uuid)

    def run(self, domain, operation, sub_operation, xml_text):
        """Returns 0, or raises SltvError (the caller prints it and exits 1)."""
        if operation == "migrate" and sub_operation == "begin":
            self._mark_incoming(xml_text)
            return 0
        if operation == "prepare" and sub_operation == "begin":
            self._activate(domain, xml_text)
        elif operation == "release" and sub_operation == "end":
            self._deactivate(domain, xml_text)
        elif operation == "started" and sub_operation == "begin":
            self._clear_incoming(xml_text)
        return 0

    def _mark_incoming(self, xml_text):
        uuid = domain_uuid(xml_text)
        if uuid:
            if not os.path.isdir(self.state_dir):
                os.makedirs(self.state_dir, 0o700)
            with open(self._marker(uuid), "w") as marker:
                marker.write("incoming\n")

    def _clear_incoming(self, xml_text):
        uuid = domain_uuid(xml_text)
        if uuid and os.path.exists(self._marker(uuid)):
            os.unlink(self._marker(uuid))

    def _activate(self, domain, xml_text):
        uuid = domain_uuid(xml_text)
        incoming = bool(uuid) and os.path.exists(self._marker(uuid))
        found = managed_lvs(self.runner, xml_text)
        # The ownership rule first, for every disk: a domain that may not have one of its disks
        # activates none of them (libvirt then refuses to start it, with this message).
        for vg, lv, shareable, _vg_shared, _active, claims in found:
            O.decide(O.ACTIVATE, "sltv hook: disk %s in VG %s" % (lv, vg), claims, self.host, uuid, domain,
                     shareable=shareable, incoming=incoming)
        for vg, lv, shareable, vg_shared, active, _claims in found:
            if active:
                continue
            # On an lvmlockd VG the source of a migration holds the LV: the destination can only
            # take it shared. Everything else is exclusive unless the disk is shareable.
            exclusive = not (shareable or incoming)
            try:
                self.runner.activate(vg, lv, exclusive=exclusive, shared_vg=vg_shared)
            except SltvError as exc:
                raise SltvError("sltv hook: cannot activate %s/%s for domain %s on this host: %s"
                                % (vg, lv, domain, exc))
            self.log("activated %s/%s for domain %s%s" % (vg, lv, domain, " (incoming migration)" if incoming else ""))

    def _deactivate(self, domain, xml_text):
        self._clear_incoming(xml_text)
        failures = []
        for vg, lv, _shareable, _vg_shared, active, _claims in managed_lvs(self.runner, xml_text):
            if not active:
                continue
            try:
                self.runner.deactivate(vg, lv)
                self.log("deactivated %s/%s after domain %s" % (vg, lv, domain))
            except SltvError as exc:  # e.g. still open by another domain (shareable disk)
                failures.append("%s/%s: %s" % (vg, lv, exc))
        if failures:
            raise SltvError("sltv hook: could not deactivate after domain %s: %s" % (domain, "; ".join(failures)))


def _syslog(message):
    syslog.openlog("sltv-hook", 0, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_INFO, message)


def hook_main(argv=None, stdin=None):
    """Entry point of the installed hook script: ``<domain> <operation> <sub-op> <extra>``."""
    argv = sys.argv[1:] if argv is None else argv
    stdin = sys.stdin if stdin is None else stdin
    if len(argv) < 3:
        sys.stderr.write("usage: sltv hook DOMAIN OPERATION SUB-OPERATION [EXTRA] < domain.xml\n")
        return 2
    domain, operation, sub_operation = argv[0], argv[1], argv[2]
    if operation not in ("migrate", "prepare", "release", "started"):
        return 0  # read nothing, touch nothing: most calls need no lvm at all
    xml_text = stdin.read()
    try:
        return Hook().run(domain, operation, sub_operation, xml_text)
    except SltvError as exc:
        _syslog(str(exc))
        sys.stderr.write("%s\n" % exc)
        return 1

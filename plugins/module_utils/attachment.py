# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attach a disk to a libvirt domain, or detach it, with the LV tags and activation kept true.

Attach: claim the disk in its LV tags under the VG lock (so a second host sees the claim at
once), activate the LV here if the domain runs, then attach. A failed attach undoes the claim.
Detach: detach live and wait until QEMU has let go, detach from the persistent definition,
deactivate, then drop the claim. A detach that times out changes nothing that is still true.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

from ansible_collections.sltv.core.plugins.module_utils import tags as T
from ansible_collections.sltv.core.plugins.module_utils.critical_section import CriticalSection
from ansible_collections.sltv.core.plugins.module_utils.disk import FORMAT_OF, THIN, Disk
from ansible_collections.sltv.core.plugins.module_utils.domain_xml import (
    BUSES, CACHE_MODES, DISCARD_MODES, IO_MODES, disk_element, find_disk, lv_device_paths, pick_target,
    validate_serial, validate_target,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError, SltvError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.libvirt_domain import DomainNotFound
from ansible_collections.sltv.core.plugins.module_utils.names import validate_disk_name, validate_vg_name

# Plan actions, in the order they run.
CLAIM = "claim"                  # add this domain's sltv_attached tag (under the VG lock)
ACTIVATE = "activate"            # lvchange -ay here (the domain runs)
ATTACH_LIVE = "attach_live"
ATTACH_CONFIG = "attach_config"
DETACH_LIVE = "detach_live"
DETACH_CONFIG = "detach_config"
DEACTIVATE = "deactivate"
UNCLAIM = "unclaim"              # drop the tag (under the VG lock)

DEFAULT_DETACH_TIMEOUT = 30.0


class AttachSpec(object):
    """What the user asked for, validated before any command runs."""

    def __init__(self, disk, vg, domain, state="present", target=None, bus="virtio", live=True, persistent=True,
                 cache="none", io="native", discard=None, serial=None, shareable=False,
                 detach_timeout=DEFAULT_DETACH_TIMEOUT):
        self.disk = validate_disk_name(disk)
        self.vg = validate_vg_name(vg)
        if not domain or not isinstance(domain, str):
            raise ValidationError("domain must be a domain name or UUID")
        if state not in ("present", "absent"):
            raise ValidationError("state must be present or absent, got %r" % (state,))
        if bus not in BUSES:
            raise ValidationError("bus must be one of %s, got %r" % (", ".join(BUSES), bus))
        for value, allowed, what in ((cache, CACHE_MODES, "cache"), (io, IO_MODES, "io")):
            if value not in allowed:
                raise ValidationError("%s must be one of %s, got %r" % (what, ", ".join(allowed), value))
        if discard is not None and discard not in DISCARD_MODES:
            raise ValidationError("discard must be one of %s, got %r" % (", ".join(DISCARD_MODES), discard))
        if io == "native" and cache not in ("none", "directsync"):
            raise ValidationError("io=native needs cache=none or cache=directsync (QEMU refuses it otherwise)")
        if detach_timeout is None or detach_timeout <= 0:
            raise ValidationError("detach_timeout must be greater than 0 seconds")
        self.domain = domain
        self.state = state
        self.target = validate_target(target, bus) if target else None
        self.bus = bus
        self.live = bool(live)
        self.persistent = bool(persistent)
        self.cache = cache
        self.io = io
        self.discard = discard
        self.serial = validate_serial(serial)
        self.shareable = bool(shareable)
        self.detach_timeout = float(detach_timeout)


class AttachResult(object):
    def __init__(self):
        self.changed = False
        self.actions = []
        self.warnings = []
        self.lock_wait = 0.0
        self.target = None
        self.domain = {}
        self.disk = {}
        self.xml_before = ""
        self.xml_after = ""


def read_disk(runner, vg_name, disk_name):
    """(VolumeGroup, Disk) of a managed, usable disk; clear errors otherwise."""
    vg = runner.read_vg(vg_name)
    lv = vg.lvs.get(disk_name)
    if lv is None:
        raise DiskStateError("disk %s does not exist in VG %s (create it with sltv.core.sltv_disk)"
                             % (disk_name, vg_name))
    disk = Disk(vg, lv)
    where = "disk %s in VG %s" % (disk_name, vg_name)
    if disk.deleting:
        raise DiskStateError("%s is half-deleted: finish with sltv.core.sltv_disk state=absent" % where)
    if not disk.initialized:
        raise DiskStateError("%s has no qcow2 header yet: run sltv.core.sltv_disk state=present again on a "
                             "host that can activate it" % where)
    return vg, disk


class _View(object):
    """The domain as it is now: the disk in its live/persistent XML, targets in use."""

    def __init__(self, domain, paths):
        views = domain.disk_views()  # [(live, xml, disks)]: live first when running
        self.running = any(view[0] for view in views)
        self.persistent = any(not view[0] for view in views)
        self.live_disks, self.config_disks = [], []
        for view in views:
            if view[0]:
                self.live_disks = view[2]
            else:
                self.config_disks = view[2]
        self.in_live = find_disk(self.live_disks, paths)
        self.in_config = find_disk(self.config_disks, paths)
        self.primary_xml = views[0][1]  # live if running, else persistent: what diff mode shows


def ensure_attachment(spec, runner, hypervisor, lock_factory, host, check_mode=False):
    """Make ``spec`` true on this host. ``hypervisor`` is a libvirt_domain.Hypervisor."""
    result = AttachResult()
    vg, disk = read_disk(runner, spec.vg, spec.disk)
    paths = lv_device_paths(spec.vg, spec.disk)
    try:
        domain = hypervisor.lookup(spec.domain)
    except DomainNotFound:
        if spec.state == "absent":
            result.warnings.append("domain %s is not defined on this host: nothing to detach" % spec.domain)
            result.disk = disk.to_dict()
            return result
        raise
    view = _View(domain, paths)
    result.domain = dict(name=domain.name, uuid=domain.uuid, state=domain.state_name(),
                         persistent=view.persistent)
    result.xml_before = result.xml_after = view.primary_xml
    mine = [v for v in disk.attachments if T.split_attachment(v)[1] == domain.uuid]
    claim = T.attachment_value(host, domain.uuid)
    if spec.state == "present":
        plan = _plan_attach(spec, disk, domain, view, hypervisor, paths, mine, claim, result)
    else:
        plan = _plan_detach(spec, disk, domain, view, hypervisor, paths, mine, result)
    result.actions = plan
    result.changed = bool(plan)
    result.disk = disk.to_dict()
    if not plan or check_mode:
        if plan:  # check mode: both sides through the same serialiser, so the diff shows only the change
            result.xml_before = ET.tostring(ET.fromstring(view.primary_xml)).decode("utf-8")
            result.xml_after = _predict_xml(view.primary_xml, plan, spec, disk, result.target, view.running)
        return result
    if spec.state == "present":
        _attach(spec, runner, lock_factory, vg, disk, domain, view, plan, mine, claim, result)
    else:
        _detach(spec, runner, lock_factory, vg, disk, domain, view, hypervisor, paths, plan, mine, result)
    result.xml_after = domain.xml(domain.running)
    # The tags we wrote are known: no third VG read (each lvm call costs ~0.5 s on a busy host).
    if spec.state == "present":
        result.disk = _with_attachments(disk, [v for v in disk.attachments if v not in mine or v == claim]
                                        + ([claim] if CLAIM in plan else []))
    elif UNCLAIM in plan:
        result.disk = _with_attachments(disk, [v for v in disk.attachments if v not in mine])
    return result


def _with_attachments(disk, attachments):
    prefix = "%s_%s=" % (T.MANAGED, T.ATTACHED)
    tags = [t for t in disk.tags if not t.startswith(prefix)] + [T.make_tag(T.ATTACHED, v) for v in attachments]
    return dict(disk.to_dict(), attachments=attachments, lv_tags=sorted(tags))


def _plan_attach(spec, disk, domain, view, hypervisor, paths, mine, claim, result):
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    want_live = spec.live and view.running
    want_config = spec.persistent and view.persistent
    if not want_live and not want_config:
        raise ValidationError("domain %s is shut off and not persistent=true here, so there is nothing to attach "
                              "%s to: set persistent=true (or start the domain and set live=true)" % (domain.name, where))
    if spec.shareable and disk.kind == THIN:
        raise ValidationError("%s is thin (qcow2): a qcow2 image cannot be shared between domains" % where)
    others = [v for v in disk.attachments if v not in mine]
    if others and not spec.shareable:
        host, uuid = T.split_attachment(others[0])
        raise DiskStateError("%s is attached to domain %s on host %s: detach it there first, or declare the "
                             "disk shareable=true on every attachment" % (where, uuid, host or "?"))
    local_users = [u for u in hypervisor.users_of(paths) if u[0].uuid != domain.uuid]
    if local_users and not spec.shareable:
        raise DiskStateError("%s is in the definition of domain %s (target %s) on this host: detach it there "
                             "first" % (where, local_users[0][0].name, local_users[0][1].target))
    existing = view.in_live or view.in_config
    if existing is not None:
        result.target = existing.target
        _warn_drift(spec, disk, existing, result)
    else:
        used = set(d.target for d in view.live_disks + view.config_disks)
        if spec.target:
            if spec.target in used:
                holder = [d for d in view.live_disks + view.config_disks if d.target == spec.target][0]
                raise ValidationError("target %s of domain %s is already used by %s: choose another target or "
                                      "leave target unset to take the first free one"
                                      % (spec.target, domain.name, holder.source or "another disk"))
            result.target = spec.target
        else:
            result.target = pick_target(spec.bus, used)
    plan = []
    if claim not in disk.attachments:
        plan.append(CLAIM)
    if want_live and view.in_live is None:
        if not disk.lv.active:
            plan.append(ACTIVATE)
        plan.append(ATTACH_LIVE)
    if want_config and view.in_config is None:
        plan.append(ATTACH_CONFIG)
    return plan


def _warn_drift(spec, disk, existing, result):
    wanted = dict(bus=spec.bus, cache=spec.cache, io=spec.io, driver_type=FORMAT_OF[disk.kind])
    if spec.target:
        wanted["target"] = spec.target
    have = dict(bus=existing.bus, cache=existing.attrs.get("cache"), io=existing.attrs.get("io"),
                driver_type=existing.driver_type, target=existing.target)
    diffs = ["%s=%s (asked %s)" % (k, have[k], v) for k, v in sorted(wanted.items()) if have.get(k) != v]
    if diffs:
        result.warnings.append("disk %s is already attached as %s with %s; an attached disk is not changed: "
                               "detach and attach again to apply" % (disk.name, existing.target, ", ".join(diffs)))


def _plan_detach(spec, disk, domain, view, hypervisor, paths, mine, result):
    plan = []
    existing = view.in_live or view.in_config
    result.target = existing.target if existing is not None else None
    if view.in_live is not None:
        plan.append(DETACH_LIVE)
    if view.in_config is not None:
        plan.append(DETACH_CONFIG)
    others_here = [u for u in hypervisor.users_of(paths) if u[0].uuid != domain.uuid and u[2]]
    if disk.lv.active and not others_here and (view.in_live is not None or not view.running):
        plan.append(DEACTIVATE)
    if mine:
        plan.append(UNCLAIM)
    return plan


def _element(spec, disk, target):
    return disk_element(disk.path, FORMAT_OF[disk.kind], target, spec.bus, cache=spec.cache, io=spec.io,
                        discard=spec.discard, serial=spec.serial,
                        # a full thin disk pauses the guest (the agent grows it and resumes) instead
                        # of returning I/O errors that a guest file system may not survive
                        error_policy="stop" if disk.kind == THIN else None,
                        shareable=spec.shareable)


def _change_tags(runner, lock_factory, spec, add, delete, result, recheck=None):
    """Add/delete sltv_attached values (not tags) in one lvchange under the VG lock."""
    add = [T.make_tag(T.ATTACHED, value) for value in add]
    delete = [T.make_tag(T.ATTACHED, value) for value in delete]
    waits, warnings = [], []
    with CriticalSection(runner, lock_factory, waits, warnings):
        if recheck is not None:
            recheck(read_disk(runner, spec.vg, spec.disk)[1])
        runner.change_tags(spec.vg, spec.disk, add=add, delete=delete)
    result.lock_wait += sum(waits)
    result.warnings.extend(warnings)


def _attach(spec, runner, lock_factory, vg, disk, domain, view, plan, mine, claim, result):
    if ACTIVATE in plan:
        runner.check_activation()  # fail before claiming anything

    def recheck(fresh):
        # Another host may have claimed the disk while we waited for the lock.
        others = [v for v in fresh.attachments if T.split_attachment(v)[1] != domain.uuid]
        if others and not spec.shareable:
            host, uuid = T.split_attachment(others[0])
            raise DiskStateError("disk %s in VG %s was attached to domain %s on host %s meanwhile: nothing "
                                 "changed" % (disk.name, disk.vg, uuid, host or "?"))

    claimed = False
    if CLAIM in plan:
        stale = [v for v in mine if v != claim]  # same domain, attached last on another host (migrated)
        _change_tags(runner, lock_factory, spec, [claim], stale, result, recheck)
        claimed = True
    activated = False
    try:
        if ACTIVATE in plan:
            runner.activate(spec.vg, spec.disk, exclusive=not spec.shareable, shared_vg=vg.shared)
            activated = True
        xml = _element(spec, disk, result.target)
        if ATTACH_LIVE in plan and ATTACH_CONFIG in plan:
            domain.attach(xml, live=True, config=True)
        elif ATTACH_LIVE in plan:
            domain.attach(xml, live=True, config=False)
        elif ATTACH_CONFIG in plan:
            domain.attach(xml, live=False, config=True)
    except SltvError as exc:
        undone = _undo_attach(spec, runner, lock_factory, activated, claimed, claim, result)
        raise SltvError("attaching disk %s to domain %s failed: %s. %s" % (disk.name, domain.name, exc, undone))


def _undo_attach(spec, runner, lock_factory, activated, claimed, claim, result):
    problems = []
    if activated:
        try:
            runner.deactivate(spec.vg, spec.disk)
        except SltvError as exc:
            problems.append("the LV is still active here (%s)" % exc)
    if claimed:
        try:
            _change_tags(runner, lock_factory, spec, [], [claim], result)
        except SltvError as exc:
            problems.append("its tag %s_%s=%s is still set (%s): remove it with state=absent"
                            % (T.MANAGED, T.ATTACHED, claim, exc))
    return "Undone: " + "; ".join(problems) if problems else "Nothing was changed."


def _detach(spec, runner, lock_factory, vg, disk, domain, view, hypervisor, paths, plan, mine, result):
    if DETACH_LIVE in plan:
        domain.detach_live(view.in_live, spec.detach_timeout)
    if DETACH_CONFIG in plan:
        domain.detach_config(view.in_config)
    if DEACTIVATE in plan:
        runner.deactivate(spec.vg, spec.disk)
    if UNCLAIM in plan:
        _change_tags(runner, lock_factory, spec, [], mine, result)


def _predict_xml(xml_text, plan, spec, disk, target, running):
    """The domain XML after ``plan`` (check mode and no-op runs), for diff mode."""
    live_or_config = ATTACH_LIVE if running else ATTACH_CONFIG
    detach = DETACH_LIVE if running else DETACH_CONFIG
    if live_or_config not in plan and detach not in plan:
        return xml_text
    root = ET.fromstring(xml_text)
    devices = root.find("devices")
    if live_or_config in plan:
        devices.append(ET.fromstring(_element(spec, disk, target)))
    else:
        for node in devices.findall("disk"):
            node_target = node.find("target")
            if node_target is not None and node_target.get("dev") == target:
                devices.remove(node)
    return ET.tostring(root).decode("utf-8")

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

import math
import xml.etree.ElementTree as ET

from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import WritePath
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult
from ansible_collections.sltv.core.plugins.module_utils.model.disk import FORMAT_OF, THIN, Disk
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import (
    BUSES, CACHE_MODES, DISCARD_MODES, IO_MODES, disk_element, find_disk, lv_device_paths, pick_target,
    validate_serial, validate_target,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError, SltvError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import DomainNotFound
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name

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
                 detach_timeout=DEFAULT_DETACH_TIMEOUT, force=False):
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
        if detach_timeout is None or not (math.isfinite(detach_timeout) and detach_timeout > 0):
            raise ValidationError("detach_timeout must be a finite number of seconds greater than 0, got %r"
                                  % (detach_timeout,))
        self.domain = domain
        self.state = state
        self.target = validate_target(target, bus) if target is not None else None  # "" is an error
        self.bus = bus
        self.live = bool(live)
        self.persistent = bool(persistent)
        self.cache = cache
        self.io = io
        self.discard = discard
        self.serial = validate_serial(serial)
        self.shareable = bool(shareable)
        self.detach_timeout = float(detach_timeout)
        if force and state == "present":
            raise ValidationError("force=true applies to state=absent only (dropping the claims of a domain that is not "
                                  "defined on this host)")
        self.force = bool(force)


class AttachResult(OpResult):
    def __init__(self):
        super(AttachResult, self).__init__()
        self.target = None
        self.domain = {}
        self.disk = {}
        self.xml_before = ""
        self.xml_after = ""


def read_disk(runner, vg_name, disk_name, vg=None):
    """(VolumeGroup, Disk) of a managed, usable disk; clear errors otherwise. ``vg``: a report read
    already (the fresh read of a WritePath)."""
    vg = runner.read_vg(vg_name, disk_name) if vg is None else vg
    lv = vg.lvs.get(disk_name)
    if lv is None:
        raise DiskStateError("disk %s does not exist in VG %s (create it with sltv.core.sltv_disk)"
                             % (disk_name, vg_name))
    disk = Disk(vg, lv)
    where = "disk %s in VG %s" % (disk_name, vg_name)
    if disk.deleting:
        raise DiskStateError("%s is being deleted (tag %s: a delete is running, or one was cut off; "
                             "sltv.core.sltv_disk state=absent finishes it)" % (where, T.DELETING_TAG))
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


def ensure_attachment(spec, runner, hypervisor, lock_factory, host, check_mode=False, result=None):
    """Make ``spec`` true on this host. ``hypervisor`` is a libvirt_domain.Hypervisor. ``result``
    (an AttachResult) may be passed in to see what was done when this raises."""
    result = AttachResult() if result is None else result
    vg, disk = read_disk(runner, spec.vg, spec.disk)
    paths = lv_device_paths(spec.vg, spec.disk)
    try:
        domain = hypervisor.lookup(spec.domain)
    except DomainNotFound:
        if spec.state == "absent":
            return _forget(spec, runner, lock_factory, disk, host, check_mode, result)
        raise
    view = _View(domain, paths)
    result.domain = dict(name=domain.name, uuid=domain.uuid, state=domain.state_name(),
                         persistent=view.persistent)
    result.xml_before = result.xml_after = view.primary_xml
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    if spec.state == "present":
        decision = O.decide(O.ATTACH, where, disk.claims, host, domain.uuid, domain.name, spec.shareable,
                            running_here=view.running and view.in_live is not None)
        plan = _plan_attach(spec, disk, domain, view, hypervisor, paths, decision, result)
    else:
        decision = O.decide(O.DETACH, where, disk.claims, host, domain.uuid, domain.name)
        plan = _plan_detach(spec, disk, domain, view, hypervisor, paths, decision, result)
    result.actions = plan
    result.changed = bool(plan)
    result.disk = disk.to_dict()
    if not plan or check_mode:
        if plan:  # check mode: both sides through the same serialiser, so the diff shows only the change
            result.xml_before = ET.tostring(ET.fromstring(view.primary_xml)).decode("utf-8")
            result.xml_after = _predict_xml(view.primary_xml, plan, spec, disk, result.target, view.running)
        return result
    if spec.state == "present":
        claims = _attach(spec, runner, lock_factory, vg, disk, domain, view, plan, host, result)
    else:
        claims = _detach(spec, runner, lock_factory, vg, disk, domain, view, plan, host, result)
    result.xml_after = domain.xml(domain.running)
    # The tags we wrote are known: no third VG read (each lvm call costs ~0.5 s on a busy host).
    if claims is not None:
        result.disk = _with_attachments(disk, claims)
    return result


def _forget(spec, runner, lock_factory, disk, host, check_mode, result):
    """Detach from a domain that is not defined on this host: drop the claims that name it (on
    this host; on another host only with force), the recovery after a domain was undefined (or
    its host lost) without a detach."""
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    result.disk = disk.to_dict()
    decision = O.decide(O.FORGET, where, disk.claims, host, spec.domain, spec.domain, force=spec.force)
    if not decision.stale:
        result.warnings.append("domain %s is not defined on this host: nothing to detach" % spec.domain)
        return result
    result.actions = [UNCLAIM]
    result.changed = True
    result.warnings.append("domain %s is not defined on this host: its claim %s %s dropped"
                           % (spec.domain, "; ".join(c.describe() for c in decision.stale),
                              "would be" if check_mode else "is"))
    if check_mode:
        return result

    def decide_fresh(fresh):
        fresh_decision = O.decide(O.FORGET, where, fresh.claims, host, spec.domain, spec.domain, force=spec.force)
        return [], [c.raw for c in fresh_decision.stale]

    claims = _change_claims(runner, lock_factory, spec, decide_fresh, result)
    result.did(UNCLAIM)
    result.disk = _with_attachments(disk, claims)
    return result


def _with_attachments(disk, attachments):
    prefix = "%s_%s=" % (T.MANAGED, T.ATTACHED)
    tags = [t for t in disk.tags if not t.startswith(prefix)] + [T.make_tag(T.ATTACHED, v) for v in attachments]
    return dict(disk.to_dict(), attachments=attachments, claims=[O.Claim.parse(v).to_dict() for v in attachments],
                lv_tags=sorted(tags))


def _plan_attach(spec, disk, domain, view, hypervisor, paths, decision, result):
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    want_live = spec.live and view.running
    want_config = spec.persistent and view.persistent
    if not want_live and not want_config:
        raise ValidationError("domain %s is shut off and not persistent=true here, so there is nothing to attach "
                              "%s to: set persistent=true (or start the domain and set live=true)" % (domain.name, where))
    if spec.shareable and disk.kind == THIN:
        raise ValidationError("%s is thin (qcow2): a qcow2 image cannot be shared between domains" % where)
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
    if decision.claim is not None or decision.stale:
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


def _plan_detach(spec, disk, domain, view, hypervisor, paths, decision, result):
    """Detach only what ``live``/``persistent`` ask for; the claim and the activation go only once
    the domain has the disk in neither its live nor its persistent definition."""
    plan = []
    existing = view.in_live or view.in_config
    result.target = existing.target if existing is not None else None
    live_left = view.in_live is not None and not spec.live
    config_left = view.in_config is not None and not spec.persistent
    if view.in_live is not None and spec.live:
        plan.append(DETACH_LIVE)
    if view.in_config is not None and spec.persistent:
        plan.append(DETACH_CONFIG)
    if live_left or config_left:
        if existing is not None and not plan:
            result.warnings.append("disk %s stays in the %s definition of domain %s (live=%s, persistent=%s)"
                                   % (disk.name, "live" if live_left else "persistent", domain.name,
                                      spec.live, spec.persistent))
        return plan
    others_here = [u for u in hypervisor.users_of(paths) if u[0].uuid != domain.uuid and u[2]]
    if disk.lv.active and not others_here and (view.in_live is not None or not view.running):
        plan.append(DEACTIVATE)
    if decision.stale:
        plan.append(UNCLAIM)
    return plan


def _element(spec, disk, target):
    return disk_element(disk.path, FORMAT_OF[disk.kind], target, spec.bus, cache=spec.cache, io=spec.io,
                        discard=spec.discard, serial=spec.serial,
                        # a full thin disk pauses the guest (the agent grows it and resumes) instead
                        # of returning I/O errors that a guest file system may not survive
                        error_policy="stop" if disk.kind == THIN else None,
                        shareable=spec.shareable)


def _change_claims(runner, lock_factory, spec, decide_fresh, result):
    """Add and drop claims in one lvchange on the write path: the decision is taken again on the
    VG as it is under the lock (``decide_fresh(disk)`` -> (values to add, values to drop)).
    Returns the disk's claim values afterwards."""
    with WritePath(runner, lock_factory, spec.vg, result, spec.disk) as vg:
        fresh = read_disk(runner, spec.vg, spec.disk, vg)[1]
        add, drop = decide_fresh(fresh)
        if add or drop:
            runner.change_tags(spec.vg, spec.disk, add=[T.make_tag(T.ATTACHED, v) for v in add],
                               delete=[T.make_tag(T.ATTACHED, v) for v in drop])
        return [v for v in fresh.attachments if v not in drop] + [v for v in add if v not in fresh.attachments]


def _attach(spec, runner, lock_factory, vg, disk, domain, view, plan, host, result):
    if ACTIVATE in plan:
        runner.check_activation()  # fail before claiming anything
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    added = []

    def decide_fresh(fresh):
        # Another host may have claimed the disk while we waited for the lock: the rule, again.
        decision = O.decide(O.ATTACH, where, fresh.claims, host, domain.uuid, domain.name, spec.shareable,
                            running_here=view.running and view.in_live is not None)
        add = [decision.claim.value] if decision.claim is not None else []
        added.extend(add)
        return add, [c.raw for c in decision.stale]

    claims = None
    if CLAIM in plan:
        claims = _change_claims(runner, lock_factory, spec, decide_fresh, result)
        if added:
            result.did(CLAIM)
    activated = False
    try:
        if ACTIVATE in plan:
            runner.activate(spec.vg, spec.disk, exclusive=not spec.shareable, shared_vg=vg.shared)
            activated = True
            result.did(ACTIVATE)
        xml = _element(spec, disk, result.target)
        if ATTACH_LIVE in plan and ATTACH_CONFIG in plan:
            domain.attach(xml, live=True, config=True)
            result.did(ATTACH_LIVE)
            result.did(ATTACH_CONFIG)
        elif ATTACH_LIVE in plan:
            domain.attach(xml, live=True, config=False)
            result.did(ATTACH_LIVE)
        elif ATTACH_CONFIG in plan:
            domain.attach(xml, live=False, config=True)
            result.did(ATTACH_CONFIG)
    except SltvError as exc:
        undone = _undo_attach(spec, runner, lock_factory, activated, added, result)
        raise SltvError("attaching disk %s to domain %s failed: %s. %s" % (disk.name, domain.name, exc, undone))
    return claims if claims is not None else list(disk.attachments)


def _undo_attach(spec, runner, lock_factory, activated, added, result):
    problems = []
    if activated:
        try:
            runner.deactivate(spec.vg, spec.disk)
            result.done.remove(ACTIVATE)
        except SltvError as exc:
            problems.append("the LV is still active here (%s)" % exc)
    if added:
        try:
            _change_claims(runner, lock_factory, spec, lambda fresh: ([], [v for v in added if v in fresh.attachments]),
                           result)
            result.done.remove(CLAIM)
        except SltvError as exc:
            problems.append("its tag %s_%s=%s is still set (%s): remove it with state=absent"
                            % (T.MANAGED, T.ATTACHED, added[0], exc))
    result.changed = bool(result.done)
    return "Undone: " + "; ".join(problems) if problems else "Nothing was changed."


def _detach(spec, runner, lock_factory, vg, disk, domain, view, plan, host, result):
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    if DETACH_LIVE in plan:
        domain.detach_live(view.in_live, spec.detach_timeout)
        result.did(DETACH_LIVE)
    if DETACH_CONFIG in plan:
        domain.detach_config(view.in_config)
        result.did(DETACH_CONFIG)
    if DEACTIVATE in plan:
        runner.deactivate(spec.vg, spec.disk)
        result.did(DEACTIVATE)
    if UNCLAIM in plan:
        def decide_fresh(fresh):
            decision = O.decide(O.DETACH, where, fresh.claims, host, domain.uuid, domain.name)
            return [], [c.raw for c in decision.stale]

        claims = _change_claims(runner, lock_factory, spec, decide_fresh, result)
        result.did(UNCLAIM)
        return claims
    return None


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

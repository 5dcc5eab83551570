# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk model: what a managed LV means, and what a requested state needs done (pure logic).

``plan_disk`` never runs a command: it reads a VolumeGroup report and returns a DiskPlan, so the
same code predicts (check mode) and decides (after the lock, on a fresh report).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError, NotManagedError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.metadata_area import check_room_for_disk
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import (
    DEFAULT_THIN_CHUNK, SECTOR, human, parse_size, round_up, thin_cap,
)

THICK, THIN = "thick", "thin"
FORMAT_OF = {THICK: "raw", THIN: "qcow2"}
WIPE_MODES = ("zero", "discard", "none")

# Plan actions, in the order they run.
CREATE = "create"              # lvcreate (thin: with the init-pending tag)
WRITE_HEADER = "write_header"  # thin: activate, qemu-img create, deactivate, drop the pending tag
MARK_DELETING = "mark_deleting"
WIPE = "wipe"
REMOVE = "remove"


class DiskSpec(object):
    """What the user asked for, validated before any command runs."""

    def __init__(self, name, vg, state="present", provisioning=THICK, size=None, initial_size=None,
                 wipe="zero", force=False):
        self.name = validate_disk_name(name)
        self.vg = validate_vg_name(vg)
        if state not in ("present", "absent"):
            raise ValidationError("state must be present or absent, got %r" % (state,))
        if provisioning not in (THICK, THIN):
            raise ValidationError("provisioning must be thick or thin, got %r" % (provisioning,))
        if wipe not in WIPE_MODES:
            raise ValidationError("wipe must be one of %s, got %r" % (", ".join(WIPE_MODES), wipe))
        self.state = state
        self.provisioning = provisioning
        self.size = None if size is None else parse_size(size, "size of disk %s" % name)
        self.initial_size = None if initial_size is None else parse_size(initial_size, "initial_size of disk %s" % name)
        if self.initial_size is not None and provisioning != THIN:
            raise ValidationError("initial_size applies to thin disks only (disk %s is thick)" % name)
        if self.initial_size is not None and self.size is not None and self.initial_size > self.size:
            raise ValidationError("initial_size %s of disk %s is above its virtual size %s: a thin disk's LV starts "
                                  "smaller than what the guest sees" % (human(self.initial_size), name, human(self.size)))
        self.wipe = wipe
        self.force = bool(force)


class Disk(object):
    """A managed LV seen as a disk."""

    def __init__(self, vg, lv):
        managed, facts = T.parse_tags(lv.tags)
        if not managed:
            raise NotManagedError(
                "LV %s/%s exists but is not managed by sltv (no '%s' tag): sltv never changes it. "
                "Pick another disk name, or tag it yourself if it really is an sltv disk"
                % (vg.name, lv.name, T.MANAGED))
        self.name = lv.name
        self.vg = vg.name
        self.lv = lv
        self.path = lv.path or "/dev/%s/%s" % (vg.name, lv.name)
        self.kind = _first(facts, T.KIND) or THICK
        self.format = _first(facts, T.FORMAT) or FORMAT_OF.get(self.kind, "raw")
        self.size = lv.size
        vsize = _first(facts, T.VSIZE)
        self.virtual_size = int(vsize) if vsize and vsize.isdigit() else lv.size
        self.initialized = _first(facts, T.INIT) != "pending"
        self.deleting = _first(facts, T.STATE) == "deleting"
        self.attachments = facts.get(T.ATTACHED, [])
        self.tags = sorted(lv.tags)  # lvm2 reports tags sorted

    @property
    def claims(self):
        """The ownership claims of the disk (model.ownership.Claim), from its sltv_attached tags."""
        return O.claims_of(self.attachments)

    def facts(self):
        """What every listing of the disk says (sltv_info's entries; to_dict adds the raw tags)."""
        return {
            "name": self.name, "vg": self.vg, "path": self.path, "kind": self.kind,
            "format": self.format, "size": self.size, "virtual_size": self.virtual_size,
            # what an admin reads at a glance; the byte counts stay what playbooks compare
            "size_human": human(self.size), "virtual_size_human": human(self.virtual_size),
            "initialized": self.initialized,
        }

    def to_dict(self):
        return dict(self.facts(), attachments=list(self.attachments), claims=[c.to_dict() for c in self.claims],
                    lv_tags=list(self.tags), exists=True)


def _first(facts, key):
    values = facts.get(key)
    return values[0] if values else None


def absent_dict(spec):
    return {"name": spec.name, "vg": spec.vg, "exists": False}


class DiskPlan(object):
    """Actions to run and the disk before/after (dicts for the result and diff mode)."""

    def __init__(self, actions, before, after, lv_size=None, virtual_size=None, create_tags=None, warnings=None):
        self.actions = list(actions)
        self.before = before
        self.after = after
        self.lv_size = lv_size
        self.virtual_size = virtual_size
        self.create_tags = create_tags or []
        self.warnings = warnings or []

    @property
    def changed(self):
        return bool(self.actions)


def plan_disk(spec, vg, can_activate=True, host=""):
    """Decide what ``spec`` needs on ``vg`` (a lvm.VolumeGroup) on ``host``. Raises on anything unsafe."""
    lv = vg.lvs.get(spec.name)
    disk = Disk(vg, lv) if lv is not None else None
    if spec.state == "absent":
        return _plan_absent(spec, disk, can_activate, host)
    return _plan_present(spec, vg, disk, can_activate)


def _plan_absent(spec, disk, can_activate, host):
    if disk is None:
        return DiskPlan([], absent_dict(spec), absent_dict(spec))
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    O.decide(O.DELETE, where, disk.claims, host, force=spec.force)
    if disk.lv.open:
        raise DiskStateError(
            "%s is open on this host (a process such as QEMU holds it): stop or detach the user first"
            % where)
    actions, warnings = [], []
    if spec.wipe != "none":
        if can_activate:
            if not disk.deleting:
                actions.append(MARK_DELETING)
            actions.append(WIPE)
        else:
            warnings.append("%s is deleted WITHOUT wipe=%s: LV activation is off on this host" % (where, spec.wipe))
    actions.append(REMOVE)
    return DiskPlan(actions, disk.to_dict(), absent_dict(spec), warnings=warnings)


def _plan_present(spec, vg, disk, can_activate):
    where = "disk %s in VG %s" % (spec.name, vg.name)
    if disk is None:
        return _plan_create(spec, vg, where, can_activate)
    if disk.deleting:
        raise DiskStateError("%s is being deleted (tag %s: a delete is running, or one was cut off): "
                             "state=absent finishes it" % (where, T.DELETING_TAG))
    if disk.kind != spec.provisioning:
        raise DiskStateError("%s exists as a %s disk, not %s: a disk's kind cannot be changed"
                             % (where, disk.kind, spec.provisioning))
    warnings = []
    if spec.size is not None:
        wanted = _guest_size(spec, vg)
        current = disk.size if disk.kind == THICK else disk.virtual_size
        if wanted > current:
            raise DiskStateError("%s is %s, %s requested: grow it with sltv.core.sltv_extend"
                                 % (where, human(current), human(wanted)))
        if wanted < current:
            # Grown since it was created (sltv_extend, the agent): the play that created it must
            # replay cleanly, as community.general.lvol does with shrink=false. Never shrunk.
            warnings.append("%s is %s, more than the %s requested: left as it is (disks are never shrunk)"
                            % (where, human(current), human(wanted)))
    if disk.kind == THIN and not disk.initialized:
        if can_activate:
            after = dict(disk.to_dict(), initialized=True,
                         lv_tags=sorted(t for t in disk.tags if t != T.INIT_PENDING_TAG))
            return DiskPlan([WRITE_HEADER], disk.to_dict(), after, virtual_size=disk.virtual_size, warnings=warnings)
        warnings.append("%s has no qcow2 header yet and LV activation is off on this host" % where)
    return DiskPlan([], disk.to_dict(), disk.to_dict(), warnings=warnings)


def _guest_size(spec, vg):
    if spec.provisioning == THICK:
        return round_up(spec.size, vg.extent_size)
    return round_up(spec.size, SECTOR)


def _plan_create(spec, vg, where, can_activate):
    if spec.size is None:
        raise ValidationError("%s does not exist: size is required to create it" % where)
    virtual_size = _guest_size(spec, vg)
    if spec.provisioning == THICK:
        lv_size = virtual_size
    else:
        cap = thin_cap(virtual_size, vg.extent_size)
        lv_size = min(round_up(spec.initial_size or DEFAULT_THIN_CHUNK, vg.extent_size), cap)
    if lv_size > vg.free:
        raise ValidationError(
            "%s needs %s but VG %s has only %s free (of %s): free space or choose a smaller size"
            % (where, human(lv_size), vg.name, human(vg.free), human(vg.size)))
    check_room_for_disk(vg, where)
    fmt = FORMAT_OF[spec.provisioning]
    tags = T.disk_tags(spec.provisioning, fmt, virtual_size, pending_init=spec.provisioning == THIN)
    actions, warnings = [CREATE], []
    header_written = spec.provisioning == THICK or can_activate
    if spec.provisioning == THIN:
        if can_activate:
            actions.append(WRITE_HEADER)
        else:
            warnings.append("%s is created without its qcow2 header: LV activation is off on this host; "
                            "a later run on a host that can activate it writes the header" % where)
    after = {
        "name": spec.name, "vg": vg.name, "path": "/dev/%s/%s" % (vg.name, spec.name),
        "kind": spec.provisioning, "format": fmt, "size": lv_size, "virtual_size": virtual_size,
        "size_human": human(lv_size), "virtual_size_human": human(virtual_size),
        "initialized": header_written, "attachments": [], "claims": [], "exists": True,
        "lv_tags": sorted(tags if not header_written else [t for t in tags if t != T.INIT_PENDING_TAG]),
    }
    return DiskPlan(actions, absent_dict(spec), after, lv_size=lv_size, virtual_size=virtual_size,
                    create_tags=tags, warnings=warnings)

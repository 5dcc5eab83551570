# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Grow a disk: what the guest sees (thick: the LV; thin: the qcow2 virtual size) and, for thin
disks on request, the LV underneath. Never shrinks anything.

Thick: lvextend under the VG lock, then blockResize on every running domain of this host that
uses the disk. A run that finds the LV grown but a guest still at the old size (an earlier run
stopped between the two) resizes the guest: the check is against the live capacity, not a tag.
Thin: the virtual size grows through QEMU (blockResize) while a domain runs the disk, with
qemu-img otherwise; the tag follows once the image has grown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.ops.attachment import read_disk
from ansible_collections.sltv.core.plugins.module_utils.infra.blockdev import qcow2_info, resize_qcow2
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import WritePath
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult
from ansible_collections.sltv.core.plugins.module_utils.model.disk import THICK
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import lv_device_paths
from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError, SltvError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import SECTOR, human, parse_size, round_up, thin_cap

LVEXTEND = "lvextend"
RESIZE_GUEST = "resize_guest"      # blockResize on a running domain
RESIZE_IMAGE = "resize_image"      # qemu-img resize (thin, no running domain here)
TAG_VSIZE = "tag_vsize"


class ExtendSpec(object):
    def __init__(self, disk, vg, size=None, delta=None, physical=None):
        self.disk = validate_disk_name(disk)
        self.vg = validate_vg_name(vg)
        if size is not None and delta is not None:
            raise ValidationError("size and delta are mutually exclusive")
        if size is None and delta is None and physical is None:
            raise ValidationError("one of size, delta or physical is required")
        self.size = None if size is None else parse_size(size, "size of disk %s" % disk)
        if isinstance(delta, str) and delta.strip().startswith("+"):
            delta = delta.strip()[1:]  # "+1G" reads as it does for lvextend -L +1G
        self.delta = None if delta is None else parse_size(delta, "delta of disk %s" % disk)
        self.physical = None if physical is None else parse_size(physical, "physical of disk %s" % disk)


class ExtendResult(OpResult):
    def __init__(self):
        super(ExtendResult, self).__init__()
        self.before = {}
        self.after = {}
        self.guests = []  # [{domain, target, capacity}] running domains here that use the disk


class ExtendPlan(object):
    """What an extend needs, decided from one read of the VG and of the guests (pure data)."""

    def __init__(self, disk, lv_size, wanted, users, actions):
        self.disk = disk
        self.lv_size = lv_size      # the LV size afterwards
        self.wanted = wanted        # the size the guest sees afterwards
        self.users = users          # [(Domain, DomainDisk, resize?)]
        self.actions = actions


def _running_users(hypervisor, disk):
    """(Domain, DomainDisk) for every running domain of this host whose live XML has the disk."""
    if hypervisor is None:
        return []
    return [(dom, dd) for dom, dd, live in hypervisor.users_of(lv_device_paths(disk.vg, disk.name)) if live]


def ensure_extended(spec, runner, hypervisor_factory, lock_factory, host, check_mode=False, result=None):
    """``hypervisor_factory()`` opens libvirt (a libvirt_domain.Hypervisor). libvirt must answer when
    the tags record an attachment; otherwise it is only asked if it is there (disks attached by hand).

    The plan made before the lock only says whether to take it: under the lock the VG and the
    guests are read again and the extend is decided again, so concurrent extends from several hosts
    (``delta`` included) all count. The guest resize and the tag swap happen in the same critical
    section as the lvextend: each is short (blockResize, qemu-img resize)."""
    result = ExtendResult() if result is None else result
    vg, disk = read_disk(runner, spec.vg, spec.disk)
    _ask_rule(disk, host)  # before libvirt is asked
    hypervisor = _open_hypervisor(hypervisor_factory, required=bool(disk.attachments))
    try:
        plan = _plan(spec, vg, disk, hypervisor)
        _report(result, plan)
        if not plan.actions or check_mode:
            return result
        with WritePath(runner, lock_factory, spec.vg, result, spec.disk) as fresh_vg:
            disk = read_disk(runner, spec.vg, spec.disk, fresh_vg)[1]
            _ask_rule(disk, host)
            plan = _plan(spec, fresh_vg, disk, hypervisor)
            _report(result, plan)
            _apply(spec, runner, plan, fresh_vg.shared, result)
        result.changed = bool(result.done)
        return result
    finally:
        if hypervisor is not None:
            hypervisor.close()


def _open_hypervisor(factory, required):
    try:
        return factory()
    except SltvError:
        if required:
            raise
        return None


def _report(result, plan):
    disk = plan.disk
    result.actions = list(plan.actions)
    result.changed = bool(plan.actions)
    result.before = dict(size=disk.size, virtual_size=disk.virtual_size)
    result.after = dict(size=plan.lv_size, virtual_size=plan.wanted)
    size_of_guest = plan.lv_size if disk.kind == THICK else plan.wanted
    result.guests = [dict(domain=dom.name, target=dd.target, capacity=size_of_guest) for dom, dd, _r in plan.users]


def _ask_rule(disk, host):
    O.decide(O.EXTEND, "disk %s in VG %s" % (disk.name, disk.vg), disk.claims, host)


def _plan(spec, vg, disk, hypervisor):
    where = "disk %s in VG %s" % (disk.name, disk.vg)
    users = _running_users(hypervisor, disk)
    current = disk.size if disk.kind == THICK else disk.virtual_size
    if spec.size is not None:
        wanted = round_up(spec.size, vg.extent_size if disk.kind == THICK else SECTOR)
        if wanted < current:
            raise DiskStateError("%s is %s; %s asked: disks are never shrunk (it destroys data)"
                                 % (where, human(current), human(wanted)))
    elif spec.delta is not None:
        wanted = round_up(current + spec.delta, vg.extent_size if disk.kind == THICK else SECTOR)
    else:
        wanted = current
    lv_size = disk.size
    if disk.kind == THICK:
        if spec.physical is not None:
            raise ValidationError("physical applies to thin disks only (%s is thick): use size" % where)
        lv_size = wanted
    elif spec.physical is not None:
        physical = round_up(spec.physical, vg.extent_size)
        cap = thin_cap(wanted, vg.extent_size)
        if physical > cap:
            raise ValidationError("physical %s of %s is above its cap of %s (1.1 x the virtual size %s)"
                                  % (human(physical), where, human(cap), human(wanted)))
        lv_size = max(disk.size, physical)
    if lv_size - disk.size > vg.free:
        raise ValidationError("%s needs %s more but VG %s has only %s free: free space in the VG first"
                              % (where, human(lv_size - disk.size), vg.name, human(vg.free)))

    actions = []
    if lv_size > disk.size:
        actions.append(LVEXTEND)
    planned_users = []
    guest_wanted = lv_size if disk.kind == THICK else wanted
    for dom, dd in users:
        capacity = dom.block_info(dd.target)[0]
        if capacity > guest_wanted:
            raise DiskStateError("%s is %s in domain %s, more than the %s asked: never shrunk"
                                 % (where, human(capacity), dom.name, human(guest_wanted)))
        planned_users.append((dom, dd, capacity < guest_wanted))
    if any(resize for _d, _dd, resize in planned_users):
        actions.append(RESIZE_GUEST)
    if disk.kind != THICK and not users and wanted > disk.virtual_size:
        if disk.lv.active:
            raise DiskStateError("%s is active on this host but no running domain here uses it: something else "
                                 "may have its image open, so qemu-img does not touch it; deactivate it (lvchange "
                                 "-an) or run the extend where its domain runs" % where)
        actions.append(RESIZE_IMAGE)
    if wanted != disk.virtual_size:
        actions.append(TAG_VSIZE)
    return ExtendPlan(disk, lv_size, wanted, planned_users, actions)


def _apply(spec, runner, plan, vg_shared, result):
    disk = plan.disk
    if LVEXTEND in plan.actions:
        runner.extend_lv(spec.vg, spec.disk, plan.lv_size)
        result.did(LVEXTEND)
    size_of_guest = plan.lv_size if disk.kind == THICK else plan.wanted
    for dom, dd, resize in plan.users:
        if resize:
            dom.block_resize(dd.target, size_of_guest)
    if RESIZE_GUEST in plan.actions:
        result.did(RESIZE_GUEST)
    if RESIZE_IMAGE in plan.actions:
        _resize_image(runner, disk, plan.wanted, vg_shared)
        result.did(RESIZE_IMAGE)
    if TAG_VSIZE in plan.actions:
        old = [t for t in disk.tags if t.startswith("%s_%s=" % (T.MANAGED, T.VSIZE))]
        runner.change_tags(spec.vg, spec.disk, add=[T.make_tag(T.VSIZE, plan.wanted)], delete=old)
        result.did(TAG_VSIZE)


def _resize_image(runner, disk, wanted, vg_shared):
    """qemu-img resize with the LV active here for the time it takes; refuses to go below the header."""
    runner.activate(disk.vg, disk.name, exclusive=True, shared_vg=vg_shared)
    try:
        header = int(qcow2_info(disk.path).get("virtual-size", 0))
        if header > wanted:
            raise DiskStateError("disk %s in VG %s has a qcow2 virtual size of %s, more than the %s asked: never "
                                 "shrunk" % (disk.name, disk.vg, human(header), human(wanted)))
        if header < wanted:
            resize_qcow2(disk.path, wanted)
    except SltvError as exc:
        raise SltvError("growing the qcow2 image of disk %s in VG %s failed: %s. Its tag still says %s"
                        % (disk.name, disk.vg, exc, human(disk.virtual_size)))
    finally:
        runner.deactivate(disk.vg, disk.name)

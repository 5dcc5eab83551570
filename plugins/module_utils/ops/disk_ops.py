# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring a disk to the requested state: read, plan, lock only if a change is needed, re-read, act.

The VG lock is held around lvm metadata commands only. Slow device work (qcow2 header, wipe)
runs outside it, bracketed by tags that say what is in progress, so an interrupted run is
visible to every host and the next run finishes it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.infra.blockdev import wipe_device, write_qcow2_header
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import WritePath
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult
from ansible_collections.sltv.core.plugins.module_utils.model.disk import (
    CREATE, MARK_DELETING, REMOVE, WIPE, WRITE_HEADER, plan_disk,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError


class DiskResult(OpResult):
    def __init__(self):
        super(DiskResult, self).__init__()
        self.before = {}
        self.after = {}
        self.commands = []

    def planned(self, plan):
        self.before, self.after, self.actions = plan.before, plan.after, plan.actions
        self.changed = plan.changed
        for warning in plan.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)


def ensure_disk(spec, runner, lock_factory, check_mode=False, host="", result=None):
    """Make disk ``spec`` true on this host's view of the VG; returns a DiskResult.

    ``lock_factory()`` returns a fresh, unacquired VgLock for spec.vg. ``result`` may be passed in
    to see what was done when this raises.
    """
    result = DiskResult() if result is None else result
    result.commands = runner.commands
    can_activate = runner.activation_enabled
    plan = plan_disk(spec, runner.read_vg(spec.vg, spec.name), can_activate, host)
    if plan.changed and can_activate:
        runner.check_activation()  # lvcreate/lvremove need device-mapper even for inactive LVs
    result.planned(plan)
    if not plan.changed or check_mode:
        return result

    with WritePath(runner, lock_factory, spec.vg, result, spec.name) as vg:
        # Another host may have changed the VG while we waited: decide again on fresh metadata.
        plan = plan_disk(spec, vg, can_activate, host)
        result.planned(plan)
        if CREATE in plan.actions:
            runner.create_lv(spec.vg, spec.name, plan.lv_size, plan.create_tags)
            result.did(CREATE)
        if WRITE_HEADER in plan.actions:
            # Under the lock: a host racing this create finds the header written (or the pending tag
            # of a run that died, which it then finishes), never a header being written.
            _write_header(spec, runner, plan, vg.shared)
            runner.change_tags(spec.vg, spec.name, delete=[T.INIT_PENDING_TAG])
            result.did(WRITE_HEADER)
        if MARK_DELETING in plan.actions:
            runner.change_tags(spec.vg, spec.name, add=[T.DELETING_TAG])
            result.did(MARK_DELETING)
        if REMOVE in plan.actions and WIPE not in plan.actions:
            runner.remove_lv(spec.vg, spec.name)
            result.did(REMOVE)

    if WIPE in plan.actions:
        _wipe(spec, runner, vg.shared)  # slow device work: outside the lock, under the deleting tag
        result.did(WIPE)
        with WritePath(runner, lock_factory, spec.vg, result, spec.name) as fresh:
            lv = fresh.lvs.get(spec.name)
            if lv is not None and T.DELETING_TAG in lv.tags:
                runner.remove_lv(spec.vg, spec.name)
        result.did(REMOVE)
    result.changed = bool(result.done)
    return result


def _on_device(spec, runner, vg_shared, work, what, left_as):
    """Activate the LV here, run ``work(path)``, always deactivate; explain what is left on failure."""
    path = "/dev/%s/%s" % (spec.vg, spec.name)
    try:
        runner.activate(spec.vg, spec.name, exclusive=True, shared_vg=vg_shared)
        try:
            work(path)
        finally:
            runner.deactivate(spec.vg, spec.name)
    except SltvError as exc:
        raise SltvError("disk %s in VG %s: %s failed (%s). The disk is left %s" % (spec.name, spec.vg, what, exc, left_as))


def _write_header(spec, runner, plan, vg_shared):
    _on_device(spec, runner, vg_shared, lambda path: write_qcow2_header(path, plan.virtual_size), "writing the qcow2 header",
               "tagged %s: run the task again to finish it, or delete it with state=absent" % T.INIT_PENDING_TAG)


def _wipe(spec, runner, vg_shared):
    _on_device(spec, runner, vg_shared, lambda path: wipe_device(path, spec.wipe), "wipe=%s" % spec.wipe,
               "in place, tagged %s: run state=absent again to finish, or use wipe=none" % T.DELETING_TAG)

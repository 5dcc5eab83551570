# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VG's own tags, and the lock backend it declares (``sltv_lock=<backend>``), changed on the one
write path: decided again on a fresh read under the VG lock, like every other metadata change."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import (
    BACKEND_STRENGTH, LOCK_TAG_PREFIX, WritePath, declared_backend,
)
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult

ADD_TAGS = "add_tags"
DECLARE = "declare_lock_backend"
_TAG_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+.-/=!:&#")


class VgSpec(object):
    def __init__(self, name, tags=(), declare=True, backend="local"):
        self.name = validate_vg_name(name)
        self.tags = []
        for tag in tags or ():
            if not tag or len(tag) > 1024 or not set(tag) <= _TAG_CHARS:
                raise ValidationError("VG tag %r is not a valid lvm tag (1-1024 of A-Z a-z 0-9 _ + . - / = ! : & #)"
                                      % (tag,))
            if tag.startswith(LOCK_TAG_PREFIX):
                raise ValidationError("tag %s is set by declare_lock_backend (from lock_backend), not by tags" % tag)
            self.tags.append(tag)
        self.declare = bool(declare)
        self.backend = backend


class VgResult(OpResult):
    def __init__(self):
        super(VgResult, self).__init__()
        self.before = {}
        self.after = {}


def _plan(spec, vg):
    add = [t for t in spec.tags if t not in vg.tags]
    delete = []
    declared = declared_backend(vg)
    if spec.declare and declared != spec.backend:
        if declared is not None and BACKEND_STRENGTH.get(spec.backend, -1) < BACKEND_STRENGTH.get(declared, 0):
            raise ValidationError("VG %s declares lock backend %s: declaring the weaker %s is refused (remove the "
                                  "tag %s%s by hand if no other host uses the VG any more)"
                                  % (vg.name, declared, spec.backend, LOCK_TAG_PREFIX, declared))
        add.append(LOCK_TAG_PREFIX + spec.backend)
        if declared is not None:
            delete.append(LOCK_TAG_PREFIX + declared)
    return add, delete


def ensure_vg(spec, runner, lock_factory, check_mode=False, result=None):
    result = VgResult() if result is None else result
    vg = runner.read_vg(spec.name)
    add, delete = _plan(spec, vg)
    result.before = dict(name=vg.name, tags=sorted(vg.tags), lock_backend=declared_backend(vg))
    after_tags = sorted(set(vg.tags) - set(delete) | set(add))
    result.after = dict(name=vg.name, tags=after_tags, lock_backend=spec.backend if spec.declare else declared_backend(vg))
    result.actions = ([ADD_TAGS] if [t for t in add if not t.startswith(LOCK_TAG_PREFIX)] else []) + (
        [DECLARE] if any(t.startswith(LOCK_TAG_PREFIX) for t in add) else [])
    result.changed = bool(add or delete)
    if not result.changed or check_mode:
        return result
    with WritePath(runner, lock_factory, spec.name, result) as fresh:
        add, delete = _plan(spec, fresh)
        if add or delete:
            runner.change_vg_tags(spec.name, add=add, delete=delete)
            for action in result.actions:
                result.did(action)
        result.after = dict(result.after, tags=sorted(set(fresh.tags) - set(delete) | set(add)))
    result.changed = bool(result.done)
    return result

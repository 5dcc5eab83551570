# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one write path for every VG metadata change (modules, agent and roles alike)::

    with WritePath(runner, lock_factory, vg_name, result) as vg:   # VG lock, then a fresh read
        plan = decide(vg)                                           # decide on what is true now
        runner.extend_lv(...)                                       # each write: host lock, fence, lvm

* the VG lock (etcd or local file) is taken first, then the VG is read again: whatever was read
  before only said whether to come here at all;
* the VG's declared lock backend (its ``sltv_lock`` tag) is checked on that fresh read: a run with
  a weaker backend than the VG asks for changes nothing;
* every lvm command takes the host-wide lvm lock, then fences (the lease still has its margin, the
  key is still ours), then runs bounded by a timeout (``LvmRunner``): a lease that expired while
  the command waited for the host lock stops it;
* the lock is released on the way out, and the lock wait and any release warning land in
  ``result`` (an ``ops.result.OpResult``).

Hold it around lvm metadata commands only, never across a slow libvirt call or a device wipe.
etcd fencing is timing-based: it stops a holder that stalls before its check, not one that
stalls between the check and the command (see the README); lvmlockd VGs add storage-level exclusion.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import LockError

LOCK_TAG_PREFIX = "sltv_lock="
BACKEND_STRENGTH = {"local": 0, "etcd": 1}


def declared_backend(vg):
    """The lock backend a VG declares with its ``sltv_lock=<backend>`` tag, or None."""
    for tag in vg.tags:
        if tag.startswith(LOCK_TAG_PREFIX):
            return tag[len(LOCK_TAG_PREFIX):]
    return None


def check_backend(vg, backend):
    """Refuse a lock backend weaker than the one the VG declares; return a warning or None."""
    declared = declared_backend(vg)
    if declared is None:
        if backend == "local" and vg.shared:
            return ("VG %s is an lvmlockd (%s) VG that declares no sltv lock backend (no tag %s<backend>), and "
                    "this run uses lock_backend=local: if several hosts change it, use lock_backend=etcd and "
                    "declare it (sltv.core.sltv_vg)" % (vg.name, vg.lock_type, LOCK_TAG_PREFIX))
        return None
    if declared not in BACKEND_STRENGTH:
        raise LockError("VG %s declares the unknown lock backend %r (tag %s%s): fix the tag (local or etcd)"
                        % (vg.name, declared, LOCK_TAG_PREFIX, declared))
    if BACKEND_STRENGTH.get(backend, -1) < BACKEND_STRENGTH[declared]:
        raise LockError("VG %s declares lock backend %s (tag %s%s), but this run uses lock_backend=%s: set "
                        "lock_backend=%s and its settings (etcd_endpoints, ...), in the host config /etc/sltv/sltv.yml "
                        "(the role sltv.core.sltv_host writes it) or in module_defaults for the group sltv.core.sltv; "
                        "nothing was changed" % (vg.name, declared, LOCK_TAG_PREFIX, declared, backend, declared))
    return None


class WritePath(object):
    """``with WritePath(runner, lock_factory, vg_name, result, lv=None) as vg:`` — see the module
    docstring. ``lv``: the one LV the change decides on; the fresh read then reports only that LV
    (the VG fields are the same), which keeps a write at 10,000 disks from decoding them all."""

    def __init__(self, runner, lock_factory, vg_name, result, lv=None):
        self.runner = runner
        self.lock = lock_factory()
        self.vg_name = vg_name
        self.result = result
        self.lv = lv

    def __enter__(self):
        self.lock.acquire()
        self.result.lock_wait += self.lock.wait_seconds
        try:
            vg = self.runner.read_vg(self.vg_name, self.lv)
            warning = check_backend(vg, getattr(self.lock, "backend", None))
            if warning and warning not in self.result.warnings:
                self.result.warnings.append(warning)
        except Exception:
            self._release()
            raise
        self.runner.fence = self.lock.ensure_held
        return vg

    def __exit__(self, *exc):
        self.runner.fence = None
        self._release()
        return False

    def _release(self):
        self.lock.release()
        warning = getattr(self.lock, "release_warning", None)
        if warning:
            self.result.warnings.append(warning)

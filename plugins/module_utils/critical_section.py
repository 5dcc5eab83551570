# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One critical section on a VG: acquire the VG lock, fence every lvm write on it, release.

Hold it around lvm metadata commands only, never across a slow libvirt call or device write.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class CriticalSection(object):
    """``with CriticalSection(runner, lock_factory, waits, warnings):`` records the lock wait in
    ``waits`` and any warning the lock gave on release in ``warnings``."""

    def __init__(self, runner, lock_factory, waits, warnings):
        self.runner = runner
        self.lock = lock_factory()
        self.waits = waits
        self.warnings = warnings

    def __enter__(self):
        self.lock.acquire()
        self.waits.append(self.lock.wait_seconds)
        self.runner.fence = self.lock.ensure_held
        return self

    def __exit__(self, *exc):
        self.runner.fence = None
        self.lock.release()
        warning = getattr(self.lock, "release_warning", None)
        if warning:
            self.warnings.append(warning)
        return False

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one stand-in the agent's local tests use: loop devices instead of LVs (no device-mapper here).

LoopStorage implements the agent's Storage interface: a thin disk is a loop device over a sparse
file, and an extend grows the file and runs ``losetup -c`` (what lvextend does to an active LV's dm
device). Everything else the agent does (libvirt events, stats, thresholds, resume) is real.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shutil
import subprocess
import threading
import time

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed, Storage, ThinDisk, device_size
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import MIB

# As libvirttest's, without importing it (and pytest): bench/agent_child.py measures its process's RSS.
LOSETUP_BIN = shutil.which("losetup") or "/usr/sbin/losetup"
EXTENT = 4 * MIB


class LoopStorage(Storage):
    """Thin disks on loop devices: ``add(loop, cap)``; extends grow the loop's file."""

    def __init__(self, vg="vg_standin", extend_delay=0.0):
        self.vg = vg
        self.loops = {}  # disk name -> LoopDevice
        self.caps = {}
        self.extend_delay = extend_delay  # seconds, to stand for lvextend's own time if wanted
        self.extends = []  # (name, old, new)
        self.fail_with = None  # an ExtendFailed reason to simulate (lock / vg_full)
        self.lock = threading.Lock()

    def add(self, name, loop, cap):
        self.loops[name] = loop
        self.caps[name] = cap

    def disk(self, name):
        loop = self.loops[name]
        return ThinDisk(self.vg, name, device_size(loop.path), self.caps[name], EXTENT, paths=[loop.path], active=True)

    def thin_disks(self):
        return [self.disk(name) for name in sorted(self.loops)]

    def extend(self, disk, size, timings):
        if self.fail_with:
            raise ExtendFailed("simulated %s failure" % self.fail_with, self.fail_with)
        started = time.monotonic()
        with self.lock:
            timings["lock"] = time.monotonic() - started
            timings["fence"] = 0.0  # a thread lock here: nothing to confirm before the write
            started = time.monotonic()
            loop = self.loops[disk.name]
            old = device_size(loop.path)
            if size > old:
                with open(loop.image, "r+b") as image:
                    image.truncate(size)
                subprocess.run([LOSETUP_BIN, "-c", loop.path], check=True)
                loop.size_mib = size // MIB
            if self.extend_delay:
                time.sleep(self.extend_delay)
            timings["lvextend"] = time.monotonic() - started
        started = time.monotonic()
        new = device_size(loop.path)
        timings["verify"] = time.monotonic() - started
        self.extends.append((disk.name, old, new))
        return new

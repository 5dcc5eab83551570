# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes to an active LV's block device: the qcow2 header of a thin disk, and wiping on delete."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.sltv.core.plugins.module_utils.infra.commands import run


def write_qcow2_header(device, virtual_size):
    """Format ``device`` as a qcow2 image of ``virtual_size`` bytes (only the header is written)."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", device, str(virtual_size)])


def qcow2_info(device):
    """qemu-img info as a dict (format, virtual-size, ...)."""
    return json.loads(run(["qemu-img", "info", "--output", "json", "-U", device]))


def wipe_device(device, mode):
    """zero: the device reads back as zeros afterwards (BLKZEROOUT, offloaded to WRITE ZEROES
    where the storage supports it). discard: unmap only; old data may remain readable."""
    if mode == "zero":
        run(["blkdiscard", "--zeroout", device])
    elif mode == "discard":
        run(["blkdiscard", device])


def resize_qcow2(device, virtual_size):
    """Grow the virtual size of the qcow2 image on ``device`` (never called with a smaller size)."""
    run(["qemu-img", "resize", "-q", "-f", "qcow2", device, str(virtual_size)])

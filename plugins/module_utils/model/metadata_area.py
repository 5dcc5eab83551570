# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Room in a VG's metadata area (issue 15): a full area makes every later lvm write fail, the
agent's extends included, so new disks are refused before it gets there.

lvm keeps the old copy of the metadata while it writes the new one, so at most half the area holds
the metadata text; ``vg_mda_free`` already counts from that half (a 1 MiB area starts with 520,704
bytes free and fails its 1,188th sltv disk).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human

# Metadata text per sltv disk: 438 bytes measured (an LV with sltv's tags, issue 15), rounded up.
BYTES_PER_DISK = 512
# New disks are refused below this share of the usable half free: room left for the extends and
# tag changes of the disks that exist (each rewrites the whole text, which grows a little).
REFUSE_BELOW = 0.05
# sltv_info warns below this share (oVirt VDSM's threshold).
WARN_BELOW = 0.20
GROW_HINT = ("grow it: vgextend the VG with a new PV made with 'pvcreate --metadatasize 128m', then "
             "'pvchange --metadataignore y' on the old PVs (docs/troubleshooting.md, 'The VG metadata area is full')")


def metadata_room(vg):
    """A dict of the VG's metadata area (sizes in bytes, ``disks_more``), or None when unknown."""
    if not vg.mda_size:
        return None
    usable = vg.mda_size // 2
    return dict(metadata_size=vg.mda_size, metadata_free=vg.mda_free, metadata_free_human=human(vg.mda_free),
                metadata_used_percent=round(100.0 * (usable - vg.mda_free) / usable, 1) if usable else 100.0,
                disks_more=max(0, int(vg.mda_free - REFUSE_BELOW * usable) // BYTES_PER_DISK))


def metadata_warning(vg, room=None):
    """A warning for a VG whose metadata area has less than WARN_BELOW of its usable half free;
    ``room``: metadata_room(vg) when the caller has it."""
    room = room if room is not None else metadata_room(vg)
    if room is None or vg.mda_free >= WARN_BELOW * (vg.mda_size // 2):
        return None
    return ("VG %s: its metadata area has %s free (%.0f %% used), room for about %d more disks; %s"
            % (vg.name, human(vg.mda_free), room["metadata_used_percent"], room["disks_more"], GROW_HINT))


def check_room_for_disk(vg, where, lvs=1):
    """Refuse a change that adds ``lvs`` LVs when it would leave less than REFUSE_BELOW free."""
    if not vg.mda_size:
        return
    left = vg.mda_free - lvs * BYTES_PER_DISK
    if left < REFUSE_BELOW * (vg.mda_size // 2):
        raise ValidationError(
            "%s: VG %s's metadata area has only %s free of %s usable: a new disk is refused so that the disks "
            "there can still be extended (a full area fails every lvm write); nothing was changed. %s"
            % (where, vg.name, human(vg.mda_free), human(vg.mda_size // 2), GROW_HINT))

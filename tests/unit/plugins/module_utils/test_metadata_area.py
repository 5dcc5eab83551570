# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VG metadata area (issue 15): its room in sltv_info, the warning, and new disks refused
before the area is full (a full area fails every lvm write, the agent's extends included)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import VolumeGroup
from ansible_collections.sltv.core.plugins.module_utils.model import metadata_area as M
from ansible_collections.sltv.core.plugins.module_utils.model.disk import DiskSpec, plan_disk
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB

LVM_DEFAULT = 1044480  # vg_mda_size of lvm's default 1 MiB area (measured: 520,704 bytes free when empty)
SLTV = 135262208       # vg_mda_size with sltv_host's --metadatasize 128m (67,629,568 free when empty)


def vg(mda_size, mda_free):
    row = {"vg_name": "vg0", "vg_size": str(200 * GIB), "vg_free": str(100 * GIB), "vg_extent_size": str(4 * MIB),
           "vg_attr": "wz--n-", "vg_tags": "", "vg_lock_type": ""}
    if mda_size is not None:
        row.update(vg_mda_size=str(mda_size), vg_mda_free=str(mda_free))
    return VolumeGroup(row, [])


def test_room_of_an_empty_area_the_way_sltv_host_makes_it():
    room = M.metadata_room(vg(SLTV, 67629568))
    assert room["metadata_free"] == 67629568 and room["metadata_free_human"] == "64.5 MiB"
    assert room["disks_more"] > 10000 * 2  # 10,000 disks with a snapshot layer each, and more
    assert room["metadata_used_percent"] == 0.0
    assert M.metadata_warning(vg(SLTV, 67629568)) is None


def test_lvms_default_area_holds_about_a_thousand_disks_and_warns_when_low():
    assert 900 < M.metadata_room(vg(LVM_DEFAULT, 520704))["disks_more"] < 1187
    warning = M.metadata_warning(vg(LVM_DEFAULT, 90000))
    assert "VG vg0: its metadata area has 87.89 KiB free" in warning and "pvcreate --metadatasize 128m" in warning
    assert M.metadata_warning(vg(LVM_DEFAULT, 200000)) is None


def test_a_new_disk_is_refused_before_the_area_is_full_and_unknown_areas_are_not_checked():
    with pytest.raises(ValidationError) as error:
        plan_disk(DiskSpec("d1", "vg0", size="1G"), vg(LVM_DEFAULT, 25000))
    message = str(error.value)
    assert "disk d1 in VG vg0: VG vg0's metadata area has only 24.41 KiB free" in message
    assert "nothing was changed" in message and "pvchange --metadataignore y" in message
    assert plan_disk(DiskSpec("d1", "vg0", size="1G"), vg(LVM_DEFAULT, 30000)).actions  # above 5 % of 510 KiB
    assert plan_disk(DiskSpec("d1", "vg0", size="1G"), vg(None, None)).actions
    assert M.metadata_room(vg(None, None)) is None

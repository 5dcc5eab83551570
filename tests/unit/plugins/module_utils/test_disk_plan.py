# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planning logic against synthetic VG reports (the real-lvm2 tests are in tests/integration)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.model.disk import (
    CREATE, MARK_DELETING, REMOVE, WIPE, WRITE_HEADER, DiskSpec, plan_disk,
)
from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError, NotManagedError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import VolumeGroup
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB

EXTENT = 4 * MIB


def vg(lvs=(), free=100 * GIB):
    row = {"vg_name": "vg0", "vg_size": str(200 * GIB), "vg_free": str(free), "vg_extent_size": str(EXTENT),
           "vg_attr": "wz--n-", "vg_tags": "", "vg_lock_type": ""}
    lv_rows = [{"lv_name": name, "lv_size": str(size), "lv_tags": tags, "lv_attr": attr, "lv_path": "/dev/vg0/" + name}
               for name, size, tags, attr in lvs]
    return VolumeGroup(row, lv_rows)


THICK10 = ("d1", 10 * GIB, "sltv,sltv_kind=thick,sltv_format=raw,sltv_vsize=%d" % (10 * GIB), "-wi-------")
THIN20 = ("t1", 1 * GIB, "sltv,sltv_kind=thin,sltv_format=qcow2,sltv_vsize=%d" % (20 * GIB), "-wi-------")


def test_create_thick_rounds_to_extent():
    plan = plan_disk(DiskSpec("d1", "vg0", size="10G", provisioning="thick"), vg())
    assert plan.actions == [CREATE]
    assert plan.lv_size == 10 * GIB
    plan = plan_disk(DiskSpec("d1", "vg0", size=str(10 * GIB + 1)), vg())
    assert plan.lv_size == 10 * GIB + EXTENT


def test_create_thin_initial_size_default_and_cap():
    plan = plan_disk(DiskSpec("t1", "vg0", size="20G", provisioning="thin"), vg())
    assert plan.actions == [CREATE, WRITE_HEADER]
    assert plan.lv_size == 1 * GIB and plan.virtual_size == 20 * GIB
    assert "sltv_init=pending" in plan.create_tags and "sltv_init=pending" not in plan.after["lv_tags"]
    small = plan_disk(DiskSpec("t2", "vg0", size="100M", provisioning="thin"), vg())
    assert small.lv_size == 112 * MIB  # 110 MiB cap rounded up to 4 MiB extents, below the 1 GiB chunk


def test_create_thin_without_activation_warns_and_stays_pending():
    plan = plan_disk(DiskSpec("t1", "vg0", size="20G", provisioning="thin"), vg(), can_activate=False)
    assert plan.actions == [CREATE]
    assert plan.after["initialized"] is False and plan.warnings


def test_over_capacity_states_free_space():
    with pytest.raises(ValidationError) as err:
        plan_disk(DiskSpec("d9", "vg0", size="2T"), vg(free=5 * GIB))
    assert "only 5 GiB free" in str(err.value)


def test_existing_same_is_noop_and_size_optional():
    assert not plan_disk(DiskSpec("d1", "vg0", size="10G"), vg([THICK10])).changed
    assert not plan_disk(DiskSpec("d1", "vg0"), vg([THICK10])).changed
    assert not plan_disk(DiskSpec("t1", "vg0", size="20G", provisioning="thin"), vg([THIN20])).changed


@pytest.mark.parametrize("spec,fragment", [
    (DiskSpec("d1", "vg0", size="20G"), "sltv_extend"),
    (DiskSpec("d1", "vg0", size="10G", provisioning="thin"), "cannot be changed"),
    (DiskSpec("t1", "vg0", size="30G", provisioning="thin"), "sltv_extend"),
])
def test_existing_different_is_an_error(spec, fragment):
    with pytest.raises(DiskStateError) as err:
        plan_disk(spec, vg([THICK10, THIN20]))
    assert fragment in str(err.value)


@pytest.mark.parametrize("spec", [DiskSpec("d1", "vg0", size="5G"), DiskSpec("t1", "vg0", size="10G", provisioning="thin")])
def test_existing_bigger_than_asked_is_left_as_it_is_with_a_warning(spec):
    plan = plan_disk(spec, vg([THICK10, THIN20]))
    assert not plan.changed and plan.before == plan.after
    assert len(plan.warnings) == 1 and "more than the" in plan.warnings[0] and "never shrunk" in plan.warnings[0]


def test_foreign_lv_is_never_touched():
    foreign = ("d1", GIB, "", "-wi-------")
    for state in ("present", "absent"):
        with pytest.raises(NotManagedError) as err:
            plan_disk(DiskSpec("d1", "vg0", size="1G", state=state), vg([foreign]))
        assert "not managed by sltv" in str(err.value)


def test_delete_plans_wipe_then_remove():
    plan = plan_disk(DiskSpec("d1", "vg0", state="absent"), vg([THICK10]))
    assert plan.actions == [MARK_DELETING, WIPE, REMOVE]
    assert plan_disk(DiskSpec("d1", "vg0", state="absent", wipe="none"), vg([THICK10])).actions == [REMOVE]
    assert not plan_disk(DiskSpec("zz", "vg0", state="absent"), vg([THICK10])).changed


def test_delete_attached_needs_force_and_names_host():
    attached = ("d1", GIB, "sltv,sltv_kind=thick,sltv_attached=hv2:1234-abcd", "-wi-------")
    with pytest.raises(DiskStateError) as err:
        plan_disk(DiskSpec("d1", "vg0", state="absent"), vg([attached]))
    assert "domain 1234-abcd on host hv2" in str(err.value)
    assert REMOVE in plan_disk(DiskSpec("d1", "vg0", state="absent", force=True), vg([attached])).actions


def test_delete_open_refused_even_with_force():
    opened = ("d1", GIB, "sltv,sltv_kind=thick", "-wi-ao----")
    with pytest.raises(DiskStateError) as err:
        plan_disk(DiskSpec("d1", "vg0", state="absent", force=True), vg([opened]))
    assert "open on this host" in str(err.value)


def test_half_deleted_disk_is_reported():
    deleting = ("d1", GIB, "sltv,sltv_kind=thick,sltv_state=deleting", "-wi-------")
    with pytest.raises(DiskStateError):
        plan_disk(DiskSpec("d1", "vg0", size="1G"), vg([deleting]))
    assert plan_disk(DiskSpec("d1", "vg0", state="absent"), vg([deleting])).actions == [WIPE, REMOVE]


def test_size_required_to_create():
    with pytest.raises(ValidationError) as err:
        plan_disk(DiskSpec("new", "vg0"), vg())
    assert "size is required" in str(err.value)


def test_initial_size_only_for_thin():
    with pytest.raises(ValidationError):
        DiskSpec("d1", "vg0", size="1G", initial_size="1G")

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name

GOOD = ["web01-data", "a", "A.b+c_d-1", "x" * 127, "data_mlo", "snap", "my.snapshot"]
BAD = ["", "-lead", ".", "..", "snapshot1", "pvmove0", "disk_mlog", "x_rimage_0", "a_tdata", "x" * 128,
       "sp ace", "sla/sh", "ümlaut", "semi;colon", "dollar$", "new\nline"]


@pytest.mark.parametrize("name", GOOD)
def test_good_disk_names(name):
    assert validate_disk_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_disk_names(name):
    with pytest.raises(ValidationError):
        validate_disk_name(name)


def test_vg_name_rules():
    assert validate_vg_name("vg_san") == "vg_san"
    for bad in ("", "-x", "a b", "..", "v" * 128):
        with pytest.raises(ValidationError):
            validate_vg_name(bad)


def test_disk_name_not_string():
    with pytest.raises(ValidationError):
        validate_disk_name(None)


@pytest.mark.parametrize("value", ["hv1:3f2a-uuid", "plain", "with space", "hash#sign", "ünï", "a,b", "50%"])
def test_tag_values_round_trip_inside_lvm_alphabet(value):
    tag = T.make_tag(T.ATTACHED, value)
    assert all(c.isalnum() and c.isascii() or c in "_+.-/=!:&#" for c in tag), tag
    managed, facts = T.parse_tags(["sltv", tag])
    assert managed and facts[T.ATTACHED] == [value]


def test_decoding_a_value_without_escapes_is_the_value_itself():
    # the fast path (sltv_info and the agent decode every tag of every disk, issue 15)
    for value in ["plain", "hv1:3f2a-uuid:exclusive:vm1", "", "107374182400"]:
        assert T.decode_value(value) == value
    assert T.decode_value(T.encode_value("with space#")) == "with space#"
    assert T.decode_value("#zz") == "#zz"  # not an escape: kept as written


def test_disk_tags():
    tags = T.disk_tags("thin", "qcow2", 1024, pending_init=True)
    assert tags == ["sltv", "sltv_kind=thin", "sltv_format=qcow2", "sltv_vsize=1024", "sltv_init=pending"]


def test_unmanaged_tags():
    managed, facts = T.parse_tags(["other", "sltv_kind=thick"])
    assert not managed and facts == {"kind": ["thick"]}


def test_device_mapper_detection(tmp_path):
    from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import device_mapper_loaded
    misc = tmp_path / "misc"
    misc.write_text("237 loop-control\n236 device-mapper\n")
    assert device_mapper_loaded(str(misc))
    misc.write_text("237 loop-control\n232 kvm\n")
    assert not device_mapper_loaded(str(misc))
    assert not device_mapper_loaded(str(tmp_path / "missing"))


@pytest.mark.parametrize("name", ["web01\n", "web01\n\n", "\uff57eb"])
def test_names_with_a_trailing_newline_or_non_ascii_are_refused(name):
    from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name

    with pytest.raises(ValidationError):
        validate_disk_name(name)
    with pytest.raises(ValidationError):
        validate_vg_name(name)


def test_targets_serials_and_timeouts_refuse_newlines_empty_and_non_finite():
    from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import validate_serial, validate_target
    from ansible_collections.sltv.core.plugins.module_utils.ops.attachment import AttachSpec
    from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import check_lock_params

    for bad in ("vdb\n", ""):
        with pytest.raises(ValidationError):
            validate_target(bad, "virtio")
    with pytest.raises(ValidationError):
        AttachSpec("d1", "vg0", "web01", target="")
    with pytest.raises(ValidationError):
        validate_serial("abc\n")
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValidationError):
            AttachSpec("d1", "vg0", "web01", detach_timeout=bad)
        assert "lock_timeout" in check_lock_params(dict(lock_timeout=bad))


def test_delta_takes_a_plus_sign_and_thin_initial_size_stays_below_the_virtual_size():
    from ansible_collections.sltv.core.plugins.module_utils.model.disk import DiskSpec
    from ansible_collections.sltv.core.plugins.module_utils.ops.extend import ExtendSpec

    assert ExtendSpec("d1", "vg0", delta="+1G").delta == 1024 ** 3
    with pytest.raises(ValidationError) as info:
        DiskSpec("t1", "vg0", provisioning="thin", size="1G", initial_size="2G")
    assert "above its virtual size" in str(info.value)

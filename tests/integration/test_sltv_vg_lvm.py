# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_vg on real lvm2: declare the lock backend, add tags, check mode, refuse a weaker backend."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from lvmtest import lvm, run_module, write_commands

pytestmark = [pytest.mark.lvm, pytest.mark.etcd]


def vg_tags(vg):
    return sorted(t for t in lvm("vgs", "--noheadings", "-o", "vg_tags", vg.name).strip().split(",") if t)


def test_declare_etcd_then_tags_idempotent_check_mode_first(etcd_server, loop_vg):
    args = dict(etcd_server.client_settings(lock_timeout=30), name=loop_vg.name, tags=["site=lab"])
    before = loop_vg.snapshot()
    checked = run_module("sltv_vg", args, check=True, diff=True)
    assert checked["changed"] and checked["actions"] == ["add_tags", "declare_lock_backend"]
    assert checked["diff"]["after"]["lock_backend"] == "etcd" and loop_vg.snapshot() == before
    done = run_module("sltv_vg", args)
    assert done["changed"] and not done.get("failed"), done
    assert vg_tags(loop_vg) == ["site=lab", "sltv_lock=etcd"]
    again = run_module("sltv_vg", args)
    assert not again["changed"] and write_commands(again) == []
    # a weaker declaration is refused, and the local backend cannot even take the VG
    weaker = run_module("sltv_vg", dict(name=loop_vg.name, lock_backend="local"))
    assert weaker.get("failed") and "declares lock backend etcd" in weaker["msg"]
    assert vg_tags(loop_vg) == ["site=lab", "sltv_lock=etcd"]


def test_bad_tags_are_refused_before_any_command(loop_vg):
    before = loop_vg.snapshot()
    for tags in (["has space"], ["sltv_lock=etcd"], [""], ["ü"]):
        result = run_module("sltv_vg", dict(name=loop_vg.name, tags=tags))
        assert result.get("failed") and result["commands"] == [], result
    assert loop_vg.snapshot() == before

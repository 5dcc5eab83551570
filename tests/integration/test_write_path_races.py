# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one write path against real lvm2 and a real etcd: concurrent extends all count, the VG's
declared lock backend is enforced, partial work is reported, and no raw lvm message reaches the user.
(The two-host rounds of the same races run in the test bed: extensions/molecule/default/verify_races.yml.)"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from lvmtest import finish_module, lvm, run_module, start_module, warning_texts, write_commands

pytestmark = [pytest.mark.lvm, pytest.mark.etcd]

MIB = 1024 ** 2
RAW_LVM = ("command lvextend", "exit code 5", "matches existing size", "not larger than existing")


def etcd_args(server, vg, **kw):
    args = dict(server.client_settings(lock_timeout=90), vg=vg.name)
    args.update(kw)
    return args


def make_disk(server, vg, name, size):
    result = run_module("sltv_disk", etcd_args(server, vg, name=name, size=size))
    assert result["changed"] and not result.get("failed"), result


def vsize_tag(vg, name):
    return [t for t in vg.lvs()[name]["tags"] if t.startswith("sltv_vsize=")]


def test_concurrent_delta_extends_all_count(etcd_server, loop_vg):
    """Before the write path, the decision was taken outside the lock: one delta was lost, another
    failed with a raw lvm error (issue 10, hole 1)."""
    make_disk(etcd_server, loop_vg, "grow-delta", "64M")
    started = [start_module("sltv_extend", etcd_args(etcd_server, loop_vg, disk="grow-delta", delta="64M"))
               for _i in range(4)]
    results = [finish_module(s, timeout=300) for s in started]
    assert [r.get("msg") for r in results if r.get("failed")] == []
    assert all(r["changed"] for r in results)
    lv = loop_vg.lvs()["grow-delta"]
    assert lv["size"] == 320 * MIB
    assert vsize_tag(loop_vg, "grow-delta") == ["sltv_vsize=%d" % (320 * MIB)]
    assert loop_vg.vgck().returncode == 0


def test_concurrent_absolute_extends_change_once_and_never_fail(etcd_server, loop_vg):
    make_disk(etcd_server, loop_vg, "grow-abs", "64M")
    started = [start_module("sltv_extend", etcd_args(etcd_server, loop_vg, disk="grow-abs", size="256M"))
               for _i in range(4)]
    results = [finish_module(s, timeout=300) for s in started]
    messages = [r.get("msg", "") for r in results if r.get("failed")]
    assert messages == []
    assert sorted(r["changed"] for r in results) == [False, False, False, True]
    assert loop_vg.lvs()["grow-abs"]["size"] == 256 * MIB
    assert vsize_tag(loop_vg, "grow-abs") == ["sltv_vsize=%d" % (256 * MIB)]


def test_a_vg_declaring_etcd_refuses_the_local_backend_and_changes_nothing(etcd_server, loop_vg):
    make_disk(etcd_server, loop_vg, "declared", "64M")
    lvm("vgchange", "--addtag", "sltv_lock=etcd", loop_vg.name)
    before = loop_vg.snapshot()
    for module, args in (("sltv_disk", dict(name="other", size="64M")),
                         ("sltv_disk", dict(name="declared", state="absent", wipe="none")),
                         ("sltv_extend", dict(disk="declared", size="128M"))):
        result = run_module(module, dict(args, vg=loop_vg.name, lock_backend="local"))
        assert result.get("failed"), result
        assert "declares lock backend etcd" in result["msg"] and "lock_backend=etcd" in result["msg"]
        assert not result["changed"] and write_commands(result) == []
    assert loop_vg.snapshot() == before
    # the stronger backend works
    result = run_module("sltv_extend", etcd_args(etcd_server, loop_vg, disk="declared", size="128M"))
    assert result["changed"] and not result.get("failed"), result


def test_extend_of_a_disk_claimed_on_another_host_is_refused_naming_it(etcd_server, loop_vg):
    make_disk(etcd_server, loop_vg, "claimed", "64M")
    lvm("lvchange", "--addtag",
        "sltv_attached=hv-other:7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11:exclusive:web01", "%s/claimed" % loop_vg.name)
    before = loop_vg.snapshot()
    result = run_module("sltv_extend", etcd_args(etcd_server, loop_vg, disk="claimed", delta="64M"))
    assert result.get("failed") and "hv-other" in result["msg"] and "web01" in result["msg"]
    assert not any(raw in result["msg"] for raw in RAW_LVM)
    assert loop_vg.snapshot() == before
    result = run_module("sltv_disk", etcd_args(etcd_server, loop_vg, name="claimed", state="absent", wipe="none"))
    assert result.get("failed") and "hv-other" in result["msg"] and "force=true" in result["msg"]
    assert loop_vg.snapshot() == before


def test_a_thin_create_raced_by_8_processes_is_created_once(etcd_server, loop_vg):
    started = [start_module("sltv_disk", etcd_args(etcd_server, loop_vg, name="thin-race", size="1G",
                                                   provisioning="thin", initial_size="64M")) for _i in range(8)]
    results = [finish_module(s, timeout=300) for s in started]
    assert [r.get("msg") for r in results if r.get("failed")] == []
    assert sorted(r["changed"] for r in results) == [False] * 7 + [True]
    warned = [w for r in results for w in warning_texts(r)]
    assert all("activation is off" in w or "qcow2 header" in w for w in warned), warned

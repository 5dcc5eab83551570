# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_disk against real lvm2 on a loop-backed VG, with the local (lock file) backend."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import os
import time

import pytest

from lvmtest import finish_module, lvm, run_module, start_module, warning_texts, write_commands

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_DIR
from ansible_collections.sltv.core.plugins.module_utils.model.names import RESERVED_LV_PARTS

pytestmark = pytest.mark.lvm
GIB = 1024 ** 3
MIB = 1024 ** 2


def disk(vg, name, **kw):
    args = dict(name=name, vg=vg.name)
    args.update(kw)
    return args


def test_thick_create_check_real_check_real(loop_vg):
    args = disk(loop_vg, "web01-data", size="1G")
    before = loop_vg.snapshot()

    predicted = run_module("sltv_disk", args, check=True, diff=True)
    assert predicted["changed"] is True and predicted["actions"] == ["create"]
    assert predicted["diff"]["before"]["exists"] is False and predicted["diff"]["after"]["size"] == GIB
    assert loop_vg.snapshot() == before, "check mode changed the VG"

    created = run_module("sltv_disk", args, diff=True)
    assert created["changed"] is True
    assert created["disk"] == predicted["disk"], "check mode predicted something else"
    lv = loop_vg.lvs()["web01-data"]
    assert lv["size"] == GIB
    assert lv["tags"] == ["sltv", "sltv_format=raw", "sltv_kind=thick", "sltv_vsize=%d" % GIB]

    again_check = run_module("sltv_disk", args, check=True)
    again = run_module("sltv_disk", args)
    for result in (again_check, again):
        assert result["changed"] is False
        assert write_commands(result) == [] and len(result["commands"]) == 1
        assert result["lock_wait"] == 0
    assert again["disk"] == created["disk"]


def test_delete_check_real_check_real(loop_vg):
    run_module("sltv_disk", disk(loop_vg, "d1", size="100M"))
    args = disk(loop_vg, "d1", state="absent")
    before = loop_vg.snapshot()
    predicted = run_module("sltv_disk", args, check=True)
    assert predicted["changed"] and loop_vg.snapshot() == before
    removed = run_module("sltv_disk", args)
    assert removed["changed"] and "d1" not in loop_vg.lvs()
    # Activation is off on this machine: the wipe is skipped, and the module says so.
    assert removed["actions"] == ["remove"]
    assert any("WITHOUT wipe=zero" in w for w in warning_texts(removed))
    for result in (run_module("sltv_disk", args, check=True), run_module("sltv_disk", args)):
        assert result["changed"] is False and write_commands(result) == []


def test_extent_rounding_and_initial_size(loop_vg):
    odd = run_module("sltv_disk", disk(loop_vg, "odd", size=str(10 * MIB + 1)))
    assert odd["disk"]["size"] == 12 * MIB and loop_vg.lvs()["odd"]["size"] == 12 * MIB
    thin = run_module("sltv_disk", disk(loop_vg, "thin1", provisioning="thin", size="8G", initial_size="100M"))
    assert thin["changed"] and loop_vg.lvs()["thin1"]["size"] == 100 * MIB
    assert thin["disk"]["virtual_size"] == 8 * GIB


def test_thin_without_activation_is_created_pending_and_says_so(loop_vg):
    result = run_module("sltv_disk", disk(loop_vg, "t1", provisioning="thin", virtual_size="8G"))
    assert result["changed"] and result["actions"] == ["create"]
    assert result["disk"]["initialized"] is False
    assert any("without its qcow2 header" in w for w in warning_texts(result))
    tags = loop_vg.lvs()["t1"]["tags"]
    assert "sltv_init=pending" in tags and "sltv_kind=thin" in tags and "sltv_vsize=%d" % (8 * GIB) in tags
    assert loop_vg.lvs()["t1"]["size"] == GIB  # the default initial size: one 1 GiB chunk
    again = run_module("sltv_disk", disk(loop_vg, "t1", provisioning="thin", virtual_size="8G"))
    assert again["changed"] is False and write_commands(again) == []


BAD_INPUTS = [
    ({"name": "-x", "size": "1G"}, "may not start with '-'"),
    ({"name": "snapshot1", "size": "1G"}, "reserved by lvm2"),
    ({"name": "pvmove9", "size": "1G"}, "reserved by lvm2"),
    ({"name": "a_mlog", "size": "1G"}, "_mlog"),
    ({"name": "a_rimage_1", "size": "1G"}, "_rimage"),
    ({"name": "..", "size": "1G"}, "reserved"),
    ({"name": "x" * 128, "size": "1G"}, "at most 127"),
    ({"name": "bad name", "size": "1G"}, "only A-Z"),
    ({"name": "semi;rm -rf", "size": "1G"}, "only A-Z"),
    ({"name": "ok", "size": "0"}, "greater than zero"),
    ({"name": "ok", "size": "-1G"}, "not a valid size"),
    ({"name": "ok", "size": "12X"}, "not a valid size"),
    ({"name": "ok", "size": "lots"}, "not a valid size"),
    ({"name": "ok", "size": "100T"}, "free"),
    ({"name": "ok"}, "size is required"),
    ({"name": "ok", "size": "1G", "initial_size": "1G"}, "thin disks only"),
    ({"name": "ok", "size": "1G", "vg": "no_such_vg"}, "not found"),
    ({"name": "ok", "size": "1G", "vg": "bad/vg"}, "only A-Z"),
    ({"name": "foreign", "size": "64M"}, "not managed by sltv"),
    ({"name": "foreign", "state": "absent"}, "not managed by sltv"),
    ({"name": "existing", "size": "2G"}, "sltv_extend"),
    ({"name": "existing", "size": "1G", "provisioning": "thin"}, "cannot be changed"),
    ({"name": "attached", "state": "absent"}, "domain 5f1c-uuid on host hv7"),
    ({"name": "ok", "size": "1G", "lock_ttl": 1}, "lock_ttl"),
    ({"name": "ok", "size": "1G", "lock_backend": "etcd", "etcd_endpoints": []}, "etcd_endpoints"),
    ({"name": "ok", "size": "1G", "provisioning": "fat"}, "provisioning"),
]


@pytest.fixture
def populated_vg(loop_vg):
    lvm("lvcreate", "-an", "-Zn", "-Wn", "-L", "64m", "-n", "foreign", loop_vg.name)
    run_module("sltv_disk", disk(loop_vg, "existing", size="1G"))
    run_module("sltv_disk", disk(loop_vg, "attached", size="64M"))
    lvm("lvchange", "--addtag", "sltv_attached=hv7:5f1c-uuid", loop_vg.name + "/attached")
    return loop_vg


def test_bad_input_is_a_clear_error_and_changes_nothing(populated_vg):
    vg = populated_vg
    before = vg.snapshot()
    for extra, fragment in BAD_INPUTS:
        args = dict(vg=vg.name)
        args.update(extra)
        for check in (True, False):
            result = run_module("sltv_disk", args, check=check)
            assert result.get("failed") is True, (extra, result)
            assert fragment in result["msg"], (extra, result["msg"])
            assert write_commands(result) == [], (extra, result["commands"])
            assert vg.snapshot() == before, "the VG changed after %r" % (extra,)


def test_a_disk_grown_since_its_creation_replays_cleanly(populated_vg):
    """The play that created a disk runs again after an extend: ok, a warning, nothing written."""
    vg = populated_vg
    grown = run_module("sltv_extend", dict(disk="existing", vg=vg.name, size="2G"))
    assert grown["changed"] and not grown.get("failed"), grown
    before = vg.snapshot()
    for check in (True, False):
        result = run_module("sltv_disk", disk(vg, "existing", size="1G"), check=check)
        assert not result.get("failed") and result["changed"] is False, result
        assert any("more than the 1 GiB requested" in w for w in warning_texts(result)), result.get("warnings")
        assert write_commands(result) == [] and vg.snapshot() == before


def test_force_deletes_attached_disk(populated_vg):
    result = run_module("sltv_disk", disk(populated_vg, "attached", state="absent", force=True))
    assert result["changed"] and "attached" not in populated_vg.lvs()


def test_noop_takes_no_lock(loop_vg):
    """With the VG lock file held by someone else, a no-op run still finishes at once."""
    run_module("sltv_disk", disk(loop_vg, "d1", size="64M"))
    path = os.path.join(LOCK_DIR, "vg-%s.lock" % loop_vg.name)
    with open(path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        # a run that waited for the lock would fail after lock_timeout; a module run alone may take
        # 2 s on a busy machine (pytest-xdist workers beside it)
        noop = run_module("sltv_disk", disk(loop_vg, "d1", size="64M", lock_timeout=10))
        assert noop["changed"] is False and not noop.get("failed") and time.monotonic() - started < 10
        blocked = run_module("sltv_disk", disk(loop_vg, "d2", size="64M", lock_timeout=1))
        assert blocked["failed"] and "still held" in blocked["msg"]
    assert "d2" not in loop_vg.lvs()


def test_local_lock_8_processes_same_disk(loop_vg):
    started = [start_module("sltv_disk", disk(loop_vg, "same", size="256M")) for _round in range(8)]
    results = [finish_module(s) for s in started]
    assert [r.get("failed", False) for r in results] == [False] * 8, results
    assert sum(1 for r in results if r["changed"]) == 1
    assert list(loop_vg.lvs()) == ["same"]


def test_validator_agrees_with_lvm(loop_vg):
    """Names we reject for lvm2 reasons are rejected by lvcreate too (our rules are not invented)."""
    for part in RESERVED_LV_PARTS[:6] + ("snapshot", "pvmove"):
        name = ("x%s" % part) if part.startswith("_") else part + "1"
        proc = lvm("lvcreate", "-an", "-Zn", "-Wn", "-L", "4m", "-n", name, loop_vg.name, check=False)
        assert proc.returncode != 0, "lvm2 accepted %s" % name
    assert loop_vg.lvs() == {}

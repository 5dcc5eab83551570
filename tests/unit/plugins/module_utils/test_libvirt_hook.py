# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hook's decisions (which LVs, which activation mode, when) against a recording lvm stand-in;
the real hook runs in the test bed (molecule), where libvirt calls it around start and migration."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError
from ansible_collections.sltv.core.plugins.module_utils.hook.libvirt_hook import Hook, hook_main
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import VgNotFound, VolumeGroup

UUID = "7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11"
XML = """<domain><name>web01</name><uuid>%s</uuid><devices>
<disk type='block' device='disk'><source dev='/dev/vg0/d1'/><target dev='vdb' bus='virtio'/></disk>
<disk type='block' device='disk'><source dev='/dev/vg0/foreign'/><target dev='vdc' bus='virtio'/></disk>
<disk type='block' device='disk'><source dev='/dev/nosuchvg/x'/><target dev='vdd' bus='virtio'/></disk>
</devices></domain>""" % UUID


class RecordingRunner(object):
    def __init__(self, lock_type="", active=False, fail=False):
        self.calls = []
        self.reads = []
        self.lock_type = lock_type
        self.active = active
        self.fail = fail

    def read_vg(self, name, lv=None):
        if name != "vg0":
            raise VgNotFound(name)
        self.reads.append((name, lv))
        attr = "-wi-a-----" if self.active else "-wi-------"
        row = {"vg_name": "vg0", "vg_size": "1073741824", "vg_free": "0", "vg_extent_size": "4194304",
               "vg_lock_type": self.lock_type}
        return VolumeGroup(row, [r for r in [
            {"lv_name": "d1", "lv_size": "4194304", "lv_tags": "sltv,sltv_kind=thick", "lv_attr": attr},
            {"lv_name": "foreign", "lv_size": "4194304", "lv_tags": "", "lv_attr": attr},
        ] if lv is None or r["lv_name"] in lv])  # like lvm fullreport -S lv_name=...

    def activate(self, vg, name, exclusive=True, shared_vg=False):
        if self.fail:
            raise CommandError(["lvchange"], 5, "LV locked by other host")
        self.calls.append(("activate", vg, name, exclusive, shared_vg))

    def deactivate(self, vg, name):
        self.calls.append(("deactivate", vg, name))


def hook(runner, tmp_path):
    return Hook(runner=runner, state_dir=str(tmp_path / "hook"), log=lambda message: None)


def test_prepare_activates_only_sltv_lvs(tmp_path):
    runner = RecordingRunner()
    hook(runner, tmp_path).run("web01", "prepare", "begin", XML)
    assert runner.calls == [("activate", "vg0", "d1", True, False)]
    # one read of the VG, of the domain's LVs only (the hook runs inside the domain start)
    assert runner.reads == [("vg0", ["d1", "foreign"])]


def test_release_deactivates_active_sltv_lvs(tmp_path):
    runner = RecordingRunner(active=True)
    hook(runner, tmp_path).run("web01", "release", "end", XML)
    assert runner.calls == [("deactivate", "vg0", "d1")]


@pytest.mark.parametrize("operation,sub", [("start", "begin"), ("started", "begin"), ("stopped", "end"),
                                           ("prepare", "end"), ("reconnect", "begin")])
def test_other_operations_touch_nothing(tmp_path, operation, sub):
    runner = RecordingRunner()
    hook(runner, tmp_path).run("web01", operation, sub, XML)
    assert runner.calls == []


def test_incoming_migration_on_a_lockd_vg_activates_shared(tmp_path):
    runner = RecordingRunner(lock_type="sanlock")
    the_hook = hook(runner, tmp_path)
    the_hook.run("web01", "migrate", "begin", XML)
    the_hook.run("web01", "prepare", "begin", XML)
    the_hook.run("web01", "started", "begin", XML)
    the_hook.run("web01", "prepare", "begin", XML)  # a later plain start: exclusive again
    assert runner.calls == [("activate", "vg0", "d1", False, True), ("activate", "vg0", "d1", True, True)]


def test_activation_failure_is_an_error_naming_domain_and_lv(tmp_path):
    runner = RecordingRunner(fail=True)
    with pytest.raises(Exception) as info:
        hook(runner, tmp_path).run("web01", "prepare", "begin", XML)
    assert "vg0/d1" in str(info.value) and "web01" in str(info.value) and "locked by other host" in str(info.value)


def test_hook_main_needs_no_lvm_for_uninteresting_calls():
    assert hook_main(["web01", "start", "begin", "-"], io.StringIO("not even xml")) == 0
    assert hook_main(["web01"], io.StringIO("")) == 2


class ClaimedRunner(RecordingRunner):
    def __init__(self, claim_value, **kwargs):
        super(ClaimedRunner, self).__init__(**kwargs)
        self.claim_value = claim_value

    def read_vg(self, name, lv=None):
        report = super(ClaimedRunner, self).read_vg(name, lv)
        report.lvs["d1"].tags.append("sltv_attached=" + self.claim_value)
        return report


def test_prepare_refuses_a_disk_claimed_by_another_domain_and_activates_nothing(tmp_path):
    runner = ClaimedRunner("hv1:99999999-1111-1111-1111-111111111111:exclusive:db")
    the_hook = Hook(runner=runner, state_dir=str(tmp_path / "hook"), log=lambda message: None, host="hv2")
    with pytest.raises(Exception) as info:
        the_hook.run("web01", "prepare", "begin", XML)
    assert "db (99999999-1111-1111-1111-111111111111) on host hv1" in str(info.value)
    assert runner.calls == []


def test_prepare_refuses_this_domain_claimed_on_another_host_unless_it_migrates_in(tmp_path):
    runner = ClaimedRunner("hv1:%s:exclusive:web01" % UUID)
    the_hook = Hook(runner=runner, state_dir=str(tmp_path / "hook"), log=lambda message: None, host="hv2")
    with pytest.raises(Exception) as info:
        the_hook.run("web01", "prepare", "begin", XML)
    assert "host hv1" in str(info.value) and runner.calls == []
    the_hook.run("web01", "migrate", "begin", XML)
    the_hook.run("web01", "prepare", "begin", XML)
    assert runner.calls == [("activate", "vg0", "d1", False, False)]


def test_prepare_activates_a_disk_claimed_by_this_domain_here(tmp_path):
    runner = ClaimedRunner("hv2:%s:exclusive:web01" % UUID)
    Hook(runner=runner, state_dir=str(tmp_path / "hook"), log=lambda m: None, host="hv2").run(
        "web01", "prepare", "begin", XML)
    assert runner.calls == [("activate", "vg0", "d1", True, False)]

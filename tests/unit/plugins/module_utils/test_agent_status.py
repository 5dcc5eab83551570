# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's status file and what sltv_info says about it (the local lock backend has no etcd
record: this file is how sltv_info learns that the agent runs degraded)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible_collections.sltv.core.plugins.module_utils.agent import agent_status
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_status import status_warning, write_status
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import LvmStorage
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import VgNotFound, VolumeGroup
from ansible_collections.sltv.core.plugins.module_utils.ops import info


class OneVgRunner(object):
    """lvm that sees vg0 (no LVs) only."""

    def read_vgs(self, names=None):
        if names and set(names) - set(["vg0"]):
            raise VgNotFound("volume group vg1 not found on this host")
        return [VolumeGroup({"vg_name": "vg0", "vg_size": "1073741824", "vg_free": "1073741824",
                             "vg_extent_size": "4194304"}, [])]


def test_the_agent_writes_its_status_at_each_registration(tmp_path):
    path = str(tmp_path / "agent-status.json")
    store = LvmStorage(parse_agent_config({"vgs": ["vg0", "vg1"]}), OneVgRunner(), host="hostA", status_path=path)
    store.thin_disks()
    store.register(3)
    status = json.loads(open(path).read())
    assert (status["host"], status["disks"], status["vgs_missing"]) == ("hostA", 3, ["vg1"])
    assert status["degraded"] == ["VG vg1 not found"]
    assert status_warning(path) == ("sltv-agent on this host runs degraded: VG vg1 not found "
                                    "(see journalctl -u sltv-agent)")


def test_an_unwritable_status_file_is_logged_once_and_never_stops_the_agent(tmp_path):
    lines = []

    class Log(object):
        def warning(self, fmt, *args):
            lines.append(fmt % args)

    store = LvmStorage(parse_agent_config({"vgs": ["vg0"]}), OneVgRunner(), host="hostA", log=Log(),
                       status_path=str(tmp_path / "missing-dir" / "agent-status.json"))
    store.register(1)
    store.register(1)
    assert len(lines) == 1 and "cannot write the status file" in lines[0]


def test_status_warnings(tmp_path):
    path = str(tmp_path / "agent-status.json")
    assert status_warning(path) is None  # no agent on this host
    write_status({"degraded": []}, path)
    assert status_warning(path) is None
    write_status({"degraded": ["etcd not reachable"]}, path)
    assert "runs degraded: etcd not reachable" in status_warning(path)
    assert "is it running?" in status_warning(path, now=time.time() + agent_status.STALE_AFTER + 1)
    (tmp_path / "agent-status.json").write_text("{not json")
    assert status_warning(path) is None


def test_sltv_info_warns_when_the_agent_of_this_host_runs_degraded(tmp_path, monkeypatch):
    path = str(tmp_path / "agent-status.json")
    monkeypatch.setattr(agent_status, "STATUS_PATH", path)
    write_status({"degraded": ["VG vg1 not found"]}, path)
    disks, vgs, warnings = info.gather(OneVgRunner(), "hostA", vgs=["vg0"])
    assert [v["name"] for v in vgs] == ["vg0"]
    assert warnings == ["sltv-agent on this host runs degraded: VG vg1 not found (see journalctl -u sltv-agent)"]

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's storage runs degraded instead of exiting: a configured VG missing (real lvm2 on a
loop device) and etcd down at start (a real etcd, stopped, then started again)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

from lvmtest import TEST_ENV, lvm

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed, LvmStorage
from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB


def thin_lv(vg, name="d1"):
    tags = sum((["--addtag", tag] for tag in T.disk_tags("thin", "qcow2", 4 * GIB)), [])
    lvm("lvcreate", "-q", "-n", name, "-L", "64m", "-an", "-Zn", "-Wn", "--setautoactivation", "n", *(tags + [vg.name]))


def test_a_missing_vg_leaves_the_others_grown_by_real_lvm(loop_vg, tmp_path):
    """lvm fullreport fails as a whole when one named VG is missing: the present VGs are still read."""
    thin_lv(loop_vg)
    missing = loop_vg.name + "_gone"
    config = parse_agent_config({"vgs": [loop_vg.name, missing]})
    storage = LvmStorage(config, LvmRunner(host_lock_path=str(tmp_path / "host.lock"), environ=TEST_ENV), host="hostA")
    disks = storage.thin_disks()
    assert [d.key for d in disks] == ["%s/d1" % loop_vg.name]
    assert storage.missing_vgs == [missing]
    assert storage.degraded() == ["VG %s not found" % missing]


def connect(settings):
    return etcd_client.connect(settings, deadline=time.monotonic() + 2)


def test_started_during_an_etcd_outage_extends_fail_then_catch_up(etcd_factory, loop_vg, tmp_path):
    thin_lv(loop_vg)
    server = etcd_factory()
    server.stop()  # the outage: the agent starts now
    settings = server.client_settings(lock_timeout=1.0, lock_prefix="/outage")
    config = parse_agent_config({"vgs": [loop_vg.name], "lock": settings})
    storage = LvmStorage(config, LvmRunner(host_lock_path=str(tmp_path / "host.lock"), environ=TEST_ENV),
                         host="hostA", etcd_connect=connect, cluster_up=False)
    assert storage.degraded() == ["etcd not reachable"]
    disk = storage.thin_disks()[0]
    storage.register(1)
    with pytest.raises(ExtendFailed) as info:
        storage.extend(disk, 128 * MIB, {})
    assert info.value.reason == "lock"  # the agent counts it and retries with back-off
    assert loop_vg.lvs()["d1"]["size"] == 64 * MIB
    server.start()  # etcd is back
    assert storage.extend(disk, 128 * MIB, {}) == 128 * MIB
    assert storage.cluster_up and storage.degraded() == []
    storage._cluster_retry_at = 0.0  # pylint: disable=protected-access  # the retry time has come
    storage.register(1)
    assert "/outage/agents/hostA" in server.etcdctl("get", "--prefix", "/outage/agents/", "--keys-only")
    storage.close()

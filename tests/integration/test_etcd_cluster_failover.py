# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A REAL 3-member etcd cluster on 127.0.0.1: the member in use is killed while a lock is held and
while the agent's extends run. The lock and its lease live in the cluster: the client fails over
to the next member, the lock is never held twice, no extend is lost, and the agent keeps one lease."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
import time

import pytest

from etcdtest import ETCD_BIN, EtcdCluster, require_binary
from lvmtest import TEST_ENV, lvm

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import LvmStorage, ThinDisk
from ansible_collections.sltv.core.plugins.module_utils.errors import LockTimeout
from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.locking.etcd_lock import EtcdVgLock
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, thin_cap

TTL = 4


@pytest.fixture
def etcd_cluster(tmp_path):
    require_binary(ETCD_BIN, "etcd")
    cluster = EtcdCluster(str(tmp_path / "cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def rotated(endpoints, used):
    """The endpoints starting after ``used``: a second client on another member."""
    at = endpoints.index(used)
    return endpoints[at + 1:] + endpoints[:at + 1]


def test_a_held_lock_survives_losing_the_member_in_use_and_is_never_held_twice(etcd_cluster):
    settings = etcd_cluster.client_settings(lock_ttl=TTL, lock_timeout=5.0, lock_prefix="/failover-lock")
    lock = EtcdVgLock.from_settings(settings, "vg0", "holder-a")
    lock.acquire()
    used = lock._client.endpoint  # pylint: disable=protected-access  # the member to kill
    etcd_cluster.member(used).kill()  # crash-stop the member the holder talks to
    rival = EtcdVgLock.from_settings(dict(settings, etcd_endpoints=rotated(etcd_cluster.endpoints, used),
                                          lock_timeout=2.5 * TTL), "vg0", "holder-b")
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="holder-a"):
        rival.acquire()  # tries all through the failover, for 2.5 lease TTLs: the lease never lapsed
        rival.release()  # (reached only when the lock was held twice)
    assert time.monotonic() - started >= 2.5 * TTL - 0.5
    lock.ensure_held()  # confirmed by the cluster, through another member
    assert lock.endpoint != used
    lock.release()
    assert lock.release_warning is None
    rival.timeout = 5.0
    rival.acquire()  # free once released
    rival.release()


def lease_ids(cluster, alive):
    out = alive.etcdctl("lease", "list")
    return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def test_extends_go_on_while_the_member_in_use_dies_and_one_lease_per_agent(etcd_cluster, loop_vg, tmp_path):
    lvm("lvcreate", "-q", "-n", "d1", "-L", "64m", "-an", "-Zn", "-Wn", "--setautoactivation", "n",
        *sum((["--addtag", tag] for tag in T.disk_tags("thin", "qcow2", 4 * GIB)), []) + [loop_vg.name])
    config = parse_agent_config({"vgs": [loop_vg.name], "lock": etcd_cluster.client_settings(
        lock_ttl=TTL, lock_timeout=10.0, lock_prefix="/failover-agent")})
    runner = LvmRunner(host_lock_path=str(tmp_path / "host.lock"), environ=TEST_ENV, timeout=30)
    storage = LvmStorage(config, runner, host="hostA",
                         etcd_connect=lambda settings: etcd_client.connect(settings, deadline=time.monotonic() + 5))
    storage.register(1)
    first_endpoint = storage._etcd.endpoint  # pylint: disable=protected-access  # which member to kill
    disk = ThinDisk(loop_vg.name, "d1", 64 * MIB, thin_cap(4 * GIB, 4 * MIB), 4 * MIB)
    outcomes = []
    killed = threading.Event()

    def extends():
        for number in range(12):
            size = (64 + 4 * (number + 1)) * MIB
            try:
                outcomes.append(storage.extend(disk, size, {}))
            except Exception as exc:  # pylint: disable=broad-except  # reported by the assertion below
                outcomes.append(exc)
            if number == 3:
                killed.wait(10)

    worker = threading.Thread(target=extends)
    worker.start()
    assert wait_until(lambda: len(outcomes) >= 4, 30)
    etcd_cluster.member(first_endpoint).kill()  # the member of the agent's client, while extends run
    killed.set()
    worker.join(120)
    assert outcomes == [(64 + 4 * (n + 1)) * MIB for n in range(12)]  # none lost, none failed
    assert loop_vg.lvs()["d1"]["size"] == 112 * MIB
    for size in outcomes[-3:]:
        storage.published(disk, size, 0.1)
    storage.register(1)
    assert storage.cluster_up
    assert storage._etcd.endpoint != first_endpoint  # pylint: disable=protected-access
    storage._wait_released()  # pylint: disable=protected-access  # the last lock's release
    alive = next(m for m in etcd_cluster.members if m.running)
    time.sleep(0.2)
    # one lease: the process's, which the agent's records and its locks share (across the failover);
    # none per extend
    assert len(lease_ids(etcd_cluster, alive)) == 1
    record = json.loads(alive.etcdctl("get", "/failover-agent/extends/%s/d1" % loop_vg.name,
                                      "--print-value-only").strip())
    assert record["size"] == 112 * MIB
    storage.close()  # revokes it: the agent's keys go at once
    assert wait_until(lambda: lease_ids(etcd_cluster, alive) == [], 5)


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()

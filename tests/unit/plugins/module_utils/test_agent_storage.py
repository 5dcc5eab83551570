# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LvmStorage against a recording lvm runner, a local lock in a temporary directory and a fake etcd
client. Real lvm2 and etcd run in tests/integration."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import stat
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent import agent_storage
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed, LvmStorage, Storage, ThinDisk
from ansible_collections.sltv.core.plugins.module_utils.locking import etcd_lock
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, FileLock, LocalVgLock
from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError, LockError, LockLost, SltvError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import VgNotFound, VolumeGroup
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, thin_cap

EXTENT = 4 * MIB
THIN_TAGS = ",".join(T.disk_tags("thin", "qcow2", 10 * GIB))


class FakeRunner(object):
    """lvm as a dict: VG -> {lv: [size, tags, attr]}; records writes; scripted failures."""

    def __init__(self):
        self.vgs = {"vg0": {}}
        self.free = {"vg0": 100 * GIB}
        self.calls = []
        self.fence = None
        self.extend_error = None  # CommandError or LockError raised by extend_lv
        self.grow_files = {}  # lv -> file path truncated to the new size (an active LV's device)
        self.read_error = None

    def add(self, name, size, tags=THIN_TAGS, attr="-wi-------", vg="vg0"):
        self.vgs.setdefault(vg, {})[name] = [size, tags, attr]
        self.free.setdefault(vg, 100 * GIB)

    def read_vgs(self, names=None):
        self.calls.append(("read_vgs", tuple(names or ())))
        missing = [name for name in names or () if name not in self.vgs]
        if missing:  # like lvm fullreport: one missing VG fails the whole report
            raise VgNotFound("volume group %s not found on this host" % ", ".join(missing))
        return [self._vg(name) for name in (names or sorted(self.vgs))]

    def read_vg(self, vg, lv=None):
        self.calls.append(("read_vg", vg))
        if self.read_error:
            raise self.read_error
        if vg not in self.vgs:
            raise VgNotFound("volume group %s not found on this host" % vg)
        return self._vg(vg, lv)

    def _vg(self, vg, only=None):
        # like lvm fullreport -S lv_name=...: with ``only``, that LV's row alone
        row = {"vg_name": vg, "vg_size": str(200 * GIB), "vg_free": str(self.free[vg]), "vg_extent_size": str(EXTENT)}
        lvs = [{"lv_name": name, "lv_size": str(size), "lv_tags": tags, "lv_attr": attr, "lv_path": "/dev/%s/%s" % (vg, name)}
               for name, (size, tags, attr) in sorted(self.vgs[vg].items()) if only is None or name == only]
        return VolumeGroup(row, lvs)

    def extend_lv(self, vg, name, size):
        self.calls.append(("extend_lv", vg, name, size, self.fence is not None))
        if self.fence is not None:
            self.fence()
        if self.extend_error is not None:
            raise self.extend_error
        self.vgs[vg][name][0] = size
        if name in self.grow_files:
            with open(self.grow_files[name], "r+b") as handle:
                handle.truncate(size)

    def refresh(self, vg, name):
        self.calls.append(("refresh", vg, name))


class FakeEtcd(object):
    def __init__(self, kvs=None):
        self.kvs = dict(kvs or {})
        self.leases = []
        self.revoked = []
        self.txns = []
        self.fail = None
        self.closed = False

    def _check(self):
        if self.fail:
            raise self.fail

    def get_prefix(self, prefix):
        self._check()
        return [{"key": key.encode("utf-8"), "value": value.encode("utf-8")}
                for key, value in sorted(self.kvs.items()) if key.startswith(prefix)]

    def grant_lease(self, ttl):
        self._check()
        self.leases.append(ttl)
        return (len(self.leases), ttl)

    def refresh_lease(self, lease):
        self._check()
        return 30

    def revoke_lease(self, lease):
        self._check()
        self.revoked.append(lease)

    def clone(self, timeout=None):  # the lease's keepalive thread and its revoke use a copy
        return self

    def describe(self, exc):
        return str(exc)

    def txn(self, body):
        self._check()
        self.txns.append(body)
        return {"succeeded": True}

    def close(self):
        self.closed = True


def record(host, vg="vg0", disk="d1", size=3 * GIB, at=100.0):
    return json.dumps(dict(host=host, vg=vg, disk=disk, size=size, time=at, seconds=0.2))


@pytest.fixture
def local_locks(tmp_path, monkeypatch):
    """Local VG locks in tmp_path instead of /run/lock/sltv."""
    lock_dir = str(tmp_path / "locks")
    made = []

    def make(settings, vg, holder):
        lock = LocalVgLock(vg, holder, settings["lock_timeout"], lock_dir=lock_dir)
        made.append(lock)
        return lock

    monkeypatch.setattr(agent_storage, "make_vg_lock", make)
    return lock_dir, made


LOCK_TTL = LOCK_SETTINGS_DEFAULTS["lock_ttl"]  # the agent's one lease is the process's lock lease


@pytest.fixture(autouse=True)
def no_lease_left():
    """Each test starts without the process's etcd leases of an earlier one (etcd_lock.process_lease)."""
    yield
    etcd_lock.close_sessions()


def storage(runner=None, vgs=("vg0",), lock=None, etcd=None, host="hostA"):
    data = {"vgs": list(vgs)}
    if lock:
        data["lock"] = lock
    config = parse_agent_config(data)
    connect = None
    if etcd is not None:
        connect = etcd if callable(etcd) and not isinstance(etcd, FakeEtcd) else (lambda settings: etcd)
    return LvmStorage(config, runner or FakeRunner(), host=host, etcd_connect=connect, clock=lambda: 1000.0)


def disk(name="d1", size=2 * GIB, cap=None, active=False, paths=None):
    return ThinDisk("vg0", name, size, cap or thin_cap(10 * GIB, EXTENT), EXTENT, paths, active)


# -- the base interface ----------------------------------------------------------------------------

def test_storage_interface_defaults():
    base = Storage()
    with pytest.raises(NotImplementedError):
        base.thin_disks()
    with pytest.raises(NotImplementedError):
        base.extend(disk(), GIB, {})
    assert base.cluster_up is True
    assert base.published(disk(), GIB, 0.1) is None
    assert base.after_sweep([]) is None
    base.stopping()
    base.close()


def test_thin_disk_paths_and_key():
    thin = ThinDisk("vg-a", "d-1", GIB, 2 * GIB, EXTENT)
    assert thin.key == "vg-a/d-1"
    assert thin.paths == ("/dev/vg-a/d-1", "/dev/mapper/vg--a-d--1")


# -- reading -----------------------------------------------------------------------------------------

def test_thin_disks_filters_and_caps():
    runner = FakeRunner()
    runner.add("d1", 2 * GIB, attr="-wi-a-----")
    runner.add("pending", GIB, tags=THIN_TAGS + "," + T.INIT_PENDING_TAG)
    runner.add("deleting", GIB, tags=THIN_TAGS + "," + T.DELETING_TAG)
    runner.add("thick", GIB, tags=",".join(T.disk_tags("thick", "raw", GIB)))
    runner.add("plain", GIB, tags="")
    runner.add("other_tool", GIB, tags="sltv_kind=thin")  # no 'sltv' tag: not managed
    runner.add("novsize", 3 * GIB, tags="sltv,sltv_kind=thin")
    disks = dict((d.name, d) for d in storage(runner).thin_disks())
    assert sorted(disks) == ["d1", "novsize"]
    d1 = disks["d1"]
    assert (d1.vg, d1.size, d1.extent_size, d1.active) == ("vg0", 2 * GIB, EXTENT, True)
    assert d1.cap == thin_cap(10 * GIB, EXTENT) == 11264 * MIB
    assert set(d1.paths) == set(["/dev/vg0/d1", "/dev/mapper/vg0-d1"])
    assert disks["novsize"].cap == thin_cap(3 * GIB, EXTENT)  # no vsize tag: the LV size
    assert not disks["novsize"].active
    assert runner.calls == [("read_vgs", ("vg0",))]  # one lvm read for every VG


def test_thin_disks_of_several_vgs():
    runner = FakeRunner()
    runner.add("d1", GIB)
    runner.add("d2", GIB, vg="vg1")
    assert sorted(d.key for d in storage(runner, vgs=("vg0", "vg1")).thin_disks()) == ["vg0/d1", "vg1/d2"]


class ListLog(object):
    def __init__(self):
        self.lines = []

    def error(self, fmt, *args):
        self.lines.append(("error", fmt % args))

    def info(self, fmt, *args):
        self.lines.append(("info", fmt % args))

    def warning(self, fmt, *args):
        self.lines.append(("warning", fmt % args))


def test_a_missing_vg_is_reported_and_the_others_are_grown():
    """One VG missing (at start or later): its disks wait, the others' are grown; logged once, and in
    the agent's etcd record (sltv_info lists it); picked up when it appears."""
    runner = FakeRunner()
    runner.add("d1", GIB)
    log = ListLog()
    etcd = FakeEtcd()
    store = LvmStorage(parse_agent_config({"vgs": ["vg0", "vg1"], "lock": {"lock_backend": "etcd"}}), runner,
                       host="hostA", etcd_connect=lambda settings: etcd, log=log)
    assert [d.key for d in store.thin_disks()] == ["vg0/d1"]
    assert store.missing_vgs == ["vg1"]
    assert store.degraded() == ["VG vg1 not found"]
    assert [line for line in log.lines if line[0] == "error"] == [
        ("error", "volume group vg1 not found on host hostA: no disk of it is grown until it appears (checked at every "
                  "sweep; check vgs in the agent config and that its PVs are visible here: pvs)")]
    store.thin_disks()
    assert len(log.lines) == 1  # said once
    store.register(1)
    value = json.loads(base64.b64decode(etcd.txns[-1]["success"][0]["request_put"]["value"]))
    assert (value["vgs_missing"], value["degraded"]) == (["vg1"], ["VG vg1 not found"])
    runner.add("d2", GIB, vg="vg1")  # the LUN came back
    assert sorted(d.key for d in store.thin_disks()) == ["vg0/d1", "vg1/d2"]
    assert store.missing_vgs == [] and store.degraded() == []
    assert log.lines[-1] == ("info", "volume group vg1 found on host hostA: growing its disks")


# -- extending -------------------------------------------------------------------------------------

def test_extend_under_the_lock(local_locks):
    lock_dir, made = local_locks
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    store = storage(runner)
    timings = {}
    assert store.extend(disk(), 3 * GIB, timings) == 3 * GIB
    assert ("extend_lv", "vg0", "d1", 3 * GIB, True) in runner.calls  # fenced by the lock while it ran
    assert sorted(timings) == ["fence", "lock", "lvextend", "verify"]
    assert all(seconds >= 0 for seconds in timings.values())
    assert runner.fence is None
    assert len(made) == 1 and not made[0].held  # released
    assert os.path.exists(os.path.join(lock_dir, "vg-vg0.lock"))
    assert made[0].holder.startswith("hostA:sltv-agent:")
    assert store.cluster_up


def test_extend_verifies_the_active_device(local_locks, tmp_path):
    runner = FakeRunner()
    runner.add("d1", 2 * GIB, attr="-wi-a-----")
    device = tmp_path / "dev-d1"
    device.write_bytes(b"")
    os.truncate(str(device), 2 * GIB)
    runner.grow_files["d1"] = str(device)
    thin = disk(active=True, paths=[str(device)])
    assert storage(runner).extend(thin, 3 * GIB, {}) == 3 * GIB
    assert not [c for c in runner.calls if c[0] == "read_vg"]  # the device answered, no lvm read
    runner.grow_files.clear()  # lvextend "works" but the device keeps its size
    with pytest.raises(ExtendFailed, match="device .* is 3 GiB, not 4 GiB") as info:
        storage(runner).extend(thin, 4 * GIB, {})
    assert info.value.reason == "lvm"


def test_extend_above_cap_refused_before_locking(local_locks):
    lock_dir, made = local_locks
    runner = FakeRunner()
    with pytest.raises(ExtendFailed, match="above the cap") as info:
        storage(runner).extend(disk(cap=3 * GIB), 3 * GIB + EXTENT, {})
    assert info.value.reason == "cap"
    assert made == [] and runner.calls == []


def test_extend_lock_timeout(local_locks):
    lock_dir, made = local_locks
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    holder = FileLock(os.path.join(lock_dir, "vg-vg0.lock"), 1)
    holder.acquire()
    try:
        with pytest.raises(ExtendFailed, match="cannot take the lock of VG vg0") as info:
            storage(runner, lock={"lock_timeout": 0.05}).extend(disk(), 3 * GIB, {})
    finally:
        holder.release()
    assert info.value.reason == "lock"
    assert not [c for c in runner.calls if c[0] == "extend_lv"]


class FailingLock(object):
    def __init__(self, error):
        self.error = error

    def acquire(self):
        raise self.error

    def release(self):
        raise AssertionError("never acquired")


def test_etcd_lock_failure_marks_the_cluster_down(monkeypatch):
    monkeypatch.setattr(agent_storage, "make_vg_lock", lambda settings, vg, holder: FailingLock(LockError("no endpoint")))
    store = storage(lock={"lock_backend": "etcd"})
    with pytest.raises(ExtendFailed) as info:
        store.extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lock"
    assert store.cluster_up is False


class SlowReleaseLock(object):
    """An etcd lock whose release takes a while (two etcd requests under load)."""

    def __init__(self, events, seconds=0.3):
        self.events = events
        self.seconds = seconds

    def acquire(self):
        self.events.append("acquire")

    def ensure_held(self):
        pass

    def release(self):
        time.sleep(self.seconds)
        self.events.append("released")


def test_etcd_lock_is_released_off_the_extend_path_and_before_the_next_one(monkeypatch):
    events = []
    monkeypatch.setattr(agent_storage, "make_vg_lock", lambda settings, vg, holder: SlowReleaseLock(events))
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    store = storage(runner, lock={"lock_backend": "etcd"})
    started = time.monotonic()
    assert store.extend(disk(), 3 * GIB, {}) == 3 * GIB
    assert time.monotonic() - started < 0.25  # did not wait for the release
    assert events == ["acquire"]
    store.extend(disk(size=3 * GIB), 4 * GIB, {})
    assert events[:3] == ["acquire", "released", "acquire"]  # one holder at a time
    store.close()
    assert events == ["acquire", "released", "acquire", "released"]


def test_lock_lost_before_lvextend(local_locks):
    lock_dir, made = local_locks
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    runner.extend_error = LockLost("lease expired")
    with pytest.raises(ExtendFailed, match="lost the lock of VG vg0") as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lock"
    assert not made[0].held and runner.fence is None


def test_no_lvextend_starts_once_the_agent_stops(local_locks):
    """The stop comes while an extend waits for the VG lock: it may get the lock (and the host's lvm
    lock) after the agent's wait for it ended, so its lvextend is refused right before it would run
    (it could be killed between device suspend and resume). The next start extends it again."""
    import threading

    lock_dir, made = local_locks
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    store = storage(runner, lock={"lock_timeout": 5})
    holder = FileLock(os.path.join(lock_dir, "vg-vg0.lock"), 1)
    holder.acquire()  # a module's write path holds the VG
    outcome = []

    def extend():
        try:
            store.extend(disk(), 3 * GIB, {})
        except ExtendFailed as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=extend)
    waiting.start()
    time.sleep(0.1)
    store.stopping()
    holder.release()
    waiting.join(5)
    assert [str(exc) for exc in outcome] == ["vg0/d1: lvextend not run: the agent is stopping"]
    assert runner.vgs["vg0"]["d1"][0] == 2 * GIB
    assert not made[0].held and runner.fence is None


def test_the_refresh_after_an_lvextend_does_not_start_once_the_agent_stops(local_locks, tmp_path):
    """The stop comes while lvextend runs (the agent waits for it); the lvchange --refresh that would
    follow (another host grew the LV first) is a device suspend too: not started."""
    class StopDuringLvextend(FakeRunner):
        def extend_lv(self, vg, name, size):
            self.fence()  # passes: the stop has not come yet
            store.stopping()  # systemctl stop, while lvextend runs
            raise lvextend_error("New size given (768 extents) not larger than existing size (768 extents)")

    runner = StopDuringLvextend()
    runner.add("d1", 3 * GIB, attr="-wi-a-----")  # the other end of a migration grew it first
    device = tmp_path / "dev-d1"
    device.write_bytes(b"")
    os.truncate(str(device), 2 * GIB)
    store = storage(runner)
    with pytest.raises(ExtendFailed, match="lvchange --refresh not run: the agent is stopping"):
        store.extend(disk(paths=[str(device)]), 3 * GIB, {})
    assert ("refresh", "vg0", "d1") not in runner.calls


def lvextend_error(stderr="Insufficient free space: 256 extents needed, but only 10 available"):
    return CommandError(["lvextend", "-L", "3221225472b", "vg0/d1"], 5, stderr)


def test_lvextend_failure_when_already_grown_is_success(local_locks):
    runner = FakeRunner()
    runner.add("d1", 3 * GIB)  # the other end of a migration grew it first
    runner.extend_error = lvextend_error("New size given (768 extents) not larger than existing size (768 extents)")
    timings = {}
    assert storage(runner).extend(disk(), 3 * GIB, timings) == 3 * GIB
    assert "lvextend" in timings


def test_lvextend_failure_vg_full(local_locks):
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    runner.free["vg0"] = 40 * MIB
    runner.extend_error = lvextend_error()
    with pytest.raises(ExtendFailed) as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "vg_full"
    message = str(info.value)
    assert "VG vg0 is full" in message
    assert "40 MiB free" in message and "1 GiB needed" in message
    assert "vgextend" in message


def test_lvextend_failure_other(local_locks):
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    runner.extend_error = lvextend_error("Device or resource busy")
    with pytest.raises(ExtendFailed, match="lvextend failed: .*busy") as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lvm"
    runner.read_error = SltvError("lvm hangs")
    with pytest.raises(ExtendFailed) as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lvm"


def test_lvextend_failure_lv_gone(local_locks):
    runner = FakeRunner()
    runner.extend_error = lvextend_error("Failed to find logical volume vg0/d1")
    with pytest.raises(ExtendFailed) as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lvm"


def test_verify_lvm_reports_too_small(local_locks):
    runner = FakeRunner()
    runner.add("d1", 2 * GIB)
    original = runner.extend_lv
    runner.extend_lv = lambda vg, name, size: original(vg, name, size - EXTENT)
    with pytest.raises(ExtendFailed, match="lvm reports") as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert info.value.reason == "lvm"


# -- refreshing what others grew ---------------------------------------------------------------------

def devices(tmp_path, sizes):
    """Regular files stand for the dm devices: device_size gives a file's size too."""
    disks = []
    for name, lv_size, device_size, active in sizes:
        path = tmp_path / ("dev-" + name)
        path.write_bytes(b"")
        os.truncate(str(path), device_size)
        disks.append(disk(name, size=lv_size, active=active, paths=[str(path)]))
    return disks


def test_after_sweep_refreshes_active_disks_whose_device_is_smaller(tmp_path):
    runner = FakeRunner()
    disks = devices(tmp_path, [("grown", 3 * GIB, 2 * GIB, True), ("same", 2 * GIB, 2 * GIB, True),
                               ("inactive", 3 * GIB, 2 * GIB, False)])
    assert storage(runner).after_sweep(disks) == ["vg0/grown"]
    assert runner.calls == [("refresh", "vg0", "grown")]


def test_after_sweep_with_monkeypatcheddevice_size(monkeypatch):
    sizes = {"/dev/vg0/d1": 2 * GIB, "/dev/vg0/d2": 2 * GIB}
    monkeypatch.setattr(agent_storage, "device_size", lambda path: sizes[path])
    monkeypatch.setattr(agent_storage.os.path, "exists", lambda path: path in sizes)
    runner = FakeRunner()
    disks = [disk("d1", 3 * GIB, active=True), disk("d2", 2 * GIB, active=True), disk("d3", 3 * GIB, active=True)]
    assert storage(runner).after_sweep(disks) == ["vg0/d1"]
    assert runner.calls == [("refresh", "vg0", "d1")]


def test_after_sweep_unreadable_device_is_skipped(monkeypatch, tmp_path):
    def broken(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(agent_storage, "device_size", broken)
    runner = FakeRunner()
    assert storage(runner).after_sweep(devices(tmp_path, [("d1", 3 * GIB, 2 * GIB, True)])) == []
    assert runner.calls == []


def remote_keys(store, etcd):
    """Disk keys of the new extend records (entries may be keys or (key, size) pairs)."""
    return [entry[0] if isinstance(entry, tuple) else entry for entry in store._remote_extends(etcd)]


def test_remote_extend_records_other_hosts_only(monkeypatch):
    etcd = FakeEtcd({
        "/sltv/extends/vg0/d1": record("hostB", disk="d1"),
        "/sltv/extends/vg0/d2": record("hostA", disk="d2"),  # our own extend
        "/sltv/extends/vg0/d3": "not json",
        "/sltv/agents/hostB": json.dumps({"host": "hostB"}),
    })
    checked = []
    monkeypatch.setattr(agent_storage, "device_size", lambda path: checked.append(path) or 2 * GIB)
    monkeypatch.setattr(agent_storage.os.path, "exists", lambda path: True)
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    assert remote_keys(store, etcd) == ["vg0/d1"]
    store.after_sweep([disk("d1", 2 * GIB, active=True)])
    assert remote_keys(store, etcd) == []  # already handled
    etcd.kvs["/sltv/extends/vg0/d1"] = record("hostB", disk="d1", size=4 * GIB, at=200.0)
    assert remote_keys(store, etcd) == ["vg0/d1"]  # a newer extend
    store.after_sweep([disk("d1", 2 * GIB, active=True)])
    assert checked == ["/dev/vg0/d1"] * 2
    assert store.cluster_up


def test_remote_extend_record_refreshes_at_once(monkeypatch):
    etcd = FakeEtcd({"/sltv/extends/vg0/d1": record("hostB", disk="d1", size=3 * GIB)})
    monkeypatch.setattr(agent_storage, "device_size", lambda path: 2 * GIB)
    monkeypatch.setattr(agent_storage.os.path, "exists", lambda path: True)
    runner = FakeRunner()
    store = storage(runner, lock={"lock_backend": "etcd"}, etcd=etcd)
    store.after_sweep([disk("d1", 2 * GIB, active=True)])  # the agent's catalog still says 2 GiB
    assert runner.calls == [("refresh", "vg0", "d1")]


def test_no_etcd_with_the_local_backend():
    etcd = FakeEtcd({"/sltv/extends/vg0/d1": record("hostB")})
    store = storage(etcd=etcd)  # lock_backend local: etcd is never asked
    store.register(3)
    store.published(disk(), 3 * GIB, 0.5)
    assert store.after_sweep([]) == []
    assert etcd.txns == [] and etcd.leases == []
    assert store.cluster_up


def test_register_and_publish():
    etcd = FakeEtcd()
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    store.register(2)
    store.register(3)
    assert etcd.leases == [LOCK_TTL]  # granted once: the process's lease, kept alive by its own thread
    store.published(disk(), 3 * GIB, 0.25)
    assert len(etcd.txns) == 3
    put = etcd.txns[-1]["success"][0]["request_put"]
    assert put["lease"] == 1  # the agent's lease
    store.close()
    assert etcd.revoked == [1] and etcd.closed


def test_register_writes_the_record_only_when_it_changes(monkeypatch):
    """An unchanged record is not put again at every sweep: only the lease's keep-alive goes to etcd
    (a put is a raft proposal and a revision kept until etcd compacts; 50 agents made 10/s)."""
    etcd = FakeEtcd()
    refreshed = []
    etcd.refresh_lease = lambda lease: refreshed.append(lease) or 30
    now = [100.0]
    monkeypatch.setattr(agent_storage.time, "monotonic", lambda: now[0])
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    for _sweep in range(5):
        store.register(2)
    # no request at all for an unchanged record: the lease's keepalive thread refreshes the lease
    assert len(etcd.txns) == 1 and refreshed == []
    store.register(3)  # the record changed: written
    assert len(etcd.txns) == 2
    now[0] += agent_storage.AGENT_RECORD_REWRITE  # unchanged, but rewritten now and then (a lost key comes back)
    store.register(3)
    assert len(etcd.txns) == 3
    value = json.loads(base64.b64decode(etcd.txns[-1]["success"][0]["request_put"]["value"]))
    assert value["disks"] == 3


def test_register_writes_again_on_a_new_lease(monkeypatch):
    """The lease was lost (its keepalive found it expired) or etcd failed: the record is put again at once,
    on a new lease when the old one is lost; the process's locks then take that new lease too."""
    etcd = FakeEtcd()
    monkeypatch.setattr(agent_storage.time, "monotonic", lambda: 100.0)
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    store.register(1)
    store.register(1)
    assert len(etcd.txns) == 1
    session = etcd_lock.process_lease(store.config.lock, etcd)
    assert session.lease_id == 1
    session.mark_lost("the lease 1 expired (etcd answered TTL -1)")  # what its keepalive does
    store.register(1)
    assert etcd.leases == [LOCK_TTL] * 2
    assert [t["success"][0]["request_put"]["lease"] for t in etcd.txns] == [1, 2]
    assert etcd_lock.process_lease(store.config.lock, etcd).lease_id == 2  # the one the locks take now
    etcd.fail = IOError("connection refused")
    store.register(1)  # unchanged: nothing to send
    store.after_sweep([])  # the sweep's read of the extend records fails: etcd is down
    assert not store.cluster_up
    etcd.fail = None
    store._cluster_retry_at = 0.0  # pylint: disable=protected-access  # the retry time has come
    store.register(1)
    # written again after the failure (the key may have gone with an outage), on the lease that still lives
    assert [t["success"][0]["request_put"]["lease"] for t in etcd.txns] == [1, 2, 2]
    assert etcd.leases == [LOCK_TTL] * 2


def test_published_extends_share_the_one_agent_lease():
    """No lease per extend (each was 3600 s and never revoked: they piled up in etcd)."""
    etcd = FakeEtcd()
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    for number in range(5):
        store.published(disk("d%d" % number), 3 * GIB, 0.25)  # before the first register, too
    store.register(1)
    assert etcd.leases == [LOCK_TTL]
    assert set(t["success"][0]["request_put"]["lease"] for t in etcd.txns) == set([1])


@pytest.mark.parametrize("what", ["register", "published", "after_sweep", "close"])
def test_etcd_failures_never_raise(what):
    etcd = FakeEtcd()
    store = storage(lock={"lock_backend": "etcd"}, etcd=etcd)
    store.register(1)
    etcd.fail = IOError("connection refused")
    if what == "register":
        store.register(2)  # a changed record: put (an unchanged one sends nothing)
    elif what == "published":
        store.published(disk(), 3 * GIB, 0.1)
    elif what == "after_sweep":
        assert store.after_sweep([]) == []
    else:
        store.close()
        return
    assert store.cluster_up is False
    etcd.fail = None
    store.register(1)  # within CLUSTER_RETRY: etcd is not asked again, so a sweep never blocks on it
    assert store.cluster_up is False
    store._cluster_retry_at = 0.0  # pylint: disable=protected-access  # the retry time has come
    store.register(3)  # a new connection; the process's lease lives on
    assert store.cluster_up is True


def test_etcd_connect_failure_never_raises():
    calls = []

    def connect(settings):
        calls.append(settings["etcd_endpoints"])
        raise LockError("no etcd endpoint answered")

    store = storage(lock={"lock_backend": "etcd", "etcd_endpoints": ["http://127.0.0.1:1"]}, etcd=connect)
    store.register(1)
    assert store.after_sweep([]) == []
    assert store.cluster_up is False
    assert calls == [["http://127.0.0.1:1"]]  # not again before CLUSTER_RETRY seconds
    store._cluster_retry_at = 0.0  # pylint: disable=protected-access  # the retry time has come
    assert store.after_sweep([]) == []
    assert calls == [["http://127.0.0.1:1"]] * 2
    store.close()


def _change_tags(runner):
    def change_tags(vg, name, add=(), delete=()):
        runner.calls.append(("change_tags", vg, name, tuple(add), tuple(delete), runner.fence is not None))
        size, tags, attr = runner.vgs[vg][name]
        kept = [t for t in tags.split(",") if t and t not in delete]
        runner.vgs[vg][name][1] = ",".join(kept + list(add))
    return change_tags


MIGRATED = "11111111-1111-4111-8111-111111111111"


def test_reclaim_moves_a_migrated_domains_claim_here_under_the_lock_on_a_fresh_read(local_locks):
    runner = FakeRunner()
    old = "sltv_attached=hostB:%s:exclusive:web01" % MIGRATED
    runner.add("d1", 1 * GIB, tags=THIN_TAGS + "," + old)
    runner.add("thick1", 1 * GIB, tags="sltv,sltv_kind=thick,sltv_attached=hostB:%s" % MIGRATED)  # a 1.0 tag
    runner.change_tags = _change_tags(runner)
    store = storage(runner)
    store.thin_disks()
    moved = store.reclaim(MIGRATED, "web01", ["/dev/vg0/d1", "/dev/vg0/thick1", "/var/lib/x.qcow2"])
    assert moved == ["vg0/d1", "vg0/thick1"]
    writes = [c for c in runner.calls if c[0] == "change_tags"]
    assert writes[0] == ("change_tags", "vg0", "d1", ("sltv_attached=hostA:%s:exclusive:web01" % MIGRATED,),
                         (old,), True)
    assert writes[1][4] == ("sltv_attached=hostB:%s" % MIGRATED,) and writes[1][5]
    reads = [c for c in runner.calls if c[0] == "read_vg"]
    assert len(reads) == 2  # one fresh read under the lock per disk
    # moved: nothing left to do
    assert store.reclaim(MIGRATED, "web01", ["/dev/vg0/d1"]) == []


def test_reclaim_leaves_a_disk_claimed_by_another_domain(local_locks):
    runner = FakeRunner()
    runner.add("d1", 1 * GIB, tags=THIN_TAGS + ",sltv_attached=hostB:99999999-1111-4111-8111-111111111111")
    runner.change_tags = _change_tags(runner)
    store = storage(runner)
    store.thin_disks()
    assert store.reclaim(MIGRATED, "web01", ["/dev/vg0/d1"]) == []
    assert [c for c in runner.calls if c[0] == "change_tags"] == []


def test_a_vg_declaring_etcd_is_not_grown_by_an_agent_on_the_local_lock(local_locks):
    runner = FakeRunner()
    runner.add("d1", 1 * GIB)
    original = runner._vg

    def tagged(vg):
        report = original(vg)
        report.tags = ["sltv_lock=etcd"]
        return report

    runner._vg = tagged
    assert storage(runner).thin_disks() == []


# -- the migration window: another host grew the LV ------------------------------------------------

def test_another_host_grew_it_refresh_here_and_verify_at_once(local_locks, tmp_path):
    """lvextend says 'not larger': the other end of a migration grew it. The dm device here keeps the
    old size until lvchange --refresh: refreshed at once, the extend is a success (the guest resumes)."""
    runner = FakeRunner()
    runner.add("d1", 3 * GIB, attr="-wi-a-----")  # the LV, as the other host left it
    device = tmp_path / "dev-d1"
    device.write_bytes(b"")
    os.truncate(str(device), 2 * GIB)  # the device here, not refreshed yet
    runner.extend_error = lvextend_error("New size given (768 extents) not larger than existing size (768 extents)")

    def refresh(vg, name):
        runner.calls.append(("refresh", vg, name))
        os.truncate(str(device), runner.vgs[vg][name][0])

    runner.refresh = refresh
    thin = disk(active=False, paths=[str(device)])  # a catalog read before the migration: inactive
    assert storage(runner).extend(thin, 3 * GIB, {}) == 3 * GIB
    assert ("refresh", "vg0", "d1") in runner.calls


def test_after_sweep_refreshes_what_a_record_names_even_if_the_catalog_says_inactive(tmp_path, monkeypatch):
    """The catalog (up to 30 s old) says inactive, the LV was activated since (incoming migration):
    the etcd record is acted on, not marked seen and dropped."""
    etcd = FakeEtcd({"/sltv/extends/vg0/grown": record("hostB", disk="grown", size=3 * GIB)})
    runner = FakeRunner()
    store = storage(runner, lock={"lock_backend": "etcd"}, etcd=etcd)
    disks = devices(tmp_path, [("grown", 2 * GIB, 2 * GIB, False)])
    assert store.after_sweep(disks) == ["vg0/grown"]
    assert runner.calls == [("refresh", "vg0", "grown")]


def test_a_record_for_a_disk_not_in_the_catalog_yet_is_kept_for_the_next_sweep(tmp_path):
    etcd = FakeEtcd({"/sltv/extends/vg0/new": record("hostB", disk="new", size=3 * GIB)})
    runner = FakeRunner()
    store = storage(runner, lock={"lock_backend": "etcd"}, etcd=etcd)
    assert store.after_sweep([]) == []
    assert store.after_sweep(devices(tmp_path, [("new", 3 * GIB, 2 * GIB, True)])) == ["vg0/new"]


# -- a hung lvm command -------------------------------------------------------------------------------

def fake_lvm_bin(tmp_path, lvextend_body):
    """A PATH directory with an 'lvextend' script and an 'lvm' that reports vg0/d1 at 2 GiB."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    report = {"report": [{"vg": [{"vg_name": "vg0", "vg_size": str(200 * GIB), "vg_free": str(100 * GIB),
                                  "vg_extent_size": str(EXTENT)}],
                          "lv": [{"lv_name": "d1", "lv_size": str(2 * GIB), "lv_tags": THIN_TAGS, "lv_attr": "-wi-------"}]}]}
    scripts = {"lvextend": "#!/bin/sh\n" + lvextend_body + "\n",
               "lvm": "#!/bin/sh\ncat <<'JSON'\n%s\nJSON\n" % json.dumps(report)}
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(stat.S_IRWXU)
    return str(bin_dir)


def test_a_hung_lvextend_is_killed_in_time_and_frees_the_vg_lock(local_locks, tmp_path, monkeypatch):
    """A real process that hangs (a dead LUN): killed after the runner's timeout, the extend fails
    (the agent counts and retries it), and the VG lock is free again."""
    from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner

    lock_dir, made = local_locks
    pid_file = tmp_path / "lvextend.pid"
    monkeypatch.setenv("PATH", fake_lvm_bin(tmp_path, "echo $$ > %s\nexec sleep 60" % pid_file) + ":" + os.environ["PATH"])
    runner = LvmRunner(host_lock_path=str(tmp_path / "host.lock"), environ={}, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ExtendFailed, match="timeout after 0.5 s") as info:
        storage(runner).extend(disk(), 3 * GIB, {})
    assert time.monotonic() - started < 5
    assert info.value.reason == "lvm"
    assert not made[0].held
    again = LocalVgLock("vg0", "other", 0.1, lock_dir=lock_dir)
    again.acquire()  # free: nobody waits for a hung command
    again.release()
    pid = int(pid_file.read_text())
    with pytest.raises(OSError):
        os.kill(pid, 0)  # killed, not left behind


def test_host_lock_held_by_a_module_fails_the_extend_within_the_agent_bound(local_locks, tmp_path, monkeypatch):
    """A module's lvm command holds the host's lvm lock (it may, up to 300 s): the agent's wait for it
    ends at its own bound (within the watchdog budget), lvextend never runs, the extend fails with
    reason host_lock (counted and retried by the agent) and the VG lock is free again."""
    from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
    from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import FileLock

    lock_dir, made = local_locks
    ran = tmp_path / "lvextend.ran"
    monkeypatch.setenv("PATH", fake_lvm_bin(tmp_path, "touch %s" % ran) + ":" + os.environ["PATH"])
    host_lock = str(tmp_path / "host" / "lvm-host.lock")
    module = FileLock(host_lock, 1)
    module.acquire()  # another process's lvm command on this host
    try:
        runner = LvmRunner(host_lock_path=host_lock, environ={}, timeout=5, host_lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ExtendFailed, match="host's lvm lock") as info:
            storage(runner).extend(disk(), 3 * GIB, {})
        assert time.monotonic() - started < 2
    finally:
        module.release()
    assert info.value.reason == "host_lock"
    assert not ran.exists()
    assert not made[0].held
    again = LocalVgLock("vg0", "other", 0.1, lock_dir=lock_dir)
    again.acquire()
    again.release()


def test_extends_of_two_vgs_at_once_each_fence_with_their_own_lock(local_locks):
    """One worker per VG: two extends run at the same time, each lvextend fenced by its own VG's lock
    (a shared runner.fence would let one VG's lvextend be fenced by the other's lock)."""
    import threading

    both_in = threading.Barrier(2, timeout=5)
    fences = {}

    class TwoAtOnce(FakeRunner):
        def extend_lv(self, vg, name, size):
            both_in.wait()  # both extends are between setting their fence and lvextend
            fences[vg] = self.fence
            super(TwoAtOnce, self).extend_lv(vg, name, size)

    runner = TwoAtOnce()
    runner.add("d0", 2 * GIB)
    runner.add("d1", 2 * GIB, vg="vg1")
    store = storage(runner, vgs=("vg0", "vg1"))
    results = {}
    threads = [threading.Thread(target=lambda d: results.setdefault(d.vg, store.extend(d, 3 * GIB, {})), args=(d,))
               for d in (disk("d0"), ThinDisk("vg1", "d1", 2 * GIB, thin_cap(10 * GIB, EXTENT), EXTENT))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"vg0": 3 * GIB, "vg1": 3 * GIB}
    assert fences["vg0"] is not None and fences["vg1"] is not None and fences["vg0"] is not fences["vg1"]
    assert runner.fence is None

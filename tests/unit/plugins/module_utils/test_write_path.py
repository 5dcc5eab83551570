# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one write path: backend declared by the VG, fence after the host-lock wait, safe lock files,
and results that report partial work."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, LockLost
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner, VolumeGroup
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import FileLock, LocalVgLock
from ansible_collections.sltv.core.plugins.module_utils.locking.write_path import WritePath, check_backend
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult


def vg(tags="", lock_type=""):
    row = {"vg_name": "vg0", "vg_size": "1073741824", "vg_free": "0", "vg_extent_size": "4194304",
           "vg_tags": tags, "vg_lock_type": lock_type}
    return VolumeGroup(row, [])


def test_a_vg_that_declares_etcd_refuses_the_local_backend_naming_the_setting():
    with pytest.raises(LockError) as info:
        check_backend(vg("sltv_lock=etcd"), "local")
    assert "lock_backend=etcd" in str(info.value) and "vg0" in str(info.value) and "nothing was changed" in str(info.value)
    assert check_backend(vg("sltv_lock=etcd"), "etcd") is None
    assert check_backend(vg("sltv_lock=local"), "etcd") is None  # stronger is fine
    with pytest.raises(LockError):
        check_backend(vg("sltv_lock=zookeeper"), "etcd")


def test_an_undeclared_lvmlockd_vg_with_the_local_backend_warns():
    assert "lvmlockd" in check_backend(vg(lock_type="sanlock"), "local")
    assert check_backend(vg(), "local") is None


class FakeRunner(object):
    def __init__(self, report):
        self.report = report
        self.fence = None
        self.reads = 0

    def read_vg(self, name, lv=None):
        self.reads += 1
        self.read_lv = lv
        return self.report


def test_write_path_reads_again_under_the_lock_and_refuses_before_any_write(tmp_path):
    runner = FakeRunner(vg("sltv_lock=etcd"))
    result = OpResult()
    with pytest.raises(LockError):
        with WritePath(runner, lambda: LocalVgLock("vg0", "t", 5, lock_dir=str(tmp_path / "l")), "vg0", result):
            pytest.fail("the body must not run")
    assert runner.reads == 1 and runner.fence is None
    # released: the lock can be taken again at once
    lock = LocalVgLock("vg0", "t", 0.1, lock_dir=str(tmp_path / "l"))
    lock.acquire()
    lock.release()


def test_write_path_fences_inside_and_not_after(tmp_path):
    runner = FakeRunner(vg())
    result = OpResult()
    with WritePath(runner, lambda: LocalVgLock("vg0", "t", 5, lock_dir=str(tmp_path)), "vg0", result) as fresh:
        assert fresh is runner.report and runner.fence is not None
        runner.fence()
    assert runner.fence is None and result.lock_wait >= 0


def test_fence_runs_after_the_host_lock_wait_so_a_lease_lost_meanwhile_stops_the_write(tmp_path):
    host_lock = str(tmp_path / "locks" / "lvm-host.lock")
    marker = tmp_path / "written"
    holder = FileLock(host_lock, 5)
    holder.acquire()
    lost = []

    def fence():
        if lost:
            raise LockLost("lease expired")

    runner = LvmRunner(fence=fence, host_lock_path=host_lock, environ={})

    def release_later():
        time.sleep(0.3)
        lost.append(True)  # the lease expires while the write waits for the host lock
        holder.release()

    thread = threading.Thread(target=release_later)
    thread.start()
    with pytest.raises(LockLost):
        runner._run(["touch", str(marker)], write=True)
    thread.join()
    assert not marker.exists()


def test_lvm_commands_are_bounded_by_a_timeout(tmp_path):
    runner = LvmRunner(host_lock_path=str(tmp_path / "h.lock"), environ={}, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        runner._run(["sleep", "5"], write=False)
    assert time.monotonic() - started < 3 and "timeout" in str(info.value)


def test_lock_directory_is_created_0700_and_a_foreign_or_linked_one_is_refused(tmp_path):
    lock = FileLock(str(tmp_path / "sltv" / "a.lock"), 1)
    lock.acquire()
    lock.release()
    assert oct(os.stat(str(tmp_path / "sltv")).st_mode & 0o777) == "0o700"
    assert oct(os.stat(str(tmp_path / "sltv" / "a.lock")).st_mode & 0o777) == "0o600"
    os.symlink(str(tmp_path / "victim"), str(tmp_path / "sltv" / "b.lock"))
    with pytest.raises(LockError) as info:
        FileLock(str(tmp_path / "sltv" / "b.lock"), 1).acquire()
    assert "symlink" in str(info.value)
    assert not (tmp_path / "victim").exists()
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "linkdir"))
    os.mkdir(str(tmp_path / "elsewhere"))
    with pytest.raises(LockError) as info:
        FileLock(str(tmp_path / "linkdir" / "c.lock"), 1).acquire()
    assert "not a directory" in str(info.value)


def test_lock_directory_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(str(foreign), 65534, 65534)
    with pytest.raises(LockError) as info:
        FileLock(str(foreign / "x.lock"), 1).acquire()
    assert "uid 65534" in str(info.value)


def test_partial_results_say_what_was_done():
    result = OpResult()
    assert result.partial() == "Nothing was changed" and not result.changed
    result.did("detach_config")
    assert result.changed and "detach_config" in result.partial()


def test_the_vg_read_skips_lvm_s_backup_file_check(monkeypatch, tmp_path):
    """A report of a VG makes lvm parse the VG's whole backup file (issue 15: 3 times the report at
    10,000 disks); the read turns it off, and stays a normal read (locks, device-mapper state)."""
    from ansible_collections.sltv.core.plugins.module_utils.infra import lvm

    seen = []

    def fake_run(argv, **kwargs):
        seen.append(argv)
        return '{"report": [{"vg": [{"vg_name": "vg0", "vg_size": "8", "vg_free": "8", "vg_extent_size": "4"}]}]}'

    monkeypatch.setattr(lvm, "run", fake_run)
    runner = LvmRunner(host_lock_path=str(tmp_path / "h.lock"), environ={})
    assert runner.read_vg("vg0").name == "vg0"
    argv = seen[0]
    assert argv[:2] == ["lvm", "fullreport"]
    assert argv[argv.index("--config") + 1] == "backup { backup = 0 }"
    assert "--readonly" not in argv and "--nolocking" not in argv


def test_a_read_of_one_lv_selects_it_in_every_lv_subreport(monkeypatch, tmp_path):
    """Single-disk operations read only their LV (issue 15: the decoding of 10,000 LV rows was 0.1 s of
    every no-op); the VG fields stay those of the whole VG, and a missing LV is simply not there."""
    from ansible_collections.sltv.core.plugins.module_utils.infra import lvm

    seen = []

    def fake_run(argv, **kwargs):
        seen.append(argv)
        return ('{"report": [{"vg": [{"vg_name": "vg0", "vg_size": "8", "vg_free": "8", "vg_extent_size": "4"}], '
                '"lv": [{"lv_name": "d-1.x+y", "lv_size": "4", "lv_attr": "-wi-------"}]}]}')

    monkeypatch.setattr(lvm, "run", fake_run)
    runner = LvmRunner(host_lock_path=str(tmp_path / "h.lock"), environ={})
    assert list(runner.read_vg("vg0", "d-1.x+y").lvs) == ["d-1.x+y"]
    argv = seen[0]
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-S"] == ['lv_name="d-1.x+y"'] * 3
    # -S follows the -o of the lv, seg and pvseg subreports: never the vg's or the pv's
    assert [argv[i - 3] for i, arg in enumerate(argv) if arg == "-S"] == ["lv", "seg", "pvseg"]
    runner.read_vg("vg0")
    assert "-S" not in seen[1]
    # several LVs (the hook: a domain's disks); a name lvm would refuse never reaches the selection
    runner.read_vg("vg0", ["d1", 'x" || lv_name=~".*', "d2"])
    assert seen[2][seen[2].index("-S") + 1] == 'lv_name="d1" || lv_name="d2"'
    runner.read_vg("vg0", ['bad"name'])
    assert seen[3][seen[3].index("-S") + 1] == 'lv_name=""'

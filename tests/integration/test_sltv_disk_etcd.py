# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_disk with the etcd lock: real etcd server, real lvm2 on a loop-backed VG."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lvmtest import COLLECTIONS_DIR, TEST_ENV, finish_module, run_module, start_module, write_commands

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import EtcdClient

pytestmark = [pytest.mark.lvm, pytest.mark.etcd]


def etcd_args(server, vg, name, **kw):
    args = dict(server.client_settings(lock_timeout=60), name=name, vg=vg.name)
    args.update(kw)
    return args


def lease_count(server):
    """How many leases etcd has ("found N leases" of etcdctl lease list)."""
    found = re.search(r"found (\d+) leases", server.etcdctl("lease", "list"))
    return int(found.group(1)) if found else 0


def lock_key_value(server, vg):
    """The lock key as etcd holds it: (value dict, lease id) or None."""
    client = EtcdClient(server.endpoint)
    found = client.get("/sltv-test/locks/vg/%s" % vg.name, metadata=True)
    if not found:
        return None
    value, meta = found[0]
    return json.loads(value), int(meta["lease"])


def test_8_processes_same_disk_exactly_one_creates(etcd_server, loop_vg):
    started = [start_module("sltv_disk", etcd_args(etcd_server, loop_vg, "shared-one", size="512M")) for _round in range(8)]
    results = [finish_module(s) for s in started]
    assert [r.get("msg") for r in results if r.get("failed")] == []
    assert sorted(r["changed"] for r in results) == [False] * 7 + [True]
    assert list(loop_vg.lvs()) == ["shared-one"]
    assert all(r["disk"]["size"] == 512 * 1024 ** 2 for r in results)


def test_8_processes_different_disks_and_deletes(etcd_server, loop_vg):
    names = ["many-%d" % i for i in range(8)]
    started = [start_module("sltv_disk", etcd_args(etcd_server, loop_vg, n, size="128M")) for n in names]
    results = [finish_module(s) for s in started]
    assert all(r["changed"] and not r.get("failed") for r in results), results
    assert sorted(loop_vg.lvs()) == names
    vgck = loop_vg.vgck()
    assert vgck.returncode == 0, vgck.stderr
    assert "checksum" not in (vgck.stdout + vgck.stderr).lower()
    # Deletes and creates interleaved: 4 deletes, 4 new disks, all at once.
    started = [start_module("sltv_disk", etcd_args(etcd_server, loop_vg, n, state="absent")) for n in names[:4]]
    started += [start_module("sltv_disk", etcd_args(etcd_server, loop_vg, "more-%d" % i, size="64M")) for i in range(4)]
    results = [finish_module(s) for s in started]
    assert all(r["changed"] and not r.get("failed") for r in results), results
    assert sorted(loop_vg.lvs()) == sorted(names[4:] + ["more-%d" % i for i in range(4)])
    assert loop_vg.vgck().returncode == 0


def test_lock_is_really_taken(etcd_server, loop_vg):
    """While we hold the VG lock, etcd shows it under our lease and a module's create waits for it."""
    lock = make_vg_lock(etcd_server.client_settings(), loop_vg.name, "pytest-holder")
    lock.acquire()
    try:
        value, lease = lock_key_value(etcd_server, loop_vg)
        assert value["holder"] == "pytest-holder" and lease == lock.lease_id
        # this process's leases (the lock's, and those other tests' locks of this process keep until exit)
        before = lease_count(etcd_server)
        waiting = start_module("sltv_disk", etcd_args(etcd_server, loop_vg, "waits", size="64M"))
        # the module has reached the lock when its lease exists (its start-up is slow on a busy machine)
        deadline = time.monotonic() + 30
        while lease_count(etcd_server) <= before and time.monotonic() < deadline:
            assert waiting[0].poll() is None, "the create did not wait for the lock: %s" % (waiting[0].communicate(),)
            time.sleep(0.1)
        time.sleep(2.0)
        assert waiting[0].poll() is None, "the create did not wait for the lock: %s" % (waiting[0].communicate(),)
        assert "waits" not in loop_vg.lvs()
    finally:
        lock.release()
    result = finish_module(waiting)
    assert result["changed"] and result["lock_wait"] >= 1.5
    assert "waits" in loop_vg.lvs()
    assert lock_key_value(etcd_server, loop_vg) is None, "the module left its lock key behind"


FENCED_HOLDER = textwrap.dedent("""
    import sys
    from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
    from ansible_collections.sltv.core.plugins.module_utils.errors import LockLost
    from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
    import json
    settings, vg = json.loads(sys.argv[1]), sys.argv[2]
    lock = make_vg_lock(settings, vg, "stalled-holder")
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.readline()          # the test freezes us here (SIGSTOP) past the lease TTL
    runner = LvmRunner(fence=lock.ensure_held)
    try:
        runner.create_lv(vg, "fenced", 4 * 1024 ** 2, ["sltv"])
        print("CREATED", flush=True)
    except LockLost as exc:
        print("FENCED " + str(exc), flush=True)
    lock.release()
""")


def test_stalled_holder_is_fenced_and_second_holder_proceeds(etcd_server, loop_vg):
    settings = etcd_server.client_settings(lock_ttl=3, lock_timeout=30)
    holder = subprocess.Popen([sys.executable, "-c", FENCED_HOLDER, json.dumps(settings), loop_vg.name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS_DIR, **TEST_ENV))
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGSTOP)
        # The second holder waits for the lease to expire (3 s), then creates its disk.
        second = run_module("sltv_disk", etcd_args(etcd_server, loop_vg, "second", size="64M", lock_ttl=3))
        assert second["changed"] and not second.get("failed"), second
        assert second["lock_wait"] >= 1.0
        os.kill(holder.pid, signal.SIGCONT)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, err = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
    assert out.startswith("FENCED"), out + err
    assert "not run" in out or "NOT run" in out
    assert sorted(loop_vg.lvs()) == ["second"], "the fenced holder's lvcreate ran"


def test_etcd_down_fails_within_lock_timeout_and_changes_nothing(etcd_factory, loop_vg):
    server = etcd_factory()
    args = etcd_args(server, loop_vg, "nope", size="64M", lock_timeout=3)
    server.stop()
    before = loop_vg.snapshot()
    started = time.monotonic()
    result = run_module("sltv_disk", args)
    elapsed = time.monotonic() - started
    assert result.get("failed"), result
    assert server.endpoint.split("//")[1] in result["msg"], result["msg"]
    assert write_commands(result) == [] and loop_vg.snapshot() == before
    # A no-op needs no lock, so it works while etcd is down.
    server.start()
    run_module("sltv_disk", dict(args, lock_timeout=10))
    server.stop()
    started = time.monotonic()
    noop = run_module("sltv_disk", args)
    own_time = time.monotonic() - started  # the module's run without any lock wait, on this machine now
    assert noop["changed"] is False and not noop.get("failed"), noop
    # the failed run waited lock_timeout at most: 3 s, plus the module's own run (3 s allowed, more
    # when the no-op took longer: a busy machine, pytest-xdist workers beside it)
    assert elapsed < 3 + max(3.0, own_time + 1.5), "took %.1f s with lock_timeout=3 (no-op: %.1f s)" % (elapsed, own_time)


def test_module_over_tls_with_client_certificate(etcd_tls_server, loop_vg):
    result = run_module("sltv_disk", etcd_args(etcd_tls_server, loop_vg, "tls-disk", size="64M"))
    assert result["changed"] and not result.get("failed"), result
    bad = run_module("sltv_disk", etcd_args(etcd_tls_server, loop_vg, "tls-2", size="64M",
                                            etcd_ca_cert="/nonexistent/ca.pem"))
    assert bad.get("failed") and "/nonexistent/ca.pem" in bad["msg"]
    assert "tls-2" not in loop_vg.lvs()


def test_module_with_user_password_never_shows_it(etcd_auth_server, loop_vg):
    args = etcd_args(etcd_auth_server, loop_vg, "auth-disk", size="64M")
    result = run_module("sltv_disk", args)
    assert result["changed"] and not result.get("failed"), result
    wrong = run_module("sltv_disk", dict(args, name="auth-2", etcd_password="wrong-secret-123"))
    assert wrong.get("failed") and "auth-2" not in loop_vg.lvs()
    for output in (result, wrong):
        text = json.dumps(output)
        assert args["etcd_password"] not in text and "wrong-secret-123" not in text

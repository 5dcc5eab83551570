# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's stop against real lvm2 on a loop VG, with lvextend made slow by a wrapper on PATH.

With KillMode=mixed systemd kills what is left in the unit once the agent has exited: Agent.close()
must return only after the lvextend that runs (a kill between device suspend and resume leaves the
LV suspended), drop the extends not started, and start no lvextend once it began, not even for an
extend that was waiting for the VG lock. (The agent program's own stop, tests/integration/
test_agent_program.py, runs no extend: that needs a running domain on an active LV, and these
machines activate none.)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import stat
import threading
import time

import pytest

from lvmtest import TEST_ENV, lvm

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import ExtendFailed, LvmStorage
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import Agent
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB

pytestmark = pytest.mark.lvm

LVEXTEND_SECONDS = 1.5


def thin_lv(vg, name):
    tags = sum((["--addtag", tag] for tag in T.disk_tags("thin", "qcow2", 4 * GIB)), [])
    lvm("lvcreate", "-q", "-n", name, "-L", "64m", "-an", "-Zn", "-Wn", "--setautoactivation", "n", *(tags + [vg.name]))


def slow_lvextend(tmp_path, log_path):
    """A directory with an ``lvextend`` that logs its arguments, sleeps, runs the real one and logs 'done'."""
    real = shutil.which("lvextend")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "lvextend"
    script.write_text('#!/bin/sh\necho "start $*" >> %s\nsleep %s\n%s "$@"\nrc=$?\necho "done $rc" >> %s\nexit $rc\n'
                      % (log_path, LVEXTEND_SECONDS, real, log_path))
    script.chmod(stat.S_IRWXU)
    return str(bin_dir)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_stop_waits_for_the_running_lvextend_and_starts_no_other(loop_vg, tmp_path, monkeypatch):
    for name in ("d1", "d2", "d3"):
        thin_lv(loop_vg, name)
    log_path = tmp_path / "lvextend.log"
    monkeypatch.setenv("PATH", slow_lvextend(tmp_path, log_path) + ":" + os.environ["PATH"])
    config = parse_agent_config({"vgs": [loop_vg.name]})
    runner = LvmRunner(host_lock_path=str(tmp_path / "host.lock"), environ=TEST_ENV, timeout=10, host_lock_timeout=10)
    storage = LvmStorage(config, runner, host="hostA")
    disks = dict((d.name, d) for d in storage.thin_disks())
    # No libvirt here: the extends are handed to the agent's workers directly, as its sweeps do.
    agent = Agent(config, storage, host="hostA", libvirt_module=object(), own_event_loop=False,
                  stop_timeout=runner.host_lock_timeout + runner.timeout)
    outcomes, started = {}, {"d3": threading.Event()}

    def extend(name):
        def job():
            if name in started:
                started[name].set()
            try:
                outcomes[name] = storage.extend(disks[name], 128 * MIB, {})
            except ExtendFailed as exc:
                outcomes[name] = exc
        return job

    def log():
        return log_path.read_text().splitlines() if log_path.exists() else []

    agent.workers.submit(loop_vg.name, extend("d1"), what="the extend of d1")
    agent.workers.submit(loop_vg.name, extend("d2"), what="the extend of d2")  # queued behind d1
    assert wait_until(lambda: len(log()) == 1)  # d1's lvextend runs, under the VG lock
    agent.workers.submit("other", extend("d3"), what="the extend of d3")  # another worker: waits for the VG lock
    assert started["d3"].wait(5)
    began = time.monotonic()
    agent.close()
    took = time.monotonic() - began
    assert took < runner.host_lock_timeout + runner.timeout
    assert outcomes["d1"] == 128 * MIB
    assert "d2" not in outcomes  # dropped, never started
    assert str(outcomes["d3"]).endswith("lvextend not run: the agent is stopping")
    # close() returned after d1's lvextend ended; no other lvextend ran
    assert log() == ["start --driverloaded n -L %db %s/d1" % (128 * MIB, loop_vg.name), "done 0"]
    sizes = dict((name, lv["size"]) for name, lv in loop_vg.lvs().items())
    assert sizes == {"d1": 128 * MIB, "d2": 64 * MIB, "d3": 64 * MIB}

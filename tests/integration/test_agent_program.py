# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``sltv-agent`` as a program (the launcher's ``main()`` in a child process), against real lvm2 on a
loop VG, a real etcd and a real libvirtd: start-up errors are clear and exit non-zero; a good start
sends READY=1 on $NOTIFY_SOCKET, serves metrics, registers in etcd, keeps the watchdog fed and stops
cleanly on SIGTERM with STOPPING=1.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

try:
    from urllib.request import urlopen
except ImportError:  # pragma: no cover
    urlopen = None

from etcdtest import free_port
from lvmtest import COLLECTIONS_DIR, TEST_ENV

pytestmark = pytest.mark.lvm

LAUNCH = ("import sys\n"
          "from ansible_collections.sltv.core.plugins.module_utils.agent.agent_main import main\n"
          "sys.exit(main())\n")


def agent_argv(config_path, *extra):
    # --host-config /dev/null: this machine's host config (if any) stays out of the test
    return [sys.executable, "-c", LAUNCH, "--config", config_path, "--host-config", "/dev/null"] + list(extra)


def agent_env(extra=None):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS_DIR, **TEST_ENV)
    env.update(extra or {})
    return env


def scrape(port):
    """The agent's /metrics as Prometheus reads it: ({(name, labels): value}, the text)."""
    response = urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5)
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    body = response.read().decode()
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(body) for sample in family.samples}
    return samples, body


def write_config(tmp_path, **values):
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps(values))  # JSON is YAML
    return str(path)


@contextlib.contextmanager
def ready_agent(tmp_path, config_path, watchdog_usec, ready_within):
    """The agent program started with a notify socket: yields (proc, notify) once it sent READY=1;
    kills it if it is still running at the end."""
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    proc = subprocess.Popen(agent_argv(config_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            env=agent_env(dict(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(watchdog_usec))))
    try:
        messages = []
        deadline = time.monotonic() + ready_within
        while not any("READY=1" in m for m in messages) and time.monotonic() < deadline:
            messages.append(notify.recv(4096).decode())
        assert any("READY=1" in m for m in messages), messages
        yield proc, notify
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def run_agent(config_path, *extra, **kwargs):
    return subprocess.run(agent_argv(config_path, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=agent_env(kwargs.get("env")), timeout=60, check=False)


@pytest.mark.parametrize("values, needle", [
    (dict(vgs=["vg0"], sweep_interval=0), "sweep_interval must be a finite number of seconds greater than 0"),
    (dict(vgs=["vg0"], chunk_mni="1G"), "unknown setting 'chunk_mni'"),
    (dict(), "vgs is required"),
    (dict(vgs=["vg0"], lock=dict(lock_backend="etcd", etcd_endpoints=[])), "needs at least one URL"),
])
def test_bad_config_exits_2_naming_the_file_and_key(tmp_path, values, needle):
    path = write_config(tmp_path, **values)
    proc = run_agent(path, "--check-config")
    assert proc.returncode == 2, proc
    assert needle in proc.stderr and path in proc.stderr, proc.stderr


def test_missing_config_file_exits_2(tmp_path):
    proc = run_agent(str(tmp_path / "nope.yml"))
    assert proc.returncode == 2 and "cannot read the agent configuration" in proc.stderr, proc.stderr


def test_etcd_down_and_a_vg_missing_at_start_run_degraded(tmp_path, loop_vg, libvirtd):
    etcd_port, metrics_port = free_port(), free_port()
    path = write_config(tmp_path, vgs=[loop_vg.name, "vg_not_here"], sweep_interval=0.5, metrics_port=metrics_port,
                        lock=dict(lock_backend="etcd", etcd_endpoints=["http://127.0.0.1:%d" % etcd_port]))
    with ready_agent(tmp_path, path, 20000000, 40) as (proc, notify):
        samples, body = scrape(metrics_port)
        assert samples[("sltv_agent_etcd_up", ())] == 0
        assert samples[("sltv_agent_vg_up", (("vg", "vg_not_here"),))] == 0
        assert samples[("sltv_agent_vg_up", (("vg", loop_vg.name),))] == 1
        # the metadata area of the real VG (lvm's default 1 MiB area: about 520,000 bytes free)
        free = samples.get(("sltv_agent_vg_metadata_free_bytes", (("vg", loop_vg.name),)))
        assert free and 400000 < free < 530000, body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read()
        assert "etcd is not reachable" in stderr and "127.0.0.1:%d" % etcd_port in stderr and "degraded" in stderr
        assert "volume group vg_not_here not found" in stderr, stderr


def test_missing_libvirt_exits_1(tmp_path, loop_vg):
    path = write_config(tmp_path, vgs=[loop_vg.name],
                        libvirt_uri="qemu:///system?socket=%s" % (tmp_path / "no-libvirtd.sock"))
    proc = run_agent(path)
    assert proc.returncode == 1, proc
    assert "cannot connect to libvirt" in proc.stderr and "libvirtd" in proc.stderr, proc.stderr


def test_start_ready_metrics_etcd_watchdog_and_clean_stop(tmp_path, loop_vg, etcd_server, libvirtd):
    port = free_port()
    prefix = "/sltv-agent-test-%d" % os.getpid()
    path = write_config(tmp_path, vgs=[loop_vg.name], sweep_interval=0.5, metrics_port=port,
                        lock=dict(lock_backend="etcd", etcd_endpoints=[etcd_server.endpoint], lock_prefix=prefix))
    with ready_agent(tmp_path, path, 2000000, 30) as (proc, notify):
        # The watchdog is fed at least every second (half of WATCHDOG_USEC).
        pings = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if "WATCHDOG=1" in notify.recv(4096).decode():
                pings += 1
        assert pings >= 2
        samples, body = scrape(port)
        assert samples[("sltv_agent_up", ())] == 1
        assert samples[("sltv_agent_libvirt_connected", ())] == 1
        assert samples[("sltv_agent_etcd_up", ())] == 1
        assert "# TYPE sltv_agent_extend_duration_seconds histogram" in body
        listed = subprocess.run(["etcdctl", "--endpoints", etcd_server.endpoint, "get", "--prefix", prefix + "/agents/"],
                                stdout=subprocess.PIPE, universal_newlines=True, check=True,
                                env=dict(os.environ, ETCDCTL_API="3")).stdout
        assert '"host": "%s"' % socket.gethostname() in listed, listed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        tail = []
        notify.settimeout(1)
        try:
            while True:
                tail.append(notify.recv(4096).decode())
        except socket.timeout:
            pass
        assert any("STOPPING=1" in m for m in tail), tail
        stderr = proc.stderr.read()
        assert "<6>sltv-agent 1.0.0 on" in stderr, stderr

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv-agent's entry point: configuration checks and exit codes, start-up failures, journal log lines.

LVM, libvirt and the HTTP server are replaced where main() would need them; the etcd check runs
for real against a port where nothing listens.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import logging
import socket

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent import agent_main
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_main import JournalFormatter, load_config, main, setup_logging
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import EndpointError
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import LibvirtError

GOOD = """vgs: [vg0]
sweep_interval: 2
chunk_min: 512M
lock:
  lock_backend: local
"""


@pytest.fixture(autouse=True)
def restore_logger():
    """main() points the 'sltv-agent' logger at the (captured) stderr: undo it after each test."""
    log = logging.getLogger("sltv-agent")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def write(tmp_path, text, name="agent.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- --check-config -----------------------------------------------------------------------------------

def test_check_config_good(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["--config", path, "--check-config"]) == 0
    assert "config OK: %s" % path in capsys.readouterr().out


@pytest.mark.parametrize("text, expected", [
    ("vgs: [vg0\n", "is not valid YAML"),
    ("vgs: [vg0]\nsweep_intervall: 5\n", "sweep_intervall"),
    ("vgs: [vg0]\nsweep_interval: -1\n", "sweep_interval must be a finite number"),
    ("vgs: [vg0]\nmetrics_port: 70000\n", "metrics_port"),
    ("vgs: [vg0]\nlock: {lock_backend: nfs}\n", "lock.lock_backend"),
    ("vgs: [vg0]\nlock: {lock_backend: etcd, etcd_endpoints: ['ftp://127.0.0.1:2379']}\n", "lock: "),
    ("sweep_interval: 5\n", "vgs is required"),
    ("- vg0\n", "must be a mapping"),
], ids=["bad-yaml", "unknown-key", "bad-value", "bad-port", "bad-backend", "bad-endpoint", "no-vgs", "not-a-mapping"])
def test_check_config_bad(tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    assert main(["--config", path, "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sltv-agent: bad configuration: ")
    assert path in err
    assert expected in err


def test_check_config_takes_vgs_and_lock_from_the_host_config(tmp_path, capsys):
    agent = write(tmp_path, "sweep_interval: 5\n")
    host = write(tmp_path, "vg: vg_san\nlock: {lock_backend: local, lock_prefix: /prod}\n", name="sltv.yml")
    assert main(["--config", agent, "--host-config", host, "--check-config"]) == 0, capsys.readouterr().err
    bad = write(tmp_path, "vg: vg_san\nlock: {lock_backend: nfs}\n", name="bad.yml")
    assert main(["--config", agent, "--host-config", bad, "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "host config %s: lock.lock_backend must be one of local, etcd" % bad in err, err


def test_check_config_missing_file(tmp_path, capsys):
    path = str(tmp_path / "nope.yml")
    assert main(["--config", path, "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the agent configuration %s" % path in err


def test_empty_file_needs_vgs(tmp_path):
    with pytest.raises(ValidationError, match="vgs is required"):
        load_config(write(tmp_path, ""))


def test_load_config_values(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.vgs == ["vg0"]
    assert config.sweep_interval == 2.0
    assert config.chunk_min == 512 * 1024 ** 2


def test_default_config_path():
    assert agent_main.parse_args([]).config == agent_main.DEFAULT_CONFIG == "/etc/sltv/agent.yml"


# -- start-up failures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("check_config", [False, True], ids=["start", "check-config"])
def test_missing_libraries_exit_1_naming_the_packages(tmp_path, capsys, monkeypatch, check_config):
    monkeypatch.setattr(agent_main, "HAS_PROMETHEUS_CLIENT", False)
    monkeypatch.setattr(agent_main, "HAS_SYSTEMD", False)
    argv = ["--config", write(tmp_path, GOOD)] + (["--check-config"] if check_config else [])
    assert main(argv, environ={}) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("sltv-agent: cannot start: missing Python libraries prometheus_client (Debian: python3-prometheus-client), "
            "systemd (Debian: python3-systemd)") in err
    monkeypatch.setattr(agent_main, "HAS_SYSTEMD", True)
    assert agent_main.missing_libraries() == ["prometheus_client (Debian: python3-prometheus-client)"]


def test_both_libraries_are_here():
    assert agent_main.missing_libraries() == []


def test_unreachable_etcd_at_start_runs_degraded(tmp_path, capsys, fakes, monkeypatch):
    """Started during an etcd outage: no exit (and no restart loop); it runs, says so, etcd_up is 0."""
    monkeypatch.setattr(agent_main, "ETCD_START_TIMEOUT", 1.0)
    monkeypatch.setattr(agent_main, "serve", FakeServer)
    path = write(tmp_path, "vgs: [vg0]\nlock:\n  lock_backend: etcd\n  etcd_endpoints: ['http://127.0.0.1:1']\n")
    assert main(["--config", path], environ={}) == 0
    assert FakeAgent.last.ran
    assert FakeStorage.last.kwargs["cluster_up"] is False
    err = capsys.readouterr().err
    assert "<3>etcd is not reachable (http://127.0.0.1:1)" in err
    assert "Running degraded" in err and "sltv_agent_etcd_up 0" in err


def test_etcd_refusing_for_good_exits_1(tmp_path, capsys, fakes, monkeypatch):
    def refused(settings):
        raise EndpointError("https://e1:2379: TLS error", permanent=True)

    monkeypatch.setattr(agent_main, "_etcd_connect", refused)
    path = write(tmp_path, "vgs: [vg0]\nlock:\n  lock_backend: etcd\n  etcd_endpoints: ['http://127.0.0.1:1']\n")
    assert main(["--config", path], environ={}) == 1
    assert "<2>cannot start on host %s: etcd is not reachable" % socket.gethostname() in capsys.readouterr().err


class FakeServer(object):
    def __init__(self, metrics, address, port):
        self.args = (address, port)
        self.stopped = False

    def shutdown(self):
        self.stopped = True


class FakeStorage(object):
    error = None

    def __init__(self, config, runner, host=None, etcd_connect=None, log=None, **kwargs):
        self.closed = False
        self.runner = runner
        self.kwargs = kwargs
        FakeStorage.last = self

    def thin_disks(self):
        if FakeStorage.error:
            raise SltvError(FakeStorage.error)
        return []


class FakeAgent(object):
    start_error = None

    def __init__(self, config, storage, host=None, metrics=None, notifier=None, log=None, stop_timeout=None):
        self.storage = storage
        self.metrics = metrics
        self.stop_timeout = stop_timeout
        self.closed = False
        self.ran = False
        FakeAgent.last = self

    def start(self):
        if FakeAgent.start_error:
            raise LibvirtError(FakeAgent.start_error)

    def run(self, stop):
        self.ran = True
        FakeAgent.handlers[agent_main.signal.SIGTERM](15, None)  # systemctl stop
        assert stop.is_set()

    def close(self):
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    FakeStorage.error = None
    FakeStorage.last = None
    FakeAgent.start_error = None
    FakeAgent.handlers = {}
    monkeypatch.setattr(agent_main, "LvmStorage", FakeStorage)
    monkeypatch.setattr(agent_main, "Agent", FakeAgent)
    monkeypatch.setattr(agent_main, "check_backup_dirs", lambda: [])
    monkeypatch.setattr(agent_main.signal, "signal", FakeAgent.handlers.__setitem__)
    return FakeAgent


def test_lvm_failing_at_start_exits_1(tmp_path, capsys, fakes):
    FakeStorage.error = "command lvm fullreport failed with exit code 5: lvm is broken"
    assert main(["--config", write(tmp_path, GOOD)], environ={}) == 1
    err = capsys.readouterr().err
    assert "<2>cannot start on host" in err
    assert "lvm is broken" in err


def test_lvm_backup_dirs_not_writable_exits_1(tmp_path, capsys, fakes, monkeypatch):
    def check():
        raise SltvError("lvm cannot archive or back up VG metadata: /etc/lvm/archive does not exist")

    monkeypatch.setattr(agent_main, "check_backup_dirs", check)
    assert main(["--config", write(tmp_path, GOOD)], environ={}) == 1
    assert "<2>cannot start on host %s: lvm cannot archive or back up VG metadata: /etc/lvm/archive" % (
        socket.gethostname()) in capsys.readouterr().err
    assert not hasattr(FakeStorage, "last") or FakeStorage.last is None


@pytest.mark.parametrize("watchdog_usec, expected", [(None, 30.0), ("60000000", 15.0), ("20000000", 5.0)],
                         ids=["no-watchdog", "WatchdogSec=60", "WatchdogSec=20"])
def test_lvm_commands_are_bounded_within_the_watchdog_budget(tmp_path, fakes, monkeypatch, watchdog_usec, expected):
    """A hung lvm command (dead LUN) is killed in time: the main loop pings the watchdog every half
    WatchdogSec, and a sweep's read plus a refresh must fit between two pings."""
    monkeypatch.setattr(agent_main, "serve", FakeServer)
    environ = {"NOTIFY_SOCKET": str(tmp_path / "nobody"), "WATCHDOG_USEC": watchdog_usec} if watchdog_usec else {}
    assert main(["--config", write(tmp_path, GOOD)], environ=environ) == 0
    assert FakeStorage.last.runner.timeout == expected
    # the wait for the host's lvm lock (a module's command may hold it) has the same bound, not 300 s
    assert FakeStorage.last.runner.host_lock_timeout == expected
    # on stop a running extend gets both (the unit's TimeoutStopSec covers them)
    assert FakeAgent.last.stop_timeout == 2 * expected


def test_libvirt_down_exits_1(tmp_path, capsys, fakes):
    FakeAgent.start_error = "cannot connect to libvirt at qemu:///system: refused (is libvirtd running?)"
    assert main(["--config", write(tmp_path, GOOD)], environ={}) == 1
    assert "cannot connect to libvirt at qemu:///system" in capsys.readouterr().err


def test_metrics_port_in_use_exits_1(tmp_path, capsys, fakes):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        assert main(["--config", write(tmp_path, GOOD + "metrics_port: %d\n" % port)], environ={}) == 1
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert "<2>cannot serve metrics on 127.0.0.1:%d" % port in err
    assert "metrics_port" in err
    assert FakeAgent.last.closed


def test_runs_until_sigterm(tmp_path, capsys, fakes, monkeypatch):
    servers = []

    class Server(object):
        def __init__(self, metrics, address, port):
            self.args = (address, port)
            self.stopped = False
            servers.append(self)

        def shutdown(self):
            self.stopped = True

    monkeypatch.setattr(agent_main, "serve", Server)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))  # where libsystemd's sd_notify sends
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(2)
    try:
        code = main(["--config", write(tmp_path, GOOD + "log_level: debug\n")],
                    environ={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notify.recv(100) == b"STOPPING=1"
    finally:
        notify.close()
    assert code == 0
    agent = FakeAgent.last
    assert agent.ran and agent.closed
    assert servers[0].args == ("127.0.0.1", 9464) and servers[0].stopped
    assert agent.metrics.up.value() == 1
    assert agent.metrics.info.value(host=socket.gethostname(), version=agent_main.VERSION) == 1
    assert sorted(FakeAgent.handlers) == sorted([agent_main.signal.SIGTERM, agent_main.signal.SIGINT])
    err = capsys.readouterr().err
    assert "<6>sltv-agent %s on " % agent_main.VERSION in err
    assert "metrics http://127.0.0.1:9464/metrics" in err
    assert "<6>stopping" in err


# -- logging ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level, prefix", [
    (logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
    (logging.CRITICAL, "<2>"), (25, "<6>"),
])
def test_journal_formatter_prefix(level, prefix):
    record = logging.LogRecord("sltv-agent", level, __file__, 1, "extended %s", ("vg0/d1",), None)
    assert JournalFormatter("%(message)s").format(record) == prefix + "extended vg0/d1"


def test_setup_logging_level_and_stream():
    stream = io.StringIO()
    log = setup_logging("warning", stream)
    log.info("not shown")
    log.warning("shown %d", 1)
    log.error("also")
    assert stream.getvalue() == "<4>shown 1\n<3>also\n"
    assert log.propagate is False
    assert len(log.handlers) == 1
    setup_logging("info", stream)
    assert len(log.handlers) == 1  # set up twice: still one handler

# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``sltv-agent``: start-up checks, logging to the journal, signals, and the agent's main loop.

Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad configuration, 1 when something the agent needs
is missing at start (its Python libraries, also with --check-config; libvirt, lvm's archive and
backup directories, the metrics port). Every error says what to fix. etcd down or a configured VG
missing at start is no reason to exit: the agent runs degraded (logged, and in its metrics and its
etcd record) and catches up when they come back.
The launcher (role sltv.core.sltv_agent) calls ``sys.exit(main())``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import faulthandler
import logging
import signal
import socket
import sys
import threading
import time

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.infra.config_files import load_host_config, read_yaml
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import HOST_CONFIG_PATH
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_metrics import HAS_PROMETHEUS_CLIENT, Metrics, serve
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_status import STATUS_PATH
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import LvmStorage
from ansible_collections.sltv.core.plugins.module_utils.agent.lvm_backup_check import check_backup_dirs
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError, ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LVM_COMMAND_TIMEOUT, LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.infra.sd_notify import HAS_SYSTEMD, Notifier
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import Agent

VERSION = "1.0.0"
DEFAULT_CONFIG = "/etc/sltv/agent.yml"
ETCD_START_TIMEOUT = 10.0
# lvm commands of the agent (lvextend, lvchange --refresh, lvm fullreport) take 0.1-3 s; one that
# hangs (a dead LUN) is killed after this, its extend fails and is retried, and the VG lock is freed.
AGENT_LVM_TIMEOUT = 30.0
# sd-daemon(3) priority prefixes: journald files each line at its level.
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record):
        return "<%d>%s" % (PRIORITIES.get(record.levelno, 6), super(JournalFormatter, self).format(record))


def setup_logging(level, stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JournalFormatter("%(message)s"))
    log = logging.getLogger("sltv-agent")
    log.handlers[:] = [handler]
    log.setLevel(getattr(logging, level.upper()))
    log.propagate = False
    return log


def load_config(path, host_config_path=HOST_CONFIG_PATH):
    """AgentConfig from the file, with the host config's vg and lock settings as its defaults;
    ValidationError names the file and the key."""
    host = load_host_config(host_config_path)
    data = read_yaml(path, "the agent configuration")
    try:
        config = parse_agent_config(data, host)
    except ValidationError as exc:
        raise ValidationError("%s: %s" % (path, exc))
    if config.lock["lock_backend"] == "etcd":
        try:
            from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import (  # pylint: disable=import-outside-toplevel
                validate_connection_settings,
            )

            validate_connection_settings(config.lock)
        except ImportError:
            raise ValidationError("%s: lock_backend etcd needs the etcd3gw Python package (Debian: python3-etcd3gw)"
                                  % path)
        except SltvError as exc:
            raise ValidationError("%s: lock: %s" % (path, exc))
    return config


def missing_libraries():
    """The Python libraries of the agent (not of the modules) that do not import, with their Debian package."""
    wanted = ((HAS_PROMETHEUS_CLIENT, "prometheus_client", "python3-prometheus-client"),
              (HAS_SYSTEMD, "systemd", "python3-systemd"))
    return ["%s (Debian: %s)" % (module, package) for present, module, package in wanted if not present]


def _etcd_connect(settings):
    from ansible_collections.sltv.core.plugins.module_utils.infra.etcd_client import connect  # pylint: disable=import-outside-toplevel

    return connect(settings, deadline=time.monotonic() + ETCD_START_TIMEOUT)


def check_etcd(config, log):
    """True when etcd answers. Down (an outage): False, logged; the agent runs degraded, its extends
    fail on the lock and are retried until etcd is back. Refused for good (TLS, credentials): raise."""
    if config.lock["lock_backend"] != "etcd":
        return True
    try:
        client = _etcd_connect(config.lock)
    except SltvError as exc:
        message = "etcd is not reachable (%s): %s; start etcd or fix lock.etcd_endpoints" % (
            ", ".join(config.lock["etcd_endpoints"]), exc)
        if getattr(exc, "permanent", False):
            raise SltvError(message)
        log.error("%s. Running degraded: extends need the etcd lock, they fail and are retried until etcd "
                  "answers (metric sltv_agent_etcd_up 0)", message)
        return False
    client.close()
    return True


def lvm_timeout(notifier):
    """The agent's bound on one lvm command, and on its wait for the host lock before it: within
    systemd's watchdog budget (half the interval at which the main loop must ping it, so that the wait
    and the command, or a sweep's read and a refresh, fit between two pings)."""
    timeout = min(LVM_COMMAND_TIMEOUT, AGENT_LVM_TIMEOUT)
    if notifier.watchdog_interval:
        timeout = min(timeout, notifier.watchdog_interval / 2.0)
    return timeout


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="sltv-agent", description="Grows sltv thin disks before their guests fill them.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration (default %(default)s)")
    parser.add_argument("--host-config", default=HOST_CONFIG_PATH,
                        help="the host config whose vg and lock settings are the defaults (default %(default)s; "
                             "a missing file is fine)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser.parse_args(argv)


def main(argv=None, environ=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config, args.host_config)
    except ValidationError as exc:
        sys.stderr.write("sltv-agent: bad configuration: %s\n" % exc)
        return 2
    missing = missing_libraries()
    if missing:
        # before --check-config returns: the role's check of a new configuration fails, not the restart
        sys.stderr.write("sltv-agent: cannot start: missing Python libraries %s; the role sltv.core.sltv_host "
                         "installs them\n" % ", ".join(missing))
        return 1
    if args.check_config:
        sys.stdout.write("config OK: %s\n" % args.config)
        return 0
    log = setup_logging(config.log_level)
    # systemd's watchdog kills with SIGABRT: the journal then gets every thread's stack, the why.
    try:
        faulthandler.enable()
    except (OSError, ValueError, AttributeError):
        pass  # stderr is not a real file (embedded, tests): no stacks, nothing else changes
    host = socket.gethostname()
    notifier = Notifier(environ)
    if notifier.watchdog_interval and config.lock["lock_timeout"] > notifier.watchdog_interval:
        # A lock wait (etcd down) must end before systemd's watchdog kills the agent: it then
        # retries with back-off and keeps watching, instead of restarting into the outage.
        log.info("lock_timeout %.0fs capped to %.0fs (half of WatchdogSec)", config.lock["lock_timeout"],
                 notifier.watchdog_interval)
        config.lock["lock_timeout"] = notifier.watchdog_interval
    metrics = Metrics()
    try:
        check_backup_dirs()
        etcd_up = check_etcd(config, log)
        bound = lvm_timeout(notifier)
        # The wait for the host lock (a module's lvm command may hold it up to 120 s) has the same bound:
        # one lvm command of the agent, wait included, fits in one watchdog ping interval.
        runner = LvmRunner(timeout=bound, host_lock_timeout=bound)
        storage = LvmStorage(config, runner, host=host, etcd_connect=_etcd_connect, log=log, cluster_up=etcd_up,
                             status_path=STATUS_PATH)
        storage.thin_disks()  # lvm answers; a missing VG is logged, and looked for at every sweep
        # On stop the agent waits for its running extends, each for one lvm command and its host-lock
        # wait: systemd kills what is left once the agent exits (TimeoutStopSec in the unit covers it).
        agent = Agent(config, storage, host=host, metrics=metrics, notifier=notifier, log=log,
                      stop_timeout=runner.host_lock_timeout + runner.timeout)
        agent.start()
    except SltvError as exc:
        log.critical("cannot start on host %s: %s", host, exc)
        return 1
    try:
        server = serve(metrics, config.metrics_address, config.metrics_port)
    except (IOError, OSError) as exc:
        log.critical("cannot serve metrics on %s:%d: %s (another process on the port? set metrics_port)",
                     config.metrics_address, config.metrics_port, exc)
        agent.close()
        return 1
    metrics.up.set(1)
    metrics.info.set(1, host=host, version=VERSION)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("sltv-agent %s on %s: VGs %s, libvirt %s, lock %s, metrics http://%s:%d/metrics", VERSION, host,
             ", ".join(config.vgs), config.libvirt_uri, config.lock["lock_backend"], config.metrics_address,
             config.metrics_port)
    try:
        agent.run(stop)
    finally:
        notifier.stopping()
        log.info("stopping")
        server.shutdown()
        agent.close()
    return 0

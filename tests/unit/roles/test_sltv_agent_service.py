# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's systemd unit (roles/sltv_agent/templates/sltv-agent.service.j2), rendered with the
role's defaults: hardened to a ``systemd-analyze security`` exposure of at most 4.0, yet with what
lvm and device-mapper need (an open device cgroup, their system calls), and KillMode=mixed so that
a stop does not signal an lvextend in the middle of its work.

The systemd-analyze checks run where systemd-analyze has ``security --offline`` (systemd 250+,
Debian 12 has 252); elsewhere they are skipped with the reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import jinja2
import pytest
import yaml

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_main import lvm_timeout
from ansible_collections.sltv.core.plugins.module_utils.infra.sd_notify import Notifier

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
ROLE = os.path.join(ROOT, "roles", "sltv_agent")
UNIT = "sltv-agent.service"
MAX_EXPOSURE = 4.0
# What lvm2 and libdevmapper call, as the unit's comments list them: dm ioctls, the memory lock
# around a device suspend, the priority raise, udev-sync semaphores, the aio device scan, the device
# node made when udev did not, the file locks.
LVM_SYSCALLS = ("ioctl", "mlock", "munlock", "mlockall", "munlockall", "getpriority", "setpriority", "semget",
                "semop", "semtimedop", "semctl", "io_setup", "io_submit", "io_getevents", "io_destroy", "mknod",
                "mknodat", "chown", "fchown", "flock", "fsync", "fdatasync", "rename", "renameat2")


def render_unit(**overrides):
    """The unit as the role writes it with its defaults (Ansible's template: trim_blocks)."""
    values = {"ansible_managed": "Ansible managed"}
    for part in ("defaults", "vars"):
        with open(os.path.join(ROLE, part, "main.yml"), encoding="utf-8") as handle:
            values.update(yaml.safe_load(handle))
    values.update(overrides)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    return env.get_template(UNIT + ".j2").render(**values)


def settings(text, section="Service"):
    """[(key, value)] of one section, in order (comments and blank lines left out)."""
    found, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section:
            key, value = line.split("=", 1) if "=" in line else (line, "")
            found.append((key.strip(), value.strip()))
    return found


def values(text, key):
    return [value for name, value in settings(text) if name == key]


def analyze_offline():
    """systemd-analyze, or a pytest.skip naming why there is none that can analyze a unit file."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    helptext = subprocess.run([tool, "--help"], capture_output=True, text=True, check=False).stdout
    if "--offline" not in helptext:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250): it cannot analyze a unit file")
    return tool


def syscall_groups(tool):
    """{'@group': [member, ...]} as this systemd defines the groups."""
    out = subprocess.run([tool, "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.startswith(" ") and line.strip() and not line.strip().startswith("#"):
            current.append(line.split()[0])
    return groups


def expand(groups, names):
    calls = set()
    for name in names:
        calls |= expand(groups, groups.get(name, ())) if name.startswith("@") else {name}
    return calls


def test_kill_mode_mixed_and_the_device_cgroup_stays_open():
    unit = render_unit()
    assert values(unit, "KillMode") == ["mixed"]
    # lvm opens the PVs, /dev/dm-* and /dev/mapper/control: nothing may close the device cgroup.
    # ProtectClock=yes implies DeviceAllow=char-rtc r, which does (DevicePolicy=auto with an entry).
    for key in ("DeviceAllow", "DevicePolicy", "ProtectClock", "PrivateDevices", "PrivateUsers", "PrivateIPC",
                "ProcSubset", "User", "DynamicUser"):
        assert values(unit, key) == [], key
    # a system call outside the filter fails, it never kills lvm in the middle of a device suspend
    assert values(unit, "SystemCallErrorNumber") == ["EPERM"]
    assert values(unit, "SystemCallFilter") == ["@system-service"]
    assert "CAP_SYS_ADMIN" in values(unit, "CapabilityBoundingSet")[0].split()


@pytest.mark.parametrize("watchdog_sec", [60, 20, 240, 0])
def test_the_stop_timeout_covers_the_agents_wait_for_its_lvm_commands(watchdog_sec):
    """With KillMode=mixed systemd kills what is left in the unit (an lvextend) once the agent has
    exited, and everything at TimeoutStopSec. On stop the agent ends its main loop's turn (one watchdog
    ping interval) and waits for its running extends (one lvm command and its host-lock wait, the
    bounds agent_main gives the lvm runner): TimeoutStopSec covers both, with room to spare."""
    unit = render_unit(sltv_agent_watchdog_sec=watchdog_sec)
    assert values(unit, "WatchdogSec") == ["%ds" % watchdog_sec]
    notifier = Notifier({"WATCHDOG_USEC": str(watchdog_sec * 1000000)} if watchdog_sec else {})
    extends = 2 * lvm_timeout(notifier)  # the runner's timeout + host_lock_timeout
    turn = notifier.watchdog_interval or extends  # no watchdog: a turn's lvm read has the same bound
    (stop,) = values(unit, "TimeoutStopSec")
    assert stop.endswith("s") and float(stop[:-1]) >= turn + extends + 10, (stop, turn, extends)
    if watchdog_sec == 60:
        assert stop == "90s"  # the role's default


def test_the_system_call_filter_keeps_what_lvm_and_device_mapper_call():
    tool = analyze_offline()
    groups = syscall_groups(tool)
    assert "@system-service" in groups, sorted(groups)
    entries = values(render_unit(), "SystemCallFilter")
    assert entries, "no SystemCallFilter= (test_kill_mode_mixed_and_the_device_cgroup_stays_open wants one)"
    allowed = set()
    for entry in entries:
        if entry.startswith("~"):
            allowed -= expand(groups, entry[1:].split())
        else:
            allowed |= expand(groups, entry.split())
    assert [call for call in LVM_SYSCALLS if call not in allowed] == []
    assert "settimeofday" not in allowed and "init_module" not in allowed and "mount" not in allowed


def test_exposure_is_at_most_4(tmp_path):
    tool = analyze_offline()
    path = tmp_path / UNIT
    path.write_text(render_unit(), encoding="utf-8")
    result = subprocess.run([tool, "security", "--offline=true", "--root=/", "--no-pager", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # a setting this systemd does not know (or a bad value) is ignored with a warning: it would not apply
    assert [line for line in result.stderr.splitlines() if str(path) in line] == []
    match = re.search(r"Overall exposure level for %s: (\d+(?:\.\d+)?)" % re.escape(UNIT), result.stdout)
    assert match, result.stdout
    exposure = float(match.group(1))
    not_met = "\n".join(line for line in result.stdout.splitlines() if line.startswith("\u2717"))
    assert exposure <= MAX_EXPOSURE, "exposure %.1f > %.1f; settings not met:\n%s" % (exposure, MAX_EXPOSURE, not_met)

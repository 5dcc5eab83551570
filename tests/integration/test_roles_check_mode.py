# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14: ``ansible-playbook --check --diff`` runs both roles on this machine, a host they never
prepared, without an error; it predicts changes and changes nothing. (The converged host's check
run, which must predict no change, is in the test bed: verify_check_mode.yml.)"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import sys

import pytest

from lvmtest import COLLECTIONS_DIR

pytestmark = pytest.mark.lvm

PLAY = """
- name: Both roles in check mode
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    sltv_host_vg: {name: %(vg)s, loop_file: %(loop)s, loop_size: 1G}
    sltv_host_python: /usr/bin/python3
    sltv_agent_vgs: [%(vg)s]
  roles:
    - role: sltv.core.sltv_host
    - role: sltv.core.sltv_agent
"""

# What the roles write on a host they prepare: a check run must leave each as it found it.
WRITTEN = ["/etc/sltv", "/usr/lib/sltv", "/etc/libvirt/hooks/qemu.d/sltv", "/etc/tmpfiles.d/sltv.conf",
           "/etc/systemd/system/sltv-agent.service", "/usr/local/sbin/sltv-agent", "/var/lib/sltv"]


def state(loop):
    seen = {}
    for path in WRITTEN + [loop, "/etc/lvm/lvmlocal.conf"]:
        try:
            stat = os.stat(path)
            seen[path] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen[path] = None
    return seen


def test_both_roles_run_in_check_mode_on_a_host_they_never_prepared(tmp_path):
    if os.path.exists("/etc/sltv/sltv.yml"):
        pytest.fail("this machine was prepared by sltv_host already: the test needs a host it never prepared")
    vg = "sltvtest_check"
    loop = str(tmp_path / "never-created.img")
    play = tmp_path / "play.yml"
    play.write_text(PLAY % dict(vg=vg, loop=loop))
    before = state(loop)
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([binary, "-i", "localhost,", str(play), "--check", "--diff"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:]
    recap = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0", proc.stdout)
    assert recap, proc.stdout[-3000:]
    assert int(recap.group(2)) >= 8, "check mode predicted too few changes:\n" + proc.stdout[-6000:]
    for predicted in ("Write the host config", "Install the core library", "Install the systemd unit",
                      "Create the sparse backing file", "Write the configuration (checked by the agent before it lands)"):
        block = proc.stdout.split(predicted + "]", 1)
        assert len(block) == 2 and block[1].split("TASK [", 1)[0].count("changed: [localhost]") >= 1, \
            "%r is not predicted as a change:\n%s" % (predicted, proc.stdout[-6000:])
    assert state(loop) == before, "check mode changed the host"

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_disk through a real ansible-playbook run: FQCN resolution, check mode, diff mode, idempotence."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from lvmtest import COLLECTIONS_DIR, TEST_ENV

pytestmark = pytest.mark.lvm

PLAY = """
- name: Disks on a loop-backed VG
  hosts: localhost
  connection: local
  gather_facts: false
  environment: %(env)s
  tasks:
    - name: A thick disk
      sltv.core.sltv_disk:
        name: pb-thick
        vg: %(vg)s
        size: 256M
      register: thick
    - name: A thin disk
      sltv.core.sltv_disk:
        name: pb-thin
        vg: %(vg)s
        provisioning: thin
        size: 4G
        initial_size: 128M
      register: thin
    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ [thick, thin] | to_json }}"
        dest: "%(out)s"
        mode: "0600"
      check_mode: false
      diff: false
"""


def ansible_playbook(path, out, *options):
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([binary, path] + list(options), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out) as results:
        return json.load(results)


def test_playbook_check_real_check_real(loop_vg, tmp_path):
    play = tmp_path / "play.yml"
    out = str(tmp_path / "results.json")
    play.write_text(PLAY % {"vg": loop_vg.name, "env": json.dumps(TEST_ENV), "out": out})
    before = loop_vg.snapshot()

    check = ansible_playbook(str(play), out, "--check", "--diff")
    assert [r["changed"] for r in check] == [True, True]
    assert check[0]["diff"]["after"]["size"] == 256 * 1024 ** 2
    assert loop_vg.snapshot() == before, "--check changed the VG"

    real = ansible_playbook(str(play), out, "--diff")
    assert [r["changed"] for r in real] == [True, True]
    assert sorted(loop_vg.lvs()) == ["pb-thick", "pb-thin"]
    assert loop_vg.lvs()["pb-thin"]["size"] == 128 * 1024 ** 2
    assert real[0]["disk"] == check[0]["disk"]

    after = loop_vg.snapshot()
    assert [r["changed"] for r in ansible_playbook(str(play), out, "--check")] == [False, False]
    assert [r["changed"] for r in ansible_playbook(str(play), out)] == [False, False]
    assert loop_vg.snapshot() == after, "a no-op run changed the VG metadata"

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14, the replay: the everyday sequence of a disk tool (create thick and thin, attach with and
without a target, detach, extend to a size, list) as one play, with the VG and lock from the host
config, run twice in a row against real lvm2 and a real libvirtd: the second run is all ``ok``. A
disk grown past the size its create asks for is fine (a warning), not the error it was."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys

import pytest

import libvirttest
from lvmtest import COLLECTIONS_DIR, TEST_ENV, run_module

pytestmark = pytest.mark.lvm

PLAY = """
- name: The everyday sequence
  hosts: localhost
  connection: local
  gather_facts: false
  environment: %(env)s
  module_defaults:
    group/sltv.core.sltv:
      host_config: %(host_config)s
  tasks:
    - name: A thick disk
      sltv.core.sltv_disk: {name: rp-thick, size: 256M}
    - name: A thin disk
      sltv.core.sltv_disk: {name: rp-thin, provisioning: thin, size: 1G, initial_size: 64M}
    - name: Another thick disk
      sltv.core.sltv_disk: {name: rp-extra, size: 64M}
    - name: Attach with a target
      sltv.core.sltv_attachment: {disk: rp-thick, domain: %(domain)s, target: vdb}
    - name: Attach without a target
      sltv.core.sltv_attachment: {disk: rp-extra, domain: %(domain)s}
    - name: Detach the old disk
      sltv.core.sltv_attachment: {disk: rp-old, domain: %(domain)s, state: absent}
    - name: Extend to a size
      sltv.core.sltv_extend: {disk: rp-thick, size: 512M}
    - name: List
      sltv.core.sltv_info: {}
"""


def ansible_playbook(play):
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    # sltv_attachment and sltv_info scan every domain: no other worker may undefine one meanwhile
    with libvirttest.restart_guard(), libvirttest.domain_scan():
        proc = subprocess.run([binary, "-i", "localhost,", play], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:]
    recap = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0", proc.stdout)
    assert recap, proc.stdout[-3000:]
    return int(recap.group(2)), proc.stdout


def test_the_everyday_sequence_replays_with_the_second_run_all_ok(loop_vg, nos_domain, tmp_path):
    dom = nos_domain(persistent=True, start=False)
    host_config = tmp_path / "sltv.yml"
    host_config.write_text("vg: %s\nlock: {lock_backend: local}\n" % loop_vg.name)
    play = tmp_path / "play.yml"
    play.write_text(PLAY % dict(env=json.dumps(TEST_ENV), host_config=host_config, domain=dom.name()))
    # a disk attached before the first run, so that the detach has work to do
    assert not run_module("sltv_disk", dict(name="rp-old", vg=loop_vg.name, size="64M")).get("failed")
    attached = run_module("sltv_attachment", dict(disk="rp-old", vg=loop_vg.name, domain=dom.name()))
    assert attached.get("changed") is True, attached

    changed, first = ansible_playbook(str(play))
    assert changed == 7, first[-6000:]  # three creates, two attaches, the detach, the extend
    lvs = loop_vg.lvs()
    assert lvs["rp-thick"]["size"] == 512 * 1024 ** 2
    assert not [t for t in lvs["rp-old"]["tags"] if t.startswith("sltv_attached=")]
    assert [t for t in lvs["rp-extra"]["tags"] if t.startswith("sltv_attached=")]
    before = loop_vg.snapshot()

    changed, second = ansible_playbook(str(play))
    assert changed == 0, second[-6000:]
    assert "more than the 256 MiB requested: left as it is" in second, second[-6000:]
    assert loop_vg.snapshot() == before, "the replay changed the VG"

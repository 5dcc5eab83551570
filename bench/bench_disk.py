# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create 50 thick disks, then re-run the same 50 as no-ops: sltv.core.sltv_disk vs community.general.lvol.

Both run through ansible-playbook on localhost against one loop-backed VG in the same run, lvm2 with
activation off on both sides (this machine has no device-mapper: lvol gets lvm2 wrappers that add
--driverloaded n, sltv_disk its test setting). Prints seconds per phase and the ratio.

Run as root: python3 bench/bench_disk.py [--disks 50]
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402
conftest.link_collection()  # build/collections/ansible_collections/sltv/core -> this checkout
from lvmtest import COLLECTIONS_DIR, TEST_ENV, LoopVG  # noqa: E402

ANSIBLE_WHEEL = "ansible==12.3.0"  # the community package that carries community.general for ansible-core 2.19
BENCH_DIR = os.path.join(REPO, "build", "bench")
LVM_TOOLS = ("lvcreate", "lvremove", "lvs", "vgs", "lvchange", "lvextend", "lvresize", "lvdisplay", "lvm")

PLAY = """
- name: Bench
  hosts: localhost
  connection: local
  gather_facts: false
  environment: %(env)s
  tasks:
    - name: Disks
      %(module)s:
        %(name_key)s: "bench-%(tag)s-{{ item }}"
        vg: %(vg)s
        size: %(size)s%(extra)s
      loop: "{{ range(%(count)d) | list }}"
"""


def community_general():
    """Extract community.general from the ansible community wheel (PyPI), once."""
    target = os.path.join(BENCH_DIR, "collections")
    if os.path.isdir(os.path.join(target, "ansible_collections", "community", "general")):
        return target
    download = os.path.join(BENCH_DIR, "download")
    subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", ANSIBLE_WHEEL, "-d", download])
    wheel = [f for f in os.listdir(download) if f.endswith(".whl")][0]
    with zipfile.ZipFile(os.path.join(download, wheel)) as archive:
        members = [m for m in archive.namelist() if m.startswith("ansible_collections/community/general/")]
        archive.extractall(target, members)
    return target


def lvm_wrappers():
    """A PATH directory whose lvm2 tools add --driverloaded n (lvol cannot pass options itself)."""
    wrap_dir = os.path.join(BENCH_DIR, "lvm-no-dm")
    if not os.path.isdir(wrap_dir):
        os.makedirs(wrap_dir)
    for tool in LVM_TOOLS:
        path = os.path.join(wrap_dir, tool)
        real = "/usr/sbin/" + tool if os.path.exists("/usr/sbin/" + tool) else "/sbin/" + tool
        with open(path, "w") as wrapper:
            if tool == "lvm":
                wrapper.write('#!/bin/sh\nsub="$1"; shift\nexec %s "$sub" --driverloaded n "$@"\n' % real)
            else:
                wrapper.write('#!/bin/sh\nexec %s --driverloaded n "$@"\n' % real)
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return wrap_dir


def run_play(vg, module, name_key, tag, count, size, collections, extra_env):
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as play:
        # lvol would otherwise run lvchange -ay on every no-op: nothing can be active without dm.
        extra = "\n        active: false" if "lvol" in module else ""
        play.write(PLAY % dict(env=json.dumps(extra_env), module=module, name_key=name_key, tag=tag, vg=vg,
                               size=size, count=count, extra=extra))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    started = time.monotonic()
    proc = subprocess.run([binary, play.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, check=False)
    elapsed = time.monotonic() - started
    os.remove(play.name)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (module, proc.stdout[-3000:]))
    changed = int(proc.stdout.split("changed=")[1].split()[0])
    return elapsed, changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=50)
    options = parser.parse_args()
    collections = community_general() + ":" + COLLECTIONS_DIR
    wrappers = lvm_wrappers()
    workdir = tempfile.mkdtemp(prefix="sltv-bench-")
    vg = LoopVG(workdir, size_gib=64)
    rows = []
    try:
        lvol_env = {"PATH": wrappers + ":" + os.environ["PATH"]}
        for label, module, key, env in (
            ("community.general.lvol", "community.general.lvol", "lv", lvol_env),
            ("sltv.core.sltv_disk", "sltv.core.sltv_disk", "name", TEST_ENV),
        ):
            tag = "lvol" if "lvol" in module else "sltv"
            create = run_play(vg.name, module, key, tag, options.disks, "256m" if tag == "lvol" else "256M",
                              collections, env)
            noop = run_play(vg.name, module, key, tag, options.disks, "256m" if tag == "lvol" else "256M",
                            collections, env)
            rows.append((label, create, noop))
        print("%d thick disks of 256 MiB on one loop-backed VG, through ansible-playbook (loop of %d)"
              % (options.disks, options.disks))
        print("%-24s %12s %9s %12s %9s" % ("module", "create (s)", "changed", "no-op (s)", "changed"))
        for label, create, noop in rows:
            print("%-24s %12.2f %9d %12.2f %9d" % (label, create[0], create[1], noop[0], noop[1]))
        base, ours = rows[0], rows[1]
        print("ratio sltv_disk / lvol: create %.2f, no-op %.2f (below 1 = sltv_disk faster)"
              % (ours[1][0] / base[1][0], ours[2][0] / base[2][0]))
        lvs = vg.lvs()
        print("LVs in the VG afterwards: %d (expected %d)" % (len(lvs), 2 * options.disks))
    finally:
        vg.destroy()
        os.rmdir(workdir)


if __name__ == "__main__":
    main()

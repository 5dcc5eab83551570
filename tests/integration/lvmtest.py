# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real lvm2 on loop devices for the integration tests, and a way to run the modules for real.

These machines have no device-mapper: lvm2 runs with --driverloaded n (the test-only setting
SLTV_TEST_LVM_NO_ACTIVATION=1), so every metadata command is real but no LV is ever activated.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

import libvirttest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_DIR = os.path.join(REPO_ROOT, "build", "collections")
MODULES_DIR = os.path.join(REPO_ROOT, "plugins", "modules")
TEST_ENV = {"SLTV_TEST_LVM_NO_ACTIVATION": "1", "LC_ALL": "C", "LVM_SUPPRESS_FD_WARNINGS": "1"}
# modules that open libvirt and look at every domain of the host (libvirt_domain.Hypervisor.disk_users):
# they run under libvirttest.restart_guard() and domain_scan(), so that no test of another pytest-xdist
# worker restarts libvirtd or undefines a domain in the middle of their scan (the module would fail
# with "Domain not found")
SCANNING_MODULES = ("sltv_attachment", "sltv_extend", "sltv_info")


def lvm(*argv, **kwargs):
    """Run an lvm2 command with activation off; return stdout (raises on failure unless check=False)."""
    cmd = [argv[0], "--driverloaded", "n"] + list(argv[1:])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=dict(os.environ, **TEST_ENV), check=False)
    if kwargs.get("check", True) and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (cmd, proc.returncode, proc.stderr))
    return proc.stdout if kwargs.get("check", True) else proc


def need_root_and_lvm():
    if os.geteuid() != 0 or not shutil.which("lvcreate") or not shutil.which("losetup"):
        if os.environ.get("CI"):
            pytest.fail("integration tests need root, lvm2 and losetup (make test installs them)")
        pytest.skip("needs root, lvm2 and losetup")


class LoopVG(object):
    """A VG on a loop device over a sparse file."""

    def __init__(self, directory, size_gib=8, extent="4m"):
        need_root_and_lvm()
        self.name = "sltvtest_" + uuid.uuid4().hex[:8]
        self.image = os.path.join(directory, self.name + ".img")
        with open(self.image, "wb") as image:
            image.truncate(size_gib * 1024 ** 3)
        self.device = subprocess.check_output(["losetup", "-f", "--show", self.image], universal_newlines=True).strip()
        lvm("pvcreate", "-q", self.device)
        lvm("vgcreate", "-q", "-s", extent, self.name, self.device)

    def lvs(self):
        """LV name -> dict(size, tags) from a real lvs."""
        out = lvm("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_tags", self.name)
        rows = json.loads(out)["report"][0]["lv"]
        return dict((r["lv_name"], {"size": int(r["lv_size"]), "tags": [t for t in r["lv_tags"].split(",") if t]})
                    for r in rows)

    def snapshot(self):
        """Everything a change would touch: LVs with uuids/tags/attrs and the VG metadata seqno."""
        lvs_out = lvm("lvs", "-a", "--reportformat", "json", "--units", "b", "-o",
                      "lv_name,lv_uuid,lv_size,lv_tags,lv_attr", self.name)
        vgs_out = lvm("vgs", "--reportformat", "json", "--units", "b", "-o", "vg_seqno,vg_free,vg_tags", self.name)
        return lvs_out + vgs_out

    def vgck(self):
        return lvm("vgck", "--verbose", self.name, check=False)

    def destroy(self):
        lvm("vgremove", "-f", "-q", self.name, check=False)
        lvm("pvremove", "-q", self.device, check=False)
        subprocess.call(["losetup", "-d", self.device])
        if os.path.exists(self.image):
            os.remove(self.image)


def module_command(module, args, check=False, diff=False):
    """argv + args file to run a module the way Ansible does (JSON args file), without a controller.

    The run is at verbosity 1 (-v), so that results carry the full ``commands`` list the tests read
    (write_commands()); pass ``_ansible_verbosity=0`` in ``args`` for a default run's output.
    This machine's host config (/etc/sltv/sltv.yml, if any) is left out unless ``args`` names one."""
    payload = dict(_ansible_verbosity=1, host_config="/dev/null")
    payload.update(args, _ansible_check_mode=check, _ansible_diff=diff)
    handle, path = tempfile.mkstemp(prefix="sltv-args-", suffix=".json")
    with os.fdopen(handle, "w") as args_file:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, args_file)
    return [sys.executable, os.path.join(MODULES_DIR, module + ".py"), path], path


def module_env(extra=None):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS_DIR, **TEST_ENV)
    env.update(extra or {})
    return env


def parse_module_output(stdout, stderr):
    try:
        return json.loads(stdout)
    except ValueError:
        raise AssertionError("module printed no JSON.\nstdout: %s\nstderr: %s" % (stdout, stderr))


@contextlib.contextmanager
def module_guards(module):
    """For a SCANNING_MODULES run: the libvirtd lock shared, then the domains lock shared (the libvirtd
    lock first, as conftest's host_guards then a removal take them: no deadlock)."""
    if module not in SCANNING_MODULES:
        yield
        return
    with libvirttest.restart_guard(), libvirttest.domain_scan():
        yield


def run_module(module, args, check=False, diff=False, env=None, timeout=120):
    argv, path = module_command(module, args, check, diff)
    try:
        with module_guards(module):
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  env=module_env(env), timeout=timeout, check=False)
    finally:
        os.remove(path)
    return parse_module_output(proc.stdout, proc.stderr)


def start_module(module, args, env=None):
    """Start a module run in the background; returns (Popen, args path, what finish_module ends)."""
    argv, path = module_command(module, args)
    held = contextlib.ExitStack()
    held.enter_context(module_guards(module))  # until finish_module
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            env=module_env(env))
    return proc, path, held


def finish_module(started, timeout=120):
    proc, path, held = started
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        held.close()
    os.remove(path)
    return parse_module_output(stdout, stderr)


def write_commands(result):
    """The lvm commands of a result that change metadata (anything but the report)."""
    return [c for c in result.get("commands", []) if c[:2] != ["lvm", "fullreport"]]


def warning_texts(result):
    """Warnings as strings (ansible-core >= 2.19 wraps each in a WarningSummary dict)."""
    texts = []
    for warning in result.get("warnings", []):
        if isinstance(warning, dict):
            warning = warning.get("event", {}).get("msg") or json.dumps(warning)
        texts.append(warning)
    return texts

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attach + detach latency: sltv.core.sltv_attachment vs the hand-run steps it replaces.

Runs on a hypervisor of the test bed (real device-mapper, libvirt, QEMU; TCG, so absolute times
are slow: read the ratios). In one run, on one running no-OS domain, SCSI bus (a no-OS guest never
releases a virtio disk):

* sltv:     the module, run as Ansible runs it (python3 + args file), attach then detach;
            then no-op attach runs on the attached disk;
* baseline: ``lvchange -ay`` + ``virsh attach-device --live --config`` then
            ``virsh detach-device --live --config`` + ``lvchange -an``, as 4 ansible.builtin.command
            task runs (a hand-written playbook), as bare commands (by hand), and the two virsh
            calls alone.

community.libvirt.virt has no attach or detach (it defines, starts and stops domains), so the
baseline is virsh, as in a hand-written ``ansible.builtin.command`` task.

Run as root on this machine with the test bed up (``python3 tests/testbed/testbed.py up``):
    python3 bench/bench_attach.py [--vm 1] [--cycles 50]
"""
from __future__ import absolute_import, division, print_function

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REMOTE_DIR = "/tmp/sltv-bench"
DOMAIN = "bench-dom"
DISK = "bench-att"
OPERATIONS = ("sltv attach", "sltv detach", "sltv no-op attach", "virsh attach-device", "virsh detach-device",
              "lvchange+virsh attach", "virsh+lvchange detach", "2 command tasks attach", "2 command tasks detach")
DOMAIN_XML = """<domain type='%s'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type><bios rebootTimeout='-1'/></os><features><acpi/></features>
<on_crash>destroy</on_crash><devices><controller type='scsi' index='0' model='virtio-scsi'/>
<memballoon model='none'/></devices></domain>"""
DISK_XML = """<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>
<source dev='/dev/%s/%s'/><target dev='sda' bus='scsi'/></disk>"""


# -- controller side -----------------------------------------------------------------------------
def payload():
    """A tar of this script, the collection's plugins and ansible's module_utils (the VMs have no ansible)."""
    import ansible  # pylint: disable=import-outside-toplevel

    ansible_dir = os.path.dirname(ansible.__file__)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(os.path.abspath(__file__), arcname="bench_attach.py")
        tar.add(os.path.join(REPO, "plugins"), arcname="ansible_collections/sltv/core/plugins",
                filter=lambda info: None if "__pycache__" in info.name else info)
        # like AnsiballZ: an empty ansible/__init__.py, and ansible's module_utils
        stub = tarfile.TarInfo("ansible/__init__.py")
        tar.addfile(stub, io.BytesIO(b""))
        tar.add(os.path.join(ansible_dir, "module_utils"), arcname="ansible/module_utils",
                filter=lambda info: None if "__pycache__" in info.name else info)
        tar.add(os.path.join(ansible_dir, "modules", "command.py"), arcname="ansible/modules/command.py")
    return buf.getvalue()


def controller(args):
    tool = [sys.executable, os.path.join(REPO, "tests", "testbed", "testbed.py"), "ssh", str(args.vm)]
    # ssh hands the remote shell one command line: no argv survives it, so keep it to plain words
    subprocess.run(tool + ["rm -rf %s && mkdir -p %s && tar -xz -C %s" % ((REMOTE_DIR,) * 3)],
                   input=payload(), check=True)
    proc = subprocess.run(tool + ["python3", REMOTE_DIR + "/bench_attach.py", "--worker", "--cycles",
                                  str(args.cycles), "--vg", args.vg], check=False)
    return proc.returncode


# -- hypervisor side -----------------------------------------------------------------------------
def sh(*argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc.stdout


def module(module_name, **params):
    """Run a module file the way Ansible runs it on the target: python3, an args file, JSON out."""
    if module_name == "command":
        path = "%s/ansible/modules/command.py" % REMOTE_DIR
    else:
        path = "%s/ansible_collections/sltv/core/plugins/modules/%s.py" % (REMOTE_DIR, module_name)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as args_file:
        json.dump({"ANSIBLE_MODULE_ARGS": params}, args_file)
    try:
        out = subprocess.run([sys.executable, path, args_file.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, env=dict(os.environ, PYTHONPATH=REMOTE_DIR), check=False).stdout
    finally:
        os.remove(args_file.name)
    result = json.loads(out)
    if result.get("failed"):
        raise RuntimeError("%s failed: %s" % (module_name, result.get("msg")))
    return result


def timed(func, *args, **kwargs):
    began = time.monotonic()
    result = func(*args, **kwargs)
    return time.monotonic() - began, result


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def ensure_vg(vg):
    if subprocess.run(["vgs", vg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode != 0:
        sh("vgcreate", vg, "/dev/disk/by-id/virtio-shared0")


def worker(args):
    vg = args.vg
    ensure_vg(vg)
    domain_type = "kvm" if os.path.exists("/dev/kvm") else "qemu"
    subprocess.run(["virsh", "destroy", DOMAIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["virsh", "undefine", DOMAIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as dom_file:
        dom_file.write(DOMAIN_XML % (domain_type, DOMAIN))
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as disk_file:
        disk_file.write(DISK_XML % (vg, DISK))
    sh("virsh", "define", dom_file.name)
    sh("virsh", "start", DOMAIN)
    module("sltv_disk", name=DISK, vg=vg, size="64M")
    args_attach = dict(disk=DISK, vg=vg, domain=DOMAIN, bus="scsi")
    times = dict((key, []) for key in OPERATIONS)
    try:
        for _cycle in range(args.cycles):
            seconds, result = timed(module, "sltv_attachment", **args_attach)
            assert result["changed"] and result["target"] == "sda", result
            times["sltv attach"].append(seconds)
            seconds, result = timed(module, "sltv_attachment", state="absent", **args_attach)
            assert result["changed"], result
            times["sltv detach"].append(seconds)
        module("sltv_attachment", **args_attach)
        for _cycle in range(args.cycles):
            seconds, result = timed(module, "sltv_attachment", **args_attach)
            assert not result["changed"], result
            times["sltv no-op attach"].append(seconds)
        module("sltv_attachment", state="absent", **args_attach)
        lv = "%s/%s" % (vg, DISK)
        for _cycle in range(args.cycles):
            began = time.monotonic()
            sh("lvchange", "-ay", lv)
            seconds, _out = timed(sh, "virsh", "attach-device", DOMAIN, disk_file.name, "--live", "--config")
            times["lvchange+virsh attach"].append(time.monotonic() - began)
            times["virsh attach-device"].append(seconds)
            began = time.monotonic()
            seconds, _out = timed(sh, "virsh", "detach-device", DOMAIN, disk_file.name, "--live", "--config")
            sh("lvchange", "-an", lv)
            times["virsh+lvchange detach"].append(time.monotonic() - began)
            times["virsh detach-device"].append(seconds)
        # the same steps as a hand-written playbook runs them: one ansible.builtin.command task each
        for _cycle in range(args.cycles):
            began = time.monotonic()
            module("command", argv=["lvchange", "-ay", lv])
            module("command", argv=["virsh", "attach-device", DOMAIN, disk_file.name, "--live", "--config"])
            times["2 command tasks attach"].append(time.monotonic() - began)
            began = time.monotonic()
            module("command", argv=["virsh", "detach-device", DOMAIN, disk_file.name, "--live", "--config"])
            module("command", argv=["lvchange", "-an", lv])
            times["2 command tasks detach"].append(time.monotonic() - began)
    finally:
        subprocess.run(["virsh", "destroy", DOMAIN], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(["virsh", "undefine", DOMAIN], stdout=subprocess.DEVNULL, check=False)
        module("sltv_disk", name=DISK, vg=vg, state="absent", wipe="none")
        os.remove(dom_file.name)
        os.remove(disk_file.name)

    print("\n%d cycles on %s (domain type %s, test-bed VM under TCG)" % (args.cycles, os.uname()[1], domain_type))
    print("%-26s %9s %9s %9s" % ("operation", "p50 ms", "p99 ms", "max ms"))
    for key, values in times.items():
        print("%-26s %9.1f %9.1f %9.1f" % (key, pct(values, 50) * 1e3, pct(values, 99) * 1e3, max(values) * 1e3))
    cycle_sltv = [a + d for a, d in zip(times["sltv attach"], times["sltv detach"])]
    cycle_hand = [a + d for a, d in zip(times["lvchange+virsh attach"], times["virsh+lvchange detach"])]
    cycle_virsh = [a + d for a, d in zip(times["virsh attach-device"], times["virsh detach-device"])]
    cycle_tasks = [a + d for a, d in zip(times["2 command tasks attach"], times["2 command tasks detach"])]
    print("\nattach+detach cycle p50: sltv %.0f ms, 4 command tasks %.0f ms, lvchange+virsh %.0f ms, virsh alone %.0f ms"
          % (pct(cycle_sltv, 50) * 1e3, pct(cycle_tasks, 50) * 1e3, pct(cycle_hand, 50) * 1e3, pct(cycle_virsh, 50) * 1e3))
    print("ratio sltv / command tasks:    p50 %.2f, p99 %.2f (same module start-up cost on both sides)"
          % (pct(cycle_sltv, 50) / pct(cycle_tasks, 50), pct(cycle_sltv, 99) / pct(cycle_tasks, 99)))
    print("ratio sltv / (lvchange+virsh): p50 %.2f, p99 %.2f"
          % (pct(cycle_sltv, 50) / pct(cycle_hand, 50), pct(cycle_sltv, 99) / pct(cycle_hand, 99)))
    print("ratio sltv / virsh alone:      p50 %.2f" % (pct(cycle_sltv, 50) / pct(cycle_virsh, 50)))
    print("no-op sltv attach p50 %.0f ms = %.2f x a virsh attach-device (which is not idempotent: it fails "
          "on an attached disk)" % (pct(times["sltv no-op attach"], 50) * 1e3,
                                    pct(times["sltv no-op attach"], 50) / pct(times["virsh attach-device"], 50)))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vm", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--vg", default="vg_sltv")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return worker(args) if args.worker else controller(args)


if __name__ == "__main__":
    sys.exit(main())

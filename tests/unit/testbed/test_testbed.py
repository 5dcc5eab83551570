# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the test-bed tool's pure logic (no VM, no root, no network)."""

from __future__ import annotations

import copy
import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testbed"))

import testbed  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def paths(tmp_path):
    return testbed.Paths(state=tmp_path / "state", cache=tmp_path / "cache")


@pytest.fixture
def image(paths):
    return testbed.Image(paths.images / "0123456789abcdef")


def spec(i=1, accel="tcg"):
    return testbed.VmSpec(index=i, ssh_port=2220 + i, mem_mib=1536, cpus=1, accel=accel, tap="sltvtbabcdv%d" % i)


def option_values(argv, option):
    return [argv[k + 1] for k, arg in enumerate(argv[:-1]) if arg == option]


# --- qemu argv -------------------------------------------------------------------------------
def test_qemu_argv_disks_are_pinned_and_shared_lun_is_shareable(paths, image):
    argv = testbed.qemu_argv(spec(2), image, paths)
    devices = option_values(argv, "-device")
    drives = option_values(argv, "-drive")
    assert "virtio-blk-pci,drive=root0,serial=root0,addr=0x4" in devices
    assert "virtio-blk-pci,drive=shared0,share-rw=on,serial=shared0,addr=0x5" in devices
    assert "file=%s,format=raw,if=none,id=shared0,cache=none,file.locking=off" % paths.shared in drives
    assert "file=%s,format=qcow2,if=none,id=root0" % paths.overlay(2) in drives


def test_qemu_argv_identity_boot_and_daemon(paths, image):
    argv = testbed.qemu_argv(spec(2), image, paths, qemu="/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert option_values(argv, "-name") == ["vm2"]
    assert option_values(argv, "-pidfile") == [str(paths.pidfile(2))]
    assert option_values(argv, "-kernel") == [str(image.kernel)]
    assert option_values(argv, "-initrd") == [str(image.initrd)]
    assert option_values(argv, "-serial") == ["file:%s" % paths.console(2)]
    append = option_values(argv, "-append")[0].split()
    assert "systemd.hostname=vm2" in append
    assert "sltv.private_ip=169.254.77.2/24" in append
    assert "console=ttyS0" in append and "root=/dev/vda" in append
    assert "-daemonize" in argv


def test_qemu_argv_networks_loopback_only_and_no_multicast(paths, image):
    argv = testbed.qemu_argv(spec(3), image, paths)
    netdevs = option_values(argv, "-netdev")
    assert netdevs[0] == "user,id=net0,hostfwd=tcp:127.0.0.1:2223-:22"
    assert netdevs[1] == "tap,id=priv0,ifname=sltvtbabcdv3,script=no,downscript=no"
    assert not any("mcast" in n or "multicast" in n for n in netdevs)
    devices = option_values(argv, "-device")
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:03,addr=0x6" in devices
    assert "virtio-net-pci,netdev=priv0,mac=52:54:00:77:00:03,addr=0x7" in devices


def test_qemu_argv_accelerators(paths, image):
    tcg = testbed.qemu_argv(spec(accel="tcg"), image, paths)
    assert option_values(tcg, "-accel") == ["tcg,thread=multi,tb-size=256"]
    assert option_values(tcg, "-cpu") == ["max"]      # exposes SVM: nested KVM in the VMs
    kvm = testbed.qemu_argv(spec(accel="kvm"), image, paths)
    assert option_values(kvm, "-accel") == ["kvm"]
    assert option_values(kvm, "-cpu") == ["host"]


def test_qemu_argv_pci_addresses_are_unique(paths, image):
    devices = option_values(testbed.qemu_argv(spec(), image, paths), "-device")
    addrs = [d.rsplit("addr=", 1)[1] for d in devices]
    assert len(addrs) == len(set(addrs)) == 5


# --- inventory -------------------------------------------------------------------------------
def test_render_inventory_exact():
    text = testbed.render_inventory([1, 2], 2220, Path("/var/cache/sltv-testbed/id_ed25519"), 23790)
    assert text == (
        "# sltv.core test bed, written by tests/testbed/testbed.py up\n"
        "[hypervisors]\n"
        "vm1 ansible_host=127.0.0.1 ansible_port=2221 sltv_host_id=1 sltv_private_ip=169.254.77.1\n"
        "vm2 ansible_host=127.0.0.1 ansible_port=2222 sltv_host_id=2 sltv_private_ip=169.254.77.2\n"
        "\n"
        "[hypervisors:vars]\n"
        "ansible_user=root\n"
        "ansible_ssh_private_key_file=/var/cache/sltv-testbed/id_ed25519\n"
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'\n"
        "ansible_python_interpreter=/usr/bin/python3\n"
        "sltv_shared_disk=/dev/disk/by-id/virtio-shared0\n"
        "sltv_etcd_endpoint=http://10.0.2.2:23790\n"
    )


def test_render_inventory_without_etcd_and_other_port():
    text = testbed.render_inventory([1, 2, 3], 3000, Path("/k"), None)
    assert "vm3 ansible_host=127.0.0.1 ansible_port=3003 sltv_host_id=3 sltv_private_ip=169.254.77.3" in text
    assert "sltv_etcd_endpoint" not in text


def test_inventory_parses_with_ansible(tmp_path):
    inventory_module = pytest.importorskip("ansible.inventory.manager")
    dataloader = pytest.importorskip("ansible.parsing.dataloader")
    path = tmp_path / "inventory.ini"
    path.write_text(testbed.render_inventory([1, 2], 2220, Path("/k/id"), 23790), encoding="utf-8")
    manager = inventory_module.InventoryManager(loader=dataloader.DataLoader(), sources=[str(path)])
    host = manager.get_host("vm2")
    variables = host.get_vars()
    group_vars = manager.groups["hypervisors"].get_vars()
    assert [h.name for h in manager.groups["hypervisors"].get_hosts()] == ["vm1", "vm2"]
    assert variables["ansible_port"] == 2222 and variables["sltv_host_id"] == 2
    assert group_vars["sltv_shared_disk"] == "/dev/disk/by-id/virtio-shared0"
    assert group_vars["ansible_ssh_common_args"].startswith("-o StrictHostKeyChecking=no")


# --- recipe hash -----------------------------------------------------------------------------
def recipe():
    return testbed.image_recipe("http://deb.example.org/debian", "bookworm", "ssh-ed25519 AAAA test\n")


def test_recipe_hash_is_stable():
    assert testbed.recipe_hash(recipe()) == testbed.recipe_hash(recipe())
    reordered = dict(reversed(list(recipe().items())))
    assert testbed.recipe_hash(reordered) == testbed.recipe_hash(recipe())


@pytest.mark.parametrize("change", [
    lambda r: r["packages"].append("htop"),
    lambda r: r["files"]["etc/hostname"].__setitem__(1, "other\n"),
    lambda r: r["enable"].append("foo.service"),
    lambda r: r["disable"].remove("sanlock.service"),
    lambda r: r.__setitem__("version", r["version"] + 1),
    lambda r: r.__setitem__("suite", "trixie"),
])
def test_recipe_hash_changes_with_the_recipe(change):
    changed = copy.deepcopy(recipe())
    change(changed)
    assert testbed.recipe_hash(changed) != testbed.recipe_hash(recipe())


def test_recipe_hash_changes_with_key_and_mirror():
    base = testbed.recipe_hash(recipe())
    assert testbed.recipe_hash(testbed.image_recipe("http://deb.example.org/debian", "bookworm", "other key")) != base
    assert testbed.recipe_hash(testbed.image_recipe("http://m.example.org/debian", "bookworm", "ssh-ed25519 AAAA test\n")) != base


def test_recipe_content():
    r = recipe()
    for package in ("linux-image-amd64", "lvm2", "lvm2-lockd", "sanlock", "libvirt-daemon-system", "python3-etcd3gw"):
        assert package in r["packages"]
    assert r["files"]["etc/machine-id"] == [0o444, ""]
    assert r["files"]["root/.ssh/authorized_keys"] == [0o600, "ssh-ed25519 AAAA test\n"]
    assert "etc/ssh/ssh_host_*" in r["remove"]
    assert "deb http://deb.example.org/debian-security bookworm-security main" in r["files"]["etc/apt/sources.list"][1]
    assert "169.254.77.2 vm2" in r["files"]["etc/hosts"][1]
    assert {"lvmlockd.service", "sanlock.service"} <= set(r["disable"])


# --- mirror detection, sizes -----------------------------------------------------------------
def test_detect_mirror_deb822_and_one_line():
    deb822 = "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n\nTypes: deb\nURIs: http://deb.debian.org/debian/\nSuites: bookworm\n"
    assert testbed.detect_mirror([deb822]) == "http://deb.debian.org/debian"
    one_line = "# deb http://old/debian bookworm main\ndeb [arch=amd64] http://ftp.fr.debian.org/debian bookworm main\n"
    assert testbed.detect_mirror([one_line]) == "http://ftp.fr.debian.org/debian"
    assert testbed.detect_mirror(["deb http://mirror.example/debian bookworm main"]) == "http://mirror.example/debian"
    assert testbed.detect_mirror(["deb https://packages.cloud.google.com/apt cloud-sdk main"]) is None


@pytest.mark.parametrize("text,expected", [("40G", 40 * 1024 ** 3), ("512M", 512 * 1024 ** 2), ("1024", 1024),
                                           ("2GiB", 2 * 1024 ** 3), ("1T", 1024 ** 4)])
def test_parse_size(text, expected):
    assert testbed.parse_size(text) == expected


def test_parse_size_rejects_garbage():
    with pytest.raises(testbed.TestbedError):
        testbed.parse_size("forty")


# --- ports and names -------------------------------------------------------------------------
def test_ports():
    assert [testbed.ssh_port(2220, i) for i in (1, 2, 3)] == [2221, 2222, 2223]
    assert testbed.etcd_peer_port(23790) == 23800


def test_busy_ports_sees_a_listening_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert testbed.busy_ports([port]) == [port]
    assert testbed.port_is_free(port)


def test_net_names_fit_and_differ_per_state_dir():
    a, b = Path("/var/tmp/sltv-testbed"), Path("/tmp/other")
    assert len(testbed.tap_name(a, 3)) <= 15
    assert testbed.tap_name(a, 1) != testbed.tap_name(b, 1)
    assert testbed.netns_name(a) != testbed.netns_name(b)
    assert testbed.private_ip(2) == "169.254.77.2"


# --- PID ownership ---------------------------------------------------------------------------
def fake_proc(root, pid, argv):
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_vm_pid_checks_the_process_is_our_vm(tmp_path, paths, image):
    proc = tmp_path / "proc"
    paths.state.mkdir(parents=True)
    paths.pidfile(1).write_text("4242\n", encoding="utf-8")
    assert testbed.vm_pid(paths, 1, proc_root=proc) is None                      # no such process
    fake_proc(proc, 4242, ["/usr/bin/python3", "-m", "http.server"])
    assert testbed.vm_pid(paths, 1, proc_root=proc) is None                      # PID reused by someone else
    paths.pidfile(1).write_text("4343\n", encoding="utf-8")
    fake_proc(proc, 4343, testbed.qemu_argv(spec(1), image, paths, qemu="/usr/bin/qemu-system-x86_64"))
    assert testbed.vm_pid(paths, 1, proc_root=proc) == 4343
    paths.pidfile(2).write_text("4343\n", encoding="utf-8")
    assert testbed.vm_pid(paths, 2, proc_root=proc) is None                      # our VM 1, not VM 2


def test_is_our_vm_rejects_another_state_dir(tmp_path, paths, image):
    other = testbed.Paths(state=tmp_path / "other", cache=paths.cache)
    argv = testbed.qemu_argv(spec(1), image, other)
    assert testbed.is_our_vm(argv, 1, other)
    assert not testbed.is_our_vm(argv, 1, paths)
    assert not testbed.is_our_vm([], 1, paths)


def test_is_our_etcd(paths):
    argv = testbed.etcd_argv(paths, 23790)
    assert testbed.is_our_etcd(["/usr/bin/etcd"] + argv[1:], paths)
    assert not testbed.is_our_etcd(["/usr/bin/etcd", "--data-dir", "/elsewhere"], paths)
    assert "http://127.0.0.1:23790" in argv and "http://127.0.0.1:23800" in argv


def test_read_pid_handles_garbage(tmp_path):
    path = tmp_path / "pid"
    assert testbed.read_pid(path) is None
    path.write_text("nope", encoding="utf-8")
    assert testbed.read_pid(path) is None


# --- mounts ----------------------------------------------------------------------------------
MOUNTINFO = (
    "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "90 22 0:5 / /var/cache/sltv-testbed/build-x.tmp/rootfs/proc rw - proc proc rw\n"
    "91 22 0:6 / /var/cache/sltv-testbed/build-x.tmp/rootfs/sys rw - sysfs sysfs rw\n"
    "92 22 0:7 / /var/cache/sltv-testbed-other/x rw - tmpfs t rw\n"
    "93 22 0:8 / /tmp/with\\040space rw - tmpfs t rw\n"
)


def test_mounts_under():
    found = testbed.mounts_under(Path("/var/cache/sltv-testbed"), MOUNTINFO)
    assert found == ["/var/cache/sltv-testbed/build-x.tmp/rootfs/proc", "/var/cache/sltv-testbed/build-x.tmp/rootfs/sys"]
    assert testbed.mounts_under(Path("/tmp/with space"), MOUNTINFO) == ["/tmp/with space"]
    assert testbed.mounts_under(Path("/srv"), MOUNTINFO) == []


# --- remote scripts --------------------------------------------------------------------------
def test_check_script_pings_the_other_vms_and_probes_etcd():
    script = testbed.check_script({"vms": [1, 2, 3], "etcd_port": 23790}, 2)
    assert "ping -c1 -W2 169.254.77.1" in script and "ping -c1 -W2 169.254.77.3" in script
    assert "169.254.77.2 " not in script
    assert "10.0.2.2" in script and "23790" in script
    assert "etcd" not in testbed.check_script({"vms": [1], "etcd_port": None}, 1)


def test_lockd_script_sets_the_host_id():
    script = testbed.LOCKD_SCRIPT % {"host_id": 3}
    assert "host_id = 3" in script and "use_lvmlockd = 1" in script


def test_ssh_argv():
    argv = testbed.ssh_argv(Path("/k"), 2221, ["lvs", "-a"])
    assert argv[:3] == ["ssh", "-i", "/k"]
    assert argv[-4:] == ["root@127.0.0.1", "--", "lvs", "-a"]
    assert "StrictHostKeyChecking=no" in argv and option_values(argv, "-p") == ["2221"]


def test_paths_reject_commas(monkeypatch):
    monkeypatch.setenv("SLTV_TESTBED_DIR", "/tmp/a,b")
    with pytest.raises(testbed.TestbedError):
        testbed.Paths.from_env()


def test_parser_defaults(monkeypatch):
    monkeypatch.delenv("SLTV_TESTBED_BASE_PORT", raising=False)
    args = testbed.parser().parse_args(["up"])
    assert (args.count, args.base_port, args.etcd, args.etcd_port) == (2, 2220, True, 23790)
    assert testbed.parser().parse_args(["ssh", "2", "lvs", "-a"]).remote == ["lvs", "-a"]


def test_holds_files_under_looks_at_open_files_not_arguments(tmp_path):
    proc = tmp_path / "proc"
    (proc / "10" / "fd").mkdir(parents=True)
    (proc / "10" / "fd" / "3").symlink_to("/var/tmp/sltv-testbed/vm1.qcow2")
    (proc / "10" / "cwd").symlink_to("/")
    (proc / "11" / "fd").mkdir(parents=True)
    (proc / "11" / "cwd").symlink_to("/root")
    (proc / "11" / "cmdline").write_bytes(b"ansible-playbook\0--inventory=/var/tmp/sltv-testbed/inventory.ini\0")
    dirs = ("/var/tmp/sltv-testbed", "/var/cache/sltv-testbed")
    assert testbed.holds_files_under("10", dirs, str(proc))
    assert not testbed.holds_files_under("11", dirs, str(proc))
    assert not testbed.holds_files_under("12", dirs, str(proc))

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv.core test bed: N Debian bookworm "hypervisor" VMs under QEMU sharing one raw "SAN LUN".

Each VM has a working device-mapper/LVM (the machine running this tool may have none), libvirt and
QEMU for nested domains, SSH on 127.0.0.1:BASE_PORT+i, an address on a private VM-to-VM network and
an etcd on this machine (10.0.2.2 from inside the VMs).  Run as root:

    python3 tests/testbed/testbed.py deps            install what the tool needs (apt-get)
    python3 tests/testbed/testbed.py build           build the Debian image (cached by recipe hash)
    python3 tests/testbed/testbed.py up [N]          boot N VMs (default 2, max 3) + etcd, write inventory
    python3 tests/testbed/testbed.py check           health check of the running VMs
    python3 tests/testbed/testbed.py status          running VMs and etcd
    python3 tests/testbed/testbed.py ssh I [CMD...]  ssh into VM I
    python3 tests/testbed/testbed.py lockd           switch the VMs to lvmlockd + sanlock
    python3 tests/testbed/testbed.py inventory       print the inventory path and content
    python3 tests/testbed/testbed.py down [--purge]  stop everything (--purge: shared LUN and state too)

Environment: SLTV_TESTBED_DIR (state, /var/tmp/sltv-testbed), SLTV_TESTBED_CACHE (image cache,
/var/cache/sltv-testbed), SLTV_TESTBED_MIRROR (Debian mirror, default: the first one in /etc/apt),
SLTV_TESTBED_BASE_PORT (2220), SLTV_TESTBED_ETCD_PORT (23790), SLTV_TESTBED_MEM (MiB, 1536),
SLTV_TESTBED_CPUS (1), SLTV_TESTBED_SHARED_SIZE (40G), SLTV_TESTBED_ACCEL (auto|kvm|tcg),
SLTV_TESTBED_BOOT_TIMEOUT (seconds, 600).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import glob
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Constants.  Bump RECIPE_VERSION whenever the image build *code* changes in a way the recipe data
# below does not show (the hash covers the data, the version covers the code).
# ---------------------------------------------------------------------------------------------
RECIPE_VERSION = 1
SUITE = "bookworm"
IMAGE_SIZE = 8 * 1024 ** 3          # sparse; the ext4 only holds what debootstrap installed
MAX_VMS = 3
DEFAULT_VMS = 2
DEFAULT_STATE_DIR = "/var/tmp/sltv-testbed"
DEFAULT_CACHE_DIR = "/var/cache/sltv-testbed"
DEFAULT_BASE_PORT = 2220
DEFAULT_ETCD_PORT = 23790            # not 2379: the project's own tests start etcds there
DEFAULT_MEM_MIB = 1536               # libvirt domains run inside the VMs later
DEFAULT_CPUS = 1
DEFAULT_SHARED_SIZE = "40G"
DEFAULT_BOOT_TIMEOUT = 600
SHARED_DISK = "/dev/disk/by-id/virtio-shared0"
PRIVATE_PREFIX = "169.254.77"        # link-local: never a real network address
PRIVATE_PREFIXLEN = 24
HOST_FROM_VM = "10.0.2.2"            # QEMU user-mode networking: this machine's loopback
SSH_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
# PCI slots are pinned so the root disk is always vda and udev's ID_PATH is stable
PCI_ROOT, PCI_SHARED, PCI_NIC, PCI_PRIVATE, PCI_RNG = "0x4", "0x5", "0x6", "0x7", "0x8"

# The packages of the VM image (installed with --no-install-recommends on a minbase debootstrap).
IMAGE_PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "udev", "dbus", "openssh-server", "python3", "python3-apt",
    "lvm2", "lvm2-lockd", "sanlock", "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86",
    "qemu-utils", "python3-libvirt", "python3-requests", "python3-etcd3gw", "python3-yaml",
    "python3-prometheus-client", "python3-systemd",
    "etcd-client", "iproute2", "kmod", "procps", "sudo", "iputils-ping", "netbase", "dnsmasq-base",
    "e2fsprogs", "ca-certificates", "less", "zstd",
)

# Host commands the tool runs, and the Debian package that provides each.
HOST_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "etcd": "etcd-server",
    "mount": "mount",
}
BUILD_TOOLS = ("debootstrap", "mkfs.ext4", "ssh-keygen", "mount")
UP_TOOLS = ("qemu-system-x86_64", "qemu-img", "ssh", "ip")

SSH_OPTIONS = (
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
    "-o", "ServerAliveInterval=15",
)
INVENTORY_SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

# Units enabled/disabled in the image.  lvmlockd/sanlock stay off: `lockd` (or Ansible) turns them on.
# libvirtd.service is socket-activated instead of started at boot (saves boot time under TCG).
ENABLE_UNITS = ("systemd-networkd.service", "sltv-testbed-net.service")
DISABLE_UNITS = (
    "systemd-networkd-wait-online.service", "lvmlockd.service", "lvmlocks.service",
    "sanlock.service", "wdmd.service", "libvirtd.service", "libvirt-guests.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_reap.service", "e2scrub_all.timer",
)
# Removed from the image: per-machine identity that must be new in every VM, and apt caches.
REMOVE_GLOBS = ("etc/ssh/ssh_host_*", "var/lib/dbus/machine-id", "var/lib/apt/lists/*", "var/cache/apt/*.bin")

PRIVATE_NET_SCRIPT = """#!/bin/sh
# sltv test bed: give the private NIC (PCI slot 7) the address named on the kernel command line.
set -eu
addr=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in sltv.private_ip=*) addr="${arg#sltv.private_ip=}" ;; esac
done
[ -n "$addr" ] || exit 0
mkdir -p /run/systemd/network
cat > /run/systemd/network/10-sltv-private.network <<EOF
[Match]
Path=pci-0000:00:07.0

[Network]
Address=$addr
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
"""

PRIVATE_NET_UNIT = """[Unit]
Description=sltv test bed: private network address from the kernel command line
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target systemd-networkd.service
Wants=network-pre.target
ConditionKernelCommandLine=sltv.private_ip

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sltv-testbed-net

[Install]
WantedBy=systemd-networkd.service
"""


class TestbedError(Exception):
    """A failure to report to the user (no traceback)."""


def log(message):
    print("[testbed %s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Settings and paths
# ---------------------------------------------------------------------------------------------
def parse_size(text):
    """'40G', '512M', '1T' or plain bytes -> bytes (binary units, as qemu-img and truncate)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise TestbedError("bad size %r (use e.g. 40G, 512M)" % (text,))
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(match.group(1)) * 1024 ** power


def env_int(name, default):
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise TestbedError("%s=%r is not a number" % (name, value))


@dataclass
class Paths:
    """Where the tool keeps things: the image cache (shared) and one test bed's state."""

    state: Path
    cache: Path

    @classmethod
    def from_env(cls):
        state = Path(os.environ.get("SLTV_TESTBED_DIR") or DEFAULT_STATE_DIR).absolute()
        cache = Path(os.environ.get("SLTV_TESTBED_CACHE") or DEFAULT_CACHE_DIR).absolute()
        for path in (state, cache):
            # the paths end up in QEMU options (',' separates them) and in the INI inventory
            if re.search(r"[\s,'\"]", str(path)):
                raise TestbedError("%s: no spaces, commas or quotes allowed in the path" % path)
        return cls(state, cache)

    @property
    def key(self):
        # with the cache, because the public key is baked into the image
        return self.cache / "id_ed25519"

    @property
    def images(self):
        return self.cache / "images"

    @property
    def config(self):
        return self.state / "testbed.json"

    @property
    def inventory(self):
        return self.state / "inventory.ini"

    @property
    def shared(self):
        return self.state / "shared.raw"

    @property
    def etcd_data(self):
        return self.state / "etcd"

    @property
    def etcd_pid(self):
        return self.state / "etcd.pid"

    @property
    def etcd_log(self):
        return self.state / "etcd.log"

    def overlay(self, i):
        return self.state / ("vm%d.qcow2" % i)

    def pidfile(self, i):
        return self.state / ("vm%d.pid" % i)

    def console(self, i):
        return self.state / ("vm%d.console.log" % i)

    def qemu_log(self, i):
        return self.state / ("vm%d.qemu.log" % i)


@dataclass
class Image:
    """A built base image: base.raw plus the kernel and initrd taken from it."""

    path: Path

    @property
    def base(self):
        return self.path / "base.raw"

    @property
    def kernel(self):
        return self.path / "vmlinuz"

    @property
    def initrd(self):
        return self.path / "initrd.img"

    def complete(self):
        return all(p.is_file() for p in (self.base, self.kernel, self.initrd, self.path / "recipe.json"))


@dataclass
class VmSpec:
    """Everything that makes VM i: the pure input of qemu_argv()."""

    index: int
    ssh_port: int
    mem_mib: int
    cpus: int
    accel: str
    tap: str

    @property
    def name(self):
        return "vm%d" % self.index

    @property
    def private_ip(self):
        return private_ip(self.index)

    @property
    def mac(self):
        return "52:54:00:12:34:%02x" % self.index

    @property
    def private_mac(self):
        return "52:54:00:77:00:%02x" % self.index


def private_ip(i):
    return "%s.%d" % (PRIVATE_PREFIX, i)


def ssh_port(base_port, i):
    return base_port + i


def etcd_peer_port(client_port):
    # etcd insists on a peer listener; keep it next to the client port, away from 2380
    return client_port + 10


def state_tag(state_dir):
    """Short tag that keeps the netns/tap names of two state dirs apart (tap names: 15 chars max)."""
    return hashlib.sha256(str(state_dir).encode()).hexdigest()[:4]


def netns_name(state_dir):
    return "sltvtb-%s" % state_tag(state_dir)


def tap_name(state_dir, i):
    return "sltvtb%sv%d" % (state_tag(state_dir), i)


# ---------------------------------------------------------------------------------------------
# Small process helpers
# ---------------------------------------------------------------------------------------------
def find_tool(name):
    """A command on PATH or in the sbin directories (root tools are there when PATH lacks them)."""
    extra = "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=os.environ.get("PATH", "/usr/bin:/bin") + ":" + extra)


def tool(name):
    path = find_tool(name)
    if not path:
        raise TestbedError("%s not found; run: python3 %s deps" % (name, sys.argv[0]))
    return path


def run(argv, check=True, capture=True, **kwargs):
    """subprocess.run with argv lists only; a failure names the command and shows its output."""
    if capture:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
    result = subprocess.run(argv, check=False, text=True, **kwargs)
    if check and result.returncode != 0:
        output = (result.stdout or "").strip().splitlines()[-20:]
        raise TestbedError("command failed (exit %d): %s\n%s" % (result.returncode, shlex.join(argv), "\n".join(output)))
    return result


def tail(path, lines=30):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(%s)" % exc
    return "\n".join(text.splitlines()[-lines:])


def require_root():
    if os.geteuid() != 0:
        raise TestbedError("run as root (debootstrap, mounts, network namespaces and taps need it)")


@contextlib.contextmanager
def file_lock(path):
    """Serialise tool runs that change the same state (two `up`s, a build and an up, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another testbed run holding %s" % path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------------------------
# Host dependencies
# ---------------------------------------------------------------------------------------------
def missing_packages(commands):
    return sorted({HOST_PACKAGES[c] for c in commands if not find_tool(c)})


def apt_install(packages):
    """apt-get update once, then install; waits for a dpkg lock held by someone else."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    log("apt-get install %s" % " ".join(packages))
    run([tool("apt-get")] + lock_wait + ["update", "-qq"], env=env)
    run([tool("apt-get")] + lock_wait + ["install", "-y", "-qq", "--no-install-recommends"] + list(packages), env=env)


def ensure_tools(commands):
    missing = missing_packages(commands)
    if missing:
        require_root()
        apt_install(missing)
    still = [c for c in commands if not find_tool(c)]
    if still:
        raise TestbedError("still missing after apt-get: %s" % ", ".join(still))


# ---------------------------------------------------------------------------------------------
# The image recipe (pure data, hashed) and its build
# ---------------------------------------------------------------------------------------------
def detect_mirror(sources_texts):
    """The first Debian archive URI in the given apt source files (deb822 or one-line format)."""
    for text in sources_texts:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            uri = None
            if line.startswith("URIs:"):
                uri = line.split()[1] if len(line.split()) > 1 else None
            elif line.startswith("deb "):
                words = re.sub(r"\[[^]]*\]", "", line).split()[1:]    # drop "[arch=amd64 ...]"
                uri = words[0] if words else None
            if uri and re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return None


def host_mirror():
    mirror = os.environ.get("SLTV_TESTBED_MIRROR")
    if mirror:
        return mirror.rstrip("/")
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    texts = []
    for name in files:
        with contextlib.suppress(OSError):
            texts.append(Path(name).read_text(encoding="utf-8"))
    mirror = detect_mirror(texts)
    if not mirror:
        raise TestbedError("no Debian mirror found in /etc/apt; set SLTV_TESTBED_MIRROR")
    return mirror


def security_mirror(mirror):
    return re.sub(r"/debian$", "/debian-security", mirror)


def image_files(mirror, suite, pubkey):
    """Files written into the image: path -> [mode, content]."""
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += ["%s vm%d" % (private_ip(i), i) for i in range(1, MAX_VMS + 1)]   # migration by name
    # ed25519 only: an RSA host key takes many seconds to generate under TCG
    keygen = "[ -e {k} ] || exec /usr/bin/ssh-keygen -q -t ed25519 -N '' -f {k}".format(k=SSH_HOST_KEY)
    dropin = "[Service]\nExecStartPre=\nExecStartPre=/bin/sh -c \"%s\"\nExecStartPre=/usr/sbin/sshd -t\n" % keygen
    return {
        "etc/fstab": [0o644, "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"],
        "etc/hostname": [0o644, "sltv-testbed\n"],      # each VM gets systemd.hostname=vmI
        "etc/hosts": [0o644, "\n".join(hosts) + "\n"],
        "etc/machine-id": [0o444, ""],                 # empty: a new machine-id per VM at first boot
        "etc/resolv.conf": [0o644, "nameserver 10.0.2.3\n"],    # QEMU user-mode DNS
        "root/.ssh/authorized_keys": [0o600, pubkey],
        "etc/ssh/sshd_config.d/sltv-testbed.conf": [0o644, "HostKey %s\nUseDNS no\nPasswordAuthentication no\n" % SSH_HOST_KEY],
        # host keys are deleted from the image: every VM makes its own at first boot
        "etc/systemd/system/ssh.service.d/hostkeys.conf": [0o644, dropin],
        "etc/systemd/network/20-wired.network": [
            0o644, "[Match]\nPath=pci-0000:00:06.0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n"],
        "usr/local/sbin/sltv-testbed-net": [0o755, PRIVATE_NET_SCRIPT],
        "etc/systemd/system/sltv-testbed-net.service": [0o644, PRIVATE_NET_UNIT],
        "etc/modules-load.d/dm.conf": [0o644, "dm_mod\n"],
        "etc/apt/sources.list": [0o644, "deb {m} {s} main\ndeb {m} {s}-updates main\ndeb {x} {s}-security main\n".format(
            m=mirror, s=suite, x=security_mirror(mirror))],
    }


def image_recipe(mirror, suite, pubkey):
    return {
        "version": RECIPE_VERSION,
        "suite": suite,
        "mirror": mirror,
        "packages": list(IMAGE_PACKAGES),
        "files": image_files(mirror, suite, pubkey),
        "enable": list(ENABLE_UNITS),
        "disable": list(DISABLE_UNITS),
        "remove": list(REMOVE_GLOBS),
        "image_size": IMAGE_SIZE,
    }


def recipe_hash(recipe):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_key(paths):
    if not paths.key.exists():
        paths.cache.mkdir(parents=True, exist_ok=True)
        run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "sltv-testbed", "-f", str(paths.key)])
    return Path(str(paths.key) + ".pub").read_text(encoding="utf-8")


def current_image(paths):
    """The image the current recipe describes (built or not), and the recipe."""
    recipe = image_recipe(host_mirror(), SUITE, ensure_key(paths))
    return Image(paths.images / recipe_hash(recipe)), recipe


def parse_mountinfo(text):
    """Mount points listed in /proc/self/mountinfo (octal escapes decoded)."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def mounts_under(directory, mountinfo_text=None):
    if mountinfo_text is None:
        mountinfo_text = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    prefix = str(directory).rstrip("/") + "/"
    return [p for p in parse_mountinfo(mountinfo_text) if p == prefix[:-1] or p.startswith(prefix)]


def safe_rmtree(directory):
    """rm -rf that never descends into a mount (a bind-mounted /dev or /proc inside a rootfs)."""
    for point in sorted(mounts_under(directory), reverse=True):
        run([tool("umount"), "-l", point], check=False)
    left = mounts_under(directory)
    if left:
        raise TestbedError("not deleting %s: still mounted: %s" % (directory, ", ".join(left)))
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def chroot_mounts(root):
    """/proc and /sys inside the rootfs while packages install (kernel postinst, udev...)."""
    mounted = []
    try:
        for fstype, target in (("proc", "proc"), ("sysfs", "sys")):
            point = root / target
            point.mkdir(exist_ok=True)
            run([tool("mount"), "-t", fstype, fstype, str(point)])
            mounted.append(point)
        yield
    finally:
        for point in reversed(mounted):
            if run([tool("umount"), str(point)], check=False).returncode != 0:
                run([tool("umount"), "-l", str(point)], check=False)


def chroot(root, argv, logfile, check=True):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C.UTF-8", "HOME": "/root"}
    with open(logfile, "a", encoding="utf-8") as out:
        out.write("\n$ chroot %s\n" % shlex.join(argv))
        out.flush()
        result = subprocess.run([tool("chroot"), str(root)] + argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if check and result.returncode != 0:
        raise TestbedError("chroot %s failed (exit %d); log %s:\n%s" % (shlex.join(argv), result.returncode, logfile, tail(logfile, 25)))
    return result.returncode


def write_file(root, relpath, mode, content):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()    # e.g. /etc/resolv.conf may be a link; we want a plain file
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)


def debootstrap(rootfs, recipe, logfile):
    argv = [tool("debootstrap"), "--variant=minbase", "--components=main", recipe["suite"], str(rootfs), recipe["mirror"]]
    with open(logfile, "a", encoding="utf-8") as out:
        out.write("$ %s\n" % shlex.join(argv))
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise TestbedError("debootstrap failed (exit %d); log %s:\n%s" % (result.returncode, logfile, tail(logfile, 25)))


def install_packages(rootfs, recipe, logfile):
    # no service may start inside the chroot; dpkg need not fsync every file of a throw-away tree
    write_file(rootfs, "usr/sbin/policy-rc.d", 0o755, "#!/bin/sh\nexit 101\n")
    write_file(rootfs, "etc/dpkg/dpkg.cfg.d/sltv-testbed-unsafe-io", 0o644, "force-unsafe-io\n")
    write_file(rootfs, "etc/apt/sources.list", *recipe["files"]["etc/apt/sources.list"])
    with chroot_mounts(rootfs):
        chroot(rootfs, ["apt-get", "update", "-q"], logfile)
        chroot(rootfs, ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + recipe["packages"], logfile)
        chroot(rootfs, ["apt-get", "clean"], logfile)
    (rootfs / "usr/sbin/policy-rc.d").unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/sltv-testbed-unsafe-io").unlink()


def configure_rootfs(rootfs, recipe, logfile):
    for relpath, (mode, content) in sorted(recipe["files"].items()):
        write_file(rootfs, relpath, mode, content)
    (rootfs / "root/.ssh").chmod(0o700)
    for unit in recipe["enable"]:
        chroot(rootfs, ["systemctl", "enable", unit], logfile)
    for unit in recipe["disable"]:
        chroot(rootfs, ["systemctl", "disable", unit], logfile, check=False)   # absent units are fine
    for pattern in recipe["remove"]:
        for path in glob.glob(str(rootfs / pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)


def extract_boot_files(rootfs, workdir):
    for pattern, name in (("vmlinuz-*", "vmlinuz"), ("initrd.img-*", "initrd.img")):
        found = sorted((rootfs / "boot").glob(pattern))
        if len(found) != 1:
            raise TestbedError("expected one /boot/%s in the image, found %s" % (pattern, [p.name for p in found]))
        shutil.copyfile(found[0], workdir / name)


def make_base_image(rootfs, target, size):
    with open(target, "wb") as handle:
        handle.truncate(size)
    run([tool("mkfs.ext4"), "-q", "-F", "-L", "root", "-d", str(rootfs), str(target)])
    target.chmod(0o444)    # VMs only ever read it, through their qcow2 overlays


def prune_images(paths, keep):
    """Keep the new image and the one before it (VMs may still run on that one)."""
    images = sorted((p for p in paths.images.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for old in images[:-1]:
        log("removing old image %s" % old)
        safe_rmtree(old)
        (paths.cache / ("build-%s.log" % old.name)).unlink(missing_ok=True)


def build(paths, force=False):
    """Build the image for the current recipe unless it is already cached.  Returns the Image."""
    ensure_tools(BUILD_TOOLS)
    image, recipe = current_image(paths)
    if image.complete() and not force:
        log("image %s is up to date" % image.path)
        return image
    require_root()
    with file_lock(paths.cache / "build.lock"):
        if image.complete() and not force:
            return image    # someone else built it while we waited
        return build_image(paths, image, recipe)


def build_image(paths, image, recipe):
    started = time.monotonic()
    workdir = paths.cache / ("build-%s.tmp" % image.path.name)
    logfile = paths.cache / ("build-%s.log" % image.path.name)
    safe_rmtree(workdir)
    workdir.mkdir(parents=True)
    logfile.write_text("", encoding="utf-8")
    rootfs = workdir / "rootfs"
    log("building image %s (log %s)" % (image.path.name, logfile))
    steps = (
        ("debootstrap", lambda: debootstrap(rootfs, recipe, logfile)),
        ("apt-get install", lambda: install_packages(rootfs, recipe, logfile)),
        ("configure", lambda: configure_rootfs(rootfs, recipe, logfile)),
        ("kernel+initrd", lambda: extract_boot_files(rootfs, workdir)),
        ("mkfs.ext4 -d", lambda: make_base_image(rootfs, workdir / "base.raw", recipe["image_size"])),
    )
    try:
        for name, step in steps:
            step_start = time.monotonic()
            step()
            log("  %s: %.1f s" % (name, time.monotonic() - step_start))
        safe_rmtree(rootfs)
        (workdir / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True), encoding="utf-8")
        if image.path.exists():
            safe_rmtree(image.path)     # --force rebuild of the same recipe
        paths.images.mkdir(parents=True, exist_ok=True)
        os.rename(workdir, image.path)  # atomic: the image is complete or absent
    finally:
        if workdir.exists():
            safe_rmtree(workdir)
    prune_images(paths, image.path)
    used = os.stat(image.base).st_blocks * 512
    log("image built in %.1f s: %s (%.2f GiB used)" % (time.monotonic() - started, image.path, used / 1024 ** 3))
    return image


# ---------------------------------------------------------------------------------------------
# QEMU
# ---------------------------------------------------------------------------------------------
def kernel_cmdline(vm):
    return "root=/dev/vda rw console=ttyS0 systemd.hostname=%s sltv.private_ip=%s/%d" % (
        vm.name, vm.private_ip, PRIVATE_PREFIXLEN)


def accel_args(accel):
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # TCG: -cpu max exposes SVM/VMX, so nested KVM works inside the VMs
    return ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]


def qemu_argv(vm, image, paths, qemu="qemu-system-x86_64"):
    """The QEMU command of one VM (pure: no file or process is touched)."""
    return [
        # -nodefaults: no VGA, CD-ROM or default NIC for the guest to probe (boot time under TCG)
        qemu, "-name", vm.name, "-nodefaults", "-machine", "q35", *accel_args(vm.accel),
        "-m", str(vm.mem_mib), "-smp", str(vm.cpus),
        "-display", "none", "-monitor", "none", "-serial", "file:%s" % paths.console(vm.index),
        "-daemonize", "-pidfile", str(paths.pidfile(vm.index)),
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", kernel_cmdline(vm),
        "-drive", "file=%s,format=qcow2,if=none,id=root0" % paths.overlay(vm.index),
        "-device", "virtio-blk-pci,drive=root0,serial=root0,addr=%s" % PCI_ROOT,
        # the fake SAN LUN: every VM writes it, so no host-side locking and no host page cache
        "-drive", "file=%s,format=raw,if=none,id=shared0,cache=none,file.locking=off" % paths.shared,
        "-device", "virtio-blk-pci,drive=shared0,share-rw=on,serial=shared0,addr=%s" % PCI_SHARED,
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22" % vm.ssh_port,
        "-device", "virtio-net-pci,netdev=net0,mac=%s,addr=%s" % (vm.mac, PCI_NIC),
        "-netdev", "tap,id=priv0,ifname=%s,script=no,downscript=no" % vm.tap,
        "-device", "virtio-net-pci,netdev=priv0,mac=%s,addr=%s" % (vm.private_mac, PCI_PRIVATE),
        "-device", "virtio-rng-pci,addr=%s" % PCI_RNG,     # entropy for sshd host keys at boot
    ]


def read_cmdline(pid, proc_root="/proc"):
    try:
        raw = Path(proc_root, str(pid), "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def option_value(argv, option):
    for k, arg in enumerate(argv[:-1]):
        if arg == option:
            return argv[k + 1]
    return None


def is_our_vm(argv, i, paths):
    """Is this command line our QEMU of VM i?  (a PID in a stale pidfile may belong to anyone now)"""
    return (bool(argv) and os.path.basename(argv[0]).startswith("qemu-system")
            and option_value(argv, "-name") == "vm%d" % i
            and option_value(argv, "-pidfile") == str(paths.pidfile(i)))


def is_our_etcd(argv, paths):
    return bool(argv) and os.path.basename(argv[0]) == "etcd" and option_value(argv, "--data-dir") == str(paths.etcd_data)


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def vm_pid(paths, i, proc_root="/proc"):
    """PID of our running VM i, or None."""
    pid = read_pid(paths.pidfile(i))
    if pid and is_our_vm(read_cmdline(pid, proc_root), i, paths):
        return pid
    return None


def running_vms(paths):
    return [i for i in range(1, MAX_VMS + 1) if vm_pid(paths, i)]


def process_uptime(pid):
    """Seconds since the process started (from /proc/PID/stat and the boot time)."""
    stat = Path("/proc/%d/stat" % pid).read_text(encoding="utf-8")
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text(encoding="utf-8").splitlines() if line.startswith("btime"))
    return time.time() - (btime + start_ticks / os.sysconf("SC_CLK_TCK"))


def process_rss_mib(pid):
    for line in Path("/proc/%d/status" % pid).read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def busy_ports(ports):
    return [p for p in ports if not port_is_free(p)]


def probe_kvm(image, paths):
    """Can /dev/kvm run this kernel?  (a PVM /dev/kvm exists but aborts or hangs a stock kernel)"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    console = paths.state / "kvm-probe.log"
    console.unlink(missing_ok=True)
    argv = [tool("qemu-system-x86_64"), "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
            "-display", "none", "-monitor", "none", "-serial", "file:%s" % console, "-no-reboot",
            "-kernel", str(image.kernel), "-append", "console=ttyS0 panic=-1 root=/dev/null"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    booted = False
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if "Linux version" in console.read_text(encoding="utf-8", errors="replace"):
                booted = True
                break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return booted


def pick_accel(requested, image, paths):
    if requested in ("kvm", "tcg"):
        return requested
    return "kvm" if probe_kvm(image, paths) else "tcg"


# ---------------------------------------------------------------------------------------------
# Private VM-to-VM network: a bridge inside a network namespace of our own.  QEMU creates each VM's
# tap in the root namespace; we then move it into the namespace and enslave it to the bridge.
# Nothing is routed to any real network and no multicast socket is used.
# ---------------------------------------------------------------------------------------------
def netns_exists(name):
    return os.path.exists("/run/netns/%s" % name)


def ensure_private_net(paths):
    ns = netns_name(paths.state)
    if not netns_exists(ns):
        ip = tool("ip")
        run([ip, "netns", "add", ns])
        run([ip, "-n", ns, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run([ip, "-n", ns, "link", "set", "br0", "up"])
        log("private network: bridge br0 in network namespace %s" % ns)
    return ns


def attach_tap(paths, i):
    ip = tool("ip")
    ns, tap = netns_name(paths.state), tap_name(paths.state, i)
    run([ip, "link", "set", tap, "netns", ns])
    run([ip, "-n", ns, "link", "set", tap, "master", "br0", "up"])


def remove_private_net(paths):
    ns = netns_name(paths.state)
    if netns_exists(ns):
        run([tool("ip"), "netns", "delete", ns])    # also destroys any tap still inside
        log("private network namespace %s removed" % ns)


# ---------------------------------------------------------------------------------------------
# etcd on this machine's loopback (the VMs reach it at 10.0.2.2)
# ---------------------------------------------------------------------------------------------
def etcd_argv(paths, port):
    peer = etcd_peer_port(port)
    return [
        "etcd", "--name", "sltv-testbed", "--data-dir", str(paths.etcd_data),
        "--listen-client-urls", "http://127.0.0.1:%d" % port, "--advertise-client-urls", "http://127.0.0.1:%d" % port,
        "--listen-peer-urls", "http://127.0.0.1:%d" % peer, "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
        "--initial-cluster", "sltv-testbed=http://127.0.0.1:%d" % peer,
    ]


def etcd_pid(paths):
    pid = read_pid(paths.etcd_pid)
    if pid and is_our_etcd(read_cmdline(pid), paths):
        return pid
    return None


def http_get(host, port, path, timeout=2.0):
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def etcd_healthy(port):
    try:
        status, body = http_get("127.0.0.1", port, "/health")
    except OSError:
        return False
    return status == 200 and '"true"' in body


def start_etcd(paths, port):
    if etcd_pid(paths):
        log("etcd already running (pid %d)" % etcd_pid(paths))
        return
    busy = busy_ports([port, etcd_peer_port(port)])
    if busy:
        raise TestbedError("etcd: port(s) %s on 127.0.0.1 already in use; choose another with --etcd-port" % busy)
    argv = etcd_argv(paths, port)
    argv[0] = tool("etcd")
    paths.etcd_data.mkdir(parents=True, exist_ok=True)
    with open(paths.etcd_log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    paths.etcd_pid.write_text("%d\n" % proc.pid, encoding="utf-8")
    deadline = time.monotonic() + 30
    while not etcd_healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TestbedError("etcd did not become healthy: %s\n%s" % (shlex.join(argv), tail(paths.etcd_log, 20)))
        time.sleep(0.2)
    log("etcd pid %d on 127.0.0.1:%d (VMs: http://%s:%d)" % (proc.pid, port, HOST_FROM_VM, port))


def stop_pid(pid, still_ours, grace):
    """SIGTERM, wait up to grace seconds, then SIGKILL; only while still_ours() says it is ours."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        if not still_ours():
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while still_ours() and time.monotonic() < deadline:
            time.sleep(0.2)
    return not still_ours()


def stop_etcd(paths):
    pid = etcd_pid(paths)
    if pid:
        stop_pid(pid, lambda: etcd_pid(paths) == pid, 10)
        log("etcd (pid %d) stopped" % pid)
    paths.etcd_pid.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# SSH
# ---------------------------------------------------------------------------------------------
def ssh_argv(key, port, remote=(), tty=False):
    argv = ["ssh", "-i", str(key), *SSH_OPTIONS, "-p", str(port)]
    if tty:
        argv.append("-t")
    argv.append("root@127.0.0.1")
    if remote:
        argv += ["--", *remote]
    return argv


def vm_ssh(cfg, paths, i, script, timeout=120, check=True):
    """Run a shell script on VM i (sent on stdin, so nothing needs quoting); returns stdout."""
    argv = ssh_argv(paths.key, ssh_port(cfg["base_port"], i), ["sh", "-s"])
    argv[0] = tool("ssh")
    try:
        result = subprocess.run(argv, input=script, text=True, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TestbedError("vm%d: ssh timed out after %d s" % (i, timeout))
    if check and result.returncode != 0:
        raise TestbedError("vm%d: remote script failed (exit %d):\n%s%s" % (i, result.returncode, result.stdout, result.stderr))
    return result.stdout


def ssh_ready(paths, port):
    argv = ssh_argv(paths.key, port, ["true"])
    argv[0] = tool("ssh")
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def parallel(function, items):
    """function(item) for every item at once; returns {item: result}; raises the first error."""
    items = list(items)
    if not items:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = {item: pool.submit(function, item) for item in items}
        errors = [f.exception() for f in futures.values() if f.exception()]
        if errors:
            raise TestbedError("\n".join(str(e) for e in errors))
        return {item: f.result() for item, f in futures.items()}


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------
def render_inventory(vms, base_port, key, etcd_port=None):
    """INI inventory: group hypervisors, one line per VM, connection + sltv vars in the group."""
    lines = ["# sltv.core test bed, written by tests/testbed/testbed.py up", "[hypervisors]"]
    for i in vms:
        lines.append("vm%d ansible_host=127.0.0.1 ansible_port=%d sltv_host_id=%d sltv_private_ip=%s" % (
            i, ssh_port(base_port, i), i, private_ip(i)))
    lines += [
        "",
        "[hypervisors:vars]",
        "ansible_user=root",
        "ansible_ssh_private_key_file=%s" % key,
        "ansible_ssh_common_args='%s'" % INVENTORY_SSH_ARGS,
        "ansible_python_interpreter=/usr/bin/python3",
        "sltv_shared_disk=%s" % SHARED_DISK,
    ]
    if etcd_port:
        lines.append("sltv_etcd_endpoint=http://%s:%d" % (HOST_FROM_VM, etcd_port))
    return "\n".join(lines) + "\n"


def write_inventory(paths, cfg):
    text = render_inventory(cfg["vms"], cfg["base_port"], paths.key, cfg.get("etcd_port"))
    paths.inventory.write_text(text, encoding="utf-8")
    return paths.inventory


# ---------------------------------------------------------------------------------------------
# The test bed's recorded configuration (so status/ssh/down need no flags)
# ---------------------------------------------------------------------------------------------
def load_config(paths):
    try:
        return json.loads(paths.config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def require_config(paths):
    cfg = load_config(paths)
    if not cfg:
        raise TestbedError("no test bed in %s (run: up)" % paths.state)
    return cfg


def save_config(paths, cfg):
    tmp = paths.config.with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, paths.config)


# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------
def ensure_shared(paths, size, wipe):
    if wipe and paths.shared.exists():
        if running_vms(paths):
            raise TestbedError("--wipe-shared: VMs are running; run down first")
        paths.shared.unlink()
    if not paths.shared.exists():
        with open(paths.shared, "wb") as handle:
            handle.truncate(size)    # sparse
        log("new shared LUN %s (%.0f GiB, sparse)" % (paths.shared, size / 1024 ** 3))
    elif paths.shared.stat().st_size != size:
        log("keeping shared LUN %s (%.1f GiB; --wipe-shared recreates it)" % (paths.shared, paths.shared.stat().st_size / 1024 ** 3))


def vm_failure(vm_name, paths, i, argv, reason):
    return TestbedError("%s: %s\ncommand: %s\nqemu output: %s\n--- console tail (%s) ---\n%s" % (
        vm_name, reason, shlex.join(argv), tail(paths.qemu_log(i), 5) or "(none)", paths.console(i), tail(paths.console(i), 30)))


def start_vm(paths, image, vm):
    """Create the overlay and start QEMU (daemonized); returns the argv used."""
    i = vm.index
    for path in (paths.overlay(i), paths.console(i), paths.pidfile(i)):
        path.unlink(missing_ok=True)
    run([tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", str(image.base), "-F", "raw", str(paths.overlay(i))])
    argv = qemu_argv(vm, image, paths, tool("qemu-system-x86_64"))
    with open(paths.qemu_log(i), "w", encoding="utf-8") as out:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not vm_pid(paths, i):
        raise vm_failure(vm.name, paths, i, argv, "QEMU did not start (exit %d)" % result.returncode)
    attach_tap(paths, i)
    log("%s started: pid %d, ssh 127.0.0.1:%d, private %s" % (vm.name, vm_pid(paths, i), vm.ssh_port, vm.private_ip))
    return argv


def wait_ssh(paths, vm, argv, started, timeout):
    """Seconds from QEMU start until SSH answers; a dead QEMU or a timeout names the VM."""
    while True:
        if not vm_pid(paths, vm.index):
            raise vm_failure(vm.name, paths, vm.index, argv, "QEMU exited while booting")
        if ssh_ready(paths, vm.ssh_port):
            elapsed = time.monotonic() - started
            log("%s: SSH up %.1f s after start" % (vm.name, elapsed))
            return elapsed
        if time.monotonic() - started > timeout:
            raise vm_failure(vm.name, paths, vm.index, argv, "no SSH after %d s" % timeout)
        time.sleep(1)


def up(paths, args):
    require_root()
    if not 1 <= args.count <= MAX_VMS:
        raise TestbedError("N must be 1..%d" % MAX_VMS)
    ensure_tools(BUILD_TOOLS + UP_TOOLS + (("etcd",) if args.etcd else ()))   # one apt-get run on a fresh machine
    image = build(paths)
    paths.state.mkdir(parents=True, exist_ok=True)
    with file_lock(paths.state / "lock"):
        total_start = time.monotonic()
        old = load_config(paths) or {}
        running = running_vms(paths)
        if running and old.get("base_port", args.base_port) != args.base_port:
            raise TestbedError("VMs %s run with base port %s; run down first" % (running, old.get("base_port")))
        vms = sorted(set(running) | set(range(1, args.count + 1)))
        to_start = [i for i in vms if i not in running]
        busy = busy_ports([ssh_port(args.base_port, i) for i in to_start])
        if busy:
            raise TestbedError("SSH port(s) %s on 127.0.0.1 already in use; choose another --base-port" % busy)
        ensure_shared(paths, parse_size(args.shared_size), args.wipe_shared)
        if running and old.get("image") and Image(Path(old["image"])).complete():
            image = Image(Path(old["image"]))   # VMs added to a running test bed use its image
        accel = old.get("accel") if running else pick_accel(args.accel, image, paths)
        log("accelerator: %s" % accel)
        cfg = {"vms": vms, "base_port": args.base_port, "etcd_port": args.etcd_port if args.etcd else None,
               "accel": accel, "image": str(image.path), "mem_mib": args.mem, "cpus": args.cpus}
        save_config(paths, cfg)
        if args.etcd:
            start_etcd(paths, args.etcd_port)
        ensure_private_net(paths)
        specs = {i: VmSpec(i, ssh_port(args.base_port, i), args.mem, args.cpus, accel, tap_name(paths.state, i)) for i in to_start}
        started, argvs = {}, {}
        for i in to_start:
            started[i] = time.monotonic()
            argvs[i] = start_vm(paths, image, specs[i])
        times = parallel(lambda i: wait_ssh(paths, specs[i], argvs[i], started[i], args.timeout), to_start)
        if to_start:
            log("boot to SSH: %s" % ", ".join("vm%d %.1f s" % (i, times[i]) for i in to_start))
        inventory = write_inventory(paths, cfg)
        if args.check:
            check(paths, cfg)
        log("test bed up in %.1f s" % (time.monotonic() - total_start))
    print(inventory)


# ---------------------------------------------------------------------------------------------
# check: the things the tests rely on, from inside every VM
# ---------------------------------------------------------------------------------------------
def check_script(cfg, i):
    """Shell script printing one 'name: ok|FAIL detail' line per check."""
    lines = [
        "r() { if out=$(\"$@\" 2>&1); then echo \"ok\"; else echo \"FAIL $(echo $out | tail -c 200)\"; fi; }",
        "echo \"hostname: $(hostname)\"",
        "echo \"shared disk: $(r test -b %s)\"" % SHARED_DISK,
        "echo \"device-mapper: $(r dmsetup version)\"",
        "echo \"nested kvm: $(r test -c /dev/kvm)\"",
    ]
    if cfg.get("etcd_port"):
        probe = ("import http.client as h; c = h.HTTPConnection(%r, %d, timeout=5); c.request('GET', '/version'); "
                 "r = c.getresponse(); assert r.status == 200, r.status; print(r.read().decode())") % (HOST_FROM_VM, cfg["etcd_port"])
        lines.append("echo \"etcd %s:%d: $(r python3 -c %s)\"" % (HOST_FROM_VM, cfg["etcd_port"], shlex.quote(probe)))
    for peer in cfg["vms"]:
        if peer != i:
            # retry: the peer may have answered SSH a moment before its private address came up
            lines.append("echo \"ping vm%d %s: $(r sh -c %s)\"" % (
                peer, private_ip(peer), shlex.quote("for n in 1 2 3 4 5; do ping -c1 -W2 %s && exit 0; sleep 1; done; exit 1" % private_ip(peer))))
    return "\n".join(lines) + "\n"


def check(paths, cfg=None):
    cfg = cfg or require_config(paths)
    vms = running_vms(paths)
    if not vms:
        raise TestbedError("no VM is running")
    results = parallel(lambda i: vm_ssh(cfg, paths, i, check_script(cfg, i), timeout=90), vms)
    failed = False
    for i in vms:
        for line in results[i].strip().splitlines():
            log("vm%d %s" % (i, line))
            failed |= "FAIL" in line
    if failed:
        raise TestbedError("check failed (see above)")


# ---------------------------------------------------------------------------------------------
# status, lockd, down, inventory, ssh
# ---------------------------------------------------------------------------------------------
def status(paths):
    cfg = load_config(paths) or {}
    vms = running_vms(paths)
    if not vms:
        print("no VM running (state %s)" % paths.state)
    for i in vms:
        pid = vm_pid(paths, i)
        print("vm%d running: pid %d, ssh 127.0.0.1:%d, private %s, up %.0f s, rss %.0f MiB" % (
            i, pid, ssh_port(cfg.get("base_port", DEFAULT_BASE_PORT), i), private_ip(i), process_uptime(pid), process_rss_mib(pid)))
    pid = etcd_pid(paths)
    if pid:
        port = cfg.get("etcd_port")
        print("etcd running: pid %d, 127.0.0.1:%s, %s" % (pid, port, "healthy" if port and etcd_healthy(port) else "NOT healthy"))
    else:
        print("etcd not running")
    print("private network namespace %s: %s" % (netns_name(paths.state), "present" if netns_exists(netns_name(paths.state)) else "absent"))


LOCKD_SCRIPT = """set -e
sed -i 's/^\\(\\s*\\)#\\?\\s*use_lvmlockd = [01]$/\\1use_lvmlockd = 1/' /etc/lvm/lvm.conf
printf 'local {\\n\\thost_id = %(host_id)d\\n}\\n' > /etc/lvm/lvmlocal.conf
systemctl enable --now sanlock lvmlockd lvmlocks >/dev/null
echo "$(lvmconfig global/use_lvmlockd) $(lvmconfig local/host_id) sanlock=$(systemctl is-active sanlock) lvmlockd=$(systemctl is-active lvmlockd)"
"""


def lockd(paths):
    """lvmlockd + sanlock on every running VM, host_id = VM number (unique, 1..2000)."""
    cfg = require_config(paths)
    vms = running_vms(paths)
    if not vms:
        raise TestbedError("no VM is running")
    started = time.monotonic()
    results = parallel(lambda i: vm_ssh(cfg, paths, i, LOCKD_SCRIPT % {"host_id": i}, timeout=180), vms)
    for i in vms:
        log("vm%d: %s" % (i, results[i].strip()))
    log("lockd configured in %.1f s" % (time.monotonic() - started))


# sanlock/lvmlockd keep the VM from powering off while lockspaces are held: release them first
POWEROFF_SCRIPT = "vgchange -an >/dev/null 2>&1; vgchange --lock-stop >/dev/null 2>&1; echo poweroff-requested; systemctl poweroff\n"


def stop_vm(paths, cfg, i):
    """Clean poweroff over SSH, then SIGTERM/SIGKILL if QEMU is still there; returns seconds."""
    started = time.monotonic()
    pid = vm_pid(paths, i)
    if pid:
        asked = False
        with contextlib.suppress(TestbedError):
            asked = "poweroff-requested" in vm_ssh(cfg, paths, i, POWEROFF_SCRIPT, timeout=60, check=False)
        # a VM that could not be asked (still booting, hung) is killed at once
        deadline = time.monotonic() + (90 if asked else 0)
        while vm_pid(paths, i) == pid and time.monotonic() < deadline:
            time.sleep(0.5)
        if vm_pid(paths, i) == pid:
            log("vm%d %s; killing pid %d" % (i, "did not power off in 90 s" if asked else "not reachable by SSH", pid))
            stop_pid(pid, lambda: vm_pid(paths, i) == pid, 10)
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline + 20:
            time.sleep(0.2)    # let the process finish exiting (it still holds the overlay)
        log("vm%d (pid %d) stopped in %.1f s" % (i, pid, time.monotonic() - started))
    for path in (paths.overlay(i), paths.pidfile(i)):
        path.unlink(missing_ok=True)
    return time.monotonic() - started


def holds_files_under(pid, directories, proc_root="/proc"):
    """True when process ``pid`` has its cwd or an open file under one of ``directories``."""
    links = [os.path.join(proc_root, str(pid), "cwd")]
    with contextlib.suppress(OSError):
        fd_dir = os.path.join(proc_root, str(pid), "fd")
        links += [os.path.join(fd_dir, fd) for fd in os.listdir(fd_dir)]
    for link in links:
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if any(target == d or target.startswith(d.rstrip("/") + "/") for d in directories):
                return True
    return False


def leftovers(paths):
    """Processes, mounts and loop devices that still refer to our state or cache directories."""
    ours = (str(paths.state), str(paths.cache))
    found = []
    for entry in os.listdir("/proc"):
        # A process is left behind when it holds a file in our state directory (QEMU its overlay,
        # etcd its data), not when its arguments merely name it (the ansible-playbook calling us),
        # nor when it holds only the shared image cache (the VMs of another test bed's state).
        if entry.isdigit() and int(entry) != os.getpid() and holds_files_under(entry, (str(paths.state),)):
            found.append("process %s: %s" % (entry, shlex.join(read_cmdline(entry))[:150]))
    for directory in ours:
        found += ["mount %s" % p for p in mounts_under(directory)]
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            target = Path(backing).read_text(encoding="utf-8").strip()
            if target.startswith(ours):
                found.append("loop device %s -> %s" % (backing.split("/")[3], target))
    if netns_exists(netns_name(paths.state)):
        found.append("network namespace %s" % netns_name(paths.state))
    found += ["tap %s" % t for t in os.listdir("/sys/class/net") if t.startswith("sltvtb%s" % state_tag(paths.state))]
    return found


def down(paths, purge=False):
    require_root()
    started = time.monotonic()
    with file_lock(paths.state / "lock"):
        cfg = load_config(paths) or {"base_port": DEFAULT_BASE_PORT}
        parallel(lambda i: stop_vm(paths, cfg, i), running_vms(paths))
        for i in range(1, MAX_VMS + 1):
            paths.overlay(i).unlink(missing_ok=True)
        stop_etcd(paths)
        remove_private_net(paths)
        paths.inventory.unlink(missing_ok=True)
        paths.config.unlink(missing_ok=True)
        left = leftovers(paths)
        if purge:
            safe_rmtree(paths.state)
            log("purged %s (shared LUN and state)" % paths.state)
    for item in left:
        log("LEFT BEHIND: %s" % item)
    log("down in %.1f s; %s" % (time.monotonic() - started, "nothing left behind" if not left else "%d item(s) left" % len(left)))
    if left:
        raise TestbedError("down left things behind (see above)")


def show_inventory(paths):
    if not paths.inventory.exists():
        raise TestbedError("no inventory in %s (run: up)" % paths.state)
    print(paths.inventory)
    print(paths.inventory.read_text(encoding="utf-8"), end="")


def ssh_exec(paths, index, command):
    cfg = require_config(paths)
    if not vm_pid(paths, index):
        raise TestbedError("vm%d is not running" % index)
    argv = ssh_argv(paths.key, ssh_port(cfg["base_port"], index), command, tty=not command and sys.stdin.isatty())
    argv[0] = tool("ssh")
    os.execv(argv[0], argv)


def deps():
    require_root()
    packages = sorted(set(HOST_PACKAGES.values()))
    missing = missing_packages(HOST_PACKAGES)
    if missing:
        apt_install(missing)
    log("host packages present: %s" % " ".join(packages))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parser():
    top = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n", 1)[0],
                                  epilog="State: $SLTV_TESTBED_DIR (default %s); image cache: $SLTV_TESTBED_CACHE (default %s)." % (
                                      DEFAULT_STATE_DIR, DEFAULT_CACHE_DIR))
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("deps", help="install the Debian packages the tool needs")
    b = sub.add_parser("build", help="build the VM image (skipped when the cached one matches the recipe)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    u = sub.add_parser("up", help="boot N VMs (build first if needed), start etcd, write the inventory")
    u.add_argument("count", nargs="?", type=int, default=DEFAULT_VMS, help="number of VMs, 1..%d (default %d)" % (MAX_VMS, DEFAULT_VMS))
    u.add_argument("--base-port", type=int, default=env_int("SLTV_TESTBED_BASE_PORT", DEFAULT_BASE_PORT), help="SSH of VM i on 127.0.0.1:BASE+i")
    u.add_argument("--etcd-port", type=int, default=env_int("SLTV_TESTBED_ETCD_PORT", DEFAULT_ETCD_PORT))
    u.add_argument("--no-etcd", dest="etcd", action="store_false", help="do not start etcd")
    u.add_argument("--mem", type=int, default=env_int("SLTV_TESTBED_MEM", DEFAULT_MEM_MIB), help="MiB per VM")
    u.add_argument("--cpus", type=int, default=env_int("SLTV_TESTBED_CPUS", DEFAULT_CPUS), help="vCPUs per VM")
    u.add_argument("--shared-size", default=os.environ.get("SLTV_TESTBED_SHARED_SIZE", DEFAULT_SHARED_SIZE), help="size of a new shared LUN")
    u.add_argument("--wipe-shared", action="store_true", help="recreate the shared LUN (empty)")
    u.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("SLTV_TESTBED_ACCEL", "auto"))
    u.add_argument("--timeout", type=int, default=env_int("SLTV_TESTBED_BOOT_TIMEOUT", DEFAULT_BOOT_TIMEOUT), help="seconds to wait for SSH")
    u.add_argument("--no-check", dest="check", action="store_false", help="skip the health check after boot")
    sub.add_parser("check", help="health check from inside every running VM")
    sub.add_parser("status", help="running VMs and etcd")
    s = sub.add_parser("ssh", help="ssh into VM I (remaining arguments are the remote command)")
    s.add_argument("index", type=int)
    s.add_argument("remote", nargs=argparse.REMAINDER)
    sub.add_parser("lockd", help="switch the running VMs to lvmlockd + sanlock")
    d = sub.add_parser("down", help="stop VMs, etcd and the private network")
    d.add_argument("--purge", action="store_true", help="also delete the shared LUN and the state directory")
    sub.add_parser("inventory", help="print the inventory path and content")
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        paths = Paths.from_env()
        if args.command == "deps":
            deps()
        elif args.command == "build":
            started = time.monotonic()
            build(paths, force=args.force)
            log("build command took %.1f s" % (time.monotonic() - started))
        elif args.command == "up":
            up(paths, args)
        elif args.command == "check":
            check(paths)
        elif args.command == "status":
            status(paths)
        elif args.command == "ssh":
            ssh_exec(paths, args.index, args.remote[1:] if args.remote[:1] == ["--"] else args.remote)
        elif args.command == "lockd":
            lockd(paths)
        elif args.command == "down":
            down(paths, purge=args.purge)
        elif args.command == "inventory":
            show_inventory(paths)
    except TestbedError as exc:
        print("testbed: error: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

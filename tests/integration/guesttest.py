# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny REAL Linux guest for the libvirt integration tests: busybox initramfs, TCG, no root disk.

Why: an ENOSPC pause (``error_policy='stop'``) needs writes issued by a guest; writes injected with
HMP ``qemu-io`` never pause a domain.  This machine's ``/dev/kvm`` cannot run a stock Debian kernel,
so the guest is a ``type='qemu'`` (TCG) domain that boots a Debian kernel straight into an
initramfs made of busybox-static and the few virtio modules it needs.

* ``GuestImage``: kernel + base initramfs, built once and cached in ``SLTV_GUEST_CACHE``
  (default ``/var/tmp/sltv-guest``, a directory per kernel package).  The ``.deb`` files come from
  ``apt-get download`` (the kernel package ``linux-image-amd64`` depends on, and
  ``busybox-static``); nothing is installed on the host.  ``SLTV_GUEST_KERNEL_PACKAGE`` picks
  another kernel package.  The initramfs (newc cpio, uncompressed: faster to unpack under TCG) is
  written here in Python; the modules are loaded with ``insmod`` in dependency order (taken from
  their ``.modinfo depends=``), so no ``modules.dep`` / ``depmod`` is needed.  The bzImage's
  payload is unpacked once to an ELF ``vmlinux``: QEMU boots it through its PVH entry, which skips
  the guest's own decompression (5-9 s under TCG here).  ``sltv.disks=N`` on the kernel command
  line tells /init how many cold-plugged disks to wait for before READY.
* ``GuestDomain``: one domain (kernel, initrd, cmdline, 256 MiB, 1 vCPU, serial 0 to a file, serial 1
  a unix socket = command channel) plus the disks given as XML.  ``start()`` waits for
  ``SLTV-GUEST-READY``; ``wait_for(regex, timeout, since=offset)`` reads the console log;
  ``run(shell_line)`` runs a line in the guest (in the background, output on the console);
  ``destroy()`` destroys + undefines it and removes its files.
* ``busybox_guest`` (pytest fixture, import it into the test module):
  ``busybox_guest(disks=(xml, ...), script=None, name=None, start=True)`` -> started ``GuestDomain``,
  removed after the test; ``guest_image`` (session fixture) is the cached ``GuestImage``.

In the guest (``/bin/sh`` = busybox ash; ``/lib/sltv.sh`` is sourced by the script and by every
``run()`` line):

* ``sltv_disk [SERIAL]``: prints the first data disk (``/dev/vda``, then ``/dev/sda``...) or the one
  whose ``<serial>`` is SERIAL, waiting up to 30 s for it (hot-plugged disks).  NOTE: the guest
  names disks in probe order: the only virtio disk is ``/dev/vda`` in the guest even when its
  libvirt target is ``vdb``.
* ``sltv_dd DEV MIB [SEEK_MIB [ID]]``: ``dd if=/dev/zero of=DEV bs=1M count=MIB seek=SEEK_MIB
  oflag=direct conv=fsync,notrunc``, printing ``SLTV-DD-START dev=DEV count=MIB seek=SEEK_MIB`` and
  then ``SLTV-DD-DONE rc=<rc> bytes=<n>`` (`` id=ID`` appended when ID is given); n counts the full
  1 MiB records written (Debian's busybox dd prints no byte count).

Console markers: ``SLTV-GUEST-DISKS <name>:<bytes>:<serial> ...`` then ``SLTV-GUEST-READY`` once
the modules are loaded, ``SLTV-SCRIPT-DONE rc=<rc>`` after the script, ``SLTV-GUEST-ERROR ...`` on
a failed insmod.

Measured here (Debian 12, libvirt 9.0, QEMU 7.2 TCG, 2 host cores, with other VMs busy): image
build 12-20 s cold (apt-get download ~4 s + streaming the kernel .deb), ~1 s cached; boot to READY
5-13 s (bzImage instead of PVH vmlinux: 15-25 s); a ``run()`` round trip 0.05 s.  The facts for
thin provisioning are in tests/integration/test_guest_harness.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import glob
import hashlib
import io
import lzma
import itertools
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
import zlib

import pytest

import libvirttest
from libvirttest import run, skip_or_fail

try:
    import libvirt
except ImportError:
    libvirt = None

CACHE_DIR = os.environ.get("SLTV_GUEST_CACHE") or "/var/tmp/sltv-guest"
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# what the guest needs: virtio PCI transport, virtio-blk, and virtio-scsi + SCSI disks; the modules
# these depend on are added from their .modinfo
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod")
# module directories kept while streaming through the kernel package (a second pass fetches any
# dependency found elsewhere)
MODULE_DIRS = ("kernel/drivers/virtio/", "kernel/drivers/block/", "kernel/drivers/scsi/", "kernel/lib/",
               "kernel/crypto/", "kernel/arch/x86/crypto/", "kernel/block/")
CMDLINE = "console=ttyS0 quiet panic=-1"
MEMORY_MIB = 256
BOOT_TIMEOUT = 120.0
READY = "SLTV-GUEST-READY"
BUILD_FORMAT = "2"  # bump when what fetch() keeps changes: invalidates the cache

INIT_SCRIPT = r"""#!/bin/sh
# /init of the sltv.core test guest (tests/integration/guesttest.py)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
for mod in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$mod.ko" || echo "SLTV-GUEST-ERROR insmod $mod failed"
done
. /lib/sltv.sh
# wait for the cold-plugged disks (sltv.disks=N on the kernel command line): probing is asynchronous
want=$(sed -n 's/.*sltv\.disks=\([0-9]*\).*/\1/p' /proc/cmdline)
i=0
while [ "$(sltv_disks | wc -w)" -lt "${want:-0}" ]; do
    i=$((i + 1))
    [ $i -le 300 ] || { echo "SLTV-GUEST-ERROR only $(sltv_disks) of ${want} disks after 30 s"; break; }
    sleep 0.1
done
# command channel: ttyS1 stays open from here on (no input lost), every line read runs in the background
exec 3</dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null
(
    while IFS= read -r line <&3; do
        [ -n "$line" ] && (. /lib/sltv.sh; eval "$line") </dev/null 3<&- &
    done
    echo "SLTV-GUEST-ERROR command channel closed"
) &
exec 3<&-
echo "SLTV-GUEST-DISKS $(sltv_disks)"
echo "SLTV-GUEST-READY"
if [ -f /sltv/script.sh ]; then
    sh -c '. /lib/sltv.sh; . /sltv/script.sh' </dev/null
    echo "SLTV-SCRIPT-DONE rc=$?"
fi
while true; do sleep 3600; done
"""

LIB_SCRIPT = r"""# /lib/sltv.sh: helpers of the sltv.core test guest
sltv_disks() {
    for dev in /sys/block/vd* /sys/block/sd*; do
        [ -e "$dev" ] || continue
        name=${dev##*/}
        serial=$(cat "$dev/serial" 2>/dev/null)
        [ -n "$serial" ] || serial=-
        echo -n "$name:$(( $(cat "$dev/size") * 512 )):$serial "
    done
}

sltv_disk() {
    want=$1
    i=0
    while [ $i -lt 300 ]; do
        for dev in /sys/block/vd* /sys/block/sd*; do
            [ -e "$dev" ] || continue
            if [ -z "$want" ] || [ "$(cat "$dev/serial" 2>/dev/null)" = "$want" ]; then
                echo "/dev/${dev##*/}"
                return 0
            fi
        done
        sleep 0.1
        i=$((i + 1))
    done
    echo "SLTV-GUEST-ERROR no disk ${want:-at all}" >&2
    return 1
}

sltv_dd() {
    dev=$1
    count=$2
    seek=${3:-0}
    id=${4:+ id=$4}
    echo "SLTV-DD-START dev=$dev count=$count seek=$seek$id"
    out=$(dd if=/dev/zero of="$dev" bs=1M count="$count" seek="$seek" oflag=direct conv=fsync,notrunc 2>&1)
    rc=$?
    # Debian's busybox dd prints no byte count: full 1 MiB records out (+ partial ones, counted as 0)
    full=$(echo "$out" | sed -n 's/^\([0-9][0-9]*\)+[0-9]* records out.*/\1/p')
    [ $rc -eq 0 ] || echo "$out"
    echo "SLTV-DD-DONE rc=$rc bytes=$(( ${full:-0} * 1048576 ))$id"
}
"""


# --------------------------------------------------------------------------------------- cpio
_INODES = itertools.count(1)


def _cpio_entry(name, mode, data=b"", rdev=(0, 0)):
    """One newc cpio member (header, name, data, each padded to 4 bytes)."""
    name_bytes = name.encode() + b"\0"
    fields = (next(_INODES), mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0, rdev[0], rdev[1],
              len(name_bytes), 0)
    header = b"070701" + b"".join(b"%08X" % field for field in fields)
    out = header + name_bytes
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def cpio_archive(entries):
    """A newc cpio archive from (name, mode, data[, rdev]) tuples; names without a leading slash."""
    parts = [_cpio_entry(*entry) for entry in entries]
    parts.append(_cpio_entry("TRAILER!!!", 0))
    return b"".join(parts)


def script_archive(script):
    """A small cpio archive holding /sltv/script.sh, to append to the base initramfs."""
    return cpio_archive([("sltv", stat.S_IFDIR | 0o755, b""),
                         ("sltv/script.sh", stat.S_IFREG | 0o755, script.encode())])


# ------------------------------------------------------------------------------------- modules
MODINFO_DEPENDS = re.compile(rb"(?:^|\x00)depends=([^\x00]*)\x00")


def module_name(path):
    """Kernel module name of a .ko path (dashes read as underscores, as the kernel does)."""
    base = os.path.basename(path)
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    return base.replace("-", "_")


def decompress_module(path, data):
    if path.endswith(".ko.xz"):
        import lzma
        return lzma.decompress(data)
    if path.endswith(".ko.gz"):
        import gzip
        return gzip.decompress(data)
    if path.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


def module_depends(data):
    match = MODINFO_DEPENDS.search(data)
    if not match or not match.group(1):
        return []
    return [dep.decode().replace("-", "_") for dep in match.group(1).split(b",") if dep]


def load_order(wanted, depends):
    """Modules in wanted plus their dependencies, each after what it depends on."""
    order = []

    def visit(name, stack):
        if name in order:
            return
        if name in stack:
            raise RuntimeError("module dependency loop: %s" % " -> ".join(stack + [name]))
        if name not in depends:
            raise RuntimeError("module %s not found in the kernel package" % name)
        for dep in depends[name]:
            visit(dep, stack + [name])
        order.append(name)

    for name in wanted:
        visit(name, [])
    return order


# ------------------------------------------------------------------------------------- image
def apt_kernel_package():
    """The versioned kernel package that linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64)."""
    forced = os.environ.get("SLTV_GUEST_KERNEL_PACKAGE")
    if forced:
        return forced
    out = run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError("apt-cache depends %s named no linux-image package:\n%s" % (KERNEL_META_PACKAGE, out))


def apt_download(package, directory):
    """apt-get download package into directory; return the .deb path."""
    before = set(glob.glob(os.path.join(directory, "*.deb")))
    proc = subprocess.run(["apt-get", "download", package], cwd=directory, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=600, check=False)
    new = sorted(set(glob.glob(os.path.join(directory, "*.deb"))) - before)
    if proc.returncode != 0 or not new:
        raise RuntimeError("apt-get download %s failed (%d): %s%s"
                           % (package, proc.returncode, proc.stdout, proc.stderr))
    return new[0]


def deb_members(deb):
    """Stream the data tarball of a .deb (``dpkg-deb --fsys-tarfile``): yields (path, bytes) of files."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                path = member.name[2:] if member.name.startswith("./") else member.name
                yield member, path, tar
    finally:
        proc.stdout.close()
        proc.wait()


def pvh_vmlinux(bzimage):
    """The uncompressed ELF kernel inside a bzImage when it has a PVH entry (Xen note 18), else None.

    QEMU boots such an ELF with ``-kernel`` through its PVH option ROM, which skips the in-guest
    decompression of the bzImage: that alone took 5-9 s under TCG here (boot to READY 15-25 s -> 7-12 s).
    """
    try:
        setup_sects = bytearray(bzimage)[0x1f1] or 4
        offset, length = struct.unpack_from("<II", bzimage, 0x248)
        payload = bzimage[(setup_sects + 1) * 512 + offset:(setup_sects + 1) * 512 + offset + length]
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor().decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd"):
            elf = subprocess.run(["zstd", "-dc"], input=payload[:-4], stdout=subprocess.PIPE, check=True).stdout
        else:
            return None
    except (struct.error, IndexError, lzma.LZMAError, zlib.error, OSError, subprocess.SubprocessError):
        return None
    return elf if elf_has_pvh_note(elf) else None


def elf_has_pvh_note(elf):
    """True when an ELF64 file has a PT_NOTE with the Xen note XEN_ELFNOTE_PHYS32_ENTRY (18)."""
    if not elf.startswith(b"\x7fELF\x02\x01"):
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        header = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        p_type, p_offset, p_filesz = header[0], header[2], header[5]
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def read_file(path, binary=False):
    with open(path, "rb" if binary else "r") as handle:
        return handle.read()


def write_file(path, data):
    """Write bytes to path atomically (a temporary file renamed over it)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, path)


class GuestImage(object):
    """Kernel + base initramfs of the test guest, cached in CACHE_DIR/<kernel package>."""

    def __init__(self, cache_dir=CACHE_DIR):
        self.cache_dir = cache_dir
        self.package = None
        self.directory = None
        self.kernel = None
        self.initrd = None
        self.build_seconds = None  # None: found in the cache
        self.modules = []

    def ensure(self):
        """Find the cached kernel, busybox and modules or fetch them, then the initramfs; return self."""
        began = time.monotonic()
        os.makedirs(self.cache_dir, exist_ok=True)  # pytest-xdist workers or two runs may get here at once
        with open(os.path.join(self.cache_dir, "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one builds, the other waits
            try:
                self.package = apt_kernel_package()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                cached = sorted(glob.glob(os.path.join(self.cache_dir, "linux-image-*", "done")))
                if not cached:
                    raise RuntimeError("no cached guest image and no kernel package from apt: %s" % exc)
                self.package = os.path.basename(os.path.dirname(cached[-1]))
            self.directory = os.path.join(self.cache_dir, self.package)
            done = os.path.join(self.directory, "done")
            stamp = "%s %s\n" % (BUILD_FORMAT, ",".join(WANTED_MODULES))
            if not os.path.exists(done) or read_file(done) != stamp:
                self.fetch()
                with open(done, "w") as handle:
                    handle.write(stamp)
                self.build_seconds = time.monotonic() - began
            self.kernel = os.path.join(self.directory, "vmlinux")  # PVH boot: no decompression in the guest
            if not os.path.exists(self.kernel):
                self.kernel = os.path.join(self.directory, "vmlinuz")
            self.modules = read_file(os.path.join(self.directory, "load-order")).split()
            self.initrd = self.assemble()
        return self

    def fetch(self):
        """apt-get download the kernel and busybox-static; keep vmlinuz, busybox and the modules needed."""
        if os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
        os.makedirs(os.path.join(self.directory, "modules"))
        work = tempfile.mkdtemp(prefix="download-", dir=self.directory)
        try:
            kernel_deb = apt_download(self.package, work)
            busybox_deb = apt_download(BUSYBOX_PACKAGE, work)
            busybox = self._busybox(busybox_deb)
            kernel, modules, depends = self._kernel(kernel_deb)
            order = load_order(WANTED_MODULES, depends)
            missing = [name for name in order if name not in modules]
            if missing:
                modules.update(self._kernel_modules(kernel_deb, set(missing)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        write_file(os.path.join(self.directory, "vmlinuz"), kernel)
        vmlinux = pvh_vmlinux(kernel)
        if vmlinux is not None:
            write_file(os.path.join(self.directory, "vmlinux"), vmlinux)
        write_file(os.path.join(self.directory, "busybox"), busybox)
        for name in order:
            write_file(os.path.join(self.directory, "modules", name + ".ko"), modules[name])
        write_file(os.path.join(self.directory, "load-order"), ("\n".join(order) + "\n").encode())

    def assemble(self):
        """The initramfs for the current INIT_SCRIPT/LIB_SCRIPT (cached by content, built in ms)."""
        busybox = read_file(os.path.join(self.directory, "busybox"), binary=True)
        modules = [(name, read_file(os.path.join(self.directory, "modules", name + ".ko"), binary=True))
                   for name in self.modules]
        archive = self.base_archive(busybox, modules)
        path = os.path.join(self.directory, "initrd-%s.cpio" % hashlib.sha256(archive).hexdigest()[:16])
        if not os.path.exists(path):
            write_file(path, archive)
        return path

    @staticmethod
    def _busybox(deb):
        for member, path, tar in deb_members(deb):
            if path == "bin/busybox" and member.isfile():
                return tar.extractfile(member).read()
        raise RuntimeError("no bin/busybox in %s" % deb)

    @staticmethod
    def _kernel(deb):
        """(vmlinuz bytes, {module: bytes} of MODULE_DIRS, {module: [depends]} of every module)."""
        kernel = None
        modules = {}
        depends = {}
        for member, path, tar in deb_members(deb):
            if not member.isfile():
                continue
            if path.startswith("boot/vmlinuz-"):
                kernel = tar.extractfile(member).read()
            elif path.startswith("lib/modules/") and re.search(r"\.ko(\.xz|\.zst|\.gz)?$", path):
                data = decompress_module(path, tar.extractfile(member).read())
                name = module_name(path)
                depends[name] = module_depends(data)
                relative = path.split("/", 3)[3] if path.count("/") >= 3 else path
                if relative.startswith(MODULE_DIRS):
                    modules[name] = data
        if kernel is None:
            raise RuntimeError("no boot/vmlinuz-* in %s" % deb)
        return kernel, modules, depends

    @staticmethod
    def _kernel_modules(deb, names):
        found = {}
        for member, path, tar in deb_members(deb):
            if member.isfile() and path.startswith("lib/modules/") and module_name(path) in names:
                found[module_name(path)] = decompress_module(path, tar.extractfile(member).read())
        return found

    @staticmethod
    def base_archive(busybox, modules):
        directory = stat.S_IFDIR | 0o755
        entries = [(name, directory, b"") for name in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules")]
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox))
        for applet in ("sh", "mount", "insmod", "sleep", "cat", "echo", "dd", "sed", "stty", "mkdir", "ls", "sync",
                       "blockdev", "poweroff"):
            entries.append(("bin/" + applet, stat.S_IFLNK | 0o777, b"busybox"))
        entries.append(("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode()))
        entries.append(("lib/sltv.sh", stat.S_IFREG | 0o644, LIB_SCRIPT.encode()))
        for name, data in modules:
            entries.append(("lib/modules/%s.ko" % name, stat.S_IFREG | 0o644, data))
        entries.append(("lib/modules/load-order", stat.S_IFREG | 0o644,
                        ("\n".join(name for name, _data in modules) + "\n").encode()))
        return cpio_archive(entries)


# ------------------------------------------------------------------------------------- domain
def guest_domain_xml(name, kernel, initrd, console_log, command_socket, disks=(), cmdline=CMDLINE,
                     memory_mib=MEMORY_MIB, domain_type="qemu"):
    """``domain_type`` qemu (TCG: this machine's /dev/kvm cannot run the guest) or kvm (in a test-bed VM)."""
    return (
        "<domain type='{domain_type}'>\n"
        "  <name>{name}</name>\n"
        "  <memory unit='MiB'>{memory}</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type arch='x86_64' machine='pc'>hvm</type>\n"
        "    <kernel>{kernel}</kernel>\n"
        "    <initrd>{initrd}</initrd>\n"
        "    <cmdline>{cmdline}</cmdline>\n"
        "  </os>\n"
        "  <features><acpi/></features>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>destroy</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <controller type='scsi' index='0' model='virtio-scsi'/>\n"
        "    <controller type='usb' model='none'/>\n"
        "    <memballoon model='none'/>\n"
        "    <serial type='file'><source path='{console}'/><target port='0'/></serial>\n"
        "    <serial type='unix'><source mode='bind' path='{socket}'/><target port='1'/></serial>\n"
        "{disks}"
        "  </devices>\n"
        "</domain>\n"
    ).format(domain_type=domain_type, name=name, memory=memory_mib, kernel=kernel, initrd=initrd, cmdline=cmdline,
             console=console_log, socket=command_socket, disks="".join("    %s\n" % disk.strip() for disk in disks))


class GuestError(AssertionError):
    """The guest did not print what was waited for (the message holds the console log)."""


class GuestDomain(object):
    """One test guest: ``start()``, ``wait_for()``, ``run()``, ``console()``, ``destroy()``."""

    def __init__(self, conn, image, name=None, disks=(), script=None, cmdline=CMDLINE, memory_mib=MEMORY_MIB):
        self.conn = conn
        self.image = image
        self.name = name or "%sguest-%s" % (libvirttest.TEST_PREFIX, uuid.uuid4().hex[:8])
        self.workdir = tempfile.mkdtemp(prefix="sltvg-")  # short: the unix socket path must be < 108 bytes
        self.console_log = os.path.join(self.workdir, "console.log")
        self.command_socket = os.path.join(self.workdir, "cmd.sock")
        self.initrd = image.initrd
        if script is not None:
            self.initrd = os.path.join(self.workdir, "initrd.cpio")
            with open(image.initrd, "rb") as base, open(self.initrd, "wb") as out:
                shutil.copyfileobj(base, out)
                out.write(script_archive(script))
        count = sum(ET.fromstring(disk).get("device", "disk") == "disk" for disk in disks)
        cmdline = "%s sltv.disks=%d" % (cmdline, count)
        self.xml = guest_domain_xml(self.name, image.kernel, self.initrd, self.console_log, self.command_socket,
                                    disks, cmdline, memory_mib)
        self.dom = None
        self.sock = None
        self.started_at = None
        self.boot_seconds = None

    def start(self, wait=True, timeout=BOOT_TIMEOUT):
        """Define and start the domain; with wait, return once the guest printed SLTV-GUEST-READY."""
        self.dom = self.conn.defineXML(self.xml)
        self.started_at = time.monotonic()
        self.dom.create()
        if wait:
            self.wait_for(READY, timeout)
            self.boot_seconds = time.monotonic() - self.started_at
        return self

    def console(self):
        try:
            with io.open(self.console_log, "r", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except (IOError, OSError):
            return ""

    def mark(self):
        """The current end of the console log: pass it as since= to wait only for later output."""
        try:
            return os.path.getsize(self.console_log)
        except OSError:
            return 0

    def wait_for(self, pattern, timeout=60.0, since=0):
        """The first match of regex pattern in the console log after byte offset since, waiting up to timeout.

        Raises GuestError (with the console log) on timeout or when the domain stopped running.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_from(since)
            match = regex.search(text)
            if match:
                return match
            if time.monotonic() > deadline:
                raise GuestError("%s: no %r on the console within %.0f s; console:\n%s"
                                 % (self.name, pattern, timeout, self.console()[-4000:]))
            if self.dom is not None and not self.dom.isActive():
                text = self._read_from(since)
                match = regex.search(text)
                if match:
                    return match
                raise GuestError("%s stopped before %r appeared; console:\n%s"
                                 % (self.name, pattern, self.console()[-4000:]))
            time.sleep(0.05)

    def _read_from(self, offset):
        try:
            with open(self.console_log, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except (IOError, OSError):
            return ""

    def run(self, line):
        """Run one shell line in the guest, in the background (helpers of /lib/sltv.sh available)."""
        if "\n" in line:
            raise ValueError("one line only: %r" % line)
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.command_socket)
        self.sock.sendall(line.encode() + b"\n")

    def state(self):
        """(state, reason) of libvirt, e.g. (VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR)."""
        return tuple(self.dom.state())

    def destroy(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        libvirttest.remove_domain(self.conn, self.name)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------- fixtures
def thin_disk_xml(source_dev, target="vdb", bus="virtio", driver_type="qcow2", serial=None):
    """The disk the thin-provisioning tests give the guest: qcow2 on a block device, error_policy='stop'."""
    return ("<disk type='block' device='disk'><driver name='qemu' type='%s' cache='none' io='native' "
            "error_policy='stop'/><source dev='%s'/><target dev='%s' bus='%s'/>%s</disk>"
            % (driver_type, source_dev, target, bus, "<serial>%s</serial>" % serial if serial else ""))


@pytest.fixture(scope="session")
def guest_image():
    """The cached GuestImage (built on first use: apt-get download of the kernel and busybox-static)."""
    libvirttest.require_libvirt()
    try:
        return GuestImage().ensure()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        skip_or_fail("cannot build the test guest (apt-get download %s, %s): %s"
                     % (KERNEL_META_PACKAGE, BUSYBOX_PACKAGE, exc))
    return None


@pytest.fixture
def busybox_guest(libvirt_session, guest_image, loop_device):  # pylint: disable=redefined-outer-name
    """``busybox_guest(disks=(), script=None, name=None, start=True)`` -> GuestDomain (started, READY).

    Depends on loop_device so that the guests go before the loop devices.
    """
    del loop_device
    guests = []

    def make(disks=(), script=None, name=None, start=True, **kwargs):
        guest = GuestDomain(libvirt_session.connection(), guest_image, name=name, disks=disks, script=script,
                            **kwargs)
        guests.append(guest)
        if start:
            guest.start()
        return guest

    try:
        yield make
    finally:
        for guest in guests:
            guest.conn = libvirt_session.connection()
            guest.destroy()


class GuestEventRecorder(libvirttest.EventRecorder):
    """EventRecorder plus IO_ERROR_REASON ("io-error": dev, path, action, reason) and LIFECYCLE
    ("lifecycle": event, detail) events."""

    def __init__(self, conn):
        super(GuestEventRecorder, self).__init__(conn)
        self.callback_ids.append(conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self._io_error, None))
        self.callback_ids.append(conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None))

    def _io_error(self, conn, dom, path, dev, action, reason, opaque):  # pylint: disable=unused-argument
        self._add({"kind": "io-error", "domain": dom.name(), "path": path, "dev": dev, "action": action,
                   "reason": reason})

    def _lifecycle(self, conn, dom, event, detail, opaque):  # pylint: disable=unused-argument
        self._add({"kind": "lifecycle", "domain": dom.name(), "event": event, "detail": detail})

    def of(self, domain, kind=None):
        """The events of one domain (and kind) so far."""
        with self.cond:
            return [event for event in self.events
                    if event["domain"] == domain and (kind is None or event["kind"] == kind)]


@pytest.fixture
def guest_events(libvirt_session):
    """A GuestEventRecorder on the session's connection, closed after the test."""
    recorder = GuestEventRecorder(libvirt_session.connection())
    try:
        yield recorder
    finally:
        recorder.close()


def source_index(dom, target):
    """The ``<source index=...>`` of the disk target in the live XML (for ``target[index]`` names)."""
    for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk"):
        if disk.find("target").get("dev") == target:
            return int(disk.find("source").get("index"))
    raise KeyError("no disk %s in %s" % (target, dom.name()))


def block_stats(conn, dom, backing=True):
    """The ``block.<n>.*`` items of getAllDomainStats for dom, by disk: {"vdb": {"physical": ...}, ...}.

    Each layer is under ``name[backingIndex]`` (the top layer too: it carries its ``<source index>``),
    and the top layer (first entry of a name) also under the plain name.
    """
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING if backing else 0
    stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_BLOCK, flags)[0][1]
    by_index = {}
    for key, value in stats.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "block" and parts[1].isdigit():
            by_index.setdefault(int(parts[1]), {})[parts[2]] = value
    disks = {}
    for _number, entry in sorted(by_index.items()):
        name = entry.get("name")
        disks.setdefault(name, entry)
        if "backingIndex" in entry:
            disks["%s[%d]" % (name, entry["backingIndex"])] = entry
    return disks

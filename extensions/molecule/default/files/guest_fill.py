# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real guest fills its hot-attached thin disk; print what happened as one JSON object.

Runs on a test-bed VM, beside the busybox guest of tests/integration/guesttest.py (booted there
under nested KVM by ``guest_fill.py boot``; the kernel, initramfs and domain XML come from
tests/testbed/guest_bundle.py). Only the standard library and the libvirt bindings.

  guest_fill.py boot DOMAIN_XML CONSOLE_LOG
      define and start the domain, wait for SLTV-GUEST-READY
  guest_fill.py fill DOMAIN LV TOTAL_MIB CONSOLE_LOG SOCKET [--slice-mib N] [--timeout S]
      in the guest: wait for the first data disk (the one hot-attached next), fill a
      SLICE_MIB-MiB random pattern, write it over the whole disk with O_DIRECT dd, then read back
      the first and last 64 KiB of every slice and compare checksums. Meanwhile record the domain's pauses (lifecycle events, with
      their reason), the LV's size (sysfs, every 50 ms) and the guest's allocation (every 0.5 s).

The fill's JSON: written/bad slices, dd seconds and rate, pauses (each with how long after space
existed again it was resumed), and the samples for the plot. Exit status 0 when the guest wrote
and read back every slice, whatever the pauses: the playbook asserts what each run expects.
"""
import json
import os
import re
import socket
import sys
import threading
import time

import libvirt

URI = "qemu:///system"
READY = "SLTV-GUEST-READY"
MIB = 1024 * 1024


def read_from(path, offset):
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


class GuestTimeout(Exception):
    """The guest did not print what was waited for (the message holds the console's tail)."""


def wait_console(path, pattern, timeout, since=0, dom=None):
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        match = regex.search(read_from(path, since))
        if match:
            return match
        if time.monotonic() > deadline or (dom is not None and not dom.isActive()):
            raise GuestTimeout("no %r on the guest console within %.0f s; console tail:\n%s"
                               % (pattern, timeout, read_from(path, 0)[-3000:]))
        time.sleep(0.05)


def boot(xml_path, console_log):
    conn = libvirt.open(URI)
    with open(xml_path) as handle:
        dom = conn.defineXML(handle.read())
    if os.path.exists(console_log):
        os.unlink(console_log)
    began = time.monotonic()
    dom.create()
    wait_console(console_log, READY, 120, dom=dom)
    print(json.dumps({"domain": dom.name(), "boot_seconds": round(time.monotonic() - began, 2)}))


def lv_sysfs_size(lv):
    """Path of the LV's dm device size in sysfs (512-byte sectors), read without a process."""
    return "/sys/block/%s/size" % os.path.basename(os.path.realpath(lv))


def read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


class Recorder(object):
    """The domain's lifecycle events and samples of the LV size, timed from one monotonic origin."""

    def __init__(self, conn, dom, lv):
        self.t0 = time.monotonic()
        self.dom = dom
        self.lv = lv
        self.events = []  # (t, "suspended"|"resumed", detail)
        self.sizes = []  # (t, LV bytes), on every change
        self.allocation = []  # (t, guest allocation bytes or None)
        self.stop = threading.Event()
        conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)

    def now(self):
        return round(time.monotonic() - self.t0, 3)

    def _lifecycle(self, conn, dom, event, detail, opaque):  # pylint: disable=unused-argument
        if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            self.events.append((self.now(), "suspended", detail))
        elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
            self.events.append((self.now(), "resumed", detail))

    def target(self):
        """The target of the LV's disk in the domain, None before the attach."""
        for disk in re.findall(r"<disk [^>]*device='disk'.*?</disk>", self.dom.XMLDesc(0), re.S):
            if os.path.realpath(self.lv) in (os.path.realpath(p) for p in re.findall(r"dev='(/dev/[^']+)'", disk)):
                return re.search(r"<target dev='([^']+)'", disk).group(1)
        return None

    def sample(self):
        """From before the attach: the extend the agent makes at the attach is on the plot too."""
        sysfs = target = None
        next_allocation = 0.0
        while not self.stop.is_set():
            if sysfs is None and os.path.exists(self.lv):
                sysfs = lv_sysfs_size(self.lv)
            sectors = read_int(sysfs) if sysfs else None
            size = sectors * 512 if sectors is not None else None
            if size is not None and (not self.sizes or self.sizes[-1][1] != size):
                self.sizes.append((self.now(), size))
            if time.monotonic() >= next_allocation:
                next_allocation = time.monotonic() + 0.5
                try:
                    target = target or self.target()
                    if target:
                        self.allocation.append((self.now(), self.dom.blockInfo(target)[1]))
                except libvirt.libvirtError:
                    pass  # not attached yet
            time.sleep(0.05)

    def pauses(self):
        """Each pause: when, why, how long, and how long after the LV grew it was resumed."""
        out = []
        began = reason = None
        for when, kind, detail in self.events:
            if kind == "suspended":
                began, reason = when, detail
            elif kind == "resumed" and began is not None:
                size_then = max([size for t, size in self.sizes if t <= began] or [0])
                grown = [t for t, size in self.sizes if t > began and size > size_then]
                # the LV may have grown before the pause event arrived: then space existed at once
                space = grown[0] if grown else began
                out.append({"at": began, "reason": reason_name(reason), "seconds": round(when - began, 3),
                            "resumed_after_space": round(when - space, 3)})
                began = None
        if began is not None:
            out.append({"at": began, "reason": reason_name(reason), "seconds": None, "resumed_after_space": None})
        return out


def reason_name(detail):
    names = {libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: "ioerror",
             libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: "paused"}
    return names.get(detail, str(detail))


def guest_script(total_mib, slice_mib):
    """One shell line for the guest's command channel (/lib/sltv.sh of guesttest.py is sourced).

    The read back checks the first and the last 64 KiB of every slice: the guest's CPU runs
    under nested virtualization on TCG, where a checksum of the whole disk would take minutes."""
    slices = total_mib // slice_mib
    blocks = slice_mib * 16  # 64 KiB blocks per slice
    return (
        "dev=$(sltv_disk) || exit 1; "
        "dd if=/dev/urandom of=/tmp/pattern bs=1M count={s} 2>/dev/null; "
        "head=$(dd if=/tmp/pattern bs=64k count=1 2>/dev/null | md5sum); "
        "tail=$(dd if=/tmp/pattern bs=64k skip={last} count=1 2>/dev/null | md5sum); "
        "echo \"SLTV-FILL-START dev=$dev\"; i=0; "
        "while [ $i -lt {n} ]; do "
        "dd if=/tmp/pattern of=$dev bs=1M seek=$((i * {s})) oflag=direct conv=notrunc 2>/dev/null "
        "|| {{ echo \"SLTV-FILL-DONE rc=1 written=$i bad=0\"; exit 1; }}; i=$((i + 1)); done; "
        "sync; echo \"SLTV-FILL-WRITTEN slices=$i\"; echo 3 >/proc/sys/vm/drop_caches; bad=0; i=0; "
        "while [ $i -lt {n} ]; do "
        "[ \"$(dd if=$dev bs=64k skip=$((i * {b})) count=1 2>/dev/null | md5sum)\" = \"$head\" ] "
        "&& [ \"$(dd if=$dev bs=64k skip=$((i * {b} + {last})) count=1 2>/dev/null | md5sum)\" = \"$tail\" ] "
        "|| bad=$((bad + 1)); i=$((i + 1)); done; "
        "echo \"SLTV-FILL-DONE rc=0 written={n} bad=$bad\""
    ).format(s=slice_mib, n=slices, b=blocks, last=blocks - 1)


def fill(name, lv, total_mib, console_log, command_socket, slice_mib, timeout):
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.open(URI)
    dom = conn.lookupByName(name)
    recorder = Recorder(conn, dom, lv)
    loop = threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _turn in iter(int, 1)], daemon=True)
    loop.start()
    since = os.path.getsize(console_log)
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect(command_socket)
    channel.sendall(guest_script(total_mib, slice_mib).encode() + b"\n")
    sampler = threading.Thread(target=recorder.sample, daemon=True)
    sampler.start()
    started = wait_console(console_log, r"SLTV-FILL-START dev=(\S+)", 120, since, dom)
    t_start = recorder.now()
    target = recorder.target()
    error = None
    try:
        written = wait_console(console_log, r"SLTV-FILL-WRITTEN slices=\d+|SLTV-FILL-DONE rc=1.*", timeout, since, dom)
        t_written = recorder.now()
        done = wait_console(console_log, r"SLTV-FILL-DONE rc=(\d+) written=(\d+) bad=(\d+)", timeout, since, dom)
        rc, written_slices, bad = (int(value) for value in done.groups())
    except GuestTimeout as exc:  # still say what happened until then
        error, rc, written_slices, bad, t_written = str(exc), -1, 0, 0, recorder.now()
        written = None
    recorder.stop.set()
    sampler.join()
    seconds = t_written - t_start
    result = {
        "domain": name, "lv": lv, "target": target, "guest_device": started.group(1),
        "total_mib": total_mib, "slice_mib": slice_mib,
        "rc": rc, "written_slices": written_slices, "bad_slices": bad, "error": error,
        "slices": total_mib // slice_mib, "write_seconds": round(seconds, 2),
        "write_mib_per_s": round(written_slices * slice_mib / seconds, 1) if seconds > 0 else None,
        "write_ended": written.group(0) if written else None,
        "lv_bytes": recorder.sizes[-1][1] if recorder.sizes else None,
        "pauses": recorder.pauses(),
        "state": list(dom.state()),
        "samples": {"t_start": t_start, "t_written": t_written, "lv_size": recorder.sizes,
                    "allocation": recorder.allocation},
    }
    print(json.dumps(result))
    return 0 if result["rc"] == 0 and result["bad_slices"] == 0 else 1


def main(argv):
    if argv[:1] == ["boot"] and len(argv) == 3:
        boot(argv[1], argv[2])
        return 0
    if argv[:1] == ["fill"] and len(argv) >= 6:
        options = dict(zip(argv[6::2], argv[7::2]))
        return fill(argv[1], argv[2], int(argv[3]), argv[4], argv[5], int(options.get("--slice-mib", 16)),
                    float(options.get("--timeout", 600)))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

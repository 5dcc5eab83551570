# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make QEMU write into a running domain's disk in steps (HMP qemu-io) and report what happened.

Runs on a test-bed host. For each step: write ``--step`` bytes of a pattern at the next guest
offset, then record the LV size, the domain state and whether QEMU reported the write as done
(qemu-io prints into the domain's log file, not into the HMP reply). ``--within-lv`` only writes
while the LV has room for the step (used while etcd is down: the agent cannot extend then).
``--verify`` reads back the first MiB of every step with the pattern check. Prints one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import time

MIB = 1024 * 1024


def virsh(*args):
    return subprocess.run(["virsh"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout.strip()


def hmp(domain, command):
    return virsh("qemu-monitor-command", domain, "--hmp", command)


def device_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def allocation(domain, target):
    out = virsh("domstats", "--block", domain)
    name = None
    for line in out.splitlines():
        line = line.strip()
        if line.endswith(".name=%s" % target):
            name = line.split(".name=")[0]
        if name and line.startswith(name + ".allocation="):
            return int(line.split("=", 1)[1])
    return 0


def log_tail(path, start):
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read().decode("utf-8", "replace")


def size_arg(text):
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    text = text.strip().lower()
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", required=True)
    parser.add_argument("--device", default="scsi0-0-0-0", help="qemu-io -d device id")
    parser.add_argument("--target", default="sda")
    parser.add_argument("--lv", required=True, help="/dev/VG/LV")
    parser.add_argument("--start", type=size_arg, default=0)
    parser.add_argument("--end", type=size_arg, required=True)
    parser.add_argument("--step", type=size_arg, default=128 * MIB)
    parser.add_argument("--pattern", default="0x5a")
    parser.add_argument("--within-lv", action="store_true")
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()

    log = "/var/log/libvirt/qemu/%s.log" % args.domain
    steps, failures, states = [], [], set()
    offset = args.start
    began = time.monotonic()
    while offset < args.end:
        length = min(args.step, args.end - offset)
        if args.within_lv and allocation(args.domain, args.target) + length + 64 * MIB > device_size(args.lv):
            break
        mark = os.path.getsize(log)
        started = time.monotonic()
        hmp(args.domain, 'qemu-io -d %s "write -P %s %d %d"' % (args.device, args.pattern, offset, length))
        seconds = time.monotonic() - started
        output = log_tail(log, mark)
        state = virsh("domstate", "--reason", args.domain)
        states.add(state)
        ok = "wrote %d/%d bytes" % (length, length) in output
        if not ok:
            failures.append(dict(offset=offset, output=output.strip()[-300:]))
        steps.append(dict(offset=offset, length=length, seconds=round(seconds, 3), lv_size=device_size(args.lv),
                          allocation=allocation(args.domain, args.target), state=state, ok=ok))
        offset += length
    elapsed = time.monotonic() - began
    verify_failures = []
    if args.verify:
        for step in steps:
            mark = os.path.getsize(log)
            hmp(args.domain, 'qemu-io -d %s "read -P %s %d %d"' % (args.device, args.pattern, step["offset"], MIB))
            output = log_tail(log, mark)
            if "read %d/%d bytes" % (MIB, MIB) not in output:
                verify_failures.append(dict(offset=step["offset"], output=output.strip()[-300:]))
    written = sum(s["length"] for s in steps if s["ok"])
    json.dump(dict(
        steps=steps, end=offset, written=written, failures=failures, verify_failures=verify_failures,
        states=sorted(states), seconds=round(elapsed, 2),
        mib_per_second=round(written / MIB / elapsed, 1) if elapsed > 0 else 0.0,
        max_lv_size=max([s["lv_size"] for s in steps] or [device_size(args.lv)]),
    ), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

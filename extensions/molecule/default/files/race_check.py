# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What this host sees of one disk after a race round (verify_races.yml), as one JSON line.

Usage: race_check.py VG DISK [--others LV,LV...] [DOMAIN...]

Prints {"host", "lv": null or {"size", "active", "tags"}, "vgck": {"rc", "out"},
"domains": {DOMAIN: {"live": [targets with the disk], "config": [...]}}, "others": {LV: size or null}}
and exits 0: the asserts are
the playbook's. lvm2 runs under the host lock of the sltv modules (/run/lock/sltv/lvm-host.lock),
so a check never runs an lvm2 command beside a module's on the same host.
"""
import fcntl
import json
import os
import socket
import subprocess
import sys

HOST_LOCK = "/run/lock/sltv/lvm-host.lock"


def run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def lvm_facts(vg, disk, others):
    os.makedirs(os.path.dirname(HOST_LOCK), exist_ok=True)
    with open(HOST_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rc, out, err = run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
                            "-o", "lv_name,lv_size,lv_active,lv_tags", "%s/%s" % (vg, disk)])
        vgck = run(["vgck", "--verbose", vg])
        sizes = dict((name, None) for name in others)
        if others:
            listed = run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size", vg])
            for row in json.loads(listed[1])["report"][0]["lv"] if listed[0] == 0 else []:
                if row["lv_name"] in sizes:
                    sizes[row["lv_name"]] = int(row["lv_size"])
    lv = None
    if rc == 0:
        rows = json.loads(out)["report"][0]["lv"]
        if rows:
            row = rows[0]
            lv = dict(size=int(row["lv_size"]), active=row["lv_active"] == "active",
                      tags=sorted(t for t in row["lv_tags"].split(",") if t))
    elif "not found" not in err and "Failed to find" not in err:
        lv = dict(error=err.strip())
    return lv, dict(rc=vgck[0], out=(vgck[1] + vgck[2]).strip()), sizes


def targets(domain, path, inactive):
    argv = ["virsh", "domblklist", "--details", domain] + (["--inactive"] if inactive else [])
    rc, out, err = run(argv)
    if rc != 0:
        return ["ERROR: " + err.strip()]
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == path:
            found.append(fields[2])
    return found


def main():
    vg, disk, domains = sys.argv[1], sys.argv[2], sys.argv[3:]
    others = []
    if domains[:1] == ["--others"]:
        others, domains = [name for name in domains[1].split(",") if name], domains[2:]
    lv, vgck, sizes = lvm_facts(vg, disk, others)
    path = "/dev/%s/%s" % (vg, disk)
    result = dict(host=socket.gethostname(), lv=lv, vgck=vgck, others=sizes,
                  domains=dict((d, dict(live=targets(d, path, False), config=targets(d, path, True)))
                               for d in domains))
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two sides of race 7 (verify_races.yml): a host's agent grows a thin disk while the other host
changes the same VG's metadata. Each side prints one JSON line and exits 0 (the asserts are the
playbook's), or exits 1 with the reason on stderr.

  race_agent.py write DOMAIN LV_PATH WRITE_MIB GROWN_ABOVE TIMEOUT
      host 1: write WRITE_MIB MiB into the disk at LV_PATH of the running DOMAIN (HMP qemu-io, from
      offset 0: the qcow2 image allocates them at its end, past the armed threshold), then wait until
      the kernel gives the LV's device more than GROWN_ABOVE bytes: the host's agent (the sltv-agent
      service) extended it. Prints the disk's alias, the seconds the write took, the seconds from the
      write's start to the growth, and the device size.
  race_agent.py churn VG DISK GROWN_ABOVE PREFIX MAX ETCD_ENDPOINT
      host 2: create thick disks PREFIX-x1, PREFIX-x2, ... (8 MiB) one after the other through the
      core library's write path (sltv_disk's ensure_disk: the etcd VG lock, a fresh read, the fence),
      reading DISK after each, until one create after the one that saw DISK grown above GROWN_ABOVE
      (the other host's agent extended it meanwhile), MAX at most. Prints the disks made and how many
      came before the growth: the creates straddle the agent's extend.
"""
import json
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, "/usr/lib/sltv")  # the collection's core library, as the role sltv_host installs it
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import device_size  # noqa: E402


def disk_alias(domain, path):
    xml = subprocess.run(["virsh", "dumpxml", domain], stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    for disk in ET.fromstring(xml).iter("disk"):
        source, alias = disk.find("source"), disk.find("alias")
        if source is not None and source.get("dev") == path and alias is not None:
            return alias.get("name")
    raise SystemExit("%s has no disk %s in its live XML" % (domain, path))


def write(domain, path, write_mib, grown_above, timeout):
    alias = disk_alias(domain, path)
    started = time.monotonic()
    out = subprocess.run(["virsh", "qemu-monitor-command", domain, "--hmp",
                          'qemu-io -d %s "write -P 0x5a 0 %dM"' % (alias, write_mib)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=True).stdout
    written = time.monotonic() - started
    deadline = started + timeout
    size = device_size(path)
    while size <= grown_above and time.monotonic() < deadline:
        time.sleep(0.2)
        size = device_size(path)
    return dict(alias=alias, qemu_io=out.strip(), write_seconds=round(written, 2),
                grown_after_seconds=round(time.monotonic() - started, 2) if size > grown_above else None,
                size=size)


def churn(vg, disk, grown_above, prefix, most, endpoint):
    from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
    from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock
    from ansible_collections.sltv.core.plugins.module_utils.model.disk import DiskSpec
    from ansible_collections.sltv.core.plugins.module_utils.ops.disk_ops import ensure_disk

    settings = dict(lock_backend="etcd", etcd_endpoints=[endpoint], lock_timeout=600)
    made, seen_grown_at = [], None
    started = time.monotonic()
    for number in range(1, most + 1):
        name = "%s-x%d" % (prefix, number)
        runner = LvmRunner()
        result = ensure_disk(DiskSpec(name, vg, size="8M"), runner,
                             lambda: make_vg_lock(settings, vg, "molecule-race-agent"), host=socket.gethostname())
        if not result.changed:
            raise SystemExit("%s: the create changed nothing" % name)
        made.append(name)
        lv = runner.read_vg(vg, disk).lvs.get(disk)
        if seen_grown_at is None and lv is not None and lv.size > grown_above:
            seen_grown_at = number
        if seen_grown_at is not None and number > seen_grown_at:
            break
    return dict(made=made, creates_before_growth=None if seen_grown_at is None else seen_grown_at - 1,
                seconds=round(time.monotonic() - started, 2))


def main():
    if sys.argv[1:2] == ["write"] and len(sys.argv) == 7:
        out = write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    elif sys.argv[1:2] == ["churn"] and len(sys.argv) == 8:
        out = churn(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()

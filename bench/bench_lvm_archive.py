# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lvm metadata archive under many extends (issue 15): files and bytes it keeps.

A loop VG (metadata only: lvm runs with --driverloaded n, so it needs no device-mapper) with
--disks sltv-tagged LVs, then --extends ``lvextend -L +4m`` of one LV, as the agent runs it, twice:

  baseline  lvm's archive settings of this host (Debian: retain_min 10, retain_days 30),
  sltv      the settings sltv.core.sltv_host writes (retain_min 50, retain_days 0),

each into its own archive directory. Prints files and bytes per run, the ratio sltv / baseline,
and the time per extend in each run (the retention must not slow lvextend down). Run as root:

    .venv/bin/python bench/bench_lvm_archive.py [--disks 200] [--extends 1000]
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import subprocess
import tempfile
import time

ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1", LC_ALL="C")
TAGS = ["--addtag", "sltv", "--addtag", "sltv_kind=thin", "--addtag", "sltv_format=qcow2",
        "--addtag", "sltv_vsize=107374182400"]


def lvm(*argv):
    subprocess.run(list(argv), check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def archive_of(directory):
    files = [os.path.join(directory, name) for name in os.listdir(directory)]
    return len(files), sum(os.path.getsize(path) for path in files)


def run(vg, lv, extends, archive_dir, retention):
    config = 'backup { archive_dir = "%s" %s }' % (archive_dir, retention)
    started = time.monotonic()
    for _extend in range(extends):
        lvm("lvextend", "-q", "--driverloaded", "n", "-L", "+4m", "--config", config, "%s/%s" % (vg, lv))
    return (time.monotonic() - started) / extends


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--disks", type=int, default=200)
    parser.add_argument("--extends", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sltv-bench-archive-")
    image = os.path.join(work, "vg.img")
    with open(image, "wb") as handle:
        handle.truncate((args.disks * 4 + 2 * args.extends * 4 + 1024) * 1024 ** 2)
    device = subprocess.check_output(["losetup", "-f", "--show", image], universal_newlines=True).strip()
    vg = "sltvbench_archive"
    try:
        lvm("vgcreate", "-q", "--metadatasize", "128m", vg, device)
        for index in range(args.disks):
            lvm("lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-Wn", "--setautoactivation", "n",
                "-n", "d%d" % index, "-L", "4m", *(TAGS + [vg]))
        results = {}
        for name, retention, lv in (("baseline", "", "d0"), ("sltv", "retain_min = 50 retain_days = 0", "d1")):
            directory = os.path.join(work, name)
            os.mkdir(directory)
            per_extend = run(vg, lv, args.extends, directory, retention)
            results[name] = archive_of(directory) + (per_extend,)
        print("lvm archive after %d extends on a VG of %d disks (metadata only, loop device)"
              % (args.extends, args.disks))
        print("%-9s %7s %12s %14s" % ("run", "files", "bytes", "s per extend"))
        for name in ("baseline", "sltv"):
            files, size, per_extend = results[name]
            print("%-9s %7d %12d %14.3f" % (name, files, size, per_extend))
        base, ours = results["baseline"], results["sltv"]
        print("ratio sltv/baseline: files %.3f, bytes %.3f, time per extend %.2f"
              % (ours[0] / float(base[0]), ours[1] / float(base[1]), ours[2] / base[2]))
    finally:
        subprocess.run(["vgremove", "-qf", vg], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["pvremove", "-q", device], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

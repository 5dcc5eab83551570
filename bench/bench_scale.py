# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv at scale (issue 15): the same operations on one VG of 100, 1,000, 5,000 and 10,000 disks.

One loop-backed VG made the way the role sltv.core.sltv_host makes it (``pvcreate --metadatasize
128m`` on a sparse file, lvm's default 4 MiB extents, autoactivation off, tag sltv_lock=local),
lvm2 metadata only (this machine has no device-mapper: lvm runs with --driverloaded n, the
integration tests' SLTV_TEST_LVM_NO_ACTIVATION=1). lvm's backup and archive files go to the bench's
own directory, with the archive retention the role writes (retain_min 50, retain_days 0).

Population (NOT measured): sltv_disk creates one thick and one thin disk for real; their LV sections
in a vgcfgbackup are the templates of every other disk (same tag set, with its own LV name and
uuid; the thin copies without sltv_init=pending, as on a host that wrote their qcow2 header; every
other disk claimed by a domain of another host, with its own domain uuid and name). For each size,
the VG gets the templates plus N - 2 copies of one extent each, written as metadata text and
loaded with one vgcfgrestore: 10,000 lvcreate runs would take hours.

Measured at each size, --repeats times (median and max), each on the VG as populated:

  info       sltv_info of the VG (the module process, JSON args, as the tests run modules)
  create     sltv_disk creating a new thick disk (lock_backend local)
  no-op      sltv_disk re-run on the first disk it created (nothing to do)
  extend     the agent's LvmStorage.extend of a thin disk under the local VG lock: in all, and its
             lvm part (the lvextend run, LvmRunner.extend_lv), apart from the verifying read
  report     ``lvm fullreport`` as the core library runs it (LvmRunner.read_vg, parsing included),
             and the lvm command alone (its stdout discarded)

and at 1,000 disks the lvm command of the report with lvm's default device settings vs
``devices { hints = "none" obtain_device_list_from_udev = 0 }`` (VDSM's settings).

Prints the seconds, the ratios to the first size, the VG metadata used (vg_mda_size, vg_mda_free)
and whether the goals hold: sltv_info <= 2 s at the largest size, the no-op <= 1.5 x its time at
the first size, the lvm part of an extend growing no faster than the metadata text. Everything the
bench made (VG, loop device, files) is removed at the end, on errors and on Ctrl-C/SIGTERM too.

Run as root, under nice (a full run takes about 15 minutes):

    nice -n 19 ionice -c3 .venv/bin/python bench/bench_scale.py [--sizes 100,1000,5000,10000]
        [--repeats 5] [--json build/bench/scale.json] [--png build/bench/scale.png]

--png needs matplotlib (pip install matplotlib; not a test requirement).
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402
conftest.link_collection()  # build/collections/ansible_collections/sltv/core -> this checkout
import lvmtest  # noqa: E402
from lvmtest import TEST_ENV, lvm, need_root_and_lvm  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import LvmStorage  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import NO_ACTIVATION_ENV, LvmRunner  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import (  # noqa: E402
    LOCK_DIR, LOCK_SETTINGS_DEFAULTS,
)
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.model.ownership import Claim  # noqa: E402

MIB = 1024 ** 2
EXTENT = 4 * MIB  # lvm's default, which sltv_host keeps (extent_size: null)
METADATA_SIZE = "128m"  # sltv_host's metadata_size
ARCHIVE_RETENTION = "retain_min = 50\n  retain_days = 0"  # sltv_host's lvmlocal.conf block
VDSM_DEVICES = 'devices { hints = "none" obtain_device_list_from_udev = 0 }'
SIZES = "100,1000,5000,10000"
HINTS_AT = 1000
OTHER_HOST = "hv-other"
GOAL_INFO_SECONDS = 2.0
GOAL_NOOP_RATIO = 1.5
MEASURES = ("info", "create", "noop", "extend", "extend_lvm", "report", "report_lvm")
LABELS = {"info": "sltv_info", "create": "create", "noop": "no-op", "extend": "extend",
          "extend_lvm": "extend lvm", "report": "read_vg", "report_lvm": "fullreport"}


class BenchError(Exception):
    pass


class AgentSettings(object):
    """What LvmStorage reads of an agent config: the VGs and the lock settings."""

    def __init__(self, vg):
        self.vgs = [vg]
        self.lock = dict(LOCK_SETTINGS_DEFAULTS, lock_backend="local")


def stop_on_signal(signum, frame):
    raise SystemExit("stopped by signal %d (line %d): cleaning up" % (signum, frame.f_lineno if frame else 0))


def lvm_config_dir(work):
    """LVM_SYSTEM_DIR of the bench: this host's lvm.conf and lvmlocal.conf, plus sltv_host's archive
    retention and backup/archive directories under ``work`` (no file of the bench in /etc/lvm)."""
    directory = os.path.join(work, "lvm")
    os.makedirs(os.path.join(directory, "backup"))
    os.makedirs(os.path.join(directory, "archive"))
    shutil.copy("/etc/lvm/lvm.conf", os.path.join(directory, "lvm.conf"))
    local = ""
    if os.path.exists("/etc/lvm/lvmlocal.conf"):
        with open("/etc/lvm/lvmlocal.conf") as handle:
            local = handle.read()
    with open(os.path.join(directory, "lvmlocal.conf"), "w") as handle:
        handle.write(local + '\nbackup {\n  %s\n  backup_dir = "%s"\n  archive_dir = "%s"\n}\n'
                     % (ARCHIVE_RETENTION, os.path.join(directory, "backup"), os.path.join(directory, "archive")))
    return directory


def run_module(module, args):
    """(seconds, result) of one module process, run the way the tests run modules."""
    started = time.monotonic()
    result = lvmtest.run_module(module, dict(args, lock_backend="local"))
    elapsed = time.monotonic() - started
    if result.get("failed"):
        raise BenchError("%s %s failed: %s" % (module, args, result.get("msg")))
    return elapsed, result


def lv_sections(text):
    """LV name -> its section text (from the tab-indented line ``\\t\\t<name> {`` to its ``\\t\\t}``)."""
    sections = {}
    for match in re.finditer(r"^\t\t(\S+) \{\n.*?^\t\t\}\n", text, re.M | re.S):
        sections[match.group(1)] = match.group(0)
    return sections


def lv_uuid(rng):
    alphabet = string.ascii_letters + string.digits
    parts = ["".join(rng.choice(alphabet) for count in range(width)) for width in (6, 4, 4, 4, 4, 4, 6)]
    return "-".join(parts)


def domain_uuid(rng):
    hexa = "%032x" % rng.getrandbits(128)
    return "%s-%s-%s-%s-%s" % (hexa[:8], hexa[8:12], hexa[12:16], hexa[16:20], hexa[20:])


class Population(object):
    """The VG metadata text of N disks from the two template disks of a vgcfgbackup."""

    def __init__(self, backup_text, thick, thin):
        self.text = backup_text
        sections = lv_sections(backup_text)
        self.templates = {"thick": sections[thick], "thin": sections[thin].replace(', "%s"' % T.INIT_PENDING_TAG, "")
                          .replace('"%s", ' % T.INIT_PENDING_TAG, "")}
        used = [int(start) + int(count) for count, start in
                re.findall(r"extent_count = (\d+)[^\n]*\n.*?\"pv0\", (\d+)", backup_text, re.S)]
        self.first_free = max(used) if used else 0
        self.end = backup_text.index("\n\t}\n", backup_text.index("\tlogical_volumes {"))

    def text_for(self, count, seed=15):
        """The backup text with ``count`` more disks: alternately thick and thin, every other one
        claimed by a domain on another host."""
        rng = random.Random(seed)
        sections = []
        for index in range(count):
            kind = "thick" if index % 2 == 0 else "thin"
            section = self.templates[kind]
            name = "g%05d-%s" % (index, kind)
            section = re.sub(r"^\t\t\S+ \{", "\t\t%s {" % name, section, count=1, flags=re.M)
            section = re.sub(r'id = "[^"]+"', 'id = "%s"' % lv_uuid(rng), section, count=1)
            section = re.sub(r'"pv0", \d+', '"pv0", %d' % (self.first_free + index), section)
            if index % 4 in (0, 1):
                claim = Claim(OTHER_HOST, domain_uuid(rng), name="vm%05d" % (index // 4))
                section = section.replace('tags = ["%s"' % T.MANAGED,
                                          'tags = ["%s", "%s"' % (T.MANAGED, T.make_tag(T.ATTACHED, claim.value)), 1)
            sections.append(section)
        return self.text[:self.end] + "\n" + "".join(sections) + self.text[self.end:]


def summary(values):
    return {"median": statistics.median(values), "max": max(values), "runs": values}


class Bench(object):
    def __init__(self, options):
        self.options = options
        self.work = None
        self.device = None
        self.vg = "sltvscale_%d" % os.getpid()
        self.runner = None

    # -- set-up and clean-up -----------------------------------------------------------------------
    def setup(self, largest):
        self.work = tempfile.mkdtemp(prefix="sltv-bench-scale-")
        os.environ["LVM_SYSTEM_DIR"] = lvm_config_dir(self.work)
        image = os.path.join(self.work, "pv.img")
        with open(image, "wb") as handle:  # sparse: room for every disk, the creates and the extends
            handle.truncate((largest + 2048) * EXTENT + 2 * 128 * MIB)
        self.device = subprocess.check_output(["losetup", "-f", "--show", image], universal_newlines=True).strip()
        lvm("pvcreate", "-q", "--metadatasize", METADATA_SIZE, self.device)
        lvm("vgcreate", "-q", "--setautoactivation", "n", "--addtag", "sltv_lock=local", self.vg, self.device)
        self.runner = LvmRunner(environ={NO_ACTIVATION_ENV: "1"})

    def cleanup(self):
        if self.device:
            lvm("vgremove", "-f", "-q", self.vg, check=False)
            lvm("pvremove", "-q", self.device, check=False)
            subprocess.run(["losetup", "-d", self.device], check=False)
        lock = os.path.join(LOCK_DIR, "vg-%s.lock" % self.vg)
        if os.path.exists(lock):
            os.remove(lock)
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- population (not measured) -----------------------------------------------------------------
    def templates(self):
        run_module("sltv_disk", dict(name="tmpl-thick", vg=self.vg, size="4M"))
        run_module("sltv_disk", dict(name="tmpl-thin", vg=self.vg, size="10G", provisioning="thin", initial_size="4M"))
        path = os.path.join(self.work, "base.vg")
        lvm("vgcfgbackup", "-q", "-f", path, self.vg)
        with open(path) as handle:
            return Population(handle.read(), "tmpl-thick", "tmpl-thin")

    def populate(self, population, disks):
        path = os.path.join(self.work, "populated.vg")
        with open(path, "w") as handle:
            handle.write(population.text_for(disks - 2))
        lvm("vgcfgrestore", "-q", "-f", path, self.vg)
        vg = self.runner.read_vg(self.vg)
        managed = sum(1 for lv in vg.lvs.values() if T.MANAGED in lv.tags)
        if managed != disks:
            raise BenchError("the VG has %d sltv disks, not %d" % (managed, disks))
        return dict(mda_size=vg.mda_size, mda_free=vg.mda_free, mda_used=vg.mda_size // 2 - vg.mda_free,
                    text_bytes=os.path.getsize(path))

    # -- measures ----------------------------------------------------------------------------------
    def measure(self, disks):
        repeats = self.options.repeats
        figures = dict((name, []) for name in MEASURES)
        for repeat in range(repeats):
            elapsed, result = run_module("sltv_info", dict(vg=[self.vg], uri="test:///default"))
            if len(result["disks"]) != disks:
                raise BenchError("sltv_info listed %d disks, not %d" % (len(result["disks"]), disks))
            figures["info"].append(elapsed)
        for repeat in range(repeats):
            elapsed, result = run_module("sltv_disk", dict(name="new%d-%d" % (disks, repeat), vg=self.vg, size="8M"))
            if not result["changed"]:
                raise BenchError("the create of new%d-%d changed nothing" % (disks, repeat))
            figures["create"].append(elapsed)
        for repeat in range(repeats):
            elapsed, result = run_module("sltv_disk", dict(name="new%d-0" % disks, vg=self.vg, size="8M"))
            if result["changed"]:
                raise BenchError("the no-op re-run changed the disk: %s" % result.get("commands"))
            figures["noop"].append(elapsed)
        self.measure_extend(figures, repeats)
        for repeat in range(repeats):
            started = time.monotonic()
            self.runner.read_vg(self.vg)
            figures["report"].append(time.monotonic() - started)
        report_argv = self.runner.commands[-1]
        for repeat in range(repeats):
            figures["report_lvm"].append(self.lvm_alone(report_argv))
        return dict((name, summary(values)) for name, values in figures.items())

    def measure_extend(self, figures, repeats):
        storage = LvmStorage(AgentSettings(self.vg), self.runner, host="bench")
        disk = [d for d in storage.thin_disks() if d.name.startswith("g")][0]
        for repeat in range(repeats):
            timings = {}
            started = time.monotonic()
            size = storage.extend(disk, disk.size + 16 * MIB, timings)
            figures["extend"].append(time.monotonic() - started)
            figures["extend_lvm"].append(timings["lvextend"])
            if size < disk.size + 16 * MIB:
                raise BenchError("extend %d of %s: %d bytes read back" % (repeat, disk.key, size))
            disk.size = size

    @staticmethod
    def lvm_alone(argv, config=None):
        """Seconds of ``argv`` (an lvm command), ``config`` added to its --config (lvm takes one)."""
        argv = list(argv)
        if config and "--config" in argv:
            argv[argv.index("--config") + 1] += " " + config
        elif config:
            argv[2:2] = ["--config", config]
        started = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       env=dict(os.environ, LC_ALL="C", LVM_SUPPRESS_FD_WARNINGS="1"))
        return time.monotonic() - started

    def hints(self):
        """The report's lvm command with the default device settings vs VDSM's, interleaved."""
        argv = self.runner.commands[-1]
        default, vdsm = [], []
        for repeat in range(max(self.options.repeats, 5) * 2):
            default.append(self.lvm_alone(argv))
            vdsm.append(self.lvm_alone(argv, VDSM_DEVICES))
        return {"default": summary(default), "vdsm": summary(vdsm)}

    def run(self, sizes):
        figures = {}
        hints = None
        self.setup(sizes[-1])
        population = self.templates()
        for disks in sizes:
            started = time.monotonic()
            metadata = self.populate(population, disks)
            print("%6d disks: populated in %.1f s (not measured), metadata text %d bytes"
                  % (disks, time.monotonic() - started, metadata["text_bytes"]), flush=True)
            figures[disks] = dict(self.measure(disks), metadata=metadata)
            if disks == HINTS_AT:
                hints = self.hints()
        return figures, hints


def ratio(figures, sizes, disks, name):
    return figures[disks][name]["median"] / figures[sizes[0]][name]["median"]


def print_table(figures, sizes):
    print("\nseconds, median (max) of each measure; sltv_info/create/no-op are module processes")
    print("%6s " % "disks" + " ".join("%15s" % LABELS[name] for name in MEASURES) + " %9s %9s %9s"
          % ("mda_size", "mda_free", "used"))
    for disks in sizes:
        row = figures[disks]
        meta = row["metadata"]
        print("%6d " % disks + " ".join("%6.3f (%6.3f)" % (row[name]["median"], row[name]["max"]) for name in MEASURES)
              + " %8.1fM %8.2fM %8.2fM" % (meta["mda_size"] / MIB, meta["mda_free"] / MIB, meta["mda_used"] / MIB))
    print("\nratios of the medians to %d disks (metadata: the bytes used)" % sizes[0])
    print("%6s " % "disks" + " ".join("%15s" % LABELS[name] for name in MEASURES) + " %9s" % "metadata")
    for disks in sizes:
        meta = figures[disks]["metadata"]["mda_used"] / figures[sizes[0]]["metadata"]["mda_used"]
        print("%6d " % disks + " ".join("%15.2f" % ratio(figures, sizes, disks, name) for name in MEASURES)
              + " %9.2f" % meta)


def goals(figures, sizes):
    """[(goal, met, figures)]"""
    first, last = sizes[0], sizes[-1]
    info = figures[last]["info"]["median"]
    noop = ratio(figures, sizes, last, "noop")
    checks = [("sltv_info <= %.1f s at %d disks" % (GOAL_INFO_SECONDS, last), info <= GOAL_INFO_SECONDS,
               "%.3f s" % info),
              ("no-op <= %.1f x its %d-disk time at %d disks" % (GOAL_NOOP_RATIO, first, last), noop <= GOAL_NOOP_RATIO,
               "%.2f x (%.3f s vs %.3f s)" % (noop, figures[last]["noop"]["median"], figures[first]["noop"]["median"]))]
    growth = ratio(figures, sizes, last, "extend_lvm")
    meta = figures[last]["metadata"]["mda_used"] / figures[first]["metadata"]["mda_used"]
    detail = "x %.2f for x %.2f metadata" % (growth, meta)
    linear = growth <= meta
    if len(sizes) > 2:  # the slope between the two largest sizes, where the fixed costs weigh least
        below = sizes[-2]
        exponent = (math.log(figures[last]["extend_lvm"]["median"] / figures[below]["extend_lvm"]["median"])
                    / math.log(figures[last]["metadata"]["mda_used"] / figures[below]["metadata"]["mda_used"]))
        detail += "; from %d to %d disks it grows as metadata^%.2f" % (below, last, exponent)
        linear = linear and exponent <= 1.1
    checks.append(("lvm part of an extend no worse than linear in the metadata", linear, detail))
    return checks


def draw(figures, sizes, path):
    import matplotlib  # pylint: disable=import-outside-toplevel  # only for --png, not a test requirement
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name in MEASURES:
        left.plot(sizes, [figures[disks][name]["median"] for disks in sizes], marker="o", label=LABELS[name])
    left.axhline(GOAL_INFO_SECONDS, color="grey", linestyle=":", label="sltv_info goal")
    left.set_xlabel("sltv disks in the VG")
    left.set_ylabel("seconds (median)")
    left.set_title("sltv at scale (loop VG, lvm metadata only)")
    left.legend(fontsize="small")
    left.grid(True, alpha=0.3)
    used = [figures[disks]["metadata"]["mda_used"] / MIB for disks in sizes]
    right.plot(sizes, used, marker="o", color="black", label="metadata used (MiB)")
    right.set_xlabel("sltv disks in the VG")
    right.set_ylabel("MiB of the metadata area's usable half")
    twin = right.twinx()
    twin.plot(sizes, [figures[disks]["extend_lvm"]["median"] for disks in sizes], marker="s", color="tab:red",
              label="extend, lvm part (s)")
    twin.set_ylabel("seconds")
    right.set_title("metadata used vs the lvm part of an extend")
    right.legend(loc="upper left", fontsize="small")
    twin.legend(loc="lower right", fontsize="small")
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=SIZES, help="disk counts, comma-separated (default %s)" % SIZES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the raw figures there")
    parser.add_argument("--png", help="draw the curves there (needs matplotlib)")
    options = parser.parse_args()
    sizes = sorted(int(size) for size in options.sizes.split(","))
    if sizes[0] < 2:
        parser.error("every size is at least 2 (the two template disks)")
    need_root_and_lvm()
    os.environ.update(TEST_ENV)
    signal.signal(signal.SIGTERM, stop_on_signal)
    bench = Bench(options)
    try:
        figures, hints = bench.run(sizes)
    finally:
        bench.cleanup()
    print_table(figures, sizes)
    print("\ngoals:")
    checks = goals(figures, sizes)
    for goal, met, detail in checks:
        print("  %-4s %s: %s" % ("met" if met else "NOT", goal, detail))
    if hints:
        print("\nlvm fullreport at %d disks, lvm's device settings of this host vs %s: median %.3f s (max %.3f) vs "
              "%.3f s (max %.3f), ratio %.2f" % (HINTS_AT, VDSM_DEVICES, hints["default"]["median"],
                                                 hints["default"]["max"], hints["vdsm"]["median"], hints["vdsm"]["max"],
                                                 hints["vdsm"]["median"] / hints["default"]["median"]))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({"sizes": sizes, "repeats": options.repeats, "figures": figures, "hints": hints,
                       "goals": [dict(goal=goal, met=met, detail=detail) for goal, met, detail in checks],
                       "loop_devices_on_host": len(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else None},
                      handle, indent=1, sort_keys=True)
        print("raw figures: %s" % options.json)
    if options.png:
        draw(figures, sizes, options.png)
        print("curves: %s" % options.png)


if __name__ == "__main__":
    main()

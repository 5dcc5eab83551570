# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin-extend agent on this machine: extend latency by real threshold events, and its idle cost.

Real libvirtd + QEMU (no-OS domains, kvm when it works, else TCG), qcow2 images on loop devices;
the only stand-in is the extend itself (tests/integration/agent_standin.LoopStorage: the loop's
file grows and ``losetup -c`` runs, where production runs lvextend on an LV).

latency (default): one domain, one qcow2 (virtual 4 GiB) on a loop device of 44 MiB, the Agent
  in this process. chunk_min = chunk_max = --chunk-mib (32) and a tiny headroom_seconds make the
  headroom exactly chunk/2 and every extend exactly one chunk; each step writes one chunk with HMP
  ``qemu-io -d scsi0-0-0-0 "aio_write -P 0x5a OFF LEN"`` (the threshold sits ~7/8 into it), so
  every write crosses exactly one armed threshold, and waits until the extend is in
  ``agent.history`` before the next write (then ``aio_flush``). aio_write because the HMP call
  holds the domain's job in libvirtd: with a synchronous ``write`` (--sync-write) the agent's
  stats read waits for the whole write, which a real guest's write never causes.
  Prints p50/p99/max of each phase (detect, split into the event queue and the lookup + stats read
  + decision; lock, lvextend, verify, rearm, total) and of the agent's own part (total - lvextend).
  Extend latency is, as in the issue, from the threshold event (its callback in the agent) to the
  re-armed threshold. Baseline, in the same run, interleaved with the extends, on a separate loop
  device: a bare ``truncate + losetup -c`` of the same size (the stand-in's "bare lvextend"; its
  lvextend phase also runs one ``blockdev --getsize64``), a bare blockdev and a bare
  domainListGetStats; the ratio total / bare. Reference lines: VDSM's published extend
  min/avg/max 0.77/1.15/1.39 s and SLTV's 15 s polling interval (mean detection delay 7.5 s),
  with our p50/p99 ratios. Exits 1 unless every write crossed exactly one threshold.

idle: 10 domains x 5 thin disks (qcow2, virtual 8 GiB, on sparse 1 GiB loop devices, scsi
  sda..sde), the Agent with the default settings (sweep_interval 5 s) in a CHILD process
  (bench/agent_child.py: the agent's own imports and its own event loop, no test harness, so its
  RSS is the agent's; --with-etcd-client adds the etcd client's imports, as on an etcd host), watched
  for --seconds (600). First a control window (--control-seconds, 30) with the domains running and
  no agent. Prints the agent's CPU seconds (utime+stime from /proc/<pid>/stat; its children, the
  stand-in's blockdev calls, apart), RSS (VmRSS/VmHWM), sweeps, libvirt calls per sweep
  (agent.sweep_calls), sweep durations and their getAllDomainStats call alone, libvirtd's CPU in
  both windows; baseline: a bare child with
  the same libvirt connection and event registrations that does nothing, over the same window.
  The domains' firmware spins for ~15 s after a start: both modes wait for it to go quiet first.
  The window starts once the extends of the first sweep are done (with the default
  initial_write_rate every disk of a 1 GiB loop is grown once at first sight).
  500 thin disks: --domains 50 --disks 10 (6.4 GiB of guest RAM; the setup takes ~6 min here).

Run as root (libvirtd is started if it does not answer; it is left running):
    .venv/bin/python bench/bench_agent_local.py [latency] [--extends 40]
    .venv/bin/python bench/bench_agent_local.py idle [--seconds 600]   # --seconds 60 for a quick run
Every domain (sltvtest-bench-*) and loop device it made is removed at the end, on Ctrl-C and on
errors too.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402
conftest.link_collection()  # build/collections/ansible_collections/sltv/core -> this checkout
import libvirttest  # noqa: E402  (the real libvirtd harness of the tests)
from libvirttest import LOSETUP_BIN, LibvirtDaemon, LibvirtSession, LoopDevice, define_nos_domain, hmp  # noqa: E402
from agent_standin import EXTENT, LoopStorage, device_size  # noqa: E402
from agent_child import start_agent  # noqa: E402  (bench/, the agent's process of the idle mode)

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, thin_cap  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import (  # noqa: E402
    STATS_BACKING,
    STATS_BLOCK,
    STATS_STATE,
    Agent,
)

LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
PREFIX = libvirttest.TEST_PREFIX + "bench-"  # the tests' cleanup (undefine_all) catches leftovers too
VG = "vg_standin"
PHASES = ("detect", "lock", "fence", "lvextend", "verify", "rearm", "total")
VDSM = (0.77, 1.15, 1.39)  # VDSM's published extend latency min / avg / max, seconds
SLTV_POLL = 15.0           # SLTV's polling interval, seconds (mean detection delay 7.5 s)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(samples, pct):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(pct / 100.0 * (len(ordered) - 1))))]


def qcow2_disk_xml(path, target):
    return ("<disk type='block' device='disk'><driver name='qemu' type='qcow2' cache='none' io='native' "
            "error_policy='stop'/><source dev='%s'/><target dev='%s' bus='scsi'/></disk>" % (path, target))


def wait_until(predicate, timeout, step=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Resources(object):
    """Domains and loop devices this run made; ``cleanup()`` removes them (domains first)."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="sltv-bench-agent-", dir="/var/tmp")
        self.session = None
        self.daemon = None
        self.guard = None
        self.domains = []
        self.loops = []
        self.children = []

    def loop(self, size_mib, virtual):
        loop = LoopDevice(self.workdir, size_mib)
        self.loops.append(loop)
        libvirttest.run(["qemu-img", "create", "-q", "-f", "qcow2", loop.path, str(virtual)])
        return loop

    def domain(self, conn):
        name = "%s%s" % (PREFIX, uuid.uuid4().hex[:8])
        self.domains.append(name)
        return define_nos_domain(conn, name, persistent=False)

    def cleanup(self):
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if self.session is not None and self.domains:
            conn = None
            deadline = time.monotonic() + 60  # libvirtd may be restarting (another test run)
            while conn is None:
                try:
                    conn = self.session.connection()
                except libvirttest.libvirt.libvirtError as exc:
                    if time.monotonic() > deadline:
                        print("cleanup: libvirtd does not answer (%s): remove by hand: virsh destroy %s"
                              % (exc, " ".join(self.domains)), file=sys.stderr)
                        break
                    time.sleep(1.0)
            for name in self.domains if conn is not None else ():
                try:
                    libvirttest.remove_domain(conn, name)
                except Exception as exc:  # pylint: disable=broad-except  # keep cleaning up
                    print("cleanup: domain %s: %s" % (name, exc), file=sys.stderr)
        if self.session is not None:
            self.session.close()
        for loop in self.loops:
            try:
                loop.destroy()
            except Exception as exc:  # pylint: disable=broad-except  # keep cleaning up
                print("cleanup: loop %s: %s" % (loop.path, exc), file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.guard is not None:
            self.guard.__exit__(None, None, None)  # pylint: disable=unnecessary-dunder-call
        if self.daemon is not None:
            self.daemon.unregister_user()


def open_session(res):
    """libvirtd as the tests share it: counted as a user (another session's last user out does not
    stop it) and with the shared restart guard held (their tests that restart libvirtd wait)."""
    daemon = LibvirtDaemon().register_user()
    res.daemon = daemon
    res.guard = libvirttest.restart_guard()
    res.guard.__enter__()  # pylint: disable=unnecessary-dunder-call  # held until cleanup()
    session = LibvirtSession(daemon)  # starts the event loop thread before the first connection
    conn = session.connection()
    libvirttest.undefine_all(conn, PREFIX)  # leftovers of a killed run
    return session, conn


def versions(conn):
    def dotted(number):
        return "%d.%d.%d" % (number // 1000000, number // 1000 % 1000, number % 1000)

    return "libvirt %s, QEMU %s, domain type %s" % (
        dotted(conn.getLibVersion()), dotted(conn.getVersion()), libvirttest.usable_domain_type(conn))


# -- latency -----------------------------------------------------------------------------------------
def bare_extend(loop, size):
    """What the stand-in's extend does without the agent: grow the file, ``losetup -c``."""
    started = time.monotonic()
    with open(loop.image, "r+b") as image:
        image.truncate(size)
    subprocess.run([LOSETUP_BIN, "-c", loop.path], check=True)
    return time.monotonic() - started


def row(label, samples, unit=1000.0, extra=""):
    print("%-44s %9.1f %9.1f %9.1f%s" % (
        label, percentile(samples, 50) * unit, percentile(samples, 99) * unit, max(samples) * unit, extra))


def qemu_io_failures(name):
    """qemu-io prints its results, failures too, to the domain's log, not to the HMP reply."""
    try:
        with open("/var/log/libvirt/qemu/%s.log" % name) as log:
            return [line.strip() for line in log if "write failed" in line]
    except (IOError, OSError):
        return []


def latency(options, res):
    chunk = options.chunk_mib * MIB
    virtual = 4 * GIB
    if options.extends * chunk > virtual:
        raise SystemExit("--extends x --chunk-mib must stay below the 4 GiB virtual size")
    if options.chunk_mib < 16 or options.chunk_mib % 4:
        raise SystemExit("--chunk-mib must be a multiple of 4 MiB (the extent), at least 16")
    # The first write starts at allocation ~0.25 MiB (qcow2 header, L1, refcounts). With the device
    # at ~1.375 chunks the armed threshold (size - chunk/2) sits ~7/8 of a chunk into every write,
    # which ends ~3/8 chunk below the end of the device (no ENOSPC while the extend runs); qcow2's
    # metadata (an L2 table per 512 MiB) moves the crossing slowly earlier, never past the start.
    # Late in the write, because QEMU answers the agent's stats read only once the HMP write is done.
    start_mib = options.chunk_mib * 11 // 8 // 4 * 4
    res.session, conn = open_session(res)
    print("extend latency, %s, %d extends; kernel %s" % (versions(conn), options.extends, os.uname()[2]))
    loop = res.loop(start_mib, virtual)
    bare = LoopDevice(res.workdir, start_mib)
    res.loops.append(bare)
    dom = res.domain(conn)
    dom.attachDeviceFlags(qcow2_disk_xml(loop.path, "sda"), LIVE)
    print("domain settled (SeaBIOS done) after %.1f s" % settle([dom.name()], options.settle_seconds))
    storage = LoopStorage(VG)
    storage.add("bench0", loop, thin_cap(virtual, EXTENT))
    # headroom_seconds tiny: rate * headroom_seconds never beats chunk/2, so the policy is fixed (and no
    # initial rate is assumed before one is measured: it would grow the small device to its cap at once).
    config = parse_agent_config(dict(vgs=[VG], chunk_min="%dM" % options.chunk_mib,
                                     chunk_max="%dM" % options.chunk_mib, headroom_seconds=0.001, initial_write_rate=0))
    agent = Agent(config, storage, own_event_loop=False)
    # detect = event callback -> extend start; split it where the worker takes the batch.
    queue_waits = {}  # index in agent.history -> seconds from the callback to the worker's handle()
    handle = agent.handle

    def timed_handle(batch):
        taken = agent.clock()
        before = len(agent.history)
        handle(batch)
        if len(agent.history) > before:
            stamps = [e.at for e in batch if e.kind == "threshold"] or [e.at for e in batch]
            queue_waits[before] = taken - min(stamps)

    agent.handle = timed_handle
    stop = start_agent(agent)
    writes, to_recorded, bare_times, probe_times, stats_times, crossings = [], [], [], [], [], []
    try:
        if not wait_until(lambda: agent.ready, 30):
            raise SystemExit("the agent never finished its first sweep")
        watch = next(iter(agent.watches.values()))
        print("qcow2 virtual %d MiB on a %d MiB loop device (%s); chunk %d MiB, headroom %d MiB, armed at %d MiB; "
              "each write %d MiB" % (virtual // MIB, start_mib, watch.dev, options.chunk_mib, options.chunk_mib // 2,
                                     (watch.armed or 0) // MIB, options.chunk_mib))
        bare_size = start_mib * MIB
        for step in range(options.extends):
            before = len(agent.history)
            started = time.monotonic()
            hmp(dom.name(), 'qemu-io -d scsi0-0-0-0 "%s -P 0x5a %d %d"' % (
                "write" if options.sync_write else "aio_write", step * chunk, chunk))
            writes.append(time.monotonic() - started)
            if not wait_until(lambda: len(agent.history) > before, 30):
                raise SystemExit("write %d (%d MiB at %d MiB) crossed no threshold within 30 s: device %d MiB, "
                                 "armed %s, allocation %s, history %d" % (
                                     step + 1, options.chunk_mib, step * options.chunk_mib,
                                     device_size(loop.path) // MIB, watch.armed, watch.allocation, len(agent.history)))
            to_recorded.append(time.monotonic() - started)
            if not options.sync_write:  # the write is done before the next one (outside the measure)
                hmp(dom.name(), 'qemu-io -d scsi0-0-0-0 "aio_flush"')
            time.sleep(options.pause)  # let a second crossing (there should be none) show up
            crossings.append(len(agent.history) - before)
            # the baseline, interleaved: same size step, a separate loop device
            bare_size += chunk
            bare_times.append(bare_extend(bare, bare_size))
            started = time.monotonic()
            device_size(bare.path)
            probe_times.append(time.monotonic() - started)
            try:
                started = time.monotonic()
                conn.domainListGetStats([dom], STATS_BLOCK | STATS_STATE, STATS_BACKING)
                stats_times.append(time.monotonic() - started)
            except libvirttest.libvirt.libvirtError:  # libvirtd restarted under us: reconnect, skip
                conn = res.session.connection()
                dom = conn.lookupByName(dom.name())
        time.sleep(1.0)
    finally:
        stop()
        agent.close()
    history = list(agent.history)
    if agent.metrics.reconnects.value():
        print("WARNING: libvirtd restarted %d time(s) during the run (another process): the figures include it"
              % agent.metrics.reconnects.value())
    waits = [queue_waits[i] for i in range(len(history)) if i in queue_waits]
    reads = [history[i]["detect"] - queue_waits[i] for i in range(len(history)) if i in queue_waits]
    print("\n%-44s %9s %9s %9s" % ("phase (%d extends)" % len(history), "p50 ms", "p99 ms", "max ms"))
    for phase in PHASES[:-1]:
        row(phase + (" (blockdev+truncate+losetup)" if phase == "lvextend" else ""), [h[phase] for h in history])
        if phase == "detect" and waits:
            row("  detect: callback -> worker (queue)", waits)
            row("  detect: lookup + stats read + decision", reads)
    totals = [h["total"] for h in history]
    row("total (event -> re-armed threshold)", totals)
    own = [h["total"] - h["lvextend"] for h in history]
    row("agent's own part (total - lvextend)", own)
    print("baseline, same run, %d times on a separate loop device:" % len(bare_times))
    row("bare truncate + losetup -c", bare_times)
    row("bare blockdev --getsize64 (stand-in verify)", probe_times)
    row("bare domainListGetStats, QEMU idle", stats_times)
    row("HMP qemu-io %s %d MiB (virsh)" % ("write" if options.sync_write else "aio_write", options.chunk_mib),
        writes)
    row("write start -> extend in agent.history", to_recorded)
    base50, base99 = percentile(bare_times, 50), percentile(bare_times, 99)
    p50, p99 = percentile(totals, 50), percentile(totals, 99)
    print("ratio total / bare truncate+losetup -c: p50 %.2f, p99 %.2f; lvextend phase / bare p50 %.2f; "
          "agent's own part p50 %.1f ms" % (p50 / base50, p99 / base99, percentile([h["lvextend"] for h in history], 50)
                                            / base50, percentile(own, 50) * 1000))
    print("reference VDSM extend min/avg/max %.2f / %.2f / %.2f s: our total p50 = %.4f x avg, p99 = %.4f x max"
          % (VDSM + (p50 / VDSM[1], p99 / VDSM[2])))
    print("reference SLTV polling every %.0f s (mean detection delay %.1f s): our total p50 = %.5f x 7.5 s, "
          "p99 = %.5f x 15 s" % (SLTV_POLL, SLTV_POLL / 2, p50 / (SLTV_POLL / 2), p99 / SLTV_POLL))
    failed = qemu_io_failures(dom.name())
    if failed:
        print("WARNING: %d qemu-io writes failed (domain log): %s" % (len(failed), failed[-1]))
    triggers = {}
    for record in history:
        triggers[record["trigger"]] = triggers.get(record["trigger"], 0) + 1
    steps = set(h["new_size"] - h["old_size"] for h in history)
    chained = all(b["old_size"] == a["new_size"] for a, b in zip(history, history[1:]))
    print("triggers %s; writes crossing exactly one threshold %d/%d; extend steps %s MiB; sizes %d -> %d MiB%s; "
          "domain state %s" % (", ".join("%s %d" % item for item in sorted(triggers.items())),
                               crossings.count(1), len(crossings), "/".join(str(s // MIB) for s in sorted(steps)),
                               history[0]["old_size"] // MIB, history[-1]["new_size"] // MIB,
                               "" if chained else " (NOT chained)", dom.state()))
    return 0 if crossings.count(1) == len(crossings) == len(history) else 1


# -- idle --------------------------------------------------------------------------------------------
def proc_cpu(pid):
    """(own CPU seconds, waited-for children's CPU seconds) of pid."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def proc_mem(pid):
    """VmRSS and VmHWM of pid, in KiB."""
    values = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def qemu_pids(names):
    pids = []
    for name in names:
        try:
            with open("/run/libvirt/qemu/%s.pid" % name) as handle:
                pids.append(int(handle.read().strip()))
        except (IOError, OSError, ValueError):
            pass
    return pids


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu(pid)[0]
        except (IOError, OSError):
            pass
    return total


def settle(names, timeout, quiet=0.05):
    """Wait until the domains' QEMU processes use < quiet CPU each (SeaBIOS spins ~15 s after a start)."""
    pids = qemu_pids(names)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        before = cpu_of(pids)
        time.sleep(1.0)
        if cpu_of(pids) - before < quiet * len(pids):
            break
    return time.monotonic() - began


class Child(object):
    """bench/agent_child.py ``agent|bare SPEC`` in its own process: prints READY, waits for a line,
    prints RESULT."""

    def __init__(self, res, kind, spec_path, extra=()):
        self.kind = kind
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "agent_child.py"), kind, spec_path] + list(extra),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        res.children.append(self.proc)
        self.pid = self.proc.pid
        self.ready = None

    def wait_ready(self):
        self.ready = self._line("READY")
        return self.ready

    def finish(self):
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        result = self._line("RESULT")
        self.proc.wait(30)
        return result

    def _line(self, tag):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("the %s child ended before %s (exit %s)" % (self.kind, tag, self.proc.wait()))
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])


def idle(options, res):
    res.session, conn = open_session(res)
    print("idle cost, %s; %d domains x %d thin disks, sweep_interval 5 s (default settings), %d s; kernel %s"
          % (versions(conn), options.domains, options.disks, options.seconds, os.uname()[2]))
    virtual, loop_mib = 8 * GIB, 1024
    disks = []
    setup = time.monotonic()
    domains = []
    for number in range(options.domains):
        dom = res.domain(conn)
        domains.append(dom.name())
        for index in range(options.disks):
            loop = res.loop(loop_mib, virtual)
            target = "sd%s" % "abcdefghijklmnop"[index]
            dom.attachDeviceFlags(qcow2_disk_xml(loop.path, target), LIVE)
            disks.append(dict(name="d%02d-%s" % (number, target), path=loop.path, image=loop.image, mib=loop_mib,
                              cap=thin_cap(virtual, EXTENT)))
    print("setup: %d domains, %d qcow2 (virtual %d GiB) on sparse %d MiB loop devices in %.1f s"
          % (len(domains), len(disks), virtual // GIB, loop_mib, time.monotonic() - setup))
    spec_path = os.path.join(res.workdir, "spec.json")
    with open(spec_path, "w") as handle:
        json.dump(dict(uri=libvirttest.URI, disks=disks), handle)
    libvirtd = LibvirtDaemon().libvirtd_pid()
    qemus = qemu_pids(domains)
    print("domains settled (SeaBIOS done) after %.1f s" % settle(domains, options.settle_seconds))

    # control window: the domains run, nobody watches them
    control = options.control_seconds
    cpu0 = proc_cpu(libvirtd)[0] if libvirtd else 0.0
    qemu0 = cpu_of(qemus)
    time.sleep(control)
    control_libvirtd = (proc_cpu(libvirtd)[0] - cpu0) if libvirtd else float("nan")
    control_qemu = cpu_of(qemus) - qemu0

    agent = Child(res, "agent", spec_path, ["--with-etcd-client"] if options.with_etcd_client else [])
    bare = Child(res, "bare", spec_path)
    began = time.monotonic()
    ready = agent.wait_ready()
    startup = time.monotonic() - began
    bare.wait_ready()
    start_cpu = dict((c.kind, proc_cpu(c.pid)) for c in (agent, bare))
    start_libvirtd = proc_cpu(libvirtd)[0] if libvirtd else 0.0
    start_qemu = cpu_of(qemus)
    window_start = time.monotonic()
    time.sleep(options.seconds)
    window = time.monotonic() - window_start
    end_cpu = dict((c.kind, proc_cpu(c.pid)) for c in (agent, bare))
    mem = dict((c.kind, proc_mem(c.pid)) for c in (agent, bare))
    libvirtd_cpu = (proc_cpu(libvirtd)[0] - start_libvirtd) if libvirtd else float("nan")
    qemu_cpu = cpu_of(qemus) - start_qemu
    result = agent.finish()
    bare_result = bare.finish()

    own = end_cpu["agent"][0] - start_cpu["agent"][0]
    kids = end_cpu["agent"][1] - start_cpu["agent"][1]
    bare_own = end_cpu["bare"][0] - start_cpu["bare"][0]
    sweeps = result["sweeps"] - ready["sweeps"]
    calls = result["libvirt_calls"] - ready["libvirt_calls"]
    per_sweep = result["sweep_calls"][-sweeps:] if sweeps else []
    durations = result["durations"][len(ready["durations"]):]
    print("agent start (python, imports, connect, first sweep, the initial extends): %.2f s, %.2f CPU s; watching "
          "%d thin disks (%d armed), %d libvirt calls before the window, %d initial extends (before the window)"
          % (startup, start_cpu["agent"][0], ready["watches"], ready["armed"], ready["libvirt_calls"],
             ready["extends"]))
    print("\nwindow %.1f s:" % window)
    print("%-44s %10s %10s %10s" % ("", "CPU s", "CPU %", "RSS MiB"))
    print("%-44s %10.2f %10.3f %10.1f   (peak %.1f)" % (
        "agent process (own)", own, own / window * 100, mem["agent"][0] / 1024.0, mem["agent"][1] / 1024.0))
    print("%-44s %10.2f %10.3f" % ("its children (stand-in blockdev calls)", kids, kids / window * 100))
    print("%-44s %10.2f %10.3f %10.1f   (peak %.1f)" % (
        "baseline: bare libvirt client, same events", bare_own, bare_own / window * 100, mem["bare"][0] / 1024.0,
        mem["bare"][1] / 1024.0))
    print("%-44s %10.2f %10.3f" % ("libvirtd while watched", libvirtd_cpu, libvirtd_cpu / window * 100))
    print("%-44s %10.2f %10.3f" % ("libvirtd, control window %d s, no agent" % control, control_libvirtd,
                                   control_libvirtd / control * 100))
    print("%-44s %10.2f %10.3f" % ("%d QEMU processes while watched" % len(qemus), qemu_cpu, qemu_cpu / window * 100))
    print("%-44s %10.2f %10.3f" % ("%d QEMU processes, control window" % len(qemus), control_qemu,
                                   control_qemu / control * 100))
    # /proc counts in clock ticks (10 ms); the children's own process_time is finer
    fine = result["process_time"] - ready["process_time"]
    bare_fine = bare_result["process_time"] - bare.ready.get("process_time", 0.0)
    print("process_time in the children (ns resolution): agent %.3f s, bare client %.3f s" % (fine, bare_fine))
    print("ratio agent / bare client: CPU %s, RSS %.2f; agent CPU per sweep %.2f ms"
          % ("%.1f" % (fine / bare_fine) if bare_fine > 0 else "-", mem["agent"][0] / float(mem["bare"][0]),
             fine / sweeps * 1000 if sweeps else float("nan")))
    print("sweeps %d (%.2f s apart); libvirt calls %d = %.2f per sweep; per sweep (last %d): min %s max %s; "
          "events %d; extends %d"
          % (sweeps, window / sweeps if sweeps else float("nan"), calls, calls / float(sweeps) if sweeps else 0,
             len(per_sweep), min(per_sweep) if per_sweep else "-", max(per_sweep) if per_sweep else "-",
             result["events"] - ready["events"], result["extends"] - ready["extends"]))
    if result["reconnects"] - ready["reconnects"]:
        print("WARNING: libvirtd restarted under the agent %d time(s) in the window (another process): "
              "the figures include the reconnections" % (result["reconnects"] - ready["reconnects"]))
    if durations:
        figures = (percentile(durations, 50) * 1000, percentile(durations, 99) * 1000, max(durations) * 1000, len(disks))
        print("sweep duration p50 %.1f ms, p99 %.1f ms, max %.1f ms (with the catalog reload every 30 s: %d "
              "blockdev calls)" % figures)
        stats = result["stats_calls"][len(ready["stats_calls"]):]
        if stats and len(stats) == len(durations):
            own_part = [d - c for d, c in zip(durations, stats)]
            print("  of which libvirtd's getAllDomainStats p50 %.1f ms, p99 %.1f ms; the rest (the agent's "
                  "decisions, catalog, metrics) p50 %.1f ms, p99 %.1f ms"
                  % (percentile(stats, 50) * 1000, percentile(stats, 99) * 1000,
                     percentile(own_part, 50) * 1000, percentile(own_part, 99) * 1000))
    if per_sweep:
        print("libvirt calls per sweep p50 %s, p99 %s" % (percentile(per_sweep, 50), percentile(per_sweep, 99)))
    return 0 if result["extends"] == ready["extends"] and result["watches"] == len(disks) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("latency", "idle"), default="latency")
    parser.add_argument("--extends", type=int, default=40, help="latency: extends to drive (default 40)")
    parser.add_argument("--chunk-mib", type=int, default=32, help="latency: chunk = write size (default 32)")
    parser.add_argument("--sync-write", action="store_true",
                        help="latency: HMP 'write' instead of 'aio_write': libvirtd then holds the domain's job "
                             "until the write is done, and the agent's stats read waits for it")
    parser.add_argument("--pause", type=float, default=0.2, help="latency: seconds after each extend (0.2)")
    parser.add_argument("--seconds", type=int, default=600, help="idle: seconds to watch (default 600)")
    parser.add_argument("--control-seconds", type=int, default=30, help="idle: window without agent (30)")
    parser.add_argument("--settle-seconds", type=int, default=40,
                        help="at most this long for the new domains' firmware to go quiet (40)")
    parser.add_argument("--domains", type=int, default=10, help="idle: domains (default 10)")
    parser.add_argument("--disks", type=int, default=5, help="idle: thin disks per domain (default 5)")
    parser.add_argument("--with-etcd-client", action="store_true",
                        help="idle: the agent child imports the etcd client too (an etcd host's RSS)")
    parser.add_argument("--verbose", action="store_true", help="the agent's log on stderr")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (libvirtd, loop devices)")
    logging.basicConfig(level=logging.INFO if options.verbose else logging.ERROR, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))
    res = Resources()
    try:
        return latency(options, res) if options.mode == "latency" else idle(options, res)
    finally:
        res.cleanup()


if __name__ == "__main__":
    sys.exit(main())

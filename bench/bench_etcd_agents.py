# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""etcd under the agents of 50 hosts: keys, leases, request rate, etcd CPU and DB size over time.

What: one real etcd (tests/integration/etcdtest.EtcdServer: one member on 127.0.0.1, a temporary
data dir) and --agents (50) processes, each the etcd side of one host's agent, the agent's own code:
agent_storage.LvmStorage with a stand-in lvm runner (no LVs here). Each does what Agent.sweep does
every sweep_interval (5 s, the agent's default; divided by --speed when sped up):
``after_sweep(catalog)`` (reads the extend records of every host, refreshes what another host grew)
then ``register(disks)`` (its record ``<prefix>/agents/<host>`` on its one lease, and the lease's
keep-alive). Every --extend-interval seconds (also divided by --speed) it extends the next of its
--disks thin disks (each in turn: after disks x interval every disk has its extend record) through
``LvmStorage.extend`` (the VG lock in etcd: a lease, a txn, the fence, the release; one shared VG
for all hosts, as on one LUN; lvextend is the stand-in's no-op) and ``published()`` (the extend
record, on the agent's one lease), as Agent._finish_extend does.

Why: the agents are the only steady etcd clients of the collection. The keys and leases they
leave must not grow with time, and the write rate they cause (every write is a raft proposal and a
new revision, kept by etcd until a compaction) decides how fast etcd's DB grows.

How: every --sample seconds the parent reads the number of keys (``/v3/kv/range`` count_only, in
total and per kind), the leases (``/v3/lease/leases``), and etcd's ``/metrics``
(etcd_server_proposals_committed_total, grpc_server_handled_total, process_cpu_seconds_total,
etcd_mvcc_db_total_size_in_bytes and ..._in_use_in_bytes); each agent process counts its own HTTP
requests to etcd, by API path. The verdict: keys and leases bounded (keys never above agents + agents x
disks + one lock, leases never above one per agent, no growth between the first and the last third of the run), and the DB's growth
per hour. etcd runs without auto-compaction unless --compaction is given (e.g. ``5m``: etcd's
``--auto-compaction-mode periodic --auto-compaction-retention 5m``); the collection does not run
etcd, so what it needs from the operator's etcd is said here.

Run (no root needed; etcd from /usr/bin, or SLTV_ETCD_BIN):
    nice -n 19 .venv/bin/python bench/bench_etcd_agents.py [--agents 50] [--seconds 300] [--speed 1]
    nice -n 19 .venv/bin/python bench/bench_etcd_agents.py --compaction 1m
The agent processes run under ``nice -n 19``; etcd and every process are stopped at the end.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402
conftest.link_collection()  # build/collections/ansible_collections/sltv/core -> this checkout
import etcdtest  # noqa: E402  (the real etcd of the tests)

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import DEFAULTS  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.agent.agent_storage import LvmStorage, ThinDisk  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB  # noqa: E402

VG = "vg_shared"
PREFIX = "/sltv"
EXTENT = 4 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = ("agents", "extends", "locks")


def prefix_end(prefix):
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Runner(object):
    """The lvm runner's calls LvmStorage.extend makes, on sizes in memory: fence first (as the real
    runner does before a write), then the new size; read_vg for the verify (no device here)."""

    def __init__(self):
        self.fence = None
        self.sizes = {}
        self.refreshes = 0

    def extend_lv(self, vg, name, size):
        if self.fence is not None:
            self.fence()
        self.sizes[(vg, name)] = max(size, self.sizes.get((vg, name), 0))

    def read_vg(self, vg, lv=None):
        lvs = dict((name, argparse.Namespace(size=size)) for (vg_name, name), size in self.sizes.items()
                   if vg_name == vg and (lv is None or name == lv))
        return argparse.Namespace(name=vg, lvs=lvs, free=1 << 50)

    def refresh(self, vg, name):
        self.refreshes += 1


def lock_settings(endpoint):
    lock = dict(LOCK_SETTINGS_DEFAULTS)
    lock.update(lock_backend="etcd", etcd_endpoints=[endpoint], lock_prefix=PREFIX)
    return lock


# -- one agent (a child process) ---------------------------------------------------------------------
REQUESTS = {}
REQUESTS_GUARD = threading.Lock()


def count_requests():
    """Count every HTTP request of every EtcdClient of this process (the agent's and the lock's), by path."""
    request = etcd_client.EtcdClient.request

    def counted(self, url, *args, **kwargs):
        path = url.split("/v3", 1)[-1]
        with REQUESTS_GUARD:
            REQUESTS[path] = REQUESTS.get(path, 0) + 1
        return request(self, url, *args, **kwargs)

    etcd_client.EtcdClient.request = counted


def agent_main(number, spec):
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through stdin
    count_requests()
    host = "bench-host-%02d" % number
    config = argparse.Namespace(vgs=[VG], lock=lock_settings(spec["endpoint"]))
    runner = Runner()
    errors = []

    class Log(object):
        def warning(self, *args):
            errors.append(args[0] % args[1:])

        error = info = warning

    storage = LvmStorage(config, runner, host=host, etcd_connect=etcd_client.connect, log=Log())
    # the VG's catalog as every host reads it: the thin disks of all hosts (names unique in the VG)
    names = ["h%02d-d%02d" % (h, d) for h in range(spec["agents"]) for d in range(spec["disks"])]
    catalog = [ThinDisk(VG, name, GIB, 64 * GIB, EXTENT, paths=["/nonexistent/%s/%s" % (VG, name)]) for name in names]
    mine = [d for d in catalog if d.name.startswith("h%02d-" % number)]
    for disk in mine:
        runner.sizes[(VG, disk.name)] = disk.size
    interval = DEFAULTS["sweep_interval"] / spec["speed"]
    extend_every = spec["extend_interval"] / spec["speed"]
    rnd = random.Random(number)
    stop = threading.Event()
    counts = dict(sweeps=0, extends=0, failed=0, refreshed=0)

    def work():
        next_sweep = time.monotonic() + rnd.uniform(0, interval)  # hosts do not sweep in step
        next_extend = time.monotonic() + rnd.uniform(0, extend_every)
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_extend:
                disk = mine[(number + counts["extends"] + counts["failed"]) % len(mine)]  # each in turn
                timings = {}
                try:
                    size = storage.extend(disk, disk.size + 64 * MIB, timings)
                    disk.size = size
                    storage.published(disk, size, sum(timings.values()))
                    counts["extends"] += 1
                except Exception as exc:  # pylint: disable=broad-except  # counted, the bench goes on
                    counts["failed"] += 1
                    errors.append("extend: %s" % exc)
                next_extend += extend_every
            if now >= next_sweep:
                counts["refreshed"] += len(storage.after_sweep(catalog))
                storage.register(len(mine))
                counts["sweeps"] += 1
                next_sweep += interval
            stop.wait(max(0.0, min(next_sweep, next_extend) - time.monotonic()))

    worker = threading.Thread(target=work, name="agent")
    worker.start()
    print("READY", flush=True)
    sys.stdin.readline()
    stop.set()
    worker.join(60)
    with open("/proc/self/status") as status:
        rss = [int(line.split()[1]) for line in status if line.startswith("VmRSS:")][0]
    result = dict(counts, requests=dict(REQUESTS), cpu=time.process_time(), rss_kib=rss, errors=errors[-3:],
                  error_count=len(errors))
    storage.close()  # revokes the agent lease: its keys go
    print("RESULT %s" % json.dumps(result), flush=True)
    return 0


# -- the parent --------------------------------------------------------------------------------------
class Server(etcdtest.EtcdServer):
    """etcdtest's member, with the compaction setting of this run."""

    def __init__(self, base_dir, compaction):
        super(Server, self).__init__(base_dir, name="sltv-bench")
        self.compaction = compaction

    def _argv(self):
        argv = super(Server, self)._argv()
        if self.compaction:
            argv += ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", self.compaction]
        return argv


def post(endpoint, path, body):
    request = urllib.request.Request(endpoint + "/v3" + path, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


def count_keys(endpoint, prefix=None):
    if prefix is None:
        body = dict(key=etcd_client.b64("\0"), range_end=etcd_client.b64("\0"), count_only=True)
    else:
        body = dict(key=etcd_client.b64(prefix), range_end=etcd_client.b64(prefix_end(prefix)), count_only=True)
    reply = post(endpoint, "/kv/range", body)
    return int(reply.get("count", 0)), int(reply["header"]["revision"])


def etcd_metrics(endpoint):
    wanted = ("etcd_server_proposals_committed_total", "etcd_mvcc_db_total_size_in_bytes",
              "etcd_mvcc_db_total_size_in_use_in_bytes", "process_cpu_seconds_total", "grpc_server_handled_total")
    values = dict.fromkeys(wanted, 0.0)
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as response:
        for line in response.read().decode("utf-8").splitlines():
            if line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in values:
                values[name] += float(line.rsplit(" ", 1)[1])
    return values


def sample(endpoint, pid):
    keys, revision = count_keys(endpoint)
    row = dict(at=time.monotonic(), keys=keys, revision=revision,
               leases=len(post(endpoint, "/lease/leases", {}).get("leases", [])))
    for kind in KINDS:
        row[kind] = count_keys(endpoint, "%s/%s/" % (PREFIX, kind))[0]
    row.update(etcd_metrics(endpoint))
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    row["etcd_cpu"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return row


def start_agents(options, endpoint, workdir):
    spec = dict(endpoint=endpoint, agents=options.agents, disks=options.disks, speed=options.speed,
                extend_interval=options.extend_interval)
    spec_path = os.path.join(workdir, "spec.json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    procs = []
    for number in range(options.agents):
        procs.append(subprocess.Popen(["nice", "-n", "19", sys.executable, os.path.abspath(__file__), "--agent",
                                       str(number), spec_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      universal_newlines=True))
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit("an agent process ended before READY (exit %s)" % proc.wait())
    return procs


def stop_agents(procs):
    results = []
    for proc in procs:
        if proc.poll() is None:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
    for proc in procs:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT "):]))
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return results


def rate(rows, field):
    seconds = rows[-1]["at"] - rows[0]["at"]
    return (rows[-1][field] - rows[0][field]) / seconds if seconds > 0 else float("nan")


def report(options, rows, results, seconds):
    print("\n%6s %6s %6s %7s %5s %6s %8s %9s %9s %7s %9s %9s" % (
        "t s", "keys", "agents", "extends", "locks", "leases", "revision", "props/s", "grpc/s", "etcd %",
        "DB MiB", "in use"))
    for before, row in zip(rows, rows[1:]):
        span = row["at"] - before["at"]
        print("%6.0f %6d %6d %7d %5d %6d %8d %9.1f %9.1f %7.2f %9.2f %9.2f" % (
            row["at"] - rows[0]["at"], row["keys"], row["agents"], row["extends"], row["locks"], row["leases"],
            row["revision"],
            (row["etcd_server_proposals_committed_total"] - before["etcd_server_proposals_committed_total"]) / span,
            (row["grpc_server_handled_total"] - before["grpc_server_handled_total"]) / span,
            (row["etcd_cpu"] - before["etcd_cpu"]) / span * 100,
            row["etcd_mvcc_db_total_size_in_bytes"] / MIB, row["etcd_mvcc_db_total_size_in_use_in_bytes"] / MIB))
    agents = len(results)
    requests = {}
    for result in results:
        for path, count in result["requests"].items():
            requests[path] = requests.get(path, 0) + count
    total = sum(requests.values())
    print("\nrequests from the %d agents in %.0f s: %d = %.1f/s, %.3f/s per agent (%.2f per agent sweep); by path: %s"
          % (agents, seconds, total, total / seconds, total / seconds / agents,
             total / float(sum(r["sweeps"] for r in results) or 1),
             ", ".join("%s %.3f/s" % (path, count / seconds / agents)
                       for path, count in sorted(requests.items(), key=lambda item: -item[1]))))
    print("agents: sweeps %d, extends %d (failed %d), refreshes %d, errors logged %d; CPU %.3f s = %.3f %% per agent; "
          "RSS %.1f MiB per agent (max)"
          % (sum(r["sweeps"] for r in results), sum(r["extends"] for r in results),
             sum(r["failed"] for r in results), sum(r["refreshed"] for r in results),
             sum(r["error_count"] for r in results), sum(r["cpu"] for r in results) / agents,
             sum(r["cpu"] for r in results) / agents / seconds * 100, max(r["rss_kib"] for r in results) / 1024.0))
    for result in results:
        if result["errors"]:
            print("  e.g. %s" % result["errors"][-1])
            break
    print("etcd: %.1f proposals/s (%.3f per agent per s), %.1f grpc requests/s, CPU %.2f %%, revisions +%.1f/s"
          % (rate(rows, "etcd_server_proposals_committed_total"),
             rate(rows, "etcd_server_proposals_committed_total") / agents, rate(rows, "grpc_server_handled_total"),
             rate(rows, "etcd_cpu") * 100, rate(rows, "revision")))

    third = max(1, len(rows) // 3)
    first, last = rows[1:1 + third] or rows[:1], rows[-third:]
    bound = agents + agents * options.disks + 1
    verdicts = []
    for field, limit in (("keys", bound), ("leases", agents)):  # one lease per agent, its locks' too
        peak_first, peak_last = max(r[field] for r in first), max(r[field] for r in last)
        grown = peak_last > max(peak_first, rows[0][field]) and max(r[field] for r in rows) > limit
        verdicts.append(not grown and max(r[field] for r in rows) <= limit)
        print("%-7s max %d (first third %d, last third %d; bound %d): %s"
              % (field, max(r[field] for r in rows), peak_first, peak_last, limit,
                 "bounded" if verdicts[-1] else "NOT bounded"))
    for field, label in (("etcd_mvcc_db_total_size_in_bytes", "DB size"),
                         ("etcd_mvcc_db_total_size_in_use_in_bytes", "DB in use")):
        half = rows[len(rows) // 2:]
        print("%-9s %.2f -> %.2f MiB; over the second half %+.1f KiB/min = %+.1f MiB/day" % (
            label, rows[0][field] / MIB, rows[-1][field] / MIB, rate(half, field) * 60 / 1024,
            rate(half, field) * 86400 / MIB))
    if not options.compaction:
        print("(no auto-compaction in this run: every revision stays; --compaction 5m shows what it bounds)")
    print("goals: keys and leases bounded: %s" % ("met" if all(verdicts) else "NOT met"))
    failed = sum(r["failed"] for r in results)
    if failed:  # the figures are only worth something with the extends they were made under
        print("FAILED: %d extends failed (see the example above)" % failed)
    return 0 if all(verdicts) and not failed else 1


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--agent":
        with open(sys.argv[3]) as handle:
            return agent_main(int(sys.argv[2]), json.load(handle))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50, help="agent processes (hosts), default 50")
    parser.add_argument("--disks", type=int, default=10, help="thin disks per host (default 10)")
    parser.add_argument("--seconds", type=int, default=300, help="seconds to run (default 300)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="divide the sweep interval (5 s) and the extend interval by this (default 1)")
    parser.add_argument("--extend-interval", type=float, default=15.0,
                        help="seconds between two extends of one agent (default 15: 10 disks have their "
                             "records after 150 s)")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between two samples (default 15)")
    parser.add_argument("--compaction", default=None,
                        help="etcd's --auto-compaction-retention (periodic mode), e.g. 5m; default none")
    options = parser.parse_args()
    if options.agents > 100:
        raise SystemExit("--agents: at most 100 (host numbers have two digits)")
    workdir = tempfile.mkdtemp(prefix="sltv-bench-etcd-agents-", dir="/var/tmp")
    server = Server(workdir, options.compaction)
    procs = []
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))
    try:
        server.start()
        print("etcd %s at %s (compaction %s); %d agents x %d thin disks in one VG, sweep every %.2f s, "
              "an extend per agent every %.1f s (speed x%g), one lease per agent (its locks' too), TTL %d s"
              % (subprocess.run([etcdtest.ETCD_BIN, "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                                check=True).stdout.split()[2], server.endpoint, options.compaction or "none",
                 options.agents, options.disks, DEFAULTS["sweep_interval"] / options.speed,
                 options.extend_interval / options.speed, options.speed, LOCK_SETTINGS_DEFAULTS["lock_ttl"]))
        pid = server.proc.pid
        rows = [sample(server.endpoint, pid)]
        started = time.monotonic()
        procs = start_agents(options, server.endpoint, workdir)
        print("%d agent processes started in %.1f s" % (len(procs), time.monotonic() - started))
        rows = [sample(server.endpoint, pid)]
        began = time.monotonic()
        while time.monotonic() - began < options.seconds:
            time.sleep(min(options.sample, max(0.0, options.seconds - (time.monotonic() - began))))
            rows.append(sample(server.endpoint, pid))
            print("  %4.0f s: %d keys, %d leases, DB %.2f MiB" % (
                rows[-1]["at"] - began, rows[-1]["keys"], rows[-1]["leases"],
                rows[-1]["etcd_mvcc_db_total_size_in_bytes"] / MIB), flush=True)
        seconds = time.monotonic() - began
        results = stop_agents(procs)
        status = report(options, rows, results, seconds)
        time.sleep(1.0)
        after = sample(server.endpoint, pid)
        print("after the agents stopped (their leases revoked): %d keys, %d leases" % (after["keys"], after["leases"]))
        return status
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""etcd VG lock: acquire+release latency and contended throughput, against bare etcd round trips.

Starts its own etcd on 127.0.0.1 (Debian etcd-server), like the tests. In one run it measures:
- a bare transaction round trip (put-if-absent + delete: the least any etcd lock costs) = baseline;
- EtcdVgLock acquire+release, uncontended, p50/p99 over --cycles (default 1000);
- contended throughput: --procs processes (default 4) each taking the lock --per-proc times;
- the local lock-file backend, for scale.
Goals (issue 12): lock p50 <= 2 x the baseline p50, contention >= 200 locks/s with 4 processes.
A lock is two requests once a process has its lease (the transaction, the delete guarded by the token;
the lease is the process's, granted once), like the baseline; both go through EtcdClient's connection.
Run: python3 bench/bench_etcd_lock.py
"""
from __future__ import absolute_import, division, print_function

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402
conftest.link_collection()  # build/collections/ansible_collections/sltv/core -> this checkout
from etcdtest import EtcdServer  # noqa: E402  (a real etcd, as the tests start it)

from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client as ec  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import make_vg_lock  # noqa: E402


def percentile(samples, pct):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(pct / 100.0 * (len(ordered) - 1))))]


def bare_txn_cycles(endpoint, cycles):
    client = ec.EtcdClient(endpoint)
    key = "/bench/bare"
    samples = []
    for _round in range(cycles):
        started = time.perf_counter()
        client.transaction(ec.txn_body([ec.compare_create_revision(key, 0)], [ec.request_put(key, "x")],
                                       [ec.request_range(key)]))
        client.delete(key)
        samples.append(time.perf_counter() - started)
    return samples


def lock_cycles(settings, cycles, vg="bench"):
    samples = []
    for _round in range(cycles):
        lock = make_vg_lock(settings, vg, "bench")
        started = time.perf_counter()
        lock.acquire()
        lock.release()
        samples.append(time.perf_counter() - started)
    return samples


def _contender(settings, count, counter_path):
    for _round in range(count):
        lock = make_vg_lock(settings, "contended", "bench-%d" % os.getpid())
        with lock:
            lock.ensure_held()
            with open(counter_path, "r+") as counter:  # a read-modify-write the lock must protect
                value = int(counter.read() or 0)
                counter.seek(0)
                counter.write(str(value + 1))
                counter.truncate()


def contended(settings, procs, per_proc):
    handle, counter_path = tempfile.mkstemp()
    os.close(handle)
    started = time.perf_counter()
    workers = [multiprocessing.Process(target=_contender, args=(settings, per_proc, counter_path)) for _round in range(procs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    with open(counter_path) as counter:
        total = int(counter.read())
    os.remove(counter_path)
    return elapsed, total


def report(label, samples, base_p50=None):
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    ratio = "" if base_p50 is None else "   x%.2f of baseline p50" % (p50 / base_p50)
    print("%-36s p50 %7.2f ms   p99 %7.2f ms   max %7.2f ms%s" % (label, p50, p99, max(samples) * 1000, ratio))
    return p50


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--per-proc", type=int, default=100)
    options = parser.parse_args()
    server = EtcdServer(tempfile.mkdtemp(prefix="sltv-bench-etcd-"))
    server.start()
    try:
        settings = server.client_settings(lock_prefix="/bench")
        print("etcd %s, %d cycles each" % (server.endpoint, options.cycles))
        base = report("bare txn put-if-absent + delete", bare_txn_cycles(server.endpoint, options.cycles))
        lock_p50 = report("EtcdVgLock acquire+release", lock_cycles(settings, options.cycles), base)
        print("goal lock p50 <= 2 x baseline p50: %.2f x (%s)" % (lock_p50 / base, "met" if lock_p50 <= 2 * base else "NOT met"))
        local = dict(settings, lock_backend="local")
        report("local lock file acquire+release", lock_cycles(local, options.cycles, "bench-local"), base)
        elapsed, total = contended(settings, options.procs, options.per_proc)
        expected = options.procs * options.per_proc
        print("contended: %d processes x %d = %d critical sections in %.2f s = %.0f locks/s; counter %d (%s)"
              % (options.procs, options.per_proc, expected, elapsed, expected / elapsed, total,
                 "exact" if total == expected else "LOST UPDATES"))
        print("goal >= 200 locks/s with 4 processes: %s" % ("met" if expected / elapsed >= 200 else "NOT met"))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

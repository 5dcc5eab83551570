# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent (or a bare libvirt client) of ``bench_agent_local.py idle``, in its own process.

    agent_child.py agent|bare SPEC_JSON    (started by bench_agent_local.py; prints READY, waits for a
                                            line on stdin, prints RESULT)

It imports what the agent imports (agent_main's modules, libvirt) and the loop stand-in, nothing of
the tests' harness (pytest, conftest): its RSS is the agent's as systemd runs it. The agent runs its
own libvirt event loop, as agent_main starts it. With lock_backend=local (as here) the agent never
imports the etcd client; ``--with-etcd-client`` imports it anyway, for the RSS of an etcd host.
"""
from __future__ import absolute_import, division, print_function

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "build", "collections"))  # linked by the parent bench (conftest)
import libvirt  # noqa: E402
from agent_standin import LoopStorage  # noqa: E402

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config  # noqa: E402
from ansible_collections.sltv.core.plugins.module_utils.agent.thin_agent import (  # noqa: E402
    EVENT_BLOCK_THRESHOLD,
    EVENT_IO_ERROR_REASON,
    EVENT_LIFECYCLE,
    Agent,
)

VG = "vg_standin"  # bench_agent_local.VG
# What agent_main (the program systemd runs) loads, so that this process's RSS is the agent's.
importlib.import_module("ansible_collections.sltv.core.plugins.module_utils.agent.agent_main")


def start_agent(agent):
    """Start ``agent`` (connect) and run it in a daemon thread; returns the function that stops it."""
    stop = threading.Event()
    worker = threading.Thread(target=agent.run, args=(stop,), name="agent")
    worker.daemon = True
    agent.start()
    worker.start()

    def stopped():
        stop.set()
        worker.join(10)

    return stopped


def run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


def child_main(kind, spec_path):
    """The agent (or a bare libvirt client) in its own process, for /proc accounting."""
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through stdin
    with open(spec_path) as handle:
        spec = json.load(handle)
    libvirt.registerErrorHandler(lambda *_args: None, None)  # errors are raised, not printed too
    if kind == "bare":
        libvirt.virEventRegisterDefaultImpl()
        loop = threading.Thread(target=run_event_loop, name="libvirt-events")
        loop.daemon = True
        loop.start()
        conn = libvirt.open(spec["uri"])
        conn.setKeepAlive(5, 3)
        conn.registerCloseCallback(lambda *args: None, None)
        for event in (EVENT_BLOCK_THRESHOLD, EVENT_IO_ERROR_REASON, EVENT_LIFECYCLE):
            conn.domainEventRegisterAny(None, event, lambda *args: None, None)
        print("READY %s" % json.dumps(dict(process_time=time.process_time())), flush=True)
        sys.stdin.readline()
        print("RESULT %s" % json.dumps(dict(process_time=time.process_time())), flush=True)
        conn.close()
        return 0
    storage = LoopStorage(VG)
    for disk in spec["disks"]:
        storage.add(disk["name"], argparse.Namespace(path=disk["path"], image=disk["image"], size_mib=disk["mib"]),
                    disk["cap"])
    agent = Agent(parse_agent_config(dict(vgs=[VG])), storage)  # its own event loop, as agent_main runs it
    durations, stats_calls = [], []
    sweep, call = agent.sweep, agent._call

    def timed_sweep():
        started = time.monotonic()
        sweep()
        durations.append(time.monotonic() - started)

    def timed_call(func, *args):
        # libvirtd's part of a sweep: its one getAllDomainStats call, timed alone
        started = time.monotonic()
        try:
            return call(func, *args)
        finally:
            if getattr(func, "__name__", "") == "getAllDomainStats":
                stats_calls.append(time.monotonic() - started)

    agent._call = timed_call

    agent.sweep = timed_sweep
    stop = start_agent(agent)
    while not agent.ready:
        time.sleep(0.01)
    # The first sweep grows every new disk whose headroom is below what the assumed initial write
    # rate needs (initial_write_rate): the window starts once those extends are done (at most 300 s).
    settled, last, deadline = time.monotonic(), len(agent.history), time.monotonic() + 300
    while time.monotonic() < deadline and time.monotonic() - settled < 2 * agent.config.sweep_interval:
        time.sleep(0.2)
        if len(agent.history) != last or any(w.extending for w in list(agent.watches.values())):
            settled, last = time.monotonic(), len(agent.history)
    started = time.monotonic()

    def counters():
        return dict(sweeps=agent.metrics.sweeps.value(), libvirt_calls=agent.libvirt_calls,
                    sweep_calls=list(agent.sweep_calls), watches=len(agent.watches),
                    armed=sum(1 for w in agent.watches.values() if w.armed is not None),
                    extends=len(agent.history), reconnects=agent.metrics.reconnects.value(),
                    process_time=time.process_time(), durations=list(durations), stats_calls=list(stats_calls),
                    events=sum(agent.metrics.events.value(type=t) for t in ("block_threshold", "io_error",
                                                                            "lifecycle")))

    print("READY %s" % json.dumps(counters()), flush=True)
    sys.stdin.readline()
    result = counters()
    result["seconds"] = time.monotonic() - started
    stop()
    agent.close()
    print("RESULT %s" % json.dumps(result), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("agent", "bare"))
    parser.add_argument("spec")
    parser.add_argument("--with-etcd-client", action="store_true")
    options = parser.parse_args()
    if options.with_etcd_client:
        from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client  # noqa: F401
    return child_main(options.kind, options.spec)


if __name__ == "__main__":
    sys.exit(main())

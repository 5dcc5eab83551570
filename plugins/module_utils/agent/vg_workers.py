# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One worker thread per VG for the agent's extends (and one for moving claims after a migration).

An extend waits for its VG's lock (up to ``lock_timeout`` while etcd is down or a holder is stuck)
and runs bounded lvm commands. Each VG gets its own thread and queue, so a wait on one VG never
delays the extends of another; within a VG, extends run one at a time, in order. Jobs are plain
callables; they report back through the agent's event queue (the agent's state has one writer).
On stop, close() waits for the running jobs (their lvm commands) and drops the others.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import logging
import threading
import time


class VgWorkers(object):
    def __init__(self, log=None):
        self.log = log or logging.getLogger("sltv-agent")
        self._guard = threading.Lock()
        self._queues = {}    # key -> deque of (what, job) not started yet
        self._wakeups = {}   # key -> Condition on _guard: a job was queued, or close() began
        self._threads = {}
        self._running = {}   # key -> what its worker runs now
        self._closing = False

    def submit(self, vg, job, what="a job"):
        """Run ``job()`` on the worker of ``vg`` (any key; started on first use); ``what`` names it in
        the log at close (``the extend of vg0/d1``). Once close() began, nothing is run."""
        with self._guard:
            if self._closing:
                return
            if vg not in self._threads:
                self._queues[vg] = collections.deque()
                self._wakeups[vg] = threading.Condition(self._guard)
                thread = threading.Thread(target=self._work, args=(vg,), name="worker-%s" % vg)
                thread.daemon = True  # a job stuck past close()'s bound must not keep the process from exiting
                self._threads[vg] = thread
                thread.start()
            self._queues[vg].append((what, job))
            self._wakeups[vg].notify()

    def _work(self, vg):
        jobs = self._queues[vg]
        while True:
            with self._guard:
                while not jobs and not self._closing:
                    self._wakeups[vg].wait()
                if self._closing:
                    return  # what is still queued is dropped (see close)
                what, job = jobs.popleft()
                self._running[vg] = what
            try:
                job()
            except Exception:  # pylint: disable=broad-except  # the worker must outlive a surprise
                self.log.exception("unexpected error in %s (the agent goes on)", what)
            finally:
                with self._guard:
                    del self._running[vg]

    def close(self, timeout):
        """Drop the jobs not started yet and wait for the running ones, up to ``timeout`` from now.

        A running job may be in an lvm command (lvextend: a metadata commit, a device suspend and
        resume); once the agent has exited, systemd kills what is left in the unit (KillMode=mixed),
        and a kill between suspend and resume leaves the LV suspended, its guests' I/O hung. The
        caller gives one lvm command and its wait for the host's lvm lock: every job here was
        running when close began, so each has that long (they run side by side, on their own VGs).
        The dropped ones cost nothing: at its next start the agent reads the LVs and the domains'
        allocations again and extends, arms and resumes what needs it then."""
        with self._guard:
            self._closing = True
            dropped = [what for jobs in self._queues.values() for what, _job in jobs]
            for jobs in self._queues.values():
                jobs.clear()
            running = sorted(self._running.values())
            threads = list(self._threads.values())
            for wakeup in self._wakeups.values():
                wakeup.notify_all()
        if dropped:
            self.log.info("stopping: not started, dropped (the next start does it again if still needed): %s",
                          ", ".join(dropped))
        for what in running:
            self.log.info("stopping: waiting up to %gs for %s (its lvm command must not be killed halfway)",
                          timeout, what)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self._guard:
            left = sorted(self._running.values())
        for what in left:
            self.log.error("stopping: %s still runs after %gs: left to it, the agent exits (systemd kills what is "
                           "left of it)", what, timeout)

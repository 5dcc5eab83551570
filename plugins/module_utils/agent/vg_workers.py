# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One worker thread per VG for the agent's extends (and one for moving claims after a migration).

An extend waits for its VG's lock (up to ``lock_timeout`` while etcd is down or a holder is stuck)
and runs bounded lvm commands. Each VG gets its own thread and queue, so a wait on one VG never
delays the extends of another; within a VG, extends run one at a time, in order. Jobs are plain
callables; they report back through the agent's event queue (the agent's state has one writer).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading

try:
    import queue
except ImportError:  # Python 2 (ansible-test imports every module_utils with it)
    import Queue as queue  # noqa: N813

STOP = None  # the job that ends a worker


class VgWorkers(object):
    def __init__(self, log=None):
        self.log = log
        self._queues = {}
        self._threads = {}
        self._guard = threading.Lock()

    def submit(self, vg, job):
        """Run ``job()`` on the worker of ``vg`` (any key; started on first use)."""
        with self._guard:
            jobs = self._queues.get(vg)
            if jobs is None:
                jobs = self._queues[vg] = queue.Queue()
                thread = threading.Thread(target=self._work, args=(jobs,), name="worker-%s" % vg)
                thread.daemon = True  # a hung lvm command must not keep the process from exiting
                self._threads[vg] = thread
                thread.start()
        jobs.put(job)

    def _work(self, jobs):
        while True:
            job = jobs.get()
            if job is STOP:
                return
            try:
                job()
            except Exception:  # pylint: disable=broad-except  # the worker must outlive a surprise
                if self.log:
                    self.log.exception("unexpected error in an extend (the agent goes on)")

    def close(self, timeout=5.0):
        """Stop every worker after the jobs already queued; wait up to ``timeout`` in all."""
        with self._guard:
            queues, threads = list(self._queues.values()), list(self._threads.values())
            self._queues, self._threads = {}, {}
        for jobs in queues:
            jobs.put(STOP)
        for thread in threads:
            thread.join(timeout / max(len(threads), 1))

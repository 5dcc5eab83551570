# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""VgWorkers: one worker per VG, and its stop. close() drops the jobs not started and waits for the
running ones (an lvextend must not be killed between device suspend and resume), each up to the
bound it is given; nothing starts once it began. Jobs here are fakes of an extend (sleeps, gates)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible_collections.sltv.core.plugins.module_utils.agent.vg_workers import VgWorkers


class RecordingLog(object):
    def __init__(self):
        self.lines = []

    def _add(self, level, message, *args):
        self.lines.append((level, message % args))

    def info(self, message, *args):
        self._add("info", message, *args)

    def error(self, message, *args):
        self._add("error", message, *args)

    def exception(self, message, *args):
        self._add("exception", message, *args)

    def text(self, level):
        return "\n".join(line for lvl, line in self.lines if lvl == level)


def slow_job(ran, name, seconds, started=None):
    def job():
        if started is not None:
            started.set()
        time.sleep(seconds)
        ran.append(name)
    return job


def test_jobs_of_a_vg_run_in_order_on_its_own_thread():
    workers, ran, threads = VgWorkers(), [], []
    done = threading.Event()
    for name in ("a", "b", "c"):
        workers.submit("vg0", lambda n=name: (ran.append(n), threads.append(threading.current_thread().name)))
    workers.submit("vg0", done.set)
    assert done.wait(5)
    assert ran == ["a", "b", "c"] and set(threads) == set(["worker-vg0"])
    workers.close(1.0)


def test_close_waits_for_a_running_job_and_returns_after_it():
    log, ran, started = RecordingLog(), [], threading.Event()
    workers = VgWorkers(log)
    workers.submit("vg0", slow_job(ran, "vg0/d1", 0.5, started), what="the extend of vg0/d1")
    assert started.wait(5)
    began = time.monotonic()
    workers.close(10.0)
    took = time.monotonic() - began
    assert ran == ["vg0/d1"]  # finished before close returned
    assert 0.3 < took < 5
    assert "waiting up to 10s for the extend of vg0/d1" in log.text("info")
    assert log.text("error") == ""


def test_queued_jobs_are_dropped_and_never_run():
    log, ran, started = RecordingLog(), [], threading.Event()
    workers = VgWorkers(log)
    workers.submit("vg0", slow_job(ran, "vg0/d1", 0.3, started), what="the extend of vg0/d1")
    workers.submit("vg0", slow_job(ran, "vg0/d2", 0), what="the extend of vg0/d2")  # queued behind d1
    workers.submit("vg0", slow_job(ran, "vg0/d3", 0), what="the extend of vg0/d3")
    assert started.wait(5)
    workers.close(10.0)
    time.sleep(0.2)  # a worker that went on would have run d2 by now
    assert ran == ["vg0/d1"]
    assert "dropped (the next start does it again if still needed): the extend of vg0/d2, the extend of vg0/d3" \
        in log.text("info")


def test_no_job_starts_after_close():
    ran, started = [], threading.Event()
    workers = VgWorkers(RecordingLog())
    workers.submit("vg0", slow_job(ran, "vg0/d1", 0.2, started))
    assert started.wait(5)
    closing = threading.Thread(target=workers.close, args=(10.0,))
    closing.start()
    time.sleep(0.05)  # close() began, d1 still runs
    workers.submit("vg0", slow_job(ran, "vg0/d2", 0))  # its worker is still alive: it must not take this
    workers.submit("vg1", slow_job(ran, "vg1/d1", 0))  # nor a new worker start
    closing.join(5)
    assert not closing.is_alive()
    time.sleep(0.2)
    assert ran == ["vg0/d1"]


def test_each_running_job_gets_the_whole_bound():
    """They run side by side (one per VG): each has the bound from the moment close began, it is
    not split between them."""
    log, ran, started = RecordingLog(), [], [threading.Event(), threading.Event()]
    workers = VgWorkers(log)
    workers.submit("vg0", slow_job(ran, "vg0/d1", 0.5, started[0]))
    workers.submit("vg1", slow_job(ran, "vg1/d1", 0.5, started[1]))
    assert started[0].wait(5) and started[1].wait(5)
    began = time.monotonic()
    workers.close(1.0)
    assert sorted(ran) == ["vg0/d1", "vg1/d1"] and log.text("error") == ""
    assert time.monotonic() - began < 0.9  # together, not one after the other


def test_a_job_stuck_past_the_bound_is_left_and_logged():
    log, gate, started = RecordingLog(), threading.Event(), threading.Event()
    workers = VgWorkers(log)

    def stuck():
        started.set()
        gate.wait(10)

    workers.submit("vg0", stuck, what="the extend of vg0/d1")
    assert started.wait(5)
    try:
        began = time.monotonic()
        workers.close(0.3)
        took = time.monotonic() - began
    finally:
        gate.set()
    assert 0.25 < took < 2  # returned at the bound
    assert "the extend of vg0/d1 still runs after 0.3s: left to it" in log.text("error")


def test_a_failing_job_is_logged_and_the_worker_goes_on():
    log, done = RecordingLog(), threading.Event()
    workers = VgWorkers(log)

    def broken():
        raise RuntimeError("surprise")

    workers.submit("vg0", broken, what="the extend of vg0/d1")
    workers.submit("vg0", done.set)
    assert done.wait(5)
    assert "unexpected error in the extend of vg0/d1" in log.text("exception")
    workers.close(1.0)


def test_close_without_jobs_returns_at_once():
    workers = VgWorkers()
    done = threading.Event()
    workers.submit("vg0", done.set)
    assert done.wait(5)
    began = time.monotonic()
    workers.close(10.0)
    assert time.monotonic() - began < 1

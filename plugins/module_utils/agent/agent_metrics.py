# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent's Prometheus metrics, written by prometheus_client (Debian: python3-prometheus-client).

The agent keeps its own thread-safe values (counters, gauges and histograms with labels) because it
reads them back and drops the series of disks it no longer watches; ``Metrics`` is the collector of a
registry of its own, and prometheus_client writes the text format. Custom families, not
prometheus_client's Counter/Gauge/Histogram: those add ``_created`` samples (no switch before 0.17,
Debian 12 has 0.16) and write ``le="1.0"`` where the agent has always written ``le="1"``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading

try:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from socketserver import ThreadingMixIn
except ImportError:  # Python 2 (ansible-test imports every module_utils with it); the agent needs Python 3
    BaseHTTPRequestHandler = HTTPServer = ThreadingMixIn = object

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # the agent says so at start (agent_main); the modules do not need it
    CollectorRegistry = generate_latest = CounterMetricFamily = GaugeMetricFamily = HistogramMetricFamily = None
    HAS_PROMETHEUS_CLIENT = False

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Text format 0.0.4, whatever the scraper asks for (prometheus_client 0.26's CONTENT_TYPE_LATEST is 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _bound(value):
    """A bucket's ``le`` label as the agent has always written it: 1, not 1.0."""
    return "%d" % value if float(value).is_integer() else repr(float(value))


class _Family(object):
    family_class = None

    def __init__(self, name, help_text, labels, lock):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = lock
        self._values = {}

    def _key(self, labels):
        if set(labels) != set(self.label_names):
            raise ValueError("metric %s takes labels %s, got %s" % (self.name, self.label_names, sorted(labels)))
        return tuple(str(labels[name]) for name in self.label_names)

    def collect(self):
        """prometheus_client's metric family of the values, series in the order of their label values."""
        family = self.family_class(self.name, self.help, labels=self.label_names)
        with self._lock:
            for key, value in sorted(self._values.items()):
                self._add_series(family, key, value)
        return family


class Counter(_Family):
    family_class = CounterMetricFamily

    def inc(self, amount=1, **labels):
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels):
        with self._lock:
            return self._values.get(self._key(labels), 0)

    @staticmethod
    def _add_series(family, key, value):
        family.add_metric(key, value)


class Gauge(Counter):
    family_class = GaugeMetricFamily

    def set(self, value, **labels):
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def remove(self, **labels):
        with self._lock:
            self._values.pop(self._key(labels), None)

    def keep_only(self, keys):
        """Drop every series whose label values are not in ``keys`` (disks no longer watched)."""
        keep = set(tuple(str(v) for v in key) for key in keys)
        with self._lock:
            for key in list(self._values):
                if key not in keep:
                    del self._values[key]


class Histogram(_Family):
    family_class = HistogramMetricFamily

    def __init__(self, name, help_text, labels, lock, buckets=LATENCY_BUCKETS):
        super(Histogram, self).__init__(name, help_text, labels, lock)
        self.buckets = tuple(buckets)

    def observe(self, value, **labels):
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.get(key, ([0] * len(self.buckets), [0, 0.0]))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            total[0] += 1
            total[1] += value
            self._values[key] = (counts, total)

    def count(self, **labels):
        with self._lock:
            entry = self._values.get(self._key(labels))
            return entry[1][0] if entry else 0

    def _add_series(self, family, key, value):
        counts, (count, total) = value
        buckets = [(_bound(bound), hits) for bound, hits in zip(self.buckets, counts)] + [("+Inf", count)]
        family.add_metric(key, buckets, total)


class Metrics(object):
    """Every metric of the agent, by attribute (names in /tmp/plan's interface and the dashboard)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._families = []
        self.registry = CollectorRegistry()  # its own: no process, platform or gc collectors
        disk = ("vg", "disk", "domain")
        self.up = self._add(Gauge, "sltv_agent_up", "1 while the agent runs")
        self.info = self._add(Gauge, "sltv_agent_info", "The agent's host and version", ("host", "version"))
        self.libvirt_connected = self._add(Gauge, "sltv_agent_libvirt_connected", "1 while connected to libvirt")
        self.etcd_up = self._add(Gauge, "sltv_agent_etcd_up", "1 when the last etcd request worked (1 with the local lock)")
        self.vg_up = self._add(Gauge, "sltv_agent_vg_up", "1 while the VG is seen on this host, 0 while it is missing",
                               ("vg",))
        self.vg_metadata_free = self._add(Gauge, "sltv_agent_vg_metadata_free_bytes",
                                          "Free bytes in the VG's metadata area (a full one fails every lvm write)",
                                          ("vg",))
        self.disks_watched = self._add(Gauge, "sltv_agent_disks_watched", "Thin disks of running local domains")
        self.physical = self._add(Gauge, "sltv_agent_disk_physical_bytes", "LV size of a thin disk", disk)
        self.allocation = self._add(Gauge, "sltv_agent_disk_allocation_bytes", "Highest offset written in the LV", disk)
        self.cap = self._add(Gauge, "sltv_agent_disk_cap_bytes", "Largest LV size the disk may reach", disk)
        self.headroom = self._add(Gauge, "sltv_agent_disk_headroom_bytes", "LV size minus allocation", disk)
        self.write_rate = self._add(Gauge, "sltv_agent_disk_write_rate_bytes", "Smoothed write rate, bytes/s", disk)
        self.extend_duration = self._add(Histogram, "sltv_agent_extend_duration_seconds",
                                         "Extend latency by phase (detect, lock, fence, lvextend, verify, rearm, total)",
                                         ("phase",))
        self.lock_wait = self._add(Histogram, "sltv_agent_lock_wait_seconds", "Time waiting for the VG lock")
        self.extends = self._add(Counter, "sltv_agent_extends_total", "LV extends done", ("vg", "trigger"))
        self.extend_failures = self._add(Counter, "sltv_agent_extend_failures_total", "Extends that failed",
                                         ("vg", "reason"))
        self.events = self._add(Counter, "sltv_agent_events_total", "libvirt events received", ("type",))
        self.pauses = self._add(Counter, "sltv_agent_pauses_seen_total", "Domains seen paused on an I/O error",
                                ("reason",))
        self.resumes = self._add(Counter, "sltv_agent_resumes_total", "Domains resumed after an ENOSPC pause")
        self.errors = self._add(Counter, "sltv_agent_errors_total", "Errors by kind", ("kind",))
        self.refreshes = self._add(Counter, "sltv_agent_refreshes_total",
                                   "lvchange --refresh after another host extended an LV active here")
        self.sweeps = self._add(Counter, "sltv_agent_sweeps_total", "Reconciliation sweeps")
        self.sweep_duration = self._add(Histogram, "sltv_agent_sweep_duration_seconds", "Duration of a sweep")
        self.reconnects = self._add(Counter, "sltv_agent_libvirt_reconnects_total", "Reconnections to libvirt")
        self.registry.register(self)

    def _add(self, cls, name, help_text, labels=()):
        family = cls(name, help_text, labels, self._lock)
        self._families.append(family)
        return family

    def collect(self):
        """The registry's collector: every family, read under one lock (a consistent scrape)."""
        with self._lock:
            return [family.collect() for family in self._families]

    def render(self):
        return generate_latest(self.registry).decode("utf-8")


class _ThreadingServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(metrics, address, port):
    """Serve ``/metrics`` in a daemon thread; return the server (``shutdown()`` stops it).

    Not prometheus_client's start_http_server: 0.16's returns nothing (no shutdown at stop, no port
    when bound to port 0), and to Prometheus's Accept header it answers OpenMetrics, gzipped, on any
    path. This one serves the text format 0.0.4 as the agent always has, and 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            body = metrics.render().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # scrapes every few seconds would flood the journal

    server = _ThreadingServer((address, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="sltv-metrics")
    thread.daemon = True
    thread.start()
    return server

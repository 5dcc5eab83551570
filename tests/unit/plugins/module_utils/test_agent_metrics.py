# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's metrics: Prometheus text exposition format, and the HTTP endpoint on an ephemeral port."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    Metrics,
    serve,
)

try:
    from urllib.error import HTTPError
    from urllib.request import urlopen
except ImportError:  # Python 2: the agent needs Python 3
    HTTPError = urlopen = None

# The exposition of populated() as the agent wrote it before prometheus_client (main at e4e16b6), byte for byte.
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "agent_metrics_exposition.txt")


def family(cls, labels=(), name="m", **kwargs):
    return cls(name, "Help text", labels, threading.RLock(), **kwargs)


def samples(fam):
    """(name, labels, value) of each sample of the family prometheus_client gets from ``fam``."""
    return [(sample.name, sample.labels, sample.value) for sample in fam.collect().samples]


def test_counter_samples():
    counter = family(Counter, ("vg", "trigger"), name="m_total")
    counter.inc(vg="vg0", trigger="threshold")
    counter.inc(2, vg="vg0", trigger="threshold")
    counter.inc(0.5, vg="vg1", trigger="sweep")
    metric = counter.collect()
    assert (metric.name, metric.type, metric.documentation) == ("m", "counter", "Help text")
    # no _created sample (prometheus_client's own Counter would add one)
    assert samples(counter) == [("m_total", {"vg": "vg0", "trigger": "threshold"}, 3),
                                ("m_total", {"vg": "vg1", "trigger": "sweep"}, 0.5)]
    assert counter.value(vg="vg0", trigger="threshold") == 3
    assert counter.value(vg="vg9", trigger="x") == 0


def test_unlabelled_metrics():
    counter = family(Counter, name="m_total")
    counter.inc()
    gauge = family(Gauge)
    gauge.set(2 ** 45)
    assert samples(counter) == [("m_total", {}, 1)]
    assert samples(gauge) == [("m", {}, 2 ** 45)]
    assert gauge.collect().type == "gauge"


def test_labels_must_match():
    counter = family(Counter, ("kind",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(reason="x")
    with pytest.raises(ValueError):
        counter.inc()


def test_gauge_set_remove_keep_only():
    gauge = family(Gauge, ("vg", "disk", "domain"))
    gauge.set(5, vg="vg0", disk="d1", domain="a")
    gauge.set(7, vg="vg0", disk="d2", domain="b")
    gauge.set(9, vg="vg0", disk="d3", domain="c")
    gauge.remove(vg="vg0", disk="d3", domain="c")
    gauge.remove(vg="vg0", disk="d3", domain="c")  # twice: no error
    gauge.keep_only([("vg0", "d2", "b")])
    assert samples(gauge) == [("m", {"vg": "vg0", "disk": "d2", "domain": "b"}, 7)]
    gauge.keep_only([])
    assert samples(gauge) == []


def test_histogram_buckets_cumulative():
    hist = family(Histogram, ("phase",), buckets=(0.1, 1.0, 5.0))
    for value in (0.05, 0.1, 0.7, 3.0, 12.0):
        hist.observe(value, phase="total")
    assert hist.collect().type == "histogram"
    found = samples(hist)
    # le as the agent has always written it: "1", not prometheus_client's "1.0"
    assert found[:4] == [
        ("m_bucket", {"phase": "total", "le": "0.1"}, 2),
        ("m_bucket", {"phase": "total", "le": "1"}, 3),
        ("m_bucket", {"phase": "total", "le": "5"}, 4),
        ("m_bucket", {"phase": "total", "le": "+Inf"}, 5),
    ]
    assert found[4] == ("m_count", {"phase": "total"}, 5)
    assert found[5][:2] == ("m_sum", {"phase": "total"}) and found[5][2] == pytest.approx(15.85)
    assert hist.count(phase="total") == 5
    assert hist.count(phase="lock") == 0


def test_histogram_default_buckets_and_no_labels():
    hist = family(Histogram)
    hist.observe(0.007)
    found = samples(hist)
    counts = [value for name, labels, value in found if name == "m_bucket"]
    assert len(counts) == len(LATENCY_BUCKETS) + 1
    assert counts[0] == 0 and counts[1:] == [1] * len(LATENCY_BUCKETS)
    assert found[-3] == ("m_bucket", {"le": "+Inf"}, 1)
    assert found[-2:] == [("m_count", {}, 1), ("m_sum", {}, 0.007)]


def test_render_every_family_once():
    """Every family once, each with HELP and TYPE, and nothing else: the registry is the agent's own,
    without prometheus_client's process, platform and gc collectors."""
    metrics = Metrics()
    metrics.up.set(1)
    metrics.extends.inc(vg="vg0", trigger="threshold")
    metrics.extend_duration.observe(0.3, phase="total")
    text = metrics.render()
    assert text.endswith("\n")
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert helps == types
    assert len(helps) == len(set(helps)) == len(metrics._families)  # pylint: disable=protected-access
    assert all(name.startswith("sltv_agent_") for name in helps)
    families = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert [s.value for s in families["sltv_agent_up"].samples] == [1]
    assert [(s.labels, s.value) for s in families["sltv_agent_extends"].samples] == [
        ({"vg": "vg0", "trigger": "threshold"}, 1)]
    duration = families["sltv_agent_extend_duration_seconds"]
    assert duration.type == "histogram"
    assert ("sltv_agent_extend_duration_seconds_bucket", {"phase": "total", "le": "0.5"}, 1) in [
        (s.name, s.labels, s.value) for s in duration.samples]
    assert families["sltv_agent_extends"].type == "counter"
    assert families["sltv_agent_disk_headroom_bytes"].type == "gauge"


def populated():
    """A Metrics with series in nearly every family: integers, fractions, byte sizes, label values
    to escape, a value on a bucket bound and one past the last; sltv_agent_refreshes_total and
    sltv_agent_libvirt_reconnects_total stay empty (HELP and TYPE only)."""
    metrics = Metrics()
    metrics.up.set(1)
    metrics.info.set(1, host="hv1", version="1.0.0")
    metrics.libvirt_connected.set(1)
    metrics.etcd_up.set(0)
    metrics.vg_up.set(1, vg="vg0")
    metrics.vg_up.set(0, vg="vg1")
    metrics.vg_metadata_free.set(120 * 2 ** 20 + 4096, vg="vg0")
    metrics.disks_watched.set(2)
    plain = dict(vg="vg0", disk="d1", domain="web01")
    odd = dict(vg="vg0", disk='d"2', domain="w\u00e9b\\02\nx")
    for labels, physical, allocation in ((plain, 2 * 2 ** 30, 30 * 2 ** 20), (odd, 10 * 2 ** 40, 3 * 2 ** 40 + 12345)):
        metrics.physical.set(physical, **labels)
        metrics.allocation.set(allocation, **labels)
        metrics.cap.set(2 ** 45, **labels)
        metrics.headroom.set(physical - allocation, **labels)
    metrics.write_rate.set(1234567.891, **plain)
    metrics.write_rate.set(0.0, **odd)
    for phase, value in (("detect", 0.003), ("lock", 0.02), ("lvextend", 0.7), ("total", 1.2), ("total", 31.0),
                         ("total", 0.005)):
        metrics.extend_duration.observe(value, phase=phase)
    metrics.lock_wait.observe(0.5)
    metrics.extends.inc(vg="vg0", trigger="threshold")
    metrics.extends.inc(2, vg="vg0", trigger="threshold")
    metrics.extends.inc(vg="vg0", trigger="sweep")
    metrics.extends.inc(vg="vg1", trigger="enospc")
    metrics.extend_failures.inc(vg="vg0", reason="cap")
    metrics.extend_failures.inc(3, vg="vg0", reason="lock")
    metrics.events.inc(5, type="block_threshold")
    metrics.events.inc(type="device_added")
    metrics.pauses.inc(reason="enospc")
    metrics.resumes.inc()
    metrics.errors.inc(2, kind="lvm")
    metrics.sweeps.inc(7)
    metrics.sweep_duration.observe(0.12)
    metrics.sweep_duration.observe(0.3)
    return metrics


def parsed(text):
    """Each family as prometheus_client's parser reads it: name, HELP, TYPE, samples (name, labels, value)."""
    return [(fam.name, fam.documentation, fam.type,
             sorted((sample.name, sorted(sample.labels.items()), sample.value) for sample in fam.samples))
            for fam in text_string_to_metric_families(text)]


def comments(text):
    return [line for line in text.splitlines() if line.startswith("#")]


def test_exposition_as_before():
    """prometheus_client writes what the agent's own writer did (the fixture): the same families in the
    same order, their HELP and TYPE lines byte for byte, and the same samples (names, label names and
    values, le="1" and not "1.0", values). The sample lines differ in bytes only where prometheus_client
    writes them its way, none of which changes what Prometheus reads:
    - values as floats: 1 is "1.0"; past 6 integer digits Go's exponent form, 125833216 is "1.25833216e+08"
      (0.16, Debian 12's, writes "e+013" where 0.26 writes "e+13"; the same float);
    - labels in name order: {disk=...,domain=...,vg=...}, {le=...,phase=...};
    - a histogram's _count before its _sum."""
    with open(FIXTURE, "rb") as handle:
        before = handle.read().decode("utf-8")
    after = populated().render()
    assert comments(after) == comments(before)
    assert parsed(after) == parsed(before)
    assert len(after.splitlines()) == len(before.splitlines())


@pytest.fixture(scope="module")
def server():
    metrics = Metrics()
    metrics.up.set(1)
    srv = serve(metrics, "127.0.0.1", 0)
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv, path):
    host, port = srv.server_address[:2]
    return "http://%s:%d%s" % (host, port, path)


def test_serve_metrics(server):
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    for path in ("/metrics", "/", "/metrics?x=1"):
        response = urlopen(url(server, path), timeout=5)
        body = response.read().decode("utf-8")
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert int(response.headers["Content-Length"]) == len(body.encode("utf-8"))
        assert "sltv_agent_up 1" in body


def test_serve_404_for_other_paths(server):
    with pytest.raises(HTTPError) as info:
        urlopen(url(server, "/other"), timeout=5)
    assert info.value.code == 404

# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent's configuration, checked from the dict that yaml.safe_load returned.

Every error names the key and what it allows. Unknown keys are errors: a typo must not leave a
setting silently at its default.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, MIN_LOCK_TTL
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.agent.extend_policy import (
    DEFAULT_CHUNK_MAX,
    DEFAULT_CHUNK_MIN,
    DEFAULT_EXTENT_SIZE,
    DEFAULT_HEADROOM_SECONDS,
    DEFAULT_INITIAL_WRITE_RATE,
    ExtendPolicy,
)
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human, parse_size

DEFAULTS = {
    "vgs": None,  # required
    "libvirt_uri": "qemu:///system",
    "sweep_interval": 5.0,
    "chunk_min": DEFAULT_CHUNK_MIN,
    "chunk_max": DEFAULT_CHUNK_MAX,
    "headroom_seconds": float(DEFAULT_HEADROOM_SECONDS),
    # bytes/s assumed for a disk before its write rate is measured (extend_policy); 0: none
    "initial_write_rate": DEFAULT_INITIAL_WRITE_RATE,
    "metrics_address": "127.0.0.1",
    "metrics_port": 9464,
    "lock": None,
    "log_level": "info",
}
LOG_LEVELS = ("debug", "info", "warning", "error")
LOCK_BACKENDS = ("local", "etcd")
_LOCK_STRINGS = ("etcd_ca_cert", "etcd_cert", "etcd_key", "etcd_user", "etcd_password", "lock_prefix")
_LOCK_TOGETHER = (("etcd_cert", "etcd_key"), ("etcd_user", "etcd_password"))


class AgentConfig(object):
    """The agent's settings as attributes; ``lock`` is a full dict with LOCK_SETTINGS_DEFAULTS' keys."""

    def __init__(self, vgs, libvirt_uri, sweep_interval, chunk_min, chunk_max, headroom_seconds,
                 metrics_address, metrics_port, lock, log_level, initial_write_rate=DEFAULT_INITIAL_WRITE_RATE):
        self.vgs = vgs
        self.libvirt_uri = libvirt_uri
        self.sweep_interval = sweep_interval
        self.chunk_min = chunk_min
        self.chunk_max = chunk_max
        self.headroom_seconds = headroom_seconds
        self.initial_write_rate = initial_write_rate
        self.metrics_address = metrics_address
        self.metrics_port = metrics_port
        self.lock = lock
        self.log_level = log_level

    def policy(self, extent_size=DEFAULT_EXTENT_SIZE):
        """The extend policy for a VG with this extent size (it differs per VG)."""
        return ExtendPolicy(self.chunk_min, self.chunk_max, self.headroom_seconds, extent_size,
                            initial_rate=self.initial_write_rate)


def _unknown(data, allowed, where):
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise ValidationError("unknown %s %s; allowed: %s"
                              % (where, ", ".join(repr(k) for k in unknown), ", ".join(sorted(allowed))))


def _string(value, key, secret=False):
    if not isinstance(value, str) or not value.strip():
        shown = "a %s" % type(value).__name__ if secret else repr(value)
        raise ValidationError("%s must be a non-empty string, got %s" % (key, shown))
    return value


def _positive_number(value, key, unit="seconds"):
    # bool is an int in Python: "yes" in YAML must not become 1 second.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ValidationError("%s must be a number of %s greater than 0, got %r" % (key, unit, value))
    return float(value)


def _integer(value, key, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = "at least %d" % low if high is None else "from %d to %d" % (low, high)
        raise ValidationError("%s must be an integer %s, got %r" % (key, allowed, value))
    return value


def _choice(value, key, choices):
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValidationError("%s must be one of %s, got %r" % (key, ", ".join(choices), value))
    return value.lower()


def _rate(value, key):
    """A write rate in bytes per second: a size (1G, 512M, bytes) per second; 0 for none."""
    if value == 0 or value == "0":
        return 0
    return parse_size(value, key + " (bytes per second)")


def _vgs(value):
    if value is None:
        raise ValidationError("vgs is required: list the volume groups whose thin disks the agent extends")
    if not isinstance(value, list) or not value:
        raise ValidationError("vgs must be a non-empty list of volume group names, got %r" % (value,))
    for vg in value:
        try:
            validate_vg_name(vg)
        except ValidationError as exc:
            raise ValidationError("vgs: %s" % exc)
    if len(set(value)) != len(value):
        raise ValidationError("vgs lists a volume group more than once: %r" % (value,))
    return list(value)


def _lock(value):
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValidationError("lock must be a mapping of lock settings (%s), got %r"
                              % (", ".join(sorted(LOCK_SETTINGS_DEFAULTS)), value))
    _unknown(value, LOCK_SETTINGS_DEFAULTS, "lock setting")
    lock = dict(LOCK_SETTINGS_DEFAULTS)
    lock.update((key, item) for key, item in value.items() if item is not None)
    lock["lock_backend"] = _choice(lock["lock_backend"], "lock.lock_backend", LOCK_BACKENDS)
    endpoints = lock["etcd_endpoints"]
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list) or not all(isinstance(e, str) and e.strip() for e in endpoints):
        raise ValidationError("lock.etcd_endpoints must be a list of URLs like http://127.0.0.1:2379, got %r" % (endpoints,))
    if lock["lock_backend"] == "etcd" and not endpoints:
        raise ValidationError("lock.etcd_endpoints needs at least one URL with lock_backend etcd")
    lock["etcd_endpoints"] = list(endpoints)
    lock["lock_timeout"] = _positive_number(lock["lock_timeout"], "lock.lock_timeout")
    # The lease is refreshed every lock_ttl/3 and etcd refuses shorter leases.
    lock["lock_ttl"] = _integer(lock["lock_ttl"], "lock.lock_ttl", MIN_LOCK_TTL)
    for key in _LOCK_STRINGS:
        if lock[key] is not None:
            _string(lock[key], "lock." + key, secret=(key == "etcd_password"))
    for first, second in _LOCK_TOGETHER:
        if (lock[first] is None) != (lock[second] is None):
            raise ValidationError("lock.%s and lock.%s must be given together" % (first, second))
    return lock


def parse_agent_config(data):
    """Return an AgentConfig from the loaded YAML document; raise ValidationError on any bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError("the agent configuration must be a mapping of settings, got %s" % type(data).__name__)
    _unknown(data, DEFAULTS, "setting")
    # A key left empty in YAML (None) means "use the default".
    values = dict(DEFAULTS)
    values.update((key, item) for key, item in data.items() if item is not None)
    vgs = _vgs(data.get("vgs"))
    chunk_min = parse_size(values["chunk_min"], "chunk_min")
    chunk_max = parse_size(values["chunk_max"], "chunk_max")
    if chunk_min > chunk_max:
        raise ValidationError("chunk_min (%s) must not be larger than chunk_max (%s)" % (human(chunk_min), human(chunk_max)))
    return AgentConfig(
        vgs=vgs,
        libvirt_uri=_string(values["libvirt_uri"], "libvirt_uri"),
        sweep_interval=_positive_number(values["sweep_interval"], "sweep_interval"),
        chunk_min=chunk_min,
        chunk_max=chunk_max,
        headroom_seconds=_positive_number(values["headroom_seconds"], "headroom_seconds"),
        initial_write_rate=_rate(values["initial_write_rate"], "initial_write_rate"),
        metrics_address=_string(values["metrics_address"], "metrics_address"),
        metrics_port=_integer(values["metrics_port"], "metrics_port", 1, 65535),
        lock=_lock(values["lock"]),
        log_level=_choice(values["log_level"], "log_level", LOG_LEVELS),
    )

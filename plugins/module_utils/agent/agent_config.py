# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin-extend agent's configuration, checked from the dict that yaml.safe_load returned.

Every error names the key and what it allows. Unknown keys are errors: a typo must not leave a
setting silently at its default.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.agent.extend_policy import (
    DEFAULT_CHUNK_MAX,
    DEFAULT_CHUNK_MIN,
    DEFAULT_EXTENT_SIZE,
    DEFAULT_HEADROOM_SECONDS,
    DEFAULT_INITIAL_WRITE_RATE,
    ExtendPolicy,
)
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import HostConfig
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.settings import (
    check_choice, check_integer, check_lock_combination, check_lock_values, check_positive_number, check_string,
    check_unknown,
)
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


def _rate(value, key):
    """A write rate in bytes per second: a size (1G, 512M, bytes) per second; 0 for none."""
    if value == 0 or value == "0":
        return 0
    return parse_size(value, key + " (bytes per second)")


def _vgs(value):
    if value is None:
        raise ValidationError("vgs is required: list the volume groups whose thin disks the agent extends (or set vg in the host config)")
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


def _lock(value, host):
    """The agent file's lock settings over the host config's over the built-in defaults (the
    layering of the modules' options, HostConfig.lock_over), checked as a whole."""
    host = host if host is not None else HostConfig(None, found=False)
    lock = host.lock_over(check_lock_values(value, "lock"), LOCK_SETTINGS_DEFAULTS)
    check_lock_combination(lock, "lock")
    return lock


def parse_agent_config(data, host=None):
    """Return an AgentConfig from the loaded YAML document; raise ValidationError on any bad key.

    ``host`` (a HostConfig) gives the defaults of ``vgs`` (its vg) and of each lock setting."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError("the agent configuration must be a mapping of settings, got %s" % type(data).__name__)
    check_unknown(data, DEFAULTS, "setting")
    # A key left empty in YAML (None) means "use the default".
    values = dict(DEFAULTS)
    values.update((key, item) for key, item in data.items() if item is not None)
    vgs = _vgs(data["vgs"] if data.get("vgs") is not None else ([host.vg] if host is not None and host.vg else None))
    chunk_min = parse_size(values["chunk_min"], "chunk_min")
    chunk_max = parse_size(values["chunk_max"], "chunk_max")
    if chunk_min > chunk_max:
        raise ValidationError("chunk_min (%s) must not be larger than chunk_max (%s)" % (human(chunk_min), human(chunk_max)))
    return AgentConfig(
        vgs=vgs,
        libvirt_uri=check_string(values["libvirt_uri"], "libvirt_uri"),
        sweep_interval=check_positive_number(values["sweep_interval"], "sweep_interval"),
        chunk_min=chunk_min,
        chunk_max=chunk_max,
        headroom_seconds=check_positive_number(values["headroom_seconds"], "headroom_seconds"),
        initial_write_rate=_rate(values["initial_write_rate"], "initial_write_rate"),
        metrics_address=check_string(values["metrics_address"], "metrics_address"),
        metrics_port=check_integer(values["metrics_port"], "metrics_port", 1, 65535),
        lock=_lock(values["lock"], host),
        log_level=check_choice(values["log_level"], "log_level", LOG_LEVELS),
    )

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import AgentConfig, parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.agent.extend_policy import ExtendPolicy
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB


def config(**values):
    data = {"vgs": ["vg0"]}
    data.update(values)
    return parse_agent_config(data)


@pytest.mark.parametrize("value,expected", [(None, 256 * MIB), ("512M", 512 * MIB), (300 * MIB, 300 * MIB), (0, 0), ("0", 0)])
def test_initial_write_rate(value, expected):
    cfg = config() if value is None else config(initial_write_rate=value)
    assert cfg.initial_write_rate == expected
    assert cfg.policy().initial_rate == expected


def test_defaults():
    cfg = config()
    assert isinstance(cfg, AgentConfig)
    assert cfg.vgs == ["vg0"]
    assert cfg.libvirt_uri == "qemu:///system"
    assert cfg.sweep_interval == 5.0
    assert (cfg.chunk_min, cfg.chunk_max, cfg.headroom_seconds) == (GIB, 8 * GIB, 10.0)
    assert (cfg.metrics_address, cfg.metrics_port) == ("127.0.0.1", 9464)
    assert cfg.lock == LOCK_SETTINGS_DEFAULTS
    assert cfg.lock is not LOCK_SETTINGS_DEFAULTS
    assert cfg.log_level == "info"


def test_full_config():
    cfg = parse_agent_config({
        "vgs": ["vg0", "shared_vg"],
        "libvirt_uri": "qemu+ssh://host/system",
        "sweep_interval": 2,
        "chunk_min": "512M",
        "chunk_max": "4G",
        "headroom_seconds": 7.5,
        "metrics_address": "0.0.0.0",
        "metrics_port": 9100,
        "lock": {
            "lock_backend": "etcd", "etcd_endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
            "etcd_ca_cert": "/etc/sltv/ca.pem", "etcd_cert": "/etc/sltv/c.pem", "etcd_key": "/etc/sltv/k.pem",
            "etcd_user": "sltv", "etcd_password": "secret", "lock_timeout": 30, "lock_ttl": 15, "lock_prefix": "/prod",
        },
        "log_level": "DEBUG",
    })
    assert cfg.vgs == ["vg0", "shared_vg"]
    assert cfg.libvirt_uri == "qemu+ssh://host/system"
    assert cfg.sweep_interval == 2.0 and isinstance(cfg.sweep_interval, float)
    assert (cfg.chunk_min, cfg.chunk_max, cfg.headroom_seconds) == (512 * MIB, 4 * GIB, 7.5)
    assert (cfg.metrics_address, cfg.metrics_port) == ("0.0.0.0", 9100)
    assert cfg.lock["lock_backend"] == "etcd"
    assert cfg.lock["etcd_endpoints"] == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert (cfg.lock["lock_timeout"], cfg.lock["lock_ttl"], cfg.lock["lock_prefix"]) == (30.0, 15, "/prod")
    assert cfg.log_level == "debug"


def test_sizes_accept_bytes_and_units():
    cfg = config(chunk_min=256 * MIB, chunk_max="1GiB")
    assert (cfg.chunk_min, cfg.chunk_max) == (256 * MIB, GIB)
    assert config(chunk_min="2G", chunk_max="2G").chunk_min == 2 * GIB


def test_empty_values_mean_default():
    cfg = config(sweep_interval=None, lock=None, log_level=None)
    assert (cfg.sweep_interval, cfg.lock, cfg.log_level) == (5.0, LOCK_SETTINGS_DEFAULTS, "info")
    assert config(lock={"lock_timeout": None}).lock["lock_timeout"] == 60.0


def test_partial_lock_keeps_defaults():
    lock = config(lock={"lock_backend": "etcd"}).lock
    assert lock["etcd_endpoints"] == ["http://127.0.0.1:2379"]
    assert lock["lock_ttl"] == 10
    assert config(lock={"lock_backend": "etcd", "etcd_endpoints": "http://e:2379"}).lock["etcd_endpoints"] == ["http://e:2379"]


def test_policy():
    pol = config(chunk_min="512M", chunk_max="2G", headroom_seconds=5).policy(extent_size=32 * MIB)
    assert isinstance(pol, ExtendPolicy)
    assert (pol.chunk_min, pol.chunk_max, pol.headroom_seconds, pol.extent_size) == (512 * MIB, 2 * GIB, 5.0, 32 * MIB)
    assert config().policy().extent_size == 4 * MIB


def test_input_is_not_modified():
    data = {"vgs": ["vg0"], "lock": {"lock_backend": "local"}}
    parse_agent_config(data)
    assert data == {"vgs": ["vg0"], "lock": {"lock_backend": "local"}}


@pytest.mark.parametrize("data,words", [
    (None, ["vgs", "required"]),
    ({}, ["vgs", "required"]),
    ({"vgs": None}, ["vgs", "required"]),
    (["vg0"], ["mapping"]),
    ("vgs: vg0", ["mapping"]),
])
def test_document_errors(data, words):
    with pytest.raises(ValidationError) as err:
        parse_agent_config(data)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("key,value,words", [
    ("vgs", [], ["vgs", "non-empty list"]),
    ("vgs", "vg0", ["vgs", "list"]),
    ("vgs", {"vg0": 1}, ["vgs", "list"]),
    ("vgs", ["vg0", "bad/name"], ["vgs", "'/'"]),
    ("vgs", ["-vg"], ["vgs", "'-'"]),
    ("vgs", [""], ["vgs", "non-empty"]),
    ("vgs", [7], ["vgs"]),
    ("vgs", ["vg0", "vg0"], ["vgs", "more than once"]),
    ("libvirt_uri", "", ["libvirt_uri", "non-empty string"]),
    ("libvirt_uri", 5, ["libvirt_uri", "string"]),
    ("sweep_interval", 0, ["sweep_interval", "greater than 0"]),
    ("sweep_interval", -1.5, ["sweep_interval", "greater than 0"]),
    ("sweep_interval", "5", ["sweep_interval", "number"]),
    ("sweep_interval", True, ["sweep_interval", "number"]),
    ("sweep_interval", float("nan"), ["sweep_interval"]),
    ("sweep_interval", float("inf"), ["sweep_interval"]),
    ("chunk_min", "0", ["chunk_min", "greater than zero"]),
    ("chunk_min", "1X", ["chunk_min", "not a valid size"]),
    ("chunk_min", "9G", ["chunk_min", "chunk_max", "9 GiB", "8 GiB"]),
    ("chunk_max", "512M", ["chunk_min", "chunk_max", "512 MiB"]),
    ("chunk_max", -1, ["chunk_max"]),
    ("chunk_max", True, ["chunk_max"]),
    ("headroom_seconds", 0, ["headroom_seconds", "greater than 0"]),
    ("headroom_seconds", "ten", ["headroom_seconds", "number"]),
    ("initial_write_rate", "fast", ["initial_write_rate", "bytes per second", "not a valid size"]),
    ("initial_write_rate", -1, ["initial_write_rate", "greater than zero"]),
    ("initial_write_rate", True, ["initial_write_rate"]),
    ("metrics_address", "", ["metrics_address", "non-empty string"]),
    ("metrics_address", ["127.0.0.1"], ["metrics_address"]),
    ("metrics_port", 0, ["metrics_port", "1 to 65535"]),
    ("metrics_port", 65536, ["metrics_port", "1 to 65535"]),
    ("metrics_port", -1, ["metrics_port"]),
    ("metrics_port", "9464", ["metrics_port", "integer"]),
    ("metrics_port", 9464.0, ["metrics_port", "integer"]),
    ("metrics_port", True, ["metrics_port"]),
    ("log_level", "verbose", ["log_level", "debug, info, warning, error"]),
    ("log_level", "critical", ["log_level"]),
    ("log_level", 10, ["log_level"]),
    ("lock", "etcd", ["lock", "mapping", "lock_backend"]),
    ("lock", ["local"], ["lock", "mapping"]),
])
def test_bad_values_name_the_key(key, value, words):
    with pytest.raises(ValidationError) as err:
        config(**{key: value})
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("lock,words", [
    ({"lock_backend": "zookeeper"}, ["lock.lock_backend", "local, etcd"]),
    ({"lock_backend": None, "backend": "etcd"}, ["unknown lock setting", "'backend'", "lock_backend"]),
    ({"etcd_endpoint": ["http://e:2379"]}, ["unknown lock setting", "'etcd_endpoint'", "etcd_endpoints"]),
    ({"lock_backend": "etcd", "etcd_endpoints": []}, ["lock.etcd_endpoints", "at least one"]),
    ({"etcd_endpoints": [""]}, ["lock.etcd_endpoints"]),
    ({"etcd_endpoints": [2379]}, ["lock.etcd_endpoints"]),
    ({"etcd_endpoints": {"a": 1}}, ["lock.etcd_endpoints"]),
    ({"lock_timeout": 0}, ["lock.lock_timeout", "greater than 0"]),
    ({"lock_timeout": "60"}, ["lock.lock_timeout"]),
    ({"lock_ttl": 1}, ["lock.lock_ttl", "at least 2"]),
    ({"lock_ttl": 10.5}, ["lock.lock_ttl", "integer"]),
    ({"lock_prefix": ""}, ["lock.lock_prefix"]),
    ({"etcd_ca_cert": 5}, ["lock.etcd_ca_cert"]),
    ({"etcd_cert": "/c.pem"}, ["lock.etcd_cert", "lock.etcd_key", "together"]),
    ({"etcd_key": "/k.pem"}, ["lock.etcd_cert", "lock.etcd_key", "together"]),
    ({"etcd_user": "sltv"}, ["lock.etcd_user", "lock.etcd_password", "together"]),
    ({"etcd_password": "pw"}, ["lock.etcd_user", "lock.etcd_password", "together"]),
])
def test_bad_lock_settings_name_the_key(lock, words):
    with pytest.raises(ValidationError) as err:
        config(lock=lock)
    for word in words:
        assert word in str(err.value)


def test_password_is_not_shown_in_errors():
    with pytest.raises(ValidationError) as err:
        config(lock={"etcd_user": "sltv", "etcd_password": 123456789})
    assert "lock.etcd_password" in str(err.value)
    assert "123456789" not in str(err.value)


@pytest.mark.parametrize("key", ["vg", "sweep-interval", "chunk", "headroom", "metrics", "loglevel", "VGS"])
def test_unknown_keys_are_errors(key):
    with pytest.raises(ValidationError) as err:
        config(**{key: 1})
    message = str(err.value)
    assert "unknown setting" in message and repr(key) in message
    assert "sweep_interval" in message  # the allowed keys are listed


def test_several_unknown_keys_are_all_named():
    with pytest.raises(ValidationError) as err:
        config(chunkmin="1G", chunkmax="2G")
    assert "'chunkmax'" in str(err.value) and "'chunkmin'" in str(err.value)

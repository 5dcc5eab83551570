# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host config (issue 14): /etc/sltv/sltv.yml gives the defaults of the modules' vg and lock
options and of the agent's; explicit options win; a bad file is refused naming the file and key."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.config_files import load_host_config
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import HostConfig, parse_host_config
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import sltv_module

CLUSTER = {
    "vg": "vg_san",
    "lock": {"lock_backend": "etcd", "etcd_endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
             "lock_timeout": 30, "lock_prefix": "/prod"},
}


def write(tmp_path, text):
    path = tmp_path / "sltv.yml"
    path.write_text(text)
    return str(path)


def test_a_full_file():
    host = parse_host_config(CLUSTER, "/etc/sltv/sltv.yml")
    assert host.vg == "vg_san" and host.found
    assert host.lock == {"lock_backend": "etcd", "etcd_endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
                         "lock_timeout": 30.0, "lock_prefix": "/prod"}


@pytest.mark.parametrize("data", [None, {}, {"vg": None, "lock": None}])
def test_an_empty_file_gives_nothing(data):
    host = parse_host_config(data)
    assert host.vg is None and host.lock == {}


@pytest.mark.parametrize("data, expected", [
    ({"vgs": ["vg0"]}, "unknown key 'vgs'; allowed: lock, vg"),
    (["vg0"], "must be a mapping with the keys vg, lock, got list"),
    ({"vg": "a/b"}, "vg: "),
    ({"vg": 7}, "vg: "),
    ({"lock": "etcd"}, "lock must be a mapping of lock settings"),
    ({"lock": {"backend": "etcd"}}, "unknown lock setting 'backend'"),
    ({"lock": {"lock_backend": "nfs"}}, "lock.lock_backend must be one of local, etcd, got 'nfs'"),
    ({"lock": {"lock_timeout": float("inf")}}, "lock.lock_timeout must be a finite number of seconds greater than 0"),
    ({"lock": {"lock_timeout": True}}, "lock.lock_timeout must be a finite number"),
    ({"lock": {"lock_ttl": 1}}, "lock.lock_ttl must be an integer at least 2, got 1"),
    ({"lock": {"etcd_endpoints": [""]}}, "lock.etcd_endpoints must be a list of URLs"),
    ({"lock": {"etcd_password": 1234}}, "lock.etcd_password must be a non-empty string, got a int"),
], ids=["unknown-key", "not-a-mapping", "bad-vg", "vg-number", "lock-string", "unknown-lock-key", "bad-backend",
        "timeout-inf", "timeout-bool", "ttl-1", "empty-endpoint", "password-number"])
def test_a_bad_file_is_refused_naming_the_file_and_the_key(data, expected):
    with pytest.raises(ValidationError) as error:
        parse_host_config(data, "/etc/sltv/sltv.yml")
    assert str(error.value).startswith("host config /etc/sltv/sltv.yml: "), error.value
    assert expected in str(error.value)
    assert "1234" not in str(error.value)  # a secret is never echoed


def test_given_options_win_over_the_file_over_the_defaults():
    host = parse_host_config(CLUSTER)
    given = dict((key, None) for key in LOCK_SETTINGS_DEFAULTS)
    given.update(lock_timeout=5.0)
    merged = host.lock_over(given, LOCK_SETTINGS_DEFAULTS)
    assert merged["lock_timeout"] == 5.0  # given
    assert merged["lock_backend"] == "etcd" and merged["lock_prefix"] == "/prod"  # the file
    assert merged["lock_ttl"] == 10  # built-in
    assert HostConfig("/x", found=False).lock_over(given, LOCK_SETTINGS_DEFAULTS)["lock_backend"] == "local"


def test_a_missing_file_is_no_config(tmp_path):
    host = load_host_config(str(tmp_path / "none.yml"))
    assert not host.found and host.vg is None and host.lock == {}


def test_dev_null_is_an_empty_config():
    host = load_host_config("/dev/null")
    assert host.found and host.vg is None and host.lock == {}


@pytest.mark.parametrize("text, expected", [("vg: [vg0\n", "is not valid YAML"), ("vg: vg0\nlok: {}\n", "unknown key 'lok'")])
def test_load_names_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ValidationError) as error:
        load_host_config(path)
    assert path in str(error.value) and expected in str(error.value)


def run_module(capsys, args, default_vg=True):
    """sltv_module's params for ``args``, or the failure it exits with: (exit code, output)."""
    with patch_module_args(args):
        try:
            module = sltv_module(dict(vg=dict(type="str"), name=dict(type="str")), default_vg=default_vg)
        except SystemExit as exited:
            return exited.code, json.loads(capsys.readouterr().out)
    return 0, module.params


def test_a_module_takes_vg_and_lock_from_the_file(tmp_path, capsys):
    path = write(tmp_path, "vg: vg_san\nlock: {lock_backend: local, lock_timeout: 7, lock_prefix: /prod}\n")
    code, params = run_module(capsys, {"name": "d1", "host_config": path})
    assert code == 0, params
    assert params["vg"] == "vg_san"
    assert (params["lock_backend"], params["lock_timeout"], params["lock_prefix"]) == ("local", 7.0, "/prod")
    assert (params["lock_ttl"], params["etcd_endpoints"]) == (10, ["http://127.0.0.1:2379"])


def test_a_module_option_wins_over_the_file(tmp_path, capsys):
    path = write(tmp_path, "vg: vg_san\nlock: {lock_backend: local, lock_timeout: 7}\n")
    code, params = run_module(capsys, {"name": "d1", "vg": "vg_other", "lock_timeout": 2, "host_config": path})
    assert code == 0, params
    assert (params["vg"], params["lock_timeout"]) == ("vg_other", 2.0)


def test_no_vg_anywhere_is_a_clear_error(tmp_path, capsys):
    code, output = run_module(capsys, {"name": "d1", "host_config": str(tmp_path / "none.yml")})
    assert code == 1
    assert "vg is required: give vg=<name>, or set vg in the host config" in output["msg"]
    assert "the role sltv.core.sltv_host writes it" in output["msg"]


def test_a_bad_file_fails_the_module_before_anything(tmp_path, capsys):
    path = write(tmp_path, "vg: vg_san\nlock: {lock_backend: nfs}\n")
    code, output = run_module(capsys, {"name": "d1", "host_config": path})
    assert code == 1
    assert path in output["msg"] and "lock.lock_backend must be one of local, etcd" in output["msg"]
    assert "host_config=/dev/null" in output["msg"]


def test_cert_and_key_are_checked_together_after_the_merge(tmp_path, capsys):
    path = write(tmp_path, "lock: {etcd_key: /etc/sltv/etcd/client-key.pem}\n")
    code, output = run_module(capsys, {"name": "d1", "vg": "vg0", "host_config": path})
    assert code == 1 and "etcd_cert and etcd_key must be given together" in output["msg"], output
    code, params = run_module(capsys, {"name": "d1", "vg": "vg0", "host_config": path,
                                       "etcd_cert": "/etc/sltv/etcd/client.pem"})
    assert code == 0 and params["etcd_key"] == "/etc/sltv/etcd/client-key.pem", params


def test_the_agent_takes_vgs_and_lock_from_the_host_config():
    host = parse_host_config(CLUSTER)
    config = parse_agent_config({"sweep_interval": 2}, host)
    assert config.vgs == ["vg_san"]
    assert config.lock["lock_backend"] == "etcd" and config.lock["lock_prefix"] == "/prod"
    assert config.lock["lock_ttl"] == 10
    mine = parse_agent_config({"vgs": ["vg0"], "lock": {"lock_backend": "local"}}, host)
    assert mine.vgs == ["vg0"] and mine.lock["lock_backend"] == "local"
    assert mine.lock["lock_prefix"] == "/prod"  # a key the agent's file leaves out

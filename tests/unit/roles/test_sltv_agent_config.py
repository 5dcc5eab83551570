# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's configuration as the role sltv_agent writes it (templates/agent.yml.j2 with the role's
defaults), read by the agent: what the role leaves unset comes from the host config, as for every
module; what it sets wins."""

from __future__ import annotations

import os

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import to_nice_yaml

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_config import parse_agent_config
from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import HostConfig

ROLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "roles", "sltv_agent")
HOST = HostConfig("/etc/sltv/sltv.yml", vg="vg_san",
                  lock={"lock_backend": "etcd", "etcd_endpoints": ["https://etcd1:2379"], "etcd_ca_cert": "/etc/sltv/etcd/ca.pem"})


def render_config(**overrides):
    values = {"ansible_managed": "Ansible managed", "__sltv_agent_host_config_stamp": "sha1 0123"}
    for part in ("defaults", "vars"):
        with open(os.path.join(ROLE, part, "main.yml"), encoding="utf-8") as handle:
            values.update((key, value) for key, value in yaml.safe_load(handle).items() if key not in values)
    values.update(overrides)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters["to_nice_yaml"] = to_nice_yaml
    return env.get_template("agent.yml.j2").render(**values)


def test_the_role_defaults_take_the_vg_and_the_lock_from_the_host_config():
    text = render_config()
    assert "sha1 0123" in text  # a change of the host config changes this file: the agent restarts
    config = parse_agent_config(yaml.safe_load(text), HOST)
    assert config.vgs == ["vg_san"]
    assert config.lock["lock_backend"] == "etcd"
    assert config.lock["etcd_endpoints"] == ["https://etcd1:2379"]
    assert config.lock["etcd_ca_cert"] == "/etc/sltv/etcd/ca.pem"
    assert config.lock["lock_prefix"] == "/sltv"
    assert config.lock["lock_timeout"] == 60.0  # the role's own tuning stays


def test_role_variables_win_over_the_host_config():
    text = render_config(sltv_agent_vgs=["vg_other"], sltv_agent_lock_backend="local", sltv_agent_lock_prefix="/other")
    config = parse_agent_config(yaml.safe_load(text), HOST)
    assert config.vgs == ["vg_other"]
    assert config.lock["lock_backend"] == "local"
    assert config.lock["lock_prefix"] == "/other"


def test_without_a_host_config_the_agent_says_what_is_missing():
    with pytest.raises(ValidationError, match="vgs is required.*host config"):
        parse_agent_config(yaml.safe_load(render_config()), HostConfig(None, found=False))

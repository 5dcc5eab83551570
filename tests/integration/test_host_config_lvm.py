# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14, the host config against real lvm2 on a loop VG: with the file that sltv_host writes, an
ad-hoc ``sltv_disk name=... size=...`` needs neither vg nor lock options; an option given wins; a bad
file fails every module before anything runs, naming the file and the key, the VG unchanged."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from lvmtest import run_module

pytestmark = pytest.mark.lvm


def host_config(tmp_path, text):
    path = tmp_path / "sltv.yml"
    path.write_text(text)
    return str(path)


def test_an_ad_hoc_create_and_extend_take_the_vg_and_the_lock_from_the_host_config(loop_vg, tmp_path):
    path = host_config(tmp_path, "vg: %s\nlock:\n  lock_backend: local\n  lock_timeout: 20\n" % loop_vg.name)
    created = run_module("sltv_disk", dict(name="adhoc1", size="8M", host_config=path))
    assert created.get("changed") is True and not created.get("failed"), created
    assert loop_vg.lvs()["adhoc1"]["size"] == 8 * 1024 ** 2
    assert (created["disk"]["size_human"], created["disk"]["virtual_size_human"]) == ("8 MiB", "8 MiB")
    again = run_module("sltv_disk", dict(name="adhoc1", size="8M", host_config=path))
    assert again.get("changed") is False and not again.get("failed"), again
    grown = run_module("sltv_extend", dict(disk="adhoc1", delta="+4M", host_config=path))
    assert grown.get("changed") is True and not grown.get("failed"), grown
    assert loop_vg.lvs()["adhoc1"]["size"] == 12 * 1024 ** 2
    assert (grown["size"], grown["size_human"]) == (12 * 1024 ** 2, "12 MiB")
    info = run_module("sltv_info", dict(vg=[loop_vg.name], disk="adhoc1", host_config=path))
    assert [d["name"] for d in info["disks"]] == ["adhoc1"], info
    assert info["disks"][0]["size_human"] == "12 MiB" and info["vgs"][0]["size_human"].endswith("GiB"), info


def test_a_given_vg_wins_over_the_host_config(loop_vg, tmp_path):
    path = host_config(tmp_path, "vg: sltvtest_nosuchvg\nlock: {lock_backend: local}\n")
    created = run_module("sltv_disk", dict(name="given1", vg=loop_vg.name, size="8M", host_config=path))
    assert created.get("changed") is True and not created.get("failed"), created
    assert "given1" in loop_vg.lvs()


def test_no_vg_and_no_host_config_is_a_clear_error(loop_vg, tmp_path):
    before = loop_vg.snapshot()
    result = run_module("sltv_disk", dict(name="d1", size="8M", host_config=str(tmp_path / "missing.yml")))
    assert result.get("failed") is True, result
    assert "vg is required: give vg=<name>, or set vg in the host config" in result["msg"]
    assert loop_vg.snapshot() == before


BAD_FILES = [
    pytest.param("vg: {vg}\nlok: {{lock_backend: local}}\n", "unknown key 'lok'", id="unknown-key"),
    pytest.param("vg: {vg}\nlock: {{lock_backend: zookeeper}}\n", "lock.lock_backend must be one of local, etcd",
                 id="bad-backend"),
    pytest.param("vg: {vg}\nlock: {{lock_timeout: .inf}}\n", "lock.lock_timeout must be a finite number", id="timeout-inf"),
    pytest.param("vg: {vg}\nlock: {{lock_ttl: 1}}\n", "lock.lock_ttl must be an integer at least 2", id="ttl-1"),
    pytest.param("vg: a/b\n", "vg: ", id="bad-vg"),
    pytest.param("vg: [{vg}\n", "is not valid YAML", id="bad-yaml"),
    pytest.param("vg: {vg}\nlock: {{etcd_cert: /etc/sltv/etcd/client.pem}}\n", "etcd_cert and etcd_key must be given together",
                 id="cert-without-key"),
]


MODULE_RUNS = [("sltv_disk", dict(name="d1", size="8M")), ("sltv_extend", dict(disk="d1", delta="4M")), ("sltv_info", dict())]


# sltv_info takes no lock: it checks each lock setting it reads, not which go in pairs.
@pytest.mark.parametrize("module, args, text, expected", [
    pytest.param(module, args, bad.values[0], bad.values[1], id="%s-%s" % (module, bad.id))
    for module, args in MODULE_RUNS for bad in BAD_FILES
    if not (module == "sltv_info" and bad.id == "cert-without-key")
])
def test_a_bad_host_config_fails_before_anything(loop_vg, tmp_path, module, args, text, expected):
    path = host_config(tmp_path, text.format(vg=loop_vg.name))
    before = loop_vg.snapshot()
    result = run_module(module, dict(args, host_config=path))
    assert result.get("failed") is True, result
    assert expected in result["msg"], result["msg"]
    if expected != "etcd_cert and etcd_key must be given together":
        assert path in result["msg"], result["msg"]
    assert "commands" not in result or result["commands"] == [], result
    assert loop_vg.snapshot() == before

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a module needs is checked before anything runs, and reported the way Ansible's own modules
do (missing_required_lib): the libvirt bindings for sltv_attachment, the etcd client and the etcd
connection settings for lock_backend=etcd, also on a run that would change nothing."""

from __future__ import absolute_import, division, print_function

import os

import pytest

from lvmtest import COLLECTIONS_DIR, run_module

pytestmark = pytest.mark.lvm


def hide_package(tmp_path, name):
    """PYTHONPATH for a module run on which ``import <name>`` fails."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / (name + ".py")).write_text("raise ImportError(%r)\n" % ("No module named %s (hidden by the test)" % name))
    return dict(PYTHONPATH="%s%s%s" % (shadow, os.pathsep, COLLECTIONS_DIR))


def test_sltv_attachment_without_the_libvirt_bindings(tmp_path, loop_vg):
    before = loop_vg.snapshot()
    result = run_module("sltv_attachment", dict(disk="req-disk", vg=loop_vg.name, domain="no-such-domain"),
                        env=hide_package(tmp_path, "libvirt"))
    assert result.get("failed"), result
    assert "Failed to import the required Python library (libvirt-python)" in result["msg"], result["msg"]
    assert "python3-libvirt" in result["msg"]
    assert not result.get("commands"), result  # failed before any lvm command
    assert loop_vg.snapshot() == before


def test_lock_backend_etcd_without_the_etcd_client(tmp_path, loop_vg):
    result = run_module("sltv_disk", dict(name="req-new", vg=loop_vg.name, size="8M", lock_backend="etcd",
                                          etcd_endpoints=["http://127.0.0.1:9"]),
                        env=hide_package(tmp_path, "etcd3gw"))
    assert result.get("failed"), result
    assert "Failed to import the required Python library (etcd3gw)" in result["msg"], result["msg"]
    assert "lock_backend=etcd" in result["msg"]
    assert "req-new" not in loop_vg.lvs()


def test_a_missing_certificate_file_is_an_error_also_when_nothing_would_change(loop_vg):
    # state=absent of a disk that does not exist needs no lock, and so never looked at the settings
    result = run_module("sltv_disk", dict(name="req-absent", vg=loop_vg.name, state="absent", lock_backend="etcd",
                                          etcd_endpoints=["https://127.0.0.1:9"], etcd_ca_cert="/nonexistent/ca.pem"))
    assert result.get("failed"), result
    assert "/nonexistent/ca.pem" in result["msg"] and "etcd_ca_cert" in result["msg"], result["msg"]

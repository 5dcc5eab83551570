# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's execution-environment metadata is in the form ansible-builder reads: paths to
a pip requirements file and a bindep file, relative to the collection's root (a list inline made
`ansible-builder introspect` fail with a TypeError)."""

from __future__ import annotations

import os

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


def load_ee_metadata():
    with open(os.path.join(ROOT, "meta", "execution-environment.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def requirement_lines(relative_path):
    with open(os.path.join(ROOT, relative_path), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]


def test_dependencies_name_files_of_the_collection():
    dependencies = load_ee_metadata()["dependencies"]
    assert sorted(dependencies) == ["python", "system"]
    for relative_path in dependencies.values():
        assert isinstance(relative_path, str) and not os.path.isabs(relative_path), relative_path
        assert os.path.isfile(os.path.join(ROOT, relative_path)), relative_path


def test_the_etcd_client_is_a_python_requirement_and_ssh_a_system_one():
    dependencies = load_ee_metadata()["dependencies"]
    assert any(line.startswith("etcd3gw") for line in requirement_lines(dependencies["python"]))
    assert any(line.startswith("openssh-client") for line in requirement_lines(dependencies["system"]))

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a module result says of the lvm commands that ran (issue 14): ``command_count`` always, the
full ``commands`` list only with -v (verbosity >= 1), and on a failure without -v ``last_command``."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.infra import lvm
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LocalVgLock
from ansible_collections.sltv.core.plugins.module_utils.ops import disk_ops, module_args
from ansible_collections.sltv.core.plugins.module_utils.ops.result import OpResult
from ansible_collections.sltv.core.plugins.modules import sltv_disk

COMMANDS = [["lvm", "fullreport", "--reportformat", "json", "vg0"],
            ["lvcreate", "--yes", "-n", "d1", "-L", "1073741824b", "--addtag", "sltv_owner=a b", "vg0"]]


class Done(Exception):
    def __init__(self, kind, output):
        super(Done, self).__init__(kind)
        self.kind, self.output = kind, output


class FakeModule(object):
    def __init__(self, verbosity):
        self._verbosity = verbosity
        self._diff = False
        self.warnings = []

    def warn(self, warning):
        self.warnings.append(warning)

    def exit_json(self, **output):
        raise Done("exit", output)

    def fail_json(self, **output):
        raise Done("fail", output)


class FakeRunner(object):
    def __init__(self, commands):
        self.commands = [list(argv) for argv in commands]


def exit_output(verbosity, commands=None):
    commands = COMMANDS if commands is None else commands
    result = OpResult()
    with pytest.raises(Done) as done:
        module_args.exit_with(FakeModule(verbosity), result, FakeRunner(commands), "vg0/d1")
    assert done.value.kind == "exit"
    return done.value.output


def failure_output(verbosity, commands=None):
    commands = COMMANDS if commands is None else commands

    def action():
        raise SltvError("lvcreate failed")

    with pytest.raises(Done) as done:
        module_args.run_or_fail(FakeModule(verbosity), "sltv_disk vg0/d1", FakeRunner(commands), action)
    assert done.value.kind == "fail"
    return done.value.output


def test_without_v_a_result_has_only_the_command_count():
    output = exit_output(0)
    assert "commands" not in output and "last_command" not in output, output
    assert output["command_count"] == 2


@pytest.mark.parametrize("verbosity", [1, 2, 4])
def test_with_v_a_result_has_every_command(verbosity):
    output = exit_output(verbosity)
    assert output["commands"] == COMMANDS and output["command_count"] == 2
    assert "last_command" not in output


def test_without_v_a_failure_has_the_last_command_as_one_quoted_line():
    output = failure_output(0)
    assert "commands" not in output, output
    assert output["command_count"] == 2
    assert output["last_command"] == "lvcreate --yes -n d1 -L 1073741824b --addtag 'sltv_owner=a b' vg0"
    assert output["msg"] == "sltv_disk vg0/d1: lvcreate failed" and output["changed"] is False


def test_without_v_a_failure_before_any_command_has_no_last_command():
    output = failure_output(0, commands=[])
    assert output["command_count"] == 0 and "last_command" not in output and "commands" not in output


def test_with_v_a_failure_has_every_command():
    output = failure_output(1)
    assert output["commands"] == COMMANDS and output["command_count"] == 2 and "last_command" not in output
    assert failure_output(1, commands=[])["commands"] == []


# -- a thick create through sltv_disk's main(), lvm faked ------------------------------------------

VG_ROW = {"vg_name": "vg0", "vg_uuid": "u", "vg_size": "10737418240", "vg_free": "10737418240",
          "vg_extent_size": "4194304", "vg_extent_count": "2560", "vg_free_count": "2560", "vg_attr": "wz--n-",
          "vg_tags": "", "vg_lock_type": ""}


def fake_lvm(argv, **kwargs):
    if argv[:2] == ["lvm", "fullreport"]:
        return json.dumps({"report": [{"vg": [VG_ROW], "lv": []}]})
    return ""


def run_thick_create(monkeypatch, tmp_path, capsys, verbosity):
    monkeypatch.setattr(lvm, "run", fake_lvm)
    monkeypatch.setattr(lvm, "device_mapper_loaded", lambda *args: True)
    monkeypatch.setattr(disk_ops, "write_qcow2_header", lambda path, size: None)
    monkeypatch.setattr(sltv_disk, "LvmRunner",
                        lambda: lvm.LvmRunner(host_lock_path=str(tmp_path / "lvm-host.lock"), environ={}))
    monkeypatch.setattr(sltv_disk, "lock_factory",
                        lambda params, vg, tool: lambda: LocalVgLock(vg, "test", 5, lock_dir=str(tmp_path)))
    args = dict(name="d1", vg="vg0", size="1G", _ansible_verbosity=verbosity)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exited:
            sltv_disk.main()
    assert exited.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_a_thick_create_without_v_lists_no_commands(monkeypatch, tmp_path, capsys):
    result = run_thick_create(monkeypatch, tmp_path, capsys, 0)
    assert result["changed"] is True and result["actions"] == ["create"], result
    assert "commands" not in result and "last_command" not in result, result
    assert result["command_count"] == 3


def test_a_thick_create_with_v_lists_every_command(monkeypatch, tmp_path, capsys):
    result = run_thick_create(monkeypatch, tmp_path, capsys, 1)
    assert result["command_count"] == len(result["commands"]) == 3
    # the report before the lock and again under it, then the create
    heads = [argv[:2] for argv in result["commands"]]
    assert heads == [["lvm", "fullreport"], ["lvm", "fullreport"], ["lvcreate", "--yes"]]

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's start-up check that lvm can archive and back up VG metadata (a fresh host's agent
started before /etc/lvm/archive existed: every lvextend failed on a read-only file system)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil

import pytest

from ansible_collections.sltv.core.plugins.module_utils.agent import lvm_backup_check
from ansible_collections.sltv.core.plugins.module_utils.agent.lvm_backup_check import backup_dirs, check_backup_dirs
from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError, SltvError


def lvmconfig(archive_dir, backup_dir, archive="1", backup="1"):
    def runner(argv, timeout=None, env=None):
        assert argv[:3] == ["lvmconfig", "--typeconfig", "full"] and timeout
        return 'archive=%s\narchive_dir="%s"\nbackup=%s\nbackup_dir="%s"\n' % (archive, archive_dir, backup, backup_dir)
    return runner


def test_both_directories_writable(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "backup").mkdir()
    dirs = check_backup_dirs(lvmconfig(str(tmp_path / "archive"), str(tmp_path / "backup")))
    assert dirs == [str(tmp_path / "archive"), str(tmp_path / "backup")]
    assert os.listdir(str(tmp_path / "archive")) == []  # the probe file is gone


def test_a_missing_directory_fails_loudly_naming_it_and_the_fix(tmp_path):
    (tmp_path / "backup").mkdir()
    missing = str(tmp_path / "archive")
    with pytest.raises(SltvError) as info:
        check_backup_dirs(lvmconfig(missing, str(tmp_path / "backup")))
    message = str(info.value)
    assert "lvm cannot archive or back up VG metadata: %s does not exist" % missing in message
    assert "mkdir -m 0700 -p %s" % missing in message and "systemctl restart sltv-agent" in message
    assert "ReadWritePaths=" in message


def test_a_read_only_directory_fails_loudly(tmp_path, monkeypatch):
    """Inside the sandbox the directory exists but is read-only (EROFS): the probe write finds it."""
    (tmp_path / "archive").mkdir()
    (tmp_path / "backup").mkdir()

    def read_only(prefix, dir):  # noqa: A002 (tempfile's name)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lvm_backup_check.tempfile, "mkstemp", read_only)
    with pytest.raises(SltvError, match="%s is not writable here: Read-only file system" % (tmp_path / "archive")):
        check_backup_dirs(lvmconfig(str(tmp_path / "archive"), str(tmp_path / "backup")))


def test_archiving_switched_off_needs_no_directory(tmp_path):
    (tmp_path / "backup").mkdir()
    assert backup_dirs(lvmconfig("/nonexistent", str(tmp_path / "backup"), archive="0")) == [str(tmp_path / "backup")]


def test_lvmconfig_failing_is_named():
    def failing(argv, timeout=None, env=None):
        raise CommandError(argv, 3, "Configuration node backup/archive_dir not found")

    with pytest.raises(SltvError, match="cannot read lvm's backup settings"):
        check_backup_dirs(failing)


def test_the_real_lvmconfig():
    if not shutil.which("lvmconfig"):
        pytest.skip("no lvmconfig (Debian: lvm2)")
    dirs = backup_dirs()
    assert len(dirs) == 2 and all(os.path.isabs(path) for path in dirs)

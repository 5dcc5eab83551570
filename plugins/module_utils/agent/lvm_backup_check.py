# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start-up check: lvm can archive and back up VG metadata from inside the agent's sandbox.

Every lvextend writes ``backup/archive_dir`` and ``backup/backup_dir`` first. systemd's
``ReadWritePaths=-/etc/lvm/archive`` skips a path that is missing when the unit starts, so a
directory made later stays read-only for the agent, and every extend then fails with "Cannot
archive volume group metadata ... to read-only filesystem". Found at start, it is one clear line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.infra.commands import run

LVMCONFIG_TIMEOUT = 10.0
# lvm's built-in defaults, used when lvmconfig does not name a directory
DEFAULT_DIRS = {"archive": "/etc/lvm/archive", "backup": "/etc/lvm/backup"}


def parse_lvmconfig(text):
    """``archive=1`` / ``archive_dir="/x"`` lines -> {name: value}."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep:
            values[name.strip()] = value.strip().strip('"')
    return values


def backup_dirs(runner=run):
    """The directories lvm writes on a metadata change, as lvm's configuration has them."""
    out = runner(["lvmconfig", "--typeconfig", "full", "backup/archive", "backup/archive_dir",
                  "backup/backup", "backup/backup_dir"], timeout=LVMCONFIG_TIMEOUT,
                 env={"LVM_SUPPRESS_FD_WARNINGS": "1"})
    values = parse_lvmconfig(out)
    dirs = []
    for kind in ("archive", "backup"):
        if values.get(kind, "1") != "0":  # archive=0 / backup=0: lvm writes nothing there
            dirs.append(values.get(kind + "_dir") or DEFAULT_DIRS[kind])
    return dirs


def problem(path):
    """Why lvm cannot write ``path`` from this process, or None: a real write, as lvm does it."""
    if not os.path.isdir(path):
        return "%s does not exist (or is not a directory)" % path
    try:
        handle, probe = tempfile.mkstemp(prefix=".sltv-agent-probe-", dir=path)
    except OSError as exc:
        return "%s is not writable here: %s" % (path, exc.strerror or exc)
    os.close(handle)
    os.unlink(probe)
    return None


def check_backup_dirs(runner=run):
    """Raise SltvError naming the path and the fix unless lvm can archive and back up metadata."""
    try:
        dirs = backup_dirs(runner)
    except (SltvError, OSError) as exc:
        raise SltvError("cannot read lvm's backup settings (lvmconfig): %s" % exc)
    for path in dirs:
        why = problem(path)
        if why:
            raise SltvError("lvm cannot archive or back up VG metadata: %s, so every lvextend would fail. Create it "
                            "(mkdir -m 0700 -p %s; the role sltv.core.sltv_agent does) and restart the agent "
                            "(systemctl restart sltv-agent): the unit's ReadWritePaths= skips a directory missing "
                            "when the agent starts" % (why, path))
    return dirs

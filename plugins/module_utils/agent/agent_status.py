# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's status file on its host, for ``sltv_info`` whatever the lock backend.

With etcd, ``sltv_info`` also lists the agents' etcd records; with the local lock there is no etcd,
so the agent writes what it cannot do (a VG missing, etcd unreachable) here after every sweep, and
``sltv_info`` on the host turns a degraded status into a warning.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile
import time

STATUS_PATH = "/run/sltv/agent-status.json"  # /run/sltv: the unit's RuntimeDirectory
# An older file is from an agent that stopped (or hangs): sltv_info says so instead of trusting it.
STALE_AFTER = 120.0


def write_status(status, path=STATUS_PATH):
    """Replace the status file atomically (a reader never sees half of it)."""
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix=".agent-status-", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(dict(status, written=round(time.time(), 3)), out, sort_keys=True)
        os.chmod(temporary, 0o644)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def status_warning(path=None, now=None):
    """A warning for sltv_info when the agent on this host is degraded or stale, else None."""
    path = path or STATUS_PATH
    try:
        with open(path) as handle:
            status = json.load(handle)
    except (IOError, OSError, ValueError):
        return None  # no agent here (or never written): nothing to say
    if not isinstance(status, dict):
        return None
    age = (time.time() if now is None else now) - float(status.get("written", 0))
    if age > STALE_AFTER:
        return ("sltv-agent on this host last wrote its status %.0f s ago (%s): is it running? "
                "(systemctl status sltv-agent)" % (age, path))
    degraded = status.get("degraded") or []
    if degraded:
        return "sltv-agent on this host runs degraded: %s (see journalctl -u sltv-agent)" % "; ".join(degraded)
    return None

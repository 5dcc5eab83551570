# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exceptions shared by the modules and the agent.

Every error carries a message written for the admin: what failed, on which disk/host, what to do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class SltvError(Exception):
    """Base class: the message is shown to the user as is."""


class ValidationError(SltvError):
    """Bad input, detected before any command runs."""


class NotManagedError(SltvError):
    """The LV exists but does not carry the sltv tag: never touched."""


class DiskStateError(SltvError):
    """The disk exists in a state that the requested operation may not change."""


class CommandError(SltvError):
    """An external command failed; keeps argv, exit code and stderr."""

    def __init__(self, argv, rc, stderr, stdout=""):
        self.argv = list(argv)
        self.rc = rc
        self.stderr = (stderr or "").strip()
        self.stdout = stdout or ""
        super(CommandError, self).__init__(
            "command %s failed with exit code %s: %s"
            % (" ".join(self.argv), rc, self.stderr or "(no error output)")
        )


class LockError(SltvError):
    """The cluster lock could not be used (backend unreachable, bad settings)."""


class LockTimeout(LockError):
    """The lock was not acquired within the timeout."""


class LockLost(LockError):
    """The lock was held but is no longer safe to rely on (lease expired or key gone)."""

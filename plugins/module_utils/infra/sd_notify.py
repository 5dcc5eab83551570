# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd's notify protocol (READY, WATCHDOG, STATUS, STOPPING) through python3-systemd.

``systemd.daemon.notify`` is libsystemd's sd_notify(3): a datagram to $NOTIFY_SOCKET of the process
environment (a path, or an abstract socket for a name that starts with "@"). Outside systemd (no
socket) every call does nothing. python3-systemd has no sd_watchdog_enabled(3): the watchdog interval
comes from WATCHDOG_USEC and WATCHDOG_PID here, as libsystemd reads them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

try:
    from systemd import daemon as systemd_daemon
    HAS_SYSTEMD = True
except ImportError:  # the agent says so at start (agent_main); the modules do not need it
    systemd_daemon = None
    HAS_SYSTEMD = False


class Notifier(object):
    """``environ`` (os.environ by default) says whether there is a notify socket and a watchdog; an
    environment without NOTIFY_SOCKET makes a notifier that does nothing. libsystemd sends to the
    process's $NOTIFY_SOCKET, which is the same under systemd."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.address = environ.get("NOTIFY_SOCKET") or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watchdog = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # systemd's advice: ping at half the timeout.
        self.watchdog_interval = int(usec) / 2e6 if watchdog else None

    def notify(self, *fields):
        """True once the datagram is sent; False without a socket or when sending failed."""
        if not self.address:
            return False
        try:
            return systemd_daemon.notify("\n".join(fields))
        except (IOError, OSError):  # the socket is gone: systemd stopped listening, nothing to tell
            return False

    def ready(self, status):
        return self.notify("READY=1", "STATUS=" + status)

    def watchdog(self):
        return self.notify("WATCHDOG=1")

    def status(self, status):
        return self.notify("STATUS=" + status)

    def stopping(self):
        return self.notify("STOPPING=1")

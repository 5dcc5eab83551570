# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd's notify protocol (READY, WATCHDOG, STATUS, STOPPING) without python3-systemd.

A datagram to $NOTIFY_SOCKET; outside systemd (no socket) every call does nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket


class Notifier(object):
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watchdog = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # systemd's advice: ping at half the timeout.
        self.watchdog_interval = int(usec) / 2e6 if watchdog else None

    def notify(self, *fields):
        if not self.address:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
            sock.sendall("\n".join(fields).encode("utf-8"))
            return True
        except (IOError, OSError):
            return False
        finally:
            sock.close()

    def ready(self, status):
        return self.notify("READY=1", "STATUS=" + status)

    def watchdog(self):
        return self.notify("WATCHDOG=1")

    def status(self, status):
        return self.notify("STATUS=" + status)

    def stopping(self):
        return self.notify("STOPPING=1")

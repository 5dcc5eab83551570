# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One result object for every operation: what was planned, what was really done, and the
warnings and lock waits on the way. A run that fails half-way reports what it had done
(``changed`` is true then), so handlers fire and no message claims that nothing changed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class OpResult(object):
    def __init__(self):
        self.actions = []   # the plan (check mode: what would be done)
        self.done = []      # actions that really happened, in order
        self.warnings = []
        self.lock_wait = 0.0
        self.changed = False

    def did(self, action):
        """Record that ``action`` took effect (call it right after the step succeeded)."""
        self.done.append(action)
        self.changed = True

    def partial(self):
        """For an error message: what had been done before it, or that nothing had."""
        if self.done:
            return "Done before the failure (the run changed things): %s" % ", ".join(self.done)
        return "Nothing was changed"

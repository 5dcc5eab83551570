# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run an external command: argv only (never a shell), LC_ALL=C, CommandError on failure."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess

from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError


def run(argv, timeout=None, env=None, clean_stderr=None):
    """Return stdout of ``argv``; raise CommandError with argv, exit code and stderr.

    ``env`` adds variables to the environment; ``clean_stderr`` filters noise out of the error.
    """
    argv = list(argv)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                            env=dict(os.environ, LC_ALL="C", **(env or {})), universal_newlines=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise CommandError(argv, "timeout after %s s" % timeout, stderr, stdout)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, clean_stderr(stderr) if clean_stderr else stderr, stdout)
    return stdout

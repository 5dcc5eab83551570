# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test creates its sanity-test virtual environments without pip and then runs
``get-pip-<version>.py`` fetched from ci-files.testing.ansible.com, a host this project's
machines cannot reach.  ansible-test first looks for the script in
``~/.ansible/test/cache/get_pip_<version>.py``; scripts/sanity.sh copies this file there.

It does what get-pip.py does for ansible-test: put pip into the current (empty) virtual
environment with ``ensurepip`` and then ``pip install`` the requested packages
(for example ``pip==24.2``) from the package index.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess
import sys

MARKER = "sltv-core-get-pip-shim"

# get-pip.py options that have no meaning for "pip install"
GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")


def main():
    """Install pip with ensurepip, then install the requested packages with that pip."""
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    pip = [sys.executable, "-m", "pip"]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
    subprocess.check_call(pip + ["install", "--upgrade", "--quiet"] + args)
    if "--no-setuptools" in sys.argv[1:]:
        # ensurepip of Python < 3.12 also installs setuptools; get-pip.py would not
        subprocess.check_call(pip + ["uninstall", "--yes", "--quiet", "setuptools"])


if __name__ == "__main__":
    main()

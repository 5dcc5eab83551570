# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make the collection importable as ansible_collections.sltv.core from a plain checkout."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_DIR = os.path.join(REPO_ROOT, "build", "collections")


def link_collection():
    """build/collections/ansible_collections/sltv/core -> the repository root."""
    namespace_dir = os.path.join(COLLECTIONS_DIR, "ansible_collections", "sltv")
    link = os.path.join(namespace_dir, "core")
    os.makedirs(namespace_dir, exist_ok=True)  # pytest-xdist workers may get here at once
    if not os.path.lexists(link):
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:
            pass
    if COLLECTIONS_DIR not in sys.path:
        sys.path.insert(0, COLLECTIONS_DIR)


if os.path.basename(os.path.dirname(os.path.dirname(REPO_ROOT))) != "ansible_collections":
    link_collection()

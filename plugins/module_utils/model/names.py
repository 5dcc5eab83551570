# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LVM name rules, checked before any command runs (lvm2: lib/misc/lvm-string.c, lvm(8) VALID NAMES)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError

_NAME_RE = re.compile(r"^[A-Za-z0-9+_.-]+\Z")  # \Z: "$" would let a trailing newline through
MAX_NAME_LENGTH = 127

# lvm2 reserves these parts for its internal sub-LVs; an LV name may not contain them.
RESERVED_LV_PARTS = (
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_mimage", "_mlog", "_pmspare",
    "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
)
RESERVED_LV_PREFIXES = ("snapshot", "pvmove")


def is_lvm_name(name):
    """True when ``name`` has only the characters lvm2 allows in a VG or LV name."""
    return isinstance(name, str) and bool(_NAME_RE.match(name))


def _check_common(name, what):
    if not isinstance(name, str) or not name:
        raise ValidationError("%s name must be a non-empty string" % what)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError("%s name %r is %d characters long; lvm2 allows at most %d"
                              % (what, name[:40] + "...", len(name), MAX_NAME_LENGTH))
    if not _NAME_RE.match(name):
        bad = sorted(set(c for c in name if not _NAME_RE.match(c)))
        raise ValidationError("%s name %r contains %s; only A-Z a-z 0-9 + _ . - are allowed"
                              % (what, name, ", ".join(repr(c) for c in bad)))
    if name.startswith("-"):
        raise ValidationError("%s name %r may not start with '-'" % (what, name))
    if name in (".", ".."):
        raise ValidationError("%s name %r is reserved" % (what, name))


def validate_vg_name(name):
    _check_common(name, "volume group")
    return name


def validate_disk_name(name):
    """Validate a disk (= LV) name against lvm2's rules; return it unchanged."""
    _check_common(name, "disk")
    for prefix in RESERVED_LV_PREFIXES:
        if name.startswith(prefix):
            raise ValidationError("disk name %r may not start with %r (reserved by lvm2)" % (name, prefix))
    for part in RESERVED_LV_PARTS:
        if part in name:
            raise ValidationError("disk name %r may not contain %r (reserved by lvm2 for internal volumes)"
                                  % (name, part))
    return name

# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LV tags: the disk's facts stored in the VG metadata that every host reads.

A tag is ``sltv`` (the managed marker) or ``sltv_<key>=<value>``. lvm2 allows only
``[A-Za-z0-9_+.-/=!:&#]`` in tags, so any other character of a value is written as ``#xx`` (hex).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError

MANAGED = "sltv"
KIND = "kind"          # thick | thin
FORMAT = "format"      # raw | qcow2
VSIZE = "vsize"        # virtual size in bytes (what the guest sees)
INIT = "init"          # "pending" while a thin disk's qcow2 header is not written yet
STATE = "state"        # "deleting" between the start of a wiping delete and lvremove
ATTACHED = "attached"  # a claim <host>:<uuid>:<mode>:<name>, one per attachment (model/ownership.py)

_PREFIX = MANAGED + "_"
INIT_PENDING_TAG = _PREFIX + INIT + "=pending"
DELETING_TAG = _PREFIX + STATE + "=deleting"
_SAFE = re.compile(r"[A-Za-z0-9_+.\-/=!:&]")
MAX_TAG_LENGTH = 1024


def encode_value(value):
    """Encode ``value`` into the lvm2 tag alphabet ('#' itself is escaped too)."""
    out = []
    for char in str(value):
        if _SAFE.match(char):
            out.append(char)
        else:
            out.extend("#%02x" % byte for byte in char.encode("utf-8"))
    return "".join(out)


def decode_value(text):
    if "#" not in text:
        return text  # nothing escaped (most values): sltv_info and the agent decode every tag of every disk
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "#" and re.match(r"[0-9a-f]{2}", text[i + 1:i + 3]):
            raw.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode("utf-8"))
            i += 1
    return raw.decode("utf-8", "replace")


def make_tag(key, value):
    tag = "%s%s=%s" % (_PREFIX, key, encode_value(value))
    if len(tag) > MAX_TAG_LENGTH:
        raise ValidationError("LV tag for %s is %d characters long; lvm2 allows %d" % (key, len(tag), MAX_TAG_LENGTH))
    return tag


def disk_tags(kind, fmt, virtual_size, pending_init=False):
    """Tags of a new disk, in a stable order."""
    tags = [MANAGED, make_tag(KIND, kind), make_tag(FORMAT, fmt), make_tag(VSIZE, virtual_size)]
    if pending_init:
        tags.append(INIT_PENDING_TAG)
    return tags


def split_tags(lv_tags):
    """lvs' comma-separated ``lv_tags`` -> list of tags."""
    return [tag for tag in (lv_tags or "").split(",") if tag]


def parse_tags(tags):
    """Return (managed, facts) where facts maps key -> list of decoded values of sltv_<key>= tags."""
    managed = MANAGED in tags
    facts = {}
    for tag in tags:
        if tag.startswith(_PREFIX) and "=" in tag:
            key, value = tag[len(_PREFIX):].split("=", 1)
            facts.setdefault(key, []).append(decode_value(value))
    return managed, facts

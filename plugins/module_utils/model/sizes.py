# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk sizes: parsing (binary units, like SLTV and lvm2), extent rounding, thin-disk caps."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError

KIB = 1024
MIB = 1024 ** 2
GIB = 1024 ** 3
TIB = 1024 ** 4

# Every unit is binary: "G", "GB" and "GiB" all mean 2**30, as in lvm2 and SLTV.
_UNITS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB, "p": 1024 ** 5}
# ASCII digits only (\d and int() take any Unicode digit: "５G" must not be 5 GiB); \Z, not $ ("1G\n").
_SIZE_RE = re.compile(r"^ *(?P<number>[0-9]+(?:\.[0-9]+)?) *(?P<unit>[bkmgtp]?)(?P<suffix>(?:i?b)?) *\Z", re.IGNORECASE)

# One extend step of a thin disk: the default first LV size of a thin disk, shared with the agent.
DEFAULT_THIN_CHUNK = 1 * GIB
# qcow2 metadata (L1/L2 and refcount tables) needs room above the virtual size; VDSM uses 1.1 too.
THIN_CAP_FACTOR = 1.1
# qemu-img rounds a virtual size up to whole sectors.
SECTOR = 512


def parse_size(value, what="size"):
    """Return the size in bytes of ``value`` ("50G", "512MiB", "1t", "1048576", or an int).

    Raises ValidationError for zero, negative, fractional bytes or malformed values.
    """
    if isinstance(value, bool):
        raise ValidationError("%s %r is not a size: use a number of bytes or a value like 50G" % (what, value))
    if isinstance(value, int):
        number, unit = value, ""
        if number <= 0:
            raise ValidationError("%s must be greater than zero, got %d" % (what, number))
        return number
    text = str(value)
    match = _SIZE_RE.match(text)
    if not match:
        raise ValidationError(
            "%s %r is not a valid size: use bytes or a number with a binary unit "
            "(K, M, G, T, P; e.g. 512M, 50G, 50GiB, 1.5T)" % (what, text)
        )
    number, unit = match.group("number"), match.group("unit").lower()
    if "." in number and _UNITS[unit] == 1:
        raise ValidationError("%s %r has a fraction of a byte: give whole bytes, or a unit (e.g. 1.5G)" % (what, text))
    if "." in number:
        whole, frac = number.split(".")
        scale = 10 ** len(frac)
        numerator = (int(whole) * scale + int(frac)) * _UNITS[unit]
        size = -(-numerator // scale)  # fractional bytes round up
    else:
        size = int(number) * _UNITS[unit]
    if size <= 0:
        raise ValidationError("%s must be greater than zero, got %r" % (what, text))
    return size


def round_up(size, multiple):
    """Round ``size`` up to a whole number of ``multiple`` (e.g. the VG extent size)."""
    return -(-size // multiple) * multiple


def thin_cap(virtual_size, extent_size):
    """Largest LV size a thin disk may grow to: virtual * 1.1, rounded up to the extent size."""
    return round_up(-(-virtual_size * 11 // 10), extent_size)


def human(size):
    """Readable binary size for messages: 53687091200 -> '50 GiB', 1610612736 -> '1.5 GiB'."""
    for unit, factor in (("PiB", 1024 ** 5), ("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            value = size / float(factor)
            text = ("%.2f" % value).rstrip("0").rstrip(".")
            return "%s %s" % (text, unit)
    return "%d B" % size

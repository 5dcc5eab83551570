# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When and by how much the thin-extend agent grows a thin disk's LV (pure logic, no I/O).

The agent feeds each disk's ``allocation`` (highest written offset, from libvirt) into a
WriteRateEstimator, and asks ExtendPolicy where to arm the block-threshold event and how big the
LV should become. The chunk and the headroom follow the write rate, so that the headroom covers
``headroom_seconds`` of writes: a fast writer gets bigger chunks and an earlier event.
All sizes are bytes; ``cap`` is the largest LV size allowed (sizes.thin_cap).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import DEFAULT_THIN_CHUNK, GIB, MIB, round_up

DEFAULT_CHUNK_MIN = DEFAULT_THIN_CHUNK
DEFAULT_CHUNK_MAX = 8 * GIB
DEFAULT_HEADROOM_SECONDS = 10
DEFAULT_EXTENT_SIZE = 4 * MIB  # lvm2's default; the agent passes each VG's real extent size
DEFAULT_HALF_LIFE = 10.0  # seconds
# Far above any real disk (VDSM's anchor is ~1300 MiB/s): one bogus sample cannot ask for a huge chunk.
DEFAULT_MAX_RATE = 16 * GIB
# Samples closer than this are merged with the next one: two events for one write (vdb and vdb[4])
# would otherwise give a near-zero interval and a meaningless rate.
DEFAULT_MIN_INTERVAL = 0.5


class WriteRateEstimator(object):
    """Smoothed write rate (bytes/s) of one disk from samples ``(now_seconds, allocation_bytes)``.

    An EWMA whose weight follows the time between samples (``half_life`` seconds), so samples
    need not be regular. A drop in allocation (re-attach: it restarts at 0) or a clock going
    backwards resets the estimator: rates are never negative. The first interval after a reset
    sets the rate directly, so a fresh disk under heavy writes is seen at once.
    """

    def __init__(self, half_life=DEFAULT_HALF_LIFE, max_rate=DEFAULT_MAX_RATE, min_interval=DEFAULT_MIN_INTERVAL):
        if half_life <= 0:
            raise ValidationError("half_life must be greater than 0 seconds, got %r" % (half_life,))
        if max_rate <= 0:
            raise ValidationError("max_rate must be greater than 0 bytes/s, got %r" % (max_rate,))
        if min_interval < 0:
            raise ValidationError("min_interval must not be negative, got %r" % (min_interval,))
        self.half_life = float(half_life)
        self.max_rate = float(max_rate)
        self.min_interval = float(min_interval)
        self.reset()

    def reset(self):
        self.rate = 0.0
        self._base = None  # (time, allocation) the next interval is measured from
        self._seeded = False

    def update(self, now, allocation):
        """Add a sample; return the smoothed rate in bytes/s."""
        if self._base is None or allocation < self._base[1] or now < self._base[0]:
            self.reset()
            self._base = (now, allocation)
            return self.rate
        elapsed = now - self._base[0]
        if elapsed < self.min_interval or elapsed <= 0:
            return self.rate  # keep the base: these bytes count in the next interval
        instant = min((allocation - self._base[1]) / elapsed, self.max_rate)
        if self._seeded:
            weight = 1.0 - 0.5 ** (elapsed / self.half_life)
            self.rate += weight * (instant - self.rate)
        else:
            self.rate = instant
            self._seeded = True
        self._base = (now, allocation)
        return self.rate


class ExtendPolicy(object):
    """Threshold and extend size of a thin disk's LV, from its size, its cap and its write rate."""

    def __init__(self, chunk_min=DEFAULT_CHUNK_MIN, chunk_max=DEFAULT_CHUNK_MAX,
                 headroom_seconds=DEFAULT_HEADROOM_SECONDS, extent_size=DEFAULT_EXTENT_SIZE):
        if extent_size <= 0:
            raise ValidationError("extent_size must be greater than 0, got %r" % (extent_size,))
        if chunk_min <= 0:
            raise ValidationError("chunk_min must be greater than 0, got %r" % (chunk_min,))
        if chunk_max < chunk_min:
            raise ValidationError("chunk_max (%d) must not be smaller than chunk_min (%d)" % (chunk_max, chunk_min))
        if headroom_seconds <= 0:
            raise ValidationError("headroom_seconds must be greater than 0, got %r" % (headroom_seconds,))
        self.extent_size = int(extent_size)
        self.chunk_min = round_up(int(chunk_min), self.extent_size)
        self.chunk_max = round_up(int(chunk_max), self.extent_size)
        self.headroom_seconds = float(headroom_seconds)

    def _limit(self, cap):
        # An LV is a whole number of extents: the largest size allowed is cap rounded down.
        return cap // self.extent_size * self.extent_size

    def can_grow(self, physical, cap):
        """True while the LV is below its cap by at least one extent."""
        return physical < self._limit(cap)

    @staticmethod
    def _bytes(rate, seconds):
        # No rate, a negative one or NaN means "unknown": the chunk_min floor applies.
        if not rate or rate < 0 or math.isnan(rate):
            return 0
        return int(math.ceil(min(rate, DEFAULT_MAX_RATE) * seconds))

    def headroom(self, physical, rate):
        """Free bytes to keep below ``physical``: the writes expected in ``headroom_seconds``."""
        wanted = max(self.chunk_min // 2, self._bytes(rate, self.headroom_seconds))
        return min(max(wanted, self.extent_size), physical)

    def chunk(self, rate):
        """Bytes to add in one extend: twice the headroom, within [chunk_min, chunk_max], in extents."""
        wanted = round_up(self._bytes(rate, self.headroom_seconds * 2), self.extent_size)
        return min(max(wanted, self.chunk_min), self.chunk_max)

    def threshold(self, physical, cap, rate):
        """Allocation at which the block-threshold event must fire, or None when there is no room to grow."""
        if physical >= self._limit(cap):
            return None
        # QEMU and libvirt take 0 as "no threshold": arm 1 so that any write fires at once.
        return max(physical - self.headroom(physical, rate), 1)

    def needs_extend(self, physical, cap, allocation, rate):
        """True when the disk is within its headroom (or past its end) and may still grow."""
        if physical >= self._limit(cap):
            return False
        # A headroom covering the whole LV means: grow now, even before the first write.
        return allocation >= physical - self.headroom(physical, rate)

    def next_size(self, physical, cap, rate):
        """New LV size: physical + chunk, extent-aligned, never above cap; ``physical`` when at cap."""
        limit = self._limit(cap)
        if physical >= limit:
            return physical
        return min(round_up(physical + self.chunk(rate), self.extent_size), limit)

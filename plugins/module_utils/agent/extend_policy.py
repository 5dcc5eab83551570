# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When and by how much the thin-extend agent grows a thin disk's LV (pure logic, no I/O).

The agent feeds each disk's ``allocation`` (highest written offset, from libvirt) into a
WriteRateEstimator, and asks ExtendPolicy where to arm the block-threshold event and how big the
LV should become. The chunk and the headroom follow the write rate, so that the headroom covers
``headroom_seconds`` of writes: a fast writer gets bigger chunks and an earlier event.
All sizes are bytes; ``cap`` is the largest LV size allowed (sizes.thin_cap).

Before any rate has been measured for a disk (a new attachment, a re-attach, an agent restart),
the rate is unknown (``None``), and the policy assumes the fastest a guest on one host can write,
``initial_rate`` (default DEFAULT_INITIAL_WRITE_RATE), for as long as one extend may take,
INITIAL_WINDOW: the first headroom is ``initial_rate * INITIAL_WINDOW`` and the first chunk twice
that (within chunk_min and chunk_max), so a guest that starts writing at that rate right after the
attach finds room while the first lvextend runs. ``initial_rate`` 0 turns this off (the headroom is
then ``chunk_min / 2`` until a rate is measured).
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
# The write rate assumed before one is measured: a guest's share of what one host can push to its
# shared LUN. A 10 GbE iSCSI path carries 10 Gbit/s = 1192 MiB/s raw (8G FC ~800 MiB/s, 16G FC
# ~1600 MiB/s; oVirt VDSM's thin-extend benchmark ran guests at ~1300 MiB/s, DESIGN.md section 6);
# 256 MiB/s is a quarter of a 10 GbE path: the rate of one busy guest among a few on the host, and
# the assumption also made for every disk after an agent restart, so it must not be a whole link's
# worth (4 GiB per disk, hundreds of disks). A faster guest is measured within its first writes.
DEFAULT_INITIAL_WRITE_RATE = 256 * MIB
# Seconds the first headroom must last at that rate: one extend's latency on a loaded host, from
# the threshold event to the new size (issue 12, test bed under load: lvextend 2.5-3.07 s, detect
# 0.28 s, the agent's own part p99 0.29 s), rounded up: 4 s. At 256 MiB/s: 1 GiB of first headroom.
INITIAL_WINDOW = 4.0
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

    @property
    def measured(self):
        """True once an interval has given a rate (``rate`` is 0.0 before: unknown, not idle)."""
        return self._seeded

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
                 headroom_seconds=DEFAULT_HEADROOM_SECONDS, extent_size=DEFAULT_EXTENT_SIZE,
                 initial_rate=DEFAULT_INITIAL_WRITE_RATE, initial_window=INITIAL_WINDOW):
        if extent_size <= 0:
            raise ValidationError("extent_size must be greater than 0, got %r" % (extent_size,))
        if chunk_min <= 0:
            raise ValidationError("chunk_min must be greater than 0, got %r" % (chunk_min,))
        if chunk_max < chunk_min:
            raise ValidationError("chunk_max (%d) must not be smaller than chunk_min (%d)" % (chunk_max, chunk_min))
        if headroom_seconds <= 0:
            raise ValidationError("headroom_seconds must be greater than 0, got %r" % (headroom_seconds,))
        if initial_rate < 0 or initial_window <= 0:
            raise ValidationError("initial_rate must not be negative and initial_window must be greater than 0, "
                                  "got %r and %r" % (initial_rate, initial_window))
        self.extent_size = int(extent_size)
        self.chunk_min = round_up(int(chunk_min), self.extent_size)
        self.chunk_max = round_up(int(chunk_max), self.extent_size)
        self.headroom_seconds = float(headroom_seconds)
        self.initial_rate = float(initial_rate)
        self.initial_window = float(initial_window)

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

    def _expected(self, rate, seconds):
        """Bytes written in ``seconds`` at ``rate``; at the assumed initial rate while ``rate`` is None."""
        if rate is None:
            return self._bytes(self.initial_rate, self.initial_window)
        return self._bytes(rate, seconds)

    def headroom(self, physical, rate):
        """Free bytes to keep below ``physical``: the writes expected in ``headroom_seconds``
        (``rate`` None, not measured yet: in ``initial_window`` at ``initial_rate``)."""
        wanted = max(self.chunk_min // 2, self._expected(rate, self.headroom_seconds))
        return min(max(wanted, self.extent_size), physical)

    def chunk(self, rate):
        """Bytes to add in one extend: twice the headroom, within [chunk_min, chunk_max], in extents
        (``rate`` None: twice the first headroom, so that the first extend does not leave the disk
        within its headroom again)."""
        wanted = self._expected(rate, self.headroom_seconds * 2) if rate is not None else 2 * self._expected(None, 0)
        wanted = round_up(wanted, self.extent_size)
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

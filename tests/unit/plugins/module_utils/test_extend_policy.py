# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.agent.extend_policy import (
    DEFAULT_CHUNK_MAX,
    DEFAULT_CHUNK_MIN,
    DEFAULT_HEADROOM_SECONDS,
    DEFAULT_MAX_RATE,
    ExtendPolicy,
    WriteRateEstimator,
)
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import DEFAULT_THIN_CHUNK, GIB, MIB, thin_cap

EXTENT = 4 * MIB
RATES = [0, 1 * MIB, 50 * MIB, 200 * MIB, 1300 * MIB, 10 * GIB]


def policy(**kwargs):
    kwargs.setdefault("extent_size", EXTENT)
    return ExtendPolicy(**kwargs)


def test_defaults():
    assert DEFAULT_CHUNK_MIN == DEFAULT_THIN_CHUNK == GIB
    assert DEFAULT_CHUNK_MAX == 8 * GIB
    assert DEFAULT_HEADROOM_SECONDS == 10
    pol = ExtendPolicy()
    assert (pol.chunk_min, pol.chunk_max, pol.headroom_seconds, pol.extent_size) == (GIB, 8 * GIB, 10.0, 4 * MIB)


# -- estimator ------------------------------------------------------------------------------------

def feed(est, samples):
    rate = None
    for now, allocation in samples:
        rate = est.update(now, allocation)
    return rate


def test_estimator_starts_at_zero_and_first_interval_sets_the_rate():
    est = WriteRateEstimator()
    assert est.update(100.0, 5 * GIB) == 0.0
    assert est.update(101.0, 5 * GIB + 100 * MIB) == pytest.approx(100 * MIB)


def test_estimator_converges_to_a_steady_rate():
    est = WriteRateEstimator(half_life=10)
    rate = feed(est, [(t, t * 20 * MIB) for t in range(0, 120, 5)])
    assert rate == pytest.approx(20 * MIB)


def test_estimator_half_life():
    est = WriteRateEstimator(half_life=10)
    feed(est, [(0, 0), (10, 1000 * MIB)])  # seeded at 100 MiB/s
    # One half-life at 0 B/s halves the rate, whatever the number of samples in it.
    assert est.update(20, 1000 * MIB) == pytest.approx(50 * MIB)
    est2 = WriteRateEstimator(half_life=10)
    feed(est2, [(0, 0), (10, 1000 * MIB)])
    assert feed(est2, [(15, 1000 * MIB), (20, 1000 * MIB)]) == pytest.approx(50 * MIB)


def test_estimator_adapts_upwards():
    est = WriteRateEstimator(half_life=10)
    slow = feed(est, [(t, t * MIB) for t in range(0, 30, 5)])
    fast = feed(est, [(t, 30 * MIB + (t - 30) * 500 * MIB) for t in range(30, 60, 5)])
    assert fast > 10 * slow
    assert fast == pytest.approx(500 * MIB, rel=0.2)


@pytest.mark.parametrize("dropped_to", [0, 1 * GIB])
def test_allocation_drop_resets(dropped_to):
    est = WriteRateEstimator()
    assert feed(est, [(0, 2 * GIB), (5, 3 * GIB)]) > 0
    # Re-attach: allocation restarts from 0 (or lower); never a negative rate.
    assert est.update(10, dropped_to) == 0.0
    assert est.update(12, dropped_to + 20 * MIB) == pytest.approx(10 * MIB)


def test_clock_going_backwards_resets():
    est = WriteRateEstimator()
    feed(est, [(100, 0), (105, 500 * MIB)])
    assert est.update(50, 600 * MIB) == 0.0
    assert est.update(51, 610 * MIB) == pytest.approx(10 * MIB)


def test_close_samples_are_merged_not_lost():
    est = WriteRateEstimator(min_interval=0.5)
    est.update(0.0, 0)
    # The same event twice (vdb and vdb[4]) 1 ms apart: no absurd rate, and the bytes still count.
    assert est.update(0.001, 100 * MIB) == 0.0
    assert est.update(0.001, 100 * MIB) == 0.0
    assert est.update(1.0, 100 * MIB) == pytest.approx(100 * MIB)


def test_same_time_with_zero_min_interval():
    est = WriteRateEstimator(min_interval=0)
    est.update(5.0, 0)
    assert est.update(5.0, GIB) == 0.0


def test_absurd_rate_is_capped():
    est = WriteRateEstimator()
    assert feed(est, [(0, 0), (1, 1000 * GIB)]) == DEFAULT_MAX_RATE
    est = WriteRateEstimator(max_rate=GIB)
    assert feed(est, [(0, 0), (1, 50 * GIB)]) == GIB


def test_allocation_above_physical_is_a_real_sample():
    # After a failed write (ENOSPC) allocation can exceed the LV: it is still a write rate.
    est = WriteRateEstimator()
    assert feed(est, [(0, GIB - MIB), (2, GIB + 64 * MIB)]) == pytest.approx(65 * MIB / 2)


@pytest.mark.parametrize("kwargs", [{"half_life": 0}, {"half_life": -1}, {"max_rate": 0}, {"min_interval": -1}])
def test_estimator_rejects(kwargs):
    with pytest.raises(ValidationError) as err:
        WriteRateEstimator(**kwargs)
    assert list(kwargs)[0] in str(err.value)


def test_reset():
    est = WriteRateEstimator()
    feed(est, [(0, 0), (1, GIB)])
    est.reset()
    assert est.rate == 0.0
    assert est.update(2, 2 * GIB) == 0.0


# -- policy ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,key", [
    ({"chunk_min": 0}, "chunk_min"),
    ({"chunk_min": -GIB}, "chunk_min"),
    ({"chunk_min": 2 * GIB, "chunk_max": GIB}, "chunk_max"),
    ({"headroom_seconds": 0}, "headroom_seconds"),
    ({"headroom_seconds": -5}, "headroom_seconds"),
    ({"extent_size": 0}, "extent_size"),
])
def test_policy_rejects(kwargs, key):
    with pytest.raises(ValidationError) as err:
        policy(**kwargs)
    assert key in str(err.value)


def test_chunk_limits_are_rounded_to_extents():
    pol = policy(chunk_min=GIB + 1, chunk_max=3 * GIB - MIB)
    assert pol.chunk_min == GIB + EXTENT
    assert pol.chunk_max == 3 * GIB


@pytest.mark.parametrize("rate,chunk", [
    (0, GIB),                       # idle: chunk_min
    (None, 2 * GIB),                # not measured yet: 2 * 4 s at the assumed 256 MiB/s
    (-5 * MIB, GIB),                # never below chunk_min
    (float("nan"), GIB),
    (10 * MIB, GIB),                # 200 MiB wanted: chunk_min
    (100 * MIB, 2000 * MIB),        # 2 * 10 s * 100 MiB/s
    (128 * MIB + 1, 2564 * MIB),    # rounded up to the next extent
    (1300 * MIB, 8 * GIB),          # VDSM's fast writer: chunk_max
    (float("inf"), 8 * GIB),
])
def test_chunk_follows_rate(rate, chunk):
    pol = policy()
    assert pol.chunk(rate) == chunk
    assert pol.chunk(rate) % EXTENT == 0


@pytest.mark.parametrize("rate,headroom", [
    (0, 512 * MIB),                  # chunk_min / 2
    (10 * MIB, 512 * MIB),
    (100 * MIB, 1000 * MIB),         # 10 s of writes
    (1300 * MIB, 13000 * MIB),
])
def test_threshold_is_physical_minus_headroom(rate, headroom):
    physical = 20 * GIB
    assert policy().threshold(physical, 100 * GIB, rate) == physical - headroom


@pytest.mark.parametrize("initial_rate,headroom,chunk", [
    (GIB, 4 * GIB, 8 * GIB),               # 4 s at 1 GiB/s; twice that, chunk_max
    (256 * MIB, GIB, 2 * GIB),             # the default: 4 s at 256 MiB/s
    (64 * MIB, 512 * MIB, GIB),            # 256 MiB wanted: the chunk_min floor
    (0, 512 * MIB, GIB),                   # none assumed: chunk_min / 2, as for an idle disk
])
def test_before_a_rate_is_measured_the_headroom_covers_the_initial_rate_for_one_extend(initial_rate, headroom, chunk):
    pol = policy(initial_rate=initial_rate)
    physical = 20 * GIB
    assert pol.headroom(physical, None) == headroom
    assert pol.threshold(physical, 100 * GIB, None) == physical - headroom
    assert pol.chunk(None) == chunk
    assert pol.headroom(physical, 0) == 512 * MIB  # a measured idle disk: chunk_min / 2, whatever is assumed


def test_the_first_headroom_lasts_past_a_loaded_lvextend_at_the_assumed_rate():
    """issue 12: lvextend took up to 3.07 s on a loaded test bed; the first headroom must outlast it at
    the assumed rate, and the first extend must leave the disk out of its headroom (no cascade)."""
    from ansible_collections.sltv.core.plugins.module_utils.agent import extend_policy

    pol = policy()
    assert pol.headroom(100 * GIB, None) / float(extend_policy.DEFAULT_INITIAL_WRITE_RATE) >= 3.07 + 0.29 + 0.28
    small = 512 * MIB
    assert pol.needs_extend(small, 10 * GIB, 0, None)  # grown before its first write
    grown = pol.next_size(small, 10 * GIB, None)
    assert grown == small + 2 * GIB and not pol.needs_extend(grown, 10 * GIB, 0, None)


def test_a_negative_initial_rate_is_refused():
    with pytest.raises(ValidationError, match="initial_rate"):
        policy(initial_rate=-1)


def test_headroom_is_at_least_one_extent():
    pol = policy(chunk_min=EXTENT, chunk_max=EXTENT)
    assert pol.threshold(GIB, 2 * GIB, 0) == GIB - EXTENT


def test_headroom_larger_than_the_lv_means_extend_now():
    pol = policy()
    physical = 256 * MIB  # less than chunk_min / 2
    # Threshold 0 would disable the libvirt event: 1 fires on the first write.
    assert pol.threshold(physical, 10 * GIB, 0) == 1
    assert pol.needs_extend(physical, 10 * GIB, 0, 0) is True


def test_faster_writes_give_bigger_chunks_and_earlier_thresholds():
    pol = policy()
    physical, cap = 50 * GIB, 110 * GIB
    thresholds = [pol.threshold(physical, cap, rate) for rate in RATES]
    sizes = [pol.next_size(physical, cap, rate) for rate in RATES]
    assert thresholds == sorted(thresholds, reverse=True)
    assert sizes == sorted(sizes)
    assert thresholds[0] > thresholds[-1] and sizes[0] < sizes[-1]


@pytest.mark.parametrize("physical", [GIB, 5 * GIB + 12 * MIB, 10 * GIB - EXTENT])
@pytest.mark.parametrize("rate", RATES)
def test_next_size_never_above_cap_and_always_grows(physical, rate):
    pol = policy()
    cap = thin_cap(10 * GIB, EXTENT)
    size = pol.next_size(physical, cap, rate)
    assert physical < size <= cap
    assert size % EXTENT == 0


@pytest.mark.parametrize("physical,cap", [(10 * GIB, 10 * GIB), (11 * GIB, 10 * GIB), (10 * GIB + EXTENT, 10 * GIB)])
@pytest.mark.parametrize("rate", RATES)
def test_at_cap_nothing_to_grow(physical, cap, rate):
    pol = policy()
    assert pol.next_size(physical, cap, rate) == physical
    assert pol.threshold(physical, cap, rate) is None
    assert pol.needs_extend(physical, cap, physical + GIB, rate) is False


def test_unaligned_cap_is_rounded_down_to_whole_extents():
    pol = policy()
    cap = 10 * GIB + 1  # an LV can't be 10 GiB + 1 byte: the limit is 10 GiB
    assert pol.next_size(10 * GIB - EXTENT, cap, 0) == 10 * GIB
    assert pol.next_size(10 * GIB, cap, 0) == 10 * GIB
    assert pol.threshold(10 * GIB, cap, 0) is None


def test_last_step_stops_at_cap():
    pol = policy()
    cap = thin_cap(10 * GIB, EXTENT)
    assert pol.next_size(cap - 100 * MIB, cap, 0) == cap


def test_unaligned_physical_is_rounded_up():
    pol = policy()
    assert pol.next_size(GIB + 1, 100 * GIB, 0) == 2 * GIB + EXTENT


def test_growth_from_first_chunk_to_cap_in_steps():
    pol = policy()
    cap = thin_cap(20 * GIB, EXTENT)
    physical, steps = DEFAULT_THIN_CHUNK, 0
    while physical < cap:
        new = pol.next_size(physical, cap, 100 * MIB)
        assert physical < new <= cap
        physical, steps = new, steps + 1
    assert physical == cap and steps == 11  # 1 GiB + 10 chunks of 2000 MiB + the rest


@pytest.mark.parametrize("allocation,expected", [
    (0, False),                           # just re-attached
    (GIB, False),
    (10 * GIB - 512 * MIB - 1, False),
    (10 * GIB - 512 * MIB, True),         # exactly at the threshold
    (10 * GIB, True),
    (10 * GIB + 64 * MIB, True),          # past the end after a failed write
])
def test_needs_extend(allocation, expected):
    assert policy().needs_extend(10 * GIB, 20 * GIB, allocation, 0) is expected


def test_needs_extend_agrees_with_threshold():
    pol = policy()
    physical, cap = 50 * GIB, 60 * GIB
    for rate in RATES[:-1]:  # the last one wants more headroom than the LV has (tested above)
        threshold = pol.threshold(physical, cap, rate)
        assert pol.needs_extend(physical, cap, threshold, rate) is True
        assert pol.needs_extend(physical, cap, threshold - 1, rate) is False


def test_faster_writer_needs_extend_earlier():
    pol = policy()
    allocation = 9 * GIB  # 1 GiB free
    assert pol.needs_extend(10 * GIB, 20 * GIB, allocation, 10 * MIB) is False
    assert pol.needs_extend(10 * GIB, 20 * GIB, allocation, 200 * MIB) is True


def test_vdsm_like_settings():
    # VDSM: chunk 2560 MiB, extend when free < 2048 MiB.
    pol = policy(chunk_min=2560 * MIB, chunk_max=2560 * MIB, headroom_seconds=1)
    assert pol.next_size(10 * GIB, 100 * GIB, 0) == 10 * GIB + 2560 * MIB
    assert pol.threshold(10 * GIB, 100 * GIB, 0) == 10 * GIB - 1280 * MIB
    assert pol.threshold(10 * GIB, 100 * GIB, 2048 * MIB) == 8 * GIB

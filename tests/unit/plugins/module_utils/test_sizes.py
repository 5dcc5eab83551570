# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import GIB, MIB, TIB, human, parse_size, round_up, thin_cap


@pytest.mark.parametrize("text,expected", [
    ("50G", 50 * GIB), ("50GiB", 50 * GIB), ("50GB", 50 * GIB), ("50g", 50 * GIB),
    ("512M", 512 * MIB), ("512MiB", 512 * MIB), ("1T", TIB), ("1048576", MIB), (" 4 k ", 4096),
    ("1.5G", 3 * GIB // 2), ("0.5K", 512), ("1.0000000001K", 1025), (4096, 4096), ("7b", 7),
])
def test_parse_size_accepts_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "0G", "-1G", "-5", "", "G", "1.5.5G", "10X", "ten", "1e9", "5 G B", 0, -3, True, "1_000",
                                  # issue 14: non-ASCII digits, a trailing newline, fractional bytes
                                  "\uff15G", "\u0663G", "1G\n", "0.1b", "1.0000000001b", "1.5"])
def test_parse_size_rejects(text):
    with pytest.raises(ValidationError) as err:
        parse_size(text, "size of disk d1")
    assert "size of disk d1" in str(err.value)


def test_round_up_to_extent():
    assert round_up(1, 4 * MIB) == 4 * MIB
    assert round_up(4 * MIB, 4 * MIB) == 4 * MIB
    assert round_up(4 * MIB + 1, 4 * MIB) == 8 * MIB


def test_thin_cap_is_110_percent_extent_aligned():
    assert thin_cap(10 * GIB, 4 * MIB) == round_up(11 * GIB, 4 * MIB)
    assert thin_cap(8 * GIB, 4 * MIB) % (4 * MIB) == 0
    assert thin_cap(8 * GIB, 4 * MIB) >= 8 * GIB * 1.1


def test_human():
    assert human(50 * GIB) == "50 GiB"
    assert human(3 * GIB // 2) == "1.5 GiB"
    assert human(100) == "100 B"

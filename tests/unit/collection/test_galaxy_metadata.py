# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""galaxy.yml has every key ansible-galaxy knows but the URLs, and invents no address: a URL key is
absent or empty (the collection has no public home yet) or a real https URL."""

from __future__ import annotations

import os

import yaml
from ansible.galaxy import collection as galaxy_collection

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
URL_KEYS = ("repository", "documentation", "homepage", "issues")
# reserved for examples and tests (RFC 2606, RFC 6761): a placeholder, never a home
PLACEHOLDER_SUFFIXES = (".invalid", ".example", ".test", ".localhost", "example.com", "example.org", "example.net")


def load_galaxy():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def galaxy_schema_keys():
    path = os.path.join(os.path.dirname(galaxy_collection.__file__), "..", "data", "collections_galaxy_meta.yml")
    with open(path, encoding="utf-8") as handle:
        return {entry["key"] for entry in yaml.safe_load(handle)}


def test_every_key_ansible_galaxy_knows_is_there():
    # license_file and manifest are the alternatives of license and build_ignore
    assert galaxy_schema_keys() - {"license_file", "manifest"} - set(URL_KEYS) <= set(load_galaxy())


def test_no_key_ansible_galaxy_does_not_know():
    assert set(load_galaxy()) <= galaxy_schema_keys()


def test_url_keys_are_empty_or_real_https_urls():
    galaxy = load_galaxy()
    for key in URL_KEYS:
        value = galaxy.get(key)
        if not value:
            continue
        assert value.startswith("https://"), (key, value)
        host = value.split("/")[2].lower()
        assert not host.endswith(PLACEHOLDER_SUFFIXES), (key, value)

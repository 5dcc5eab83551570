# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""check_doc_json.py FQCN FILE: FILE (output of `ansible-doc --json FQCN`) must hold the
module's documentation with short_description, description, EXAMPLES and RETURN (options are
not required: a module may have none).

Used by scripts/build_check.sh on the collection installed from the built tarball.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import sys


def problems(entry):
    """Return the names of the parts of one ansible-doc --json entry that are missing or empty."""
    doc = entry.get("doc") or {}
    parts = (
        ("short_description", doc.get("short_description")),
        ("description", doc.get("description")),
        ("EXAMPLES", entry.get("examples")),
        ("RETURN", entry.get("return")),
    )
    return [name for name, value in parts if not value]


def main():
    """Exit non-zero with a message when the documentation is incomplete."""
    if len(sys.argv) != 3:
        sys.exit("usage: check_doc_json.py FQCN FILE")
    fqcn, path = sys.argv[1], sys.argv[2]
    with open(path) as handle:
        data = json.load(handle)
    if fqcn not in data:
        sys.exit("%s: not in the ansible-doc output (%s)" % (fqcn, ", ".join(sorted(data)) or "empty"))
    missing = problems(data[fqcn])
    if missing:
        sys.exit("%s: missing or empty in its documentation: %s" % (fqcn, ", ".join(missing)))


if __name__ == "__main__":
    main()

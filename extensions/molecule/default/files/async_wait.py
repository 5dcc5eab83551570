# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for async jobs of this host in one task (instead of an async_status poll per job and try,
each a round trip of ~4 s under TCG), then print their results as one JSON list.

Usage (ansible.builtin.script, executable python3): async_wait.py TIMEOUT JID...

A job is done when its file in ~/.ansible_async holds the module's result (async_wrapper replaces
its {"started": 1, "finished": 0} with it) or a finished record (a job over its time limit). A job
still running at TIMEOUT seconds is printed as null; the playbook's asserts decide.
"""
import json
import os
import sys
import time

ASYNC_DIR = os.path.expanduser("~/.ansible_async")


def result(jid):
    try:
        with open(os.path.join(ASYNC_DIR, jid)) as handle:
            data = json.load(handle)
    except (OSError, ValueError):  # not written yet, or being written
        return None
    if data.get("started") and not data.get("finished"):
        return None
    return data


def main():
    deadline = time.monotonic() + float(sys.argv[1])
    jids = sys.argv[2:]
    while True:
        results = [result(jid) for jid in jids]
        if all(r is not None for r in results) or time.monotonic() > deadline:
            print(json.dumps(results))
            return 0
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())

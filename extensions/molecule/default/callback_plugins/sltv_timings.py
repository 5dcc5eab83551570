# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible callback ``sltv_timings``: how long each molecule step and each verify part took.

Enabled only by this scenario's ansible.cfg (molecule.yml: callback_plugins, callbacks_enabled).
For every ansible-playbook run it appends to the file named by $SLTV_MOLECULE_TIMINGS (nothing
is written when it is unset; scripts/molecule.sh sets it to build/logs/molecule-timings.txt):

- one line per file the plays came from, when they came from more than one file (verify.yml
  imports every verify_*.yml): ``  <step>/<file>  <seconds>s``;
- then one line for the run: ``<step>  <playbook>  <seconds>s  <ok|FAILED>``.

Every task's wall time goes to the file next to it, ``<name>-tasks.txt`` (``<seconds>  <step>/<file>
<task>``), where the slowest tasks of a slow part can be found: a task's time runs until the next
task starts (exact under the linear strategy, an upper bound under free).

The step is the playbook's name without ``.yml``, or ``idempotence`` for the converge run molecule
makes with ``--skip-tags ...molecule-idempotence-notest``. A play's file comes from its position
(``Play.get_path()``, ``file:line``); its time runs until the next play starts or the run ends.
"""

import os
import time

from ansible import context
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: sltv_timings
type: aggregate
short_description: Append the time of each playbook run and of each imported playbook to a file
description:
  - Test-harness callback of the sltv.core molecule scenario; writes nothing unless
    E(SLTV_MOLECULE_TIMINGS) names a file.
requirements:
  - enabled in the scenario's ansible.cfg (callbacks_enabled)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "sltv_timings"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._output = os.environ.get("SLTV_MOLECULE_TIMINGS", "")
        self._playbook = None
        self._started = None
        self._files = []  # [file, seconds] in the order the plays ran
        self._play_file = None
        self._play_started = None
        self._task = None  # [file, name, started]
        self._tasks = []  # [seconds, file, name]

    @staticmethod
    def tasks_file(output):
        """molecule-timings.txt -> molecule-timings-tasks.txt"""
        base, ext = os.path.splitext(output)
        return base + "-tasks" + ext

    @staticmethod
    def _step(playbook):
        skip_tags = context.CLIARGS.get("skip_tags") or ()
        if any("molecule-idempotence-notest" in str(tag) for tag in skip_tags):
            return "idempotence"
        return os.path.splitext(playbook)[0]

    def _close_play(self, now):
        if self._play_file is None:
            return
        seconds = now - self._play_started
        if self._files and self._files[-1][0] == self._play_file:
            self._files[-1][1] += seconds
        else:
            self._files.append([self._play_file, seconds])
        self._play_file = None

    def _close_task(self, now):
        if self._task is not None:
            self._tasks.append([now - self._task[2], self._task[0], self._task[1]])
        self._task = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        now = time.monotonic()
        self._close_task(now)
        self._task = [self._play_file or "?", task.get_name(), now]

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(getattr(playbook, "_file_name", "") or "playbook")
        self._started = time.monotonic()
        self._files = []

    def v2_playbook_on_play_start(self, play):
        now = time.monotonic()
        self._close_task(now)
        self._close_play(now)
        try:
            where = play.get_path() or ""
        except Exception:  # pylint: disable=broad-exception-caught
            where = ""
        self._play_file = os.path.basename(where.rsplit(":", 1)[0]) if where else play.get_name()
        self._play_started = now

    def v2_playbook_on_stats(self, stats):
        if not self._output or self._started is None:
            return
        now = time.monotonic()
        self._close_task(now)
        self._close_play(now)
        step = self._step(self._playbook)
        totals = [stats.summarize(host) for host in stats.processed]
        failed = any(total.get("failures") or total.get("unreachable") for total in totals)
        lines = []
        if len(set(name for name, dummy in self._files)) > 1:
            lines.extend("  %-34s %6.0fs\n" % ("%s/%s" % (step, name), seconds) for name, seconds in self._files)
        lines.append("%-12s %-23s %6.0fs  %s\n" % (step, self._playbook, now - self._started, "FAILED" if failed else "ok"))
        tasks = ["%7.1f  %s/%s  %s\n" % (seconds, step, name, task) for seconds, name, task in self._tasks]
        self._tasks = []
        try:
            with open(self._output, "a", encoding="utf-8") as handle:
                handle.writelines(lines)
            with open(self.tasks_file(self._output), "a", encoding="utf-8") as handle:
                handle.writelines(tasks)
        except OSError as exc:
            self._display.warning("sltv_timings: cannot write %s: %s" % (self._output, exc))

#!/usr/bin/env bash
# scripts/pytest_stage.sh DIR [PYTEST-ARGS...]: run pytest on one test directory.
#
# pytest exits 5 when it collected no test.  For this project that is a failure, not a pass:
# the unit and integration stages exist to run tests, and a stage that silently runs none
# (a renamed directory, a broken conftest, every file skipped at import) must be noticed.
#
# PYTEST_TIMEOUT (pytest-timeout's default per-test limit, seconds) is set to 600 unless given;
# a timeout in pytest.ini or a test's own mark still wins.
#
# PYTEST_WORKERS (the integration target sets it from SLTV_INTEGRATION_WORKERS): N > 1 runs the
# tests in N pytest-xdist worker processes, --dist loadgroup (the tests of one xdist_group run on
# one worker); empty, 0 or 1: in this process, one after the other. The JUnit XML is the same.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

[ "$#" -ge 1 ] || die "usage: $0 DIR [PYTEST-ARGS...]"
dir="$1"
shift

cd "$REPO_ROOT"
[ -d "$dir" ] || die "${dir} does not exist: this stage has no tests to run"

export PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-600}"
workers="${PYTEST_WORKERS:-}"
xdist=()
case "$workers" in
    '' | 0 | 1) ;;
    *[!0-9]*) die "PYTEST_WORKERS must be a number of worker processes (0 or 1: none), not '${workers}'" ;;
    *) xdist=(-n "$workers" --dist loadgroup) ;;
esac
rc=0
mkdir -p "${LOG_DIR}"
python -m pytest -p no:cacheprovider --junitxml="${LOG_DIR}/junit-$(basename "$dir").xml" "${xdist[@]}" "$dir" "$@" || rc=$?
case "$rc" in
    0) ;;
    5) die "pytest collected no tests in ${dir} (exit 5); this stage must run tests" ;;
    *) echo "pytest failed in ${dir} (exit ${rc})" >&2 ;;
esac
exit "$rc"

#!/usr/bin/env bash
# scripts/stage.sh NAME CMD...: run one stage of `make test` with a header and its duration.
# The duration is also appended to build/logs/timings.txt for the summary (scripts/summary.sh).
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$#" -ge 2 ] || die "usage: $0 NAME CMD..."
name="$1"
shift

mkdir -p "$LOG_DIR"
printf '\n==== [%s] %s\n' "$name" "$(date -u '+%H:%M:%S')"
start="$(date +%s)"
rc=0
"$@" || rc=$?
elapsed=$(( $(date +%s) - start ))
if [ "$rc" -eq 0 ]; then
    printf '==== [%s] passed in %ss\n' "$name" "$elapsed"
    printf '%-12s passed  %5ss\n' "$name" "$elapsed" >>"${LOG_DIR}/timings.txt"
else
    printf '==== [%s] FAILED (exit %s) after %ss\n' "$name" "$rc" "$elapsed" >&2
    printf '%-12s FAILED  %5ss\n' "$name" "$elapsed" >>"${LOG_DIR}/timings.txt"
fi
exit "$rc"

# shellcheck shell=bash
# Helpers shared by the test-harness scripts in scripts/ (sourced, not executed).
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Repository (= collection) root, whatever the caller's working directory.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
VENV="${VENV:-${REPO_ROOT}/.venv}"
LOG_DIR="${REPO_ROOT}/build/logs"

die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

note() {
    printf '    %s\n' "$*"
}

# Print a file to stderr without the noise of this workplace's pip configuration
# (find-links/index directories that do not exist on every machine).
show_log() {
    grep -v -E "^WARNING: Location 'file:///" "$1" >&2 || true
}

# run_logged NAME CMD...: run CMD with its output in build/logs/NAME.log;
# print the log only when CMD fails, and return its exit code.
run_logged() {
    local name="$1" rc=0
    shift
    mkdir -p "$LOG_DIR"
    "$@" >"${LOG_DIR}/${name}.log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf -- '---- %s failed (exit %s); output of: %s\n' "$name" "$rc" "$*" >&2
        show_log "${LOG_DIR}/${name}.log"
        printf -- '---- end of %s output (%s)\n' "$name" "${LOG_DIR}/${name}.log" >&2
    fi
    return "$rc"
}

# Put the harness virtualenv first on PATH (it must have been created by scripts/bootstrap.sh).
use_venv() {
    [ -x "${VENV}/bin/python" ] || die "no virtualenv at ${VENV}: run 'make deps' (or 'make test') first"
    export VIRTUAL_ENV="$VENV"
    export PATH="${VENV}/bin:${PATH}"
    export ANSIBLE_NOCOLOR=1
    export PY_COLORS=0
    export PIP_DISABLE_PIP_VERSION_CHECK=1
}

# Make this checkout resolvable as the collection sltv.core: the link
# build/collections/ansible_collections/sltv/core -> the checkout (the same one tests/conftest.py
# makes for pytest), put first on ANSIBLE_COLLECTIONS_PATH.
link_collection() {
    local collections="${REPO_ROOT}/build/collections"
    mkdir -p "${collections}/ansible_collections/sltv"
    ln -sfn "$REPO_ROOT" "${collections}/ansible_collections/sltv/core"
    export ANSIBLE_COLLECTIONS_PATH="${collections}${ANSIBLE_COLLECTIONS_PATH:+:${ANSIBLE_COLLECTIONS_PATH}}"
}

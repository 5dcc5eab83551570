#!/usr/bin/env bash
# Install what the test harness needs; idempotent and quiet when there is nothing to do.
#
#   scripts/bootstrap.sh apt PKG...   apt-get install the PKGs that are not installed yet
#                                     ('apt-get update' once, only when something is missing)
#   scripts/bootstrap.sh venv         create .venv and pip install tests/requirements.txt,
#                                     unless .venv already matches requirements.txt (stamp file)
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

PYTHON="${PYTHON:-python3}"
REQUIREMENTS="${REPO_ROOT}/tests/requirements.txt"
STAMP="${VENV}/.sltv-requirements.stamp"

apt_missing() {
    local pkg status
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
    done
}

do_apt() {
    local missing
    mapfile -t missing < <(apt_missing "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || die "must be root to apt-get install: ${missing[*]}"
    note "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-update apt-get update -q
    run_logged apt-install apt-get install -y -q --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(apt_missing "$@")
    [ "${#missing[@]}" -eq 0 ] || die "still not installed after apt-get install: ${missing[*]}"
}

venv_fingerprint() {
    # requirements + interpreter: a change of either rebuilds the virtualenv
    {
        sha256sum "$REQUIREMENTS" | cut -d' ' -f1
        "$PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

do_venv() {
    local want
    [ -f "$REQUIREMENTS" ] || die "missing $REQUIREMENTS"
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.10 is needed"
    want="$(venv_fingerprint)"
    if [ -x "${VENV}/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && "${VENV}/bin/python" -c '' 2>/dev/null; then
        return 0
    fi
    note "creating ${VENV#"${REPO_ROOT}"/} from tests/requirements.txt ($("$PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    run_logged venv "$PYTHON" -m venv "$VENV"
    run_logged pip-upgrade "${VENV}/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
    run_logged pip-install "${VENV}/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
    printf '%s\n' "$want" >"$STAMP"
}

case "${1:-}" in
    apt)
        shift
        do_apt "$@"
        ;;
    venv)
        do_venv
        ;;
    *)
        die "usage: $0 apt PKG... | venv"
        ;;
esac

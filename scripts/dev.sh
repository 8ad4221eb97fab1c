#!/usr/bin/env bash
# One entry point for the README's quick start and CI:
#   bash scripts/dev.sh demo   - set up and run the end-to-end demo (no camera, no ../shared needed)
#   bash scripts/dev.sh test   - set up and run the test suite (installs Mosquitto if missing)
#   bash scripts/dev.sh setup  - only create .venv and install the project
# Works on a fresh Debian/Ubuntu machine with Python 3.11+; system packages are installed with
# apt-get only when missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${MEAL_EDGE_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install: $*" >&2; exit 1; }
        sudo="sudo"
    fi
    say "installing system packages: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

setup() {
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "Python 3.11 or newer is needed (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
        exit 1
    }
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV" 2>/dev/null || {
            apt_install python3-venv
            "$PY" -m venv "$VENV"
        }
    fi
    # Reinstall only when pyproject.toml changed: a second run starts at once.
    local stamp="$VENV/.meal-edge-installed"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing meal-edge and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        echo "$want" >"$stamp"
    fi
}

case "${1:-}" in
setup)
    setup
    say "ready: run \`. .venv/bin/activate\` to put meal-edge and meal-enroll on PATH (or call .venv/bin/meal-edge)"
    ;;
demo)
    setup
    shift
    exec "$VENV/bin/meal-edge" demo "$@"
    ;;
test)
    setup
    shift
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    say "ruff"
    "$VENV/bin/ruff" check edge enroll tests bench
    say "mypy"
    "$VENV/bin/mypy" edge enroll
    say "pytest"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
*)
    echo "usage: bash scripts/dev.sh demo|test|setup [args]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# One entry point for the README's quick start and CI:
#   bash scripts/dev.sh demo   - set up and run the end-to-end demo (no camera, no ../shared needed)
#   bash scripts/dev.sh test   - set up and run the test suite (installs Mosquitto, PostgreSQL and Chromium if
#                                missing; a throwaway PostgreSQL cluster when none answers on 127.0.0.1:5432)
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
    # Reinstall only when pyproject.toml or setup.py changed: a second run starts at once.
    local stamp="$VENV/.meal-edge-installed"
    local want
    want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing meal-edge and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        echo "$want" >"$stamp"
    fi
}

# PostgreSQL for the district tests: $MEAL_DISTRICT_TEST_PG, else the local server, else a throwaway cluster in a
# temporary folder on a free port (stopped and removed when the tests end).
postgres_for_tests() {
    local url=${MEAL_DISTRICT_TEST_PG:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
    local probe='import sys, psycopg; psycopg.connect(sys.argv[1].replace("+psycopg", ""), connect_timeout=2).close()'
    if "$VENV/bin/python" -c "$probe" "$url" 2>/dev/null; then
        export MEAL_DISTRICT_TEST_PG=$url
        return
    fi
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
    local bin port as=""
    bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PG_TMP=$(mktemp -d /tmp/meal-district-pg.XXXXXX)
    # initdb refuses to run as root
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_TMP"; as="runuser -u postgres --"; fi
    say "starting a throwaway PostgreSQL on 127.0.0.1:$port"
    $as "$bin/initdb" -D "$PG_TMP/data" -A trust -U postgres --no-sync >/dev/null
    $as "$bin/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/log" -w start \
        -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
    PG_STOP="$as $bin/pg_ctl -D $PG_TMP/data -m immediate stop"
    trap '$PG_STOP >/dev/null 2>&1; rm -rf "$PG_TMP"' EXIT
    export MEAL_DISTRICT_TEST_PG=postgresql+psycopg://postgres@127.0.0.1:$port/postgres
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
    command -v chromedriver >/dev/null || apt_install chromium chromium-driver
    # the kiosk's speech engine: tests/test_speech.py checks each sentence's screen time against it
    command -v espeak-ng >/dev/null || apt_install espeak-ng
    postgres_for_tests
    say "ruff"
    "$VENV/bin/ruff" check edge enroll district tests bench scripts
    say "mypy"
    "$VENV/bin/mypy" edge enroll district
    say "pytest"
    # not exec: the EXIT trap stops a throwaway PostgreSQL afterwards
    "$VENV/bin/python" -m pytest "$@"
    ;;
*)
    echo "usage: bash scripts/dev.sh demo|test|setup [args]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Runs Switchboard's whole test suite: unit tests of every crate and the whole-service tests on
# both backends (SQLite, and PostgreSQL + Redis), and the browser tests in headless Chromium.
# Starts PostgreSQL and Redis when they are installed but stopped, installs Chromium and
# chromedriver (Debian's packages) when they are missing, and says exactly what is missing when
# something cannot be had.
#
#   scripts/test.sh [extra cargo test args]
#
# Environment: PGHOST/PGPORT/PGUSER default to 127.0.0.1/5432/postgres; the tests use the
# database `test` (created if missing) with one schema per test, and Redis on 127.0.0.1:6379
# with one key prefix per test.
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() {
  for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 0.5; done
  echo "error: $3 did not start listening on $1:$2" >&2
  exit 1
}

if ! port_open "$PGHOST" "$PGPORT"; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "Starting PostgreSQL $version…"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for_port "$PGHOST" "$PGPORT" PostgreSQL
  else
    echo "error: PostgreSQL is not running on $PGHOST:$PGPORT and is not installed." >&2
    echo "       Install it (Debian/Ubuntu: apt-get install postgresql) with trust auth for 127.0.0.1." >&2
    exit 1
  fi
fi

if ! port_open 127.0.0.1 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Starting Redis…"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for_port 127.0.0.1 6379 Redis
  else
    echo "error: Redis is not running on 127.0.0.1:6379 and is not installed." >&2
    echo "       Install it (Debian/Ubuntu: apt-get install redis-server)." >&2
    exit 1
  fi
fi

if command -v psql >/dev/null 2>&1; then
  if ! psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql -d postgres -qc "CREATE DATABASE test"
  fi
  # Schemas left by tests that panicked in an earlier run.
  psql -d test -qAt -c "SELECT 'DROP SCHEMA \"' || nspname || '\" CASCADE;' FROM pg_namespace WHERE nspname LIKE 't\_%'" \
    | psql -d test -q >/dev/null 2>&1 || true
fi

# The browser tests (tests/api/consoles.rs) drive Debian's Chromium through chromedriver.
if [ -z "${CHROMEDRIVER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium and chromium-driver for the browser tests…"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium chromium-driver >/dev/null \
      || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
  else
    echo "error: the browser tests need Chromium and chromedriver. Install them (Debian/Ubuntu:" >&2
    echo "       apt-get install chromium chromium-driver) or set CHROMIUM and CHROMEDRIVER." >&2
    exit 1
  fi
fi

cargo test --workspace --locked "$@"

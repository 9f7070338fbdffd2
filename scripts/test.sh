#!/usr/bin/env bash
# Lint, type check, import contracts and the whole test suite (real PostgreSQL, real HTTP on loopback).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup_all
cd "$REPO"

# The browser test of the audit view drives Debian's chromium; install it once when we can.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium for the browser test (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >"$AIRFLOW_HOME/apt-chromium.log" 2>&1; then
      log "could not install chromium (see .airflow/apt-chromium.log): the browser test will skip"
    fi
  else
    log "no /usr/bin/chromium and not root: the browser test will skip (apt-get install chromium)"
  fi
}
ensure_chromium
log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "import contracts"
lint-imports --no-cache --no-logo
log "pytest"
# `slow` tests (the Celery stack) run with `make test-slow`; a later -m given here wins. The 20 slowest
# tests are listed at the end: `make test` must stay under 25 minutes on a fresh clone.
pytest -m "not slow" --durations=20 "$@"

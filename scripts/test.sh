#!/usr/bin/env bash
# Lint, type check and the whole test suite (real PostgreSQL, real HTTP on loopback).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup_all
cd "$REPO"
log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "pytest"
pytest "$@"

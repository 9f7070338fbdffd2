#!/usr/bin/env bash
# make bench [N=1000000] [SCALING=10000,100000] [ARGS="--profile ..."]: set up, then bench/run.py.
# Uses the project venv (created/synced like every other target), adds the bench's own pinned
# packages (matplotlib, pyinstrument) and runs against cs_bench_* databases it creates and drops.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
ensure_venv
"$VENV/bin/uv" pip install --quiet -p "$VENV/bin/python" -r "$REPO/bench/requirements.txt" -c "$REPO/requirements.txt"
N="${N:-1000000}"
SCALING="${SCALING:-10000,100000}"
exec "$VENV/bin/python" "$REPO/bench/run.py" --n "$N" --scaling "$SCALING" ${ARGS:-} "$@"

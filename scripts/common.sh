# shellcheck shell=bash
# Set-up shared by `make demo`, `make test` and `make ui`: venv, pinned packages, hub database,
# embedded Airflow home. Idempotent and quiet when there is nothing to do. Source it, don't run it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO
VENV="$REPO/.venv"
PYTHON_BIN="${PYTHON:-python3.11}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON_BIN" >/dev/null || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
    log "creating .venv with $PYTHON_BIN"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  # Reinstall only when a requirements file changed since the last successful install.
  local stamp="$VENV/.requirements.sha256"
  local want
  want="$(cat "$REPO/requirements.txt" "$REPO/requirements-dev.txt" "$REPO/pyproject.toml" "$REPO/dev/pyproject.toml" \
    | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pinned dependencies with uv"
    [ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install --quiet "uv==0.13.9"
    "$VENV/bin/uv" pip sync --quiet -p "$VENV/bin/python" "$REPO/requirements.txt" "$REPO/requirements-dev.txt"
    # The product package and, beside it, the developer distribution (sandbox, devtools: dev/).
    "$VENV/bin/uv" pip install --quiet -p "$VENV/bin/python" --no-deps -e "$REPO" -e "$REPO/dev"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

export_env() {
  export HUB_DATABASE_URL="${HUB_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/commerce_hub}"
  export ERP_DATABASE_URL="${ERP_DATABASE_URL:-${HUB_DATABASE_URL%/*}/commerce_erp}"
  export COMMERCE_SYNC_DATA_DIR="${COMMERCE_SYNC_DATA_DIR:-$REPO/.data}"
  export SANDBOX_FEEDS_PORT="${SANDBOX_FEEDS_PORT:-8701}"
  export SANDBOX_ALLEGRO_PORT="${SANDBOX_ALLEGRO_PORT:-8702}"
  export SANDBOX_EBAY_PORT="${SANDBOX_EBAY_PORT:-8703}"
  export SANDBOX_AMAZON_PORT="${SANDBOX_AMAZON_PORT:-8704}"
  export SANDBOX_WOOCOMMERCE_PORT="${SANDBOX_WOOCOMMERCE_PORT:-8705}"

  export AIRFLOW_HOME="$REPO/.airflow"
  export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
  export AIRFLOW__CORE__PLUGINS_FOLDER="$REPO/plugins"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__PARALLELISM=4
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
  export AIRFLOW__OPENLINEAGE__NAMESPACE=commerce_sync
  export AIRFLOW__OPENLINEAGE__TRANSPORT="{\"type\": \"file\", \"log_file_path\": \"$COMMERCE_SYNC_DATA_DIR/openlineage/events.jsonl\", \"append\": true}"
  # Datasets for TaskFlow tasks and the audit.transfer ids of each task run (include/commerce_sync/lineage.py).
  export AIRFLOW__OPENLINEAGE__EXTRACTORS=commerce_sync.lineage.CommerceSyncTaskExtractor
  export AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=commerce_sync.lineage.transfer_run_facets

  # Dev connections: the hub, the sandbox ERP and the sandbox simulators (credentials are the
  # simulator's demo values; real ones belong in a secrets backend, never in the repo).
  export AIRFLOW_CONN_HUB_DB="$HUB_DATABASE_URL"
  export AIRFLOW_CONN_ERP_DB="$ERP_DATABASE_URL"
  export AIRFLOW_CONN_SUPPLIER_ACME="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_FEEDS_PORT\"}"
  export AIRFLOW_CONN_SUPPLIER_BRAVO="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_FEEDS_PORT\"}"
  export AIRFLOW_CONN_ALLEGRO_SANDBOX="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_ALLEGRO_PORT\", \"login\": \"demo-client\", \"password\": \"demo-secret\"}"
  export AIRFLOW_CONN_EBAY_SANDBOX="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_EBAY_PORT\", \"login\": \"demo-ebay-client\", \"password\": \"demo-ebay-secret\", \"extra\": {\"refresh_token\": \"demo-ebay-refresh-token\"}}"
  export AIRFLOW_CONN_AMAZON_SANDBOX="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_AMAZON_PORT\", \"login\": \"amzn1.application-oa2-client.sandbox\", \"password\": \"demo-amazon-secret\", \"extra\": {\"refresh_token\": \"Atzr|demo-amazon-refresh-token\", \"seller_id\": \"A2SANDBOXSELLER\", \"marketplace_id\": \"A1C3SOZRARQ6R3\"}}"
  export AIRFLOW_CONN_SHOP_SANDBOX="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_WOOCOMMERCE_PORT\", \"login\": \"ck_demo_woocommerce_key\", \"password\": \"cs_demo_woocommerce_secret\"}"
  export AIRFLOW_CONN_SHOP_WEBHOOK="{\"conn_type\": \"generic\", \"host\": \"http://127.0.0.1:$SANDBOX_WOOCOMMERCE_PORT\", \"password\": \"demo-webhook-secret\"}"
}

ensure_airflow_home() {
  mkdir -p "$AIRFLOW_HOME" "$COMMERCE_SYNC_DATA_DIR/openlineage"
  # 64 random bytes: the API signs its tokens with HS512, which wants a key of at least 64 bytes.
  if [ ! -f "$AIRFLOW_HOME/jwt_secret" ]; then
    "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(64))' > "$AIRFLOW_HOME/jwt_secret"
  fi
  AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
  export AIRFLOW__API_AUTH__JWT_SECRET
  # Development signing key for exported ledger heads (production: a secrets backend).
  if [ ! -f "$AIRFLOW_HOME/ledger_key" ]; then
    "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "$AIRFLOW_HOME/ledger_key"
  fi
  COMMERCE_SYNC_LEDGER_KEY="${COMMERCE_SYNC_LEDGER_KEY:-$(cat "$AIRFLOW_HOME/ledger_key")}"
  export COMMERCE_SYNC_LEDGER_KEY
  local stamp="$AIRFLOW_HOME/.migrated-3.3.2"
  if [ ! -f "$stamp" ]; then
    log "initialising the Airflow metadata database (home ${AIRFLOW_HOME#"$REPO"/})"
    airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
    touch "$stamp"
  fi
}

ensure_hub() {
  log "hub database: $("$VENV/bin/python" -c 'import os; from commerce_sync.db import redact; print(redact(os.environ["HUB_DATABASE_URL"]))')"
  commerce-sync db setup
}

# One Airflow pool per marketplace API, sized in the channel registry (commerce-sync pools): it bounds
# how many tasks call that API at once; the client's token bucket bounds their rate. Imported again only
# when the registry's pools change (a pool resized in the UI is reset to the registry's size then).
ensure_pools() {
  local want stamp="$AIRFLOW_HOME/.pools.json"
  want="$(commerce-sync pools --format airflow)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "creating the marketplace pools in Airflow"
    printf '%s\n' "$want" > "$stamp.new"
    airflow pools import "$stamp.new" >"$AIRFLOW_HOME/pools-import.log" 2>&1 \
      || { cat "$AIRFLOW_HOME/pools-import.log" >&2; rm -f "$stamp.new"; exit 1; }
    mv "$stamp.new" "$stamp"
  fi
}

# The CeleryExecutor path (make celery, scripts/celery.sh): Airflow's metadata in PostgreSQL (the
# scheduler and the workers share it; SQLite cannot serve several processes writing at once), Redis as
# the broker, a home of its own so the LocalExecutor home (.airflow/) stays as it is.
export_celery_env() {
  export AIRFLOW_HOME="$REPO/.airflow-celery"
  export AIRFLOW_DATABASE_URL="${AIRFLOW_DATABASE_URL:-${HUB_DATABASE_URL%/*}/commerce_airflow}"
  export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
  local meta="postgresql+psycopg2://${AIRFLOW_DATABASE_URL#*://}"
  export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$meta"
  export AIRFLOW__CELERY__BROKER_URL="$CELERY_BROKER_URL"
  export AIRFLOW__CELERY__RESULT_BACKEND="db+$meta"
  export AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER=1
  export AIRFLOW__CORE__PARALLELISM="${CELERY_PARALLELISM:-8}"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$AIRFLOW__API__PORT/execution/"
  # Several workers on one machine: each reports its own name on the task instances it runs.
  export AIRFLOW__CORE__HOSTNAME_CALLABLE=commerce_sync_devtools.celery_stack.worker_hostname
}

ensure_broker() {
  "$VENV/bin/python" - "$CELERY_BROKER_URL" <<'PY' || exit 1
import sys
import redis
url = sys.argv[1]
try:
    redis.Redis.from_url(url, socket_connect_timeout=3).ping()
except Exception as exc:
    sys.exit(f"The Celery broker {url} does not answer ({exc}). Start Redis (apt-get install redis-server, "
             "or `docker compose up -d redis`), or set CELERY_BROKER_URL to a running one.")
PY
}

ensure_metadata_db() {
  "$VENV/bin/python" -c 'import os, sys; from commerce_sync.db import ensure_database, redact; u = os.environ["AIRFLOW_DATABASE_URL"]; ensure_database(u) and print("created Airflow metadata database", redact(u))'
}

# The sandbox (ERP data, feeds, marketplace simulators) in the background until this shell exits.
start_sandbox() {
  commerce-sync-dev sandbox prepare
  # Each simulator's --<name>-port defaults to its SANDBOX_<NAME>_PORT (exported above).
  commerce-sync-dev sandbox serve --data-dir "$COMMERCE_SYNC_DATA_DIR/sandbox" --feeds-port "$SANDBOX_FEEDS_PORT" &
  SANDBOX_PID=$!
  trap 'kill "$SANDBOX_PID" 2>/dev/null || true' EXIT
}

setup_all() {
  ensure_venv
  export_env
  ensure_hub
  ensure_airflow_home
  ensure_pools
}

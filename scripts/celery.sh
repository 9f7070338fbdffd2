#!/usr/bin/env bash
# Airflow on the CeleryExecutor without Docker: api-server, scheduler, dag-processor, triggerer and
# CELERY_WORKERS (default 2) Celery workers on this machine, Redis as the broker, the metadata database
# in PostgreSQL (AIRFLOW_DATABASE_URL, default commerce_airflow beside the hub), plus the sandbox
# simulators. `airflow standalone` cannot do this: it always runs the LocalExecutor. Ctrl-C stops all.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_venv
export_env
export_celery_env
ensure_broker
ensure_hub
ensure_metadata_db
ensure_airflow_home
ensure_pools
start_sandbox
log "Airflow UI: http://127.0.0.1:$AIRFLOW__API__PORT  (user admin; password in .airflow-celery/simple_auth_manager_passwords.json.generated)"
log "Flower: http://127.0.0.1:${FLOWER_PORT:-5555}"
trap - INT
commerce-sync-dev celery --workers "${CELERY_WORKERS:-2}" --flower-port "${FLOWER_PORT:-5555}"

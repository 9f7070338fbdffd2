#!/usr/bin/env bash
# Airflow standalone (api-server, scheduler, dag-processor, triggerer) on 127.0.0.1:8080 plus the
# sandbox simulators, for clicking through runs. Ctrl-C stops both.
# The triggerer serves deferrable tasks; the pricing DAG's approval task (held price moves) waits in
# Browse -> Required Actions (Airflow 3.3 parks it as awaiting_input; 3.1/3.2 defer it to the triggerer).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup_all
start_sandbox
log "Airflow UI: http://127.0.0.1:$AIRFLOW__API__PORT  (user admin; password in .airflow/simple_auth_manager_passwords.json.generated)"
# standalone spawns `airflow` subcommands: the venv's bin is on PATH (ensure_venv).
trap - INT
airflow standalone

#!/usr/bin/env bash
# One command: set everything up, run the whole sync against the sandbox, print a summary.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup_all
exec commerce-sync-dev demo "$@"

#!/usr/bin/env bash
# Runs the whole pipeline once on this machine and stops everything it started.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap stop_started EXIT INT TERM

started=$(date +%s)
ensure_moto
build_binaries
RUN_DIR="$ROOT/.local/demo"
rm -rf "$RUN_DIR"
start_stack "$(free_port)" "$(free_port)" "$(free_port)"

OUT_DIR="$ROOT/out" "$ROOT/target/debug/demo"
log "demo finished in $(( $(date +%s) - started )) s; logs in .local/demo/"

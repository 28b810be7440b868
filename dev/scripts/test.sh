#!/usr/bin/env bash
# Starts what the tests need (moto on a free port), runs every test, stops what it started.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap stop_started EXIT INT TERM

ensure_moto
RUN_DIR="$ROOT/.local/test"
moto_port=$(free_port)
log "starting moto on 127.0.0.1:$moto_port for the tests"
start_moto "$moto_port"

export RESEARCH_RELAY_TEST_MOTO="http://127.0.0.1:$moto_port"
export AWS_EC2_METADATA_DISABLED=true
cd "$ROOT"
cargo test --workspace --all-targets "$@"
# Doc examples are compiled too, so a stale example fails here.
cargo test --workspace --doc

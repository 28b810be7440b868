#!/usr/bin/env bash
# Times reconciler runs over 1,000 due jobs against a slow simulator and prints the figures
# (wall time, provider GETs, DynamoDB requests, speed-up over a serial run). Starts its own moto
# on a free port and stops it on exit; not part of `make test`. Arguments go to the benchmark:
# --jobs N, --serial-jobs N, --delay-ms N, --concurrency N (dev/front/examples/reconciler_bench.rs).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap stop_started EXIT INT TERM

ensure_moto
RUN_DIR="$ROOT/.local/bench"
moto_port=$(free_port)
log "starting moto on 127.0.0.1:$moto_port for the benchmark"
start_moto "$moto_port"

export RESEARCH_RELAY_TEST_MOTO="http://127.0.0.1:$moto_port"
export AWS_EC2_METADATA_DISABLED=true
cd "$ROOT"
# Optimised, so the product's own CPU does not compete with the emulator for the machine; without
# link-time optimisation and in its own target directory, so it builds in reasonable time and
# leaves the release artefacts of `make build` alone.
log "building the benchmark (optimised)"
CARGO_TARGET_DIR="$ROOT/target/bench" CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --quiet --release -p local-front --example reconciler_bench
"$ROOT/target/bench/release/examples/reconciler_bench" --emulator-pid "$(cat "$RUN_DIR/moto.pid")" "$@"

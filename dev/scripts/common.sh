# Shared by the local-stack scripts: installs what the stack needs and starts its processes on
# 127.0.0.1. Every process started here is recorded and stopped by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
MOTO_VERSION="5.2.5"
RUN_DIR="${RUN_DIR:-$ROOT/.local/run}"
STARTED_PIDS=()

log() { printf '==> %s\n' "$*" >&2; }

# The emulator: moto in a project-local virtual environment, pinned.
ensure_moto() {
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return
  fi
  log "installing moto[server]==$MOTO_VERSION into .venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# A port nobody listens on now, so tests and demos can run beside `make dev`.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_http() {
  local url="$1" name="$2" tries=0
  until python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 150 ]; then
      log "$name did not answer at $url; its log follows"
      tail -n 40 "$RUN_DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

start_process() {
  local name="$1"
  shift
  mkdir -p "$RUN_DIR"
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  local pid=$!
  STARTED_PIDS+=("$pid")
  echo "$pid" >"$RUN_DIR/$name.pid"
}

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# moto, serving one request at a time so conditional writes are atomic as in DynamoDB
# (see serial_moto.py).
start_moto() {
  local port="$1"
  start_process moto "$VENV/bin/python" "$ROOT/dev/scripts/serial_moto.py" "$port"
  wait_for_http "http://127.0.0.1:$port/moto-api/data.json" moto
}

# The environment the product reads, pointed at the local stack. Credentials are dummies; the
# endpoint variables are the AWS SDK's standard ones. Instance metadata is switched off so the
# SDK never looks beyond this machine.
export_stack_env() {
  local moto_port="$1" sim_port="$2" front_port="$3"
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  export TABLE_NAME="${TABLE_NAME:-research-relay-local}"
  export SECRET_ID="${SECRET_ID:-research-relay/local}"
  export PUBLIC_BASE_URL="http://127.0.0.1:$front_port"
  export PERPLEXITY_BASE_URL="http://127.0.0.1:$sim_port"
  export MAIL_FROM="${MAIL_FROM:-Research Relay <reports@research-relay.example>}"
  export ALLOWED_MODELS="${ALLOWED_MODELS:-sonar-deep-research,sonar-reasoning-pro,sonar-pro,sonar}"
  export POLL_SCHEDULE_SECS="${POLL_SCHEDULE_SECS:-2,3,5,10}"
  export RECONCILE_EVERY_SECS="${RECONCILE_EVERY_SECS:-2}"
  export JOB_LEASE_SECS="${JOB_LEASE_SECS:-30}"
  export MAIL_LEASE_SECS="${MAIL_LEASE_SECS:-60}"
  export SUBMIT_RATE_PER_MINUTE="${SUBMIT_RATE_PER_MINUTE:-60}"
  export FRONT_PORT="$front_port" SIMULATOR_PORT="$sim_port" MOTO_PORT="$moto_port"
  export RUST_LOG="${RUST_LOG:-info}"
}

build_binaries() {
  log "building the local stack (cargo build)"
  (cd "$ROOT" && cargo build --quiet -p perplexity-simulator -p local-front)
}

start_stack() {
  local moto_port="$1" sim_port="$2" front_port="$3"
  export_stack_env "$moto_port" "$sim_port" "$front_port"
  log "starting moto on 127.0.0.1:$moto_port"
  start_moto "$moto_port"
  log "starting the Perplexity simulator on 127.0.0.1:$sim_port"
  start_process simulator "$ROOT/target/debug/perplexity-simulator" --port "$sim_port"
  wait_for_http "http://127.0.0.1:$sim_port/_sim/stats" simulator
  log "starting the local front on 127.0.0.1:$front_port"
  start_process front "$ROOT/target/debug/local-front" serve
  wait_for_http "http://127.0.0.1:$front_port/_local/health" front
}

#!/usr/bin/env bash
# Keeps the local stack running until Ctrl-C.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap stop_started EXIT INT TERM

ensure_moto
build_binaries
start_stack "${MOTO_PORT:-5000}" "${SIMULATOR_PORT:-4010}" "${FRONT_PORT:-3000}"
token=$("$ROOT/target/debug/local-front" token demo-user reader@example.com)
cat <<INFO

The local stack is up (logs in .local/run/):
  front      http://127.0.0.1:$FRONT_PORT      (API Gateway + schedule)
  simulator  http://127.0.0.1:$SIMULATOR_PORT      (Perplexity; control API under /_sim)
  moto       http://127.0.0.1:$MOTO_PORT      (DynamoDB, SES v2, Secrets Manager)

  export TOKEN=$token
  curl -s -X POST http://127.0.0.1:$FRONT_PORT/jobs -H "authorization: Bearer \$TOKEN" \\
       -H 'content-type: application/json' -d '{"query": "How do heat pumps perform in cold climates?"}'
  curl -s http://127.0.0.1:$FRONT_PORT/jobs -H "authorization: Bearer \$TOKEN"
  curl -s http://127.0.0.1:$FRONT_PORT/jobs/JOB_ID -H "authorization: Bearer \$TOKEN"
  curl -s http://127.0.0.1:$MOTO_PORT/moto-api/data.json   # what SES received (ses.RawMessage)

Press Ctrl-C to stop.
INFO
wait

#!/usr/bin/env bash
# Runs the Bedrock emulator and Envoy with the gateway in the foreground; Ctrl-C or SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY:=.venv/bin/envoy}" "${EMULATOR:=target/release/bedrock-emulator}"

"$EMULATOR" --listen 127.0.0.1:4566 &
emulator_pid=$!
envoy_pid=
stop() {
  trap - INT TERM EXIT
  [ -n "$envoy_pid" ] && kill "$envoy_pid" 2>/dev/null || true
  kill "$emulator_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# The emulator accepts the public example keys of the AWS documentation; real keys would be refused.
AWS_ACCESS_KEY_ID=AKIDEXAMPLE \
AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY \
AWS_SESSION_TOKEN= \
  "$ENVOY" -c examples/envoy-emulator.yaml --log-level warn &
envoy_pid=$!
echo "gateway: http://127.0.0.1:1975  (admin http://127.0.0.1:9901, emulator http://127.0.0.1:4566)"
wait -n "$emulator_pid" "$envoy_pid"

#!/usr/bin/env bash
# Runs the Bedrock emulator and Envoy with the gateway in the foreground; Ctrl-C or SIGTERM stops both.
#   AUTH=static (default) | pod-identity | irsa | imds   chooses how the gateway gets AWS credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY:=.venv/bin/envoy}" "${EMULATOR:=target/release/bedrock-emulator}" "${AUTH:=static}"

emulator_args=(--listen 127.0.0.1:4566)
case "$AUTH" in
  static) config=examples/envoy-emulator.yaml ;;
  pod-identity|irsa|imds)
    config="examples/envoy-emulator-$AUTH.yaml"
    # Stands in for the service-account token kubelet projects into the pod.
    mkdir -p .run/auth
    cp examples/auth/sds-token.yaml .run/auth/sds-token.yaml
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .run/auth/token
    emulator_args+=(--token-file .run/auth/token)
    ;;
  *) echo "AUTH must be static, pod-identity, irsa or imds (got '$AUTH')" >&2; exit 2 ;;
esac

"$EMULATOR" "${emulator_args[@]}" &
emulator_pid=$!
envoy_pid=
stop() {
  trap - INT TERM EXIT
  [ -n "$envoy_pid" ] && kill "$envoy_pid" 2>/dev/null || true
  kill "$emulator_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Static keys: the emulator accepts the public example keys of the AWS documentation, nothing else.
AWS_ACCESS_KEY_ID=AKIDEXAMPLE \
AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY \
AWS_SESSION_TOKEN= \
  "$ENVOY" -c "$config" --log-level warn &
envoy_pid=$!
echo "gateway: http://127.0.0.1:1975  (AUTH=$AUTH; admin http://127.0.0.1:9901, emulator http://127.0.0.1:4566)"
wait -n "$emulator_pid" "$envoy_pid"

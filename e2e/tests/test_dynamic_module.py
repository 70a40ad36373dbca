"""The native dynamic module's own machinery: its ABI against the pinned Envoy binary, and a panic
in a hook, which in a native module would abort Envoy itself, answered as a 500 in the caller's
format while Envoy keeps serving. The panic is provoked with a test-only build (cargo feature
fault-injection); the shipped module has no such path."""

import subprocess

import anthropic
import openai
import pytest

from conftest import DYNAMIC_MODULE, ENVOY_BINARY, ROOT, http_get, launch_gateway, raw_post, stop_process

pytestmark = pytest.mark.dynamic_module_only

FAULT_MODULE = ROOT / "target/debug/libbedrock_gateway.so"  # make dynamic-module-fault-injection
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def symbols(path, *flags) -> set:
    listed = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listed.splitlines() if line.split()}


def test_the_module_and_the_pinned_envoy_agree_on_the_abi():
    imported = {s for s in symbols(DYNAMIC_MODULE, "--undefined-only") if s.startswith("envoy_dynamic_module_callback_")}
    exported_by_envoy = symbols(ENVOY_BINARY, "--defined-only")
    assert len(imported) >= 30, imported
    assert imported <= exported_by_envoy, f"callbacks the pinned Envoy lacks: {sorted(imported - exported_by_envoy)}"
    # The hooks Envoy looks up for an HTTP filter (their names are strings in its binary).
    strings = subprocess.run(["strings", "-n", "30", str(ENVOY_BINARY)], capture_output=True, text=True, check=True).stdout
    wanted = {line for line in strings.splitlines() if line.startswith("envoy_dynamic_module_on_http_filter_")}
    wanted.add("envoy_dynamic_module_on_program_init")
    exported = symbols(DYNAMIC_MODULE, "--defined-only")
    assert len(wanted) > 25 and wanted <= exported, f"hooks the module does not export: {sorted(wanted - exported)}"


def test_a_panic_is_answered_in_the_callers_format_and_envoy_keeps_serving(workdir, emulator_url):
    assert FAULT_MODULE.exists(), "run `make dynamic-module-fault-injection` (make test does)"
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-module-panic", KEYS, module=FAULT_MODULE)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=10)
        claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=10)
        assert "Dynamic module ABI version v0.2.0 matched" in gateway.envoy_log(), "the module reports the ABI version Envoy expects"
        assert client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "before"}]).choices[0].message.content == "You said: before"

        for _ in range(4):  # both workers
            with pytest.raises(openai.InternalServerError) as failed:
                client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "boom"}],
                                               extra_headers={"x-ai-eg-test-panic": "1"})
            error = failed.value.response.json()["error"]
            assert error["type"] == "server_error", error
            assert error["message"] == "The gateway failed while handling this request.", error
            with pytest.raises(anthropic.InternalServerError) as failed:
                claude.messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "boom"}],
                                       extra_headers={"x-ai-eg-test-panic": "1"})
            answer = failed.value.response.json()
            assert answer["type"] == "error" and answer["error"]["type"] == "api_error", answer
            assert answer["error"]["message"] == "The gateway failed while handling this request.", answer
        raw = raw_post(f"{gateway.url}/v1/chat/completions", b'{"model": "x"}', headers={"x-ai-eg-test-panic": "1"})
        assert raw.status == 500 and raw.headers.get("content-type") == "application/json", raw
        assert "fault injected by x-ai-eg-test-panic" in gateway.envoy_log(), "the hook really panicked"

        assert process.poll() is None, "Envoy is still running"
        assert http_get(f"{gateway.admin_url}/ready") == b"LIVE\n"
        answers = [client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": f"after {i}"}]).choices[0].message.content
                   for i in range(20)]
        assert answers == [f"You said: after {i}" for i in range(20)], "every later request is served, at once"
    finally:
        stop_process(process)

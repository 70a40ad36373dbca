"""A backend's Bedrock options: a guardrail, latency-optimized inference, a service tier and request
metadata, sent in the Converse body (which the emulator checks against botocore's service model) and
as InvokeModel's headers; a caller's OpenAI `service_tier`; a guardrail's intervention reaching each
API as its own content-filter signal."""

import json

import anthropic
import openai
import pytest

from conftest import launch_gateway, raw_post, stop_process

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BLOCKED = "Sorry, this request was blocked by a guardrail."


def with_options(guardrail_id: str):
    options = (
        f'"guardrail": {{"identifier": "{guardrail_id}", "version": "1", "trace": "enabled", "stream_processing_mode": "async"}},'
        ' "latency": "optimized", "service_tier": "flex", "request_metadata": {"team": "search"},'
    )

    def edit(text: str) -> str:
        for backend in ("bedrock-us-east-1", "bedrock-anthropic"):
            anchor = f'"{backend}": {{\n'
            assert anchor in text
            text = text.replace(anchor, anchor + " " * 26 + options + "\n", 1)
        return text
    return edit


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-options", {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                                      "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                                      edit=with_options("gr-emulator"))
    yield gateway
    stop_process(process)


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_converse_carries_the_backends_options(client, gateway):
    reply = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hello options"}])
    assert reply.choices[0].message.content == "You said: hello options"
    sent = gateway.last_upstream_request()["body"]
    assert sent["guardrailConfig"] == {"guardrailIdentifier": "gr-emulator", "guardrailVersion": "1", "trace": "enabled"}
    assert sent["performanceConfig"] == {"latency": "optimized"}
    assert sent["serviceTier"] == {"type": "flex"}
    assert sent["requestMetadata"] == {"team": "search"}


def test_a_stream_takes_the_guardrails_mode_and_the_callers_tier(client, gateway):
    stream = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "fast please"}],
                                            stream=True, service_tier="priority")
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "You said: fast please"
    sent = gateway.last_upstream_request()["body"]
    assert sent["guardrailConfig"]["streamProcessingMode"] == "async"
    assert sent["serviceTier"] == {"type": "priority"}

    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], service_tier="scale")
    assert "service_tier: \"scale\" is not offered by Bedrock" in str(error.value)


def test_a_guardrails_intervention_is_each_apis_content_filter(client, gateway):
    blocked = "tell me the confidential plans"
    reply = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": blocked}])
    assert reply.choices[0].finish_reason == "content_filter" and reply.choices[0].message.content == BLOCKED

    stream = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": blocked}], stream=True)
    chunks = [chunk for chunk in stream if chunk.choices]
    assert chunks[-1].choices[0].finish_reason == "content_filter"

    response = client.responses.create(model=LLAMA, input=blocked)
    assert response.status == "incomplete" and response.incomplete_details.reason == "content_filter"

    claude_api = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
    message = claude_api.messages.create(model=LLAMA, max_tokens=50, messages=[{"role": "user", "content": blocked}])
    assert message.stop_reason == "refusal" and message.content[0].text == BLOCKED


def test_invoke_model_takes_the_options_as_headers(gateway):
    claude_api = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
    message = claude_api.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "headers"}])
    assert message.content[0].text == "You said: headers"
    headers = gateway.last_upstream_request()["headers"]
    assert headers["x-amzn-bedrock-guardrailidentifier"] == "gr-emulator"
    assert headers["x-amzn-bedrock-guardrailversion"] == "1"
    assert headers["x-amzn-bedrock-trace"] == "ENABLED"
    assert headers["x-amzn-bedrock-performanceconfig-latency"] == "optimized"
    assert headers["x-amzn-bedrock-service-tier"] == "flex"
    assert json.loads(headers["x-amzn-bedrock-request-metadata"]) == {"team": "search"}


def test_an_unknown_guardrail_is_bedrocks_400_in_the_callers_format(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-options-unknown-guardrail",
                                      {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                                      edit=with_options("gr-missing"))
    try:
        response = raw_post(f"{gateway.url}/v1/chat/completions",
                            json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]}).encode())
        assert response.status == 400
        assert "The guardrail identifier or version provided in the request does not exist." in response.json()["error"]["message"]
        anthropic_reply = raw_post(f"{gateway.url}/anthropic/v1/messages",
                                   json.dumps({"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode())
        assert anthropic_reply.status == 400 and anthropic_reply.json()["error"]["type"] == "invalid_request_error"
    finally:
        stop_process(process)

"""The official OpenAI Python SDK through Envoy + the filter, against the Bedrock emulator."""

import concurrent.futures
import json
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import raw_post

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-caller-secret", max_retries=0, timeout=30)


def test_plain_completion(client, gateway):
    completion = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "Hello gateway"}])
    assert completion.object == "chat.completion"
    assert completion.model == LLAMA
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "You said: Hello gateway"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert upstream["headers"]["host"] == "bedrock-runtime.us-east-1.amazonaws.com"


def test_streamed_completion_without_usage(client, gateway):
    stream = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "stream these few words please"}], stream=True
    )
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3, "the reply must arrive as several deltas"
    assert "".join(c.choices[0].delta.content for c in content_chunks) == "You said: stream these few words please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert all(c.id == chunks[0].id and c.model == LLAMA for c in chunks)
    assert gateway.last_upstream_request()["path"].endswith("/converse-stream")


def test_streamed_completion_with_usage(client):
    stream = client.chat.completions.create(
        model=LLAMA,
        messages=[{"role": "user", "content": "count my tokens"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.prompt_tokens == 3
    assert usage_chunk.usage.completion_tokens == 5  # "You said: count my tokens"
    assert usage_chunk.usage.total_tokens == 8
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_system_prompt_and_multi_turn_reach_bedrock(client, gateway):
    completion = client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
        max_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop=["STOP"],
    )
    assert completion.choices[0].message.content == "You said: second question"
    body = gateway.last_upstream_request()["body"]
    assert body["system"] == [{"text": "You are a test."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [{"text": "first answer"}]
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.5, "topP": 0.9, "stopSequences": ["STOP"]}


TRICKY_TEXT = 'quotes " and \\ backslashes, newline\nand tab\t, unicode ünïcødé ✓ 中文 😀, json {"a": [1]} </script>'


def test_unicode_and_json_escapes_round_trip_plain(client):
    completion = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": TRICKY_TEXT}])
    assert completion.choices[0].message.content == f"You said: {TRICKY_TEXT}"


def test_unicode_and_json_escapes_round_trip_streamed(client):
    stream = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": TRICKY_TEXT}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"You said: {TRICKY_TEXT}"


def test_max_tokens_reports_length(client):
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "one two three four five six"}], max_completion_tokens=4
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "You said: one two"
    assert completion.usage.completion_tokens == 4


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "no-such-model" in raised.value.message


def test_model_override_sends_the_backend_model(client, gateway):
    completion = client.chat.completions.create(model="llama-small", messages=[{"role": "user", "content": "alias"}])
    assert completion.model == "llama-small"
    assert completion.choices[0].message.content == "You said: alias"
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert "x-ai-eg-model" not in upstream["headers"]


@pytest.mark.parametrize(
    "caller_headers",
    [
        # What Bedrock wants already: the gateway leaves these as they are.
        {"content-type": "application/json", "accept": "application/json"},
        # Anything else is rewritten, and a compressed answer is never asked for.
        {"content-type": "application/json; charset=utf-8", "accept": "text/html", "accept-encoding": "gzip, br"},
    ],
)
def test_bedrock_gets_its_content_headers_whatever_the_caller_sent(gateway, caller_headers):
    body = json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "headers"}]}).encode()
    response = raw_post(f"{gateway.url}/v1/chat/completions", body, caller_headers)
    assert response.status == 200, response.body
    upstream = gateway.last_upstream_request()["headers"]
    assert upstream["content-type"] == "application/json"
    assert upstream["accept"] == "application/json"
    assert "accept-encoding" not in upstream

    stream_body = json.dumps({"model": LLAMA, "stream": True, "messages": [{"role": "user", "content": "headers"}]}).encode()
    response = raw_post(f"{gateway.url}/v1/chat/completions", stream_body, caller_headers)
    assert response.status == 200 and b"data: [DONE]" in response.body
    upstream = gateway.last_upstream_request()["headers"]
    assert upstream["accept"] == "application/vnd.amazon.eventstream"
    assert upstream["content-type"] == "application/json"
    assert "accept-encoding" not in upstream


def test_callers_credentials_never_reach_aws(client, gateway):
    client.chat.completions.create(
        model=LLAMA,
        messages=[{"role": "user", "content": "who am i"}],
        extra_headers={"x-api-key": "caller-key", "x-amz-security-token": "caller-token", "X-Amz-Date": "19990101T000000Z",
                       "x-ai-eg-backend": "spoofed", "proxy-authorization": "Basic c2VjcmV0"},
    )
    headers = gateway.last_upstream_request()["headers"]
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "sk-caller-secret" not in json.dumps(headers)
    for removed in ("x-api-key", "x-amz-security-token", "x-ai-eg-backend", "x-ai-eg-model", "proxy-authorization"):
        assert removed not in headers, removed
    assert headers["x-amz-date"] != "19990101T000000Z"


def test_invalid_request_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=LLAMA, messages=[{"role": "wizard", "content": "hi"}])
    assert raised.value.status_code == 400
    assert "wizard" in raised.value.message


@pytest.mark.parametrize(
    "fault, error_class, status",
    [
        ("throttle", openai.RateLimitError, 429),
        ("access-denied", openai.PermissionDeniedError, 403),
        ("validation", openai.BadRequestError, 400),
        ("internal", openai.InternalServerError, 500),
    ],
)
def test_bedrock_errors_map_to_openai_errors(client, fault, error_class, status):
    with pytest.raises(error_class) as raised:
        client.chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "hi"}], extra_headers={"x-emulator-fault": fault}
        )
    assert raised.value.status_code == status
    assert raised.value.body["message"].startswith("Bedrock ")


@pytest.mark.parametrize(
    "path, body, fault",
    [
        ("/v1/chat/completions", {"model": LLAMA, "messages": [{"role": "user", "content": "length"}]}, None),
        ("/v1/chat/completions", {"model": LLAMA, "messages": [{"role": "user", "content": "length"}]}, "throttle"),
        ("/anthropic/v1/messages", {"model": CLAUDE, "max_tokens": 16, "messages": [{"role": "user", "content": "length"}]}, None),
    ],
)
def test_translated_replies_carry_their_length(gateway, path, body, fault):
    """A reply translated whole (not streamed) goes out with the translated body's Content-Length
    rather than chunked: the filter holds the headers until the body is translated."""
    headers = {"x-emulator-fault": fault} if fault else {}
    response = raw_post(f"{gateway.url}{path}", json.dumps(body).encode(), headers)
    assert response.status == (429 if fault else 200)
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.body)
    response.json()


def test_exception_mid_stream_raises_api_error(client):
    stream = client.chat.completions.create(
        model=LLAMA,
        messages=[{"role": "user", "content": "this will fail halfway through"}],
        stream=True,
        extra_headers={"x-emulator-fault": "stream-exception"},
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk)
    assert "modelStreamErrorException" in str(raised.value)
    assert any(c.choices and c.choices[0].delta.content for c in received), "deltas before the exception arrive"


def test_two_hundred_concurrent_requests_all_correct(client):
    def ask(i: int):
        messages = [{"role": "user", "content": f"request number {i}"}]
        if i % 2:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model=LLAMA, messages=messages, stream=True)
                if c.choices
            )
        else:
            text = client.chat.completions.create(model=CLAUDE, messages=messages).choices[0].message.content
        return i, text

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(ask, range(200)))
    assert len(results) == 200
    for i, text in results:
        assert text == f"You said: request number {i}"


def readme_curl_examples() -> list:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands, current = [], []
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            if current:
                commands.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        commands.append("\n".join(current))
    return commands


def test_readme_curl_examples(gateway):
    commands = readme_curl_examples()
    assert len(commands) == 4
    outputs = []
    for command in commands:
        command = command.replace("http://127.0.0.1:1975", gateway.url)
        outputs.append(subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True, timeout=30).stdout)
    plain, streamed, alias, unknown = outputs
    assert json.loads(plain)["choices"][0]["message"]["content"] == "You said: Hi."
    events = [line[len("data: "):] for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["total_tokens"] > 0
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2]) == "You said: Hi."
    assert json.loads(alias)["model"] == "llama-small"
    assert json.loads(unknown)["error"]["code"] == "model_not_found"


def test_models_list_and_retrieve(client):
    ids = [model.id for model in client.models.list()]
    assert ids == [LLAMA, "anthropic.claude-3-5-sonnet-20241022-v2:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
                   "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0", "llama-small",
                   "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3", "cohere.embed-v4:0",
                   "amazon.nova-2-multimodal-embeddings-v1:0", "openai.gpt-oss-20b-1:0",
                   "stability.sd3-5-large-v1:0", "amazon.nova-canvas-v1:0", "cohere.rerank-v3-5:0", "amazon.rerank-v1:0"]
    model = client.models.retrieve("llama-small")
    assert model.id == "llama-small" and model.object == "model" and model.owned_by == "aws-bedrock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")

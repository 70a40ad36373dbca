"""Bad input and upstream faults, through the real Envoy: every request gets a clear answer in the
caller's API format, nothing reaches Bedrock that should not, and nothing hangs.
Each case here is a row of the "Bad input and faults" table in docs/operations.md."""

import gzip
import json
import socket
import time

import openai
import pytest

from conftest import free_port, launch_gateway, raw_post, stop_process

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE_MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/anthropic/v1/messages"


def openai_body(**fields) -> bytes:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def anthropic_body(**fields) -> bytes:
    body = {"model": LLAMA, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def assert_error(response, status: int, path: str, openai_type: str, anthropic_type: str, text: str = ""):
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if path == ANTHROPIC_PATH:
        assert body["type"] == "error" and body["error"]["type"] == anthropic_type, body
        message = body["error"]["message"]
    else:
        assert body["error"]["type"] == openai_type, body
        message = body["error"]["message"]
    assert text in message, message


BAD_BODIES = [
    # (name, OpenAI body, Anthropic body, status, OpenAI type, Anthropic type, message fragment)
    ("malformed JSON", b'{"model": "x",', b'{"model": "x",', 400, "invalid_request_error", "invalid_request_error", "not a valid JSON object"),
    ("empty body", b"", b"", 400, "invalid_request_error", "invalid_request_error", "empty"),
    ("JSON array", b"[1, 2]", b"[1, 2]", 400, "invalid_request_error", "invalid_request_error", "not a valid JSON object"),
    ("JSON string", b'"hello"', b'"hello"', 400, "invalid_request_error", "invalid_request_error", "not a valid JSON object"),
    ("invalid UTF-8", b'{"model": "\xff\xfe", "messages": []}', b'{"model": "\xff\xfe", "messages": []}', 400, "invalid_request_error", "invalid_request_error", "not a valid JSON object"),
    ("missing model", b'{"messages": []}', b'{"max_tokens": 5, "messages": []}', 400, "invalid_request_error", "invalid_request_error", "no `model`"),
    ("model not a string", b'{"model": 5}', b'{"model": 5}', 400, "invalid_request_error", "invalid_request_error", "invalid type"),
    ("missing messages", openai_body(messages=None), anthropic_body(messages=None), 400, "invalid_request_error", "invalid_request_error", "messages"),
    ("wrongly typed field", openai_body(max_tokens="many"), anthropic_body(max_tokens="many"), 400, "invalid_request_error", "invalid_request_error", "max_tokens"),
    ("unknown role", openai_body(messages=[{"role": "wizard", "content": "x"}]), anthropic_body(messages=[{"role": "wizard", "content": "x"}]), 400, "invalid_request_error", "invalid_request_error", "wizard"),
    ("unknown model", openai_body(model="gpt-17"), anthropic_body(model="gpt-17"), 404, "not_found_error", "not_found_error", "`gpt-17` does not exist"),
    ("model with ..", openai_body(model=".."), anthropic_body(model=".."), 400, "invalid_request_error", "invalid_request_error", "relative path"),
    ("model with %", openai_body(model="us.meta%2F..%2Fx"), anthropic_body(model="us.meta%2F..%2Fx"), 400, "invalid_request_error", "invalid_request_error", "character"),
    ("model with a space", openai_body(model="us.meta llama"), anthropic_body(model="us.meta llama"), 400, "invalid_request_error", "invalid_request_error", "character"),
    ("model with a control character", openai_body(model="llama\n:0"), anthropic_body(model="llama\n:0"), 400, "invalid_request_error", "invalid_request_error", "character"),
    ("model with / (an ARN-like id no route serves)", openai_body(model="x/../../admin"), anthropic_body(model="x/../../admin"), 404, "not_found_error", "not_found_error", "does not exist"),
]


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
@pytest.mark.parametrize("case", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_get_clear_errors_and_never_reach_bedrock(gateway, case, path):
    name, openai_bytes, anthropic_bytes, status, openai_type, anthropic_type, text = case
    before = gateway.last_upstream_request()
    response = raw_post(gateway.url + path, anthropic_bytes if path == ANTHROPIC_PATH else openai_bytes)
    assert_error(response, status, path, openai_type, anthropic_type, text)
    assert gateway.last_upstream_request() == before, "nothing reached Bedrock"


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_body_over_the_buffer_limit_is_413_in_the_callers_format(gateway, path):
    huge = b'{"model": "' + LLAMA.encode() + b'", "messages": [{"role": "user", "content": "' + b"x" * (33 * 1024 * 1024) + b'"}]}'
    assert_error(raw_post(gateway.url + path, huge, timeout=60), 413, path, "invalid_request_error", "request_too_large", "buffer limit")


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_wrong_method_is_405(gateway, path):
    assert_error(raw_post(gateway.url + path, None, method="GET"), 405, path, "invalid_request_error", "invalid_request_error", "POST only")


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_wrong_content_type_is_415(gateway, path):
    response = raw_post(gateway.url + path, b"model=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, path, "invalid_request_error", "invalid_request_error", "application/json")


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_compressed_bodies_are_415_and_identity_never_reaches_bedrock(gateway, path):
    body = anthropic_body() if path == ANTHROPIC_PATH else openai_body()
    response = raw_post(gateway.url + path, gzip.compress(body), headers={"content-encoding": "gzip"})
    assert_error(response, 415, path, "invalid_request_error", "invalid_request_error", "uncompressed")
    response = raw_post(gateway.url + path, body, headers={"content-encoding": "identity"})
    assert response.status == 200, response.body[:300]
    assert "content-encoding" not in gateway.last_upstream_request()["headers"]


def test_oversized_headers_are_refused_by_envoy(gateway):
    response = raw_post(gateway.url + OPENAI_PATH, openai_body(), headers={"x-big": "a" * 70_000})
    assert response.status == 431


def test_other_paths_cannot_borrow_a_bedrock_route(gateway):
    before = gateway.last_upstream_request()
    response = raw_post(gateway.url + "/model/us.meta.llama3-2-1b-instruct-v1%3A0/async-invoke", openai_body(), headers={"x-ai-eg-model": LLAMA})
    assert response.status == 404
    assert gateway.last_upstream_request() == before, "a caller's x-ai-eg-model on another path never reaches Bedrock"


def test_throttling_keeps_429_and_retry_after(gateway):
    response = raw_post(gateway.url + OPENAI_PATH, openai_body(), headers={"x-emulator-fault": "throttle"})
    assert_error(response, 429, OPENAI_PATH, "rate_limit_error", "rate_limit_error", "ThrottlingException")
    assert response.headers["retry-after"] == "2"


@pytest.mark.parametrize("fault, status, openai_type, anthropic_type", [
    ("access-denied", 403, "permission_error", "permission_error"),
    ("validation", 400, "invalid_request_error", "invalid_request_error"),
    ("internal", 500, "server_error", "api_error"),
    ("unavailable", 503, "server_error", "overloaded_error"),
])
@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_bedrock_errors_in_both_formats(gateway, path, fault, status, openai_type, anthropic_type):
    body = anthropic_body() if path == ANTHROPIC_PATH else openai_body()
    assert_error(raw_post(gateway.url + path, body, headers={"x-emulator-fault": fault}), status, path, openai_type, anthropic_type, "Bedrock")


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_an_unreadable_bedrock_success_becomes_a_502(gateway, path):
    body = anthropic_body(model=CLAUDE_MODEL) if path == ANTHROPIC_PATH else openai_body()
    response = raw_post(gateway.url + path, body, headers={"x-emulator-fault": "unreadable-reply"})
    assert_error(response, 502, path, "server_error", "api_error", "unreadable")


@pytest.mark.parametrize("fault, status, openai_type, anthropic_type, text", [
    ("empty-503", 503, "server_error", "overloaded_error", "Bedrock"),
    ("empty-200", 502, "server_error", "api_error", ""),
])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_a_bodiless_bedrock_answer_is_answered_at_once(gateway, path, stream, fault, status, openai_type, anthropic_type, text):
    """A status with no body at all (as a load balancer may send) ends the response headers: the
    gateway must still answer, in the caller's format, rather than wait for a body; a 200 with
    nothing in it is no success."""
    body = json.loads(anthropic_body() if path == ANTHROPIC_PATH else openai_body())
    body["stream"] = stream
    response = raw_post(gateway.url + path, json.dumps(body).encode(), headers={"x-emulator-fault": fault}, timeout=5)
    assert_error(response, status, path, openai_type, anthropic_type, text)


def stream_events(gateway, path: str, fault: str) -> list:
    body = json.loads(anthropic_body() if path == ANTHROPIC_PATH else openai_body())
    body["stream"] = True
    body["messages"] = [{"role": "user", "content": "a stream of several words that will break"}]
    response = raw_post(gateway.url + path, json.dumps(body).encode(), headers={"x-emulator-fault": fault}, timeout=10)
    assert response.status == 200
    return [line[len("data: "):] for line in response.body.decode().splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("fault, expected", [
    ("stream-exception", "modelStreamErrorException"),
    ("stream-throttle", "throttlingException"),
    ("corrupt-frame", "CRC"),
])
@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_broken_streams_end_with_an_error_event(gateway, path, fault, expected):
    events = stream_events(gateway, path, fault)
    last = json.loads(events[-1])
    message = last["error"]["message"]
    assert expected in message
    assert len(events) >= 2, "the deltas before the fault were delivered"
    assert "[DONE]" not in events


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_upstream_reset_mid_stream_ends_the_callers_stream_promptly(gateway, path):
    body = json.loads(anthropic_body() if path == ANTHROPIC_PATH else openai_body())
    body["stream"] = True
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])), timeout=10) as s:
        payload = json.dumps(body).encode()
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nx-emulator-fault: reset\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert time.monotonic() - started < 5, "the stream ends, it does not hang"
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n"), "a cut stream is not presented as complete"


def test_unreachable_bedrock_is_a_json_502(workdir):
    dead = f"http://127.0.0.1:{free_port()}"
    process, gateway = launch_gateway(workdir, dead, "envoy-dead-upstream",
                                      {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"})
    try:
        for path in (OPENAI_PATH, ANTHROPIC_PATH):
            body = anthropic_body() if path == ANTHROPIC_PATH else openai_body()
            assert_error(raw_post(gateway.url + path, body), 502, path, "server_error", "api_error", "connection to Bedrock failed")
    finally:
        stop_process(process)


def test_oversized_stream_frames_are_refused(workdir, emulator_url):
    def small_frames(text: str) -> str:
        return text.replace('"backends": {', '"max_stream_frame_bytes": 64,\n                      "backends": {', 1)

    process, gateway = launch_gateway(workdir, emulator_url, "envoy-small-frames",
                                      {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                                      edit=small_frames)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=10)
        with pytest.raises(openai.APIError) as raised:
            list(client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], stream=True))
        assert "exceeds the 64-byte limit" in str(raised.value)
    finally:
        stop_process(process)


def raw_request(gateway, path: str, headers: list, body: bytes) -> bytes:
    """An HTTP/1.1 request with header bytes no client library would send."""
    host, port = gateway.url.rsplit("//", 1)[1].split(":")
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + head
                  + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    return response


def test_header_values_that_are_not_utf8_never_crash_the_vm(gateway):
    cases = [
        (ANTHROPIC_PATH, [(b"content-type", b"application/json"), (b"anthropic-beta", b"beta-\xff\xfe")], anthropic_body(model=CLAUDE_MODEL)),
        (OPENAI_PATH, [(b"content-type", b"application/json"), (b"x-amz-evil", b"\xc3\x28"), (b"x-ai-eg-model", b"\xff")], openai_body()),
        (OPENAI_PATH, [(b"content-type", b"application/json; charset=\xff")], openai_body()),
    ]
    for path, headers, body in cases:
        response = raw_request(gateway, path, headers, body)
        status = int(response.split(b" ", 2)[1])
        assert status in (200, 415), response[:300]
    assert "panicked" not in gateway.envoy_log()
    assert raw_post(gateway.url + OPENAI_PATH, openai_body()).status == 200, "the VM still serves"

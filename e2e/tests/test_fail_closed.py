"""Fail closed: a request the gateway cannot translate, sign, authenticate or govern is refused in the
caller's format, never passed on. One test per way a request used to get through (issue 29), each
checking what the emulator (standing in for Bedrock) received, on both hosts; then hostile shapes
(h2c trailers, smuggling, path tricks, CRLF and NUL, oversized and repeated headers, aborted streams)
and a soak of mixed traffic with callers' keys on, after which nothing unsigned reached the emulator."""

import json
import random
import socket
import threading
import time

import boto3
import botocore
import botocore.config
import botocore.exceptions
import h2.config
import h2.connection
import h2.events
import openai
import pytest

from conftest import (ROOT, gateway_with_budget_service, http_get, launch_gateway, raw_post, render_resources,
                      stop_process, wait_until)
from test_callers import JWT_SECRET, b64url, jwt

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
CHAT = json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]}).encode()


def calls(gateway) -> dict:
    """The emulator's counts: received (every Bedrock API request), accepted, unauthenticated."""
    return json.loads(http_get(f"{gateway.emulator_url}/_emulator/bedrock-calls"))


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-fail-closed", KEYS)
    yield gateway
    stop_process(process)


def h2c_requests(gateway, requests: list) -> list:
    """Several HTTP/2 requests in clear text (prior knowledge) on one connection, so one Envoy
    worker serves them all, each `(path, headers, body, trailers)` with its body followed by
    `trailers` when given; their `(status, body)` in order."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        streams = []
        for path, headers, body, trailers in requests:
            stream = connection.get_next_available_stream_id()
            streams.append(stream)
            connection.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"),
                                             (":authority", f"{host}:{port}"), *headers])
            connection.send_data(stream, body, end_stream=trailers is None)
            if trailers is not None:
                connection.send_headers(stream, trailers, end_stream=True)
        sock.sendall(connection.data_to_send())
        statuses, replies, open_streams = {}, {s: b"" for s in streams}, set(streams)
        while open_streams:
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    replies[event.stream_id] += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    open_streams.discard(event.stream_id)
            sock.sendall(connection.data_to_send())
        return [(statuses.get(s), replies[s]) for s in streams]


def h2c_request(gateway, path: str, headers: list, body: bytes, trailers: list | None) -> tuple:
    return h2c_requests(gateway, [(path, headers, body, trailers)])[0]


def test_request_trailers_are_refused_not_forwarded_unsigned(gateway):
    """Finding 1: an h2c request whose body is followed by trailers reached the emulator untranslated
    and unsigned, routed by the caller's own x-ai-eg-model."""
    before = calls(gateway)
    for path, body in (("/v1/chat/completions", CHAT),
                       (f"/model/{LLAMA}/converse", json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode())):
        status, reply = h2c_request(gateway, path, [("content-type", "application/json"), ("x-ai-eg-model", LLAMA)],
                                    body, trailers=[("x-trailer", "1")])
        assert status == 400, (path, status, reply)
        message = json.loads(reply).get("error", {}).get("message") or json.loads(reply)["message"]
        assert "trailers" in message, reply
    assert calls(gateway)["received"] == before["received"], "nothing reached Bedrock"
    # The same request without trailers is served over h2c.
    status, reply = h2c_request(gateway, "/v1/chat/completions", [("content-type", "application/json")], CHAT, None)
    assert status == 200 and json.loads(reply)["choices"][0]["message"]["content"] == "You said: hi"


def test_a_trailing_slash_keeps_the_models_route(gateway):
    """Finding 8: `/model/{id}/converse/` lost the path's model."""
    reply = raw_post(f"{gateway.url}/model/{LLAMA}/converse/",
                     json.dumps({"messages": [{"role": "user", "content": [{"text": "slash"}]}]}).encode())
    assert reply.status == 200, reply.body
    assert gateway.last_upstream_request()["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"


def test_aws_errors_reach_callers_without_account_ids_or_arns(gateway):
    """Finding 8: AccessDenied messages name the account and the gateway's role."""
    for url, body in ((f"{gateway.url}/v1/chat/completions", CHAT),
                      (f"{gateway.url}/model/{LLAMA}/converse", json.dumps({"messages": [{"role": "user", "content": [{"text": "x"}]}]}).encode())):
        reply = raw_post(url, body, {"x-emulator-fault": "access-denied-role"})
        assert reply.status == 403
        text = reply.body.decode()
        assert "is not authorized to perform: bedrock:InvokeModel" in text, text
        assert "123456789012" not in text and "arn:aws" not in text and "ai-gateway-dataplane" not in text, text
    assert "123456789012" in gateway.envoy_log(), "the operator keeps the whole text"


def test_a_mid_stream_exception_reaches_bedrock_api_callers_without_account_ids(gateway):
    """The gap issue 29 left: a ConverseStream passed through to a caller of Bedrock's own API (boto3
    reads the frames itself) had its exception frames passed byte for byte, ARNs and all."""
    reply = raw_post(f"{gateway.url}/model/{LLAMA}/converse-stream",
                     json.dumps({"messages": [{"role": "user", "content": [{"text": "one two three four"}]}]}).encode(),
                     {"x-emulator-fault": "stream-exception-arn"})
    assert reply.status == 200
    frames = []
    Decoder = __import__("botocore.eventstream", fromlist=["EventStreamBuffer"]).EventStreamBuffer
    buffer = Decoder()
    buffer.add_data(reply.body)
    for message in buffer:  # botocore checks each frame's CRCs, as a caller's SDK does
        frames.append((message.headers.get(":message-type"), message.headers.get(":exception-type"), message.payload))
    assert [f[0] for f in frames][-1] == "exception" and frames[-1][1] == "validationException", frames
    assert frames[0][0] == "event", "the frames before it go on as they came"
    text = frames[-1][2].decode()
    assert "failed mid-response" in text and "123456789012" not in text and "arn:aws" not in text, text
    assert "123456789012" in gateway.envoy_log(), "the operator keeps the whole text"


def test_path_tricks_reach_no_backend(gateway):
    """Double slashes, percent-encoded slashes and dots, case: each is refused or 404, and nothing
    reaches Bedrock unsigned or under a model the routing stage did not read."""
    before = calls(gateway)
    tricks = ["//v1/chat/completions", "/v1//chat/completions", "/v1/chat%2Fcompletions", "/V1/CHAT/COMPLETIONS",
              "/v1/chat/completions/..", "/v1/./chat/completions", "/v1/chat/completions%2F", "/model//converse",
              f"/model/{LLAMA}/converse/..", f"/model/{LLAMA}%2Fconverse", "/model/x/../y/converse",
              "/anthropic//v1/messages", "/v1/embeddings/%2e%2e"]
    for path in tricks:
        reply = raw_post(f"{gateway.url}{path}", CHAT, {"x-ai-eg-model": LLAMA})
        assert reply.status in (200, 400, 404, 405), (path, reply.status, reply.body)
        if reply.status == 200:
            # Envoy normalised it to a served path: then it was translated and signed like any other.
            assert gateway.last_upstream_request()["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 "), path
    after = calls(gateway)
    assert after["unauthenticated"] == before["unauthenticated"], "nothing unsigned reached Bedrock"


def raw_http1(gateway, request: bytes) -> bytes:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(5)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except socket.timeout:
            pass
        return reply


def test_smuggling_crlf_nul_and_oversized_headers_are_refused(gateway):
    before = calls(gateway)
    body = CHAT.decode()
    # Conflicting Content-Length and Transfer-Encoding, and two lengths: Envoy's codec refuses both.
    for framing in (f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n",
                    f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 5}\r\n"):
        reply = raw_http1(gateway, (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    f"{framing}Connection: close\r\n\r\n{body}").encode())
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    # A model with CRLF or NUL cannot become a header or a path.
    for model in ("x\r\nx-injected: 1", "llama\u0000", "../../x", "a b"):
        reply = raw_post(f"{gateway.url}/v1/chat/completions",
                         json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode())
        assert reply.status in (400, 404), (model, reply.status)
        assert reply.json()["error"]["message"], reply.body
    # Oversized and repeated headers.
    reply = raw_post(f"{gateway.url}/v1/chat/completions", CHAT, {"x-big": "a" * 70_000})
    assert reply.status == 431, reply.status
    reply = raw_http1(gateway, (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                + "".join(f"x-ai-eg-model: m{i}\r\n" for i in range(50))
                                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert gateway.last_upstream_request()["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse", \
        "the body's model routes, not any of the caller's copies of the header"
    assert calls(gateway)["unauthenticated"] == before["unauthenticated"]


def test_clients_aborting_streams_by_the_thousand_leave_the_gateway_serving(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps({"model": LLAMA, "stream": True, "messages": [{"role": "user", "content": "a long answer " * 20}]})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def abort(count: int):
        for i in range(count):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                # Cut anywhere: mid-body, after the request, or after the first bytes of the stream.
                cut = random.choice([len(request) // 2, len(request)])
                sock.sendall(request[:cut])
                if cut == len(request) and i % 2:
                    sock.recv(64)
    threads = [threading.Thread(target=abort, args=(250,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    reply = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "still here"}])
    assert reply.choices[0].message.content == "You said: still here"
    assert "panicked" not in gateway.envoy_log()


def options_edit(text: str) -> str:
    for backend in ("bedrock-us-east-1", "bedrock-anthropic"):
        anchor = f'"{backend}": {{\n'
        assert anchor in text
        text = text.replace(anchor, anchor + " " * 26 + '"guardrail": {"identifier": "gr-emulator", "version": "1"}, '
                            '"request_metadata": {"team": "search"},\n', 1)
    return text


def test_the_backends_guardrail_applies_to_bedrocks_own_api(workdir, emulator_url):
    """Finding 2: `/model/{id}/converse` and `/invoke` forwarded the caller's body as it was, without
    the guardrail docs/configuration.md promises on every request."""
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-fail-closed-options", KEYS, edit=options_edit)
    try:
        bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=gateway.url,
                               aws_access_key_id="caller", aws_secret_access_key="caller-secret",
                               config=botocore.config.Config(retries={"max_attempts": 1}))
        reply = bedrock.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert reply["output"]["message"]["content"][0]["text"] == "You said: hi"
        sent = gateway.last_upstream_request()["body"]
        assert sent["guardrailConfig"] == {"guardrailIdentifier": "gr-emulator", "guardrailVersion": "1"}, sent
        assert sent["requestMetadata"] == {"team": "search"}
        # A caller's own guardrail does not replace the operator's.
        bedrock.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "mine"}]}],
                         guardrailConfig={"guardrailIdentifier": "gr-callers-own", "guardrailVersion": "1"})
        assert gateway.last_upstream_request()["body"]["guardrailConfig"]["guardrailIdentifier"] == "gr-emulator"
        events = bedrock.converse_stream(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "s"}]}])["stream"]
        assert any("messageStop" in event for event in events)
        assert gateway.last_upstream_request()["body"]["guardrailConfig"]["guardrailIdentifier"] == "gr-emulator"
        bedrock.invoke_model(modelId="us.anthropic.claude-haiku-4-5-20251001-v1:0", body=json.dumps({
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "invoke"}]}))
        headers = gateway.last_upstream_request()["headers"]
        assert headers["x-amzn-bedrock-guardrailidentifier"] == "gr-emulator", headers
    finally:
        stop_process(process)


def test_a_claim_header_cannot_be_forged(workdir, emulator_url):
    """Finding 3: jwt_authn writes nothing for an absent claim, so a token without `team` plus the
    caller's own `x-team: admins` passed a rule on x-team."""
    jwks = json.dumps({"keys": [{"kty": "oct", "kid": "e2e", "alg": "HS256", "k": b64url(JWT_SECRET)}]})
    policy = workdir / "fail-closed-jwt.yaml"
    policy.write_text(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: { name: team-rules }\nspec:\n"
        "  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: ai-gateway } ]\n"
        "  jwt:\n    providers:\n    - name: idp\n      issuer: https://idp.e2e.example\n"
        f"      localJWKS: {{ type: Inline, inline: '{jwks}' }}\n"
        "      claimToHeaders: [ { claim: sub, header: x-ai-gateway-caller }, { claim: team, header: x-team } ]\n"
        "  authorization:\n    defaultAction: Deny\n    rules:\n"
        "    - { name: admins, action: Allow, principal: { headers: [ { name: x-team, values: [admins] } ] } }\n")
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-fail-closed-jwt", KEYS,
                                      config=[ROOT / "examples/emulator.yaml", policy])
    try:
        now = int(time.time())
        base = {"iss": "https://idp.e2e.example", "sub": "mallory", "iat": now, "exp": now + 600}
        admin = jwt({**base, "sub": "alice", "team": "admins"})
        reply = raw_post(f"{gateway.url}/v1/chat/completions", CHAT, {"authorization": f"Bearer {admin}"})
        assert reply.status == 200, reply.body
        before = calls(gateway)
        forged = raw_post(f"{gateway.url}/v1/chat/completions", CHAT,
                          {"authorization": f"Bearer {jwt(base)}", "x-team": "admins"})
        assert forged.status == 403, forged.body
        assert forged.json()["error"]["type"] == "permission_error"
        assert calls(gateway)["received"] == before["received"]
    finally:
        stop_process(process)


def test_a_key_in_a_configured_header_never_reaches_aws(workdir, emulator_url):
    """Finding 4: keys read from any header (`extractFrom`) reached Bedrock without `sanitize`."""
    text = (ROOT / "examples/callers.yaml").read_text()
    text = text.replace("    - headers: [x-api-key]\n", "    - headers: [x-gateway-key]\n").replace("    sanitize: true\n", "")
    policy = workdir / "fail-closed-key-header.yaml"
    policy.write_text(text)
    with gateway_with_budget_service(workdir, emulator_url, "envoy-fail-closed-keys", KEYS,
                                     [ROOT / "examples/emulator.yaml", policy]) as gateway:
        reply = raw_post(f"{gateway.url}/v1/chat/completions", CHAT, {"x-gateway-key": "sk-demo-alice"})
        assert reply.status == 200, reply.body
        sent = gateway.last_upstream_request()
        assert "sk-demo-alice" not in json.dumps(sent), sent["headers"]
        assert sent["headers"]["x-ai-gateway-caller"] == "alice"


@pytest.mark.host_independent
def test_rendered_secrets_are_private_and_rotate_by_rename(workdir, emulator_url):
    """Finding 5: the renderer wrote keys world-readable and in place; Envoy's watched directories
    react only to files moved in. Here the renderer itself writes into the running gateway's directory."""
    def policy(alice_key: str):
        path = workdir / f"fail-closed-rotation-{alice_key}.yaml"
        path.write_text((ROOT / "examples/callers.yaml").read_text().replace("alice: sk-demo-alice", f"alice: {alice_key}"))
        return path
    with gateway_with_budget_service(workdir, emulator_url, "envoy-fail-closed-rotation", KEYS,
                                     [ROOT / "examples/emulator.yaml", policy("sk-demo-alice")]) as gateway:
        live = workdir / "envoy-fail-closed-rotation"
        assert raw_post(f"{gateway.url}/v1/chat/completions", CHAT, {"authorization": "Bearer sk-demo-alice"}).status == 200
        render_resources([ROOT / "examples/emulator.yaml", policy("sk-alice-rotated")], live, "--credential-chain", "imds")
        assert (live / "routes.yaml").stat().st_mode & 0o777 == 0o600

        def rotated():
            return raw_post(f"{gateway.url}/v1/chat/completions", CHAT,
                            {"authorization": "Bearer sk-alice-rotated"}).status == 200
        wait_until(rotated, "the key the renderer wrote to be accepted", timeout=15)
        assert raw_post(f"{gateway.url}/v1/chat/completions", CHAT, {"authorization": "Bearer sk-demo-alice"}).status == 401


def test_a_soak_of_mixed_traffic_lets_nothing_unsigned_or_unauthenticated_through(workdir, emulator_url):
    """Valid, invalid, hostile and faulty requests mixed, with callers' keys on: every request that
    reached the emulator was signed (none unauthenticated), and none came from a caller without a key."""
    with gateway_with_budget_service(workdir, emulator_url, "envoy-fail-closed-soak", KEYS,
                                     [ROOT / "examples/emulator.yaml", ROOT / "examples/callers.yaml"]) as gateway:
        before = calls(gateway)
        good = {"authorization": "Bearer sk-demo-alice"}
        kinds = [
            ("good", "/v1/chat/completions", CHAT, good),
            ("no key", "/v1/chat/completions", CHAT, {}),
            ("wrong key", "/v1/chat/completions", CHAT, {"authorization": "Bearer sk-nope"}),
            ("forged caller", "/v1/chat/completions", CHAT, {"x-ai-gateway-caller": "alice"}),
            ("bad json", "/v1/chat/completions", b"{", good),
            ("fault", "/v1/chat/completions", CHAT, {**good, "x-emulator-fault": "throttle"}),
            ("bedrock", f"/model/{LLAMA}/converse", json.dumps({"messages": [{"role": "user", "content": [{"text": "x"}]}]}).encode(), good),
            ("bedrock no key", f"/model/{LLAMA}/converse", b"{}", {}),
            ("path trick", "/v1//chat/completions", CHAT, {**good, "x-ai-eg-model": LLAMA}),
        ]
        rng = random.Random(29)
        counts = {}
        for _ in range(300):
            name, path, body, headers = rng.choice(kinds)
            reply = raw_post(f"{gateway.url}{path}", body, headers)
            counts.setdefault(name, set()).add(reply.status)
        assert counts.get("no key", {401}) == {401} and counts.get("wrong key", {401}) == {401}, counts
        assert counts.get("forged caller", {401}) == {401}, counts
        assert counts.get("good", {200}) == {200}, counts
        after = calls(gateway)
        assert after["unauthenticated"] == before["unauthenticated"], (before, after)
        assert after["accepted"] - before["accepted"] == after["received"] - before["received"]

"""Callers prove who they are: examples/callers.yaml (Envoy Gateway's SecurityPolicy with apiKeyAuth and
authorization rules, and a token budget per caller) rendered with the emulator example, through the
real Envoy, driven by the OpenAI and Anthropic SDKs and boto3."""

import json
import os
import time

import anthropic
import boto3
import botocore
import botocore.config
import botocore.exceptions
import openai
import pytest

from conftest import (ROOT, gateway_with_budget_service, http_get, launch_gateway, raw_post,
                      render_resources, stop_process, wait_until)

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def callers_policy(directory, tokens: int, unit: str):
    text = (ROOT / "examples/callers.yaml").read_text()
    assert "limit: { requests: 2000, unit: Minute }" in text
    path = directory / f"callers-{tokens}-{unit}.yaml"
    path.write_text(text.replace("limit: { requests: 2000, unit: Minute }", f"limit: {{ requests: {tokens}, unit: {unit} }}"))
    return path


def callers_gateway(workdir, emulator_url, tokens: int, unit: str, name: str):
    """Bob's budget made small (2,000 a minute in the example), so that a test spends it in a few requests."""
    config = [ROOT / "examples/emulator.yaml", callers_policy(workdir, tokens, unit)]
    return gateway_with_budget_service(workdir, emulator_url, name, KEYS, config)


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    with callers_gateway(workdir, emulator_url, 30, "Hour", "envoy-callers") as gateway:
        yield gateway


def openai_client(gateway, key):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=30)


def anthropic_client(gateway, key):
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=key, max_retries=0, timeout=30)


def chat(gateway, key, model=LLAMA, text="hello", **extra):
    return openai_client(gateway, key).chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **extra)


def no_key_chat(gateway, headers=None):
    body = json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "x"}]}).encode()
    return raw_post(f"{gateway.url}/v1/chat/completions", body, headers)


def test_a_right_key_works_on_each_api_and_never_reaches_aws(gateway):
    assert chat(gateway, "sk-demo-alice", text="hi from alice").choices[0].message.content == "You said: hi from alice"
    sent = gateway.last_upstream_request()
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 "), "signed with the gateway's AWS credentials"
    assert "sk-demo-alice" not in json.dumps(sent)
    assert sent["headers"]["x-ai-gateway-caller"] == "alice", "the id Envoy found, not a credential"

    message = anthropic_client(gateway, "sk-demo-alice").messages.create(
        model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi claude"}])
    assert message.content[0].text == "You said: hi claude"
    sent = gateway.last_upstream_request()
    assert "x-api-key" not in sent["headers"] and "sk-demo-alice" not in json.dumps(sent)

    # Bedrock's own API with the caller's key as a bearer token, as an AWS SDK with a Bedrock API key
    # sends it (botocore itself sends bearer tokens only over HTTPS, so the header is set here).
    bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=gateway.url,
                           config=botocore.config.Config(retries={"max_attempts": 1}, signature_version=botocore.UNSIGNED))
    bedrock.meta.events.register("before-send.bedrock-runtime.Converse",
                                 lambda request, **_: request.headers.__setitem__("Authorization", "Bearer sk-demo-alice"))
    reply = bedrock.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "hi boto"}]}])
    assert reply["output"]["message"]["content"] == [{"text": "You said: hi boto"}]


def test_no_key_or_a_wrong_key_is_401_in_the_callers_format(gateway):
    missing = no_key_chat(gateway)
    assert missing.status == 401 and missing.json()["error"]["message"].startswith("Missing API key")
    with pytest.raises(openai.AuthenticationError) as wrong:
        chat(gateway, "sk-demo-mallory")
    assert wrong.value.body["message"] == "Incorrect API key provided."
    with pytest.raises(anthropic.AuthenticationError) as anthropic_wrong:
        anthropic_client(gateway, "sk-demo-mallory").messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert anthropic_wrong.value.body["error"]["type"] == "authentication_error"
    assert no_key_chat(gateway).headers["content-type"] == "application/json"


def test_a_model_outside_the_callers_rules_is_403_naming_it(gateway):
    with pytest.raises(openai.PermissionDeniedError) as denied:
        chat(gateway, "sk-demo-bob", model=CLAUDE)
    assert f'This caller may not use the model "{CLAUDE}".' == denied.value.body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as anthropic_denied:
        anthropic_client(gateway, "sk-demo-bob").messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert anthropic_denied.value.body["error"]["type"] == "permission_error"
    assert chat(gateway, "sk-demo-bob", model="llama-small", text="alias ok").choices[0].message.content == "You said: alias ok"


def test_a_forged_caller_header_has_no_effect(gateway):
    # Bob claims to be Alice: the header is removed before Envoy names the caller from the key.
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, "sk-demo-bob", model=CLAUDE, extra_headers={"x-ai-gateway-caller": "alice"})
    # Without any key, the claim is worth nothing either.
    assert no_key_chat(gateway, {"x-ai-gateway-caller": "alice"}).status == 401


def test_access_log_and_usage_name_the_caller_not_the_key(gateway):
    chat(gateway, "sk-demo-alice", text="logged call")
    def logged():
        return [line for line in gateway.envoy_log().splitlines() if "caller=alice" in line and '"caller":"alice"' in line]
    wait_until(lambda: logged(), "the access log line naming the caller", timeout=10)
    log = gateway.envoy_log()
    assert "sk-demo-alice" not in log and "sk-demo-bob" not in log


def spend(gateway, key: str) -> int:
    """Asks as `key` until its budget refuses; the tokens spent."""
    spent = 0
    for _ in range(40):
        try:
            spent += chat(gateway, key, text="one two three").usage.total_tokens
        except openai.RateLimitError as error:
            assert error.body["message"] == "Rate limit exceeded: this caller's token budget is spent."
            return spent
        time.sleep(0.05)  # charged when the stream is done
    raise AssertionError(f"the budget was never enforced (spent {spent})")


def test_bobs_budget_is_his_alone_and_cannot_be_dodged(gateway):
    spend(gateway, "sk-demo-bob")  # earlier tests spent some of it already
    assert chat(gateway, "sk-demo-alice", text="alice is fine").choices[0].message.content == "You said: alice is fine"
    # Claiming to be Alice does not move Bob's charge to her.
    with pytest.raises(openai.RateLimitError):
        chat(gateway, "sk-demo-bob", extra_headers={"x-ai-gateway-caller": "alice"})


# Envoy's rate-limit windows and its watch of the routes file: the same whichever host runs the filter.
@pytest.mark.host_independent
def test_a_spent_budget_refills_when_its_window_ends(workdir, emulator_url):
    with callers_gateway(workdir, emulator_url, 20, "Second", "envoy-callers-refill") as gateway:
        spend(gateway, "sk-demo-bob")
        time.sleep(1.1)  # the next one-second window
        assert chat(gateway, "sk-demo-bob", text="again").choices[0].message.content == "You said: again"


@pytest.mark.host_independent
def test_keys_rotate_while_envoy_runs(workdir, emulator_url):
    """The keys live in the routes file Envoy watches: rendering a changed Secret and replacing the
    file swaps them, with no restart."""
    with callers_gateway(workdir, emulator_url, 1000, "Hour", "envoy-callers-rotation") as gateway:
        assert chat(gateway, "sk-demo-alice", text="old key").choices[0].message.content == "You said: old key"
        rotated = workdir / "callers-rotated.yaml"
        rotated.write_text(callers_policy(workdir, 1000, "Hour").read_text().replace("alice: sk-demo-alice", "alice: sk-demo-alice-2026"))
        out = workdir / "rotation-render"
        render_resources([ROOT / "examples/emulator.yaml", rotated], out, "--credential-chain", "imds")
        pid_before = gateway.pid
        os.replace(out / "routes.yaml", workdir / "envoy-callers-rotation" / "routes.yaml")

        def rotated_key_works():
            try:
                return chat(gateway, "sk-demo-alice-2026", text="new key").choices[0].message.content == "You said: new key"
            except openai.AuthenticationError:
                return False
        wait_until(rotated_key_works, "the rotated key to be accepted", timeout=15)
        with pytest.raises(openai.AuthenticationError):
            chat(gateway, "sk-demo-alice")
        assert chat(gateway, "sk-demo-bob", text="bob unchanged").choices[0].message.content == "You said: bob unchanged"
        assert gateway.pid == pid_before


def b64url(data: bytes) -> str:
    return __import__("base64").urlsafe_b64encode(data).rstrip(b"=").decode()


JWT_SECRET = b"e2e-identity-provider-signing-key-32b!"


def jwt(claims: dict, secret: bytes = JWT_SECRET) -> str:
    """An HS256 token, as the demo identity provider (a JWKS with one symmetric key) signs it."""
    import hashlib
    import hmac
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "e2e"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def jwt_policy(directory):
    jwks = json.dumps({"keys": [{"kty": "oct", "kid": "e2e", "alg": "HS256", "k": b64url(JWT_SECRET)}]})
    path = directory / "callers-jwt.yaml"
    path.write_text(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: { name: callers-jwt }\nspec:\n"
        "  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: ai-gateway } ]\n"
        "  jwt:\n    providers:\n    - name: e2e-idp\n      issuer: https://idp.e2e.example\n      audiences: [ai-gateway]\n"
        f"      localJWKS: {{ type: Inline, inline: '{jwks}' }}\n"
        "      claimToHeaders: [ { claim: sub, header: x-ai-gateway-caller } ]\n"
        "  authorization:\n    defaultAction: Deny\n    rules:\n"
        "    - { name: carol-llama, action: Allow, principal: { headers: [ { name: x-ai-gateway-caller, values: [carol] },"
        " { name: x-ai-eg-model, values: [us.meta.llama3-2-1b-instruct-v1:0] } ] } }\n"
    )
    return path


def test_jwts_from_an_identity_provider(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-callers-jwt", KEYS,
                                      config=[ROOT / "examples/emulator.yaml", jwt_policy(workdir)])
    try:
        now = int(time.time())
        claims = {"iss": "https://idp.e2e.example", "aud": "ai-gateway", "sub": "carol", "iat": now, "exp": now + 600}
        token = jwt(claims)
        assert chat(gateway, token, text="hi carol").choices[0].message.content == "You said: hi carol"
        assert token not in json.dumps(gateway.last_upstream_request())
        message = anthropic_client(gateway, token).messages.create(model=LLAMA, max_tokens=20, messages=[{"role": "user", "content": "x-api-key jwt"}])
        assert message.content[0].text == "You said: x-api-key jwt"
        with pytest.raises(openai.PermissionDeniedError):
            chat(gateway, token, model=CLAUDE)
        for bad, reason in [
            (jwt({**claims, "exp": now - 600}), "Jwt is expired"),  # beyond the 60 s of clock skew allowed
            (jwt(claims, secret=b"someone-else-signing-key-of-32-bytes"), "Jwt verification fails"),
            (jwt({**claims, "aud": "another-service"}), "Audiences in Jwt are not allowed"),
        ]:
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(gateway, bad)
            assert refused.value.body["message"] == f"Authentication failed: {reason}.", refused.value.body
        missing = no_key_chat(gateway)
        assert missing.status == 401 and missing.json()["error"]["message"] == "Authentication failed: Jwt is missing."
        wait_until(lambda: "caller=carol" in gateway.envoy_log(), "the access log naming carol", timeout=10)
    finally:
        stop_process(process)


def test_requests_and_tokens_are_counted_per_caller(gateway):
    """One series per API-key client (a fixed set; JWT subjects get none), beside the per-model ones."""
    def counted(name: str, *labels: str) -> float:
        text = http_get(f"{gateway.admin_url}/stats/prometheus").decode()
        lines = [line for line in text.splitlines() if line.startswith(f"ai_gateway_{name}{{") and all(l in line for l in labels)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
    before = counted("caller_tokens", 'caller="alice"')
    reply = chat(gateway, "sk-demo-alice", text="count my tokens please")
    wait_until(lambda: counted("caller_tokens", 'caller="alice"') == before + reply.usage.total_tokens, "alice's token counter")
    assert counted("caller_tokens", 'caller="alice"', 'gen_ai_token_type="output"') >= reply.usage.completion_tokens
    assert counted("caller_requests", 'caller="alice"', 'status_class="2xx"') >= 1
    text = http_get(f"{gateway.admin_url}/stats/prometheus").decode()
    assert "sk-demo" not in text

"""Bedrock API keys instead of SigV4: `AWS_BEARER_TOKEN_BEDROCK` through the AWS default chain (as
`make run AUTH=api-key` runs it), and a BackendSecurityPolicy of type APIKey whose key Envoy injects
from a file it watches, rotated while the gateway runs. The emulator accepts only keys it issued and
answers others as Bedrock does (403 AccessDeniedException)."""

import json
import os
import time
import urllib.request

import anthropic
import openai
import pytest

from conftest import RESOURCES, launch_gateway, stop_process, wait_until

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
CALLER_KEY = "sk-caller-own-key-must-not-reach-aws"


def emulator_post(emulator_url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{emulator_url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def issue_key(emulator_url: str) -> str:
    return emulator_post(emulator_url, "/_emulator/api-keys", {})["key"]


def revoke_key(emulator_url: str, key: str):
    assert emulator_post(emulator_url, "/_emulator/api-keys/revoke", {"key": key})["revoked"] is True


def chat(gateway, text: str):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CALLER_KEY, max_retries=0, timeout=30)
    return client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": text}])


def assert_sent_with_key(gateway, key: str):
    headers = gateway.last_upstream_request()["headers"]
    assert headers["authorization"] == f"Bearer {key}"
    assert "x-amz-date" not in headers and "x-amz-security-token" not in headers, "nothing is signed with SigV4"
    assert CALLER_KEY not in json.dumps(headers)


@pytest.fixture(scope="module")
def key_from_environment(emulator_url):
    return issue_key(emulator_url)


@pytest.fixture(scope="module")
def env_gateway(workdir, emulator_url, key_from_environment):
    """examples/emulator.yaml (AWS default chain) with AWS_BEARER_TOKEN_BEDROCK set, and static keys
    too: an AWS SDK prefers the API key for Bedrock, and so does the gateway."""
    environment = {"AWS_BEARER_TOKEN_BEDROCK": key_from_environment,
                   "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-api-key-env", environment)
    yield gateway
    stop_process(process)


def test_the_default_chain_sends_the_environments_api_key(env_gateway, key_from_environment):
    reply = chat(env_gateway, "hello with a key")
    assert reply.choices[0].message.content == "You said: hello with a key"
    assert_sent_with_key(env_gateway, key_from_environment)

    claude = anthropic.Anthropic(base_url=f"{env_gateway.url}/anthropic", api_key=CALLER_KEY, max_retries=0, timeout=30)
    with claude.messages.stream(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "streamed with a key"}]) as stream:
        assert "".join(stream.text_stream) == "You said: streamed with a key"
    assert_sent_with_key(env_gateway, key_from_environment)
    assert key_from_environment not in env_gateway.envoy_log()


def test_a_revoked_key_is_refused_in_the_callers_format(workdir, emulator_url):
    key = issue_key(emulator_url)
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-api-key-revoked", {"AWS_BEARER_TOKEN_BEDROCK": key})
    try:
        assert chat(gateway, "before").choices[0].message.content == "You said: before"
        revoke_key(emulator_url, key)
        with pytest.raises(openai.PermissionDeniedError) as error:
            chat(gateway, "after")
        assert error.value.status_code == 403
        assert "Authentication failed: Please make sure your API Key is valid." in str(error.value)
        claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=CALLER_KEY, max_retries=0, timeout=30)
        with pytest.raises(anthropic.PermissionDeniedError) as anthropic_error:
            claude.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "after"}])
        assert anthropic_error.value.body["error"]["type"] == "permission_error"
        assert key not in gateway.envoy_log()
    finally:
        stop_process(process)


def api_key_resources(tmp_dir, key: str):
    """examples/emulator.yaml with its AWS credentials policy replaced by one of type APIKey."""
    text = RESOURCES.read_text()
    policy = text[text.index("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy"):]
    policy = policy[: policy.index("---\n")]
    # The same backends as the example's policy names.
    targets = "".join(line + "\n" for line in policy.splitlines() if "kind: AIServiceBackend" in line)
    assert "bedrock-us-east-1" in targets and "bedrock-openai" in targets, targets
    api_key_policy = (
        "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy\nmetadata:\n  name: bedrock-credentials\n"
        "spec:\n  targetRefs:\n" + targets +
        "  type: APIKey\n  apiKey:\n    secretRef: { name: bedrock-api-key }\n"
        f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bedrock-api-key\nstringData:\n  apiKey: {key}\n"
    )
    path = tmp_dir / "api-key-resources.yaml"
    path.write_text(text.replace(policy, api_key_policy))
    return path


# Envoy's credential_injector and its watch of the key's file: the same whichever host runs the filter.
@pytest.mark.host_independent
def test_an_injected_key_rotates_without_a_restart(workdir, emulator_url):
    first = issue_key(emulator_url)
    resources = api_key_resources(workdir, first)
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-api-key-injected", {}, config=resources)
    config_dir = workdir / "envoy-api-key-injected"
    key_file = config_dir / "bedrock-api-key-bedrock-api-key"
    try:
        assert key_file.read_text().strip() == first
        assert first not in (config_dir / "envoy.yaml").read_text(), "the key lives in its own file"
        assert chat(gateway, "first key").choices[0].message.content == "You said: first key"
        assert_sent_with_key(gateway, first)

        # Rotate as Kubernetes does with a mounted Secret: the new file replaces the old one at once.
        second = issue_key(emulator_url)
        staged = config_dir / ".bedrock-api-key.new"
        staged.write_text(second + "\n")
        os.replace(staged, key_file)
        revoke_key(emulator_url, first)

        def uses_second_key():
            try:
                chat(gateway, "second key")
            except openai.PermissionDeniedError:
                return False
            return True
        wait_until(uses_second_key, "the gateway to send the rotated key", timeout=20)
        assert_sent_with_key(gateway, second)
        log = gateway.envoy_log()
        assert first not in log and second not in log
    finally:
        stop_process(process)

"""Failover across regions and models (examples/failover.yaml): two emulators, us-east-1 (primary)
and us-west-2 (fallback), each accepting only signatures for its own region. A throttled, failing or
resetting primary is retried on the fallback, translated and signed for it, plain and streamed; when
both fail the caller gets one error naming the last cause; metrics count each backend's tries."""

import json

import anthropic
import openai
import pytest

from conftest import ROOT, RESOURCES, http_get, launch_emulator, launch_gateway, raw_post, stop_process, wait_until
from test_metrics import prometheus, requests, settled, tokens

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
# The backends' cluster names, as metric labels write them ('@' is not a label character).
EAST = f"bedrock-us-east-1@{LLAMA}"
WEST = f"bedrock-us-west-2@{LLAMA}"


class Regions:
    def __init__(self, gateway, east_url, west_url):
        self.gateway, self.east, self.west = gateway, east_url, west_url

    def fault(self, url, fault):
        """Makes every Bedrock call to that emulator fail this way until cleared (`None`)."""
        response = raw_post(f"{url}/_emulator/faults", json.dumps({"fault": fault}).encode())
        assert response.status == 200, response.body
        return response.json()

    def last(self, url) -> dict:
        return json.loads(http_get(f"{url}/_emulator/last-request"))


@pytest.fixture(scope="module")
def regions(workdir):
    east_process, east_url = launch_emulator(workdir, "emulator-east", "--region", "us-east-1")
    west_process, west_url = launch_emulator(workdir, "emulator-west", "--region", "us-west-2")
    west_port = west_url.rsplit(":", 1)[1]

    def to_west(text: str) -> str:
        assert "port_value: 4567" in text
        return text.replace("port_value: 4567", f"port_value: {west_port}")

    process, gateway = launch_gateway(workdir, east_url, "envoy-failover", KEYS,
                                      config=[RESOURCES, ROOT / "examples/failover.yaml"], edit=to_west)
    try:
        yield Regions(gateway, east_url, west_url)
    finally:
        stop_process(process)
        stop_process(east_process)
        stop_process(west_process)


@pytest.fixture
def clean(regions):
    yield regions
    regions.fault(regions.east, None)
    regions.fault(regions.west, None)


def openai_client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def ask(gateway, text: str, stream: bool = False, model: str = "llama-ha") -> str:
    client = openai_client(gateway)
    messages = [{"role": "user", "content": text}]
    if not stream:
        return client.chat.completions.create(model=model, messages=messages).choices[0].message.content
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def signed_region(request: dict) -> str:
    return request["headers"]["authorization"].split("Credential=", 1)[1].split("/")[2]


def test_the_primary_answers_while_healthy(clean):
    assert ask(clean.gateway, "first try") == "You said: first try"
    east = clean.last(clean.east)
    assert signed_region(east) == "us-east-1" and east["path"] == f"/model/{LLAMA.replace(':', '%3A')}/converse"
    assert "x-envoy-attempt-count" not in east["headers"], "Envoy's try count stays inside the gateway"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("fault", ["throttle", "internal", "reset"])
def test_a_failing_primary_is_answered_by_the_fallback_region(clean, fault, stream):
    before = clean.fault(clean.east, fault)["failed_calls"]
    text = f"fail over on {fault} {'streamed' if stream else 'plain'}"
    assert ask(clean.gateway, text, stream) == f"You said: {text}"
    west = clean.last(clean.west)
    assert signed_region(west) == "us-west-2", "re-signed for the fallback's region, which verified it"
    assert west["headers"]["host"] == "bedrock-runtime.us-west-2.amazonaws.com"
    assert west["body"]["messages"][0]["content"][0]["text"] == text
    assert clean.fault(clean.east, fault)["failed_calls"] == before + 1, "the primary was tried first, once"


def test_when_every_region_fails_the_caller_gets_the_last_cause(clean):
    clean.fault(clean.east, "throttle")
    clean.fault(clean.west, "internal")
    with pytest.raises(openai.InternalServerError) as raised:
        ask(clean.gateway, "nobody home")
    assert raised.value.body["message"].startswith("Bedrock InternalServerException"), raised.value.body
    clean.fault(clean.west, "throttle")
    with pytest.raises(openai.RateLimitError):
        ask(clean.gateway, "nobody home", stream=True)


def test_the_primary_serves_again_once_it_recovers(clean):
    clean.fault(clean.east, "throttle")
    assert ask(clean.gateway, "during the outage") == "You said: during the outage"
    clean.fault(clean.east, None)
    west_before = clean.last(clean.west)
    assert ask(clean.gateway, "after the outage") == "You said: after the outage"
    assert clean.last(clean.east)["body"]["messages"][0]["content"][0]["text"] == "after the outage"
    assert clean.last(clean.west) == west_before, "the fallback was not asked"


def test_claude_falls_back_to_another_model_through_converse(clean):
    claude = anthropic.Anthropic(base_url=f"{clean.gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
    message = claude.messages.create(model="claude-ha", max_tokens=100, messages=[{"role": "user", "content": "hello claude"}])
    assert clean.last(clean.east)["path"].endswith("/invoke"), "Claude's own API on the primary"
    assert message.content[0].text == "You said: hello claude"
    clean.fault(clean.east, "throttle")
    message = claude.messages.create(model="claude-ha", max_tokens=100, messages=[{"role": "user", "content": "hello fallback"}])
    assert message.type == "message" and message.model == "claude-ha"
    assert message.content[0].text == "You said: hello fallback"
    west = clean.last(clean.west)
    assert west["path"] == f"/model/{LLAMA.replace(':', '%3A')}/converse", "the fallback model, through Converse"
    assert west["body"]["inferenceConfig"]["maxTokens"] == 100


def test_metrics_count_each_backends_tries(clean):
    before = settled(clean.gateway)
    clean.fault(clean.east, "throttle")
    ask(clean.gateway, "counted once per try")

    def counted():
        values = prometheus(clean.gateway)
        return requests(values, "llama-ha", WEST) > requests(before, "llama-ha", WEST)

    wait_until(counted, "the fallback's success to be counted", timeout=15)
    after = prometheus(clean.gateway)
    throttled = requests(after, "llama-ha", EAST, "429") - requests(before, "llama-ha", EAST, "429")
    assert throttled == 1, "the primary's throttled try is counted against it"
    assert tokens(after, "llama-ha", WEST) > tokens(before, "llama-ha", WEST)


def test_requests_sharing_a_callers_request_id_keep_their_own_bodies_on_retry(clean):
    """Finding 7 of issue 29: the failover's first-try store was keyed by the caller's
    `x-request-id`, so two requests with one id on one worker swapped bodies on retry. Here both
    go on one HTTP/2 connection (one worker) with the same id while the primary throttles."""
    from test_fail_closed import h2c_requests
    clean.fault(clean.east, "throttle")
    headers = [("content-type", "application/json"), ("x-request-id", "chosen-by-the-caller")]
    requests = [("/v1/chat/completions", headers, json.dumps({"model": "llama-ha", "messages": [
        {"role": "user", "content": word}]}).encode(), None) for word in ("alpha", "beta", "gamma", "delta")]
    replies = h2c_requests(clean.gateway, requests)
    for word, (status, body) in zip(("alpha", "beta", "gamma", "delta"), replies):
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["content"] == f"You said: {word}"

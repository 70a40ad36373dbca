"""Bedrock's own API through the gateway, driven by boto3 `bedrock-runtime` with `endpoint_url` set
to the gateway: all five operations plain and streamed, re-signed with the gateway's credentials
(the caller's never reach AWS), replies decoded by botocore as AWS's own, errors as botocore's
exceptions, and the tokens counted."""

import json

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import wait_until
from test_metrics import prometheus, requests, settled, tokens

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.fixture(scope="module")
def bedrock(gateway):
    # The caller's own (made-up) credentials: the gateway drops them and signs with its own.
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=gateway.url,
        aws_access_key_id="AKIDCALLER", aws_secret_access_key="caller-secret", aws_session_token="caller-token",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    return client


def with_fault(client, fault: str):
    """Asks the emulator for a fault on this client's next calls (an unsigned header)."""
    def add(request, **_):
        request.headers["x-emulator-fault"] = fault
    client.meta.events.register_first("before-sign.bedrock-runtime.*", add)
    return lambda: client.meta.events.unregister("before-sign.bedrock-runtime.*", add)


def test_converse_is_re_signed_with_the_gateways_credentials(bedrock, gateway):
    before = prometheus(gateway)
    response = bedrock.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "hello boto"}]}],
                                inferenceConfig={"maxTokens": 50})
    assert response["output"]["message"]["content"] == [{"text": "You said: hello boto"}]
    assert response["stopReason"] == "end_turn"
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert "Credential=AKIDEXAMPLE/" in upstream["headers"]["authorization"]
    assert "x-amz-security-token" not in upstream["headers"], "the caller's session token never reaches AWS"
    assert "AKIDCALLER" not in json.dumps(upstream)
    total = response["usage"]["totalTokens"]

    def counted():
        return tokens(prometheus(gateway), LLAMA, "bedrock-us-east-1") \
            - tokens(before, LLAMA, "bedrock-us-east-1") == total

    wait_until(counted, "the passed-through reply's tokens to be counted", timeout=15)


def test_converse_stream_events_arrive_as_bedrock_sent_them(bedrock):
    response = bedrock.converse_stream(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "stream it to boto"}]}])
    events = list(response["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "You said: stream it to boto"


def test_invoke_model_plain_and_streamed(bedrock, gateway):
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hello claude"}]})
    reply = json.loads(bedrock.invoke_model(modelId=CLAUDE, body=body)["body"].read())
    assert reply["content"][0]["text"] == "You said: hello claude" and reply["type"] == "message"
    assert gateway.last_upstream_request()["body"]["anthropic_version"] == "bedrock-2023-05-31"
    stream = bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=body)["body"]
    events = [json.loads(event["chunk"]["bytes"]) for event in stream]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    assert "amazon-bedrock-invocationMetrics" in events[-1], "Bedrock's own events, untouched"


def test_count_tokens(bedrock):
    response = bedrock.count_tokens(modelId=CLAUDE, input={"converse": {"messages": [{"role": "user", "content": [{"text": "one two three"}]}]}})
    assert response["inputTokens"] > 0


def test_an_alias_is_sent_as_its_override(bedrock, gateway):
    response = bedrock.converse(modelId="llama-small", messages=[{"role": "user", "content": [{"text": "alias"}]}])
    assert response["output"]["message"]["content"] == [{"text": "You said: alias"}]
    assert gateway.last_upstream_request()["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"


def test_errors_arrive_as_botocores_exceptions(bedrock):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        bedrock.converse(modelId="no.such-model-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "no.such-model-v1:0" in raised.value.response["Error"]["Message"]
    undo = with_fault(bedrock, "throttle")
    try:
        with pytest.raises(bedrock.exceptions.ThrottlingException):
            bedrock.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "x"}]}])
        with pytest.raises(bedrock.exceptions.ThrottlingException):
            bedrock.converse_stream(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "x"}]}])
    finally:
        undo()
    with pytest.raises(bedrock.exceptions.ValidationException) as raised:
        bedrock.converse(modelId=LLAMA, messages=[])
    assert "at least one message" in raised.value.response["Error"]["Message"]


def test_a_stream_throttled_mid_way_raises_in_boto3_and_counts_as_failed(bedrock, gateway):
    """The exception frame goes on to botocore as Bedrock sent it, and the request, though its
    response began as a 200, counts as failed with the exception's status."""
    before = requests(settled(gateway), LLAMA, "bedrock-us-east-1", "429")
    undo = with_fault(bedrock, "stream-throttle")
    try:
        response = bedrock.converse_stream(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "a b c d"}]}])
        with pytest.raises(botocore.exceptions.EventStreamError) as raised:
            list(response["stream"])
        assert raised.value.response["Error"]["Code"] == "throttlingException"
    finally:
        undo()
    wait_until(lambda: requests(prometheus(gateway), LLAMA, "bedrock-us-east-1", "429") == before + 1,
               "the throttled stream to be counted as failed", timeout=15)

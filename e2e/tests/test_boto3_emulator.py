"""AWS's own client, boto3 `bedrock-runtime`, against the emulator: proves the emulator speaks
Bedrock's wire formats (SigV4 checks, JSON shapes, event-stream framing with CRCs)."""

import json

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

pytestmark = pytest.mark.host_independent

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def bedrock(emulator_url, secret=DEMO_SECRET_KEY, token=None):
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=emulator_url,
        aws_access_key_id=DEMO_ACCESS_KEY,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def test_converse(emulator_url):
    response = bedrock(emulator_url).converse(
        modelId=LLAMA,
        messages=[{"role": "user", "content": [{"text": "hello boto"}]}],
        system=[{"text": "be kind"}],
        inferenceConfig={"maxTokens": 100},
    )
    assert response["output"]["message"]["content"] == [{"text": "You said: hello boto"}]
    assert response["stopReason"] == "end_turn"
    usage = response["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0


def test_converse_stream_events_in_bedrock_order(emulator_url):
    response = bedrock(emulator_url).converse_stream(
        modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "stream it to boto"}]}]
    )
    events = list(response["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert kinds.count("contentBlockDelta") >= 3
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "You said: stream it to boto"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 6


def test_converse_tool_use(emulator_url):
    response = bedrock(emulator_url).converse(
        modelId=CLAUDE,
        messages=[{"role": "user", "content": [{"text": "weather in Paris?"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]}}}}]},
    )
    assert response["stopReason"] == "tool_use"
    tool_use = response["output"]["message"]["content"][1]["toolUse"]
    assert tool_use["name"] == "get_weather"
    assert tool_use["input"] == {"city": "example", "days": 1}


def test_invoke_anthropic(emulator_url):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "hi claude"}]}
    response = bedrock(emulator_url).invoke_model(modelId=CLAUDE, body=json.dumps(body))
    message = json.loads(response["body"].read())
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "You said: hi claude"}]
    assert message["usage"]["input_tokens"] > 0


def test_invoke_with_response_stream_anthropic(emulator_url):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "stream claude"}]}
    response = bedrock(emulator_url).invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
    events = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "You said: stream claude"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 4


def test_wrong_secret_is_an_invalid_signature(emulator_url):
    client = bedrock(emulator_url, secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"


def test_unknown_model_is_a_validation_error(emulator_url):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        bedrock(emulator_url).converse(modelId="no.such-model-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_throttling_fault(emulator_url):
    client = bedrock(emulator_url)
    client.meta.events.register("before-send.*.*", lambda request, **_: request.headers.__setitem__("x-emulator-fault", "throttle"))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "hi"}]}])


def test_corrupt_frame_fails_botos_crc_check(emulator_url):
    client = bedrock(emulator_url)
    client.meta.events.register("before-send.*.*", lambda request, **_: request.headers.__setitem__("x-emulator-fault", "corrupt-frame"))
    response = client.converse_stream(modelId=LLAMA, messages=[{"role": "user", "content": [{"text": "a b c d e f"}]}])
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        list(response["stream"])


def test_claudes_thinking_rules_in_a_tool_loop(emulator_url):
    """As Claude on Bedrock: with thinking on, the assistant turn of an unfinished tool loop must
    begin with its thinking, and returned thinking must match its signature."""
    client = bedrock(emulator_url)
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
    first = client.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "weather?"}]}],
                            toolConfig=tools, additionalModelRequestFields=thinking, inferenceConfig={"maxTokens": 2000})
    assistant = first["output"]["message"]
    reasoning, *rest = assistant["content"]
    tool_use = next(block["toolUse"] for block in rest if "toolUse" in block)
    result = {"role": "user", "content": [{"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"text": "sunny"}]}}]}

    def continue_with(content):
        return client.converse(modelId=CLAUDE, toolConfig=tools, additionalModelRequestFields=thinking,
                               inferenceConfig={"maxTokens": 2000},
                               messages=[{"role": "user", "content": [{"text": "weather?"}]},
                                         {"role": "assistant", "content": content}, result])

    assert continue_with(assistant["content"])["stopReason"] == "end_turn"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        continue_with(rest)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "a final `assistant` message must start with a thinking block" in raised.value.response["Error"]["Message"]
    altered = {"reasoningContent": {"reasoningText": dict(reasoning["reasoningContent"]["reasoningText"], text="not what it thought")}}
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        continue_with([altered, *rest])
    assert "Invalid `signature` in `thinking` block" in raised.value.response["Error"]["Message"]


def test_beta_flags_as_bedrock_takes_them(emulator_url):
    """The emulator answers beta flags and flag-only fields as Bedrock does, so the gateway's
    dropping of them is tested against something that would fail without it."""
    client = bedrock(emulator_url)

    def invoke(**body):
        request = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **body}
        return client.invoke_model(modelId=CLAUDE, body=json.dumps(request))

    assert invoke(anthropic_beta=["interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19"])["ResponseMetadata"]["HTTPStatusCode"] == 200
    refused = [
        ({"anthropic_beta": ["claude-code-20250219"]}, "invalid beta flag"),
        ({"anthropic_beta": ["prompt-caching-scope-2026-01-05"]}, "invalid beta flag"),
        ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "scope": "global"}}]},
         "system.0.cache_control.ephemeral.scope: Extra inputs are not permitted"),
        ({"tools": [{"name": "t", "input_schema": {"type": "object"}, "defer_loading": True}]},
         "tools.0.custom.defer_loading: Extra inputs are not permitted"),
        ({"context_management": {"edits": []}}, "context_management: Extra inputs are not permitted"),
    ]
    for body, message in refused:
        with pytest.raises(botocore.exceptions.ClientError) as error:
            invoke(**body)
        assert error.value.response["Error"]["Code"] == "ValidationException", body
        assert message in error.value.response["Error"]["Message"], body


def test_bodies_are_checked_against_botocores_service_model(emulator_url):
    """With boto3's own parameter validation off, malformed Converse bodies reach the emulator, which
    refuses them by botocore's Bedrock Runtime model as Bedrock does: the oracle is AWS's model."""
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=emulator_url,
        aws_access_key_id=DEMO_ACCESS_KEY, aws_secret_access_key=DEMO_SECRET_KEY,
        config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False),
    )
    hello = [{"role": "user", "content": [{"text": "hi"}]}]
    refused = [
        ({"messages": hello, "inferenceConfig": {"maxTokens": 0}},
         "Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        ({"messages": [{"role": "tool", "content": [{"text": "hi"}]}]},
         "Value 'tool' at 'messages.1.member.role' failed to satisfy constraint: Member must satisfy enum value set"),
        ({"messages": [{"role": "user", "content": [{"text": "hi", "cachePoint": {"type": "default"}}]}]},
         "at 'messages.1.member.content.1.member' failed to satisfy constraint: Member must have exactly one member set, found 2"),
        ({"messages": [{"role": "user"}]}, "Value null at 'messages.1.member.content' failed to satisfy constraint: Member must not be null"),
        ({"messages": hello, "serviceTier": {"type": "fastest"}}, "Value 'fastest' at 'serviceTier.type' failed to satisfy constraint"),
    ]
    for request, message in refused:
        with pytest.raises(botocore.exceptions.ClientError) as error:
            client.converse(modelId=LLAMA, **request)
        assert error.value.response["Error"]["Code"] == "ValidationException", request
        assert message in error.value.response["Error"]["Message"], (request, error.value.response["Error"]["Message"])
    # botocore cannot even serialise an unknown member: add it to the body before it is signed.
    def add_unknown_member(request, **_):
        body = json.loads(request.body)
        body["inferenceConfig"]["topK"] = 5
        request.data = json.dumps(body).encode()
    client.meta.events.register("before-sign.bedrock-runtime.Converse", add_unknown_member)
    with pytest.raises(botocore.exceptions.ClientError) as error:
        client.converse(modelId=LLAMA, messages=hello, inferenceConfig={"maxTokens": 10})
    assert 'Unknown parameter in \'inferenceConfig\': "topK"' in error.value.response["Error"]["Message"]
    client.meta.events.unregister("before-sign.bedrock-runtime.Converse", add_unknown_member)
    accepted = client.converse(modelId=LLAMA, messages=hello, serviceTier={"type": "priority"},
                               performanceConfig={"latency": "optimized"}, requestMetadata={"team": "search"})
    assert accepted["output"]["message"]["content"] == [{"text": "You said: hi"}]


@pytest.mark.parametrize("model,body,reason", [
    ("cohere.embed-v4:0", {"texts": ["a"], "input_type": "search_document", "output_dimension": 300}, "output_dimension"),
    ("cohere.embed-v4:0", {"texts": ["a"]}, "input_type"),
    ("cohere.embed-v4:0", {"texts": ["a"], "input_type": "search_document", "truncate": "END"}, "truncate"),
    ("cohere.embed-v4:0", {"texts": ["a"], "images": ["data:x"], "input_type": "search_document"}, "exactly one of"),
    ("amazon.nova-2-multimodal-embeddings-v1:0", {"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {
        "embeddingDimension": 384, "text": {"truncationMode": "END", "value": "a"}}}, "embeddingPurpose"),
    ("amazon.nova-2-multimodal-embeddings-v1:0", {"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {
        "embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 512, "text": {"truncationMode": "END", "value": "a"}}},
     "embeddingDimension"),
    ("amazon.nova-2-multimodal-embeddings-v1:0", {"taskType": "SEGMENTED_EMBEDDING", "singleEmbeddingParams": {}},
     "StartAsyncInvoke"),
])
def test_new_embedding_models_refuse_malformed_bodies_as_bedrock_does(emulator_url, model, body, reason):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        bedrock(emulator_url).invoke_model(modelId=model, body=json.dumps(body))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert reason in raised.value.response["Error"]["Message"]


def test_nova_embeddings_count_tokens_in_a_header_only(emulator_url):
    response = bedrock(emulator_url).invoke_model(modelId="amazon.nova-2-multimodal-embeddings-v1:0", body=json.dumps({
        "taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 256, "text": {"truncationMode": "END", "value": "two words"}}}))
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    answer = json.loads(response["body"].read())
    assert [e["embeddingType"] for e in answer["embeddings"]] == ["TEXT"]
    assert len(answer["embeddings"][0]["embedding"]) == 256


def test_converse_cites_a_document_whose_citations_are_on(emulator_url):
    document = {"format": "txt", "name": "Colours", "source": {"bytes": b"The grass is green. The sky is blue."},
                "citations": {"enabled": True}}
    response = bedrock(emulator_url).converse(
        modelId="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        messages=[{"role": "user", "content": [{"document": document}, {"text": "What colour is the grass?"}]}])
    cited = response["output"]["message"]["content"][0]["citationsContent"]
    assert cited["content"][0]["text"].startswith("You said: What colour is the grass?")
    assert cited["citations"][0]["location"] == {"documentChar": {"documentIndex": 0, "start": 0, "end": 19}}
    assert cited["citations"][0]["sourceContent"] == [{"text": "The grass is green."}]

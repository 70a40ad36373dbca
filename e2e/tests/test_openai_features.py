"""The OpenAI API surface beyond text, through Envoy + the filter, with the official SDK:
tools, images, documents, reasoning, structured output, caching, embeddings, refusals."""

import base64
import json
import struct

import openai
import pytest

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_tool_call_plain_keeps_text_and_calls(client, gateway):
    completion = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "weather in Paris"}], tools=[WEATHER, CLOCK]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will call get_weather."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "days": 1}
    tool_config = gateway.last_upstream_request()["body"]["toolConfig"]
    assert [t["toolSpec"]["name"] for t in tool_config["tools"]] == ["get_weather", "get_time"]


def test_tool_choice_names_the_tool(client, gateway):
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "time?"}], tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_time"
    assert gateway.last_upstream_request()["body"]["toolConfig"]["toolChoice"] == {"tool": {"name": "get_time"}}


def test_tool_call_streamed_with_dense_indexes(client):
    chunks = list(client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "weather in Paris"}], tools=[WEATHER], stream=True
    ))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    text = "".join(d.content or "" for d in deltas)
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert text == "I will call get_weather."
    assert {tc.index for tc in calls} == {0}
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert all(tc.id is None and tc.function.name is None for tc in calls[1:]), "id and name on the first delta only"
    assert len(calls) >= 3, "arguments arrive in fragments"
    assert json.loads("".join(tc.function.arguments for tc in calls)) == {"city": "example", "days": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_round_trip(client, gateway):
    first = client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages = [
        {"role": "user", "content": "weather?"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "The tool returned: sunny, 21C"
    assert second.choices[0].finish_reason == "stop"
    sent = gateway.last_upstream_request()["body"]["messages"]
    assert sent[1]["content"][1]["toolUse"]["input"] == {"city": "example", "days": 1}
    assert sent[2]["content"] == [{"toolResult": {"toolUseId": call.id, "content": [{"text": "sunny, 21C"}]}}]


def test_invalid_tool_arguments_are_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=LLAMA, tools=[WEATHER], messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ])
    assert "not valid JSON" in raised.value.message


def test_images_and_documents_reach_bedrock(client):
    completion = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": "data:text/plain;base64," + base64.b64encode(b"hello doc").decode()}},
    ]}])
    assert completion.choices[0].message.content == (
        'You said: What is this? [image/png, 70 bytes] [document txt "notes", 9 bytes]'
    )
    assert completion.usage.prompt_tokens > 100, "images are counted"


def test_image_urls_are_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "not fetched by the gateway" in raised.value.message


def test_reasoning_plain_streamed_and_round_trip(client, gateway):
    kwargs = dict(model=CLAUDE, reasoning_effort="low", max_completion_tokens=4000)
    plain = client.chat.completions.create(messages=[{"role": "user", "content": "ponder this"}], **kwargs)
    message = plain.choices[0].message
    assert gateway.last_upstream_request()["body"]["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    extra = message.model_extra
    assert extra["reasoning_content"] == "The user wrote: ponder this"
    (block,) = extra["thinking_blocks"]
    assert block["signature"].startswith("EmulatorSig") and block["thinking"] == extra["reasoning_content"]
    assert message.content == "You said: ponder this"

    chunks = list(client.chat.completions.create(messages=[{"role": "user", "content": "ponder this"}], stream=True, **kwargs))
    deltas = [c.choices[0].delta.model_extra for c in chunks if c.choices]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "The user wrote: ponder this"
    streamed_blocks = [b for d in deltas for b in (d.get("thinking_blocks") or [])]
    assert streamed_blocks == [block]

    follow_up = client.chat.completions.create(messages=[
        {"role": "user", "content": "ponder this"},
        message.model_dump(exclude_none=True),
        {"role": "user", "content": "and?"},
    ], **kwargs)
    assert follow_up.choices[0].message.content == "You said: and?"
    sent = gateway.last_upstream_request()["body"]["messages"][1]["content"][0]
    assert sent == {"reasoningContent": {"reasoningText": {"text": block["thinking"], "signature": block["signature"]}}}


def test_structured_output_json_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city", "population"]}
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "largest city?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"city": "example", "population": 1}


def test_json_object_mode(client, gateway):
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    assert gateway.last_upstream_request()["body"]["outputConfig"]["textFormat"]["type"] == "json_schema"


def test_prompt_caching_reports_cached_tokens(client, gateway):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "shared context " * 30, "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "cached question"},
    ]
    first = client.chat.completions.create(model=CLAUDE, messages=messages)
    second = client.chat.completions.create(model=CLAUDE, messages=messages)
    assert gateway.last_upstream_request()["body"]["system"][1] == {"cachePoint": {"type": "default"}}
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage.prompt_tokens_details.cache_write_tokens > 0
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens_details.cache_write_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens


@pytest.mark.parametrize("extra, message", [
    ({"n": 2}, "`n` greater than 1"),
    ({"logprobs": True}, "`logprobs`"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "Audio output"),
])
def test_result_changing_parameters_are_refused(client, extra, message):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x"}], **extra)
    assert message in raised.value.message


def test_harmless_parameters_are_accepted(client):
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "fine"}], user="u-42", seed=7, metadata={"team": "a"}, store=False,
        parallel_tool_calls=True, tools=[WEATHER], tool_choice="none",
    )
    assert completion.choices[0].message.content == "You said: fine", "tool_choice none sends no tools"


def test_embeddings_titan_float_and_dimensions(client, gateway):
    result = client.embeddings.create(model="amazon.titan-embed-text-v2:0", input="hello world", dimensions=256)
    (item,) = result.data
    assert len(item.embedding) == 256
    assert abs(sum(v * v for v in item.embedding) - 1.0) < 1e-3
    assert result.usage.prompt_tokens == 2 and result.model == "amazon.titan-embed-text-v2:0"
    assert gateway.last_upstream_request()["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"


def test_embeddings_cohere_batch_base64_differ_per_input(client):
    floats = client.embeddings.create(model="cohere.embed-english-v3", input=["first text", "second text", "third"])
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert len({tuple(d.embedding) for d in floats.data}) == 3, "each input gets its own vector"
    assert floats.usage.prompt_tokens == 5
    encoded = client.embeddings.create(model="cohere.embed-english-v3", input=["first text"], encoding_format="base64")
    raw = base64.b64decode(encoded.data[0].embedding)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == 1024
    assert all(abs(a - b) < 1e-6 for a, b in zip(decoded, floats.data[0].embedding))



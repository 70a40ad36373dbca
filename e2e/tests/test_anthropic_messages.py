"""The official Anthropic Python SDK through the gateway's /anthropic prefix, against the
emulator's Bedrock InvokeModel: plain, streamed, tools, thinking, caching, betas, errors."""

import json
import subprocess
from pathlib import Path

import anthropic
import pytest

from conftest import raw_post

CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture(scope="module")
def client(gateway):
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="sk-ant-caller", max_retries=0, timeout=30)


def test_messages_create(client, gateway):
    message = client.messages.create(
        model=CLAUDE, max_tokens=100, system="Be kind.", messages=[{"role": "user", "content": "Hello Claude"}],
        metadata={"user_id": "u-1"}, extra_body={"temperature": 0.3, "future_field": {"nested": [1, "x"]}},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == CLAUDE
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "You said: Hello Claude"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 4

    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    body = upstream["body"]
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body and "stream" not in body
    # Everything else passes through untouched.
    assert body["system"] == "Be kind." and body["metadata"] == {"user_id": "u-1"} and body["temperature"] == 0.3
    assert body["future_field"] == {"nested": [1, "x"]}
    assert "x-api-key" not in upstream["headers"] and "anthropic-version" not in upstream["headers"]


def test_messages_stream_helpers(client, gateway):
    with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "stream to the sdk please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: stream to the sdk please"
    assert final.content[0].text == text
    assert final.model == CLAUDE
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert gateway.last_upstream_request()["path"].endswith("/invoke-with-response-stream")


def test_raw_stream_event_order(gateway):
    body = {"model": CLAUDE, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "raw events"}]}
    response = raw_post(f"{gateway.url}/anthropic/v1/messages", json.dumps(body).encode())
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    raw = response.body.decode()
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], "the SSE event name matches the data's type"
        events.append(data)
    types = [e["type"] for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"} and len(types[2:-3]) >= 2
    assert events[0]["message"]["model"] == CLAUDE
    # Bedrock's invocation metrics are removed: callers see Anthropic's own message_stop.
    assert events[-1] == {"type": "message_stop"}


def test_tool_use_round_trip_plain(client, gateway):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(model=CLAUDE, max_tokens=200, tools=[WEATHER_TOOL], messages=[question])
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    tool_use = first.content[1]
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "example", "unit": "celsius"}
    assert tool_use.id.startswith("toolu_")

    second = client.messages.create(
        model=CLAUDE, max_tokens=200, tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 degrees and sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "The tool returned: 18 degrees and sunny"
    sent = gateway.last_upstream_request()["body"]
    assert sent["messages"][2]["content"][0]["tool_use_id"] == tool_use.id


def test_tool_use_streamed(client):
    with client.messages.stream(
        model=CLAUDE, max_tokens=200, tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "input_json" for e in events), "input_json_delta fragments arrive as they stream"
    tool_use = [b for b in final.content if b.type == "tool_use"][0]
    assert tool_use.input == {"city": "example", "unit": "celsius"}
    assert final.stop_reason == "tool_use"


def test_extended_thinking_plain_and_streamed(client):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(
        model=CLAUDE, max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "think first"}]
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "The user wrote: think first"
    assert message.content[0].signature.startswith("EmulatorSig")

    with client.messages.stream(
        model=CLAUDE, max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "think first"}]
    ) as stream:
        kinds = {e.type for e in stream}
        final = stream.get_final_message()
    assert {"thinking", "signature"} <= kinds
    assert final.content[0].thinking == message.content[0].thinking
    assert final.content[0].signature == message.content[0].signature

    # The signed thinking block goes back in the next turn unchanged.
    follow_up = client.messages.create(
        model=CLAUDE, max_tokens=2048, thinking=thinking,
        messages=[
            {"role": "user", "content": "think first"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": "and then?"},
        ],
    )
    assert follow_up.content[-1].text == "You said: and then?"


def test_thinking_budget_above_max_tokens_is_a_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model=CLAUDE, max_tokens=1000, thinking={"type": "enabled", "budget_tokens": 2000},
            messages=[{"role": "user", "content": "x"}],
        )
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "budget_tokens" in raised.value.body["error"]["message"]


def test_prompt_caching_writes_then_reads(client, gateway):
    long_system = [{"type": "text", "text": "cached context " * 40, "cache_control": {"type": "ephemeral"}}]
    kwargs = dict(model=CLAUDE, max_tokens=50, system=long_system, messages=[{"role": "user", "content": "cache test"}])
    first = client.messages.create(**kwargs)
    second = client.messages.create(**kwargs)
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert gateway.last_upstream_request()["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_beta_header_becomes_body_array(client, gateway):
    client.messages.create(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "beta"}],
        extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19, interleaved-thinking-2025-05-14"},
    )
    upstream = gateway.last_upstream_request()
    assert upstream["body"]["anthropic_beta"] == ["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"]
    assert "anthropic-beta" not in upstream["headers"]


def test_count_tokens(client, gateway):
    result = client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "one two three four"}])
    assert result.input_tokens == 4
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/count-tokens"
    assert set(upstream["body"]["input"]) == {"invokeModel"}


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model `claude-nope` does not exist or is not served by this gateway."},
    }


def test_throttling_is_a_rate_limit_error(client):
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_headers={"x-emulator-fault": "throttle"}
        )
    assert raised.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"{not json", "not a valid JSON object"),
        (json.dumps({"model": CLAUDE, "messages": [{"role": "user", "content": "x"}]}).encode(), "max_tokens: Field required"),
        (json.dumps({"model": CLAUDE, "max_tokens": 5}).encode(), "messages: Field required"),
    ],
)
def test_bad_requests_get_anthropic_errors(gateway, body, expected):
    response = raw_post(f"{gateway.url}/anthropic/v1/messages", body)
    assert response.status == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert expected in response.json()["error"]["message"]


def test_exception_mid_stream_becomes_an_error_event(client):
    with pytest.raises(anthropic.APIStatusError) as raised:
        with client.messages.stream(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "fail after a few words"}],
            extra_headers={"x-emulator-fault": "stream-exception"},
        ) as stream:
            for _ in stream:
                pass
    assert raised.value.body["error"]["type"] == "api_error"
    assert "modelStreamErrorException" in raised.value.body["error"]["message"]


def test_models_list(client):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert ids[:2] == ["us.meta.llama3-2-1b-instruct-v1:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"]
    assert page.has_more is False
    listed = page.data[ids.index(CLAUDE)]
    assert listed.type == "model" and listed.display_name == CLAUDE
    assert client.models.retrieve(CLAUDE).id == CLAUDE
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope")


# ---- The same API on a model without Anthropic's native API (Llama via Bedrock Converse) ----

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"


def test_llama_via_converse_plain(client, gateway):
    message = client.messages.create(
        model=LLAMA, max_tokens=100, extra_body={"top_k": 5},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello Llama"}],
    )
    assert message.model == LLAMA and message.type == "message"
    assert message.content[0].text == "You said: Hello Llama"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 4
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    assert upstream["body"]["system"] == [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}]
    assert upstream["body"]["additionalModelRequestFields"] == {"top_k": 5}
    assert upstream["body"]["inferenceConfig"] == {"maxTokens": 100}


def test_llama_via_converse_stream_event_sequence(gateway):
    body = {"model": LLAMA, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "raw llama events"}]}
    response = raw_post(f"{gateway.url}/anthropic/v1/messages", json.dumps(body).encode())
    assert response.status == 200
    events = []
    for block in response.body.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append(data)
    types = [e["type"] for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "You said: raw llama events"
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["output_tokens"] == 5 and events[-2]["usage"]["input_tokens"] > 0


def test_llama_via_converse_sdk_stream_and_tools(client, gateway):
    with client.messages.stream(
        model=LLAMA, max_tokens=200, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"city": "example", "unit": "celsius"}
    assert final.stop_reason == "tool_use"

    follow_up = client.messages.create(
        model=LLAMA, max_tokens=200, tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": final.content[1].id, "content": "storm", "is_error": True}]},
        ],
    )
    assert follow_up.content[0].text == "The tool returned: storm"
    result = gateway.last_upstream_request()["body"]["messages"][2]["content"][0]["toolResult"]
    assert result["status"] == "error" and result["content"] == [{"text": "storm"}]


def test_llama_via_converse_count_tokens(client, gateway):
    assert client.messages.count_tokens(model=LLAMA, messages=[{"role": "user", "content": "one two three"}]).input_tokens == 3
    assert set(gateway.last_upstream_request()["body"]["input"]) == {"converse"}


def test_server_tools_are_refused_on_converse_models(client):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model=LLAMA, max_tokens=10, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "server tools" in raised.value.body["error"]["message"]


def docs_shell_block(heading: str, page: str = "docs/apis.md") -> list:
    """The commands of the first `sh` block after `heading` in a page of the documentation."""
    readme = (Path(__file__).resolve().parents[2] / page).read_text()
    block = readme.split(heading, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("curl "):
            commands.append(line)
        else:
            commands[-1] += "\n" + line
    return commands


def run_readme_command(command: str, gateway) -> str:
    command = command.replace("http://127.0.0.1:1975", gateway.url)
    return subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True, timeout=30).stdout


def test_readme_anthropic_curl_examples(gateway):
    commands = docs_shell_block("### Anthropic Messages API")
    assert len(commands) == 6
    plain = json.loads(run_readme_command(commands[0], gateway))
    assert plain["content"][0]["text"] == "You said: What is capital of France?"
    assert plain["model"] == CLAUDE and plain["stop_reason"] == "end_turn"

    streamed = run_readme_command(commands[1], gateway)
    assert streamed.startswith("event: message_start\n") and streamed.rstrip().endswith('data: {"type":"message_stop"}')

    thinking = json.loads(run_readme_command(commands[2], gateway))
    assert [b["type"] for b in thinking["content"]] == ["thinking", "text"] and thinking["content"][0]["signature"]

    cached = json.loads(run_readme_command(commands[3], gateway))
    usage = cached["usage"]
    assert usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"] > 0

    tool_message = json.loads(run_readme_command(commands[4], gateway))
    assert tool_message["stop_reason"] == "tool_use"
    assert tool_message["content"][1] | {"id": None} == {"type": "tool_use", "id": None, "name": "get_weather", "input": {"location": "example"}}
    assert gateway.last_upstream_request()["body"]["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]

    assert json.loads(run_readme_command(commands[5], gateway))["model"] == "us.meta.llama3-2-1b-instruct-v1:0"


def test_seed_thinking_example_with_budget_above_max_tokens_gets_a_clear_400(gateway):
    """The upstream guide's example asks for budget_tokens 5000 with max_tokens 1000, which
    Anthropic and Bedrock reject; the caller must get that reason in Anthropic's format."""
    body = {"model": CLAUDE, "max_tokens": 1000, "thinking": {"type": "enabled", "budget_tokens": 5000},
            "messages": [{"role": "user", "content": "Solve this puzzle"}]}
    response = raw_post(f"{gateway.url}/anthropic/v1/messages", json.dumps(body).encode())
    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "budget_tokens" in response.json()["error"]["message"]


def test_readme_models_and_embeddings_examples(gateway):
    openai_models, anthropic_models, *embeddings = (run_readme_command(c, gateway) for c in docs_shell_block("### Models and embeddings"))
    listed = [m["id"] for m in json.loads(openai_models)["data"]]
    assert {"cohere.embed-v4:0", "amazon.nova-2-multimodal-embeddings-v1:0"} <= set(listed), listed
    assert json.loads(anthropic_models)["data"][0]["type"] == "model"
    assert len(embeddings) == 3
    for answer, dimensions in zip(embeddings, [1024, 512, 384]):
        assert [(d["index"], len(d["embedding"])) for d in json.loads(answer)["data"]] == [(0, dimensions), (1, dimensions)]


def claude_code_request(stream: bool) -> dict:
    """A turn shaped as Claude Code sends it (`ANTHROPIC_BASE_URL` pointed at the gateway)."""
    return {
        "model": CLAUDE, "max_tokens": 4096, "stream": stream,
        "metadata": {"user_id": "user_e2e_account__session_1"},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral", "scope": "global"}},
            {"type": "text", "text": "Working directory: /src", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "fix the test", "cache_control": {"type": "ephemeral", "scope": "global"}}]}],
        "tools": [
            {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
            {"name": "mcp__tracker__list", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }


CLAUDE_CODE_BETAS = ("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
                     "prompt-caching-scope-2026-01-05,effort-2025-11-24")


@pytest.mark.parametrize("stream", [False, True])
def test_claude_codes_request_reaches_bedrock_as_bedrock_takes_it(gateway, stream):
    """Claude Code's betas and `cache_control.scope`: sent as they are, Bedrock (and the emulator)
    answers 400 "invalid beta flag"; through the gateway only the flags Bedrock accepts go, the
    fields only the dropped ones allow are removed, and the caller is told what was dropped."""
    response = raw_post(
        f"{gateway.url}/anthropic/v1/messages?beta=true", json.dumps(claude_code_request(stream)).encode(),
        {"anthropic-beta": CLAUDE_CODE_BETAS, "anthropic-version": "2023-06-01", "x-api-key": "sk-ant-caller"},
    )
    assert response.status == 200, response.body
    assert response.headers["x-ai-gateway-dropped-betas"] == "claude-code-20250219,prompt-caching-scope-2026-01-05"
    if stream:
        assert b"event: message_stop" in response.body
    else:
        assert response.json()["content"][0]["type"] == "thinking"
    sent = gateway.last_upstream_request()["body"]
    assert sent["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-management-2025-06-27", "effort-2025-11-24"]
    assert [block["cache_control"] for block in sent["system"]] == [{"type": "ephemeral"}, {"type": "ephemeral"}]
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "defer_loading" not in sent["tools"][1], "no tool-search flag was sent, so Bedrock would refuse it"
    assert sent["context_management"] == {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}


def test_anthropics_tool_search_flag_goes_under_bedrocks_name(client, gateway):
    message = client.messages.create(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "search tools"}],
        tools=[{"name": "deferred", "input_schema": {"type": "object"}, "defer_loading": True}],
        extra_headers={"anthropic-beta": "advanced-tool-use-2025-11-20"},
    )
    assert message.stop_reason in ("end_turn", "tool_use")
    sent = gateway.last_upstream_request()["body"]
    assert sent["anthropic_beta"] == ["tool-search-tool-2025-10-19"]
    assert sent["tools"][0]["defer_loading"] is True


def test_betas_for_a_model_without_them_are_dropped_and_named(client, gateway):
    """The Anthropic API on a Converse model: Llama has no beta flags, so none is sent."""
    response = client.messages.with_raw_response.create(
        model="us.meta.llama3-2-1b-instruct-v1:0", max_tokens=50, messages=[{"role": "user", "content": "hello llama"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert response.headers["x-ai-gateway-dropped-betas"] == "interleaved-thinking-2025-05-14"
    assert response.parse().content[0].text == "You said: hello llama"
    assert "anthropic_beta" not in json.dumps(gateway.last_upstream_request()["body"])


CITED = [{"type": "document", "title": "Colours", "citations": {"enabled": True},
          "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green. The sky is blue."}},
         {"type": "text", "text": "What colour is the grass?"}]


def test_document_citations_through_converse_plain_and_streamed(gateway):
    """A document with citations on, to a model behind Converse: Converse's citationsContent (and its
    streamed `citation` deltas) come back as Anthropic's `citations` on the text (`citations_delta`)."""
    claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
    sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    sent_document = None
    for stream in (False, True):
        if stream:
            with claude.messages.stream(model=sonnet, max_tokens=200, messages=[{"role": "user", "content": CITED}]) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(model=sonnet, max_tokens=200, messages=[{"role": "user", "content": CITED}])
            sent_document = gateway.last_upstream_request()["body"]["messages"][0]["content"][0]["document"]
        block = message.content[0]
        assert block.type == "text" and block.text.startswith("You said: What colour is the grass?"), block
        citation = block.citations[0]
        assert (citation.type, citation.cited_text, citation.document_index, citation.document_title,
                citation.start_char_index, citation.end_char_index) == ("char_location", "The grass is green.", 0, "Colours", 0, 19), citation
    assert sent_document["citations"] == {"enabled": True} and sent_document["format"] == "txt"

"""OpenAI's Responses API (`POST /v1/responses`) through Envoy + the filter, driven by the official
`openai` SDK and the OpenAI Agents SDK: text, streaming with the SDK's own event accumulator, tool
round trips, Claude's reasoning carried across turns, structured output, limits, errors, and the
stateful features a stateless gateway refuses by name."""

import asyncio
import base64
import json

import openai
import pytest
from pydantic import BaseModel

from conftest import raw_post, wait_until
from test_metrics import prometheus, tokens

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
# Served by an Anthropic-schema backend: the Responses API goes through Converse whatever the schema.
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_plain_text_with_instructions_and_token_metrics(client, gateway):
    before = prometheus(gateway)
    response = client.responses.create(model=LLAMA, instructions="Be brief.", input="hello gateway", store=False,
                                       metadata={"team": "a"})
    assert response.status == "completed" and response.error is None
    assert response.output_text == "You said: hello gateway"
    assert response.id.startswith("resp_") and response.object == "response" and response.model == LLAMA
    assert response.metadata == {"team": "a"} and response.instructions == "Be brief."
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    usage = response.usage
    assert usage.input_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    upstream = gateway.last_upstream_request()
    assert upstream["path"].endswith("/converse")
    assert upstream["body"]["system"] == [{"text": "Be brief."}]
    assert upstream["body"]["messages"] == [{"role": "user", "content": [{"text": "hello gateway"}]}]

    def counted():
        return tokens(prometheus(gateway), LLAMA, "bedrock-us-east-1") \
            - tokens(before, LLAMA, "bedrock-us-east-1") == usage.total_tokens

    wait_until(counted, "the Responses request's tokens to be counted", timeout=15)


def test_streamed_through_the_sdks_accumulator(client, gateway):
    with client.responses.stream(model=LLAMA, input="stream these words please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1, "text arrives in pieces, as Bedrock streamed it"
    assert "".join(deltas) == final.output_text == "You said: stream these words please"
    assert final.status == "completed" and final.usage.output_tokens > 0
    assert gateway.last_upstream_request()["path"].endswith("/converse-stream")


def run_tool_turns(client, stream: bool, **settings):
    """Two turns of a tool loop as Codex runs them: the whole input each time, `store: false`."""
    def create(input_items):
        if not stream:
            return client.responses.create(model=CLAUDE, input=input_items, tools=[WEATHER], store=False, **settings)
        with client.responses.stream(model=CLAUDE, input=input_items, tools=[WEATHER], store=False, **settings) as events:
            return events.get_final_response()

    history = [{"role": "user", "content": "weather in Paris"}]
    first = create(history)
    calls = [item for item in first.output if item.type == "function_call"]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history += [{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"} for call in calls]
    return first, calls, history, create


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_round_trip(client, gateway, stream):
    first, calls, history, create = run_tool_turns(client, stream)
    (call,) = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "example"}
    assert call.status == "completed" and call.id.startswith("fc_")
    second = create(history)
    assert second.output_text == "The tool returned: 18C and sunny"
    sent = gateway.last_upstream_request()["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"] == [{"toolResult": {"toolUseId": call.call_id, "content": [{"text": "18C and sunny"}]}}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_reasoning_round_trip_keeps_claudes_signed_thinking(client, gateway, stream):
    settings = dict(reasoning={"effort": "low"}, include=["reasoning.encrypted_content"], max_output_tokens=4000)
    first, calls, history, create = run_tool_turns(client, stream, **settings)
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.summary[0].text == "The user wrote: weather in Paris"
    assert reasoning.encrypted_content
    second = create(history)
    assert second.output_text == "The tool returned: 18C and sunny"
    # Bedrock got the thinking back first in the tool loop's assistant turn, with its signature
    # (which the emulator verifies, as Claude does).
    upstream = gateway.last_upstream_request()["body"]
    assert upstream["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    thinking = upstream["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]
    assert thinking["text"] == "The user wrote: weather in Paris" and thinking["signature"].startswith("EmulatorSig")


def test_reasoning_sent_back_without_encrypted_content_does_not_fail(client, gateway):
    """The Agents SDK returns reasoning items without `encrypted_content`: Claude would reject the
    tool loop with thinking on, so that turn goes on without thinking."""
    settings = dict(reasoning={"effort": "low"}, max_output_tokens=4000)
    first, _, history, create = run_tool_turns(client, False, **settings)
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.encrypted_content is None, "not asked for with `include`"
    second = create(history)
    assert second.output_text == "The tool returned: 18C and sunny"
    upstream = gateway.last_upstream_request()["body"]
    assert "thinking" not in upstream.get("additionalModelRequestFields", {})
    assert all("reasoningContent" not in block for m in upstream["messages"] for block in m["content"])


def test_altered_reasoning_is_rejected_as_bedrock_would(client):
    settings = dict(reasoning={"effort": "low"}, include=["reasoning.encrypted_content"], max_output_tokens=4000)
    first, _, history, create = run_tool_turns(client, False, **settings)
    item = next(i for i in history if i.get("type") == "reasoning")
    prefix, encoded = item["encrypted_content"].split(".", 1)
    carried = json.loads(base64.b64decode(encoded))
    carried["thinking"] = "Something the model never thought."
    item["encrypted_content"] = prefix + "." + base64.b64encode(json.dumps(carried).encode()).decode()
    with pytest.raises(openai.BadRequestError) as raised:
        create(history)
    assert "Invalid `signature` in `thinking` block" in raised.value.body["message"]


class Forecast(BaseModel):
    city: str
    celsius: int


def test_structured_output_parses_into_a_model(client, gateway):
    response = client.responses.parse(model=LLAMA, input="forecast for Oslo", text_format=Forecast)
    assert isinstance(response.output_parsed, Forecast)
    config = gateway.last_upstream_request()["body"]["outputConfig"]["textFormat"]
    assert config["type"] == "json_schema" and config["structure"]["jsonSchema"]["name"] == "Forecast"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_max_output_tokens_makes_an_incomplete_response(client, stream):
    request = dict(model=LLAMA, input="one two three four five six seven", max_output_tokens=3)
    if stream:
        events = list(client.responses.create(stream=True, **request))
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = client.responses.create(**request)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "You said: one"


def test_bedrock_errors_and_unknown_models_in_openais_format(client):
    with pytest.raises(openai.RateLimitError) as raised:
        client.responses.create(model=LLAMA, input="hi", extra_headers={"x-emulator-fault": "throttle"})
    assert raised.value.body["message"].startswith("Bedrock ThrottlingException")
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="no-such-model", input="hi")
    assert raised.value.code == "model_not_found"


def test_exception_mid_stream_fails_the_response_and_raises(client):
    received = []
    with pytest.raises(openai.APIError) as raised:
        for event in client.responses.create(model=LLAMA, input="this will fail halfway through", stream=True,
                                             extra_headers={"x-emulator-fault": "stream-exception"}):
            received.append(event)
    assert "modelStreamErrorException" in str(raised.value)
    kinds = [event.type for event in received]
    assert "response.output_text.delta" in kinds, "deltas before the exception arrive"
    assert kinds[-1] == "response.failed"
    assert received[-1].response.status == "failed"
    assert "modelStreamErrorException" in received[-1].response.error.message


def test_stateful_features_are_refused_by_name(client, gateway):
    refused = [
        (dict(previous_response_id="resp_123"), "`previous_response_id`"),
        (dict(conversation="conv_123"), "`conversation`"),
        (dict(background=True), "`background: true`"),
        (dict(input=[{"type": "item_reference", "id": "msg_1"}]), "refers to the stored item \"msg_1\""),
        (dict(tools=[{"type": "shell_magic"}]), "tools of type `shell_magic` are not available"),
    ]
    for extra, expected in refused:
        request = dict(model=LLAMA, input="hi") | extra
        with pytest.raises(openai.BadRequestError) as raised:
            client.responses.create(**request)
        assert expected in raised.value.body["message"], raised.value.body
    for call in (lambda: client.responses.retrieve("resp_123"), lambda: client.responses.delete("resp_123")):
        with pytest.raises(openai.NotFoundError) as raised:
            call()
        assert "this gateway stores no responses" in raised.value.body["message"]


@pytest.mark.parametrize("path, error_of", [
    ("/v1/completions", lambda body: body["error"]["message"]),
    ("/anthropic/v1/complete", lambda body: body["type"] == "error" and body["error"]["message"]),
])
def test_paths_the_gateway_does_not_serve_are_named(gateway, path, error_of):
    response = raw_post(gateway.url + path, b'{"model": "us.meta.llama3-2-1b-instruct-v1:0"}')
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    assert f"does not serve POST {path}" in error_of(response.json())


def test_openai_agents_sdk_runs_an_agent_with_a_function_tool(gateway):
    """The Agents SDK's default model speaks the Responses API: an agent calls a tool, gets its
    result and answers, plain and streamed, with Claude reasoning on."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai.types.shared import Reasoning

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"{city}: 18C"

    async def run_both():
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
        agent = Agent(name="forecaster", instructions="Use the tool.", tools=[get_weather],
                      model=OpenAIResponsesModel(model=CLAUDE, openai_client=client),
                      model_settings=ModelSettings(reasoning=Reasoning(effort="low"), max_tokens=4000))
        plain = await Runner.run(agent, "weather in Paris?")
        streamed = Runner.run_streamed(agent, "weather in Rome?")
        kinds = [event.type async for event in streamed.stream_events()]
        return plain.final_output, streamed.final_output, kinds

    plain, streamed, kinds = asyncio.run(run_both())
    assert calls == ["example", "example"], "the model's calls reached the tool"
    assert plain == streamed == "The tool returned: example: 18C"
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds


def test_readme_responses_curl_example(gateway):
    from test_anthropic_messages import docs_shell_block, run_readme_command

    (command,) = docs_shell_block("### OpenAI Responses API")
    response = json.loads(run_readme_command(command, gateway))
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "You said: Hi."

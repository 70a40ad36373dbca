"""OpenAI's own models on Bedrock (gpt-oss) through Bedrock Runtime's OpenAI API: the openai SDK's
chat (plain and streamed) and Responses (plain and streamed) go through as they are, their model
made Bedrock's and signed; the usage is read on the way, a stream's asked for whatever the caller
asked (or it could be neither counted nor charged) and taken out again when it did not ask."""

import openai
import pytest

from conftest import wait_until
from test_metrics import prometheus, requests, settled, tokens

GPT_OSS = "openai.gpt-oss-20b-1:0"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_plain_and_streamed(client, gateway):
    reply = client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "hello gpt oss"}])
    assert reply.choices[0].message.content == "You said: hello gpt oss"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 5)
    sent = gateway.last_upstream_request()
    assert sent["path"] == "/openai/v1/chat/completions"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ") and "/bedrock/aws4_request" in sent["headers"]["authorization"]
    assert sent["body"]["model"] == GPT_OSS

    before = tokens(prometheus(gateway), GPT_OSS, "bedrock-openai")
    chunks = list(client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "stream it"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: stream it"
    assert all(c.usage is None for c in chunks), "the caller did not ask for the usage chunk"
    assert gateway.last_upstream_request()["body"]["stream_options"] == {"include_usage": True}, "the gateway did"
    wait_until(lambda: tokens(prometheus(gateway), GPT_OSS, "bedrock-openai") == before + 2 + 4, "the stream's tokens counted")

    asked = list(client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "with usage"}],
                                                stream=True, stream_options={"include_usage": True}))
    assert asked[-1].usage.completion_tokens == 4 and asked[-1].choices == []


def test_responses_plain_and_streamed(client, gateway):
    response = client.responses.create(model=GPT_OSS, input="hello responses")
    assert response.output_text == "You said: hello responses"
    assert gateway.last_upstream_request()["path"] == "/openai/v1/responses"
    with client.responses.stream(model=GPT_OSS, input="stream responses") as stream:
        final = stream.get_final_response()
    assert final.output_text == "You said: stream responses"
    assert final.usage.output_tokens == 4


def test_a_caller_hanging_up_at_the_last_event_is_counted(client, gateway):
    """Codex on gpt-oss stops at `response.completed` and closes the connection; the emulator holds
    the body's end back. The request is counted at that event, a success, as for the translated
    APIs (not as a stream cut before its end)."""
    values = settled(gateway)
    before = (tokens(values, GPT_OSS, "bedrock-openai"), requests(values, GPT_OSS, "bedrock-openai"))
    with client.responses.create(model=GPT_OSS, input="hang up", stream=True,
                                 extra_headers={"x-emulator-fault": "hold-open"}) as stream:
        completed = next(event for event in stream if event.type == "response.completed")
    spent = completed.response.usage.input_tokens + completed.response.usage.output_tokens
    with client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "hang up"}], stream=True,
                                        stream_options={"include_usage": True},
                                        extra_headers={"x-emulator-fault": "hold-open"}) as chat:
        usage = next(chunk for chunk in chat if chunk.usage).usage
    spent += usage.prompt_tokens + usage.completion_tokens
    # Within the 5 s the emulator holds each body's end back.
    wait_until(lambda: tokens(prometheus(gateway), GPT_OSS, "bedrock-openai") == before[0] + spent,
               "the hung-up streams' tokens to be counted", timeout=4)
    wait_until(lambda: requests(prometheus(gateway), GPT_OSS, "bedrock-openai") == before[1] + 2,
               "both counted as successes", timeout=4)
    assert requests(prometheus(gateway), GPT_OSS, "bedrock-openai", "499") == 0


def test_errors_reach_the_caller_in_openais_format(client):
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-emulator-fault": "throttle"})
    assert raised.value.status_code == 429
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=GPT_OSS, input="x")
    assert "OpenAI's API only" in raised.value.body["message"]
    # A malformed request goes through as sent, and Bedrock (the emulator) refuses it.
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=GPT_OSS, messages=[])
    assert "messages is required" in raised.value.body["message"], raised.value.body
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=GPT_OSS, input="x", background=True)
    assert "background" in raised.value.body["message"], raised.value.body


def test_the_docs_command(gateway):
    import json
    from test_anthropic_messages import docs_shell_block, run_readme_command
    (command,) = docs_shell_block("### OpenAI's models on Bedrock")
    assert json.loads(run_readme_command(command, gateway))["choices"][0]["message"]["content"] == "You said: Hi."


def test_bedrock_mantle_signs_for_its_own_service(workdir, emulator_url):
    """A backend on Bedrock Mantle (host bedrock-mantle.<region>.api.aws, OpenAI's API under /v1):
    the request is signed for the service `bedrock-mantle`, which the emulator checks. The rendered
    backend is pointed at Mantle's host as `ai-gateway-render` writes it for a Backend named
    bedrock-mantle.us-east-1.api.aws with `schema: {name: OpenAI, version: v1}`."""
    from conftest import launch_gateway, stop_process

    def on_mantle(text: str) -> str:
        anchor = '"bedrock-openai": {\n'
        assert anchor in text
        indent = " " * 26
        return text.replace(anchor, anchor + indent + '"endpoint": "bedrock-mantle.us-east-1.api.aws",\n'
                            + indent + '"api_prefix": "/v1",\n', 1)

    keys = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-mantle", keys, edit=on_mantle)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
        reply = client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "hello mantle"}])
        assert reply.choices[0].message.content == "You said: hello mantle"
        sent = gateway.last_upstream_request()
        assert sent["path"] == "/v1/chat/completions"
        assert sent["headers"]["host"] == "bedrock-mantle.us-east-1.api.aws"
        assert "/us-east-1/bedrock-mantle/aws4_request" in sent["headers"]["authorization"]
        assert client.responses.create(model=GPT_OSS, input="hi").output_text == "You said: hi"
        assert gateway.last_upstream_request()["path"] == "/v1/responses"
        streamed = list(client.chat.completions.create(model=GPT_OSS, messages=[{"role": "user", "content": "stream mantle"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "You said: stream mantle"
        with client.responses.stream(model=GPT_OSS, input="stream it") as events:
            assert events.get_final_response().output_text == "You said: stream it"
    finally:
        stop_process(process)

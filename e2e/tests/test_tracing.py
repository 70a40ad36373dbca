"""Traces with OpenTelemetry's GenAI attributes, and metrics pushed over OTLP: the tracing example
(an EnvoyProxy's telemetry) rendered with the emulator example, and an OTLP receiver in this
process checking each span and data point."""

import sys
import time

import openai
import pytest

from conftest import ROOT, free_port, launch_gateway, stop_process, wait_until

sys.path.insert(0, str(ROOT / "e2e"))
from otlp_receiver import Receiver  # noqa: E402

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


@pytest.fixture(scope="module")
def traced(workdir, emulator_url):
    receiver = Receiver(f"127.0.0.1:{free_port()}").start()
    example = (ROOT / "examples/tracing.yaml").read_text()
    assert "port: 4317" in example
    resources = workdir / "tracing.yaml"
    # One more custom tag, a request header, names each test request's span.
    assert "      customTags:\n" in example
    example = example.replace("      customTags:\n", "      customTags:\n        test.id:\n          type: RequestHeader\n"
                              "          requestHeader: { name: x-test-id }\n")
    resources.write_text(example.replace("port: 4317", f"port: {receiver.port}"))
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-tracing", KEYS,
                                      config=[ROOT / "examples/emulator.yaml", resources])
    try:
        yield gateway, receiver
    finally:
        stop_process(process)
        receiver.stop()


IDS = iter(range(1, 1_000_000))


def tagged() -> tuple[str, dict]:
    """A fresh id, and the header that puts it on the request's span (the `test.id` custom tag)."""
    test_id = f"t{next(IDS)}"
    return test_id, {"x-test-id": test_id}


def span_of(receiver, test_id: str) -> dict:
    """The span of the request sent with `test_id`."""
    found = []

    def arrived():
        found[:] = [s for s in receiver.received() if s["attributes"].get("test.id") == test_id]
        return bool(found)

    wait_until(arrived, f"the span of request {test_id}", timeout=20)
    assert len(found) == 1, found
    return found[0]


def test_a_chat_span_carries_the_genai_attributes_with_their_types(traced):
    gateway, receiver = traced
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    test_id, headers = tagged()
    completion = client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "a secret prompt"}], extra_headers=headers)
    usage = completion.usage
    span = span_of(receiver, test_id)
    assert span["service"] == "ai-gateway"
    assert span["name"] == f"chat {LLAMA}"
    attributes = span["attributes"]
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": LLAMA,
        "gen_ai.response.model": LLAMA,
        # Bedrock's id for the answer, which the caller's completion id carries.
        "gen_ai.response.id": completion.id.removeprefix("chatcmpl-"),
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "deployment.environment": "local",
    }
    assert {key: attributes.get(key) for key in expected} == expected
    assert all(type(attributes[key]) is int for key in expected if key.startswith("gen_ai.usage.")), \
        "token counts are integers, as the conventions type them"
    assert "error.type" not in attributes
    assert not [key for key, value in attributes.items() if "secret prompt" in str(value)], "no message content"


def test_a_streamed_alias_and_a_cached_prompt_are_traced_as_the_model_that_answered(traced):
    gateway, receiver = traced
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    # llama-small is an alias the route maps to the Llama model (modelNameOverride).
    test_id, headers = tagged()
    chunks = list(client.chat.completions.create(
        model="llama-small", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True}, extra_headers=headers))
    span = span_of(receiver, test_id)
    assert span["name"] == "chat llama-small"
    attributes = span["attributes"]
    assert (attributes["gen_ai.request.model"], attributes["gen_ai.response.model"]) == ("llama-small", LLAMA)
    assert attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens

    # Sonnet's backend places cache points: the second turn reads what the first wrote.
    prompt = [{"role": "user", "content": "remember this long context " * 20}]
    client.chat.completions.create(model=SONNET, messages=prompt)
    test_id, headers = tagged()
    usage = client.chat.completions.create(model=SONNET, messages=prompt, extra_headers=headers).usage
    attributes = span_of(receiver, test_id)["attributes"]
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == usage.prompt_tokens_details.cached_tokens > 0
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens, "input counts cached tokens too"


def test_an_anthropic_stream_is_traced_once_whole_though_its_usage_was_published_as_it_ran(traced):
    """An Anthropic stream's usage so far is published when its first event arrives (for budgets,
    should it be cut); the span's attributes come from its end alone: no error type, the final
    output tokens."""
    import anthropic
    gateway, receiver = traced
    claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
    test_id, headers = tagged()
    with claude.messages.stream(model="us.anthropic.claude-haiku-4-5-20251001-v1:0", max_tokens=50,
                                messages=[{"role": "user", "content": "one two three four"}],
                                extra_headers=headers) as stream:
        final = stream.get_final_message()
    attributes = span_of(receiver, test_id)["attributes"]
    assert "error.type" not in attributes, attributes
    assert attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens > 1


def test_embeddings_and_failures_are_traced_with_their_operation_and_error_type(traced):
    gateway, receiver = traced
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    test_id, headers = tagged()
    embedded = client.embeddings.create(model=TITAN, input="one two three", extra_headers=headers)
    span = span_of(receiver, test_id)
    assert span["name"] == f"embeddings {TITAN}"
    assert span["attributes"]["gen_ai.operation.name"] == "embeddings"
    assert span["attributes"]["gen_ai.usage.input_tokens"] == embedded.usage.prompt_tokens

    test_id, headers = tagged()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-emulator-fault": "throttle", **headers})
    span = span_of(receiver, test_id)
    assert span["attributes"]["error.type"] == "429"
    assert span["attributes"]["gen_ai.request.model"] == LLAMA


def metric_point(receiver, name: str, attributes: dict) -> dict | None:
    """The latest data point of `name` whose attributes include `attributes` (one series)."""
    points = [p for p in receiver.metric_points(name)
              if all(p["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(points) <= 1, points
    return points[0] if points else None


def test_metrics_reach_the_collector_under_opentelemetrys_names_with_their_attributes(traced):
    """Envoy's OpenTelemetry stats sink pushes the filter's metrics: the tag-extracted names are the
    GenAI conventions' (`gen_ai.client.token.usage`), the labels are attributes, and the exact
    token counter moves by this request's tokens."""
    gateway, receiver = traced
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    series = {"gen_ai.request.model": LLAMA, "gen_ai.token.type": "input"}
    # Earlier tests' requests are flushed (every 0.2 s here) before the figures are read.
    time.sleep(1.5)
    before_tokens = metric_point(receiver, "ai_gateway.tokens_total", series)
    before_usage = metric_point(receiver, "gen_ai.client.token.usage", series)
    usage = client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "count me"}]).usage
    expected_tokens = (before_tokens["value"] if before_tokens else 0) + usage.prompt_tokens
    expected_count = (before_usage["count"] if before_usage else 0) + 1

    def arrived():
        tokens = metric_point(receiver, "ai_gateway.tokens_total", series)
        histogram = metric_point(receiver, "gen_ai.client.token.usage", series)
        return tokens and histogram and tokens["value"] == expected_tokens and histogram["count"] == expected_count

    wait_until(arrived, "the request's tokens in the pushed metrics", timeout=20)
    histogram = metric_point(receiver, "gen_ai.client.token.usage", series)
    assert histogram["kind"] == "histogram"
    assert {k: histogram["attributes"].get(k) for k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                                         "gen_ai.response.model", "backend")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.response.model": LLAMA, "backend": "bedrock-us-east-1"}
    duration = [p for p in receiver.metric_points("gen_ai.server.request.duration_milliseconds")
                if p["attributes"].get("gen_ai.request.model") == LLAMA]
    assert duration and all(p["kind"] == "histogram" for p in duration), duration
    assert not [name for (name, _) in receiver.metrics if ";" in name], "every name had its tags extracted"

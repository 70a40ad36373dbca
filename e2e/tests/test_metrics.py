"""Token metrics, timings, the access log's usage summary, and token budgets enforced by Envoy's
rate-limit filter, checked against the emulator's usage figures after real traffic."""

import contextlib
import json
import re
import time
from pathlib import Path

import anthropic
import openai
import pytest

from conftest import METRIC_PREFIX, ROOT, gateway_with_budget_service, http_get, launch_gateway, stop_process, wait_until

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def prometheus(gateway) -> dict:
    """`name{labels}` -> value, from Envoy's /stats/prometheus, for the gateway's metrics under the
    host's prefix (`ai_gateway_`, or `envoy_ai_gateway_` for the dynamic module), named here as
    `ai_gateway_...` either way."""
    text = http_get(f"{gateway.admin_url}/stats/prometheus").decode()
    return {"ai_gateway_" + line.rsplit(" ", 1)[0].removeprefix(METRIC_PREFIX): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(METRIC_PREFIX)}


def metric(values: dict, name: str, model: str, backend: str, **extra) -> float:
    labels = ",".join([f'model="{model}"', f'backend="{backend}"'] + [f'{k}="{v}"' for k, v in extra.items()])
    return values.get(f"{name}{{{labels}}}", 0.0)


@pytest.fixture(scope="module")
def fresh_gateway(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-metrics", KEYS)
    yield gateway
    stop_process(process)


def test_token_counters_timings_and_access_log_are_exact(fresh_gateway):
    gateway = fresh_gateway
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)

    plain = client.chat.completions.with_raw_response.create(model=LLAMA, messages=[{"role": "user", "content": "one two three"}])
    bedrock_request_id = plain.headers["x-amzn-requestid"]
    plain = plain.parse()
    streamed = list(client.chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "four five"}], stream=True, stream_options={"include_usage": True}))
    message = claude.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "six"}])
    with claude.messages.stream(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "seven eight"}]) as stream:
        final = stream.get_final_message()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x"}], extra_headers={"x-emulator-fault": "throttle"})

    llama_in = plain.usage.prompt_tokens + streamed[-1].usage.prompt_tokens
    llama_out = plain.usage.completion_tokens + streamed[-1].usage.completion_tokens
    claude_in = message.usage.input_tokens + final.usage.input_tokens
    claude_out = message.usage.output_tokens + final.usage.output_tokens
    assert (llama_in, llama_out, claude_in, claude_out) == (5, 9, 3, 7), "the emulator's deterministic usage"

    def all_counted():
        values = prometheus(gateway)
        return metric(values, "ai_gateway_time_to_first_token_ms_count", CLAUDE, "bedrock-anthropic") == 1 \
            and metric(values, "ai_gateway_request_duration_ms_count", LLAMA, "bedrock-us-east-1") == 3

    wait_until(all_counted, "histograms to be flushed", timeout=15)
    values = prometheus(gateway)
    expected = {
        ("ai_gateway_input_tokens", LLAMA, "bedrock-us-east-1"): llama_in,
        ("ai_gateway_output_tokens", LLAMA, "bedrock-us-east-1"): llama_out,
        ("ai_gateway_total_tokens", LLAMA, "bedrock-us-east-1"): llama_in + llama_out,
        ("ai_gateway_input_tokens", CLAUDE, "bedrock-anthropic"): claude_in,
        ("ai_gateway_output_tokens", CLAUDE, "bedrock-anthropic"): claude_out,
        ("ai_gateway_total_tokens", CLAUDE, "bedrock-anthropic"): claude_in + claude_out,
        ("ai_gateway_time_to_first_token_ms_count", LLAMA, "bedrock-us-east-1"): 1,
        ("ai_gateway_time_per_output_token_us_count", LLAMA, "bedrock-us-east-1"): 1,
    }
    for (name, model, backend), value in expected.items():
        assert metric(values, name, model, backend) == value, (name, model, backend)
    assert metric(values, "ai_gateway_requests", LLAMA, "bedrock-us-east-1", status_class="2xx") == 2
    assert metric(values, "ai_gateway_requests", LLAMA, "bedrock-us-east-1", status_class="4xx") == 1
    assert metric(values, "ai_gateway_requests", CLAUDE, "bedrock-anthropic", status_class="2xx") == 2

    def logged():
        return gateway.envoy_log().count("usage={") >= 4

    wait_until(logged, "the access log to be flushed", timeout=15)
    lines = [line for line in gateway.envoy_log().splitlines() if f"bedrock_request_id={bedrock_request_id}" in line]
    assert len(lines) == 1
    usage = json.loads(re.search(r"usage=(\{.*\})", lines[0]).group(1))
    assert usage == {
        "model": LLAMA, "backend": "bedrock-us-east-1", "status": 200, "input_tokens": 3, "output_tokens": 5,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "total_tokens": 8, "cost": 8,
    }


def token_budget_policy(directory: Path, tokens: int, unit: str) -> Path:
    """examples/rate-limit.yaml with its limit changed."""
    text = (ROOT / "examples/rate-limit.yaml").read_text()
    assert "limit: { requests: 1000, unit: Hour }" in text
    path = directory / f"budget-{tokens}-{unit}.yaml"
    path.write_text(text.replace("limit: { requests: 1000, unit: Hour }", f"limit: {{ requests: {tokens}, unit: {unit} }}"))
    return path


@contextlib.contextmanager
def budgeted_gateway(workdir: Path, emulator_url: str, tokens: int, unit: str):
    """The emulator example and a token budget, rendered together."""
    config = [ROOT / "examples/emulator.yaml", token_budget_policy(workdir, tokens, unit)]
    with gateway_with_budget_service(workdir, emulator_url, f"envoy-budget-{unit}", KEYS, config) as gateway:

        def ask(client_id: str, text: str):
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30,
                                   default_headers={"x-client-id": client_id})
            return client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": text}])

        yield ask


def test_token_budget_is_enforced_by_envoys_rate_limit_filter(workdir, emulator_url):
    with budgeted_gateway(workdir, emulator_url, 20, "Hour") as ask:
        spent = 0
        while spent < 20:  # 8 tokens a request: 8, 16, 24
            spent += ask("team-a", "one two three").usage.total_tokens
            time.sleep(0.3)  # charging happens when the stream is done
        with pytest.raises(openai.RateLimitError) as raised:
            ask("team-a", "one more")
        assert raised.value.body["message"] == "Rate limit exceeded: this caller's token budget is spent."
        assert ask("team-b", "another team").choices[0].message.content == "You said: another team"


def test_a_spent_token_budget_refills_when_its_window_ends(workdir, emulator_url):
    with budgeted_gateway(workdir, emulator_url, 20, "Second") as ask:
        refused = False
        for _ in range(60):  # a 20-token budget is spent within three 8-token requests of one second
            try:
                ask("team-c", "one two three")
            except openai.RateLimitError:
                refused = True
                break
            time.sleep(0.05)
        assert refused, "the budget was never spent"
        time.sleep(1.1)  # the next one-second window
        assert ask("team-c", "again").choices[0].message.content == "You said: again"

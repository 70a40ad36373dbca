"""Token metrics, timings, the access log's usage summary, and token budgets enforced by Envoy's
rate-limit filter, checked against the emulator's usage figures after real traffic."""

import contextlib
import json
import re
import socket
import time
from pathlib import Path

import anthropic
import openai
import pytest

from conftest import ROOT, gateway_with_budget_service, http_get, launch_gateway, stop_process, wait_until

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def prometheus(gateway) -> dict:
    """`(name, labels)` -> value, from Envoy's /stats/prometheus, for the gateway's metrics: the GenAI
    ones (`gen_ai_...`) and its own (`ai_gateway_...`), named alike by both hosts."""
    text = http_get(f"{gateway.admin_url}/stats/prometheus").decode()
    values = {}
    for line in text.splitlines():
        if not line.startswith(("gen_ai_", "ai_gateway_")):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', labels))
        values[(name, pairs)] = float(value)
    return values


def settled(gateway) -> dict:
    """The metrics once the earlier tests' requests are in them: histograms reach /stats/prometheus at
    Envoy's stats flush, so a read right after a request can miss it (and a later read count it here)."""
    last = prometheus(gateway)
    for _ in range(20):
        time.sleep(0.5)
        current = prometheus(gateway)
        if current == last:
            return current
        last = current
    return last


def metric(values: dict, name: str, model: str | None = None, backend: str | None = None, **labels) -> float:
    """The sum of `name` over the series of `model` (as the caller asked for it) on `backend` with
    `labels`; a label given as None must be absent (`error_type=None`: the successes)."""
    if model is not None:
        labels["gen_ai_request_model"] = model
    if backend is not None:
        labels["backend"] = backend
    total = 0.0
    for (series, pairs), value in values.items():
        found = dict(pairs)
        if series == name and all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


def tokens(values: dict, model: str, backend: str, kind: str | None = None) -> float:
    """Tokens of one token type (`input`, `output`, `cached_input`, ...), or input and output, from
    the exact counter (the histogram's sum is Envoy's approximation)."""
    if kind is None:
        return tokens(values, model, backend, "input") + tokens(values, model, backend, "output")
    return metric(values, "ai_gateway_tokens_total", model, backend, gen_ai_token_type=kind)


def requests(values: dict, model: str, backend: str, error_type: str | None = None) -> float:
    """Requests counted by their duration: the successes, or those that failed with `error_type`."""
    return metric(values, "gen_ai_server_request_duration_milliseconds_count", model, backend, error_type=error_type)


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
        return metric(values, "gen_ai_server_time_to_first_token_milliseconds_count", CLAUDE, "bedrock-anthropic") == 1 \
            and requests(values, LLAMA, "bedrock-us-east-1") == 2 \
            and requests(values, LLAMA, "bedrock-us-east-1", "429") == 1

    wait_until(all_counted, "histograms to be flushed", timeout=15)
    values = prometheus(gateway)
    common = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "aws.bedrock"}
    expected = {
        ("input", LLAMA, "bedrock-us-east-1"): llama_in,
        ("output", LLAMA, "bedrock-us-east-1"): llama_out,
        ("input", CLAUDE, "bedrock-anthropic"): claude_in,
        ("output", CLAUDE, "bedrock-anthropic"): claude_out,
        ("cached_input", LLAMA, "bedrock-us-east-1"): 0,
    }
    for (kind, model, backend), value in expected.items():
        assert tokens(values, model, backend, kind) == value, (kind, model, backend)
        assert metric(values, "ai_gateway_tokens_total", model, backend, gen_ai_token_type=kind,
                      gen_ai_response_model=model, **common) == value, "the conventions' attributes"
        assert metric(values, "gen_ai_client_token_usage_sum", model, backend, gen_ai_token_type=kind) \
            == pytest.approx(value, rel=0.05), "Envoy's histogram sums are approximations"
    # One sample per successful request and token type: the histogram's count is the request count.
    assert metric(values, "gen_ai_client_token_usage_count", LLAMA, "bedrock-us-east-1", gen_ai_token_type="input") == 2
    assert metric(values, "gen_ai_server_time_to_first_token_milliseconds_count", LLAMA, "bedrock-us-east-1") == 1
    assert metric(values, "gen_ai_server_time_per_output_token_milliseconds_count", LLAMA, "bedrock-us-east-1") == 1
    assert requests(values, CLAUDE, "bedrock-anthropic") == 2
    # The conventions' buckets, in milliseconds: 0.01 s is the first duration bound, 1 the first token one.
    assert metric(values, "gen_ai_server_request_duration_milliseconds_bucket", LLAMA, "bedrock-us-east-1",
                  le="81920", error_type=None) == 2
    assert metric(values, "gen_ai_client_token_usage_bucket", LLAMA, "bedrock-us-east-1",
                  gen_ai_token_type="output", le="16") == 2, "4 and 5 output tokens: both under the bound 16"
    assert metric(values, "gen_ai_client_token_usage_bucket", LLAMA, "bedrock-us-east-1",
                  gen_ai_token_type="output", le="4") == 1

    def logged():
        return gateway.envoy_log().count("usage={") >= 4

    wait_until(logged, "the access log to be flushed", timeout=15)
    lines = [line for line in gateway.envoy_log().splitlines() if f"bedrock_request_id={bedrock_request_id}" in line]
    assert len(lines) == 1
    usage = json.loads(re.search(r"usage=(\{.*\})", lines[0]).group(1))
    assert usage == {
        "model": LLAMA, "backend": "bedrock-us-east-1", "status": 200, "input_tokens": 3, "output_tokens": 5,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "total_tokens": 8, "cost": 8,
        "costs": {"llm_total_token": 8, "usd_micros": 0},  # Llama: $0.10 a million tokens, 0.8 micro-dollars
    }


def send_and_hang_up(gateway, path: str, body: dict, until: bytes, headers: dict | None = None) -> bytes:
    """Sends a streamed request (its deltas paced 300 ms apart) and hangs up once the answer
    holds `until`, long before the stream's end (or once the head of an answer other than a 200 is in)."""
    port = int(gateway.url.rsplit(":", 1)[1])
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            f"x-emulator-delay-ms: 300\r\ncontent-length: {len(payload)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()) + "\r\n").encode()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head + payload)
        while until not in received:
            if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 200"):
                break
            chunk = connection.recv(65536)
            assert chunk, f"the gateway closed first: {received!r}"
            received += chunk
    return received


def test_a_stream_cut_before_its_end_is_counted_as_failed_with_the_tokens_it_reported(workdir, emulator_url):
    """A caller hanging up mid-stream (or Bedrock's connection breaking) ends the request without
    its last event: it is counted, failed with 499, with the tokens its events had reported (an
    Anthropic stream reports its input at its start); it was not counted at all."""
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-cut", KEYS)
    try:
        send_and_hang_up(gateway, "/v1/chat/completions", {
            "model": LLAMA, "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]},
            until=b"You said")
        received = send_and_hang_up(gateway, "/anthropic/v1/messages", {
            "model": CLAUDE, "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "one two three"}]},
            until=b"event: content_block_delta")
        start = next(json.loads(line[len("data: "):]) for line in received.decode().splitlines()
                     if line.startswith("data: ") and '"message_start"' in line)
        input_tokens = start["message"]["usage"]["input_tokens"]
        assert input_tokens > 0

        def counted():
            values = prometheus(gateway)
            return requests(values, LLAMA, "bedrock-us-east-1", "499") == 1 \
                and requests(values, CLAUDE, "bedrock-anthropic", "499") == 1
        wait_until(counted, "the cut streams to be counted", timeout=15)
        values = prometheus(gateway)
        assert requests(values, LLAMA, "bedrock-us-east-1") == 0, "neither counted as a success"
        assert requests(values, CLAUDE, "bedrock-anthropic") == 0
        assert tokens(values, CLAUDE, "bedrock-anthropic", "input") == input_tokens
        assert tokens(values, LLAMA, "bedrock-us-east-1", "input") == 0, "Converse reports usage at its end only"
    finally:
        stop_process(process)


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


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_caller_that_hangs_up_at_the_last_event_is_counted_and_charged(workdir, emulator_url, api):
    """Codex stops reading at `response.completed` and closes the connection (a Chat caller may at
    its usage chunk); the emulator holds the body's end back, so the gateway never sees it. The
    request is counted and charged to the caller's budget all the same (it was neither, when both
    waited for the body's end)."""
    config = [ROOT / "examples/emulator.yaml", token_budget_policy(workdir, 20, "Hour")]
    with gateway_with_budget_service(workdir, emulator_url, f"envoy-hang-up-{api}", KEYS, config) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30,
                               default_headers={"x-client-id": "team-h", "x-emulator-fault": "hold-open"})

        def ask_and_hang_up() -> int:
            if api == "responses":
                with client.responses.create(model=LLAMA, input="one two three", stream=True) as stream:
                    completed = next(event for event in stream if event.type == "response.completed")
                return completed.response.usage.total_tokens
            with client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "one two three"}],
                                                stream=True, stream_options={"include_usage": True}) as stream:
                return next(chunk for chunk in stream if chunk.usage).usage.total_tokens

        spent = []
        for _ in range(6):  # 8 tokens a request: refused on the fourth
            try:
                spent.append(ask_and_hang_up())
            except openai.RateLimitError as refused:
                assert refused.body["message"] == "Rate limit exceeded: this caller's token budget is spent."
                break
            time.sleep(0.3)  # charging happens when the stream is done
        assert spent == [8, 8, 8], f"never refused: the hung-up requests were not charged ({spent})"
        wait_until(lambda: tokens(prometheus(gateway), LLAMA, "bedrock-us-east-1") == 24,
                   "the hung-up requests' tokens to be counted", timeout=4)


def test_a_stream_bedrock_fails_mid_way_is_counted_as_failed_with_its_errors_status(workdir, emulator_url):
    """A 200 whose stream Bedrock breaks off with an exception (throttling, a model error) reaches the
    caller as an error event; the metrics count it as failed with that error's status, as they would
    a refusal before the stream (it was counted as a success)."""
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-stream-faults", KEYS)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
        claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)
        for fault in ("stream-throttle", "stream-exception"):
            with pytest.raises(openai.APIError) as raised:
                list(client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "one two three"}],
                                                    stream=True, extra_headers={"x-emulator-fault": fault}))
            assert "Bedrock" in raised.value.message
        with pytest.raises(anthropic.APIStatusError):
            with claude.messages.stream(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "four five"}],
                                        extra_headers={"x-emulator-fault": "stream-throttle"}) as stream:
                stream.get_final_message()

        def counted():
            values = prometheus(gateway)
            return requests(values, LLAMA, "bedrock-us-east-1", "429") == 1 \
                and requests(values, LLAMA, "bedrock-us-east-1", "502") == 1 \
                and requests(values, CLAUDE, "bedrock-anthropic", "429") == 1
        wait_until(counted, "the failed streams to be counted as failures", timeout=15)
        values = prometheus(gateway)
        assert requests(values, LLAMA, "bedrock-us-east-1") == 0 and requests(values, CLAUDE, "bedrock-anthropic") == 0
    finally:
        stop_process(process)


def test_an_anthropic_stream_cut_mid_way_is_charged_the_input_it_reported(workdir, emulator_url):
    """Claude Code's Esc interrupts an answer: Bedrock charges its input all the same, which the
    stream reported at its start (with its first output token), and so does the caller's budget (the routing stage is done before
    the backend stage hears of a cut, so the usage so far is published as the stream runs)."""
    config = [ROOT / "examples/emulator.yaml", token_budget_policy(workdir, 20, "Hour")]
    with gateway_with_budget_service(workdir, emulator_url, "envoy-interrupted", KEYS, config) as gateway:
        body = {"model": CLAUDE, "stream": True, "max_tokens": 50,
                "messages": [{"role": "user", "content": "one two three four five six"}]}
        charged = []
        for _ in range(10):
            received = send_and_hang_up(gateway, "/anthropic/v1/messages", body,
                                        until=b"event: content_block_delta", headers={"x-client-id": "team-i"})
            if received.startswith(b"HTTP/1.1 429"):
                break
            start = next(json.loads(line[len("data: "):]) for line in received.decode().splitlines()
                         if line.startswith("data: ") and '"message_start"' in line)
            usage = start["message"]["usage"]
            charged.append(usage["input_tokens"] + usage["output_tokens"])
            time.sleep(0.3)  # charging happens when the stream is done
        assert charged and sum(charged[:-1]) < 20 <= sum(charged), f"refused once the tokens charged reached 20: {charged}"


SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def sonnet_price_micros(usage) -> int:
    """examples/emulator.yaml's price of a Claude Sonnet 4.5 request: $3 and $15 per million input
    and output tokens, $0.30 per million read from the cache, $3.75 per million written to it."""
    cached = usage.prompt_tokens_details.cached_tokens or 0
    written = getattr(usage.prompt_tokens_details, "cache_write_tokens", 0) or 0
    return (usage.prompt_tokens - cached - written) * 3 + usage.completion_tokens * 15 + int(cached * 0.3 + written * 3.75)


def test_a_cel_price_is_charged_to_a_dollar_budget_that_refuses_once_spent_and_refills(workdir, emulator_url):
    """examples/costs.yaml: a per-caller budget in micro-dollars, charged with the CEL price list of
    examples/emulator.yaml; the price is also counted per model and published for the access log."""
    text = (ROOT / "examples/costs.yaml").read_text()
    assert "limit: { requests: 5000000, unit: Hour }" in text
    budget = 250
    policy = workdir / "dollar-budget.yaml"
    policy.write_text(text.replace("limit: { requests: 5000000, unit: Hour }", f"limit: {{ requests: {budget}, unit: Second }}"))
    config = [ROOT / "examples/emulator.yaml", policy]
    with gateway_with_budget_service(workdir, emulator_url, "envoy-dollar-budget", KEYS, config) as gateway:
        def ask(client_id: str, text: str):
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30,
                                   default_headers={"x-client-id": client_id})
            return client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": text}])

        prices, refused = [], None
        for _ in range(60):
            try:
                prices.append(sonnet_price_micros(ask("team-d", "price this request please").usage))
            except openai.RateLimitError as error:
                refused = error
                break
            time.sleep(0.05)
        assert refused is not None, f"a {budget} micro-dollar budget was never spent: {prices}"
        assert refused.body["message"] == "Rate limit exceeded: this caller's token budget is spent."
        assert sum(prices) >= budget, "refused only once the prices charged reach the budget"
        assert all(price > 0 for price in prices), prices
        other = ask("team-e", "another caller")
        assert other.choices[0].message.content == "You said: another caller"
        time.sleep(1.1)  # the next one-second window
        again = ask("team-d", "again")
        assert again.choices[0].message.content == "You said: again"

        # Each request's price, counted per model and published for the access log under its key.
        charged = prices + [sonnet_price_micros(other.usage), sonnet_price_micros(again.usage)]
        wait_until(lambda: metric(prometheus(gateway), "ai_gateway_request_cost", SONNET, "bedrock-us-east-1",
                                  cost="usd_micros") == sum(charged), "the prices to be counted", timeout=15)

        def logged_prices():
            # Read by key, not by line: Envoy's own warnings (stderr, the same file here) can cut a line.
            return sorted(int(price) for price in re.findall(r'"usd_micros":(\d+)\}', gateway.envoy_log()))

        wait_until(lambda: logged_prices() == sorted(charged), "each price in the access log", timeout=15)

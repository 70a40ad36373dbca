"""`make run AUTH=<method>` and `make run CONFIG=<resource file>` as a user runs them: the documented
ports, OpenAI and Anthropic requests answered, and SIGTERM stopping both the emulator and Envoy."""

import json
import signal
import time
import socket
import subprocess

import anthropic
import openai
import pytest

from conftest import ENVOY, EMULATOR, ROOT, http_get, wait_until

pytestmark = pytest.mark.host_independent

PORTS = (1975, 4566, 4567, 9901, 8081, 4317)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_local(auth: str, config: str | None = None, example: str | None = None, host: str | None = None) -> subprocess.Popen:
    busy = [p for p in PORTS if port_in_use(p)]
    assert not busy, f"ports {busy} are taken (is `make run` already running?); this test needs them"
    env = {"PATH": "/usr/bin:/bin", "ENVOY": str(ENVOY), "EMULATOR": str(EMULATOR), "AUTH": auth}
    if config is not None:
        env["CONFIG"] = config
    if example is not None:
        env["EXAMPLE"] = example
    if host is not None:
        env["HOST"] = host
    return subprocess.Popen(["bash", "e2e/run-local.sh"], cwd=ROOT, start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=20)[0].decode(errors="replace")
    wait_until(lambda: not any(port_in_use(p) for p in PORTS), "both processes to stop after SIGTERM", timeout=10)
    return output


@pytest.mark.parametrize("auth,host", [("static", "wasm"), ("pod-identity", "wasm"), ("irsa", "wasm"), ("imds", "wasm"),
                                       ("api-key", "wasm"), ("static", "dynamic-module"), ("pod-identity", "dynamic-module"),
                                       ("api-key", "dynamic-module")])
def test_make_run_serves_each_auth_method(auth, host):
    process = run_local(auth, host=host)
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", f"make run AUTH={auth} HOST={host}")
        loaded = http_get("http://127.0.0.1:9901/config_dump").decode()
        expected_filter = "DynamicModuleFilter" if host == "dynamic-module" else "envoy.extensions.filters.http.wasm.v3.Wasm"
        assert expected_filter in loaded, f"HOST={host} loads its own build"
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30)
        reply = client.chat.completions.create(
            model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": f"Hi from {auth}."}]
        )
        assert reply.choices[0].message.content == f"You said: Hi from {auth}."
        claude = anthropic.Anthropic(base_url="http://127.0.0.1:1975/anthropic", api_key="unused", max_retries=2, timeout=30)
        message = claude.messages.create(
            model="us.anthropic.claude-haiku-4-5-20251001-v1:0", max_tokens=50, messages=[{"role": "user", "content": "Hi Claude."}]
        )
        assert message.content[0].text == "You said: Hi Claude."
        sent = json.loads(http_get("http://127.0.0.1:4566/_emulator/last-request"))["headers"]
        if auth == "api-key":
            assert sent["authorization"].startswith("Bearer ABSK") and "x-amz-date" not in sent
        else:
            assert sent["authorization"].startswith("AWS4-HMAC-SHA256 ")
    finally:
        output = stop(process)
    assert f"AUTH={auth}" in output


def test_make_run_serves_the_seed_aws_example():
    """Envoy AI Gateway's examples/basic/aws.yaml, pointed at the emulator, rendered by `make run
    CONFIG=`: the seed's requests answered, signed with the keys of its Secret, and a model it does not
    route refused in OpenAI's format."""
    process = run_local("imds", "examples/basic-aws.yaml")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run CONFIG=examples/basic-aws.yaml")
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30)
        reply = client.chat.completions.create(
            model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "Hi."}])
        assert reply.choices[0].message.content == "You said: Hi."
        authorization = json.loads(http_get("http://127.0.0.1:4566/_emulator/last-request"))["headers"]["authorization"]
        assert "Credential=AKIDEXAMPLE/" in authorization, "signed with the Secret's keys"
        claude = anthropic.Anthropic(base_url="http://127.0.0.1:1975/anthropic", api_key="unused", max_retries=2, timeout=30)
        message = claude.messages.create(
            model="anthropic.claude-3-5-sonnet-20241022-v2:0", max_tokens=100,
            messages=[{"role": "user", "content": "What is capital of France?"}])
        assert message.content[0].text == "You said: What is capital of France?"
        assert [m.id for m in client.models.list()] == ["us.meta.llama3-2-1b-instruct-v1:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"]
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(model="cohere.embed-english-v3", messages=[{"role": "user", "content": "Hi."}])
        assert refused.value.code == "model_not_found"
    finally:
        output = stop(process)
    assert "CONFIG=examples/basic-aws.yaml" in output


def test_make_run_example_rate_limit_starts_the_budget_service():
    """EXAMPLE=rate-limit renders examples/rate-limit.yaml with the emulator example and runs the
    rate-limit service with the limits the renderer wrote, which Envoy consults as requests arrive
    (charging is proven by test_metrics' budget tests)."""
    process = run_local("static", example="rate-limit")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run EXAMPLE=rate-limit")
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30,
                               default_headers={"x-client-id": "demo"})
        reply = client.chat.completions.create(
            model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "Hi."}])
        assert reply.choices[0].message.content == "You said: Hi."

        stats = http_get("http://127.0.0.1:9901/stats?filter=ratelimit").decode()
        assert "cluster.bedrock-us-east-1.ratelimit.ok: 1" in stats, stats
    finally:
        output = stop(process)
    assert "examples/rate-limit.yaml" in output


def test_make_run_examples_costs_and_tracing():
    """EXAMPLE=costs charges a dollar budget (the rate-limit service runs with its limits), and
    EXAMPLE=tracing starts the OTLP receiver, which prints each request's span with its GenAI attributes,
    and the gateway's metrics Envoy pushes to it."""
    process = run_local("static", example="costs")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run EXAMPLE=costs")
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30,
                               default_headers={"x-client-id": "demo"})
        reply = client.chat.completions.create(
            model="us.anthropic.claude-sonnet-4-5-20250929-v1:0", messages=[{"role": "user", "content": "Hi."}])
        assert reply.choices[0].message.content == "You said: Hi."
        stats = http_get("http://127.0.0.1:9901/stats?filter=ratelimit").decode()
        assert "cluster.bedrock-us-east-1.ratelimit.ok: 1" in stats, stats
    finally:
        output = stop(process)
    assert "examples/costs.yaml" in output

    process = run_local("static", example="tracing")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run EXAMPLE=tracing")
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30)
        client.chat.completions.create(
            model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "Hi."}])
        time.sleep(6)  # Envoy's OpenTelemetry tracer sends its batch, and flushes its stats, every 5 s
    finally:
        output = stop(process)
    spans = [json.loads(line) for line in output.splitlines() if line.startswith('{"service"')]
    assert [span["name"] for span in spans] == ["chat us.meta.llama3-2-1b-instruct-v1:0"], output[-3000:]
    assert spans[0]["attributes"]["gen_ai.usage.output_tokens"] > 0
    metrics = [json.loads(line) for line in output.splitlines() if line.startswith('{"name"')]
    usage = [m for m in metrics if m["name"] == "gen_ai.client.token.usage"
             and m["attributes"].get("gen_ai.request.model") == "us.meta.llama3-2-1b-instruct-v1:0"]
    assert usage and usage[-1]["count"] >= 1, output[-3000:]
    assert not [m for m in metrics if not m["name"].startswith(("gen_ai.", "ai_gateway."))], "only the gateway's own"


def test_make_run_failover_example():
    """`make run EXAMPLE=failover` as docs/operations.md shows it: two emulators, each taking only its own
    region's signatures; with us-east-1 throttled, us-west-2 answers."""
    process = run_local("static", example="failover")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run EXAMPLE=failover")
        wait_until(lambda: http_get("http://127.0.0.1:4567/_emulator/health") == b'{"status":"ok"}', "the us-west-2 emulator")
        readme = (ROOT / "docs/operations.md").read_text().split("## Failover", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
        commands = [line.split("#")[0].strip() for line in readme.replace("\\\n", " ").splitlines() if line.startswith("curl")]
        assert len(commands) == 3, commands
        run = lambda command: subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout
        assert json.loads(run(commands[0]))["fault"] == "throttle"
        reply = json.loads(run(commands[1]))
        assert reply["choices"][0]["message"]["content"] == "You said: Hi."
        west = json.loads(run(commands[2]))
        assert "/us-west-2/bedrock/aws4_request" in west["headers"]["authorization"]
    finally:
        output = stop(process)
    # run-local.sh names the resources it rendered and the second emulator it started.
    assert "CONFIG=examples/emulator.yaml examples/failover.yaml " in output, output[-2000:]
    assert "us-west-2 emulator http://127.0.0.1:4567" in output, output[-2000:]


def test_make_run_callers_example():
    """`make run EXAMPLE=callers` as docs/operations.md shows it: Bob's key serves Llama; Bob and Claude is 403,
    no key 401, each in OpenAI's format; Alice's key works with the Anthropic SDK."""
    process = run_local("static", example="callers")
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", "make run EXAMPLE=callers")
        readme = (ROOT / "docs/operations.md").read_text().split("## Callers", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
        command = " ".join(line.rstrip("\\").strip() for line in readme.splitlines() if not line.startswith(("#", "make")))
        reply = json.loads(subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout)
        assert reply["choices"][0]["message"]["content"] == "You said: Hi."
        bob = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="sk-demo-bob", max_retries=0, timeout=30)
        with pytest.raises(openai.PermissionDeniedError):
            bob.chat.completions.create(model="us.anthropic.claude-haiku-4-5-20251001-v1:0", messages=[{"role": "user", "content": "Hi."}])
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="sk-wrong", max_retries=0, timeout=30).chat.completions.create(
                model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": "Hi."}])
        alice = anthropic.Anthropic(base_url="http://127.0.0.1:1975/anthropic", api_key="sk-demo-alice", max_retries=0, timeout=30)
        message = alice.messages.create(model="us.anthropic.claude-haiku-4-5-20251001-v1:0", max_tokens=20, messages=[{"role": "user", "content": "Hi Claude."}])
        assert message.content[0].text == "You said: Hi Claude."
    finally:
        output = stop(process)
    assert "callers.yaml" in output

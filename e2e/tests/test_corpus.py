"""The corpus of real clients' requests (filter/core/tests/fixtures/corpus, from `make record-clients`),
sent again through Envoy to every target each applies to: Anthropic's API both to InvokeModel with
Anthropic's body (Claude Haiku 4.5) and to Converse (Claude Sonnet 4.5), everything else as
recorded. The emulator checks every Converse body against botocore's service model and every
InvokeModel body against Bedrock's rules for Claude, so a translation Bedrock would refuse fails here.
The translations themselves are snapshots in filter/core/tests/corpus.rs."""

import json
from pathlib import Path

import pytest

from conftest import ROOT, http_get, launch_gateway, raw_post, stop_process

CORPUS = ROOT / "filter/core/tests/fixtures/corpus"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
# Anthropic's API goes to each backend kind through a model make run routes there.
ANTHROPIC_TARGETS = {"invoke": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                     "converse": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}
RECORDED = sorted(CORPUS.glob("*/*.json"))


def test_the_corpus_holds_at_least_a_hundred_requests_of_eight_clients():
    assert len(RECORDED) >= 100
    assert {path.parent.name for path in RECORDED} >= {
        "codex", "claude-code", "openai-agents", "openai-python", "anthropic-python", "boto3", "langchain", "vercel-ai"}


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-corpus", KEYS)
    yield gateway
    stop_process(process)


def cases():
    for path in RECORDED:
        recorded = json.loads(path.read_text())
        name = f"{path.parent.name}/{path.stem}"
        if recorded["path"].startswith("/anthropic/"):
            for target, model in ANTHROPIC_TARGETS.items():
                yield pytest.param(recorded, model, id=f"{name}-{target}")
        else:
            yield pytest.param(recorded, None, id=name)


@pytest.mark.parametrize("recorded, model", list(cases()))
def test_a_recorded_request_is_served_for_every_target(gateway, recorded, model):
    body = recorded["body"]
    if model is not None:
        body = {**body, "model": model}
    headers = {k: v for k, v in recorded["headers"].items() if k != "user-agent"}
    before = json.loads(http_get(f"{gateway.emulator_url}/_emulator/bedrock-calls"))
    reply = raw_post(gateway.url + recorded["path"], json.dumps(body).encode(), headers, timeout=60)
    text = reply.body.decode(errors="replace")
    assert reply.status == 200, text[:2000]
    # A stream's own errors: an OpenAI error chunk, a failed response, an Anthropic error event.
    assert "event: error" not in text and "response.failed" not in text and not text.startswith('data: {"error"'), text[:2000]
    after = json.loads(http_get(f"{gateway.emulator_url}/_emulator/bedrock-calls"))
    assert after["accepted"] > before["accepted"], "Bedrock (the emulator) received and accepted it"

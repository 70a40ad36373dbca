"""Cohere's rerank API (v1 and v2, raw HTTP as the cohere SDK sends it) on the Bedrock Agent
Runtime's Rerank, and the emulator's Rerank against boto3's own client of the Agent Runtime."""

import json

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, raw_post

DOCUMENTS = ["Carson City is the capital city of the American state of Nevada.",
             "Washington, D.C. is the capital of the United States.",
             "Capital punishment has existed in the United States since before it was a country."]
QUERY = "What is the capital of the United States?"


@pytest.mark.parametrize("version", [1, 2])
def test_a_cohere_rerank_is_answered_from_bedrocks_rerank(gateway, version):
    body = {"model": "cohere.rerank-v3-5:0", "query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
    reply = raw_post(f"{gateway.url}/v{version}/rerank", json.dumps(body).encode())
    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    assert [r["index"] for r in answer["results"]] == [1, 0], answer  # the emulator scores by shared words
    assert answer["results"][0]["relevance_score"] > answer["results"][1]["relevance_score"]
    assert answer["results"][0]["document"] == {"text": DOCUMENTS[1]}
    assert answer["meta"]["api_version"]["version"] == str(version)
    sent = gateway.last_upstream_request()
    assert sent["path"] == "/rerank"
    assert sent["headers"]["host"] == "bedrock-agent-runtime.us-east-1.amazonaws.com", "the Agent Runtime's host, signed"
    config = sent["body"]["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert config == {"numberOfResults": 2, "modelConfiguration": {
        "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/cohere.rerank-v3-5:0"}}

    without = raw_post(f"{gateway.url}/v{version}/rerank", json.dumps({**body, "return_documents": False}).encode())
    assert all("document" not in r for r in json.loads(without.body)["results"])


def test_rerank_errors_are_cohere_shaped(gateway):
    reply = raw_post(f"{gateway.url}/v2/rerank", json.dumps(
        {"model": "cohere.rerank-v3-5:0", "query": QUERY, "documents": DOCUMENTS, "rank_fields": ["title"]}).encode())
    assert reply.status == 400
    assert json.loads(reply.body) == {"message": "`rank_fields` is not supported: Bedrock's Rerank has no such setting."}
    unknown = raw_post(f"{gateway.url}/v2/rerank", json.dumps({"model": "rerank-english-v3.0", "query": "q", "documents": ["a"]}).encode())
    assert unknown.status == 404 and "message" in json.loads(unknown.body), unknown.body


def agent_runtime(emulator_url):
    return boto3.client("bedrock-agent-runtime", region_name="us-east-1", endpoint_url=emulator_url,
                        aws_access_key_id=DEMO_ACCESS_KEY, aws_secret_access_key=DEMO_SECRET_KEY,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


@pytest.mark.host_independent
def test_the_emulator_speaks_the_agent_runtimes_rerank_to_boto3(emulator_url):
    def rerank(**overrides):
        request = {
            "queries": [{"type": "TEXT", "textQuery": {"text": QUERY}}],
            "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}}} for d in DOCUMENTS],
            "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
                "numberOfResults": 3, "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"}}},
        }
        request.update(overrides)
        return agent_runtime(emulator_url).rerank(**request)

    results = rerank()["results"]
    assert [r["index"] for r in results] == [1, 0, 2]
    assert results[0]["document"]["textDocument"]["text"] == DOCUMENTS[1]
    for overrides, reason in [
        ({"queries": []}, "queries"),
        ({"rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
            "numberOfResults": 9, "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"}}}},
         "numberOfResults"),
        ({"rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
            "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/us.meta.llama3-2-1b-instruct-v1:0"}}}},
         "not a reranking model"),
    ]:
        with pytest.raises((botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError)) as raised:
            rerank(**overrides)
        assert reason in str(raised.value), raised.value


def test_the_docs_rerank_command(gateway):
    from test_anthropic_messages import docs_shell_block, run_readme_command
    (command,) = docs_shell_block("### Rerank")
    answer = json.loads(run_readme_command(command, gateway))
    assert [(r["index"], r["document"]["text"]) for r in answer["results"]] == [(1, "Washington, D.C. is the capital of the United States.")]

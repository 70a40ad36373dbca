"""A list of inputs for Titan Text Embeddings v2, which embeds one text per InvokeModel: the gateway
makes one signed call per input, puts the vectors back in input order, and answers one error when
any input fails. The requests are shaped as LangChain's OpenAIEmbeddings sends them (a list of
strings through the openai SDK, base64 on the wire, which the SDK decodes)."""

import json

import openai
import pytest

from conftest import http_get, wait_until
from test_metrics import metric, prometheus

TITAN = "amazon.titan-embed-text-v2:0"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60)


def accepted_calls(gateway) -> int:
    return json.loads(http_get(f"{gateway.emulator_url}/_emulator/bedrock-calls"))["accepted"]


def titan_counts(gateway) -> tuple[float, float]:
    """Requests and input tokens counted for Titan, whichever backend served it, as `embeddings`."""
    values = prometheus(gateway)
    counted = metric(values, "gen_ai_server_request_duration_milliseconds_count", TITAN,
                     gen_ai_operation_name="embeddings", error_type=None)
    return counted, metric(values, "ai_gateway_tokens_total", TITAN, gen_ai_token_type="input")


@pytest.mark.parametrize("count", [1, 2, 50])
def test_a_titan_list_is_one_signed_call_per_input_answered_in_input_order(client, gateway, count):
    texts = [f"chunk {i} of the handbook" + " word" * (i % 7) for i in range(count)]
    calls, (counted, counted_tokens) = accepted_calls(gateway), titan_counts(gateway)
    batch = client.embeddings.create(model=TITAN, input=texts, dimensions=256)
    assert accepted_calls(gateway) - calls == count, "one InvokeModel per input, each signature verified by the emulator"
    assert [item.index for item in batch.data] == list(range(count))
    assert len({tuple(item.embedding) for item in batch.data}) == count, "each input its own vector"
    expected_tokens = sum(len(text.split()) for text in texts)
    assert batch.usage.prompt_tokens == batch.usage.total_tokens == expected_tokens, "the inputs' token counts summed"
    assert batch.model == TITAN
    for i in sorted({0, count // 2, count - 1}):
        single = client.embeddings.create(model=TITAN, input=texts[i], dimensions=256)
        assert max(abs(a - b) for a, b in zip(batch.data[i].embedding, single.data[0].embedding)) < 1e-6, \
            f"input {i}'s vector is in place {i}"
    upstream = gateway.last_upstream_request()
    assert upstream["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert not [name for name in upstream["headers"] if name.startswith("x-ai-eg")], "the gateway's own headers stay home"
    singles = {0, count // 2, count - 1}
    expected = (counted + 1 + len(singles), counted_tokens + expected_tokens + sum(len(texts[i].split()) for i in singles))
    wait_until(lambda: titan_counts(gateway) == expected, "a list counted as one request, with its inputs' tokens", timeout=15)


def test_one_failed_input_fails_the_list_with_one_error_in_openais_format(client):
    texts = ["a fine text", "another fine text", "emulator-fault:throttle", "the last fine text"]
    with pytest.raises(openai.RateLimitError) as raised:
        client.embeddings.create(model=TITAN, input=texts)
    assert raised.value.status_code == 429
    assert raised.value.body["message"].startswith("Input 2 of 4: Bedrock ThrottlingException"), raised.value.body

    with pytest.raises(openai.InternalServerError) as raised:
        client.embeddings.create(model=TITAN, input=["fine", "emulator-fault:internal"])
    assert raised.value.status_code == 500
    assert raised.value.body["message"].startswith("Input 1 of 2: Bedrock InternalServerException"), raised.value.body

    # Bedrock hangs up on one call: no partial list, and the reason is not dressed up as Bedrock's.
    with pytest.raises(openai.APIStatusError) as raised:
        client.embeddings.create(model=TITAN, input=["fine", "emulator-fault:reset", "fine again"])
    assert raised.value.status_code in (502, 503)
    assert raised.value.body["message"].startswith("Input 1 of 3:"), raised.value.body
    assert "Bedrock ThrottlingException" not in raised.value.body["message"]


def test_titan_lists_keep_openais_limits(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=TITAN, input=[f"text {i}" for i in range(97)])
    assert "at most 96 inputs" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=TITAN, input=["a", "b"], dimensions=300)
    assert "[256, 512, 1024]" in raised.value.message
    floats = client.embeddings.create(model=TITAN, input=["a b", "c"], encoding_format="float")
    assert [len(item.embedding) for item in floats.data] == [1024, 1024], "Titan's default size, as floats"


COHERE_V4 = "cohere.embed-v4:0"
NOVA = "amazon.nova-2-multimodal-embeddings-v1:0"


@pytest.mark.parametrize("model,dimensions,calls_per_list", [(COHERE_V4, 512, 1), (NOVA, 384, 3)])
def test_cohere_embed_v4_and_nova_multimodal_embeddings(client, gateway, model, dimensions, calls_per_list):
    """Cohere Embed v4 takes the list in one call (`output_dimension`, vectors by type); Nova embeds
    one input per call, so a list fans out as Titan's do, its token counts read from Bedrock's header."""
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    calls = accepted_calls(gateway)
    batch = client.embeddings.create(model=model, input=texts, dimensions=dimensions)
    assert accepted_calls(gateway) - calls == calls_per_list
    assert [item.index for item in batch.data] == [0, 1, 2]
    assert [len(item.embedding) for item in batch.data] == [dimensions] * 3
    assert batch.usage.prompt_tokens == batch.usage.total_tokens == 6, "2 + 1 + 3 words, as Bedrock counted them"
    assert batch.model == model
    sent = gateway.last_upstream_request()["body"]
    if model == NOVA:
        assert sent == {"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 384,
            "text": {"truncationMode": "END", "value": sent["singleEmbeddingParams"]["text"]["value"]}}}
    else:
        assert sent == {"texts": texts, "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 512}
    single = client.embeddings.create(model=model, input=texts[1], dimensions=dimensions)
    assert single.data[0].embedding == pytest.approx(batch.data[1].embedding, abs=1e-6), "the same vector, alone or in a list"
    assert single.usage.prompt_tokens == 1

    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=model, input="x", dimensions=100)
    assert "`dimensions` must be one of" in raised.value.body["message"], raised.value.body

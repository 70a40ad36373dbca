"""OpenAI's web search on Bedrock: `web_search_options` on an Amazon Nova model becomes Nova's web
grounding (`systemTool` `nova_grounding`), and the pages the answer cites come back as OpenAI's
`url_citation` annotations, whole and streamed; other models are refused rather than answered
without a search. The emulator grounds only Nova models and cites a page for a grounded answer."""

import openai
import pytest

from conftest import ROOT, launch_gateway, stop_process

NOVA = "us.amazon.nova-premier-v1:0"
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
NOVA_ROUTE = f"""apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata:
  name: nova
spec:
  parentRefs:
  - name: ai-gateway
    kind: Gateway
    group: gateway.networking.k8s.io
  rules:
  - matches:
    - headers:
      - {{ type: Exact, name: x-ai-eg-model, value: {NOVA} }}
    backendRefs:
    - name: bedrock-us-east-1
"""


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    route = workdir / "nova-route.yaml"
    route.write_text(NOVA_ROUTE)
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-web-search", KEYS,
                                      config=[ROOT / "examples/emulator.yaml", route])
    try:
        yield gateway
    finally:
        stop_process(process)


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_a_nova_answer_grounded_on_the_web_cites_its_page(gateway, client):
    completion = client.chat.completions.create(
        model=NOVA, messages=[{"role": "user", "content": "what happened today?"}], web_search_options={})
    sent = gateway.last_upstream_request()["body"]
    assert sent["toolConfig"]["tools"] == [{"systemTool": {"name": "nova_grounding"}}], sent
    message = completion.choices[0].message
    assert message.content == "You said: what happened today?"
    assert len(message.annotations) == 1, message.annotations
    citation = message.annotations[0]
    assert citation.type == "url_citation"
    assert citation.url_citation.url == "https://news.example.com/emulator"
    assert citation.url_citation.title == "Emulator News"
    assert (citation.url_citation.start_index, citation.url_citation.end_index) == (0, len(message.content))


def test_a_streamed_grounded_answer_carries_its_citation_in_a_delta(client):
    stream = client.chat.completions.create(
        model=NOVA, messages=[{"role": "user", "content": "and tomorrow?"}], web_search_options={}, stream=True)
    content, annotations = "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta.to_dict()
        content += delta.get("content") or ""
        annotations += delta.get("annotations") or []
    assert content == "You said: and tomorrow?"
    assert annotations == [{"type": "url_citation", "url_citation": {
        "start_index": 0, "end_index": len(content), "url": "https://news.example.com/emulator",
        "title": "Emulator News"}}]


def test_without_web_search_nothing_is_grounded_or_annotated(gateway, client):
    completion = client.chat.completions.create(model=NOVA, messages=[{"role": "user", "content": "hi"}])
    assert "toolConfig" not in gateway.last_upstream_request()["body"]
    assert not completion.choices[0].message.annotations


def test_web_search_on_a_model_that_cannot_search_is_refused(gateway, client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=LLAMA, messages=[{"role": "user", "content": "news?"}], web_search_options={})
    assert "only Amazon Nova models search the web" in refused.value.body["message"], refused.value.body


def test_the_responses_apis_web_search_on_nova_is_grounding_with_annotations(gateway, client):
    """Codex and the Agents SDK ask for OpenAI's hosted `web_search`: on Nova it is the model's own web
    grounding (not left out), and the cited page comes back as the output text's annotation."""
    response = client.responses.create(model=NOVA, input="what happened today?", tools=[{"type": "web_search"}])
    sent = gateway.last_upstream_request()["body"]
    assert {"systemTool": {"name": "nova_grounding"}} in sent["toolConfig"]["tools"], sent
    text = response.output[0].content[0]
    assert text.text == "You said: what happened today?"
    assert [(a.type, a.url, a.title, a.start_index, a.end_index) for a in text.annotations] == [
        ("url_citation", "https://news.example.com/emulator", "Emulator News", 0, len(text.text))]

    with client.responses.stream(model=NOVA, input="and tomorrow?", tools=[{"type": "web_search"}]) as stream:
        added = [event.annotation for event in stream if event.type == "response.output_text.annotation.added"]
        final = stream.get_final_response()
    streamed = final.output[0].content[0]
    assert streamed.text == "You said: and tomorrow?"
    assert [a["url"] if isinstance(a, dict) else a.url for a in added] == ["https://news.example.com/emulator"]
    assert [(a.url, a.start_index, a.end_index) for a in streamed.annotations] == [
        ("https://news.example.com/emulator", 0, len(streamed.text))]

    # Elsewhere the hosted tool is left out as before, and named in the response header.
    raw = client.responses.with_raw_response.create(model=LLAMA, input="hi", tools=[{"type": "web_search"}])
    assert raw.headers.get("x-ai-gateway-dropped-tools") == "web_search"
    assert "toolConfig" not in gateway.last_upstream_request()["body"]

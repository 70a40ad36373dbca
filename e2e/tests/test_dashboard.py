"""The Grafana dashboard in examples/grafana: every query names metrics and labels the gateway
exports, checked against a gateway with callers and prices after traffic of every kind the
dashboard shows (tokens, costs, streams, embeddings, a throttled request)."""

import json
import re

import openai
import pytest

from conftest import ROOT, gateway_with_budget_service, http_get, wait_until

DASHBOARD = ROOT / "examples/grafana/ai-gateway-dashboard.json"
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    found += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    assert len(found) >= 10
    return found


def metric_names(expr: str) -> set[str]:
    """The metrics a query selects (`name{...}`, `name[...]`), or whose label values it lists."""
    selected = set(re.findall(r"\b([a-z_]+)\s*[{\[]", expr))
    listed = set(re.findall(r"label_values\(\s*([a-z_]+)\s*,", expr))
    return selected | listed


def label_names(expr: str) -> set[str]:
    """Labels a query groups by, selects on, or reads (label_values)."""
    grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
    selected = set(re.findall(r"([a-z_]+)\s*(?:=~|!=|=)\s*\"", expr))
    read = set(re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr))
    return (grouped | selected | read) - {"le"}


@pytest.fixture(scope="module")
def exported(workdir, emulator_url):
    """`metric name -> label names` from the gateway's /stats/prometheus after the traffic."""
    config = [ROOT / "examples/emulator.yaml", ROOT / "examples/callers.yaml"]
    with gateway_with_budget_service(workdir, emulator_url, "envoy-dashboard", KEYS, config) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-demo-alice", max_retries=0, timeout=30)
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hello"}])
        list(client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "stream"}], stream=True))
        client.embeddings.create(model="amazon.titan-embed-text-v2:0", input="embed me")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"x-emulator-fault": "throttle"})

        def scrape() -> dict:
            labels: dict = {}
            for line in http_get(f"{gateway.admin_url}/stats/prometheus").decode().splitlines():
                match = re.match(r"((?:gen_ai|ai_gateway)_[a-z_]+)\{([^}]*)\} ", line)
                if match:
                    labels.setdefault(match.group(1), set()).update(re.findall(r'([a-z_]+)="', match.group(2)))
            return labels

        found = {}

        def flushed():
            found.update(scrape())
            return "gen_ai_server_time_per_output_token_milliseconds_bucket" in found \
                and any(line.endswith(" 1") for line in http_get(f"{gateway.admin_url}/stats/prometheus").decode().splitlines()
                        if line.startswith("gen_ai_server_request_duration_milliseconds_count{") and 'error_type="429"' in line)

        wait_until(flushed, "the histograms to be flushed", timeout=15)
        yield found


@pytest.mark.parametrize("expr", queries())
def test_each_query_names_metrics_and_labels_the_gateway_exports(exported, expr):
    metrics = metric_names(expr)
    assert metrics, f"no gateway metric in {expr}"
    for metric in metrics:
        assert metric in exported, f"{metric} is not exported (the gateway exports {sorted(exported)})"
        missing = label_names(expr) - exported[metric]
        assert not missing, f"{metric} has no label {missing} (it has {sorted(exported[metric])})"

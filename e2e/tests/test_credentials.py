"""Temporary AWS credentials fetched by the filter: EKS Pod Identity, IRSA (STS) and IMDSv2,
through the real Envoy against the emulator playing each credential endpoint.

Each scenario gets its own emulator and Envoy, so shared-data caches and counters start empty.
"""

import concurrent.futures
import json
import os
import time
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from conftest import HOST, ROOT, http_get, launch_emulator, launch_gateway, stop_process, wait_until

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/AIGatewayBedrockRole"


def chain_environment(method: str, auth_dir: Path) -> dict:
    """What a pod's environment holds for each method; the AWS default chain of examples/emulator.yaml
    picks its link from it at start-up, as an AWS SDK would."""
    return {
        "pod-identity": {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
                         "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(auth_dir / "token")},
        "irsa": {"AWS_ROLE_ARN": ROLE_ARN, "AWS_WEB_IDENTITY_TOKEN_FILE": str(auth_dir / "token")},
        "imds": {},
    }[method]

STATS_KEY = {"pod-identity": "pod_identity", "irsa": "sts", "imds": "imds"}


def write_token(auth_dir: Path, token: str):
    """Replaces the token the way kubelet does: a new file moved into place."""
    staging = auth_dir / ".token.new"
    staging.write_text(token)
    os.replace(staging, auth_dir / "token")


class AuthSetup:
    def __init__(self, workdir: Path, method: str, *, lifetime: int = 3600, down: bool = False, log_level: str = "info"):
        self.method = method
        self.auth_dir = workdir / f"auth-{method}-{time.monotonic_ns()}"
        self.auth_dir.mkdir()
        write_token(self.auth_dir, "service-account-token-v1")
        self.emulator, self.emulator_url = launch_emulator(
            workdir, f"emulator-{self.auth_dir.name}",
            "--token-file", str(self.auth_dir / "token"), "--credential-lifetime-secs", str(lifetime),
        )
        if down:
            self.set_endpoints(up=False)
        try:
            self.envoy, self.gateway = launch_gateway(
                workdir, self.emulator_url, f"envoy-{self.auth_dir.name}", chain_environment(method, self.auth_dir),
                auth_dir=self.auth_dir, log_level=log_level,
            )
        except Exception:
            stop_process(self.emulator)
            raise
        self.openai = openai.OpenAI(base_url=f"{self.gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
        self.anthropic = anthropic.Anthropic(base_url=f"{self.gateway.url}/anthropic", api_key="unused", max_retries=0, timeout=30)

    def stats(self) -> dict:
        return json.loads(http_get(f"{self.emulator_url}/_emulator/credential-stats"))

    def calls(self) -> int:
        return self.stats()[STATS_KEY[self.method]]

    def set_endpoints(self, up: bool):
        state = "up" if up else "down"
        request = urllib.request.Request(f"{self.emulator_url}/_emulator/credential-endpoints/{state}", method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    def access_key_used(self) -> str:
        authorization = self.gateway.last_upstream_request()["headers"]["authorization"]
        return authorization.split("Credential=")[1].split("/")[0]

    def ask(self, text: str) -> str:
        return self.openai.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": text}]).choices[0].message.content

    def close(self):
        stop_process(self.envoy)
        stop_process(self.emulator)


@pytest.fixture
def auth(workdir):
    setups = []

    def make(method, **kwargs):
        setup = AuthSetup(workdir, method, **kwargs)
        setups.append(setup)
        return setup

    yield make
    for setup in setups:
        setup.close()


@pytest.mark.parametrize("method", ["pod-identity", "irsa", "imds"])
def test_openai_and_anthropic_requests_are_signed_with_fetched_credentials(auth, method):
    setup = auth(method)
    assert setup.ask(f"hello over {method}") == f"You said: hello over {method}"
    upstream = setup.gateway.last_upstream_request()
    assert setup.access_key_used().startswith("ASIAEMULATOR"), "temporary credentials, not static keys"
    assert upstream["headers"]["x-amz-security-token"].startswith("EmulatorSessionToken")
    message = setup.anthropic.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "and Claude"}])
    assert message.content[0].text == "You said: and Claude"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in setup.openai.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "streamed too"}], stream=True)
        if c.choices
    )
    assert streamed == "You said: streamed too"
    assert setup.calls() >= 1 and setup.stats()["rejected_tokens"] == 0


def test_the_emulators_last_request_stays_bedrocks_when_credentials_are_fetched(auth):
    # The gateway refreshes credentials in the background: a fetch landing between a test's
    # request and its look at what Bedrock received must not take that request's place.
    setup = auth("pod-identity")
    assert setup.ask("to bedrock") == "You said: to bedrock"
    bedrock_request = setup.gateway.last_upstream_request()
    fetch = urllib.request.Request(f"{setup.emulator_url}/v1/credentials",
                                   headers={"Authorization": (setup.auth_dir / "token").read_text()})
    calls_before = setup.calls()
    urllib.request.urlopen(fetch, timeout=5).read()
    assert setup.calls() == calls_before + 1, "the fetch reached the credential endpoint"
    assert setup.gateway.last_upstream_request() == bedrock_request


def test_one_fetch_serves_every_worker_without_a_stampede(auth):
    setup = auth("pod-identity")
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        replies = list(pool.map(lambda i: setup.ask(f"burst {i}"), range(120)))
    assert replies == [f"You said: burst {i}" for i in range(120)]
    assert setup.calls() == 1, "one credential fetch for all requests and both workers"


@pytest.mark.parametrize("method", ["pod-identity", "irsa"])
def test_credentials_are_refreshed_before_expiry_and_rotated_tokens_are_used(auth, method):
    # Credentials living 903 s enter the 15-minute refresh window after 3 s.
    setup = auth(method, lifetime=903)
    assert setup.ask("before rotation") == "You said: before rotation"
    first_key = setup.access_key_used()
    write_token(setup.auth_dir, "service-account-token-v2-rotated")
    rotated_at = setup.stats()
    deadline = time.monotonic() + 20
    seen_keys = {first_key}
    failures = []
    while time.monotonic() < deadline:
        try:
            assert setup.ask("during refresh") == "You said: during refresh"
        except Exception as error:  # counted, and the test fails below
            failures.append(repr(error))
        seen_keys.add(setup.access_key_used())
        if len(seen_keys) >= 3 and setup.stats()[STATS_KEY[method]] > rotated_at[STATS_KEY[method]] + 1:
            break
        time.sleep(0.3)
    assert failures == [], "no request fails while credentials are refreshed"
    assert len(seen_keys) >= 3, "credentials were refreshed more than once during the run"
    stats = setup.stats()
    assert stats["rejected_tokens"] == 0, "after the rotation Envoy sent the new token, never the old one"


def test_endpoint_down_gives_a_clear_503_then_recovers(auth):
    setup = auth("pod-identity", down=True)
    with pytest.raises(openai.InternalServerError) as raised:
        setup.ask("no credentials yet")
    assert raised.value.status_code == 503
    message = raised.value.body["message"]
    assert message == "AWS credentials are not available: the EKS Pod Identity endpoint answered HTTP 500"
    with pytest.raises(anthropic.APIStatusError) as raised_anthropic:
        setup.anthropic.messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert raised_anthropic.value.status_code == 503
    assert raised_anthropic.value.body["error"]["type"] == "overloaded_error"

    setup.set_endpoints(up=True)
    answers = []

    def recovered():
        try:
            answers.append(setup.ask("back again"))
            return True
        except openai.InternalServerError:
            return False

    wait_until(recovered, "recovery after the credential endpoint returns", timeout=40)
    assert answers[-1] == "You said: back again"


def test_secrets_never_reach_envoys_logs_even_at_trace_level(auth):
    setup = auth("pod-identity", log_level="trace")
    assert setup.ask("log me") == "You said: log me"
    setup.anthropic.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "log me too"}])
    upstream = setup.gateway.last_upstream_request()
    session_token = upstream["headers"]["x-amz-security-token"]
    signature = upstream["headers"]["authorization"].split("Signature=")[1]
    time.sleep(0.5)
    log = setup.gateway.envoy_log()
    filter_lines = "proxy_on_request_headers" if HOST == "wasm" else "][dynamic_modules]"
    assert "][trace][" in log and filter_lines in log, \
        "the log really is at trace level, the filter's own lines included"
    for secret in ("service-account-token-v1", session_token, signature, "emulatorSecret"):
        leaks = [line.replace(secret, "<SECRET>")[:400] for line in log.splitlines() if secret in line]
        assert not leaks, f"a secret reached Envoy's log ({secret[:8]}...), in these lines:\n" + "\n".join(leaks[:5])

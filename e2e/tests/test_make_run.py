"""`make run AUTH=<method>` as a user runs it: the documented ports, OpenAI and Anthropic requests
answered, and SIGTERM stopping both the emulator and Envoy."""

import signal
import socket
import subprocess

import anthropic
import openai
import pytest

from conftest import ENVOY, EMULATOR, ROOT, http_get, wait_until

PORTS = (1975, 4566, 9901)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("auth", ["static", "pod-identity", "irsa", "imds"])
def test_make_run_serves_each_auth_method(auth):
    busy = [p for p in PORTS if port_in_use(p)]
    assert not busy, f"ports {busy} are taken (is `make run` already running?); this test needs them"
    process = subprocess.Popen(
        ["bash", "e2e/run-local.sh"], cwd=ROOT, start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "ENVOY": str(ENVOY), "EMULATOR": str(EMULATOR), "AUTH": auth},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: http_get("http://127.0.0.1:9901/ready") == b"LIVE\n", f"make run AUTH={auth}")
        client = openai.OpenAI(base_url="http://127.0.0.1:1975/v1", api_key="unused", max_retries=2, timeout=30)
        reply = client.chat.completions.create(
            model="us.meta.llama3-2-1b-instruct-v1:0", messages=[{"role": "user", "content": f"Hi from {auth}."}]
        )
        assert reply.choices[0].message.content == f"You said: Hi from {auth}."
        claude = anthropic.Anthropic(base_url="http://127.0.0.1:1975/anthropic", api_key="unused", max_retries=2, timeout=30)
        message = claude.messages.create(
            model="anthropic.claude-3-5-sonnet-20241022-v2:0", max_tokens=50, messages=[{"role": "user", "content": "Hi Claude."}]
        )
        assert message.content[0].text == "You said: Hi Claude."
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0].decode(errors="replace")
    assert f"AUTH={auth}" in output
    wait_until(lambda: not any(port_in_use(p) for p in PORTS), "both processes to stop after SIGTERM", timeout=10)

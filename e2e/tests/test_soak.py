"""Soak: thousands of mixed good, bad and faulty requests and streams, 32 at a time, through the
real gateway. Every one must get exactly the right answer, and Envoy's memory must stay flat."""

import concurrent.futures
import http.client
import json
import random

from conftest import raw_post

LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
REQUESTS = 3000
WARM_UP = 600
CONCURRENCY = 32


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def data_events(body: bytes) -> list:
    return [line[len("data: "):] for line in body.decode().splitlines() if line.startswith("data: ")]


def one_request(gateway, i: int) -> str | None:
    """Sends request i of a fixed mix; returns None when the answer is right, else what was wrong."""
    kind = i % 10
    text = f"soak {i}"
    chat = {"model": LLAMA, "messages": [{"role": "user", "content": text}]}
    claude = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
    try:
        if kind == 0:
            r = raw_post(gateway.url + "/v1/chat/completions", json.dumps(chat).encode())
            ok = r.status == 200 and r.json()["choices"][0]["message"]["content"] == f"You said: {text}"
        elif kind == 1:
            r = raw_post(gateway.url + "/v1/chat/completions", json.dumps({**chat, "stream": True}).encode())
            events = data_events(r.body)
            content = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
            ok = r.status == 200 and events[-1] == "[DONE]" and content == f"You said: {text}"
        elif kind == 2:
            r = raw_post(gateway.url + "/anthropic/v1/messages", json.dumps(claude).encode())
            ok = r.status == 200 and r.json()["content"][0]["text"] == f"You said: {text}"
        elif kind == 3:
            r = raw_post(gateway.url + "/anthropic/v1/messages", json.dumps({**claude, "stream": True}).encode())
            events = [json.loads(e) for e in data_events(r.body)]
            content = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
            ok = r.status == 200 and events[-1]["type"] == "message_stop" and content == f"You said: {text}"
        elif kind == 4:
            r = raw_post(gateway.url + "/v1/chat/completions", b'{"model": "' + LLAMA.encode() + b'", "messages": [')
            ok = r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
        elif kind == 5:
            r = raw_post(gateway.url + "/anthropic/v1/messages", json.dumps({**claude, "model": f"nope-{i}"}).encode())
            ok = r.status == 404 and r.json()["error"]["type"] == "not_found_error"
        elif kind == 6:
            r = raw_post(gateway.url + "/v1/chat/completions", json.dumps(chat).encode(), headers={"x-emulator-fault": "throttle"})
            ok = r.status == 429 and r.json()["error"]["type"] == "rate_limit_error"
        elif kind == 7:
            r = raw_post(gateway.url + "/v1/chat/completions", json.dumps({**chat, "stream": True}).encode(),
                         headers={"x-emulator-fault": "stream-exception"})
            ok = r.status == 200 and "modelStreamErrorException" in json.loads(data_events(r.body)[-1])["error"]["message"]
        elif kind == 8:
            r = raw_post(gateway.url + "/anthropic/v1/messages", json.dumps({**claude, "stream": True}).encode(),
                         headers={"x-emulator-fault": "corrupt-frame"})
            ok = r.status == 200 and "CRC" in json.loads(data_events(r.body)[-1])["error"]["message"]
        else:
            try:
                raw_post(gateway.url + "/v1/chat/completions", json.dumps({**chat, "stream": True}).encode(),
                         headers={"x-emulator-fault": "reset"}, timeout=10)
                ok = False  # a cut stream must not read as complete
            except http.client.IncompleteRead:
                ok = True
        return None if ok else f"request {i} (kind {kind}): wrong answer"
    except Exception as error:
        return f"request {i} (kind {kind}): {error!r}"


def test_soak_mixed_traffic_all_correct_and_memory_flat(gateway):
    # The warm-up in its order, the rest shuffled in place (shuffling a slice would shuffle a copy).
    rest = list(range(WARM_UP, REQUESTS))
    random.Random(7).shuffle(rest)
    order = list(range(WARM_UP)) + rest
    assert order[WARM_UP:] != sorted(order[WARM_UP:]), "the kinds of request are mixed"
    with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        warm_up_errors = [e for e in pool.map(lambda i: one_request(gateway, i), order[:WARM_UP]) if e]
        rss_after_warm_up = rss_kib(gateway.pid)
        errors = [e for e in pool.map(lambda i: one_request(gateway, i), order[WARM_UP:]) if e]
    rss_at_end = rss_kib(gateway.pid)
    print(f"Envoy RSS: {rss_after_warm_up / 1024:.1f} MiB after {WARM_UP} requests, {rss_at_end / 1024:.1f} MiB after {REQUESTS}")
    assert warm_up_errors + errors == [], (warm_up_errors + errors)[:10]
    assert rss_at_end - rss_after_warm_up < 16 * 1024, "Envoy's memory stays flat"

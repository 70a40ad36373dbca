"""`make bench`: the gateway's cost against plain Envoy, Envoy's native SigV4 filter and LiteLLM.

Every configuration runs on this machine, one after another, against the same emulator answering
instantly (`--skip-sigv4`: the unsigned baselines must be answered like signed traffic). The gateway
process is pinned to core 0; the emulator and the load generator (wrk) share core 1; the stream
client runs on core 0 (see `stream_samples`).

The CPU column comes from a second pass (see `interleaved_cpu`): B, C, W and the gateway run at
once, and short windows of each are measured in turn.

Writes bench/results.json, bench/chart.svg and the table between the bench markers in README.md.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
ENVOY = ROOT / ".venv/bin/envoy"
EMULATOR = ROOT / "target/release/bedrock-emulator"
LITELLM = Path(os.environ.get("LITELLM", "/tmp/litellm-venv/bin/litellm"))
LITELLM_KEY = "sk-bench-only-0123456789abcdef0123456789abcdef"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
EMULATOR_PORT, GATEWAY_PORT, ADMIN_PORT = 14566, 11975, 19901
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
# BENCH_ONLY=D measures just this gateway (for before/after comparisons); nothing is written.
# With BENCH_WASMS=old.wasm,new.wasm it runs one Envoy per build and measures them in turn, in
# windows, BENCH_CPU_CYCLES times, so that a slow spell of the machine does not fall on one build only.
ONLY = os.environ.get("BENCH_ONLY")
WASM = "target/wasm32-wasip1/release/bedrock_gateway_filter.wasm"
NOOP_WASM = ROOT / "target/wasm32-wasip1/release/noop_filter.wasm"
# The same gateway as the native dynamic module (N, O), and its do-nothing floor (M).
DYNAMIC_MODULE = ROOT / "target/dynamic-module/libbedrock_gateway.so"
NOOP_MODULE = ROOT / "target/release/libnoop_module.so"
COMPARED_WASMS = [w for w in os.environ.get("BENCH_WASMS", WASM).split(",") if w]
# The CPU column: B, C, W, D and E all run at once (each idle while another is measured), and are
# measured in turn, in windows of CPU_WINDOW_SECONDS, CPU_CYCLES times; the table shows the median.
# This machine's speed drifts by half over minutes: short windows in turn let a slow spell fall on
# every configuration alike, which measuring each for minutes one after another did not.
CPU_CYCLES = int(os.environ.get("BENCH_CPU_CYCLES", "8"))
CPU_WINDOW_SECONDS = 4
# Streams: deltas paced this far apart by the emulator; the first streams on a connection are not counted.
STREAM_DELAY_MS = "2"
WARM_UP_STREAMS = 3
# TTFT percentiles pool STREAM_ROUNDS blocks of STREAMS_PER_BLOCK streams per path (see
# `interleaved_streams`); the Envoys streamed through listen at this offset from the usual ports.
STREAM_ROUNDS, STREAMS_PER_BLOCK = 4, 50
STREAM_PORT_OFFSET = 20
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def wait_for(url: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def pinned(core: int, args: list) -> list:
    return ["taskset", "-c", str(core), *map(str, args)]


def start(args, log: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT)


def stop(process: subprocess.Popen, timeout: float = 15):
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pids: list) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICK


def rss_mb(pids: list, field: str = "VmHWM") -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total / 1024


def descendants(pid: int) -> list:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [pid]
    for child in children:
        found += descendants(int(child))
    return found


UNITS = {"us": 1, "ms": 1000, "s": 1_000_000}


def parse_latency(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def wrk(url: str, body: bytes, headers: dict, connections: int, seconds: int) -> dict:
    script = OUT / "request.lua"
    header_lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    body_file = OUT / "body.json"
    body_file.write_bytes(body)
    script.write_text(f'wrk.method = "POST"\nlocal f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n{header_lines}')
    output = subprocess.run(
        pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]),
        capture_output=True, text=True, check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise RuntimeError(f"{non_2xx.group(1)} failed responses from {url}:\n{output}")
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_us": parse_latency(re.search(r"^\s+50%\s+(\S+)\s*$", output, re.M).group(1)),
        "p99_us": parse_latency(re.search(r"^\s+99%\s+(\S+)\s*$", output, re.M).group(1)),
    }


def openai_body(filler_bytes: int = 0) -> bytes:
    messages = [{"role": "user", "content": "Hi."}]
    if filler_bytes:
        messages = [{"role": "user", "content": "x " * (filler_bytes // 2)}, {"role": "assistant", "content": "ok"}] + messages
    return json.dumps({"model": LLAMA, "messages": messages}).encode()


def converse_body(filler_bytes: int = 0) -> bytes:
    messages = [{"role": "user", "content": [{"text": "Hi."}]}]
    if filler_bytes:
        messages = [{"role": "user", "content": [{"text": "x " * (filler_bytes // 2)}]},
                    {"role": "assistant", "content": [{"text": "ok"}]}] + messages
    return json.dumps({"messages": messages}).encode()


# Streams: the same prompt through the gateway (OpenAI) and straight to ConverseStream.
OPENAI_STREAM_BODY = json.dumps({"model": LLAMA, "stream": True, "messages": [{"role": "user", "content": "w " * 126}]}).encode()
CONVERSE_STREAM_BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "w " * 126}]}]}).encode()
ANTHROPIC_BODY = json.dumps({"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi."}]}).encode()
CONVERSE_PATH = "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"


def proxy_config(signing: bool) -> str:
    signer = """
          - name: envoy.filters.http.aws_request_signing
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning
              service_name: bedrock
              region: us-east-1
              host_rewrite: bedrock-runtime.us-east-1.amazonaws.com
              use_unsigned_payload: false""" if signing else ""
    return f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ADMIN_PORT} }} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {GATEWAY_PORT} }} }}
    per_connection_buffer_limit_bytes: 33554432
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: emulator }} }} ] }} ]
          http_filters:{signer}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: emulator
    type: STATIC
    per_connection_buffer_limit_bytes: 33554432
    load_assignment:
      cluster_name: emulator
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {EMULATOR_PORT} }} }} }} }} ] }} ]
"""


def noop_wasm_filter(name: str, indent: str) -> str:
    return f"""
- name: envoy.filters.http.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: {name}
      allow_on_headers_stop_iteration: true
      vm_config: {{ vm_id: noop, runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: {NOOP_WASM} }} }} }}""".replace("\n", "\n" + indent)


def noop_module_filter(name: str, indent: str) -> str:
    return f"""
- name: envoy.filters.http.dynamic_modules
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
    dynamic_module_config: {{ name: noop_module, module: {{ local: {{ filename: "{NOOP_MODULE}" }} }} }}
    filter_name: {name}""".replace("\n", "\n" + indent)


def floor_config(noop_filter=noop_wasm_filter) -> str:
    """The plain proxy with a do-nothing filter where each of the gateway's stages sits: one
    downstream, one upstream on the cluster (configuration W with wasm filters, M with dynamic modules)."""
    upstream_filters = f"""
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http_protocol_options: {{}} }}
        http_filters:{noop_filter("noop_backend", "        ")}
        - name: envoy.filters.http.upstream_codec
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec
"""
    text = proxy_config(False).replace("http_filters:", "http_filters:" + noop_filter("noop_routing", "          "), 1)
    return text.replace("    load_assignment:", upstream_filters.lstrip("\n") + "    load_assignment:")


def gateway_config(wasm: str = WASM, module: Path | None = None) -> str:
    """The configuration `make run` serves, rendered from examples/emulator.yaml (static keys from the
    environment, so no credential service is rendered), on the benchmark's ports; with `module`, the
    native dynamic module in place of the .wasm."""
    host = ["--dynamic-module", str(module)] if module else ["--wasm", wasm]
    rendered = subprocess.run([str(ROOT / "target/debug/ai-gateway-render"), str(ROOT / "examples/emulator.yaml"),
                               "--credential-chain", "none", *host],
                              capture_output=True, text=True, check=True)
    text = rendered.stdout
    for old, new in (("port_value: 1975", GATEWAY_PORT), ("port_value: 9901", ADMIN_PORT), ("port_value: 4566", EMULATOR_PORT)):
        text = text.replace(old, f"port_value: {new}")
    # Per-request access log lines would measure disk writes, not the gateway: drop that block.
    lines, kept, skipping = text.splitlines(), [], False
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() == "access_log:":
            skipping = True
            if kept and kept[-1].strip().startswith("# One line per request"):
                kept.pop()
            continue
        if skipping and (indent > 10 or line.lstrip().startswith("- ")) and line.strip():
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept) + "\n"


def run_envoy(name: str, config: str, offset: int = 0) -> tuple:
    """Starts Envoy with `config`; a non-zero `offset` moves its listener and admin ports (and its
    shared-memory id) by that much, so that several can run at once."""
    if offset:
        config = config.replace(f"port_value: {GATEWAY_PORT}", f"port_value: {GATEWAY_PORT + offset}")
        config = config.replace(f"port_value: {ADMIN_PORT}", f"port_value: {ADMIN_PORT + offset}")
    path = OUT / f"{name}.yaml"
    path.write_text(config)
    command = [ENVOY, "-c", path, "--concurrency", "1", "--log-level", "warn", "--base-id", str(77 + offset)]
    process = start(pinned(0, command), OUT / f"{name}.log", env=KEYS)
    wait_for(f"http://127.0.0.1:{ADMIN_PORT + offset}/ready")
    return process, [process.pid]


def run_litellm() -> tuple:
    config = OUT / "litellm.yaml"
    config.write_text(f"""model_list:
- model_name: {LLAMA}
  litellm_params:
    model: bedrock/converse/{LLAMA}
    aws_access_key_id: {KEYS['AWS_ACCESS_KEY_ID']}
    aws_secret_access_key: {KEYS['AWS_SECRET_ACCESS_KEY']}
    aws_region_name: us-east-1
    aws_bedrock_runtime_endpoint: http://127.0.0.1:{EMULATOR_PORT}
""")
    process = start(pinned(0, [LITELLM, "--config", config, "--port", str(GATEWAY_PORT), "--num_workers", "1"]), OUT / "litellm.log",
                    env={"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_MASTER_KEY": LITELLM_KEY})
    wait_for(f"http://127.0.0.1:{GATEWAY_PORT}/health/liveliness", timeout=180)
    return process, descendants(process.pid)


def measure(name: str, description: str, pids: list, path: str, body: bytes, headers: dict) -> dict:
    url = f"http://127.0.0.1:{GATEWAY_PORT if pids else EMULATOR_PORT}{path}"
    # Warm up: connections, caches, and each worker's first-request work (metric ids, signing keys).
    wrk(url, body, headers, 64, 3)
    single = wrk(url, body, headers, 1, DURATION)
    cpu_before = cpu_seconds(pids) if pids else 0
    loaded = wrk(url, body, headers, 64, DURATION)
    cpu = (cpu_seconds(pids) - cpu_before) if pids else 0
    result = {
        "name": name,
        "description": description,
        "rps": round(loaded["rps"]),
        "p50_us": round(loaded["p50_us"]),
        "p99_us": round(loaded["p99_us"]),
        "c1_p50_us": round(single["p50_us"]),
        "c1_p99_us": round(single["p99_us"]),
        "cpu_us_per_req": round(cpu * 1_000_000 / loaded["requests"], 1) if pids else None,
        "rss_mb": round(rss_mb(pids), 1) if pids else None,
    }
    print(json.dumps(result), flush=True)
    return result


BODY_SIZES = (("1 KiB", 1024), ("100 KiB", 100 * 1024), ("1 MiB", 1024 * 1024))


def by_body_size(pids: list, path: str, make_body, headers: dict) -> dict:
    """For each of BODY_SIZES: the wrk run of that body size (c=16) and the CPU per request it took."""
    measured = {}
    for size, filler in BODY_SIZES:
        before = cpu_seconds(pids)
        run = wrk(f"http://127.0.0.1:{GATEWAY_PORT}{path}", make_body(filler), headers, 16, max(1, DURATION // 2))
        measured[size] = (run, round((cpu_seconds(pids) - before) * 1e6 / run["requests"], 1))
    return measured


def cpu_per_request(pids: list, url: str, body: bytes, headers: dict, seconds: int) -> float:
    before = cpu_seconds(pids)
    loaded = wrk(url, body, headers, 64, seconds)
    return round((cpu_seconds(pids) - before) * 1_000_000 / loaded["requests"], 1)


def stream_request(path: str, body: bytes, delay_ms: str) -> bytes:
    """A raw HTTP/1.1 request for a stream whose deltas the emulator paces `delay_ms` apart."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            + b"x-emulator-delay-ms: " + delay_ms.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def stream_samples(port: int, path: str, body: bytes, chunk_marker: bytes, streams: int) -> tuple:
    """Times to the first content delta, and the gaps between deltas (µs), over `streams` streams
    sent one after another on one keep-alive connection, as a client library would."""
    request = stream_request(path, body, STREAM_DELAY_MS)
    cores = os.sched_getaffinity(0)
    # The client shares the gateway's core, so that every path (direct, plain Envoy, gateway)
    # crosses to the emulator's core and back exactly once. On this VM waking an idle core costs
    # 100s of µs; with the client on the emulator's core instead, the Envoy paths would pay two such
    # wake-ups more than the direct one, which measures the VM rather than the proxy.
    os.sched_setaffinity(0, {0})
    try:
        return stream_samples_on_this_core(port, request, chunk_marker, streams)
    finally:
        os.sched_setaffinity(0, cores)


def stream_samples_on_this_core(port: int, request: bytes, chunk_marker: bytes, streams: int) -> tuple:
    firsts, gaps = [], []
    with socket.create_connection(("127.0.0.1", port)) as s:
        # As HTTP client libraries do: without it, Nagle and delayed ACKs add 40 ms stalls.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(streams + WARM_UP_STREAMS):
            s.sendall(request)
            started = time.perf_counter()
            seen, stamps, buffer = 0, [], b""
            # Every response here is chunked: it ends with the last-chunk marker.
            while not buffer.endswith(b"\r\n0\r\n\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError(f"connection closed mid-stream: {buffer[:300]!r}")
                now = time.perf_counter()
                buffer += chunk
                count = buffer.count(chunk_marker)
                stamps += [now] * (count - seen)
                seen = count
            assert buffer.startswith(b"HTTP/1.1 200") and stamps, buffer[:300]
            if index < WARM_UP_STREAMS:
                continue
            firsts.append((stamps[0] - started) * 1e6)
            gaps += [(b - a) * 1e6 for a, b in zip(stamps, stamps[1:])]
    return firsts, gaps


def interleaved_streams(json_headers: dict) -> dict:
    """TTFT and gaps of the four stream paths: the emulator directly, plain Envoy (B), the gateway as
    the .wasm (D) and as the dynamic module (N), the Envoys running at once. STREAM_ROUNDS rounds each measure a block of
    STREAMS_PER_BLOCK streams per path in turn, so that a slow spell of the machine falls on every
    path alike (as the CPU windows do); the figures pool every block's streams."""
    converse_stream_path = CONVERSE_PATH.replace("converse", "converse-stream")
    paths = {
        "direct": (None, converse_stream_path, CONVERSE_STREAM_BODY, b"contentBlockDelta"),
        "plain_envoy": ("B", converse_stream_path, CONVERSE_STREAM_BODY, b"contentBlockDelta"),
        "gateway": ("D", "/v1/chat/completions", OPENAI_STREAM_BODY, b'{"content":'),
        "module": ("N", "/v1/chat/completions", OPENAI_STREAM_BODY, b'{"content":'),
    }
    envoys = {"B": proxy_config(False), "D": gateway_config(), "N": gateway_config(module=DYNAMIC_MODULE)}
    samples = {name: ([], []) for name in paths}
    with envoys_at_once(envoys, STREAM_PORT_OFFSET, "streams") as running:
        # V8 runs the filter from its baseline compiler until the code is hot: warm both up alike.
        wrk(f"http://127.0.0.1:{running['B'][0]}{CONVERSE_PATH}", converse_body(), json_headers, 64, 3)
        wrk(f"http://127.0.0.1:{running['D'][0]}/v1/chat/completions", openai_body(), json_headers, 64, 3)
        wrk(f"http://127.0.0.1:{running['N'][0]}/v1/chat/completions", openai_body(), json_headers, 64, 3)
        for _ in range(STREAM_ROUNDS):
            for name, (envoy, path, body, marker) in paths.items():
                port = EMULATOR_PORT if envoy is None else running[envoy][0]
                firsts, gaps = stream_samples(port, path, body, marker, STREAMS_PER_BLOCK)
                samples[name][0].extend(firsts)
                samples[name][1].extend(gaps)
    figures = {}
    for name, (firsts, gaps) in samples.items():
        firsts.sort()
        figures[name] = {
            "streams": len(firsts),
            "ttft_p50_us": statistics.median(firsts),
            "ttft_p99_us": firsts[int(len(firsts) * 0.99) - 1],
            "gap_mean_us": statistics.mean(gaps),
            "deltas": len(gaps) // len(firsts) + 1,
        }
    return figures


def added(through: dict, baseline: dict) -> dict:
    return {
        "ttft_p50_us": round(through["ttft_p50_us"] - baseline["ttft_p50_us"]),
        "ttft_p99_us": round(through["ttft_p99_us"] - baseline["ttft_p99_us"]),
        "gap_us": round(through["gap_mean_us"] - baseline["gap_mean_us"], 1),
    }


def allocated_mb() -> float:
    """Bytes Envoy's allocator (tcmalloc) has handed out and not had back, from the admin
    interface: Envoy's own and the dynamic module's heap (the wasm VM's memory is not in it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/memory", timeout=10) as response:
        return int(json.loads(response.read())["allocated"]) / 1e6


def first_100_streams(pids: list, path: str, body: bytes) -> dict:
    """What an Envoy gains holding its first 100 open streams (each waiting for its next delta):
    RSS, and heap allocated. Only the first hundred: once streams have come and gone, the allocator
    reuses what they left, and RSS grew by about nothing (0.02-0.2 MB) for a second hundred."""
    idle_rss, idle_allocated = rss_mb(pids, "VmRSS"), allocated_mb()
    sockets = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", GATEWAY_PORT))
        s.sendall(stream_request(path, body, "40"))
        sockets.append(s)
    time.sleep(1.0)
    busy_rss, busy_allocated = rss_mb(pids, "VmRSS"), allocated_mb()
    for s in sockets:
        s.close()
    return {"rss_mb": round(busy_rss - idle_rss, 2), "allocated_mb": round(busy_allocated - idle_allocated, 2)}


def stream_memory() -> dict:
    """Memory for 100 open streams in a fresh Envoy of each kind. The gateway's own share is its
    figure less plain Envoy's (B), which holds the same 100 connections and streams: heap allocated
    for the dynamic module (whose allocations are Envoy's tcmalloc's), RSS for the .wasm (whose VM
    memory is not)."""
    converse_stream_path = CONVERSE_PATH.replace("converse", "converse-stream")
    kinds = [("B", proxy_config(False), converse_stream_path, CONVERSE_STREAM_BODY),
             ("D", gateway_config(), "/v1/chat/completions", OPENAI_STREAM_BODY),
             ("N", gateway_config(module=DYNAMIC_MODULE), "/v1/chat/completions", OPENAI_STREAM_BODY)]
    measured = {}
    for name, config, path, body in kinds:
        process, pids = run_envoy(f"{name}-memory", config)
        try:
            # One stream first, so that start-up allocations (the wasm VM's first request) are not counted.
            send_one_stream(path, body)
            measured[name] = first_100_streams(pids, path, body)
        finally:
            stop(process)
    print(json.dumps({"memory_of_100_streams": measured}), flush=True)
    return measured


def send_one_stream(path: str, body: bytes):
    with socket.create_connection(("127.0.0.1", GATEWAY_PORT)) as s:
        s.sendall(stream_request(path, body, "0"))
        s.settimeout(10)
        answer = b""
        while not answer.endswith(b"0\r\n\r\n"):
            piece = s.recv(65536)
            if not piece:
                break
            answer += piece


def targets(results: dict) -> list:
    """Issue 30's speed targets for the native module, each met or not, from this run's figures."""
    windows = {r["name"]: r["cpu_us_per_req_windows"] for r in results["configurations"] if r.get("cpu_us_per_req_windows")}
    if "N" not in windows:
        return []

    def median_difference(a: str, b: str) -> float:
        return statistics.median(x - y for x, y in zip(windows[a], windows[b]))

    cpu = {r["name"]: r["cpu_us_per_req"] for r in results["configurations"]}
    mib = next((b for b in results["body_sizes"] if b["size"] == "1 MiB"), {})
    ttft = results["streaming"].get("module_added_vs_plain_envoy", {}).get("ttft_p50_us")
    checks = [
        ("the module's CPU per request at or below Envoy's C++ signing filter's (N - C <= 0)", median_difference("N", "C"), 0),
        ("its own work above two do-nothing modules (N - M) at most 20 µs", median_difference("N", "M"), 20),
        ("the .wasm's own work above its floor (D - W) at most 50 µs", median_difference("D", "W"), 50),
    ]
    lines = ["", f"Targets (plain Envoy, B, cost {cpu.get('B')} µs of CPU per request in this run: the hour's speed):"]
    for what, value, limit in checks:
        lines.append(f"- {what}: {value:.1f} µs, {'met' if value <= limit else 'not met'}")
    if mib.get("module_cpu_us_per_req") and mib.get("native_cpu_us_per_req"):
        ratio = mib["module_cpu_us_per_req"] / mib["native_cpu_us_per_req"]
        lines.append(f"- 1 MiB bodies at most 1.5 times C's CPU: {ratio:.2f} times, {'met' if ratio <= 1.5 else 'not met'}")
    if ttft is not None:
        lines.append(f"- the module's added time to first token against plain Envoy at most 30 µs (p50): {ttft} µs, {'met' if ttft <= 30 else 'not met'}")
    return lines


def update_readme(results: dict):
    rows = ["| configuration | gateway CPU µs/req | req/s per gateway core | req/s (c=64) | p50 / p99 µs (c=64) | p50 / p99 µs (c=1) | peak RSS MB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["configurations"]:
        cpu = "" if r["cpu_us_per_req"] is None else r["cpu_us_per_req"]
        # What one core would serve if the gateway were all it ran: 10^6 / its CPU per request. wrk's
        # req/s on two cores also measures the emulator's and wrk's share of the other core.
        capacity = "" if not r["cpu_us_per_req"] else round(1e6 / r["cpu_us_per_req"])
        rss = "" if r["rss_mb"] is None else r["rss_mb"]
        rows.append(f"| {r['name']}: {r['description']} | {cpu} | {capacity} | {r['rps']} | {r['p50_us']} / {r['p99_us']} | {r['c1_p50_us']} / {r['c1_p99_us']} | {rss} |")
    windows = {r["name"]: r["cpu_us_per_req_windows"] for r in results["configurations"] if r.get("cpu_us_per_req_windows")}
    if windows:
        # A cycle measures every configuration within half a minute: its D - C compares like with like.
        def per_cycle(a: str, b: str) -> str:
            differences = [round(x - y, 1) for x, y in zip(windows[a], windows[b])]
            return f"{' / '.join(str(v) for v in differences)} µs (median {statistics.median(differences):.1f})"
        rows += ["", f"Gateway CPU is the median of {len(windows['D'])} cycles; each cycle measures {', '.join(windows)} in turn for"
                 f" {CPU_WINDOW_SECONDS} s each, with all their Envoys running: "
                 + "; ".join(f"{name} {' / '.join(str(v) for v in values)}" for name, values in windows.items())
                 + f" µs. D - C per cycle: {per_cycle('D', 'C')}; D - W, the wasm gateway's own work above the do-nothing filters: {per_cycle('D', 'W')}."
                 + (f" N - C, the native gateway (translating and signing) against Envoy's C++ filter (signing only): {per_cycle('N', 'C')};"
                    f" N - M, its own work above two do-nothing dynamic modules: {per_cycle('N', 'M')}." if "N" in windows else "")]
    s = results["streaming"]
    direct, plain = s["added_vs_direct"], s["added_vs_plain_envoy"]
    streams = s.get("gateway", {}).get("streams")
    counted = f", {streams} per path in blocks taken in turn" if streams else ""
    rows += ["", f"Streams of {s['deltas']} deltas paced {STREAM_DELAY_MS} ms apart, one after another on a keep-alive connection{counted}: against Bedrock (the emulator) directly, "
             f"the gateway adds {direct['ttft_p50_us']} µs (p50) / {direct['ttft_p99_us']} µs (p99) to time to first token and {direct['gap_us']} µs to the mean gap between chunks; "
             f"against a plain Envoy proxy, {plain['ttft_p50_us']} µs (p50) / {plain['ttft_p99_us']} µs (p99) and {plain['gap_us']} µs. "
             f"100 open streams in a fresh Envoy: plain Envoy allocates {s['memory_of_100_streams']['B']['allocated_mb']} MB for them, "
             f"the .wasm gateway {s['allocated_mb_per_100_streams']} MB more in Envoy's heap (its VM's own memory is not in that figure)."
             + (f" As the dynamic module, against plain Envoy: {s['module_added_vs_plain_envoy']['ttft_p50_us']} µs (p50) / "
                f"{s['module_added_vs_plain_envoy']['ttft_p99_us']} µs (p99) to time to first token, {s['module_added_vs_plain_envoy']['gap_us']} µs per chunk, "
                f"and {s['module_allocated_mb_per_100_streams']} MB more allocated for 100 open streams." if "module_added_vs_plain_envoy" in s else ""), "",
             "| request body | req/s (c=16) | p99 µs | gateway CPU µs/req (.wasm) | gateway CPU µs/req (dynamic module) | native SigV4 CPU µs/req |", "| --- | --- | --- | --- | --- | --- |"]
    for b in results["body_sizes"]:
        rows.append(f"| {b['size']} | {b['rps']} | {b['p99_us']} | {b['cpu_us_per_req']} | {b.get('module_cpu_us_per_req', '')} | {b['native_cpu_us_per_req']} |")
    tools = f"Envoy {results['envoy']}" + "".join(f", {name} {results[key]}" for name, key in (("wrk", "wrk"), ("LiteLLM", "litellm")) if results.get(key))
    tools += f", Python {results['python']}" if results.get("python") else ""
    rows += ["", f"Measured {results['date']} on {results['machine']}; {tools}."]
    rows += targets(results)
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in readme:
        before, rest = readme.split(start, 1)
        after = rest.split(end, 1)[1]
        (ROOT / "README.md").write_text(before + start + "\n" + "\n".join(rows) + "\n" + end + after)


def chart(results: dict):
    """Bars on a log scale: LiteLLM is two orders of magnitude away from the Envoy configurations."""
    import math
    configs = [r for r in results["configurations"] if r["cpu_us_per_req"] is not None]
    width, bar, gap, left, span = 800, 22, 14, 300, 380

    def scaled(value: float, values: list) -> float:
        low, high = math.log10(min(values) / 2), math.log10(max(values))
        return span * (math.log10(value) - low) / (high - low)

    cpus = [r["cpu_us_per_req"] for r in configs]
    rpss = [r["rps"] for r in configs]
    height = 60 + len(configs) * (2 * bar + gap + 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="10" y="20" font-size="14" font-weight="bold">Gateway CPU per request (orange, lower is better) and req/s on one core (green); log scale</text>']
    y = 38
    for r in configs:
        parts.append(f'<text x="10" y="{y + 26}">{r["name"]}: {r["description"]}</text>')
        w = scaled(r["cpu_us_per_req"], cpus)
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="#d95f02"/><text x="{left + w + 6:.1f}" y="{y + 16}">{r["cpu_us_per_req"]} µs</text>')
        y += bar + 2
        w = scaled(r["rps"], rpss)
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="#1b9e77"/><text x="{left + w + 6:.1f}" y="{y + 16}">{r["rps"]} req/s</text>')
        y += bar + gap
    parts.append("</svg>")
    (ROOT / "bench/chart.svg").write_text("\n".join(parts))


@contextlib.contextmanager
def envoys_at_once(envoys: dict, first_offset: int, tag: str):
    """Runs every Envoy of `envoys` (name -> config) at once, each at its own port offset from
    `first_offset` on; yields name -> (listener port, pids) and stops them all afterwards."""
    running = {}
    try:
        for offset, (name, config) in enumerate(envoys.items(), start=first_offset):
            process, pids = run_envoy(f"{name}-{tag}", config, offset)
            running[name] = (GATEWAY_PORT + offset, process, pids)
        yield {name: (port, pids) for name, (port, _, pids) in running.items()}
    finally:
        for _, process, _ in running.values():
            stop(process)


def cpu_in_windows(envoys: dict, targets: list, json_headers: dict) -> dict:
    """Starts every Envoy of `envoys` (name -> config) at once, warms up every target (label, Envoy
    name, path, body), then measures the targets in turn in windows of CPU_WINDOW_SECONDS,
    CPU_CYCLES times. Returns each target's CPU per request, window by window."""
    with envoys_at_once(envoys, 1, "windows") as running:
        urls = {label: f"http://127.0.0.1:{running[envoy][0]}{path}" for label, envoy, path, _ in targets}
        for label, _, _, body in targets:
            wrk(urls[label], body, json_headers, 64, 3)
        windows = {label: [] for label, _, _, _ in targets}
        for _ in range(CPU_CYCLES):
            for label, envoy, _, body in targets:
                windows[label].append(cpu_per_request(running[envoy][1], urls[label], body, json_headers, CPU_WINDOW_SECONDS))
        return windows


def interleaved_cpu(configurations: list, json_headers: dict):
    """The CPU column of B, C, W, D, E, M, N and O: the median of CPU_CYCLES windows each, taken in turn."""
    envoys = {"B": proxy_config(False), "C": proxy_config(True), "W": floor_config(), "D": gateway_config(),
              "M": floor_config(noop_module_filter), "N": gateway_config(module=DYNAMIC_MODULE)}
    targets = [("B", "B", CONVERSE_PATH, converse_body()), ("C", "C", CONVERSE_PATH, converse_body()),
               ("W", "W", CONVERSE_PATH, converse_body()), ("D", "D", "/v1/chat/completions", openai_body()),
               ("E", "D", "/anthropic/v1/messages", ANTHROPIC_BODY),  # E is measured on D's Envoy
               ("M", "M", CONVERSE_PATH, converse_body()), ("N", "N", "/v1/chat/completions", openai_body()),
               ("O", "N", "/anthropic/v1/messages", ANTHROPIC_BODY)]
    windows = cpu_in_windows(envoys, targets, json_headers)
    by_name = {c["name"]: c for c in configurations}
    for name, values in windows.items():
        by_name[name]["cpu_us_per_req_windows"] = values
        by_name[name]["cpu_us_per_req"] = round(statistics.median(values), 1)
    print(json.dumps(windows), flush=True)


def compare_builds(json_headers: dict):
    """BENCH_ONLY=D: CPU per request of D and E for each build in COMPARED_WASMS, all running at once,
    in windows taken in turn, CPU_CYCLES times (as the CPU column of the full run)."""
    envoys = {f"build-{index}": gateway_config(wasm) for index, wasm in enumerate(COMPARED_WASMS, start=1)}
    targets = []
    for (envoy, _), wasm in zip(envoys.items(), COMPARED_WASMS):
        targets += [(f"{wasm} D", envoy, "/v1/chat/completions", openai_body()), (f"{wasm} E", envoy, "/anthropic/v1/messages", ANTHROPIC_BODY)]
    for label, values in cpu_in_windows(envoys, targets, json_headers).items():
        print(f"{label}: median {statistics.median(values):.1f} us/request; windows {values}", flush=True)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make bench installs wrk with apt-get)")
    emulator = start(pinned(1, [EMULATOR, "--listen", f"127.0.0.1:{EMULATOR_PORT}", "--skip-sigv4"]), OUT / "emulator.log")
    wait_for(f"http://127.0.0.1:{EMULATOR_PORT}/_emulator/health")
    json_headers = {"Content-Type": "application/json"}
    results = {"configurations": [], "body_sizes": []}
    if ONLY == "D":
        try:
            compare_builds(json_headers)
        finally:
            stop(emulator)
        return
    try:
        results["configurations"].append(measure("A", "emulator directly", [], CONVERSE_PATH, converse_body(), json_headers))
        for name, description, signing in (("B", "Envoy, plain proxy", False), ("C", "Envoy, native aws_request_signing", True)):
            process, pids = run_envoy(name, proxy_config(signing))
            try:
                results["configurations"].append(measure(name, description, pids, CONVERSE_PATH, converse_body(), json_headers))
                if signing:
                    native = by_body_size(pids, CONVERSE_PATH, converse_body, json_headers)
            finally:
                stop(process)
        process, pids = run_envoy("W", floor_config())
        try:
            results["configurations"].append(measure("W", "Envoy, two do-nothing wasm filters", pids, CONVERSE_PATH, converse_body(), json_headers))
        finally:
            stop(process)
        process, pids = run_envoy("M", floor_config(noop_module_filter))
        try:
            results["configurations"].append(measure("M", "Envoy, two do-nothing dynamic modules", pids, CONVERSE_PATH, converse_body(), json_headers))
        finally:
            stop(process)
        process, pids = run_envoy("N", gateway_config(module=DYNAMIC_MODULE))
        try:
            results["configurations"].append(measure("N", "this gateway as a dynamic module, OpenAI -> Converse", pids, "/v1/chat/completions", openai_body(), json_headers))
            results["configurations"].append(measure("O", "this gateway as a dynamic module, Anthropic -> InvokeModel", pids, "/anthropic/v1/messages", ANTHROPIC_BODY, json_headers))
            native_module = by_body_size(pids, "/v1/chat/completions", openai_body, json_headers)
        finally:
            stop(process)
        process, pids = run_envoy("D", gateway_config())
        try:
            results["configurations"].append(measure("D", "this gateway, OpenAI -> Converse", pids, "/v1/chat/completions", openai_body(), json_headers))
            results["configurations"].append(measure("E", "this gateway, Anthropic -> InvokeModel", pids, "/anthropic/v1/messages", ANTHROPIC_BODY, json_headers))
            for size, (run, cpu) in by_body_size(pids, "/v1/chat/completions", openai_body, json_headers).items():
                results["body_sizes"].append({
                    "size": size, "rps": round(run["rps"]), "p99_us": round(run["p99_us"]), "cpu_us_per_req": cpu,
                    "native_cpu_us_per_req": native[size][1], "module_cpu_us_per_req": native_module[size][1],
                })
        finally:
            stop(process)
        memory = stream_memory()
        streams = interleaved_streams(json_headers)
        results["streaming"] = {
            "deltas": streams["gateway"]["deltas"],
            **streams,
            # What a caller sees (gateway against Bedrock directly), and what this filter adds
            # to Envoy itself (gateway against a plain Envoy proxy, on the same machine).
            "added_vs_direct": added(streams["gateway"], streams["direct"]),
            "added_vs_plain_envoy": added(streams["gateway"], streams["plain_envoy"]),
            "memory_of_100_streams": memory,
            "allocated_mb_per_100_streams": round(memory["D"]["allocated_mb"] - memory["B"]["allocated_mb"], 2),
            "module_added_vs_plain_envoy": added(streams["module"], streams["plain_envoy"]),
            "module_allocated_mb_per_100_streams": round(memory["N"]["allocated_mb"] - memory["B"]["allocated_mb"], 2),
        }
        print(json.dumps(results["streaming"]), flush=True)
        interleaved_cpu(results["configurations"], json_headers)
        if LITELLM.exists():
            process, pids = run_litellm()
            try:
                results["configurations"].append(measure("F", "LiteLLM proxy, OpenAI -> Bedrock", pids, "/v1/chat/completions", openai_body(),
                                                         {**json_headers, "Authorization": f"Bearer {LITELLM_KEY}"}))
            finally:
                stop(process)
        else:
            print(f"LiteLLM not found at {LITELLM}: configuration F skipped", flush=True)
    finally:
        stop(emulator)
    envoy_version = re.search(r"version: \S+?/([\d.]+)/", subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout).group(1)
    results["date"] = time.strftime("%Y-%m-%d")
    results["machine"] = f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"
    results["envoy"] = envoy_version
    results["python"] = platform.python_version()
    results["wrk"] = re.search(r"wrk (\S+)", subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout).group(1)
    if LITELLM.exists():
        results["litellm"] = subprocess.run([LITELLM.parent / "python", "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                                            capture_output=True, text=True, check=True).stdout.strip()
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results)
    update_readme(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Measures configurations A-F and writes bench/results.json, bench/chart.svg and the README table."
    )
    parser.add_argument(
        "--render", action="store_true", help="re-render the chart and README table from bench/results.json, without measuring"
    )
    if parser.parse_args().render:
        stored = json.loads((ROOT / "bench/results.json").read_text())
        chart(stored)
        update_readme(stored)
    else:
        main()

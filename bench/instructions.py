"""Instructions per request, counted by valgrind (callgrind), for comparing builds of the filter.

CPU time on this machine drifts by half from minute to minute, so `make bench` cannot tell apart
builds that differ by less than 10 to 20 µs per request. Instructions executed do not drift: the
same build counted twice differs by well under 1%. Each configuration runs under callgrind on its
own, is warmed up, and then only the requests in between `callgrind_control -z` and `-d` are
counted, in every thread of the Envoy process (its own code, V8's, the filter's JIT-compiled code).

Instructions are not time: valgrind's virtual CPU has no SHA extensions, so C's native SHA-256
(BoringSSL) counts far more instructions than it costs in time on this CPU. Compare builds of
this filter with each other, not with C.

    make bench-instructions                       # B, C, W, D, E, M, N, O
    BENCH_WASMS=/abs/old.wasm,/abs/new.wasm make bench-instructions   # D and E of each build
    BENCH_MODULES=/abs/old.so,/abs/new.so make bench-instructions     # N and O of each native build
    BENCH_TARGETS=D ...                           # only D
    BENCH_TARGETS=BS,NS ...                       # instructions per stream delta: plain Envoy, native gateway
    BENCH_CALLGRIND_DIR=/abs/dir ...              # keep the callgrind dumps there, for callgrind_annotate
"""

import contextlib
import glob
import json
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the configurations, ports and bodies of `make bench`)

import envoy as envoy_package  # noqa: E402

# `.venv/bin/envoy` is a Python launcher that execs the binary, where valgrind would stop following.
ENVOY_BINARY = Path(envoy_package.__file__).parent / "_bin" / "envoy"
WARM_UP_REQUESTS, COUNTED_REQUESTS = 100, 300
READY_TIMEOUT_SECONDS = 900  # V8 compiles the module under valgrind: minutes, not seconds
# BENCH_TARGETS=D counts only those configurations (of B, C, W, D, E, M, N, O; and the per-delta
# stream counts BS, DS, NS, which run only when named).
TARGETS = os.environ.get("BENCH_TARGETS", "B,C,W,D,E,M,N,O").split(",")
# Per-delta cost: streams of two lengths through the same Envoy; the difference in instructions per
# stream, over the difference in deltas, is what one more delta costs, without the request's own
# cost. Paced so that each delta reaches Envoy as a read of its own, as a model's tokens do.
STREAM_COUNTED, STREAM_DELAY_MS = 100, "1"


def send(port: int, path: str, body: bytes, count: int, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {answer[:300]!r}")
    finally:
        connection.close()
    return answer


@contextlib.contextmanager
def counted_envoy(name: str, config: str, workdir: str):
    """Envoy under callgrind with `config`, ready; yields a function that counts the instructions
    Envoy executes while `traffic()` runs (the counters zeroed before, dumped after)."""
    config_path = Path(workdir) / f"{name}.yaml"
    config_path.write_text(config)
    out = f"{workdir}/{name}.callgrind"
    command = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}.%p",
               str(ENVOY_BINARY), "-c", str(config_path), "--concurrency", "1", "--log-level", "error", "--base-id", "91"]
    process = bench.start(bench.pinned(0, command), Path(workdir) / f"{name}.log", env=bench.KEYS)

    def count(traffic) -> int:
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        traffic()
        dumps_before = set(glob.glob(f"{out}.{process.pid}.*"))
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
        return new_dump_total(f"{out}.{process.pid}", dumps_before)

    try:
        bench.wait_for(f"http://127.0.0.1:{bench.ADMIN_PORT}/ready", timeout=READY_TIMEOUT_SECONDS)
        yield count
    finally:
        # Under valgrind, Envoy takes a while to exit.
        bench.stop(process, timeout=120)


def new_dump_total(prefix: str, seen: set, timeout: float = 120) -> int:
    """The total of the dump under `prefix` that is not in `seen` (callgrind writes it
    asynchronously, numbered .1, .2, ...)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in sorted(set(glob.glob(prefix + ".*")) - seen):
            match = re.search(r"^summary: (\d+)", Path(path).read_text(errors="replace"), re.M)
            if match:
                return int(match.group(1))
        time.sleep(1)
    raise RuntimeError(f"no new callgrind dump under {prefix}")


def instructions_per_request(name: str, config: str, path: str, body: bytes, workdir: str) -> float:
    with counted_envoy(name, config, workdir) as count:
        send(bench.GATEWAY_PORT, path, body, WARM_UP_REQUESTS)
        return count(lambda: send(bench.GATEWAY_PORT, path, body, COUNTED_REQUESTS)) / COUNTED_REQUESTS


def instructions_per_delta(name: str, config: str, path: str, bodies: list, marker: bytes, workdir: str) -> float:
    """Instructions one more stream delta costs: streams of each body in `bodies` counted apart in
    one Envoy, and the slope between them (deltas counted in the answers, by `marker`)."""
    paced = {"x-emulator-delay-ms": STREAM_DELAY_MS}
    with counted_envoy(name, config, workdir) as count:
        points = []
        for body in bodies:
            answer = send(bench.GATEWAY_PORT, path, body, WARM_UP_REQUESTS // 4, paced)
            instructions = count(lambda: send(bench.GATEWAY_PORT, path, body, STREAM_COUNTED, paced))
            points.append((answer.count(marker), instructions / STREAM_COUNTED))
        (short, short_count), (long, long_count) = sorted(points)
        print(f"  {name}: {short} deltas {short_count:,.0f}, {long} deltas {long_count:,.0f} instructions per stream", flush=True)
        return (long_count - short_count) / (long - short)


def stream_bodies(openai: bool) -> list:
    """Stream requests answered with about 16 and 64 deltas (the emulator echoes the words, two per delta)."""
    words = ["w " * 30, "w " * 126]
    if openai:
        return [json.dumps({"model": bench.LLAMA, "stream": True, "messages": [{"role": "user", "content": w}]}).encode() for w in words]
    return [json.dumps({"messages": [{"role": "user", "content": [{"text": w}]}]}).encode() for w in words]


def main():
    bench.OUT.mkdir(parents=True, exist_ok=True)
    openai = ("/v1/chat/completions", bench.openai_body())
    anthropic = ("/anthropic/v1/messages", bench.ANTHROPIC_BODY)
    converse = (bench.CONVERSE_PATH, bench.converse_body())
    wasms = [w for w in os.environ.get("BENCH_WASMS", "").split(",") if w]
    modules = [Path(m) for m in os.environ.get("BENCH_MODULES", "").split(",") if m]
    if wasms or modules:
        runs = [(f"{wasm} {label}", bench.gateway_config(wasm), *request) for wasm in wasms for label, request in [("D", openai), ("E", anthropic)]]
        runs += [(f"{module} {label}", bench.gateway_config(module=module), *request)
                 for module in modules for label, request in [("N", openai), ("O", anthropic)]]
    else:
        runs = [
            ("B", bench.proxy_config(False), *converse),
            ("C", bench.proxy_config(True), *converse),
            ("W", bench.floor_config(), *converse),
            ("D", bench.gateway_config(), *openai),
            ("E", bench.gateway_config(), *anthropic),
            ("M", bench.floor_config(bench.noop_module_filter), *converse),
            ("N", bench.gateway_config(module=bench.DYNAMIC_MODULE), *openai),
            ("O", bench.gateway_config(module=bench.DYNAMIC_MODULE), *anthropic),
        ]
    runs = [run for run in runs if run[0].split()[-1] in TARGETS]
    converse_stream_path = bench.CONVERSE_PATH.replace("converse", "converse-stream")
    stream_runs = [
        ("BS", bench.proxy_config(False), converse_stream_path, stream_bodies(openai=False), b"contentBlockDelta"),
        ("DS", bench.gateway_config(), "/v1/chat/completions", stream_bodies(openai=True), b'{"content":'),
        ("NS", bench.gateway_config(module=bench.DYNAMIC_MODULE), "/v1/chat/completions", stream_bodies(openai=True), b'{"content":'),
    ]
    stream_runs = [run for run in stream_runs if run[0] in TARGETS]
    emulator = bench.start(bench.pinned(1, [bench.EMULATOR, "--listen", f"127.0.0.1:{bench.EMULATOR_PORT}", "--skip-sigv4"]),
                           bench.OUT / "emulator.log")
    try:
        bench.wait_for(f"http://127.0.0.1:{bench.EMULATOR_PORT}/_emulator/health")
        keep = os.environ.get("BENCH_CALLGRIND_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as scratch:
            workdir = keep or scratch
            for index, (label, config, path, body) in enumerate(runs):
                started = time.time()
                count = instructions_per_request(f"run{index}", config, path, body, workdir)
                print(f"{label}: {count:,.0f} instructions per request ({time.time() - started:.0f} s)", flush=True)
            for index, (label, config, path, bodies, marker) in enumerate(stream_runs):
                started = time.time()
                count = instructions_per_delta(f"stream{index}", config, path, bodies, marker, workdir)
                print(f"{label}: {count:,.0f} instructions per stream delta ({time.time() - started:.0f} s)", flush=True)
    finally:
        bench.stop(emulator)


if __name__ == "__main__":
    main()

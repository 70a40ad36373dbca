"""`make bench-scale`: what one request costs as the number of models grows.

Resource files like a platform team's: `make run`'s, plus N model aliases (each its own
AIGatewayRoute rule, an alias of the Llama model), rendered, served by the `.wasm` build with one
worker pinned to core 0; wrk asks for the last alias (the worst case for an ordered route list).
Envoy's own CPU time per request is read from /proc, for each configuration in the same run.
BENCH_SCALE_RENDERERS=name=/path/to/ai-gateway-render,... compares renderings (for example the
ordered route list of an older renderer) in the same run; BENCH_SCALE_MODELS sets the sizes.
Results: bench/out/scale.json and a table on standard output.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the benchmark's helpers: Envoy, wrk, /proc)

ROOT = bench.ROOT
MODELS = [int(n) for n in os.environ.get("BENCH_SCALE_MODELS", "10,1000").split(",")]
RENDERERS = dict(
    entry.split("=", 1)
    for entry in os.environ.get("BENCH_SCALE_RENDERERS", f"current={ROOT / 'target/debug/ai-gateway-render'}").split(",")
)
SECONDS = int(os.environ.get("BENCH_SCALE_SECONDS", "8"))


def aliases(count: int) -> str:
    rules = "".join(
        f"  - matches:\n    - headers:\n      - {{ type: Exact, name: x-ai-eg-model, value: model-{i} }}\n"
        f"    backendRefs:\n    - name: bedrock-us-east-1\n      modelNameOverride: {bench.LLAMA}\n"
        for i in range(count))
    return ("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata:\n  name: scale\nspec:\n"
            "  parentRefs:\n  - { name: ai-gateway, kind: Gateway, group: gateway.networking.k8s.io }\n"
            f"  rules:\n{rules}")


def config(renderer: str, models: int) -> tuple:
    resources = bench.OUT / f"scale-{models}.yaml"
    resources.write_text(aliases(models))
    started = time.monotonic()
    rendered = subprocess.run([renderer, str(ROOT / "examples/emulator.yaml"), str(resources),
                               "--credential-chain", "none", "--wasm", bench.WASM],
                              capture_output=True, text=True, check=True).stdout
    rendering_ms = (time.monotonic() - started) * 1000
    for old, new in (("port_value: 1975", bench.GATEWAY_PORT), ("port_value: 9901", bench.ADMIN_PORT),
                     ("port_value: 4566", bench.EMULATOR_PORT)):
        rendered = rendered.replace(old, f"port_value: {new}")
    return rendered, rendering_ms


def main() -> int:
    bench.OUT.mkdir(parents=True, exist_ok=True)
    emulator = bench.start(bench.pinned(1, [bench.EMULATOR, "--listen", f"127.0.0.1:{bench.EMULATOR_PORT}", "--skip-sigv4"]),
                           bench.OUT / "scale-emulator.log")
    bench.wait_for(f"http://127.0.0.1:{bench.EMULATOR_PORT}/_emulator/health")
    results = []
    try:
        for name, renderer in RENDERERS.items():
            for models in MODELS:
                text, rendering_ms = config(renderer, models)
                started = time.monotonic()
                process, pids = bench.run_envoy(f"scale-{name}-{models}", text)
                start_up_s = time.monotonic() - started
                try:
                    body = json.dumps({"model": f"model-{models - 1}", "messages": [{"role": "user", "content": "Hi."}]}).encode()
                    url = f"http://127.0.0.1:{bench.GATEWAY_PORT}/v1/chat/completions"
                    bench.wrk(url, body, {"Content-Type": "application/json"}, 16, 2)  # warm-up
                    before = bench.cpu_seconds(pids)
                    loaded = bench.wrk(url, body, {"Content-Type": "application/json"}, 16, SECONDS)
                    cpu_us = (bench.cpu_seconds(pids) - before) * 1_000_000 / loaded["requests"]
                    results.append({"rendering": name, "models": models, "cpu_us_per_request": round(cpu_us, 1),
                                    "rps": loaded["rps"], "rss_mb": round(bench.rss_mb(pids, "VmRSS"), 1),
                                    "start_up_s": round(start_up_s, 2), "render_ms": round(rendering_ms, 1)})
                finally:
                    bench.stop(process)
    finally:
        bench.stop(emulator)
    (bench.OUT / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print("| rendering | models | Envoy CPU per request | req/s | Envoy RSS | start-up | rendering |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['rendering']} | {r['models']} | {r['cpu_us_per_request']} µs | {r['rps']:.0f} | {r['rss_mb']} MB "
              f"| {r['start_up_s']} s | {r['render_ms']:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

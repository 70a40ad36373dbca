"""Every Envoy configuration the project ships is rendered from an AI Gateway resource file and must
load in the pinned Envoy; the committed renderings must be what `make render-examples` writes today;
and a configuration the filter cannot use must stop Envoy at start-up with a reason."""

import os
import subprocess
from pathlib import Path

import urllib.request

import pytest
import yaml

from conftest import ENVOY, RENDER, ROOT, WASM, free_port, http_get, start_process, stop_process, wait_until

pytestmark = pytest.mark.host_independent

RESOURCE_FILES = ["examples/emulator.yaml", "examples/emulator.yaml examples/rate-limit.yaml", "examples/emulator.yaml examples/callers.yaml",
                  "examples/emulator.yaml examples/failover.yaml", "examples/basic-aws.yaml",
                  "examples/aws.yaml", "examples/kubernetes/gateway-resources.yaml"]
SHIPPED_RENDERINGS = ["envoy.yaml", "examples/kubernetes/envoy-configmap-pod-identity.yaml",
                      "examples/kubernetes/envoy-configmap-irsa.yaml"]
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


def validate(config: Path, environment: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(environment)
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def render(resources: str, *options: str) -> subprocess.CompletedProcess:
    """`resources`: one file, or several separated by spaces, rendered together."""
    files = [str(ROOT / name) for name in resources.split()]
    return subprocess.run([str(RENDER), *files, *options], capture_output=True, text=True, timeout=30)


# Every file with the default chain, and the emulator example (which uses the chain) with every other one.
RENDERINGS = [(resources, "imds") for resources in RESOURCE_FILES] + \
    [("examples/emulator.yaml", "none"), ("examples/emulator.yaml", "irsa,pod-identity,imds")]


@pytest.mark.parametrize(("resources", "chain"), RENDERINGS)
def test_resource_files_render_to_configurations_envoy_loads(resources, chain, tmp_path):
    token = tmp_path / "token" / "token"
    token.parent.mkdir()
    token.write_text("t")
    out = tmp_path / "out"
    result = render(resources, "--out-dir", str(out), "--credential-chain", chain,
                    "--pod-identity-token-file", str(token), "--web-identity-token-file", str(token))
    assert result.returncode == 0, result.stderr
    validated = validate(out / "envoy.yaml", KEYS)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    assert f"configuration '{out / 'envoy.yaml'}' OK" in validated.stdout + validated.stderr


def test_shipped_renderings_are_current(tmp_path):
    """envoy.yaml and the Kubernetes ConfigMaps are generated: edit the resource files, then run
    `make render-examples`."""
    (tmp_path / "examples/kubernetes").mkdir(parents=True)
    result = subprocess.run(["make", "-s", "render-examples", f"RENDERED={tmp_path}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SHIPPED_RENDERINGS:
        assert (tmp_path / name).read_text() == (ROOT / name).read_text(), \
            f"{name} is stale: run `make render-examples` and commit the result"


def kubernetes_config(configmap: str, tmp_path: Path) -> Path:
    """The ConfigMap's files as the pod would see them, with in-cluster paths mapped to local ones."""
    data = yaml.safe_load((ROOT / configmap).read_text())["data"]
    config_dir, token_dir = tmp_path / "config", tmp_path / "serviceaccount"
    config_dir.mkdir()
    token_dir.mkdir()
    (token_dir / "token").write_text("t")
    for name, text in data.items():
        text = text.replace("/etc/ai-gateway/config", str(config_dir))
        text = text.replace("/etc/ai-gateway/wasm/bedrock_gateway_filter.wasm", str(WASM))
        for token in ("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
                      "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"):
            text = text.replace(token, str(token_dir / "token"))
        for directory in ("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "/var/run/secrets/eks.amazonaws.com/serviceaccount"):
            text = text.replace(directory, str(token_dir))
        (config_dir / name).write_text(text)
    return config_dir / "envoy.yaml"


@pytest.mark.parametrize("configmap", SHIPPED_RENDERINGS[1:], ids=lambda p: Path(p).name)
def test_kubernetes_configmaps_load_and_answer_readiness_probes(configmap, tmp_path):
    config = kubernetes_config(configmap, tmp_path)
    validated = validate(config, {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/AIGatewayBedrockRole"})
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    # Run it (no request reaches AWS): the Deployment's probe asks port 19001 for /ready.
    ready_port, admin_port, listener_port = free_port(), free_port(), free_port()
    text = config.read_text()
    for old, new in (("port_value: 19001", ready_port), ("port_value: 9901", admin_port), ("port_value: 1975", listener_port)):
        assert old in text
        text = text.replace(old, f"port_value: {new}")
    config.write_text(text.replace('address: "0.0.0.0"', 'address: "127.0.0.1"'))
    process = start_process([str(ENVOY), "-c", str(config), "--base-id", str(ready_port), "--concurrency", "1"],
                            tmp_path / "envoy.log", env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **KEYS})
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin_port}/ready") == b"LIVE\n", "Envoy")
        with urllib.request.urlopen(f"http://127.0.0.1:{ready_port}/ready", timeout=5) as response:
            assert response.status == 200
    finally:
        stop_process(process)


def test_missing_credentials_stop_envoy_with_a_reason(tmp_path):
    """With no link of the default chain available (no keys, no credential service rendered), the
    filter refuses its configuration and Envoy does not start."""
    result = render("examples/aws.yaml", "--credential-chain", "none", "--output", str(tmp_path / "envoy.yaml"))
    assert result.returncode == 0, result.stderr
    validated = validate(tmp_path / "envoy.yaml", {})
    assert validated.returncode != 0
    assert "default_chain found no credentials" in validated.stdout + validated.stderr


def test_render_errors_name_the_file_resource_and_field(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "examples/basic-aws.yaml").read_text().replace("name: AWSBedrock", "name: AzureOpenAI"))
    result = render(str(broken), "--output", str(tmp_path / "envoy.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"ai-gateway-render: {broken}: AIServiceBackend \"envoy-ai-gateway-basic-aws\": spec.schema.name")
    assert not (tmp_path / "envoy.yaml").exists()

"""Every Envoy configuration the project ships must load in the pinned Envoy, and a broken
plugin configuration must stop Envoy at start-up with a reason, not fail requests later."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ENVOY, ROOT

CONFIGS = [ROOT / "envoy.yaml", *sorted((ROOT / "examples").glob("envoy-*.yaml"))]


def validate(config: Path, environment: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(environment)
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(config, tmp_path):
    # The credential examples read the token directory `make run` creates; give them their own.
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "token").write_text("t")
    (auth_dir / "sds-token.yaml").write_text(
        (ROOT / "examples/auth/sds-token.yaml").read_text().replace(".run/auth", str(auth_dir)))
    local = tmp_path / config.name
    local.write_text(config.read_text().replace(".run/auth", str(auth_dir)))
    result = validate(local, {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{local}' OK" in result.stdout + result.stderr


KUBERNETES_CONFIGS = sorted((ROOT / "examples/kubernetes").glob("envoy-*.yaml"))


@pytest.mark.parametrize("config", KUBERNETES_CONFIGS, ids=lambda p: p.name)
def test_kubernetes_configs_validate(config, tmp_path):
    """The in-cluster paths are mapped to local files; everything else is validated as shipped."""
    token_dir = tmp_path / "token"
    token_dir.mkdir()
    (token_dir / "token").write_text("t")
    sds = tmp_path / "sds-token.yaml"
    sds.write_text((ROOT / "examples/kubernetes/sds-pod-identity.yaml").read_text()
                   .replace("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token", str(token_dir / "token")))
    text = config.read_text()
    text = text.replace("/etc/ai-gateway/wasm/bedrock_gateway_filter.wasm", str(ROOT / "target/wasm32-wasip1/release/bedrock_gateway_filter.wasm"))
    text = text.replace("/etc/ai-gateway/sds-token.yaml", str(sds))
    for directory in ("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "/var/run/secrets/eks.amazonaws.com/serviceaccount"):
        text = text.replace(directory, str(token_dir))
    local = tmp_path / config.name
    local.write_text(text)
    result = validate(local, {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                              "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/AIGatewayBedrockRole"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_missing_credentials_stop_envoy_with_a_reason():
    result = validate(ROOT / "envoy.yaml", {})
    assert result.returncode != 0
    assert "AWS_ACCESS_KEY_ID is not set in the VM's environment" in result.stdout + result.stderr

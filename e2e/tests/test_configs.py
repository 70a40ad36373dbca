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
def test_shipped_configs_validate(config):
    result = validate(config, {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


def test_missing_credentials_stop_envoy_with_a_reason():
    result = validate(ROOT / "envoy.yaml", {})
    assert result.returncode != 0
    assert "AWS_ACCESS_KEY_ID is not set in the VM's environment" in result.stdout + result.stderr

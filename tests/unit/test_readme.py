"""The README's config examples are accepted by the config loader, so the docs stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoscaler.config import load_config

README = Path(__file__).resolve().parents[2] / "README.md"
BASE = """
[services.web]
image = "autoscaler-demo-app:latest"
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"
max_replicas = 8

[services.web.load_balancer]
publish = "127.0.0.1:8080"
"""

BLOCKS = [b for b in re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL) if "services.web" in b]


def test_the_readme_has_policy_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_each_policy_example_loads(block: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BASE + "\n" + block)
    settings = load_config(path, environ={})
    assert "web" in settings.services

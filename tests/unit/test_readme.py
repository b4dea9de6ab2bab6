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

BASE_WORKER = """
[services.worker]
image = "autoscaler-demo-app:latest"
cpu_limit = 0.5
memory_limit = "128MiB"

[[services.worker.policy.metrics]]
name = "base"
redis = { url = "redis://127.0.0.1:6379/0", list = "base" }
target_average_value = 1
"""

_ALL_BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
BLOCKS = [b for b in _ALL_BLOCKS if "services.web" in b]
WORKER_BLOCKS = [b for b in _ALL_BLOCKS if "services.worker" in b]


def test_the_readme_has_policy_examples() -> None:
    assert len(BLOCKS) >= 5


def merged(base: str, block: str) -> str:
    """The block's tables added to the base; a table both have gets the block's keys on top
    (the block's own value wins), so examples that show a whole [services.web] still load."""
    def tables(text: str) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {"": []}
        current = ""
        for line in text.splitlines():
            if re.fullmatch(r"\[[^\[\]]+\]\s*(#.*)?", line.strip()):
                current = line.strip().split("#")[0].strip()
                result.setdefault(current, [])
            else:
                result[current].append(line)
        return result

    ours, theirs = tables(base), tables(block)
    for header, lines in theirs.items():
        keys = {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}
        kept = [line for line in ours.get(header, []) if line.split("=", 1)[0].strip() not in keys]
        ours[header] = kept + lines
    return "\n".join(("" if header == "" else header + "\n") + "\n".join(lines) for header, lines in ours.items())


def with_secret_files(block: str, tmp_path: Path) -> str:
    """The example's credentials files, made for real (they must exist and not be world-readable)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    env = tmp_path / "app.env"
    env.write_text("GREETING=hello\n")
    block = re.sub(r'env_file = \["[^"]+"\]', f'env_file = ["{env}"]', block)
    return re.sub(r'(bearer_token_file|password_file) = "[^"]+"', rf'\1 = "{secret}"', block)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_each_policy_example_loads(block: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    # An example made from a template names no image: the base's goes.
    base = BASE.replace('image = "autoscaler-demo-app:latest"\n', "") if "\ntemplate = " in block else BASE
    path.write_text(merged(base, with_secret_files(block, tmp_path)))
    settings = load_config(path, environ={})
    assert "web" in settings.services


def test_the_readme_has_worker_examples() -> None:
    assert len(WORKER_BLOCKS) >= 2


@pytest.mark.parametrize("block", WORKER_BLOCKS, ids=[f"worker-{i}" for i in range(len(WORKER_BLOCKS))])
def test_each_worker_example_loads(block: str, tmp_path: Path) -> None:
    # A block that lists metrics of its own does not get the base's (one [[...]] list each).
    base = BASE_WORKER if "[[services.worker.policy.metrics]]" not in block else BASE_WORKER.split("[[")[0]
    path = tmp_path / "config.toml"
    path.write_text(merged(base, with_secret_files(block, tmp_path)))
    settings = load_config(path, environ={})
    assert settings.services["worker"].is_worker

"""The container deployment: deploy/Dockerfile, .dockerignore and docker-compose.yml.

No Docker daemon is needed: `docker-compose config` validates and renders the compose
file offline, and the Dockerfile is checked as text. docker-compose v1 (Debian's package)
must be on PATH; .ci/run installs it. Where it cannot be, `VISIONQ_SKIP_COMPOSE_TEST=1`
turns the compose tests into skips (otherwise they fail, so CI cannot pass silently).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {
    "redis",
    "simulator",
    "api",
    "worker-prepare",
    "worker-upstream",
    "worker-webhooks",
    "sweeper",
}


def _compose_exe() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("VISIONQ_SKIP_COMPOSE_TEST") == "1":
            pytest.skip("docker-compose not on PATH and VISIONQ_SKIP_COMPOSE_TEST=1")
        pytest.fail(
            "docker-compose is not on PATH: install it (Debian: apt-get install docker-compose; "
            ".ci/run does this) or set VISIONQ_SKIP_COMPOSE_TEST=1 to skip the compose tests"
        )
    return exe


def _compose(*args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on our file, from the repository root."""
    exe = _compose_exe()
    # Only what compose itself needs: a developer's own VISIONQ_*, MIMO_* or COMPOSE_*
    # variables must not change what is validated here.
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL"}}
    env.update(env_vars)
    return subprocess.run(
        [exe, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered() -> str:
    """`docker-compose config`: the validated, interpolated compose file."""
    proc = _compose("config")
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return proc.stdout


def _service_blocks(rendered: str) -> dict[str, str]:
    """Split the rendered YAML (2-space indented by docker-compose) into service blocks."""
    section = re.search(r"^services:\n(.*?)(?=^\S)", rendered, re.M | re.S)
    assert section, rendered
    parts = re.split(r"^  ([A-Za-z0-9_.-]+):\n", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_compose_services(rendered: str) -> None:
    proc = _compose("config", "--services")
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == SERVICES
    assert set(_service_blocks(rendered)) == SERVICES


def test_compose_redis_is_durable_and_never_evicts(rendered: str) -> None:
    flat = " ".join(rendered.split())  # long commands are folded over lines
    assert "appendonly yes" in flat
    assert "noeviction" in flat
    redis = _service_blocks(rendered)["redis"]
    assert "redis-cli ping" in redis
    assert re.search(r"- \S+:/data\b", redis), "redis needs a named volume on /data"


def test_compose_scalable_and_only_api_published(rendered: str) -> None:
    assert "container_name" not in rendered
    blocks = _service_blocks(rendered)
    published = {name for name, block in blocks.items() if "ports:" in block}
    assert published == {"api"}
    assert re.search(r"published: 8000\b", blocks["api"])


def test_compose_app_services(rendered: str) -> None:
    blocks = _service_blocks(rendered)
    for name in SERVICES - {"redis"}:
        block = blocks[name]
        assert "dockerfile: deploy/Dockerfile" in block, name
        assert "healthcheck:" in block, name
    for name in ("api", "worker-prepare", "worker-upstream"):
        block = blocks[name]
        assert "images:/data/images" in block, name
        assert "VISIONQ_REDIS_URL: redis://redis:6379/0" in block, name
        assert "VISIONQ_STORAGE_URL: file:///data/images" in block, name
        assert "condition: service_healthy" in block, name
    upstream = blocks["worker-upstream"]
    assert "VISIONQ_UPSTREAM_BASE_URL: http://simulator:8001/v1" in upstream
    assert "http://simulator:8001/anthropic" in upstream
    assert "- upstream" in upstream and "- prepare" in blocks["worker-prepare"]


def test_compose_interpolates_overrides() -> None:
    proc = _compose(
        "config",
        VISIONQ_UPSTREAM_BASE_URL="https://api.xiaomimimo.com/v1",
        MIMO_API_KEY="sk-test",
    )
    assert proc.returncode == 0, proc.stderr
    upstream = _service_blocks(proc.stdout)["worker-upstream"]
    assert "VISIONQ_UPSTREAM_BASE_URL: https://api.xiaomimimo.com/v1" in upstream
    assert "MIMO_API_KEY: sk-test" in upstream


def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuations joined."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    assert DOCKERFILE.is_file(), "deploy/Dockerfile is missing"
    instructions = _instructions(DOCKERFILE.read_text())
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")

    users = [arg for k, arg in instructions if k == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]

    entrypoints = [arg for k, arg in instructions if k == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["visionq"]
    cmds = [arg for k, arg in instructions if k == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    # The last USER comes after the install, and the entrypoint after the USER.
    assert keywords.index("ENTRYPOINT") > len(keywords) - 1 - keywords[::-1].index("USER")

    runs = " ".join(arg for k, arg in instructions if k == "RUN")
    assert "pip install --no-cache-dir ." in runs
    assert "/data/images" in runs
    assert any(k == "ENV" and "PYTHONUNBUFFERED=1" in arg for k, arg in instructions)


def test_dockerignore() -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "var"} <= patterns
    # What `pip install .` needs must reach the build context.
    for needed in ("pyproject.toml", "README.md", "visionq", "service", "workers", "*", "**"):
        assert needed not in patterns, needed

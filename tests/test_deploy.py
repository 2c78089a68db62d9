"""The container deployment: deploy/Dockerfile, .dockerignore and docker-compose.yml.

No Docker daemon is needed: `docker-compose config` validates and renders the compose
file offline, and the Dockerfile is checked as text. The one piece of compose that runs
code of ours outside the image's entrypoint, the `s3` profile's bucket creation, is run
here against a real S3-compatible server (moto's). docker-compose v1 (Debian's package)
must be on PATH; .ci/run installs it. Where it cannot be, `VISIONQ_SKIP_COMPOSE_TEST=1`
turns the compose tests into skips (otherwise they fail, so CI cannot pass silently).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from visionq.dev.ports import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

#: What `docker-compose up` starts.
SERVICES = {
    "redis",
    "simulator",
    "api",
    "worker-prepare",
    "worker-upstream",
    "worker-webhooks",
    "sweeper",
    "flower",
}
#: What `docker-compose --profile NAME up` adds.
PROFILES = {"s3": {"s3", "s3-bucket"}, "monitoring": {"prometheus", "grafana"}}
WORKERS = {"worker-prepare", "worker-upstream", "worker-webhooks"}
#: The services that run visionq itself and share its settings (x-env).
APP_SERVICES = {"api", "sweeper", "s3-bucket"} | WORKERS
S3_VARS = {
    "VISIONQ_STORAGE_URL": "s3://visionq/images",
    "AWS_ENDPOINT_URL": "http://s3:5000",
    "AWS_ACCESS_KEY_ID": "trial",
    "AWS_SECRET_ACCESS_KEY": "trial",
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


@pytest.fixture(scope="module")
def services(rendered: str) -> dict[str, dict[str, Any]]:
    """The rendered services, parsed."""
    return yaml.safe_load(rendered)["services"]


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port; docker-compose
    renders `HOST:CONTAINER` as a mapping and `IP:HOST:CONTAINER` as a string."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            *ip, published, target = port.split("/")[0].split(":")
            out.append((":".join(ip), int(published), int(target)))
    return out


def _bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths mounted into the service (rendered as `/abs/source:target[:mode]`)."""
    return [v.split(":")[0] for v in service.get("volumes", []) if v.startswith("/")]


def _service_blocks(rendered: str) -> dict[str, str]:
    """Split the rendered YAML (2-space indented by docker-compose) into service blocks."""
    section = re.search(r"^services:\n(.*?)(?=^\S)", rendered, re.M | re.S)
    assert section, rendered
    parts = re.split(r"^  ([A-Za-z0-9_.-]+):\n", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_compose_services(rendered: str, services: dict[str, dict[str, Any]]) -> None:
    everything = SERVICES.union(*PROFILES.values())
    proc = _compose("config", "--services")
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == everything
    assert set(_service_blocks(rendered)) == everything
    assert {name for name, svc in services.items() if "profiles" not in svc} == SERVICES
    for profile, names in PROFILES.items():
        assert {n for n, svc in services.items() if profile in svc.get("profiles", [])} == names


def test_compose_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """Long-running services declare a check; the one-shot bucket creation is judged by its
    exit status instead, and is retried until it succeeds."""
    one_shots = {name for name, svc in services.items() if svc.get("restart") == "on-failure"}
    assert one_shots == {"s3-bucket"}
    for name, svc in services.items():
        if name in one_shots:
            continue
        assert svc.get("restart") == "unless-stopped", name
        check = svc.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_compose_redis_is_durable_and_never_evicts(rendered: str) -> None:
    flat = " ".join(rendered.split())  # long commands are folded over lines
    assert "appendonly yes" in flat
    assert "noeviction" in flat
    redis = _service_blocks(rendered)["redis"]
    assert "redis-cli ping" in redis
    assert re.search(r"- \S+:/data\b", redis), "redis needs a named volume on /data"


def test_compose_scalable_and_published_ports(
    rendered: str, services: dict[str, dict[str, Any]]
) -> None:
    assert "container_name" not in rendered
    published = {name: _ports(svc) for name, svc in services.items() if "ports" in svc}
    assert set(published) == {"api", "flower", "prometheus", "grafana"}
    assert published["api"] == [("", 8000, 8000)]
    # Flower shows every task and the monitoring UIs have their own logins: localhost only.
    for name in published.keys() - {"api"}:
        assert all(ip == "127.0.0.1" for ip, _, _ in published[name]), published[name]
    # Workers publish nothing, so `--scale` cannot collide on a host port.
    assert not WORKERS & published.keys()


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


def test_compose_s3_profile_switches_every_app_service() -> None:
    proc = _compose("--profile", "s3", "config", **S3_VARS)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    with_storage = {
        n for n, svc in services.items() if "VISIONQ_STORAGE_URL" in svc.get("environment", {})
    }
    assert with_storage == APP_SERVICES
    for name in APP_SERVICES:
        env = services[name]["environment"]
        for var, value in S3_VARS.items():
            assert env[var] == value, (name, var)
    assert services["s3-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_compose_default_storage_is_the_shared_volume(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["VISIONQ_STORAGE_URL"] == "file:///data/images", name
        assert env["AWS_ENDPOINT_URL"] == "", name
        # boto3 ignores empty variables except the region: it builds its endpoint from it.
        assert env["AWS_DEFAULT_REGION"], name


def test_compose_metrics(services: dict[str, dict[str, Any]]) -> None:
    """Every process tree that serves metrics gets a fresh, private multiprocess directory."""
    for name in WORKERS | {"api"}:
        env = services[name]["environment"]
        assert env["PROMETHEUS_MULTIPROC_DIR"] in services[name]["tmpfs"], name
    for name in WORKERS:
        assert services[name]["environment"]["VISIONQ_METRICS_PORT"] == "9100", name
    assert "VISIONQ_METRICS_PORT" not in services["api"]["environment"]  # /metrics on 8000


def test_compose_prometheus_scrapes_every_metrics_port(services: dict[str, dict[str, Any]]) -> None:
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    targets = {
        (name, sd["port"]) for job in scrape for sd in job["dns_sd_configs"] for name in sd["names"]
    }
    expected = {("api", 8000)} | {
        (name, int(svc["environment"]["VISIONQ_METRICS_PORT"]))
        for name, svc in services.items()
        if "VISIONQ_METRICS_PORT" in svc.get("environment", {})
    }
    assert targets == expected
    assert str(PROMETHEUS_CONFIG) in _bind_sources(services["prometheus"])


def test_compose_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    """A missing source would make Docker create an empty directory in its place."""
    sources = {name: _bind_sources(svc) for name, svc in services.items()}
    assert sources["grafana"] and sources["prometheus"]
    for name, paths in sources.items():
        for path in paths:
            assert Path(path).is_file(), (name, path)


def _datasource_uids(node: Any) -> Iterator[str]:
    """The `uid` of every `"datasource": {...}` in a dashboard, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict) and "uid" in value:
                yield value["uid"]
            else:
                yield from _datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_uids(item)


def test_compose_grafana_dashboard_finds_its_data_source(
    services: dict[str, dict[str, Any]],
) -> None:
    """Grafana's file provisioning does not fill in an exported dashboard's `__inputs`: each
    panel's data source must be the provisioned one, or a data-source variable of the
    dashboard itself."""
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provisioned = {
        Path(source).name: Path(source)
        for source, target in mounts.items()
        if target.startswith("/etc/grafana/provisioning/")
    }
    (source,) = yaml.safe_load(provisioned["grafana-datasource.yml"].read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    folder = yaml.safe_load(provisioned["grafana-dashboards.yml"].read_text())["providers"][0]
    (dashboard_file,) = [s for s, t in mounts.items() if t.startswith(folder["options"]["path"])]
    dashboard = json.loads(Path(dashboard_file).read_text())
    variables = {
        f"${{{v['name']}}}"
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "datasource" and v.get("query") == "prometheus"
    }
    used = set(_datasource_uids(dashboard))
    assert used and used <= {source["uid"]} | variables, used


def test_compose_flower() -> None:
    proc = _compose("config")
    assert proc.returncode == 0, proc.stderr
    flower = yaml.safe_load(proc.stdout)["services"]["flower"]
    assert flower["entrypoint"] == ["celery"]
    assert flower["command"] == ["--broker=redis://redis:6379/0", "flower", "--port=5555"]
    # Not set: not passed at all (an empty value would lock everyone out).
    assert flower["environment"] == {"FLOWER_BASIC_AUTH": None}
    assert _ports(flower) == [("127.0.0.1", 5555, 5555)]
    assert "5555/healthcheck" in " ".join(flower["healthcheck"]["test"])

    published = _compose(
        "config",
        FLOWER_BASIC_AUTH="ops:s3cret",
        FLOWER_PUBLISH="0.0.0.0:5555",
        VISIONQ_REDIS_URL="redis://redis.internal:6379/2",
    )
    assert published.returncode == 0, published.stderr
    flower = yaml.safe_load(published.stdout)["services"]["flower"]
    assert flower["environment"] == {"FLOWER_BASIC_AUTH": "ops:s3cret"}
    assert _ports(flower) == [("0.0.0.0", 5555, 5555)]
    assert flower["command"][0] == "--broker=redis://redis.internal:6379/2"


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server as a child process; yields the AWS variables that reach it."""
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", child, timeout=30)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "trial",
            "AWS_SECRET_ACCESS_KEY": "trial",
        }
    finally:
        child.terminate()
        child.wait(timeout=30)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_compose_s3_bucket_service_creates_the_bucket(
    services: dict[str, dict[str, Any]], s3_server: dict[str, str], region: str
) -> None:
    """The `s3-bucket` one-shot, run as compose runs it (`python -c SCRIPT`) against a real
    S3-compatible server: it creates the bucket, succeeds again once it exists, and
    refuses a storage URL that is not S3."""
    bucket = services["s3-bucket"]
    assert bucket["entrypoint"] == ["python", "-c"]
    (script,) = bucket["command"]
    aws = s3_server | {"AWS_DEFAULT_REGION": region}
    env = {"PATH": os.environ["PATH"], "VISIONQ_STORAGE_URL": "s3://trial-bucket/images", **aws}

    def run(**overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script],
            env=env | overrides,
            capture_output=True,
            text=True,
            timeout=60,
        )

    for _ in range(2):
        proc = run()
        assert proc.returncode == 0, proc.stderr
        assert "bucket ready: trial-bucket" in proc.stdout
    client = boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=region,
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        buckets = [b["Name"] for b in client.list_buckets()["Buckets"]]
        location = client.get_bucket_location(Bucket="trial-bucket")["LocationConstraint"]
    finally:
        client.close()
    assert buckets == ["trial-bucket"]
    assert (location or "us-east-1") == region

    refused = run(VISIONQ_STORAGE_URL="file:///data/images")
    assert refused.returncode != 0
    assert "VISIONQ_STORAGE_URL=s3://" in refused.stderr


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

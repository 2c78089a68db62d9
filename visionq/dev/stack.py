"""`visionq dev`: the whole stack as one process tree on one machine.

Redis (the configured one if it answers, else our own), the API, one worker per queue,
and the upstream simulator when no `MIMO_API_KEY` is set. Ctrl-C stops every child.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from visionq.broker import QUEUES
from visionq.dev.redisserver import RedisServer, answers
from visionq.settings import Settings

SIMULATOR_KEY = "visionq-simulator-key"


def _say(text: str) -> None:
    print(f"visionq dev: {text}", file=sys.stderr, flush=True)


def dev_webhook_secret(var_dir: Path) -> str:
    """A secret made once and kept, so a receiver set up against the dev stack keeps working."""
    path = var_dir / "webhook-secret"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def run(*, api_port: int, simulator_port: int, var_dir: Path) -> int:
    env = dict(os.environ)
    settings = Settings.from_env(env)
    children: list[subprocess.Popen[bytes]] = []
    embedded: RedisServer | None = None

    if answers(settings.redis_url):
        _say(f"using Redis at {settings.redis_url}")
    else:
        # Where the configured URL is local, take its port, so that a worker started by
        # hand in another terminal with the same settings finds this Redis.
        parsed = urlparse(settings.redis_url)
        local = parsed.hostname in ("127.0.0.1", "localhost") and parsed.port
        embedded = RedisServer(var_dir / "redis", parsed.port if local else None).start()
        env["VISIONQ_REDIS_URL"] = embedded.url
        _say(f"no Redis answered at {settings.redis_url}; started one at {embedded.url}")

    if not env.get("VISIONQ_API_KEYS") and not env.get("VISIONQ_AUTH"):
        env["VISIONQ_AUTH"] = "disabled"
        _say("WARNING: authentication is disabled (set VISIONQ_API_KEYS to turn it on)")

    def spawn(*args: str) -> None:
        children.append(subprocess.Popen([sys.executable, "-m", "visionq", *args], env=env))

    if not env.get("MIMO_API_KEY"):
        _say(
            f"WARNING: MIMO_API_KEY is not set; answers come from the bundled SIMULATOR on "
            f"port {simulator_port}, not from MiMo"
        )
        env["MIMO_API_KEY"] = SIMULATOR_KEY
        env["VISIONQ_UPSTREAM_BASE_URL"] = f"http://127.0.0.1:{simulator_port}/v1"
        env["VISIONQ_UPSTREAM_ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{simulator_port}/anthropic"
        # The stand-in account has the limits the service is told to pace for.
        budget = settings.budget(settings.default_model)
        limits = ("--rpm", str(budget.rpm), "--tpm", str(budget.tpm))
        spawn("simulator", "--port", str(simulator_port), "--api-key", SIMULATOR_KEY, *limits)

    # URLs on this machine are how a developer tries URL images locally.
    env.setdefault("VISIONQ_ALLOW_PRIVATE_URLS", "true")
    # One metrics directory for every process, so the API's /metrics shows the workers'
    # counts too; emptied first, as prometheus-client wants between runs.
    metrics_dir = var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    _say(f"metrics on http://127.0.0.1:{api_port}/metrics")
    if not env.get("VISIONQ_WEBHOOK_SECRET"):
        env["VISIONQ_WEBHOOK_SECRET"] = dev_webhook_secret(var_dir)
        _say(f"webhooks are signed with the development secret in {var_dir}/webhook-secret")
    for queue in QUEUES:
        spawn("worker", "--queues", queue)
    spawn("sweeper")
    spawn("api", "--port", str(api_port))
    _say(f"API on http://127.0.0.1:{api_port} (Ctrl-C stops everything)")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            if any(child.poll() is not None for child in children):
                _say("a component exited; stopping the stack")
                break
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.stop()
    return 0

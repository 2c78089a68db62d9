"""Two "hosts" sharing only Redis and an S3 server (moto's, a real process): host A runs
the API, the upstream and webhook workers and the sweeper; host B runs only a prepare
worker. Each has its own process tree and its own temporary directory, and no file
storage at all: every image and body goes through the bucket."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import (
    CORPUS,
    SIM_KEY,
    Process,
    Stack,
    stack_env,
    start_api,
    wait_for_http,
)
from tests.support.databases import Databases
from tests.support.s3server import S3Server, running_s3
from visionq.dev.ports import free_port

BUCKET = "visionq-shared"
PREFIX = "site"
#: Short, so that a finished job expires within the test; long enough for a job to finish.
RESULT_TTL = 10


@dataclass
class TwoHosts:
    stack: Stack  # host A, where the API is
    prepare_worker: Process  # host B
    s3: S3Server

    def stored(self) -> list[str]:
        return self.s3.keys(BUCKET, f"{PREFIX}/")


@pytest.fixture(scope="module")
def hosts(
    redis_databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoHosts]:
    redis_url = redis_databases.take()
    with running_s3(tmp_path_factory.mktemp("s3")) as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        sim_port = free_port()
        simulator_url = f"http://127.0.0.1:{sim_port}"

        def host_env(name: str) -> dict[str, str]:
            return stack_env(
                redis_url,
                tmp_path_factory.mktemp(f"{name}-unused-files"),
                simulator_url,
                VISIONQ_STORAGE_URL=f"s3://{BUCKET}/{PREFIX}",
                VISIONQ_RESULT_TTL=str(RESULT_TTL),
                TMPDIR=str(tmp_path_factory.mktemp(f"{name}-tmp")),
                **s3.env(),
            )

        env_a, env_b = host_env("host-a"), host_env("host-b")
        logs_a, logs_b = tmp_path_factory.mktemp("host-a-logs"), tmp_path_factory.mktemp("host-b")
        cwd_a, cwd_b = tmp_path_factory.mktemp("host-a-cwd"), tmp_path_factory.mktemp("host-b-cwd")
        sim_cmd = ["simulator", "--port", str(sim_port), "--api-key", SIM_KEY, "--rpm", "0"]
        processes = [Process("simulator", sim_cmd, env_a, logs_a, cwd=cwd_a)]
        try:
            wait_for_http(f"{simulator_url}/", processes[0])
            prepare = Process(
                "host-b-worker-prepare", ["worker", "--queues", "prepare"], env_b, logs_b, cwd=cwd_b
            )
            processes.append(prepare)
            for queue in ("upstream", "webhooks"):
                processes.append(
                    Process(
                        f"host-a-worker-{queue}",
                        ["worker", "--queues", queue],
                        env_a,
                        logs_a,
                        cwd=cwd_a,
                    )
                )
            processes.append(Process("host-a-sweeper", ["sweeper"], env_a, logs_a, cwd=cwd_a))
            api, base_url = start_api(env_a, logs_a, name="host-a-api", cwd=cwd_a)
            processes.append(api)
            stack = Stack(base_url, redis_url, simulator_url, env_a, logs_a, processes)
            yield TwoHosts(stack, prepare, s3)
        finally:
            for process in reversed(processes):
                process.stop()


def _log_lines(process: Process) -> list[dict[str, Any]]:
    lines = process.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _image_key(path_bytes: bytes) -> str:
    sha = hashlib.sha256(path_bytes).hexdigest()
    return f"{PREFIX}/images/{sha[:2]}/{sha}"


def _gone(hosts: TwoHosts, key: str, *, within: float) -> bool:
    deadline = time.monotonic() + within
    while key in hosts.stored():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_job_submitted_on_one_host_is_prepared_on_the_other(hosts: TwoHosts) -> None:
    image = CORPUS / "good" / "hopper.png"
    submitted = hosts.stack.upload([image], {"prompt": "what is in it?"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = hosts.stack.wait(job_id, timeout=RESULT_TTL)
    assert job["status"] == "succeeded", job
    # Host A has no prepare worker: host B's did it, through the shared bucket.
    assert any(
        line.get("job_id") == job_id and line.get("stage") == "prepare"
        for line in _log_lines(hosts.prepare_worker)
    )
    key = _image_key(image.read_bytes())
    assert key in hosts.stored()
    # Past the result TTL the job is gone, and the sweeper on host A takes its image along.
    assert _gone(hosts, key, within=RESULT_TTL + 60), hosts.stack.logs()
    with hosts.stack.session() as http:
        assert http.get(f"{hosts.stack.base_url}/v1/jobs/{job_id}").status_code == 404
    assert hosts.stored() == []  # its body went when it finished


def test_a_deleted_job_takes_its_image_at_once(hosts: TwoHosts) -> None:
    image = CORPUS / "good" / "hopper.jpg"
    submitted = hosts.stack.upload([image], {"prompt": "and this one?"})
    assert submitted.status_code == 202, submitted.text
    job = hosts.stack.wait(submitted.json()["id"], timeout=RESULT_TTL)
    assert job["status"] == "succeeded", job
    key = _image_key(image.read_bytes())
    assert key in hosts.stored()
    with hosts.stack.session() as http:
        assert http.delete(f"{hosts.stack.base_url}/v1/jobs/{job['id']}").status_code == 204
    assert key not in hosts.stored()


def test_readiness_checks_the_bucket(hosts: TwoHosts) -> None:
    with hosts.stack.session() as http:
        ready = http.get(f"{hosts.stack.base_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["storage"] == "ok"


def test_no_host_logs_the_s3_secret(hosts: TwoHosts) -> None:
    for process in hosts.stack.processes:
        assert hosts.s3.secret_key not in process.log_path.read_text(errors="replace")

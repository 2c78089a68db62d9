"""`/metrics` on the running stack: counters that move by what the jobs did, merged from
every process of the stack (API and workers share one metrics directory, as on one host).

The stack is shared by the session, so every number is read before and after. The jobs
here use `mimo-v2-omni`, which no other end-to-end test uses, so the per-model counters
move by exactly what these jobs did.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    CORPUS,
    KEYS,
    SIM_KEY,
    WEBHOOK_SECRET,
    Process,
    Receiver,
    Stack,
    data_url,
    wait_for_http,
)
from visionq.dev.ports import free_port

MODEL = "mimo-v2-omni"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "visionq-dashboard.json"
STAGES = ("queue_wait", "prepare", "pacing_wait", "upstream", "webhook")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def stage_count(samples: Samples, stage: str) -> float:
    return value(samples, "visionq_stage_seconds_count", stage=stage)


@dataclass
class Scenario:
    before: Samples
    after: Samples
    jobs: dict[str, dict[str, Any]]

    def delta(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def _until(stack: Stack, check: Callable[[Samples], bool], what: str) -> Samples:
    """The first scrape that passes `check`: a worker counts just after the job's record
    changes, so a scrape right after a job finishes may come a moment early."""
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(f"{stack.base_url}/metrics")
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics never showed {what}:\n{stack.logs()}")
        time.sleep(0.2)


def _submit(stack: Stack, body: dict[str, Any]) -> str:
    response = stack.submit({"model": MODEL, **body})
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def scenario(stack: Stack) -> Scenario:
    """Three jobs: one answered 429 once (whose pause makes the next call wait), one that
    succeeds with a webhook, one whose image does not decode."""
    receiver = Receiver().start()
    try:
        before = scrape(f"{stack.base_url}/metrics")
        image = data_url(CORPUS / "good" / "hopper.jpg")
        # A unique prompt: the simulator counts `fail_first` per directive and body.
        limited = _submit(
            stack,
            {
                "prompt": f"{uuid.uuid4()} [sim:status=429,fail_first=1,retry_after=5]",
                "images": [image],
            },
        )
        retries = "visionq_upstream_retries_total"
        labels = {"model": MODEL, "reason": "rate_limited"}
        # Once its retry is scheduled, the model is paused for 5 s: the next job waits.
        _until(
            stack,
            lambda s: value(s, retries, **labels) > value(before, retries, **labels),
            "the 429's retry",
        )
        hooked = _submit(
            stack, {"prompt": "describe", "images": [image], "webhook": {"url": receiver.url}}
        )
        broken = _submit(
            stack,
            {"prompt": "describe", "images": [data_url(CORPUS / "bad" / "truncated_jpeg.jpg")]},
        )
        jobs = {
            name: stack.wait(job_id)
            for name, job_id in (("limited", limited), ("hooked", hooked), ("broken", broken))
        }
        delivered = ("visionq_webhook_deliveries_total", {"outcome": "delivered"})
        after = _until(
            stack,
            lambda s: (
                value(
                    s, "visionq_jobs_finished_total", model=MODEL, status="succeeded", error_type=""
                )
                >= value(
                    before,
                    "visionq_jobs_finished_total",
                    model=MODEL,
                    status="succeeded",
                    error_type="",
                )
                + 2
                and value(s, delivered[0], **delivered[1])
                > value(before, delivered[0], **delivered[1])
            ),
            "the finished jobs and the delivered webhook",
        )
    finally:
        receiver.stop()
    return Scenario(before, after, jobs)


def test_the_jobs_went_as_planned(scenario: Scenario) -> None:
    jobs = scenario.jobs
    assert jobs["limited"]["status"] == "succeeded" and jobs["limited"]["attempts"] == 2
    assert jobs["hooked"]["status"] == "succeeded"
    assert jobs["broken"]["status"] == "failed"
    assert jobs["broken"]["error"]["type"] == "invalid_image"


def test_job_counters_moved_by_what_the_jobs_did(scenario: Scenario) -> None:
    d = scenario.delta
    assert d("visionq_jobs_submitted_total", model=MODEL) == 3
    assert d("visionq_jobs_finished_total", model=MODEL, status="succeeded", error_type="") == 2
    assert (
        d("visionq_jobs_finished_total", model=MODEL, status="failed", error_type="invalid_image")
        == 1
    )
    assert d("visionq_upstream_calls_total", model=MODEL, account="main", status="200") == 2
    assert d("visionq_upstream_calls_total", model=MODEL, account="main", status="429") == 1
    assert d("visionq_upstream_rate_limited_total", model=MODEL, account="main") == 1
    assert d("visionq_account_tokens_total", account="main", model=MODEL, kind="prompt") > 0
    assert d("visionq_upstream_retries_total", model=MODEL, reason="rate_limited") == 1
    assert d("visionq_pacing_waits_total", model=MODEL, limit="paused") >= 1
    assert d("visionq_http_requests_total", method="POST", endpoint="/v1/jobs", status="202") == 3
    assert d("visionq_http_request_seconds_count", method="POST", endpoint="/v1/jobs") == 3
    assert d("visionq_webhook_deliveries_total", outcome="delivered") >= 1


def test_tokens_are_what_the_upstream_and_the_formula_counted(scenario: Scenario) -> None:
    succeeded = [scenario.jobs["limited"], scenario.jobs["hooked"]]
    for kind in ("prompt", "completion"):
        expected = sum(job["result"]["usage"][f"{kind}_tokens"] for job in succeeded)
        assert expected > 0
        assert scenario.delta("visionq_tokens_total", model=MODEL, kind=kind) == expected
    estimate = sum(job["usage_estimate"]["image_tokens"] for job in succeeded)
    assert scenario.delta("visionq_tokens_total", model=MODEL, kind="image_estimate") == estimate


def test_every_stage_has_observations(scenario: Scenario) -> None:
    at_least = {"queue_wait": 3, "prepare": 3, "pacing_wait": 3, "upstream": 3, "webhook": 1}
    for stage in STAGES:
        assert (
            stage_count(scenario.after, stage) - stage_count(scenario.before, stage)
            >= at_least[stage]
        ), stage
        buckets = [
            v
            for (name, labels), v in scenario.after.items()
            if name == "visionq_stage_seconds_bucket" and ("stage", stage) in labels
        ]
        assert max(buckets) == stage_count(scenario.after, stage)  # the +Inf bucket


def test_samples_of_many_processes_are_merged(stack: Stack, scenario: Scenario) -> None:
    # Jobs finish in worker processes and requests are counted in the API's: one scrape of
    # the API shows both, read from files that several processes wrote.
    assert scenario.delta(
        "visionq_jobs_finished_total", model=MODEL, status="succeeded", error_type=""
    )
    pids = {
        match.group(1)
        for path in Path(stack.env["PROMETHEUS_MULTIPROC_DIR"]).iterdir()
        if (match := re.fullmatch(r"\w+_(\d+)\.db", path.name))
    }
    assert len(pids) >= 3, pids


def test_queue_gauges_are_read_from_redis(scenario: Scenario) -> None:
    for queue in ("prepare", "upstream", "webhooks"):
        assert ("visionq_queue_depth", frozenset({("queue", queue)})) in scenario.after
    for model in ("mimo-v2.5", MODEL):
        assert ("visionq_paced_jobs", frozenset({("model", model)})) in scenario.after


def test_metrics_need_no_key_and_hold_no_secret(stack: Stack, scenario: Scenario) -> None:
    response = requests.get(f"{stack.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "visionq_jobs_finished_total" in response.text
    for secret in (SIM_KEY, WEBHOOK_SECRET, *KEYS.values()):
        assert secret not in response.text


def test_a_worker_serves_its_metrics_on_the_metrics_port(
    stack: Stack, scenario: Scenario, tmp_path: Path
) -> None:
    port = free_port()
    env = {**stack.env, "VISIONQ_METRICS_PORT": str(port)}
    worker = Process("worker-metrics", ["worker", "--queues", "webhooks"], env, tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/metrics", worker)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        worker.stop()
    # The same directory as the stack's: what the other workers counted is there too.
    assert (
        value(
            samples, "visionq_jobs_finished_total", model=MODEL, status="succeeded", error_type=""
        )
        >= 2
    )


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for row in dashboard["panels"]
        for panel in [row, *row.get("panels", [])]
        for target in panel.get("targets", [])
    ]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bvisionq_[a-z_]+\b", expr)}


def test_the_dashboard_plots_only_what_the_stack_exposes(scenario: Scenario) -> None:
    exposed = {name for name, _ in scenario.after}
    referenced = _dashboard_metrics()
    assert referenced - exposed == set()
    # and it plots every family there is
    families = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in exposed}
    plotted = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in referenced}
    assert families - plotted == set()

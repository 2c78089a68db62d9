"""Redis commands per job, from INFO commandstats: `python -m bench.redis_commands [N]`.

Boots a whole bench stack (own redis-server, simulator, one worker per queue, sweeper,
API), warms up, resets the counters, runs N jobs of one small PNG (wait=), then reads
INFO commandstats, with per job the time Redis spent in commands (`usec`), its CPU
(`redis_cpu_ms`) and the bytes it read and wrote. A second window of the same length with no
jobs gives the idle background (worker polls, sweeper rounds), which is subtracted.
Its inputs feed the capacity estimate in docs/deployment.md. A second argument, an
`amqp://` URL, runs the stack with Celery's messages on RabbitMQ.

Round trips per job come from Redis too: MONITOR over both windows, counting each command
a client sent (one MULTI…EXEC block once) and none that a script ran. A pipeline's commands
count one each, so the figure is an upper bound.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests
from PIL import Image

from bench.intake import process_tree
from bench.stack import BenchStack, running


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _stats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def _costs(client: redis.Redis) -> dict[str, float]:
    """Time Redis spent in commands (µs, scripts' inner calls included once, in EVALSHA),
    its CPU, and the bytes it read and wrote, so far."""
    commands = client.info("commandstats")
    cpu, stats = client.info("cpu"), client.info("stats")
    return {
        "usec": sum(float(v["usec"]) for k, v in commands.items() if k != "cmdstat_info"),
        "redis_cpu_ms": 1000 * (float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])),
        "bytes_in": float(stats["total_net_input_bytes"]),
        "bytes_out": float(stats["total_net_output_bytes"]),
    }


#: What the benchmark itself sends (counters, the window's end): not the stack's.
_OURS = {"INFO", "CONFIG", "ECHO", "MONITOR"}
_STOP = "vq-bench-monitor-stop"


class _RoundTrips(threading.Thread):
    """The round trips clients make to Redis until `stop`, from MONITOR."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._ready = threading.Event()
        self.count = 0

    def __enter__(self) -> _RoundTrips:
        self.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        redis.Redis.from_url(self._url).echo(_STOP)
        self.join(60)

    def run(self) -> None:
        in_multi: set[str] = set()
        with redis.Redis.from_url(self._url).monitor() as monitor:
            self._ready.set()
            while True:
                line = monitor.connection.read_response()
                if not isinstance(line, bytes):
                    continue
                _, _, rest = line.decode(errors="replace").partition(" [")
                client, _, command = rest.partition("] ")
                name = command.split(" ", 1)[0].strip('"').upper()
                if _STOP in command:
                    return
                if client.endswith(" lua") or name in _OURS:
                    continue
                if name == "MULTI":
                    in_multi.add(client)
                    self.count += 1
                elif client in in_multi:
                    if name in ("EXEC", "DISCARD"):
                        in_multi.discard(client)
                else:
                    self.count += 1


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants."""
    total = 0.0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _stage_cpu(stack: BenchStack) -> dict[str, float]:
    """CPU seconds so far of each process of the stack, by what it runs."""
    out: dict[str, float] = {}
    for child in stack.children:
        args = [str(a) for a in child.args][3:]
        name = args[0] if args[0] != "worker" else f"worker {args[2]}"
        out[name] = out.get(name, 0.0) + _tree_cpu(child.pid)
    return out


def _per_job(
    before: dict[str, float], after: dict[str, float], idle: dict[str, float], n: int
) -> dict[str, float]:
    return {k: (after[k] - before[k] - idle[k]) / n for k in before}


def main(n: int = 200, broker_url: str | None = None) -> None:
    body = {
        "model": "mimo-v2.5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _png()}},
                    {"type": "text", "text": "what colour?"},
                ],
            }
        ],
    }
    # A budget that never binds, and a simulator without MiMo's limit: waiting for either
    # would add the pacer's polls to every job.
    env = {"VISIONQ_UPSTREAM_RPM": "1000000", "VISIONQ_UPSTREAM_CONCURRENCY": "64"}
    if broker_url:
        env["VISIONQ_BROKER_URL"] = broker_url
    with running(
        workers={"prepare": 1, "upstream": 1, "webhooks": 1},
        simulator_args=("--rpm", "0"),
        env=env,
    ) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        session = requests.Session()
        headers = {"Authorization": "Bearer key-big", "Prefer": "wait=60"}

        def one(_: int) -> str:
            r = session.post(f"{stack.api_url}/v1/jobs", json=body, headers=headers, timeout=90)
            r.raise_for_status()
            return r.json()["status"]

        for i in range(5):
            one(i)
        time.sleep(2)
        with _RoundTrips(stack.redis_url) as trips_with_jobs:
            client.config_resetstat()
            costs_before, cpu_before = _costs(client), _stage_cpu(stack)
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(one, range(n)))
            busy = time.monotonic() - t0
            time.sleep(1)
            window = time.monotonic() - t0
            with_jobs = _stats(client)
            costs_after, cpu_after = _costs(client), _stage_cpu(stack)
        with _RoundTrips(stack.redis_url) as trips_idle:
            client.config_resetstat()
            idle_before, idle_cpu_before = _costs(client), _stage_cpu(stack)
            time.sleep(window)
            idle = _stats(client)
            idle_after, idle_cpu_after = _costs(client), _stage_cpu(stack)
    assert all(s == "succeeded" for s in statuses), statuses
    names = sorted(set(with_jobs) | set(idle))
    per_job = {k: (with_jobs.get(k, 0) - idle.get(k, 0)) / n for k in names}
    total = sum(with_jobs.values()) - sum(idle.values())
    print(
        json.dumps(
            {
                "jobs": n,
                "busy_s": round(busy, 1),
                "window_s": round(window, 1),
                "commands_with_jobs": sum(with_jobs.values()),
                "commands_idle_same_window": sum(idle.values()),
                "commands_per_job": round(total / n, 1),
                "round_trips_per_job": round((trips_with_jobs.count - trips_idle.count) / n, 1),
                **{
                    name: round(value, 3)
                    for name, value in _per_job(
                        costs_before,
                        costs_after,
                        {k: idle_after[k] - idle_before[k] for k in idle_after},
                        n,
                    ).items()
                },
                "cpu_ms_per_job_by_process": {
                    name: round(
                        1000
                        * (
                            cpu_after[name]
                            - cpu_before[name]
                            - (idle_cpu_after[name] - idle_cpu_before[name])
                        )
                        / n,
                        3,
                    )
                    for name in cpu_after
                },
                "per_job_by_command": {
                    k: round(v, 2) for k, v in per_job.items() if abs(v) >= 0.05
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, sys.argv[2] if len(sys.argv) > 2 else None)

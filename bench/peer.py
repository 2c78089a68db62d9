"""The peer: the image-job app a user would write from Flask's and Celery's own docs,
to measure visionq against in the same run (`bench.headtohead`).

One Flask route saves the upload and calls `describe.delay(path, prompt)`; one Celery
task base64-encodes the file and `requests.post`s it to the upstream; the answer goes to
Celery's Redis result backend, and a second route reads it from there. Nothing else:
no validation, token count, pacing, lease, retry or webhook. It is served exactly as
`visionq api` serves the API (bench.baseline_apps: gunicorn, same worker class, workers
and threads), and its worker is Celery's own default (prefork, a process per `--concurrency`).

`python -m bench.peer api --port N` / `python -m bench.peer worker --concurrency N`, both
configured by `PEER_REDIS_URL`, `PEER_FOLDER`, `PEER_UPSTREAM` (a chat-completions base
URL) and `PEER_KEY`.
"""

from __future__ import annotations

import base64
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import requests
from celery import Celery
from celery.result import AsyncResult
from flask import Flask, request

celery = Celery(
    "peer",
    broker=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"),
)


@celery.task
def describe(path: str, prompt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    body = {
        "model": "mimo-v2.5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
    }
    response = requests.post(
        f"{os.environ['PEER_UPSTREAM']}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {os.environ['PEER_KEY']}"},
        timeout=300,
    )
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def create_app() -> Flask:
    app = Flask("peer")
    folder = Path(os.environ["PEER_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)

    @app.post("/jobs")
    def submit() -> tuple[dict[str, str], int]:
        path = folder / uuid.uuid4().hex
        request.files["image"].save(path)
        task = describe.delay(str(path), request.form["prompt"])
        return {"id": task.id}, 202

    @app.get("/jobs/<task_id>")
    def get(task_id: str) -> dict[str, Any]:
        result = AsyncResult(task_id, app=celery)
        return {"status": result.state, "answer": result.result if result.successful() else None}

    return app


def main() -> None:
    role = sys.argv[1]
    if role == "worker":
        celery.worker_main(["worker", "--loglevel", "warning", *sys.argv[2:]])
        return
    from bench.baseline_apps import serve

    port = int(sys.argv[sys.argv.index("--port") + 1])
    serve(create_app(), port)


if __name__ == "__main__":
    main()

"""The intake benchmarks' baselines: the least a Flask app can do for the same request,
served exactly as `visionq api` serves the API (gunicorn, same worker class, workers and
threads), so that a ratio to them measures our code and not the server.

`python -m bench.baseline_apps hello --port N`: a bare route answering "hello" to any
method (B1). `python -m bench.baseline_apps upload --port N --redis-url URL --folder DIR`:
the naive upload handler, `file.save()` into a folder plus an `LPUSH` of its name (B2).
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import redis
from flask import Flask, request
from gunicorn.app.base import BaseApplication

from service.server import worker_options
from visionq.cli import parser as visionq_parser

#: The list the naive handler pushes to; nobody consumes it.
NAIVE_QUEUE = "naive-uploads"


def hello_app() -> Flask:
    app = Flask("hello")

    @app.route("/", methods=["GET", "POST"])
    def hello() -> str:
        return "hello"

    return app


def upload_app(redis_url: str, folder: Path) -> Flask:
    app = Flask("naive-upload")
    client = redis.Redis.from_url(redis_url)
    folder.mkdir(parents=True, exist_ok=True)

    @app.post("/")
    def upload() -> tuple[dict[str, str], int]:
        name = uuid.uuid4().hex
        request.files["image"].save(folder / name)
        client.lpush(NAIVE_QUEUE, name)
        return {"id": name}, 202

    return app


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def serve(app: Flask, port: int) -> None:
    """Serve `app` as `visionq api` serves the API, with its own defaults (read from its
    parser rather than restated here)."""
    api = visionq_parser().parse_args(["api"])
    options = worker_options(workers=api.workers, threads=api.threads)
    _Server(app, {"bind": f"127.0.0.1:{port}", "accesslog": None, **options}).run()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("app", choices=("hello", "upload"))
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--redis-url")
    args.add_argument("--folder", type=Path)
    given = args.parse_args()
    app = hello_app() if given.app == "hello" else upload_app(given.redis_url, given.folder)
    serve(app, given.port)


if __name__ == "__main__":
    main()

"""`visionq api`: the app under gunicorn, the production WSGI server."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from service.app import create_app
from visionq.settings import Settings


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Built in each worker after the fork: no Redis connection crosses a fork.
        return create_app(self._settings)


def serve(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    """Threaded workers, because `?wait=` holds a request open while the job runs."""
    _Gunicorn(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            # gthread stops accepting past worker_connections (default 1000): leave room above
            # the threads so a health check still gets in while every thread holds a long-poll.
            "worker_connections": threads + 64,
            "timeout": 120,
            "graceful_timeout": 30,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        },
    ).run()

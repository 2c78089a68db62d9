"""`visionq api`: the app under gunicorn, the production WSGI server."""

from __future__ import annotations

import functools
import json
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication
from werkzeug.serving import WSGIRequestHandler, make_server

from service.app import create_app
from visionq.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: What the health listener answers; anything else there is 404.
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class _Gunicorn(BaseApplication):
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


class _Logger(glogging.Logger):
    """gunicorn's own lines ("Booting worker", a worker timeout) through the root logger's
    handler (`visionq.ops.logs.configure`), so they are in our format like every other line."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers = []
        self.error_log.propagate = True


def _json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (a request line or headers over its limits, a malformed
    request) in our JSON error shape rather than its HTML page. gunicorn has no hook for
    these, so its writer is replaced; the message is the reason only, since gunicorn's
    detail can quote the request."""
    error = {"type": "internal" if status_int >= 500 else "invalid_request"}
    body = json.dumps({"error": error | {"message": reason, "param": None}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


def worker_options(*, workers: int, threads: int) -> dict[str, Any]:
    """How the API serves requests: threaded workers, because `?wait=` holds a request
    open while the job runs. The benchmarks' baseline apps (bench/baseline_apps.py) are
    served with the same options, so that a ratio compares the apps, not the servers."""
    return {
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # gthread stops accepting past worker_connections (default 1000): leave room above
        # the threads so a health check still gets in while every thread holds a long-poll.
        "worker_connections": threads + 64,
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
    }


class _HealthHandler(WSGIRequestHandler):
    #: A client that stops sending mid-request holds its thread no longer than this.
    timeout = 5

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Probes come every few seconds: counted in /metrics, not logged."""


def _health_only(wsgi_app: WSGIApplication) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in HEALTH_PATHS:
            return wsgi_app(environ, start_response)
        error = {"type": "not_found", "message": "this port serves health and metrics only"}
        body = json.dumps({"error": error | {"param": None}}).encode()
        start_response(
            "404 Not Found",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def _serve_health(listener: socket.socket, worker: Any) -> None:
    """In each gunicorn worker, after its app is loaded: the health listener (bound once,
    in the master) served by threads of its own, outside the worker's request threads.
    A trickling upload or a thousand long-polls can hold every one of those; the kernel
    hands each probe to whichever worker accepts it first, and any live worker answers."""
    host, port = listener.getsockname()[:2]
    server = make_server(
        host,
        port,
        _health_only(worker.wsgi),
        threaded=True,
        request_handler=_HealthHandler,
        fd=listener.fileno(),
    )
    threading.Thread(target=server.serve_forever, name="vq-health", daemon=True).start()


def serve(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    util.write_error = _json_error
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        **worker_options(workers=workers, threads=threads),
        # Requests are counted in /metrics rather than logged one line each.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": _Logger,
    }
    if settings.health_port:
        # Bound here, before the workers fork, so that a port in use stops the start-up.
        listener = socket.create_server((host, settings.health_port), backlog=128)
        options["post_worker_init"] = functools.partial(_serve_health, listener)
    _Gunicorn(settings, options).run()

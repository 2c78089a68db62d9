"""A server of the test's own, in a thread of the test process, on a free loopback port."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


def http_server(
    handler: type[http.server.BaseHTTPRequestHandler], port: int = 0
) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP server on loopback (a free port unless told), not yet serving; its
    request threads are daemons, so a handler still busy never holds up the session's end."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def wsgi_server(app: Flask) -> BaseWSGIServer:
    """A threaded werkzeug server for a Flask app on a free loopback port, not yet serving."""
    return make_server("127.0.0.1", 0, app, threaded=True)


@contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[str]:
    """`server` answering from a daemon thread while the block runs; yields its base URL.
    Shut down and closed at the end, so that its port is free again."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

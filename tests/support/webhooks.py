"""A webhook endpoint for tests: verifies each delivery's signature and answers as told."""

from __future__ import annotations

import base64
import http.server
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.servers import http_server, serving

#: The secret every stack of the session signs its webhooks with.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"visionq-test-webhook-secret!").decode()
#: Every webhook body any receiver got in this session, for the secret-leak check.
WEBHOOK_BODIES: list[bytes] = []


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    #: The verified event, or the reason the signature did not verify.
    verified: Any


@dataclass
class Receiver:
    """A webhook endpoint on loopback; answers from `script` in turn (then 200)."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    hold_seconds: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    _running: ExitStack = field(default_factory=ExitStack)

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    verified = Webhook(WEBHOOK_SECRET).verify(body, headers)
                except WebhookVerificationError as exc:
                    verified = exc
                receiver.deliveries.append(Delivery(self.path, headers, body, verified))
                WEBHOOK_BODIES.append(body)
                time.sleep(receiver.hold_seconds)
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http_server(Handler, self.port)
        self.port = server.server_address[1]
        self._running.enter_context(serving(server))
        return self

    def stop(self) -> None:
        self._running.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

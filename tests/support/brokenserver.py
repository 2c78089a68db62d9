"""An image server on loopback whose answers break off the ways a remote server's do.

Each path is one behaviour, and the server counts the requests it gets for each, so a
test can tell how often the service tried a URL:

- `/whole`: the image, complete (the control: the server itself is fine);
- `/slow`: the image, complete, in two halves `every` seconds apart;
- `/trickle`: the headers at once, then the body a byte every `every` seconds, so only a
  total deadline ends the read;
- `/short`: a Content-Length, then half the body, then a clean close;
- `/reset`: a Content-Length, half the body, then a reset (RST) instead of a close.

Real sockets and threads, nothing stood in for: what the fetcher reads is what a broken
server on the internet would send.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable


class Server:
    """A loopback TCP server that runs `serve(conn)` for each connection in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self._serve = serve
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._accepter.join()
        for thread in self._threads:
            thread.join(timeout=10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client hanging up is not a failure
            conn.setblocking(True)
            self._serve(conn)


class BrokenImageServer:
    def __init__(self, image: bytes, *, every: float = 1.0) -> None:
        self.image = image
        self.every = every
        self.requests: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = Server(self._respond)
        self.port = self._server.port

    def url(self, behaviour: str, name: str = "image.png") -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}/{name}"

    def seen(self, behaviour: str) -> int:
        with self._lock:
            return self.requests[behaviour]

    def __enter__(self) -> BrokenImageServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.__exit__(*exc_info)

    def _respond(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            block = conn.recv(65536)
            if not block:
                return
            head += block
        path = head.split(b" ", 2)[1].decode()
        behaviour = path.strip("/").split("/")[0]
        with self._lock:
            self.requests[behaviour] += 1
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(self.image)}\r\nConnection: close\r\n\r\n".encode()
        )
        half = self.image[: len(self.image) // 2]
        if behaviour == "whole":
            conn.sendall(self.image)
        elif behaviour == "slow":
            conn.sendall(half)
            time.sleep(self.every)
            conn.sendall(self.image[len(half) :])
        elif behaviour == "trickle":
            self._trickle(conn)
        elif behaviour == "short":
            conn.sendall(half)
        elif behaviour == "reset":
            conn.sendall(half)
            # Linger on with a zero timeout: close() sends RST, not FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _trickle(self, conn: socket.socket) -> None:
        for i in range(len(self.image)):
            if self._stop.is_set():
                return
            conn.sendall(self.image[i : i + 1])
            if select.select([conn], [], [], self.every)[0] and not conn.recv(65536):
                return  # the client hung up

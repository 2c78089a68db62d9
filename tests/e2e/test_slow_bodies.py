"""Uploads whose body trickles in must not starve the API (issue 14, defect 4).

Each trickle is a raw socket that sends an authenticated multipart submit declaring
50 MB, the first part's headers, and then one byte a second. The API under test runs
one gunicorn process of 16 threads (so that a few dozen trickles are more than its
threads), with an 8 s body deadline, at most 4 uploads in progress per tenant, and the
health listener on a port of its own.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
import requests

from tests.support import CORPUS, KEYS, Process, Stack, data_url, wait_for_http
from visionq.dev.ports import free_port

THREADS = 16
DEADLINE = 8.0
CAP = 4
#: Tenants of their own for the saturation test, so that 4 each are more than 16 threads.
CROWD = {f"crowd{n}": f"key-crowd{n}" for n in range(5)}
#: A probe must answer within this while trickles hold the API (generous: 2 shared cores).
ANSWER_SECONDS = 3.0
BOUNDARY = "trickle-boundary"


@dataclass
class Trickle:
    sock: socket.socket
    started: float
    received: bytes = b""
    ended: float | None = None

    @property
    def status(self) -> int | None:
        head = self.received.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else None

    @property
    def error(self) -> dict:
        return json.loads(self.received.split(b"\r\n\r\n", 1)[1])["error"]

    def header(self, name: str) -> str | None:
        for line in self.received.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            key, _, value = line.decode("latin1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def _open(base_url: str, key: str, bulk: int = 0, *, as_json: bool = False) -> Trickle:
    """A trickle, after `bulk` bytes of the image sent at once (enough, past the API's
    1 MiB reads, for its spool to exist); `as_json`: a JSON body with a data URL instead."""
    url = urlparse(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=5)
    if as_json:
        content_type = "application/json"
        preamble = b'{"prompt": "x", "images": ["data:image/jpeg;base64,'
    else:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        preamble = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="slow.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    sock.sendall(head + preamble + b"\xff" * bulk)
    sock.setblocking(False)
    return Trickle(sock, time.monotonic())


def _answered(trickle: Trickle) -> bool:
    _, found, body = trickle.received.partition(b"\r\n\r\n")
    if not found:
        return False
    length = trickle.header("Content-Length")
    return length is not None and len(body) >= int(length)


def _trickle_all(trickles: list[Trickle], seconds: float) -> None:
    """One byte a second on every trickle until it is answered or closed, for at most
    `seconds`; then every socket is closed."""
    stop = time.monotonic() + seconds
    next_byte = time.monotonic()
    try:
        while time.monotonic() < stop:
            live = [t for t in trickles if t.ended is None]
            if not live:
                return
            if time.monotonic() >= next_byte:
                next_byte += 1.0
                for t in live:
                    # Closed by the server: its answer is read below.
                    with contextlib.suppress(OSError):
                        t.sock.send(b"x")
            readable, _, _ = select.select([t.sock for t in live], [], [], 0.1)
            for t in live:
                if t.sock not in readable:
                    continue
                try:
                    data = t.sock.recv(65536)
                except OSError:
                    data = b""
                t.received += data
                if not data or _answered(t):
                    t.ended = time.monotonic()
    finally:
        for t in trickles:
            t.sock.close()


def _start(trickles: list[Trickle], seconds: float) -> threading.Thread:
    thread = threading.Thread(target=_trickle_all, args=(trickles, seconds), daemon=True)
    thread.start()
    return thread


def _timed_get(url: str) -> tuple[int | None, float]:
    """Status (None: no answer in time) and seconds taken."""
    started = time.monotonic()
    try:
        status = requests.get(url, timeout=ANSWER_SECONDS).status_code
    except requests.RequestException:
        status = None
    return status, time.monotonic() - started


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    port, health = free_port(), free_port()
    keys = ",".join(f"{t}:{k}" for t, k in (KEYS | CROWD).items())
    env = dict(
        stack.env,
        VISIONQ_API_KEYS=keys,
        VISIONQ_BODY_READ_TIMEOUT=str(DEADLINE),
        VISIONQ_MAX_UPLOADS=str(CAP),
        VISIONQ_HEALTH_PORT=str(health),
    )
    args = ["api", "--port", str(port), "--workers", "1", "--threads", str(THREADS)]
    process = Process("api-16-threads", args, env, tmp_path_factory.mktemp("logs-slow"))
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base_url}/healthz", process)
        yield base_url, f"http://127.0.0.1:{health}"
    finally:
        process.stop()


def _tmp_files(stack: Stack) -> list[str]:
    tmp = stack.storage_root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def test_one_tenants_trickling_uploads_leave_the_api_to_the_others(
    stack: Stack, api: tuple[str, str]
) -> None:
    base_url, _ = api
    # The first CAP take the tenant's upload slots (uploads spooling, and one JSON body),
    # the rest find none.
    trickles = [_open(base_url, KEYS["alice"], bulk=2 * 1024 * 1024) for _ in range(CAP - 1)]
    trickles.append(_open(base_url, KEYS["alice"], as_json=True))
    time.sleep(0.5)
    trickles += [_open(base_url, KEYS["alice"]) for _ in range(3 * THREADS - CAP)]
    thread = _start(trickles, 3 * DEADLINE)
    time.sleep(1.5)
    spooling = _tmp_files(stack)
    health, health_seconds = _timed_get(f"{base_url}/healthz")
    started = time.monotonic()
    try:
        submit = requests.post(
            f"{base_url}/v1/jobs",
            headers={"Authorization": f"Bearer {KEYS['bob']}"},
            json={"prompt": "what is this?", "images": [data_url(CORPUS / "good" / "hopper.jpg")]},
            timeout=5,
        )
        submit_status: int | None = submit.status_code
    except requests.RequestException:
        submit_status = None
    submit_seconds = time.monotonic() - started
    thread.join(4 * DEADLINE)
    statuses = [t.status for t in trickles]
    print(
        f"\nwhile {len(trickles)} trickles of one tenant ran: /healthz {health} in "
        f"{health_seconds:.2f} s, another tenant's submit {submit_status} in "
        f"{submit_seconds:.2f} s; trickles answered {sorted(statuses, key=str)}"
    )
    assert health == 200 and health_seconds < ANSWER_SECONDS
    assert submit_status == 202, submit_status
    refused = [t for t in trickles if t.status == 429]
    held = [t for t in trickles if t.status != 429]
    print(f"held trickles ended after {[round((t.ended or 0) - t.started, 1) for t in held]} s")
    # At the cap, refused at once and before the body was read; the others cut off.
    assert len(held) <= CAP, statuses
    assert all(t.error["type"] == "rate_limited" for t in refused)
    assert all(int(t.header("Retry-After") or 0) > 0 for t in refused)
    assert all(t.ended is not None and t.ended - t.started < DEADLINE - 1 for t in refused)
    for t in held:
        assert t.status == 408, t.received[:300]
        assert t.error["type"] == "invalid_request"
        assert t.header("Connection") == "close"
        assert t.ended is not None and t.ended - t.started < DEADLINE + 4
    # The partial uploads' spools existed while they trickled, and were removed.
    assert spooling, "no upload was being spooled during the trickle"
    assert _tmp_files(stack) == []
    assert stack.wait(submit.json()["id"], tenant="bob")["status"] == "succeeded"


def test_health_listener_answers_while_every_thread_is_held(
    stack: Stack, api: tuple[str, str]
) -> None:
    base_url, health_url = api
    keys = [key for key in CROWD.values() for _ in range(CAP)]
    assert len(keys) > THREADS
    trickles = [_open(base_url, key) for key in keys]
    thread = _start(trickles, 4 * DEADLINE)
    time.sleep(1.5)
    # Every request thread is reading a trickle: the main port does not answer...
    saturated, _ = _timed_get(f"{base_url}/healthz")
    # ... and the health listener does.
    answers = {path: _timed_get(f"{health_url}{path}") for path in ("/healthz", "/readyz")}
    other = requests.get(f"{health_url}/v1/jobs", timeout=ANSWER_SECONDS)
    thread.join(5 * DEADLINE)
    ended = max(t.ended or time.monotonic() for t in trickles)
    normal = time.monotonic()
    status, seconds = _timed_get(f"{base_url}/healthz")
    print(
        f"\nwith {len(trickles)} trickles holding {THREADS} threads: main /healthz {saturated}, "
        f"health listener {answers}; after the last trickle ended, main /healthz {status} in "
        f"{seconds:.2f} s ({normal - ended:.2f} s after it ended); trickles answered "
        f"{sorted(t.status or 0 for t in trickles)}"
    )
    assert saturated is None, "the API was not saturated: the test proves nothing"
    for path, (code, took) in answers.items():
        assert code == 200 and took < ANSWER_SECONDS, (path, code, took)
    assert other.status_code == 404 and other.json()["error"]["type"] == "not_found"
    assert all(t.status in (408, 429) for t in trickles), [t.status for t in trickles]
    assert status == 200
    assert _tmp_files(stack) == []

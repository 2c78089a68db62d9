"""The upstream simulator: a MiMo-compatible HTTP API that answers without a model.

It exists so that the service, its tests and its benchmarks can run end to end without a
paid key, and so that every failure path of the upstream (429s, 5xx, dropped connections,
garbage bodies, slow bodies, long latency) can be provoked on demand. It validates requests
as MiMo's documentation says MiMo does, and its answer names exactly which image bytes
arrived, in which order, so a test can prove the service sent the right ones.

It stands in for one MiMo account or several: each has its keys, its rate limits, its
balance and its faults, and each key its prompt cache, so a service that spreads its calls
over accounts can be tested against the same separations MiMo makes.

All state (configured latency, accounts, counters) lives on the app object: two apps in one
process never share anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from visionq.simulator.inputs import MODELS, Api, Chat, Received, SimError, load_image, parse_chat
from visionq.simulator.state import (
    FAULT_FIELDS,
    LIMIT_FIELDS,
    Caller,
    RateLimits,
    SimAccount,
    SimState,
    Usage,
)

#: MiMo's context windows (its "Pricing and Rate Limits" page). The service's own copy is
#: configurable for its pre-check; this one is the upstream's truth and is not.
CONTEXT_LENGTH: dict[str, int] = {"mimo-v2.5": 1_048_576, "mimo-v2-omni": 262_144}
_STATE = "visionq_simulator"
_CHAT_ENDPOINTS = {"openai_chat", "anthropic_messages"}
_SLOW_BODY_PIECES = 20
_CONFIG_SHAPE = (
    'the body must be {"latency": s, "rpm": n, "tpm": n, "concurrency": n} (every account) '
    'or {"account": name, "rpm": n, "tpm": n, "concurrency": n, "revoked": true|false, '
    '"balance": n|null, "burst_402_over": n} (that account), every member but "account" optional'
)
_EVERY_ACCOUNT = frozenset({"latency", *LIMIT_FIELDS})
_ONE_ACCOUNT = frozenset({"account", *LIMIT_FIELDS, *FAULT_FIELDS})
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    421: "content_filter_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def _state() -> SimState:
    state: SimState = current_app.extensions[_STATE]
    return state


def _non_negative(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number >= 0")
    return float(value)


def create_app(
    *,
    api_key: str | None = None,
    latency: float = 0.0,
    limits: RateLimits | None = None,
    accounts: Sequence[SimAccount] | None = None,
) -> Flask:
    """A fresh simulator app.

    Without `accounts` it is one account, `default`, whose key is `api_key` (None accepts
    any non-empty key, but not none) and whose `limits` default to MiMo's published ones.
    With `accounts`, those are its accounts, and `api_key` and `limits` must not be given:
    each account brings its own. A name or a key given twice is a ValueError.
    """
    app = Flask("simulator")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep MiMo's documented order
    app.extensions[_STATE] = SimState(
        latency=_non_negative(latency, "latency"),
        api_key=api_key,
        limits=limits,
        accounts=accounts,
    )

    @app.post("/v1/chat/completions", endpoint="openai_chat")
    def openai_chat() -> Response:
        return _chat("openai")

    @app.post("/anthropic/v1/messages", endpoint="anthropic_messages")
    def anthropic_messages() -> Response:
        return _chat("anthropic")

    @app.get("/")
    def index() -> Response:
        return jsonify(
            service="visionq-simulator",
            note="a development stand-in for MiMo, not the real model",
            models=list(MODELS),
            endpoints=["/v1/chat/completions", "/anthropic/v1/messages"],
        )

    @app.get("/_sim/stats")
    def stats() -> Response:
        return jsonify(_state().stats())

    @app.route("/_sim/config", methods=["GET", "POST"])
    def config() -> Response:
        state = _state()
        if request.method == "POST":
            try:
                _configure(state, request.get_json(silent=True))
            except SimError as exc:
                return _openai_error(exc)
        return jsonify(state.config())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _openai_error(SimError(exc.code or 500, exc.description or exc.name))

    @app.after_request
    def mark(response: Response) -> Response:
        response.headers["X-Simulator"] = "visionq"
        if request.endpoint in _CHAT_ENDPOINTS:
            outcome = "dropped" if g.get("sim_dropped") else str(response.status_code)
            _state().record(outcome, g.get("sim_account"))
        return response

    return app


def _configure(state: SimState, body: object) -> None:
    """Check a `POST /_sim/config` body whole, then apply it: a bad member changes nothing."""
    if not isinstance(body, dict):
        raise SimError(400, _CONFIG_SHAPE)
    one = "account" in body
    if set(body) - (_ONE_ACCOUNT if one else _EVERY_ACCOUNT) or (
        one and not isinstance(body["account"], str)
    ):
        raise SimError(400, _CONFIG_SHAPE)
    try:
        limits = {k: int(_non_negative(body[k], k)) for k in LIMIT_FIELDS if k in body}
        faults = {k: _fault_value(k, body[k]) for k in FAULT_FIELDS if k in body}
        latency = _non_negative(body["latency"], "latency") if "latency" in body else None
    except ValueError as exc:
        raise SimError(400, str(exc)) from None
    state.configure(account=body.get("account"), latency=latency, limits=limits, faults=faults)


def _fault_value(name: str, value: object) -> bool | int | None:
    if name == "revoked":
        if not isinstance(value, bool):
            raise ValueError("revoked must be true or false")
        return value
    if name == "balance" and value is None:  # unlimited again
        return None
    return int(_non_negative(value, name))


def _chat(api: Api) -> Response:
    """One chat call: auth, parse, latency, faults, then the images and the answer."""
    state = _state()
    raw = request.get_data(cache=False)
    delay = state.current_latency()
    try:
        caller = _authenticate(state, api)
        chat = parse_chat(api, raw)
    except SimError as exc:
        time.sleep(delay)
        return _error(api, exc)
    try:
        entry = state.admit(caller.account, chat.model)
    except SimError as exc:
        return _error(api, exc)
    try:
        return _admitted(api, chat, raw, caller, entry, delay)
    finally:
        state.leave(caller.account, chat.model)


def _admitted(
    api: Api, chat: Chat, raw: bytes, caller: Caller, entry: list[float], delay: float
) -> Response:
    state = _state()
    directives = chat.directives
    time.sleep(delay if directives.latency is None else directives.latency)
    if directives.fails:
        fault = _fault(api, chat, raw)
        if fault is not None:
            return fault
    try:
        received = [load_image(ref) for ref in chat.images]
        state.charge(caller.account, chat.model, entry, _prompt_tokens(chat, received))
        body, usage = _answer(api, chat, received, state.recall(caller, received))
    except SimError as exc:
        return _error(api, exc)
    state.bill(caller, chat.model, usage, received)
    if directives.slow_body:
        return _slow_json(body, directives.slow_body)
    return jsonify(body)


def _authenticate(state: SimState, api: Api) -> Caller:
    """`api-key`, else `Authorization: Bearer`, else (Anthropic) `x-api-key`. Never echoed.

    A revoked key is refused as a key MiMo never issued is: an answer cannot tell them apart.
    """
    headers = request.headers
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    presented = (
        headers.get("api-key")
        or (token.strip() if scheme.lower() == "bearer" else "")
        or (headers.get("x-api-key", "") if api == "anthropic" else "")
    )
    if not presented:
        raise SimError(401, "missing API key (send it in the api-key header)")
    caller = state.identify(presented)
    if caller is None:
        raise SimError(401, "invalid API key")
    g.sim_account = caller.account  # from here on, the request counts against its account
    if state.revoked(caller.account):
        raise SimError(401, "invalid API key")
    return caller


def _fault(api: Api, chat: Chat, raw: bytes) -> Response | None:
    """The failure the directives ask for, or None once `fail_first` failures (or the
    steps of a `sequence`) were served.

    Tries are counted by the directive text and the hash of the whole body, so the retries
    of one job share a count while other requests do not disturb it.
    """
    d = chat.directives
    key = hashlib.sha256(
        chat.directive_text.encode() + b"\0" + hashlib.sha256(raw).digest()
    ).hexdigest()
    step: str | None = None
    if d.sequence is not None:
        attempt = _state().attempt(key)
        if attempt > len(d.sequence):
            return None
        step = d.sequence[attempt - 1]
    elif d.fail_first is not None and _state().attempt(key) > d.fail_first:
        return None
    if step is not None and not step.isdigit():
        return _drop(api) if step == "drop" else _malformed()
    if step is None and d.drop:
        return _drop(api)
    if step is None and d.status is None and d.malformed:
        return _malformed()
    status = int(step) if step is not None else d.status or 503
    headers = {}
    if d.retry_after is not None or status in (429, 503):
        headers["Retry-After"] = f"{1.0 if d.retry_after is None else d.retry_after:g}"
    message = f"simulated {status} ({chat.directive_text})"
    if d.echo_headers:
        message += "; request headers: " + ", ".join(f"{k}: {v}" for k, v in request.headers)
    return _error(api, SimError(status, message, headers=headers))


def _malformed() -> Response:
    return Response(
        '{"id": "sim-malformed", "choices": [{"mess', 200, content_type="application/json"
    )


def _drop(api: Api) -> Response:
    """Close the connection with no response at all, as a crashed upstream or proxy would.

    Shutting the socket down makes the server's write of the response fail, which werkzeug
    (and gunicorn) treat as a client that went away: nothing reaches the client.
    """
    sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        message = "the drop directive needs a server that exposes its socket"
        return _error(api, SimError(500, message))
    g.sim_dropped = True
    with contextlib.suppress(OSError):  # already gone: the effect we wanted anyway
        sock.shutdown(socket.SHUT_RDWR)
    return Response(b"", 444)  # never sent; nginx's "no response" code, for the server's log


def _prompt_tokens(chat: Chat, received: list[Received]) -> int:
    return sum(image.tokens for image in received) + chat.text_chars // 4 + 1


#: How much of each user text the answer quotes: an answer is as long as the model makes
#: it (at most its output limit), not as long as the prompt.
QUOTED_CHARS = 200


def _quoted(text: str) -> str:
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "..."


def _answer(
    api: Api, chat: Chat, received: list[Received], cached_tokens: int
) -> tuple[dict[str, Any], Usage]:
    """The deterministic answer and its token usage, or MiMo's context-length refusal."""
    image_tokens = sum(image.tokens for image in received)
    text_tokens = chat.text_chars // 4 + 1
    prompt_tokens = _prompt_tokens(chat, received)
    window = CONTEXT_LENGTH[chat.model]
    if prompt_tokens > window:
        raise SimError(
            400,
            f"This model's maximum context length is {window} tokens; the request needs "
            f"{prompt_tokens} ({image_tokens} for images, {text_tokens} for text)",
            param="messages",
        )
    content = (
        f"simulator saw {len(received)} image(s): "
        + "; ".join(image.describe(number) for number, image in enumerate(received, 1))
        + f". text: {' | '.join(_quoted(text) for text in chat.user_texts)}"
    )
    reasoning = f"simulated reasoning over {len(received)} image(s)"
    reasoning_tokens = len(reasoning) // 4
    completion_tokens = len(content) // 4 + reasoning_tokens
    usage = Usage(prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, image_tokens)
    answer_id = uuid.uuid4().hex
    if api == "anthropic":
        return {
            "id": f"msg_{answer_id}",
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": [
                {"type": "thinking", "thinking": reasoning, "signature": "sim"},
                {"type": "text", "text": content},
            ],
            "stop_reason": "end_turn",
            "usage": {  # as Anthropic's: the input counted here is the part not read from cache
                "input_tokens": prompt_tokens - cached_tokens,
                "cache_read_input_tokens": cached_tokens,
                "output_tokens": completion_tokens,
            },
        }, usage
    return {
        "id": answer_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "system_fingerprint": "visionq-simulator",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": content,
                    "reasoning_content": reasoning,
                    "tool_calls": None,
                },
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "prompt_tokens_details": {
                "cached_tokens": cached_tokens,
                "image_tokens": image_tokens,
            },
        },
    }, usage


def _slow_json(body: dict[str, Any], seconds: float) -> Response:
    """A 200 whose JSON arrives in pieces spread over `seconds` (headers come at once)."""
    data = jsonify(body).get_data()
    size = -(-len(data) // _SLOW_BODY_PIECES)
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    pause = seconds / max(1, len(pieces) - 1)

    def stream() -> Iterator[bytes]:
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(pause)
            yield piece

    response = Response(stream(), 200, content_type="application/json")
    response.headers["Content-Length"] = str(len(data))
    return response


def _error_object(exc: SimError) -> dict[str, Any]:
    fallback = "api_error" if exc.status >= 500 else "invalid_request_error"
    kind = _ERROR_TYPES.get(exc.status, fallback)
    return {"message": exc.message, "type": kind, "param": exc.param, "code": str(exc.status)}


def _openai_error(exc: SimError) -> Response:
    response = jsonify(error=_error_object(exc))
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def _error(api: Api, exc: SimError) -> Response:
    """OpenAI's `{"error": {...}}`, or Anthropic's `{"type": "error", "error": {...}}`."""
    if api == "openai":
        return _openai_error(exc)
    response = jsonify(type="error", error=_error_object(exc))
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response

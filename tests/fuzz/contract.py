"""What every fuzzed answer must satisfy, and the run's tally.

The contract is API.md's: no 5xx, and every error is JSON shaped
`{"error": {"type": ..., "message": ..., "param": ...|null}}` with a type from the error
table that goes with its status. Any 5xx the fuzzers meet fails the run: none is excused.
A new one is kept in test_findings.py as a fixed request that reproduces it, marked a
strict xfail while the bug is open (the fuzzer run stays red until it is fixed); once
fixed, the XPASS fails too, the mark goes, and the test stays as a plain regression test.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: API.md's error table: status -> error type. 405, 414 and 431 are not in the table; the
#: service answers them as `invalid_request` (405 in service/app.py; 414 and 431, which
#: gunicorn refuses before Flask sees the request, in service/server.py).
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "payload_too_large",
    414: "invalid_request",
    415: "unsupported_media_type",
    422: "invalid_image",
    429: "rate_limited",
    431: "invalid_request",
    503: "unavailable",
}
ERROR_KEYS = frozenset({"type", "message", "param", "upstream_status"})

#: In CI the fuzzers replay the same examples every run (as Hypothesis's own `ci` profile
#: does, on the same variable), so a red build means the code changed; on a developer's
#: machine they explore new ones each time.
DERANDOMIZE = "CI" in os.environ


def header(response: Any, name: str) -> str | None:
    """A header of a `requests` response, or of a Schemathesis one (lowercase keys, lists)."""
    value = response.headers.get(name, response.headers.get(name.lower()))
    if isinstance(value, list):
        return value[0] if value else None
    return value


def error_problems(response: Any) -> list[str]:
    """What is wrong with this error answer, measured against API.md (empty: nothing).

    `response` is a `requests.Response` or a Schemathesis one, which look alike here.
    """
    problems = []
    content_type = header(response, "Content-Type") or ""
    if not content_type.startswith("application/json"):
        problems.append(f"Content-Type is {content_type!r}, not application/json")
    try:
        body = response.json()
    except ValueError:
        return [*problems, f"the body is not JSON: {response.text[:200]!r}"]
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return [*problems, f'the body is not {{"error": {{...}}}}: {body!r:.200}']
    error = body["error"]
    expected = STATUS_TYPES.get(response.status_code)
    if expected is None:
        problems.append(f"status {response.status_code} is in no row of the error table")
    elif error.get("type") != expected:
        problems.append(f"type {error.get('type')!r} with status {response.status_code}")
    if not isinstance(error.get("message"), str) or not error["message"].strip():
        problems.append(f"message {error.get('message')!r} is not a non-empty string")
    if "param" not in error or not (error["param"] is None or isinstance(error["param"], str)):
        problems.append(f"param {error.get('param', '<missing>')!r} is not a string or null")
    if set(error) - ERROR_KEYS:
        problems.append(f"unexpected keys {sorted(set(error) - ERROR_KEYS)}")
    if response.status_code in (429, 503) and header(response, "Retry-After") is None:
        problems.append(f"{response.status_code} without Retry-After")
    return problems


# ---- the tally ----


@dataclass
class Tally:
    """One test's count of examples, statuses and 5xx."""

    name: str
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    #: 5xx answers met (each one also fails its test)
    fives: int = 0

    def record(self, response: Any, described: str) -> None:
        """Count this answer, and fail unless it keeps the contract: no 5xx, and every
        error API.md's JSON error body."""
        self.examples += 1
        status = response.status_code
        self.statuses[status] += 1
        if status >= 500:
            self.fives += 1
            raise AssertionError(f"{status} for {described}\n{response.text[:500]}")
        if status >= 400:
            problems = error_problems(response)
            assert not problems, f"{status} for {described}: {problems}"

    def line(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.name}: {self.examples} examples, {self.fives} 5xx; statuses {{{statuses}}}"


def summary(module: str, tallies: Iterable[Tally]) -> str:
    tallies = list(tallies)
    lines = [f"  {t.line()}" for t in tallies]
    lines.append(
        f"FUZZ SUMMARY {module}: {sum(t.examples for t in tallies)} examples in "
        f"{len(tallies)} tests, {sum(t.fives for t in tallies)} 5xx"
    )
    return "\n".join(lines)

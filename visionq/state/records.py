"""A job as stored, and how its fields are written to and read from the job's hash
(`encode_fields`, `decode_fields`). Pure: no Redis here. The API's job object is built
from a record by `visionq.responses`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from visionq.models import TERMINAL_STATUSES

#: Fields kept as JSON in the hash.
_JSON_FIELDS = ("images", "request", "result", "error", "webhook", "metadata")


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: the public fields plus what only workers need (`request`, `tenant`)."""

    id: str
    tenant: str
    status: str
    fields: dict[str, Any]

    @property
    def request(self) -> dict[str, Any]:
        return self.fields["request"]

    @property
    def request_in_store(self) -> bool:
        """The request is kept in the image store (`jobs.request_body_name`), not here."""
        return "request" not in self.fields

    def with_request(self, request: dict[str, Any]) -> JobRecord:
        return JobRecord(self.id, self.tenant, self.status, {**self.fields, "request": request})

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.fields["images"]

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    """The hash's values: JSON for the structured fields, text for the rest (None: left out)."""
    out = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif value is not None:
            out[name] = str(value)
    return out


def decode_fields(raw: dict[str, str]) -> dict[str, Any]:
    """The fields of a hash as `encode_fields` wrote them."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON_FIELDS:
            out[name] = json.loads(value)
        elif name in ("created_at", "started_at", "completed_at"):
            out[name] = float(value)
        elif name in ("attempts", "input_tokens"):
            out[name] = int(value)
        else:
            out[name] = value
    return out

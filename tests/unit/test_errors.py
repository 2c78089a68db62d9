"""Every error survives pickling, as a Celery task's or a pool child's exception must;
and an HTTP error Werkzeug raised gets the type of ours with its status."""

from __future__ import annotations

import pickle

import pytest

from visionq import errors


def _every_error_class() -> list[type[errors.VisionqError]]:
    found, todo = [], [errors.VisionqError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _instance(cls: type[errors.VisionqError]) -> errors.VisionqError:
    if issubclass(cls, errors.UpstreamRetryable):
        return cls("upstream said 429", upstream_status=429, retry_after=2.5)
    if issubclass(cls, errors.UpstreamError):
        return cls("upstream said no", upstream_status=400)
    if issubclass(cls, errors.RateLimited | errors.Unavailable):
        return cls("wait", retry_after=7, param="images")
    return cls("bad", param="messages[0]")


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda cls: cls.__name__)
def test_an_error_survives_pickling(cls: type[errors.VisionqError]) -> None:
    original = _instance(cls)
    copy = pickle.loads(pickle.dumps(original))  # noqa: S301 (our own bytes)
    assert type(copy) is cls
    assert copy.to_dict() == original.to_dict()
    assert vars(copy) == vars(original)
    assert str(copy) == str(original)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request"),  # not ContextLengthExceeded's type, a subclass's
        (401, "unauthorized"),
        (404, "not_found"),
        (405, "invalid_request"),  # no error of ours has it: the client's request
        (408, "invalid_request"),
        (409, "conflict"),
        (413, "payload_too_large"),
        (415, "unsupported_media_type"),
        (422, "invalid_image"),
        (429, "rate_limited"),
        (500, "internal"),
        (503, "unavailable"),
    ],
)
def test_an_http_status_maps_to_the_type_of_our_error_with_that_status(
    status: int, expected: str
) -> None:
    assert errors.type_for_status(status) == expected

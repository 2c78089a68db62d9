"""Every error survives pickling, as a Celery task's or a pool child's exception must."""

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

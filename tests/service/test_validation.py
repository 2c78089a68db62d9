"""Request validation: each refused parameter is a 400 whose `param` names it, as a
client's error message needs."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.service.test_errors import error
from tests.support import CORPUS, bearer, data_url

IMAGE = data_url(CORPUS / "good" / "hopper.jpg")


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=101", "limit"),
        ("/v1/jobs?limit=ten", "limit"),
        ("/v1/jobs?status=done", "status"),
        ("/v1/jobs?after=42", "after"),
        ("/v1/jobs/job_x?wait=61", "wait"),
        ("/v1/jobs/job_x?wait=soon", "wait"),
    ],
)
def test_a_bad_query_parameter_is_named(client: FlaskClient, path: str, param: str) -> None:
    assert (
        error(client.get(path, headers=bearer("alice")), 400, "invalid_request")["param"] == param
    )


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"prompt": "x", "images": [IMAGE]}, {"Prefer": "wait=61"}, "Prefer"),
        ({"prompt": "x", "images": [IMAGE]}, {"Idempotency-Key": "k" * 256}, "Idempotency-Key"),
        ({"prompt": "x", "images": [IMAGE], "metadata": {"a": 1}}, {}, "metadata.a"),
        (
            {"prompt": "x", "images": [IMAGE], "metadata": {f"k{i}": "v" for i in range(17)}},
            {},
            "metadata",
        ),
        ({"prompt": "x", "images": [IMAGE] * 65}, {}, "images"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x"},
                            {"type": "image_url", "image_url": {"url": "upload:3"}},
                        ],
                    }
                ]
            },
            {},
            "messages[0].content[1].image_url.url",
        ),
    ],
    ids=["prefer-wait", "idempotency-key", "metadata-value", "metadata-keys", "images", "upload"],
)
def test_a_bad_submit_is_named(
    client: FlaskClient, body: dict, headers: dict[str, str], param: str
) -> None:
    response = client.post("/v1/jobs", json=body, headers={**bearer("alice"), **headers})
    assert error(response, 400, "invalid_request")["param"] == param


def test_a_multipart_submit_with_a_file_field_of_another_name_is_named(
    client: FlaskClient,
) -> None:
    data = {"prompt": "x", "picture": (CORPUS.joinpath("good/hopper.jpg").open("rb"), "a.jpg")}
    response = client.post("/v1/jobs", data=data, headers=bearer("alice"))
    assert error(response, 400, "invalid_request")["param"] == "picture"

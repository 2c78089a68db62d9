"""The OpenAPI document and the routes the app serves are the same set, method for method:
a route added without its documentation, or documentation left behind by a removed
route, fails here."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from service.openapi import openapi_document

#: What Flask adds to every route by itself, and the one route it adds of its own.
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _served(app: Flask) -> set[tuple[str, str]]:
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <job_id> -> {job_id}
        served |= {(m, path) for m in (rule.methods or set()) - _IMPLICIT_METHODS}
    return served


def _documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
        if method in _HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_route_is_served(app: Flask) -> None:
    served, documented = _served(app), _documented()
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_the_app_serves_the_document_it_is_built_from(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json == openapi_document()

"""Schemathesis against the OpenAPI document the stack serves at /openapi.json: every
operation, with schema-valid and schema-invalid requests, over real HTTP.

The schema is built at import from `service.openapi.openapi_document()`, the function
that renders /openapi.json, and `test_served_document_is_the_one_fuzzed` checks that the
running API serves exactly it. (Schemathesis's own way to load a schema from a fixture,
`schemathesis.pytest.from_fixture`, fails on pytest 9.2: it sets `Function._nodeid`, which
pytest no longer has.)

Checks: the contract's own on every answer (no 5xx at all; every error is API.md's JSON
error body), then every check Schemathesis has but one: not_a_server_error,
status_code_conformance, content_type_conformance, response_schema_conformance,
response_headers_conformance, negative_data_rejection, missing_required_header,
unsupported_method, ignored_auth and the rest. Left out or narrowed, and why:
- `positive_data_acceptance` is off: the schema cannot say everything the intake checks
  (an image URL's syntax, a data URL's base64, the model names, that a webhook host
  resolves, at least one image), so most schema-valid bodies are rightly 400.
  test_submit_fuzz.py covers the bodies that pass.
- GETs get no made-up query parameters as negative cases (see CONFIG).
- `negative_data_rejection` is skipped for multipart bodies: every form field travels as
  a string, so a "wrong type" mutation (the integer 0 for `webhook_url`) often arrives as
  a perfectly valid field ("0"), and the check then calls a right 200 a failure.
"""

from __future__ import annotations

import json
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection

from service.openapi import openapi_document
from tests.fuzz.contract import DERANDOMIZE, Tally
from tests.support import KEYS, Stack

#: Its own tenant, so the jobs it makes do not crowd alice's lists in the other tests.
AUTH = {"Authorization": f"Bearer {KEYS['bob']}"}
MAX_EXAMPLES = 100

CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "mode": "all",  # positive and negative
            "max-examples": MAX_EXAMPLES,
            "deterministic": DERANDOMIZE,
            # The key is ours to send (below), not a parameter to fuzz; the `ignored_auth`
            # check still sends each request without it and with a wrong one.
            "with-security-parameters": False,
        },
        # A GET ignores query parameters it does not know (as most APIs do; API.md makes
        # only unknown *body* fields a 400), so an extra one is not a negative case there.
        # Bodies keep them: an unknown field in a JSON body must be a 400.
        "operations": [{"include-method": "GET", "generation": {"allow-extra-parameters": False}}],
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


def test_served_document_is_the_one_fuzzed(stack: Stack) -> None:
    served = requests.get(f"{stack.base_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(openapi_document()))


@schema.parametrize()
@settings(
    deadline=None,
    # `tally` is made once per operation's test on purpose: it counts that test's examples.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_keeps_the_contract(case: Any, stack: Stack, tally: Tally) -> None:
    response = case.call(base_url=stack.base_url, headers=AUTH, timeout=60)
    described = case.as_curl_command(headers=AUTH, base_url=stack.base_url)
    tally.record(response, described)  # fails on any 5xx
    multipart = (case.media_type or "").startswith("multipart/")
    excluded = [negative_data_rejection] if multipart else None
    case.validate_response(response, headers=AUTH, excluded_checks=excluded)

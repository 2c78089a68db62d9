"""The docs stay true to the code: the API reference is the OpenAPI document rendered, the
configuration page names every variable the code reads, the operations page every metric,
and every relative link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.openapi import openapi_document
from service.openapi_markdown import render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Read by libraries rather than by `Settings`, and documented because operators set them.
THIRD_PARTY = {
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "PROMETHEUS_MULTIPROC_DIR",
}


def test_reference_is_the_openapi_document_rendered() -> None:
    committed = (DOCS / "reference.md").read_text()
    assert committed == render(openapi_document()), (
        "docs/reference.md is stale: python -m service.openapi_markdown > docs/reference.md"
    )


def test_reference_lists_every_operation() -> None:
    committed = (DOCS / "reference.md").read_text()
    for path, operations in openapi_document()["paths"].items():
        for method in operations:
            assert f"### `{method.upper()} {path}`" in committed


def _variables_read_by_settings() -> set[str]:
    source = (ROOT / "visionq" / "settings.py").read_text()
    return set(re.findall(r'"((?:VISIONQ|MIMO)_[A-Z0-9_]+)"', source))


def _documented(page: str) -> set[str]:
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_configuration_page_names_every_variable() -> None:
    read = _variables_read_by_settings()
    assert {"VISIONQ_REDIS_URL", "VISIONQ_API_KEYS", "MIMO_API_KEY"} <= read  # the parse works
    documented = _documented((DOCS / "configuration.md").read_text())
    assert read - documented == set(), "read by Settings but not in docs/configuration.md"
    assert documented - read - THIRD_PARTY == set(), "documented but read by nobody"


def test_operations_page_explains_every_metric() -> None:
    source = (ROOT / "visionq" / "ops" / "metrics.py").read_text()
    names = set(re.findall(r'"(visionq_[a-z_]+)"', source))
    assert {"visionq_jobs_submitted", "visionq_queue_depth"} <= names  # the parse works
    page = (DOCS / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(visionq_[a-z_]+)` \|", page, re.M))
    counters = {"visionq_" + n for n in re.findall(r'Counter\(\s*"visionq_([a-z_]+)"', source)}
    expected = {n + "_total" if n in counters else n for n in names}
    assert documented == expected


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_resolve(page: Path) -> None:
    for target in _links(page):
        if re.match(r"[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"

"""The API reference in docs/ is rendered from the OpenAPI document, never written by hand,
so it cannot drift from what the service validates and answers.

    python -m service.openapi_markdown > docs/reference.md

tests/test_docs.py fails when the committed page differs from a fresh rendering.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from service.openapi import openapi_document

_METHODS = ("get", "post", "put", "patch", "delete")


def _cell(text: object) -> str:
    """One table cell: a pipe or a line break would end the cell or the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def type_of(schema: dict[str, Any]) -> str:
    """A short, readable type: `Job`, `string | null`, `array of Message`, `"auto" | "never"`."""
    if "$ref" in schema:
        ref: str = schema["$ref"]
        return ref.rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(json.dumps(value) for value in schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        return " \\| ".join(type_of(option) for option in options)
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    return str(kind)


def _bounds(schema: dict[str, Any]) -> str:
    """Limits a client must respect, from the schema and from each `anyOf` branch."""
    found = []
    for part in (schema, *schema.get("anyOf", ())):
        for key, label in (
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minLength", "length ≥"),
            ("maxLength", "length ≤"),
            ("minItems", "items ≥"),
            ("maxItems", "items ≤"),
        ):
            if key in part:
                found.append(f"{label} {part[key]}")
    return ", ".join(found)


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("summary", "")]
    if op.get("description"):
        lines += ["", op["description"]]
    if op.get("security") == []:
        lines += ["", "No authentication."]
    params = op.get("parameters", [])
    if params:
        lines += ["", "| parameter | in | type | notes |", "|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            notes = ", ".join(
                x
                for x in (
                    "required" if p.get("required") else "",
                    _bounds(schema),
                    p.get("description", ""),
                    f"e.g. `{p['example']}`" if "example" in p else "",
                )
                if x
            )
            lines.append(f"| `{p['name']}` | {p['in']} | {type_of(schema)} | {_cell(notes)} |")
    body = op.get("requestBody")
    if body:
        lines += ["", "Request body:", ""]
        for media, content in body["content"].items():
            lines.append(f"- `{media}`: {type_of(content.get('schema', {}))}")
    lines += ["", "| status | meaning | body |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        schemas = {
            type_of(content["schema"])
            for content in response.get("content", {}).values()
            if "schema" in content
        }
        shown = ", ".join(sorted(schemas)) or "—"
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {shown} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, f"Type: {type_of(schema)}.", ""]
    required = set(schema.get("required", ()))
    lines += ["| field | type | required | default | notes |", "|---|---|---|---|---|"]
    for field, spec in properties.items():
        default = f"`{json.dumps(spec['default'])}`" if "default" in spec else ""
        notes = ", ".join(x for x in (_bounds(spec), spec.get("description", "")) if x)
        lines.append(
            f"| `{field}` | {type_of(spec)} | {'yes' if field in required else ''} "
            f"| {default} | {_cell(notes)} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", "Unknown fields are refused (400)."]
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    info = document["info"]
    lines = [
        f"# {info['title']} API reference (version {info['version']})",
        "",
        "<!-- Rendered by `python -m service.openapi_markdown` from the OpenAPI document"
        " (`GET /openapi.json`); do not edit by hand. -->",
        "",
        info.get("description", ""),
        "",
        "Authentication: `Authorization: Bearer <key>` (or `api-key: <key>`) on every"
        " operation unless it says otherwise. Errors share one body,"
        " `ErrorResponse`; docs/api.md explains the types and statuses.",
        "",
        "## Operations",
        "",
    ]
    for path, operations in document["paths"].items():
        for method in _METHODS:
            if method in operations:
                lines += _operation(method, path, operations[method])
    lines += ["## Schemas", ""]
    for name, schema in sorted(document["components"]["schemas"].items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render(openapi_document()))


if __name__ == "__main__":
    main()

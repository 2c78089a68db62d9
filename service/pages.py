"""The list answer of the bulk APIs: OpenAI's and Anthropic's cursor pages."""

from __future__ import annotations

from typing import Any


def cursor_page(data: list[dict[str, Any]], has_more: bool, *, openai: bool = True) -> Any:
    """`{data, first_id, last_id, has_more}`, and OpenAI's `object: "list"` in its form."""
    page: dict[str, Any] = {"object": "list"} if openai else {}
    page.update(
        data=data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=has_more,
    )
    return page

"""Token counting: MiMo's image-token formula (reference/mimo-image-understanding.txt), as
pure integer math, and the estimate for text.

We count from the width and height alone so that a header read is enough: the count never
needs a decode. MiMo's reference rounds with Python's `round` (banker's rounding); so do we.
Text is estimated from its length, the same way at submit and in the worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

PATCH_SIZE = 16
SPATIAL_MERGE_SIZE = 2
FACTOR = PATCH_SIZE * SPATIAL_MERGE_SIZE
IMAGE_MIN_PIXELS = 8192
IMAGE_MAX_PIXELS = 8_388_608


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The (w_bar, h_bar) MiMo resizes an image to before cutting it into patches."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    h_bar = round(height / FACTOR) * FACTOR
    w_bar = round(width / FACTOR) * FACTOR
    if h_bar * w_bar > IMAGE_MAX_PIXELS:
        beta = math.sqrt((height * width) / IMAGE_MAX_PIXELS)
        h_bar = math.floor(height / beta / FACTOR) * FACTOR
        w_bar = math.floor(width / beta / FACTOR) * FACTOR
    elif h_bar * w_bar < IMAGE_MIN_PIXELS:
        beta = math.sqrt(IMAGE_MIN_PIXELS / (height * width))
        h_bar = math.ceil(height / beta / FACTOR) * FACTOR
        w_bar = math.ceil(width / beta / FACTOR) * FACTOR
    return w_bar, h_bar


def image_tokens(width: int, height: int) -> int:
    """Tokens MiMo bills for one image of this size."""
    w_bar, h_bar = fitted_size(width, height)
    return ((h_bar // PATCH_SIZE) * (w_bar // PATCH_SIZE)) // (SPATIAL_MERGE_SIZE**2)


def downscaled_by_mimo(width: int, height: int) -> bool:
    """True when MiMo itself shrinks the image (the `beta` branch for large images)."""
    return round(height / FACTOR) * round(width / FACTOR) * FACTOR * FACTOR > IMAGE_MAX_PIXELS


#: About four characters a token: the estimate for text, which we never tokenize.
TEXT_CHARS_PER_TOKEN = 4


def text_parts(messages: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """Every text of OpenAI-format messages with the parameter that names it, in order:
    a string content, or each text part of a list content."""
    for m, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            yield f"messages[{m}].content", content
            continue
        for p, part in enumerate(content):
            if part["type"] == "text":
                yield f"messages[{m}].content[{p}].text", part["text"]


def text_tokens(messages: list[dict[str, Any]]) -> int:
    """The text's share of the input, estimated from its length."""
    return sum(len(text) for _, text in text_parts(messages)) // TEXT_CHARS_PER_TOKEN


def input_tokens(messages: list[dict[str, Any]], image_tokens: int) -> int:
    """Input tokens before the call: MiMo's formula for the images (`image_tokens`) and
    the text's estimate. The context checks and the tokens-per-minute budget use it."""
    return image_tokens + text_tokens(messages)

"""MiMo's image-token formula (reference/mimo-image-understanding.txt), as pure integer math.

We count from the width and height alone so that a header read is enough: the count never
needs a decode. MiMo's reference rounds with Python's `round` (banker's rounding); so do we.
"""

from __future__ import annotations

import math

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

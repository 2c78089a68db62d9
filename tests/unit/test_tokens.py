"""The token formula against MiMo's own reference code, copied here as the oracle."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from visionq import tokens

# ---- MiMo's reference (reference/mimo-image-understanding.txt), sizes passed in directly ----
PATCH_SIZE = 16
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_MIN_PIXELS = 8192
IMAGE_MAX_PIXELS = 8388608


def calc_image_tokens(height: int, width: int) -> int:
    factor = PATCH_SIZE * SPATIAL_MERGE_SIZE  # 32
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > IMAGE_MAX_PIXELS:
        beta = math.sqrt((height * width) / IMAGE_MAX_PIXELS)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < IMAGE_MIN_PIXELS:
        beta = math.sqrt(IMAGE_MIN_PIXELS / (height * width))
        h_bar = math.ceil(height / beta / factor) * factor
        w_bar = math.ceil(width / beta / factor) * factor
    grid_t = 1
    grid_h = h_bar // PATCH_SIZE
    grid_w = w_bar // PATCH_SIZE
    num_tokens = (grid_t * grid_h * grid_w) // (SPATIAL_MERGE_SIZE**2)
    return num_tokens


# ---- end of the reference ----


sizes = st.integers(min_value=1, max_value=70_000)


@settings(max_examples=12_000, deadline=None)
@given(width=sizes, height=sizes)
@example(width=1, height=1)
@example(width=70_000, height=70_000)
@example(width=1, height=70_000)
@example(width=70_000, height=1)
@example(width=16, height=16)  # rounds to 0 before the upscale branch
@example(width=48, height=48)  # banker's rounding: 1.5 -> 2
@example(width=80, height=80)  # banker's rounding: 2.5 -> 2
@example(width=2896, height=2896)  # right at IMAGE_MAX_PIXELS
@example(width=4096, height=2048)  # exactly IMAGE_MAX_PIXELS
@example(width=128, height=64)  # exactly IMAGE_MIN_PIXELS
def test_matches_mimo_reference(width: int, height: int) -> None:
    assert tokens.image_tokens(width, height) == calc_image_tokens(height, width)


@settings(max_examples=3_000, deadline=None)
@given(width=sizes, height=sizes)
def test_fitted_size_keeps_the_count(width: int, height: int) -> None:
    """Sending an image resized to the fitted size costs the same tokens as the original."""
    w_bar, h_bar = tokens.fitted_size(width, height)
    if w_bar and h_bar and tokens.downscaled_by_mimo(width, height):
        assert tokens.image_tokens(w_bar, h_bar) == tokens.image_tokens(width, height)


def test_known_values() -> None:
    assert tokens.image_tokens(1024, 1024) == 1024
    assert tokens.image_tokens(128, 128) == 16
    assert not tokens.downscaled_by_mimo(4096, 2048)
    assert tokens.downscaled_by_mimo(6000, 4000)

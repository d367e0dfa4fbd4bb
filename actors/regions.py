"""Regions: the policy speaks in normalized boxes [x0, y0, x1, y1] in [0, 1]; cores work in pixels."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from actors.procedural import Box

SIDE_FRACTION = {"small": 0.28, "medium": 0.38, "large": 0.5}


def to_pixels(region: Sequence[float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = (float(v) for v in region)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"region {list(region)} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    box = (int(round(x0 * width)), int(round(y0 * height)), int(round(x1 * width)), int(round(y1 * height)))
    # at least 4 px each way, kept inside the image
    bx0, by0 = min(box[0], width - 4), min(box[1], height - 4)
    return bx0, by0, max(box[2], bx0 + 4), max(box[3], by0 + 4)


def to_normalized(box: Box, width: int, height: int) -> Tuple[float, float, float, float]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return (round(x0 / width, 3), round(y0 / height, 3), round(x1 / width, 3), round(y1 / height, 3))


def box_mask(box: Box, shape: Tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def place_on(foreground: np.ndarray, side: int, rng: np.random.Generator) -> Box:
    """A square box of ``side`` px whose centre lies on the foreground, inside the image."""
    h, w = foreground.shape
    side = max(4, min(side, h, w))
    ys, xs = np.nonzero(foreground)
    if len(xs):
        for _ in range(64):
            i = rng.integers(len(xs))
            x0, y0 = int(xs[i]) - side // 2, int(ys[i]) - side // 2
            if 0 <= x0 and 0 <= y0 and x0 + side <= w and y0 + side <= h:
                return x0, y0, x0 + side, y0 + side
    x0, y0 = (w - side) // 2, (h - side) // 2
    return x0, y0, x0 + side, y0 + side

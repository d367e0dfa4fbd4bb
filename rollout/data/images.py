"""Reading dataset images of any common kind as what the tools take: HxWx3 uint8 RGB.

PIL's own ``convert("RGB")`` clips a 16-bit grayscale PNG (mode ``I;16``/``I``) at 255,
which turns most of it white. Here 16-bit values are scaled to 8 bits (÷257), 32-bit
integer and float images by their own range, grayscale is repeated on three channels,
alpha is dropped, palette and CMYK images are converted. Sizes are kept as they are
(non-square images stay non-square); JPEG, BMP and TIFF read like PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

_WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        a = a / 257.0
    elif a.max(initial=0) > 255 or a.min(initial=0) < 0 or mode == "F":
        top = 65535.0 if a.min() >= 0 and a.max() <= 65535 and mode != "F" else float(a.max())
        bottom = 0.0 if mode != "F" else float(a.min())
        a = (a - bottom) / max(top - bottom, 1e-12) * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def image_to_gray8(im: Image.Image) -> np.ndarray:
    """HxW uint8 of a single-channel or colour image."""
    if im.mode in _WIDE:
        return _to_uint8(np.asarray(im), im.mode)
    return np.asarray(im.convert("L"))


def image_to_rgb(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 of any PIL image (see the module docstring for the conversions)."""
    if im.mode in _WIDE:
        g = image_to_gray8(im)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode in ("LA", "L", "1"):
        g = np.asarray(im.convert("L"))
        return np.repeat(g[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return image_to_rgb(im)


def read_mask(path: str | Path) -> np.ndarray:
    """HxW bool: a mask binarized at half its range (8- or 16-bit, grayscale or colour)."""
    with Image.open(path) as im:
        return image_to_gray8(im) >= 128

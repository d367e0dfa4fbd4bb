"""Procedural defect rendering: the weight-free core behind the IG CPU backend and the
synthetic dataset.

A defect is a ``DefectSpec`` (shape word, RGB colour, size and contrast in [0, 1]) drawn
inside a box of the image. Each shape paints a soft alpha map; the defect colour is
modulated by the underlying texture and blended with a feathered edge, so the result is
not a flat paste. Everything is deterministic given the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "dark": (40, 32, 28), "black": (12, 12, 12), "white": (245, 245, 240), "pale": (225, 215, 190),
    "brown": (120, 72, 35), "red": (190, 40, 35), "gray": (128, 128, 128), "copper": (184, 115, 51),
    "blue": (40, 80, 190), "green": (50, 150, 60), "yellow": (225, 200, 60), "beige": (220, 200, 160),
    "orange": (230, 130, 40), "shiny": (250, 250, 255), "mixed": (90, 60, 70),
}
SIZES = {"small": 0.35, "medium": 0.6, "large": 0.9}
CONTRASTS = {"low": 0.4, "medium": 0.7, "high": 0.95}
SHAPES = ("scratch", "crack", "hole", "spot", "dent", "contamination", "missing", "fold", "cut", "bent", "misplaced")


@dataclass(frozen=True)
class DefectSpec:
    shape: str
    colour: Tuple[int, int, int]
    size: float  # fraction of the box the defect spans, 0..1
    contrast: float  # blend strength, 0..1

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown defect shape {self.shape!r}; known: {', '.join(SHAPES)}")
        if not (0.0 < self.size <= 1.0 and 0.0 < self.contrast <= 1.0):
            raise ValueError("size and contrast must lie in (0, 1]")


def _line_points(rng, box: Box, span: float, n: int, wobble: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    angle = rng.uniform(0, np.pi)
    half = 0.5 * span * max(w, h)
    t = np.linspace(-1.0, 1.0, n)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    offsets = np.cumsum(rng.normal(0, wobble, n)) * max(w, h)
    pts = np.stack([cx + t * half * direction[0], cy + t * half * direction[1]], 1) + offsets[:, None] * normal
    pts[:, 0] = np.clip(pts[:, 0], x0, x1 - 1)
    pts[:, 1] = np.clip(pts[:, 1], y0, y1 - 1)
    return pts.round().astype(np.int32)


def _thickness(box: Box, size: float) -> int:
    return max(1, int(round(size * min(box[2] - box[0], box[3] - box[1]) / 14)))


def _paint_scratch(rng, alpha, box, spec):
    cv2.polylines(alpha, [_line_points(rng, box, spec.size, 12, 0.01)], False, 1.0, _thickness(box, spec.size * 0.6), cv2.LINE_AA)


def _paint_cut(rng, alpha, box, spec):
    cv2.polylines(alpha, [_line_points(rng, box, spec.size, 2, 0.0)], False, 1.0, _thickness(box, spec.size), cv2.LINE_AA)


def _paint_crack(rng, alpha, box, spec):
    pts = _line_points(rng, box, spec.size, 16, 0.035)
    cv2.polylines(alpha, [pts], False, 1.0, _thickness(box, spec.size * 0.7), cv2.LINE_AA)
    for _ in range(rng.integers(1, 3)):  # branches
        start = pts[rng.integers(3, len(pts) - 3)]
        sub = (int(start[0]) - 1, int(start[1]) - 1, int(start[0]) + 2, int(start[1]) + 2)
        sub_box = (max(box[0], sub[0] - (box[2] - box[0]) // 4), max(box[1], sub[1] - (box[3] - box[1]) // 4),
                   min(box[2], sub[2] + (box[2] - box[0]) // 4), min(box[3], sub[3] + (box[3] - box[1]) // 4))
        cv2.polylines(alpha, [_line_points(rng, sub_box, 0.8, 6, 0.05)], False, 0.9, 1, cv2.LINE_AA)


def _ellipse(rng, alpha, box, size, value=1.0):
    x0, y0, x1, y1 = box
    c = (int((x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * (x1 - x0)), int((y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * (y1 - y0)))
    axes = (max(1, int(size * (x1 - x0) / 2 * rng.uniform(0.7, 1.0))), max(1, int(size * (y1 - y0) / 2 * rng.uniform(0.7, 1.0))))
    cv2.ellipse(alpha, c, axes, rng.uniform(0, 180), 0, 360, value, -1, cv2.LINE_AA)


def _paint_hole(rng, alpha, box, spec):
    _ellipse(rng, alpha, box, spec.size * 0.7)


def _paint_spot(rng, alpha, box, spec):
    """One irregular stain: a few Gaussians jittered around a common centre, so the field
    stays one connected mark instead of a chain of dots."""
    x0, y0, x1, y1 = box
    h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rad = max(1.5, spec.size * min(x1 - x0, y1 - y0) / 3.0)
    cx, cy = rng.uniform(x0 + 1.2 * rad, max(x0 + 1.2 * rad + 1, x1 - 1.2 * rad)), rng.uniform(y0 + 1.2 * rad, max(y0 + 1.2 * rad + 1, y1 - 1.2 * rad))
    field = np.zeros(alpha.shape, np.float32)
    for _ in range(4):
        px, py = cx + rng.uniform(-0.5, 0.5) * rad, cy + rng.uniform(-0.5, 0.5) * rad
        r = rad * rng.uniform(0.6, 1.0)
        field += np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * r * r))
    alpha[:] = np.maximum(alpha, np.clip((field - 0.5) * 2.5, 0, 1))


def _paint_contamination(rng, alpha, box, spec):
    x0, y0, x1, y1 = box
    for _ in range(int(4 + 6 * spec.size)):
        r = max(1, int(round(rng.uniform(0.04, 0.09) * min(x1 - x0, y1 - y0))))
        c = (int(rng.uniform(x0 + r, max(x0 + r + 1, x1 - r))), int(rng.uniform(y0 + r, max(y0 + r + 1, y1 - r))))
        cv2.circle(alpha, c, r, 1.0, -1, cv2.LINE_AA)


def _paint_missing(rng, alpha, box, spec):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = rng.integers(5, 8)
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = spec.size * min(x1 - x0, y1 - y0) / 2 * rng.uniform(0.6, 1.0, k)
    pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).round().astype(np.int32)
    cv2.fillPoly(alpha, [pts], 1.0, cv2.LINE_AA)


_PAINTERS: Dict[str, Callable] = {
    "scratch": _paint_scratch, "cut": _paint_cut, "crack": _paint_crack, "hole": _paint_hole,
    "spot": _paint_spot, "contamination": _paint_contamination, "missing": _paint_missing,
    "fold": _paint_cut, "dent": _paint_spot, "bent": _paint_spot, "misplaced": _paint_missing,
}


def _texture_target(img: np.ndarray, colour: np.ndarray, rng) -> np.ndarray:
    """The defect colour, carrying the underlying texture and a little grain."""
    lum = img.mean(axis=2, keepdims=True) / 255.0
    grain = rng.normal(0, 6, img.shape[:2])[..., None]
    return colour[None, None, :] * (0.8 + 0.4 * (lum - lum.mean())) + grain


def _geometric_target(img: np.ndarray, box: Box, spec: DefectSpec, rng) -> np.ndarray:
    """For shape changes (dent, fold, bent, misplaced) the target is the image itself, altered."""
    out = img.astype(np.float32).copy()
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    patch = out[y0:y1, x0:x1]
    if spec.shape in ("dent", "fold"):
        ramp = np.linspace(-1, 1, w if spec.shape == "dent" else h, dtype=np.float32)
        shade = ramp[None, :, None] if spec.shape == "dent" else ramp[:, None, None]
        patch = patch * (1.0 + 0.45 * shade)
    elif spec.shape == "bent":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        amp = 0.15 * max(h, w) * spec.size
        phase = yy / max(h, 1) * np.pi * rng.uniform(1, 2)
        map_x = xx + amp * np.sin(phase)
        patch = cv2.remap(patch, map_x, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        patch = patch * (1.0 + 0.4 * np.cos(phase))[..., None]  # light follows the bend, visible on flat surfaces
    elif spec.shape == "misplaced":
        patch = np.roll(patch[::-1, ::-1], (h // 3, w // 3), axis=(0, 1))
    out[y0:y1, x0:x1] = patch
    return out


def render_defect(image: np.ndarray, box: Box, spec: DefectSpec, seed: int,
                  allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Draw ``spec`` inside ``box`` of an HxWx3 uint8 image; ``allowed`` (HxW bool, e.g. the
    object's foreground) confines the defect further, so nothing is painted off the object.

    Returns the edited image (uint8) and the defect's alpha map (float32 in [0, 1]); the
    anomaly mask is ``alpha > 0.5``.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        raise ValueError(f"box {box} is too small or outside the {w}x{h} image")
    rng = np.random.default_rng(seed)
    alpha = np.zeros((h, w), np.float32)
    _PAINTERS[spec.shape](rng, alpha, (x0, y0, x1, y1), spec)
    alpha[:y0], alpha[y1:], alpha[:, :x0], alpha[:, x1:] = 0, 0, 0, 0
    if allowed is not None:
        alpha *= allowed.astype(np.float32)
    if spec.shape in ("dent", "fold", "bent", "misplaced"):
        target = _geometric_target(image, (x0, y0, x1, y1), spec, rng)
    else:
        target = _texture_target(image, np.array(spec.colour, np.float32), rng)
    soft = cv2.GaussianBlur(alpha, (0, 0), 0.8)
    weight = (soft * spec.contrast)[..., None]
    out = image.astype(np.float32) * (1 - weight) + target * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), np.clip(alpha, 0, 1)


def spec_from_words(shape: str, colour: str, size: str, contrast: str) -> DefectSpec:
    """A spec from knowledge-base words (``COLOURS``/``SIZES``/``CONTRASTS`` keys)."""
    return DefectSpec(shape, COLOURS[colour], SIZES[size], CONTRASTS[contrast])

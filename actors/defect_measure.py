"""What a defect looks like, measured from a normal image and its edited version: the torch-
and Ray-free core of the metric judge (QE) and of the delivery gate.

``measure`` finds the changed pixels and describes them with the same words the knowledge
base uses — a shape group (line, blob, scattered), a colour shift, a size — plus where the
change lies (on the object, inside the asked region). ``match`` compares one measurement
with one knowledge entry factor by factor, each in [0, 1], so a judge can say *which*
property is wrong, and a wrong one cannot be averaged away by the others.

The expected colour is not the knowledge entry's colour itself: a defect is blended into
the surface (contrast) and its thin parts are softened, so we compare the measured colour
*shift* with the expected shift ``contrast × (colour − surface)``, allowing an attenuation
in ``[ATTENUATION_MIN, ATTENUATION_MAX]`` for soft edges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from actors.procedural import COLOURS, CONTRASTS, SIZES
from actors.regions import SIDE_FRACTION, box_mask

Box = Tuple[int, int, int, int]

LINE_SHAPES = frozenset({"scratch", "cut", "crack", "fold"})
SCATTERED_SHAPES = frozenset({"contamination"})
GEOMETRIC_SHAPES = frozenset({"dent", "fold", "bent", "misplaced"})  # change the surface, add no colour

CHANGE_LEVEL = 0.06 * 255  # a channel must move this much for a pixel to count as changed
MIN_CHANGED_PX = 4
LINE_FILL = 0.36  # a line (even branched) covers less of its bounding square than this; stains and holes more
LINE_ELONGATION = 3.0  # a cloud of pieces this much longer than wide is a broken line, not particles
ATTENUATION_MIN, ATTENUATION_MAX = 0.3, 1.3  # the share of the expected colour shift a mark may reach (thin marks are soft)


def shape_group(shape: str) -> str:
    return "line" if shape in LINE_SHAPES else "scattered" if shape in SCATTERED_SHAPES else "blob"


# how far a shape spreads across its box (actors.procedural's geometry); None: with the size word
_SPREAD = {"hole": 0.6, "missing": 0.8}
_FILLS_BOX = {"spot": 0.8, "contamination": 0.6, "dent": 0.9, "bent": 0.9, "misplaced": 0.9}


def expected_extent(shape: str, size_word: str) -> float:
    """Largest side of a defect of this shape and size word, as a share of the image's short
    side: the synthetic data and the procedural IG place a box of ``SIDE_FRACTION[size]``
    and draw across ``SIZES[size]`` of it (lines), a part of that (holes, chips), or most
    of the box whatever the size (stains, particles, shape changes)."""
    if shape in _FILLS_BOX:
        return SIDE_FRACTION[size_word] * _FILLS_BOX[shape]
    return SIDE_FRACTION[size_word] * SIZES[size_word] * _SPREAD.get(shape, 1.0)


@dataclass(frozen=True)
class Measurement:
    changed: np.ndarray  # HxW bool
    n_changed: int
    strength: float  # mean of the strongest half of the per-pixel changes, 0..255
    texture_sd: float  # local standard deviation of the normal image where it changed
    on_object: float  # share of changed pixels on the object's foreground
    in_region: float  # share of changed pixels inside the asked region (1 without one)
    group: str  # line | blob | scattered
    elongation: float  # length / width of the main mark
    extent: float  # largest side of the changed area / the image's short side
    shift: np.ndarray  # mean RGB change (edited − normal) over the strongest 15 % of changed pixels
    surface: np.ndarray  # mean normal RGB under those pixels


def change_map(normal: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Per-pixel change: the largest channel difference, 0..255 (float32)."""
    return np.abs(edited.astype(np.float32) - normal.astype(np.float32)).max(axis=2)


def changed_pixels(diff: np.ndarray, level: float = CHANGE_LEVEL) -> np.ndarray:
    """HxW bool: where ``diff`` (``change_map``) exceeds ``level``, without isolated speckle
    (resampling noise). The clean-up keeps thin lines: a 2x2 opening that would remove more
    than half of the change (a hair-line scratch) is not applied. The judge and MG share it,
    so a mark the judge sees is a mark MG masks."""
    changed = diff > level
    if changed.sum() > 16:
        # erode and dilate with mirrored anchors: OpenCV's MORPH_OPEN with an even kernel
        # shifts the result by a pixel
        k = np.ones((2, 2), np.uint8)
        opened = cv2.dilate(cv2.erode(changed.astype(np.uint8), k, anchor=(0, 0)), k, anchor=(1, 1)) > 0
        changed = opened if opened.sum() >= 0.5 * changed.sum() else changed
    return changed


def mark_group(changed: np.ndarray) -> Tuple[str, float]:
    """Shape group and elongation (length over width). A line, even a branched crack, covers
    little of the square its length spans (measured on the synthetic anomalies: lines
    0.05–0.33, stains and holes 0.37–1.0). A faint line that the threshold broke into pieces
    is still one long, narrow cloud of pixels, which is what tells it from particles."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    main = int(np.argmax(areas)) + 1
    comp = (labels == main).astype(np.uint8)
    side = _length(comp)
    width = 2.0 * float(cv2.distanceTransform(np.pad(comp, 1), cv2.DIST_L2, 3).max())
    elongation = float(side / max(width, 1.0))
    closed = cv2.morphologyEx(comp, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # a stain on a texture has holes
    fill = float(closed.sum()) / float(side * side)  # a line covers little of its square, even branched
    ys, xs = np.nonzero(changed)
    ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + 0.25 * np.eye(2))
    cloud = float(np.sqrt(ev[-1] / ev[0]))  # length / width of all changed pixels together
    significant = areas[areas >= max(2.0, 0.1 * areas.max())]
    if len(significant) >= 2 and areas.max() < 0.7 * areas.sum():
        return ("line", max(elongation, cloud)) if cloud >= LINE_ELONGATION + 0.5 else ("scattered", elongation)
    return ("line" if fill < LINE_FILL and side >= 6 else "blob"), elongation


def _length(comp: np.ndarray) -> float:
    ys, xs = np.nonzero(comp)
    side = float(max(np.ptp(xs) + 1, np.ptp(ys) + 1))
    if len(xs) > 2:
        ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + 1e-6 * np.eye(2))
        side = max(side, float(np.sqrt(12.0 * ev[-1])))  # a uniform segment of length L has variance L²/12
    return side


def measure(normal: np.ndarray, edited: np.ndarray, region: Optional[Box] = None,
            foreground: Optional[np.ndarray] = None) -> Optional[Measurement]:
    """The change between ``normal`` and ``edited`` (HxWx3 uint8), or None when nothing
    visible changed. ``foreground``: where the object is (None: everywhere)."""
    if normal.shape != edited.shape:
        raise ValueError(f"normal {normal.shape} and edited {edited.shape} differ in size")
    diff = change_map(normal, edited)
    changed = changed_pixels(diff)
    n = int(changed.sum())
    if n < MIN_CHANGED_PX:
        return None
    h, w = changed.shape
    values = diff[changed]
    strong = changed & (diff >= np.percentile(values, 85))  # the core of the mark: its colour
    gray = normal.astype(np.float32).mean(axis=2)
    mean, sq = cv2.GaussianBlur(gray, (0, 0), 2), cv2.GaussianBlur(gray * gray, (0, 0), 2)
    texture_sd = float(np.sqrt(max(float((sq - mean * mean)[changed].mean()), 0.0)))
    fg = foreground if foreground is not None else np.ones_like(changed)
    on_object = float((changed & fg).sum() / n)
    in_region = 1.0
    if region is not None:
        grown = (max(0, region[0] - 2), max(0, region[1] - 2), region[2] + 2, region[3] + 2)
        in_region = float((changed & box_mask(grown, changed.shape)).sum() / n)
    group, elongation = mark_group(changed)
    ys, xs = np.nonzero(changed)
    extent = float(max(np.ptp(xs) + 1, np.ptp(ys) + 1) / min(h, w))
    shift = (edited.astype(np.float32) - normal.astype(np.float32))[strong].mean(axis=0)
    surface = normal.astype(np.float32)[strong].mean(axis=0)
    return Measurement(changed, n, float(values[values >= np.median(values)].mean()), texture_sd, on_object,
                       in_region, group, elongation, extent, shift, surface)


@dataclass(frozen=True)
class Match:
    """How well one measurement fits one knowledge entry; every factor in [0, 1]."""

    visibility: float
    shape: float
    colour: float
    size: float
    expected_group: str
    attenuation: float  # measured colour shift / expected, along the expected direction

    @property
    def fidelity(self) -> float:
        """The type match: the product, so one wrong property fails the whole."""
        return self.shape * self.colour * self.size

    def worst(self) -> Tuple[str, float]:
        return min((("visibility", self.visibility), ("shape", self.shape), ("colour", self.colour),
                    ("size", self.size)), key=lambda kv: kv[1])


def _colour_factor(m: Measurement, entry) -> Tuple[float, float]:
    """(factor, attenuation): the measured shift against ``contrast × (colour − surface)``,
    in direction (the perpendicular residual) and in amount (``ATTENUATION_MIN`` to
    ``ATTENUATION_MAX`` of the expected shift)."""
    if entry.shape in GEOMETRIC_SHAPES or entry.colour == "mixed":
        return 1.0, 1.0
    expected = CONTRASTS[entry.contrast] * (np.array(COLOURS[entry.colour], np.float32) - m.surface)
    norm = float(np.linalg.norm(expected))
    if norm < 20.0:  # the defect colour is close to the surface: colour says nothing
        return 1.0, 1.0
    a = float(m.shift @ expected / (norm * norm))  # how much of the expected shift was made
    if a <= 0:
        return 0.0, a
    off_axis = float(np.linalg.norm(m.shift - a * expected)) / max(float(np.linalg.norm(m.shift)), 30.0)
    out_of_range = max(0.0, np.log(ATTENUATION_MIN / a), np.log(a / ATTENUATION_MAX))
    return float(np.exp(-(off_axis / 0.5) ** 2 - (out_of_range / 0.35) ** 2)), a


SIZE_TOLERANCE = 1.6  # a measured extent within this factor of the expected one is the right size


def match(m: Measurement, entry) -> Match:
    group = shape_group(entry.shape)
    shape = 1.0 if m.group == group else (0.5 if {m.group, group} == {"blob", "scattered"} else 0.15)
    colour, attenuation = _colour_factor(m, entry)
    ratio = m.extent / expected_extent(entry.shape, entry.size)
    size = float(np.exp(-(max(0.0, abs(np.log(ratio)) - np.log(SIZE_TOLERANCE)) / 0.35) ** 2))
    visibility = float(np.clip((m.strength - 0.25 * m.texture_sd - 4.0) / 14.0, 0.0, 1.0))
    return Match(visibility, shape, colour, size, group, attenuation)

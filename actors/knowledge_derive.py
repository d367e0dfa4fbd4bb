"""A knowledge entry for a (category, defect type) nobody described: from the words of the
defect name and, where the protocol allows, the dataset's own real anomalies of that type.

Measured on each real anomaly (its mask, and the normal image or the ring around the mask
as the surface): the shape group of the mask (the judge's ``mark_group``), its extent, the
colour and contrast that best explain the defect pixels under the judge's blend model
(``surface + contrast × (colour − surface)``), and where it lies. The votes of all
anomalies give the entry, labelled ``derived``. Without anomalies the name alone gives
shape, colour and size words (defaults: spot, dark, medium), labelled ``name_only``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from actors.defect_measure import expected_extent, mark_group, shape_group
from actors.defect_words import SHAPE_WORDS, SIZE_WORDS, parse_prompt
from actors.knowledge_base import KnowledgeEntry
from actors.mask_gen import classical_foreground
from actors.procedural import COLOURS, CONTRASTS, SIZES

GROUP_SHAPE = {"line": "scratch", "blob": "spot", "scattered": "contamination"}  # a group's plainest shape
FLAT_SHIFT = 20.0  # a mark whose colour moves less than this (0..255) changed the surface, not its colour
MAX_ANOMALIES = 24


@dataclass(frozen=True)
class AnomalyMeasure:
    group: str
    extent: float  # largest side of the mask / the image's short side
    colour: str
    contrast: str
    flat: bool  # the colour barely moved: a dent, a bend, a misplaced part
    centre: Tuple[float, float]  # (x, y) of the mask's centroid, normalized


def _surface(anomaly: np.ndarray, mask: np.ndarray, normal: Optional[np.ndarray]) -> np.ndarray:
    """HxWx3 float: what the surface under the mask looked like."""
    if normal is not None and normal.shape == anomaly.shape:
        return normal.astype(np.float32)
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    ref = anomaly[ring] if ring.any() else anomaly[~mask] if (~mask).any() else anomaly.reshape(-1, 3)
    return np.broadcast_to(ref.astype(np.float32).mean(axis=0), anomaly.shape).astype(np.float32)


def _colour_and_contrast(defect: np.ndarray, surface: np.ndarray) -> Tuple[str, str]:
    """The colour word and contrast whose blend over ``surface`` comes closest to ``defect``."""
    best, best_d = ("dark", "medium"), float("inf")
    for name, rgb in COLOURS.items():
        if name == "mixed":
            continue
        for level, k in CONTRASTS.items():
            d = float(np.linalg.norm(surface + k * (np.asarray(rgb, np.float32) - surface) - defect))
            if d < best_d:
                best, best_d = (name, level), d
    return best


def measure_anomaly(anomaly: np.ndarray, mask: np.ndarray, normal: Optional[np.ndarray] = None) -> Optional[AnomalyMeasure]:
    """What one real anomaly (HxWx3 uint8, HxW bool mask) looks like; None for an empty mask."""
    mask = mask.astype(bool)
    if mask.sum() < 4:
        return None
    h, w = mask.shape
    group, _ = mark_group(mask)
    ys, xs = np.nonzero(mask)
    extent = float(max(np.ptp(xs) + 1, np.ptp(ys) + 1) / min(h, w))
    surface = _surface(anomaly, mask, normal)
    pix = anomaly.astype(np.float32)
    diff = np.linalg.norm(pix - surface, axis=2)
    strong = mask & (diff >= np.percentile(diff[mask], 85))
    defect_rgb, surface_rgb = pix[strong].mean(axis=0), surface[strong].mean(axis=0)
    colour, contrast = _colour_and_contrast(defect_rgb, surface_rgb)
    flat = float(np.linalg.norm(defect_rgb - surface_rgb)) < FLAT_SHIFT
    return AnomalyMeasure(group, extent, colour, contrast, flat, (float(xs.mean() / w), float(ys.mean() / h)))


def _where(centres: Sequence[Tuple[float, float]], category: str) -> str:
    c = np.asarray(centres, np.float64)
    if len(c) >= 3 and float(c.std(axis=0).max()) > 0.2:
        return f"anywhere on the {category}"
    x, y = np.median(c, axis=0)
    if abs(x - 0.5) < 0.15 and abs(y - 0.5) < 0.15:
        return f"near the centre of the {category}"
    vertical = "upper" if y < 0.4 else "lower" if y > 0.6 else ""
    horizontal = "left" if x < 0.4 else "right" if x > 0.6 else ""
    return f"on the {' '.join(p for p in (vertical, horizontal) if p)} part of the {category}"


def _size_word(shape: str, extent: float) -> str:
    return min(SIZES, key=lambda s: abs(np.log(extent / expected_extent(shape, s))))


_NAME_WORDS = sorted({w for ws in SHAPE_WORDS.values() for w in ws} | set(COLOURS) | set(SIZE_WORDS), key=len, reverse=True)


def name_words(defect: str):
    """The shape, colour and size words of a defect name; a compound token counts by the
    word it starts or ends with ("pinhole" is a hole, "blackspot" a black spot). The shape
    is the last shape word, the head of an English compound ("hairline crack": a crack)."""
    tokens = []
    for t in re.findall(r"[a-z]+", defect.lower()):
        part = next((w for w in _NAME_WORDS if len(w) >= 3 and t != w and (t.endswith(w) or t.startswith(w))), None)
        tokens += [t] if part is None else [t, part]
    words = parse_prompt(" ".join(tokens))
    head = parse_prompt(" ".join(reversed(tokens)))
    return replace(words, shape=head.shape)


def name_only_entry(category: str, defect: str, kind: str = "object") -> KnowledgeEntry:
    name = defect.replace("_", " ")
    words = name_words(defect)
    return KnowledgeEntry("user", category, kind, defect, words.shape, words.colour, words.size, words.contrast,
                          f"on the {category}", f"a {name} defect, described by its name only", "name_only")


def derive_entry(category: str, defect: str, anomalies: Sequence[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]],
                 kind: str = "object") -> KnowledgeEntry:
    """``anomalies``: (image, mask, normal or None) of real anomalies of this type. With none
    that has a mask, the name-only entry."""
    measured = [m for m in (measure_anomaly(*a) for a in anomalies[:MAX_ANOMALIES]) if m is not None]
    if not measured:
        return name_only_entry(category, defect, kind)
    name = defect.replace("_", " ")
    words = name_words(defect)
    group = Counter(m.group for m in measured).most_common(1)[0][0]
    flat = sum(m.flat for m in measured) > len(measured) / 2
    if "shape" in words.matched and shape_group(words.shape) == group:
        shape = words.shape  # the name agrees with the masks: keep its word (crack, not scratch)
    else:
        shape = "dent" if flat and group == "blob" else GROUP_SHAPE[group]
    colour = Counter(m.colour for m in measured).most_common(1)[0][0]
    contrast = Counter(m.contrast for m in measured).most_common(1)[0][0]
    size = _size_word(shape, float(np.median([m.extent for m in measured])))
    appearance = (f"a {size} {colour} {SHAPE_WORDS[shape][0]} like the {len(measured)} real '{name}' anomalies "
                  f"of the dataset ({group}-shaped, median extent {np.median([m.extent for m in measured]):.2f})")
    return KnowledgeEntry("user", category, kind, defect, shape, colour, size, contrast,
                          _where([m.centre for m in measured], category), appearance, "derived")


def category_kind(normal: np.ndarray) -> str:
    """texture when the object fills the image (no background to tell apart), else object."""
    return "texture" if classical_foreground(normal).mean() > 0.97 else "object"

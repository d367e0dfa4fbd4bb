"""``anomalyagent make-data``: a synthetic dataset in the exact MVTec AD layout.

Two texture and two object categories, each with three defect types from the knowledge
base, drawn by the same procedural renderer the IG CPU backend uses. Categories are marked
``source`` (stand-ins for VisA: used to build training trajectories) or ``target``
(stand-ins for MVTec AD: evaluation only), so the zero-shot protocol can be reproduced.
Deterministic: every image has its own seed derived from (seed, category, split, index),
so the same seed writes the same bytes whatever the order.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from actors.knowledge_base import load_knowledge_base
from actors.procedural import render_defect, spec_from_words
from actors.regions import SIDE_FRACTION, place_on
from rollout.config import SyntheticDataConfig

# bumped when the drawing or the synthetic knowledge entries change: the cache key follows it
DATA_VERSION = 3
ROLES = {"syn_weave": "source", "syn_washer": "source", "syn_marble": "target", "syn_pill": "target"}


@dataclass(frozen=True)
class Canvas:
    image: np.ndarray  # HxWx3 uint8
    foreground: np.ndarray  # HxW bool: where a defect may be placed


def _weave(rng, s: int) -> Canvas:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    period = rng.uniform(5.5, 7.0)
    warp = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 6))
    weft = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period + rng.uniform(0, 6))
    checker = (np.floor(xx / period) + np.floor(yy / period)) % 2
    v = np.where(checker > 0, warp, weft) * 0.6 + 0.4
    base = np.array([150, 130, 95], np.float32) * rng.uniform(0.95, 1.05)
    img = v[..., None] * base + rng.normal(0, 4, (s, s, 1))
    return Canvas(np.clip(img, 0, 255).astype(np.uint8), np.ones((s, s), bool))


def _marble(rng, s: int) -> Canvas:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    noise = rng.normal(0, 1, (s // 8 + 2, s // 8 + 2)).astype(np.float32)
    noise = np.array(Image.fromarray(noise).resize((s, s), Image.BICUBIC))
    veins = 0.5 + 0.5 * np.sin(8 * (xx + 0.6 * yy) + 3.0 * noise)
    img = (200 + 45 * veins[..., None]) * np.array([1.0, 0.98, 0.95], np.float32) + rng.normal(0, 2.5, (s, s, 1))
    return Canvas(np.clip(img, 0, 255).astype(np.uint8), np.ones((s, s), bool))


def _washer(rng, s: int) -> Canvas:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    cx, cy = s / 2 + rng.uniform(-0.04, 0.04) * s, s / 2 + rng.uniform(-0.04, 0.04) * s
    r = np.hypot(xx - cx, yy - cy)
    outer, inner = 0.40 * s, 0.17 * s
    ring = (r < outer) & (r > inner)
    shade = 150 + 60 * np.cos(np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 6)) * 0.5 + 20 * (r / outer)
    img = np.where(ring[..., None], shade[..., None] * np.array([1.0, 1.0, 1.04]), 30.0)
    img = img + rng.normal(0, 3, (s, s, 1))
    return Canvas(np.clip(img, 0, 255).astype(np.uint8), ring)


def _pill(rng, s: int) -> Canvas:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    cx, cy = s / 2 + rng.uniform(-0.03, 0.03) * s, s / 2 + rng.uniform(-0.03, 0.03) * s
    a, b = 0.40 * s, 0.24 * s
    d = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2
    body = d < 1.0
    shade = 235 - 30 * d
    img = np.where(body[..., None], shade[..., None] * np.array([1.0, 0.98, 0.92]), np.array([70.0, 90.0, 110.0]))
    img = img + rng.normal(0, 2.5, (s, s, 1))
    return Canvas(np.clip(img, 0, 255).astype(np.uint8), body)


PAINTERS: Dict[str, Callable[[np.random.Generator, int], Canvas]] = {
    "syn_weave": _weave, "syn_marble": _marble, "syn_washer": _washer, "syn_pill": _pill,
}


def image_seed(seed: int, *parts: object) -> int:
    """A stable 32-bit seed per image (Python's hash() is salted per process)."""
    return zlib.crc32(repr((seed,) + parts).encode())


def normal_image(category: str, seed: int, size: int) -> Canvas:
    if category not in PAINTERS:
        raise ValueError(f"unknown synthetic category {category!r}; known: {', '.join(PAINTERS)}")
    return PAINTERS[category](np.random.default_rng(seed), size)


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG", optimize=False)


def make_dataset(out: str | Path, seed: int = 0, cfg: Optional[SyntheticDataConfig] = None,
                 progress: bool = False) -> Path:
    """Write the dataset under ``out`` and return its root. Same seed → same bytes."""
    cfg = cfg or SyntheticDataConfig()
    if not 32 <= cfg.size <= 1024:
        raise ValueError(f"synthetic image size must be in [32, 1024], got {cfg.size}")
    kb = load_knowledge_base()
    root = Path(out)
    jobs: List[Tuple[str, str, str, int]] = []
    for cat in cfg.categories:
        if cat not in PAINTERS:
            raise ValueError(f"unknown synthetic category {cat!r}; known: {', '.join(PAINTERS)}")
        jobs += [(cat, "train", "good", i) for i in range(cfg.n_train)]
        jobs += [(cat, "test", "good", i) for i in range(cfg.n_test_good)]
        for d in kb.defects(cat):
            jobs += [(cat, "test", d, i) for i in range(cfg.n_test_per_defect)]
    it = jobs
    if progress:
        from tqdm import tqdm
        it = tqdm(jobs, desc="make-data", unit="img")
    for cat, split, defect, i in it:
        canvas = normal_image(cat, image_seed(seed, cat, split, defect, i), cfg.size)
        name = f"{i:03d}.png"
        if defect == "good":
            _save(canvas.image, root / cat / split / "good" / name)
            continue
        e = kb.get(cat, defect)
        rng = np.random.default_rng(image_seed(seed, cat, defect, i, "box"))
        box = place_on(canvas.foreground, int(SIDE_FRACTION[e.size] * cfg.size), rng)
        edited, alpha = render_defect(canvas.image, box, spec_from_words(e.shape, e.colour, e.size, e.contrast),
                                      image_seed(seed, cat, defect, i, "defect"), allowed=canvas.foreground)
        mask = ((alpha > 0.5) & canvas.foreground) * np.uint8(255)
        if not mask.any():  # the defect fell off the object: keep the mask honest
            mask = (alpha > 0.5) * np.uint8(255)
        _save(edited, root / cat / "test" / defect / name)
        _save(mask, root / cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    roles = {c: ROLES.get(c, "target") for c in cfg.categories}
    (root / "dataset.json").write_text(json.dumps(
        {"name": "anomalyagent-synthetic", "layout": "mvtec", "seed": seed, "size": cfg.size, "roles": roles},
        indent=1, sort_keys=True))
    return root


def roles(root: str | Path) -> Dict[str, str]:
    """category → source | target, as recorded by ``make_dataset``."""
    meta = Path(root) / "dataset.json"
    return json.loads(meta.read_text())["roles"] if meta.is_file() else {}


def synthetic_categories() -> Sequence[str]:
    return tuple(PAINTERS)


def source_normal(root: str | Path, category: str, defect: str, index: int) -> np.ndarray:
    """The exact normal image a synthetic anomaly was drawn on (what a real run would get
    from an edited-back normal)."""
    meta = json.loads((Path(root) / "dataset.json").read_text())
    return normal_image(category, image_seed(meta["seed"], category, "test", defect, index), meta["size"]).image
